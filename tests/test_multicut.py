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


def grid_fragments(shape=(3, 8, 8), cell=2, seed=0):
    """Fragments on a grid of ``cell`` x ``cell`` squares through every section (many pairs that do not
    touch), a few voxels set to background 0."""
    z, y, x = np.indices(shape)
    frag = (1 + (y // cell) * (shape[2] // cell) + x // cell).astype(np.uint64)
    frag[np.random.default_rng(seed).random(shape) < 0.05] = 0
    return frag


def test_affinity_lifted_edges_are_the_non_touching_pairs_with_their_mean_long_range_affinity():
    from fusionnet_keras.segmentation.graph import region_graph

    frag = grid_fragments()
    offsets = [(-2, 0, 0), (0, -3, 0), (0, 0, -4), (0, 2, -3)]
    rng = np.random.default_rng(1)
    affs = rng.random((len(offsets), *frag.shape)).astype(np.float32)
    g = region_graph(np.ones((3, *frag.shape), np.float32), frag)
    touching = set(zip(g.u.tolist(), g.v.tolist()))
    sums = {}
    for c, off in enumerate(offsets):  # a direct loop over the voxels
        for z, y, x in np.ndindex(frag.shape):
            there = (z + off[0], y + off[1], x + off[2])
            if not all(0 <= t < s for t, s in zip(there, frag.shape)):
                continue
            a, b = int(frag[z, y, x]), int(frag[there])
            key = (min(a, b), max(a, b))
            if a == 0 or b == 0 or a == b or key in touching:
                continue
            s = sums.setdefault(key, [0.0, 0])
            s[0] += float(affs[c, z, y, x])
            s[1] += 1
    lu, lv, q, n = mc.affinity_lifted_edges(g, frag, affs, offsets)
    got = {(int(g.nodes[a]), int(g.nodes[b])): (float(m), int(k)) for a, b, m, k in zip(lu, lv, q, n)}
    assert len(sums) > 20 and set(got) == set(sums)
    for key, (total, count) in sums.items():
        assert got[key][1] == count and got[key][0] == pytest.approx(total / count, abs=1e-6)


def test_size_weighting_multiplies_each_cost_by_the_contact_area_over_the_mean():
    from fusionnet_keras.segmentation.graph import region_graph

    frag = grid_fragments((2, 12, 12), cell=3)
    frag[:, :, 6:] += 100  # wider fragments on the right: contact areas differ
    frag[frag == 100] = 0
    affs = np.random.default_rng(2).random((3, *frag.shape)).astype(np.float32)
    g = region_graph(affs, frag)
    p = mc.boundary_probabilities(g)
    area = g.count.sum(axis=1)
    u, v = g.node_index(g.u), g.node_index(g.v)
    assert area.min() < area.max()
    differ = False
    for beta in (0.3, 0.5, 0.7):
        (_, plain), = mc.multicut_graph(g, [beta])
        (_, sized), = mc.multicut_graph(g, [beta], weighting="size")
        expected = mc.solve(g.num_nodes, u, v, mc.costs(p, beta) * area / area.mean())
        assert np.array_equal(sized == sized[:, None], expected == expected[:, None])
        differ |= not np.array_equal(plain == plain[:, None], sized == sized[:, None])
    assert differ
    with pytest.raises(FusionNetError, match="weighting must be one of none, size"):
        next(mc.multicut_graph(g, [0.5], weighting="area"))


def test_lifted_multicut_from_long_range_affinities_keeps_apart_what_they_repel():
    """Fragments 1 | 2 | 3 along x whose boundaries look weak (nearest affinity 0.8): the multicut and the
    hop-lifted multicut join all three; a long-range channel linking 3 to 1 with affinity 0.02 keeps them
    apart."""
    from fusionnet_keras.segmentation.pipeline import segment

    frag = np.broadcast_to(np.arange(12) // 4 + 1, (1, 4, 12)).astype(np.uint64)
    nearest = np.full((3, 1, 4, 12), 0.95, np.float32)
    nearest[2, :, :, [4, 8]] = 0.8
    long = np.full((1, 1, 4, 12), 0.5, np.float32)
    long[0, :, :, 8:] = 0.02  # offset (0, 0, -8): x links x - 8, fragment 3 to fragment 1
    affs = np.concatenate([nearest, long])
    (_, hop), = segment(nearest, "lifted-multicut", [0.5], fragments=frag)
    (_, lifted), = segment(affs, "lifted-multicut", [0.5], fragments=frag, offsets=[(0, 0, -8)])
    assert len(np.unique(hop)) == 1
    assert lifted[0, 0, 0] != lifted[0, 0, 11] and len(np.unique(lifted)) == 2
    with pytest.raises(FusionNetError, match="3 nearest-neighbour channels and 2 long-range"):
        next(segment(affs, "lifted-multicut", [0.5], fragments=frag, offsets=[(0, 0, -8), (0, -2, 0)]))
    with pytest.raises(FusionNetError, match="used by the mws and lifted-multicut"):
        next(segment(affs, "multicut", [0.5], fragments=frag, offsets=[(0, 0, -8)]))
