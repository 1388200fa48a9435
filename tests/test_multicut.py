"""Multicut, lifted multicut (GAEC + Kernighan-Lin) and mutex watershed against exhaustive search."""

from functools import lru_cache

import numpy as np
import pytest

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import multicut as mc


@lru_cache(maxsize=None)
def partitions(n):
    """Every set partition of n nodes as a (Bell(n), n) array of restricted growth strings."""
    out = []

    def grow(prefix, top):
        if len(prefix) == n:
            out.append(prefix)
            return
        for b in range(top + 2):
            grow(prefix + [b], max(top, b))

    grow([0], 0)
    return np.array(out, np.int64)


def random_graph(rng, n, density):
    """Random edges (each pair with probability ``density``) with costs ~ N(0, 1)."""
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < density]
    u, v = (np.array(x, np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
    return u, v, rng.normal(0, 1, u.size)


def connected_blocks(labels, u, v):
    """True when every block of ``labels`` is connected by the edges (u, v) inside it (plain Python BFS)."""
    labels = list(labels)
    nbrs = {i: set() for i in range(len(labels))}
    for a, b in zip(u.tolist(), v.tolist()):
        if labels[a] == labels[b]:
            nbrs[a].add(b)
            nbrs[b].add(a)
    for block in set(labels):
        members = [i for i, x in enumerate(labels) if x == block]
        seen, todo = {members[0]}, [members[0]]
        while todo:
            for y in nbrs[todo.pop()] - seen:
                seen.add(y)
                todo.append(y)
        if len(seen) != len(members):
            return False
    return True


def lifted_objective(labels, u, v, w, lu, lv, lw):
    """The lifted objective from its definition, in plain Python: None when a block is not locally connected."""
    if not connected_blocks(labels, u, v):
        return None
    return sum(c for a, b, c in zip(list(u) + list(lu), list(v) + list(lv), list(w) + list(lw))
               if labels[a] != labels[b])


def exhaustive(n, u, v, w, lifted=None):
    parts = partitions(n)
    cut = parts[:, u] != parts[:, v]
    energy = cut.astype(np.float64) @ w
    if lifted is None:
        return energy.min()
    lu, lv, lw = lifted
    energy += (parts[:, lu] != parts[:, lv]).astype(np.float64) @ lw
    # feasible: every block connected by its local edges (components by label propagation, all partitions at once)
    comp = np.tile(np.arange(n), (len(parts), 1))
    for _ in range(n):
        for a, b in zip(u, v):
            inside = parts[:, a] == parts[:, b]
            low = np.minimum(comp[:, a], comp[:, b])
            comp[inside, a] = comp[inside, b] = low[inside]
    i, j = np.triu_indices(n, 1)
    feasible = np.all((parts[:, i] != parts[:, j]) | (comp[:, i] == comp[:, j]), axis=1)
    return energy[feasible].min()


def test_partitions_are_counted_by_the_bell_numbers():
    assert [len(partitions(n)) for n in range(1, 10)] == [1, 2, 5, 15, 52, 203, 877, 4140, 21147]


def test_gaec_kl_reaches_the_optimum_on_most_small_graphs_and_never_loses_to_gaec():
    # dense graphs with costs of both signs, where GAEC alone is optimal on about 70 % only
    rng = np.random.default_rng(27)
    gaps, improved = [], 0
    for i in range(60):
        n = 7 + i % 3
        u, v, w = random_graph(rng, n, density=1.0)
        best = exhaustive(n, u, v, w)
        greedy = mc.objective(u, v, w, mc.solve(n, u, v, w, refine=False))
        labels = mc.solve(n, u, v, w)
        energy = mc.objective(u, v, w, labels)
        assert energy >= best - 1e-9  # a feasible partition cannot beat the optimum
        assert energy <= greedy + 1e-9
        improved += energy < greedy - 1e-9
        gaps.append((energy - best) / max(abs(best), 1.0))
    gaps = np.array(gaps)
    assert improved >= 6  # Kernighan-Lin does something
    assert np.mean(gaps < 1e-9) >= 0.85, gaps
    assert np.mean(gaps < 0.2) >= 0.95, gaps


def test_lifted_multicut_objective_feasibility_and_optimum_on_small_graphs():
    rng = np.random.default_rng(2016)
    gaps, improved = [], 0
    for i in range(60):
        n = 7 + i % 3
        u, v, _ = random_graph(rng, n, density=0.7)
        p = rng.uniform(0.02, 0.98, u.size)
        beta = rng.uniform(0.3, 0.7)
        lu, lv, q = mc.lifted_edges(n, u, v, p, hops=3)
        w, lw = mc.costs(p, beta), mc.costs(1 - q, beta)
        labels = mc.solve(n, u, v, w, lifted=(lu, lv, lw))
        energy = lifted_objective(labels, u, v, w, lu, lv, lw)
        assert energy is not None, "a segment is not connected by local edges"
        greedy = lifted_objective(mc.solve(n, u, v, w, lifted=(lu, lv, lw), refine=False), u, v, w, lu, lv, lw)
        assert energy <= greedy + 1e-9
        improved += energy < greedy - 1e-9
        best = exhaustive(n, u, v, w, (lu, lv, lw))
        assert energy >= best - 1e-9
        gaps.append((energy - best) / max(abs(best), 1.0))
    gaps = np.array(gaps)
    assert improved >= 3
    assert np.mean(gaps < 1e-9) >= 0.9, gaps
    assert np.mean(gaps < 0.2) >= 0.95, gaps


def test_lifted_edges_are_the_pairs_within_hops_with_the_most_likely_path():
    # a square 0-1-2-3-0 and a tail 3-4: pairs two apart: (0,2), (1,3), (0,4), (2,4); (1,4) is 3 apart
    u, v = np.array([0, 1, 2, 0, 3]), np.array([1, 2, 3, 3, 4])
    p = np.array([0.5, 0.5, 0.1, 0.2, 0.3])
    lu, lv, q = mc.lifted_edges(5, u, v, p, hops=2)
    got = {(a, b): x for a, b, x in zip(lu.tolist(), lv.tolist(), q.tolist())}
    assert set(got) == {(0, 2), (1, 3), (0, 4), (2, 4)}
    assert got[(0, 2)] == pytest.approx(max(0.5 * 0.5, 0.8 * 0.9))  # the better of the two paths
    assert got[(0, 4)] == pytest.approx(0.8 * 0.7)
    lu3, lv3, q3 = mc.lifted_edges(5, u, v, p, hops=3)
    got3 = {(a, b): x for a, b, x in zip(lu3.tolist(), lv3.tolist(), q3.tolist())}
    assert got3[(1, 4)] == pytest.approx(max(0.5 * 0.2 * 0.7, 0.5 * 0.9 * 0.7))
    assert got3[(0, 2)] == pytest.approx(got[(0, 2)])


def test_lifted_edges_keep_apart_what_a_chain_of_weak_boundaries_would_join():
    # 0-1-2 joined by attractive local edges, but a strongly repulsive lifted edge 0-2
    assert mc.solve(3, [0, 1], [1, 2], [1.0, 1.0]).tolist() == [0, 0, 0]
    labels = mc.solve(3, [0, 1], [1, 2], [1.0, 1.0], lifted=([0], [2], [-5.0]))
    assert labels[0] != labels[2] and len(set(labels.tolist())) == 2
    # a lifted attraction alone does not join fragments that do not touch
    assert len(set(mc.solve(2, [], [], [], lifted=([0], [1], [5.0])).tolist())) == 2


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_beta_outside_the_open_interval_is_refused(beta):
    with pytest.raises(FusionNetError, match=r"beta must lie in \(0, 1\)"):
        mc.costs([0.5], beta)


def test_costs_follow_the_log_odds_formula():
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    expected = np.log((1 - np.clip(p, mc.EPS, 1 - mc.EPS)) / np.clip(p, mc.EPS, 1 - mc.EPS)) + np.log(0.7 / 0.3)
    assert np.allclose(mc.costs(p, 0.3), expected)


# ---------------------------------------------------------------------------
# mutex watershed

OFFSETS = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -2, 0), (0, 0, -2), (0, -1, -2), (-1, -2, 0)]


def grid_edges(shape, offsets, attractive=3):
    """Every edge (v, v + offset) of a grid from plain loops: (u, v, channel, voxel of the affinity)."""
    out = []
    for c, off in enumerate(offsets):
        for voxel in np.ndindex(*shape):
            other = tuple(a + o for a, o in zip(voxel, off))
            if all(0 <= x < s for x, s in zip(other, shape)):
                out.append((np.ravel_multi_index(voxel, shape), np.ravel_multi_index(other, shape), c, voxel))
    return out


def edge_weights(affs, edges, attractive=3, beta=0.5):
    return [affs[(c,) + vox] if c < attractive else 1 - affs[(c,) + vox] + beta - 0.5 for _, _, c, vox in edges]


def naive_mws(affs, offsets, attractive=3, beta=0.5):
    """The mutex watershed with explicit cluster sets and a list of mutex edges checked one by one."""
    shape = affs.shape[1:]
    edges = grid_edges(shape, offsets, attractive)
    weights = edge_weights(affs, edges, attractive, beta)
    cluster = list(range(int(np.prod(shape))))
    mutexes = []
    for i in sorted(range(len(edges)), key=lambda i: -weights[i]):
        a, b, c, _ = edges[i]
        ca, cb = cluster[a], cluster[b]
        if ca == cb:
            continue
        separated = any({cluster[x], cluster[y]} == {ca, cb} for x, y in mutexes)
        if c < attractive and not separated:
            cluster = [ca if k == cb else k for k in cluster]
        elif c >= attractive:
            mutexes.append((a, b))
    return np.array(cluster).reshape(shape)


def same_partition(a, b):
    pairs = np.unique(np.stack([np.ravel(a), np.ravel(b)]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("seed", range(6))
def test_mutex_watershed_equals_a_naive_reference(seed):
    from fusionnet_keras.segmentation.mws import mutex_watershed

    rng = np.random.default_rng(seed)
    affs = rng.random((len(OFFSETS), 2, 5, 6))
    beta = [0.5, 0.3, 0.7][seed % 3]
    labels = mutex_watershed(affs, OFFSETS, beta=beta)
    assert labels.min() == 1 and labels.dtype == np.uint64
    assert same_partition(labels, naive_mws(affs, OFFSETS, beta=beta))
    assert 1 < labels.max() < labels.size  # neither everything nor nothing joined


@pytest.mark.parametrize("seed", range(4))
def test_mutex_watershed_is_the_optimum_of_its_dominant_weight_objective(seed):
    """Wolf et al. 2020: with distinct weights the mutex watershed is the partition whose violated edges
    (attractive cut, repulsive uncut), taken from the heaviest down, are lexicographically least."""
    from fusionnet_keras.segmentation.mws import mutex_watershed

    rng = np.random.default_rng(100 + seed)
    shape = (1, 3, 3)
    affs = rng.random((len(OFFSETS),) + shape)
    edges = grid_edges(shape, OFFSETS)
    weights = np.array(edge_weights(affs, edges))
    order = np.argsort(-weights)
    u, v = np.array([e[0] for e in edges])[order], np.array([e[1] for e in edges])[order]
    attract = np.array([e[2] < 3 for e in edges])[order]
    parts = partitions(9)
    cut = parts[:, u] != parts[:, v]
    violated = np.where(attract, cut, ~cut)
    best = violated[np.lexsort(violated.T[::-1])[0]]
    labels = mutex_watershed(affs, OFFSETS).ravel()
    mine = np.where(attract, labels[u] != labels[v], labels[u] == labels[v])
    assert np.array_equal(mine, best)
    assert violated.any(axis=1).all()  # the problem is frustrated: no partition satisfies every edge


def test_mutex_watershed_stride_thins_only_the_repulsive_edges():
    from fusionnet_keras.segmentation.mws import mutex_watershed

    affs = np.ones((4, 1, 1, 8), np.float32)
    affs[3] = 0.0  # every x - 3 pair repels
    offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, -3)]
    assert mutex_watershed(affs, offsets).max() == 1  # attraction 1.0 outranks repulsion 1.0 (channel order)
    affs[:3] = 0.9
    assert mutex_watershed(affs, offsets).max() > 1
    # with stride 8 in x only the voxel x = 0 keeps repulsive edges, and its partner x = 3 lies in range:
    assert mutex_watershed(affs, offsets, stride=(1, 1, 8)).max() == 2
    assert mutex_watershed(affs, offsets, stride=(1, 1, 8)).max() < mutex_watershed(affs, offsets).max()


@pytest.mark.parametrize("kwargs, match", [
    (dict(offsets=[(-1, 0, 0), (0, -1, 0)]), "C = 2"),
    (dict(offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, 0), (0, 0, -3)]), "not all 0"),
    (dict(beta=1.0), r"\(0, 1\)"),
    (dict(attractive=5), "attractive"),
    (dict(stride=(1, 0, 1)), "stride"),
])
def test_mutex_watershed_bad_input_gives_one_line_errors(kwargs, match):
    from fusionnet_keras.segmentation.mws import mutex_watershed

    args = dict(offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, -3)]) | kwargs
    with pytest.raises(FusionNetError, match=match) as info:
        mutex_watershed(np.ones((4, 1, 2, 4), np.float32), **args)
    assert "\n" not in str(info.value)


def test_the_solvers_are_exported_beside_the_other_methods():
    from fusionnet_keras import segmentation as sg
    from fusionnet_keras.segmentation.mws import mutex_watershed

    assert sg.multicut_graph is mc.multicut_graph and sg.solve_multicut is mc.solve
    assert sg.lifted_edges is mc.lifted_edges
    assert sg.mutex_watershed is mutex_watershed
    assert {"multicut_graph", "solve_multicut", "lifted_edges", "mutex_watershed"} <= set(sg.__all__)
