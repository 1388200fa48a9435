"""Tests of fusionnet_keras.segmentation: inputs, z-watershed, region graph, agglomeration, learning."""

import numpy as np
import pytest

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation.agglomeration import Agglomerator, MeanAffinity, agglomerate, map_ids
from fusionnet_keras.segmentation.graph import RegionGraph, merge_graphs, region_graph
from fusionnet_keras.segmentation.inputs import as_affinities, boundary_to_affinities, check_labels
from fusionnet_keras.segmentation.zwatershed import watershed

from segmentation_helpers import bodies, degrade, gt_affinities, same_partition

# ---------------------------------------------------------------------------
# inputs


def test_boundary_map_becomes_affinities_by_the_max_rule(rng):
    b = rng.random((3, 4, 5)).astype(np.float32)
    affs = boundary_to_affinities(b)
    assert affs.shape == (3, 3, 4, 5)
    assert np.allclose(affs[0, 1:], 1 - np.maximum(b[1:], b[:-1]))
    assert np.allclose(affs[1, :, 1:], 1 - np.maximum(b[:, 1:], b[:, :-1]))
    assert np.allclose(affs[2, :, :, 1:], 1 - np.maximum(b[:, :, 1:], b[:, :, :-1]))
    assert np.all(affs[0, 0] == 0) and np.all(affs[2, :, :, 0] == 0)  # links to outside: unused
    assert np.allclose(boundary_to_affinities(1 - b, invert=True), affs)
    b8 = (b * 255).astype(np.uint8)
    assert np.allclose(as_affinities(b8), boundary_to_affinities(b8 / 255.0))  # uint8: / 255


@pytest.mark.parametrize("array, match", [
    (np.zeros((2, 4, 4, 4), np.float32), "2 channels"),
    (np.zeros((4, 4), np.float32), "shape"),
    (np.full((3, 2, 2, 2), np.nan, np.float32), "NaN"),
    (np.full((3, 2, 2, 2), 1.5, np.float32), r"\[0, 1\]"),
    (np.zeros((3, 2, 2, 2), "U1"), "numeric"),
])
def test_bad_affinities_give_one_line_errors(array, match):
    with pytest.raises(FusionNetError, match=match) as info:
        as_affinities(array)
    assert "\n" not in str(info.value)


def test_labels_must_be_integers_of_the_right_shape():
    assert check_labels(np.array([[[1.0, 2.0]]])).dtype == np.uint64
    with pytest.raises(FusionNetError, match="integer"):
        check_labels(np.array([[[1.5, 2.0]]]))
    with pytest.raises(FusionNetError, match="differs"):
        check_labels(np.zeros((1, 1, 2), np.int32), "fragments", shape=(1, 2, 2))
    with pytest.raises(FusionNetError, match="negative"):
        check_labels(-np.ones((1, 1, 2), np.int32))


# ---------------------------------------------------------------------------
# z-watershed


def _two_cubes(gap=False):
    """Affinities of two 4-voxel cubes side by side in x; weak (or zero, a gap) link between them."""
    affs = np.full((3, 4, 4, 8), 0.9, np.float32)
    affs[2, :, :, 4] = 0.0 if gap else 0.2
    return affs


def test_two_touching_cubes_give_two_fragments():
    frag = watershed(_two_cubes(), size=0)
    assert frag.dtype == np.uint64
    assert np.unique(frag).tolist() == [1, 2]  # no background
    assert len(np.unique(frag[..., :4])) == 1 and len(np.unique(frag[..., 4:])) == 1


def test_a_background_gap_splits_and_is_the_only_zero():
    affs = np.full((3, 4, 4, 9), 0.9, np.float32)
    affs[2, :, :, 4:6] = 0.0  # the plane x = 4 has no x-link above 0 ...
    affs[:2, :, :, 4] = 0.0  # ... nor any z/y-link: it is background
    frag = watershed(affs, size=0)
    assert np.all(frag[..., 4] == 0)
    assert np.count_nonzero(frag == 0) == 4 * 4
    assert len(np.unique(frag[..., :4])) == 1 and len(np.unique(frag[..., 5:])) == 1
    assert frag[0, 0, 0] != frag[0, 0, 8]


def test_size_threshold_merges_small_fragments():
    affs = np.full((3, 4, 4, 8), 0.9, np.float32)
    affs[2, :, :, 6] = 0.3  # a 32-voxel fragment (x >= 6) beside a 96-voxel one
    assert len(np.unique(watershed(affs, size=0))) == 2
    assert len(np.unique(watershed(affs, size=33))) == 1  # the small one merges
    assert len(np.unique(watershed(affs, size=32))) == 2  # 32 is not smaller than 32
    assert len(np.unique(watershed(affs, size=33, merge_affinity=0.5))) == 2  # boundary too weak


def test_watershed_seeds_at_affinity_maxima(rng):
    gt = bodies((6, 24, 24), 6, seed=3)
    frag = watershed(degrade(gt_affinities(gt), 3, noise=0.02), size=0)
    # an over-segmentation of the bodies: (almost) every fragment lies in one body
    from fusionnet_keras.evaluation import instance_scores

    assert instance_scores(frag, gt)["vi_merge"] < 0.1
    assert frag.min() > 0


# ---------------------------------------------------------------------------
# region graph


def _brute_force_graph(affs, frag):
    edges, inner = {}, {}
    Z, Y, X = frag.shape
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                for c, (dz, dy, dx) in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
                    if (z, y, x)[c] == 0:
                        continue
                    a, b = int(frag[z, y, x]), int(frag[z - dz, y - dy, x - dx])
                    w = float(affs[c, z, y, x])
                    if a == 0 or b == 0:
                        continue
                    key = (a, c) if a == b else (min(a, b), max(a, b), c)
                    (inner if a == b else edges).setdefault(key, []).append(w)
    return edges, inner


def test_region_graph_statistics_match_brute_force(rng):
    frag = rng.integers(0, 5, (3, 5, 6)).astype(np.uint64)
    affs = rng.random((3, 3, 5, 6)).astype(np.float32)
    g = region_graph(affs, frag, bins=4)
    edges, inner = _brute_force_graph(affs, frag)
    assert g.nodes.tolist() == [1, 2, 3, 4]
    assert g.size.tolist() == [int(np.sum(frag == i)) for i in (1, 2, 3, 4)]
    for i, (u, v) in enumerate(zip(g.u.tolist(), g.v.tolist())):
        for c in range(3):
            ws = edges.get((u, v, c), [])
            assert g.count[i, c] == len(ws)
            assert g.sum[i, c] == pytest.approx(sum(ws))
            assert g.max[i, c] == pytest.approx(max(ws, default=0.0))
            assert g.hist[i, c].tolist() == np.histogram(ws, bins=4, range=(0, 1))[0].tolist()
    assert sum(len(w) for w in edges.values()) == g.count.sum()
    for r, node in enumerate(g.nodes.tolist()):
        for c in range(3):
            assert g.inner_count[r, c] == len(inner.get((node, c), []))


def test_block_graphs_merge_into_the_whole(rng, tmp_path):
    frag = rng.integers(0, 6, (4, 6, 10)).astype(np.uint64)
    affs = rng.random((3, 4, 6, 10)).astype(np.float32)
    whole = region_graph(affs, frag, bins=8)
    # three blocks along x, each with a one-voxel halo on its low side
    blocks = [region_graph(affs[..., :4], frag[..., :4], bins=8),
              region_graph(affs[..., 3:7], frag[..., 3:7], bins=8, start=(0, 0, 1)),
              region_graph(affs[..., 6:], frag[..., 6:], bins=8, start=(0, 0, 1))]
    merged = merge_graphs(blocks)
    for name in ("nodes", "size", "inner_count", "inner_sum", "inner_hist", "u", "v", "count", "sum", "max", "hist"):
        assert np.allclose(getattr(merged, name), getattr(whole, name)), name
    whole.save(tmp_path / "g.npz")
    loaded = RegionGraph.load(tmp_path / "g.npz")
    assert np.array_equal(loaded.hist, whole.hist) and loaded.bins == 8
    with pytest.raises(FusionNetError, match="cannot read region graph"):
        RegionGraph.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------
# mean agglomeration


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_agglomeration_equals_waterz(seed):
    waterz = pytest.importorskip("waterz")
    from scipy import ndimage

    from fusionnet_keras.segmentation.zwatershed import quiet_stdout

    r = np.random.default_rng(seed)
    affs = ndimage.gaussian_filter(r.random((3, 6, 20, 20)), (0, 1, 1, 1))
    affs = ((affs - affs.min()) / (affs.max() - affs.min())).astype(np.float32)
    frag = watershed(affs, size=0)
    thresholds = [0.2, 0.4, 0.5, 0.6, 0.8]
    with quiet_stdout():
        ref = [s.copy() for s in waterz.agglomerate(affs, thresholds, fragments=frag.copy())]
    g = region_graph(affs, frag)
    ours = [map_ids(frag, g.nodes, ids) for _, ids in agglomerate(g, thresholds)]
    counts = [len(np.unique(s)) for s in ours]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]  # a real hierarchy
    for a, b in zip(ref, ours):
        assert same_partition(a, b)


def test_agglomeration_segment_ids_are_smallest_fragment_ids():
    affs = np.full((3, 1, 1, 4), 0.9, np.float32)
    affs[2, 0, 0, 2] = 0.1
    g = region_graph(affs, np.array([[[4, 3, 2, 1]]], np.uint64))
    agg = Agglomerator(g, MeanAffinity())
    agg.merge_until(0.5)
    assert dict(zip(g.nodes.tolist(), agg.segment_ids().tolist())) == {1: 1, 2: 1, 3: 3, 4: 3}
    with pytest.raises(FusionNetError, match="increase"):
        agg.merge_until(0.4)


# ---------------------------------------------------------------------------
# learned agglomeration


def test_features_after_a_merge_equal_features_from_scratch(rng):
    from fusionnet_keras.segmentation.features import edge_features, feature_names

    gt = bodies((5, 16, 16), 6, seed=5)
    affs = degrade(gt_affinities(gt), 5)
    frag = watershed(affs, size=0)
    g = region_graph(affs, frag, bins=16)
    agg = Agglomerator(g, MeanAffinity())
    e = int(np.argmax(g.count.sum(1)))  # merge the two fragments with the largest contact
    a, b = int(g.u[e]), int(g.v[e])
    agg._merge(e, int(agg.eu[e]), int(agg.ev[e]))
    merged = frag.copy()
    merged[merged == b] = a
    fresh = Agglomerator(region_graph(affs, merged, bins=16), MeanAffinity())
    # every boundary now: same pair of regions (named by smallest fragment id), same features
    ids = agg.segment_ids()
    live = agg.live_edges()
    pairs = {tuple(sorted((int(ids[agg.eu[k]]), int(ids[agg.ev[k]])))): k for k in live}
    fresh_pairs = {(int(fresh.graph.u[k]), int(fresh.graph.v[k])): k for k in range(fresh.graph.num_edges)}
    assert set(pairs) == set(fresh_pairs)
    ours = edge_features(agg, [pairs[p] for p in sorted(pairs)])
    theirs = edge_features(fresh, [fresh_pairs[p] for p in sorted(pairs)])
    assert ours.shape[1] == len(feature_names())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_forest_arrays_predict_like_scikit_learn(rng):
    from sklearn.ensemble import RandomForestClassifier

    from fusionnet_keras.segmentation.forest import Forest

    X = rng.random((300, 7))
    y = (X[:, 0] + 0.3 * rng.random(300) > 0.6).astype(int)
    model = RandomForestClassifier(10, random_state=0).fit(X, y)
    Xt = rng.random((50, 7))
    np.testing.assert_allclose(Forest.from_sklearn(model).predict(Xt), model.predict_proba(Xt)[:, 1], atol=1e-12)


@pytest.fixture(scope="module")
def synthetic_pair():
    """Two synthetic volumes (train, test): ground truth, degraded affinities, watershed fragments."""
    out = []
    for seed in (1, 2):
        gt = bodies((8, 48, 48), 25, seed)
        affs = degrade(gt_affinities(gt), seed)
        out.append((gt, affs, watershed(affs, size=10)))
    return out


@pytest.fixture(scope="module")
def trained(synthetic_pair):
    from fusionnet_keras.segmentation.learned import train_classifier

    gt, affs, frag = synthetic_pair[0]
    lines = []
    clf = train_classifier(affs, frag, gt, epochs=2, trees=20, log=lines.append)
    return clf, lines


def test_learned_agglomeration_matches_or_beats_mean(synthetic_pair, trained):
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.learned import LearnedScore

    clf, lines = trained
    assert len(lines) == 2 and clf.info["examples"] > 100
    gt, affs, frag = synthetic_pair[1]
    thresholds = np.linspace(0.05, 0.95, 19)
    best = {}
    for name, scorer, bins in (("mean", MeanAffinity(), 0), ("learned", LearnedScore(clf), clf.bins)):
        g = region_graph(affs, frag, bins=bins)
        best[name] = min(instance_scores(map_ids(frag, g.nodes, ids), gt)["vi"]
                         for _, ids in agglomerate(g, thresholds, scorer))
    watershed_vi = instance_scores(frag, gt)["vi"]
    assert best["learned"] < 0.5 * watershed_vi  # it agglomerates, and well
    assert best["learned"] <= best["mean"] + 0.02


def test_classifier_file_round_trip_and_bad_files(trained, tmp_path):
    import json

    from fusionnet_keras.errors import OutputExistsError
    from fusionnet_keras.segmentation.learned import BoundaryClassifier

    clf, _ = trained
    path = tmp_path / "clf.npz"
    clf.save(path)
    with pytest.raises(OutputExistsError):
        clf.save(path)
    loaded = BoundaryClassifier.load(path)
    X = np.random.default_rng(0).random((20, len(loaded.feature_names)))
    assert np.array_equal(loaded.predict(X), clf.predict(X))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("header")))
    newer = dict(header, version=99)
    np.savez(tmp_path / "newer.npz", header=np.array(json.dumps(newer)), **arrays)
    for name, match in (("junk.npz", "not an agglomeration classifier"), ("other.npz", "not an agglomeration"),
                        ("newer.npz", "newer"), ("missing.npz", "not found")):
        with pytest.raises(FusionNetError, match=match) as info:
            BoundaryClassifier.load(tmp_path / name)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# instance metrics (evaluation.volume.instance_scores)


@pytest.mark.parametrize("seed", range(4))
def test_instance_scores_equal_skimage(seed):
    from skimage.metrics import adapted_rand_error, variation_of_information

    from fusionnet_keras.evaluation import instance_scores

    r = np.random.default_rng(seed)
    gt = r.integers(0, 6, (4, 12, 12))  # 0 = unlabelled, ignored
    seg = r.integers(0, 9, (4, 12, 12))  # 0 = background, an ordinary label
    if seed == 3:  # a realistic case: bodies, over-segmented
        gt = bodies((4, 24, 24), 8, seed).astype(np.int64)
        seg = watershed(degrade(gt_affinities(gt), seed), size=0).astype(np.int64)
    s = instance_scores(seg, gt)
    split, merge = variation_of_information(gt, seg, ignore_labels=[0])  # (false splits, false merges)
    are, prec, rec = adapted_rand_error(gt, seg)
    assert abs(s["vi_split"] - split) < 1e-9 and abs(s["vi_merge"] - merge) < 1e-9
    assert abs(s["vi"] - split - merge) < 1e-9
    assert abs(s["arand"] - are) < 1e-9
    assert abs(s["rand_split"] - prec) < 1e-9 and abs(s["rand_merge"] - rec) < 1e-9
    assert s["cremi"] == pytest.approx(np.sqrt((split + merge) * are), abs=1e-9)
    assert s["gt_objects"] == len(np.unique(gt[gt > 0])) and s["objects"] == len(np.unique(seg[seg > 0]))


def test_instance_scores_split_and_merge_directions():
    from fusionnet_keras.evaluation import instance_scores

    gt = np.repeat([1, 2], 8).reshape(1, 4, 4)
    merged = instance_scores(np.ones_like(gt), gt)
    split = instance_scores(np.arange(16).reshape(1, 4, 4) + 1, gt)
    assert merged["vi_merge"] == pytest.approx(1.0) and merged["vi_split"] == pytest.approx(0.0)
    assert split["vi_split"] == pytest.approx(3.0) and split["vi_merge"] == pytest.approx(0.0)
    with pytest.raises(FusionNetError, match="integer"):
        instance_scores(gt + 0.5, gt)


def test_split_vi_plot_is_written(tmp_path):
    from fusionnet_keras.evaluation.figures import plot_split_vi

    path = plot_split_vi({"z-watershed": [(None, 0.5, 6.0)], "mean": [(0.3, 0.6, 2.0), (0.6, 1.2, 1.0)]},
                         tmp_path / "split_vi.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FusionNetError, match="exists"):
        plot_split_vi({"mean": [(0.3, 0.6, 2.0)]}, path, overwrite=False)
    with pytest.raises(FusionNetError, match="no curves"):
        plot_split_vi({}, tmp_path / "empty.png")


@pytest.mark.slow
def test_learned_beats_mean_on_gala_example():
    """Real EM (gala-example), classical boundary map: train on the train volume, score the test volume."""
    import h5py
    from scipy import ndimage

    from conftest import datasets_dir
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.learned import LearnedScore, train_classifier

    root = datasets_dir()
    if root is None or not (root / "gala-example" / "test-gt.lzf.h5").exists():
        pytest.skip("gala-example not found (set FUSIONNET_DATA_DIR)")

    def part(name):
        with h5py.File(root / "gala-example" / f"{name}-image.h5") as f:
            smooth = ndimage.gaussian_filter(f["stack"][:].astype(np.float32), (0, 1, 1))
        with h5py.File(root / "gala-example" / f"{name}-gt.lzf.h5") as f:
            gt = f["stack"][:]
        affs = boundary_to_affinities((smooth.max() - smooth) / (smooth.max() - smooth.min()))
        return affs, gt, watershed(affs, size=100)

    (a_tr, g_tr, f_tr), (a_te, g_te, f_te) = part("train"), part("test")
    clf = train_classifier(a_tr, f_tr, g_tr, epochs=2, trees=30)
    best = {}
    for name, scorer, bins in (("mean", MeanAffinity(), 0), ("learned", LearnedScore(clf), clf.bins)):
        g = region_graph(a_te, f_te, bins=bins)
        best[name] = min(instance_scores(map_ids(f_te, g.nodes, ids), g_te)["vi"]
                         for _, ids in agglomerate(g, np.arange(0.05, 0.96, 0.05), scorer))
    assert best["learned"] < best["mean"] < 0.3 * instance_scores(f_te, g_te)["vi"], best


@pytest.mark.parametrize("module", ["inputs", "zwatershed", "graph", "agglomeration", "features", "learned",
                                    "pipeline"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"fusionnet_keras.segmentation.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
