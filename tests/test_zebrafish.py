"""Tests of the zebrafish experiment's pieces (fusionnet_keras.experiments.zebrafish) on tiny volumes.

No network is trained here: the configuration, the data preparation for
``source = "files"``, the 3-D segmentation of a probability volume, the scores
and the report are tested directly, each in well under a second.
"""

import json

import numpy as np
import pytest
import tifffile

from fusionnet_keras.experiments import zebrafish as zf
from fusionnet_keras.errors import FusionNetError


def write_toml(path, text):
    path.write_text(text)
    return path


def ball(shape, centre, r):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


def write_tiff(path, array):
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


# ---------------------------------------------------------------------------
# load_experiment


def test_load_experiment_defaults(tmp_path):
    for path in (None, tmp_path / "missing.toml", write_toml(tmp_path / "empty.toml", "")):
        exp = zf.load_experiment(path)
        assert exp["source"] == "synthetic"
        assert exp["voxel_size"] == [60.0, 56.4, 56.4]
        assert exp["clusters"] == 3 and exp["min_voxels"] == 200 and exp["seed"] == 0
        assert exp["val_fraction"] == 0.25
        assert exp["train_images"] == [] and exp["test_image"] == ""
    # the defaults are copies: changing one result does not change the next
    exp["voxel_size"].append(1.0)
    assert zf.load_experiment(None)["voxel_size"] == [60.0, 56.4, 56.4]


def test_load_experiment_values(tmp_path):
    path = write_toml(tmp_path / "e.toml", 'seed = 3\nvoxel_size = [30, 5, 5.5]\nclusters = 2\nval_fraction = 0.5\n')
    exp = zf.load_experiment(path)
    assert exp["seed"] == 3 and exp["clusters"] == 2 and exp["val_fraction"] == 0.5
    assert exp["voxel_size"] == [30, 5, 5.5]


def test_load_experiment_unknown_key(tmp_path):
    path = write_toml(tmp_path / "e.toml", "seed = 1\nvoxelsize = [1, 1, 1]\n")
    with pytest.raises(FusionNetError, match="voxelsize"):
        zf.load_experiment(path)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("voxel_size = [60, 56.4]", "voxel_size"),
        ("voxel_size = [60, -1, 56.4]", "voxel_size"),
        ("voxel_size = [60, 0, 56.4]", "voxel_size"),
        ('voxel_size = ["a", 1, 1]', "voxel_size"),
        ("voxel_size = [inf, 1, 1]", "voxel_size"),
        ("voxel_size = [true, 1, 1]", "voxel_size"),
        ("voxel_size = 60", "voxel_size"),
        ('source = "web"', "source"),
        ('seed = "1"', "seed"),
        ("clusters = 0", "clusters"),
        ("min_voxels = -1", "min_voxels"),
        ("val_fraction = 1", "val_fraction"),
        ("val_fraction = 0", "val_fraction"),
        ("seed = [", "invalid TOML"),
    ],
)
def test_load_experiment_bad_values(tmp_path, text, needle):
    with pytest.raises(FusionNetError, match=needle):
        zf.load_experiment(write_toml(tmp_path / "e.toml", text + "\n"))


def test_load_experiment_files_requires_paths(tmp_path):
    with pytest.raises(FusionNetError, match="train_images"):
        zf.load_experiment(write_toml(tmp_path / "e.toml", 'source = "files"\n'))
    text = ('source = "files"\ntrain_images = ["a.tif", "b.tif"]\ntrain_labels = ["a-l.tif", "b-l.tif"]\n'
            'test_image = "t.tif"\n')
    with pytest.raises(FusionNetError, match="test_labels"):
        zf.load_experiment(write_toml(tmp_path / "e.toml", text))
    exp = zf.load_experiment(write_toml(tmp_path / "e.toml", text + 'test_labels = "t-l.tif"\n'))
    assert exp["source"] == "files" and exp["train_labels"] == ["a-l.tif", "b-l.tif"]
    bad = text.replace('["a-l.tif", "b-l.tif"]', '["a-l.tif"]') + 'test_labels = "t-l.tif"\n'
    with pytest.raises(FusionNetError, match="same number"):
        zf.load_experiment(write_toml(tmp_path / "e.toml", bad))
    bad = text.replace('["a.tif", "b.tif"]', "[1, 2]") + 'test_labels = "t-l.tif"\n'
    with pytest.raises(FusionNetError, match="train_images"):
        zf.load_experiment(write_toml(tmp_path / "e.toml", bad))


# ---------------------------------------------------------------------------
# segment


def test_segment_components_and_min_voxels():
    prob = np.zeros((10, 20, 20), np.float32)
    prob[1:4, 1:4, 1:4] = 0.9  # 27 voxels
    prob[5:9, 10:15, 10:15] = 0.8  # 100 voxels
    prob[0, 18, 18] = 0.95  # 1 voxel
    prob[6:8, 2:4, 2:4] = 0.5  # exactly at the threshold: background
    prob[2, 2, 5] = 0.9  # diagonal neighbour of the first cube only: its own component (6-connectivity)
    lab = zf.segment(prob, threshold=0.5)
    assert lab.dtype == np.int32 and lab.shape == prob.shape
    assert lab.max() == 4 and set(np.unique(lab)) == {0, 1, 2, 3, 4}
    lab = zf.segment(prob, threshold=0.5, min_voxels=20)
    assert set(np.unique(lab)) == {0, 1, 2}  # renumbered 1..N
    sizes = sorted(int(np.sum(lab == i)) for i in (1, 2))
    assert sizes == [27, 100]
    assert np.all(lab[1:4, 1:4, 1:4] == lab[2, 2, 2]) and lab[0, 18, 18] == 0 and lab[2, 2, 5] == 0
    # a higher threshold drops the 0.8 cube; removing everything gives an all-zero volume
    assert set(np.unique(zf.segment(prob, threshold=0.85, min_voxels=20))) == {0, 1}
    assert not zf.segment(prob, threshold=0.5, min_voxels=1000).any()
    assert not zf.segment(np.zeros((3, 4, 4)), min_voxels=5).any()


# ---------------------------------------------------------------------------
# score


@pytest.fixture
def two_nuclei():
    shape = (12, 24, 24)
    gt = np.zeros(shape, np.int32)
    gt[ball(shape, (6, 6, 6), 4)] = 1
    gt[ball(shape, (6, 16, 16), 4)] = 2
    return gt


def test_score_perfect(two_nuclei):
    # different ids for the same objects are still a perfect segmentation
    s = zf.score(np.where(two_nuclei > 0, 10 - two_nuclei, 0), two_nuclei)
    assert s["vrand"] == pytest.approx(1.0) and s["vinfo"] == pytest.approx(1.0) and s["dice"] == pytest.approx(1.0)
    assert s["n_gt_nuclei"] == 2 and s["n_nuclei"] == 9
    s = zf.score(two_nuclei, two_nuclei)
    assert s["n_nuclei"] == 2


def test_score_merge_lowers_vrand(two_nuclei):
    merged = (two_nuclei > 0).astype(np.int32)
    s = zf.score(merged, two_nuclei)
    assert s["dice"] == pytest.approx(1.0)  # same mask ...
    assert s["vrand"] < 0.9 and s["vinfo"] < 1.0  # ... but two nuclei merged into one
    assert s["n_nuclei"] == 1 and s["n_gt_nuclei"] == 2


def test_score_empty_prediction(two_nuclei):
    s = zf.score(np.zeros_like(two_nuclei), two_nuclei)
    assert s["dice"] == 0.0 and s["n_nuclei"] == 0
    assert np.isfinite(s["vrand"]) and s["vrand"] < 0.1
    assert json.dumps(s)  # plain floats and ints


# ---------------------------------------------------------------------------
# prepare_data, source = "files"


@pytest.fixture
def volumes(tmp_path, monkeypatch):
    """Two 8 x 32 x 32 training volumes and a test volume under a monkeypatched FUSIONNET_DATA_DIR."""
    data = tmp_path / "data"
    (data / "zf").mkdir(parents=True)
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(data))
    r = np.random.default_rng(0)
    shape = (8, 32, 32)
    lab = np.zeros(shape, np.uint8)
    lab[ball(shape, (4, 10, 10), 3)] = 1
    lab[ball(shape, (4, 22, 22), 3)] = 2
    for name in ("a", "b", "test"):
        write_tiff(data / "zf" / f"{name}.tif", r.integers(0, 256, shape, dtype=np.uint8))
        write_tiff(data / "zf" / f"{name}-labels.tif", lab)
    write_tiff(data / "zf" / "mask-labels.tif", ((lab > 0) * 255).astype(np.uint8))
    write_tiff(data / "zf" / "wrong-labels.tif", lab[:, :, :30])
    write_tiff(data / "zf" / "small.tif", np.zeros((3, 32, 32), np.uint8))
    write_tiff(data / "zf" / "small-labels.tif", np.zeros((3, 32, 32), np.uint8))
    exp = zf.load_experiment(None)
    exp.update(source="files", train_images=["zf/a.tif", "zf/b.tif"],
               train_labels=["zf/a-labels.tif", "zf/b-labels.tif"],
               test_image="zf/test.tif", test_labels="zf/test-labels.tif", val_fraction=0.25)
    return {"data": data, "exp": exp, "labels": lab}


def test_prepare_data_files(volumes, tmp_path):
    out = tmp_path / "prepared"
    info = zf.prepare_data(volumes["exp"], "cpu", out)
    assert info["train_sections"] == "1-6,9-14"
    assert info["val_sections"] == "7-8,15-16"
    assert info["train_shapes"] == [[8, 32, 32], [8, 32, 32]] and info["test_shape"] == [8, 32, 32]
    assert info["source"] == "files"
    images = tifffile.imread(info["train_images"])
    masks = tifffile.imread(info["train_labels"])
    assert images.shape == (16, 32, 32) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert set(np.unique(masks)) == {0, 255}
    assert np.array_equal(masks[:8] > 0, volumes["labels"] > 0)
    assert np.array_equal(tifffile.imread(info["test_labels"]), volumes["labels"])
    # the marker makes a second call reuse the prepared data
    assert json.loads((out / "data.json").read_text()) == info
    assert zf.prepare_data(volumes["exp"], "cpu", out) == info


def test_prepare_data_binary_test_mask(volumes, tmp_path):
    exp = dict(volumes["exp"], test_labels="zf/mask-labels.tif")
    info = zf.prepare_data(exp, "cpu", tmp_path / "prepared")
    test = tifffile.imread(info["test_labels"])
    # the 0/255 mask's nuclei are its 3-D components
    assert set(np.unique(test)) == {0, 1, 2}
    assert np.array_equal(test > 0, volumes["labels"] > 0)


def test_prepare_data_label_shape_mismatch(volumes, tmp_path):
    exp = dict(volumes["exp"], train_labels=["zf/a-labels.tif", "zf/wrong-labels.tif"])
    with pytest.raises(FusionNetError, match="wrong-labels.tif"):
        zf.prepare_data(exp, "cpu", tmp_path / "prepared")
    exp = dict(volumes["exp"], test_labels="zf/wrong-labels.tif")
    with pytest.raises(FusionNetError, match="shape"):
        zf.prepare_data(exp, "cpu", tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "data.json").exists()


def test_prepare_data_volume_too_small(volumes, tmp_path):
    exp = dict(volumes["exp"], train_images=["zf/a.tif", "zf/small.tif"],
               train_labels=["zf/a-labels.tif", "zf/small-labels.tif"])
    with pytest.raises(FusionNetError, match="3 sections"):
        zf.prepare_data(exp, "cpu", tmp_path / "prepared")
    # 8 sections with a validation fraction that rounds to 0 sections
    exp = dict(volumes["exp"], val_fraction=0.05)
    with pytest.raises(FusionNetError, match="too small"):
        zf.prepare_data(exp, "cpu", tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "data.json").exists()


def test_prepare_data_missing_file(volumes, tmp_path):
    exp = dict(volumes["exp"], test_image="zf/nope.tif")
    with pytest.raises(FusionNetError, match="nope.tif"):
        zf.prepare_data(exp, "cpu", tmp_path / "prepared")


# ---------------------------------------------------------------------------
# report


def _report(records, source="synthetic", preset="cpu"):
    exp = zf.load_experiment(None)
    exp["source"] = source
    info = {"train_shapes": [[8, 32, 32], [8, 32, 32]], "train_sections": "1-6,9-14", "val_sections": "7-8,15-16",
            "test_shape": [8, 32, 32]}
    configs = {name: {"model": {"nb_filters": 8, "depth": 2}, "train": {"crop": 0}} for name in zf.MODELS}
    trains = {name: {"epochs": 3, "best_epoch": 2, "train_seconds": 90.0, "parameters": "1,234"} for name in zf.MODELS}
    results = {
        "fusionnet": {"vrand": 0.9, "vinfo": 0.95, "dice": 0.8, "n_nuclei": len(records), "n_gt_nuclei": 2},
        "unet": {"vrand": 0.0, "vinfo": 0.0, "dice": 0.0, "n_nuclei": 0, "n_gt_nuclei": 2},
    }
    return "\n".join(zf.report(preset, exp, info, configs, trains, results, records, 125.0))


def test_report_no_nuclei():
    text = _report([])
    assert "No nuclei were found" in text
    assert "SYNTHETIC DATA" in text and "CPU preset" in text
    assert "| V^Rand | 0.90000 | 0.00000 |" in text
    assert "nuclei found (ground truth 2) | 0 | 0" in text
    assert "| FusionNet | 8 | 2 | 1,234 | 3 | full | 1.5 | 2 |" in text
    assert "Total wall time: 2.1 min" in text
    assert "K-means" not in text


def test_report_with_nuclei():
    from fusionnet_keras.evaluation import morphology

    shape = (20, 40, 40)  # balls of a few hundred voxels or fewer get unreliable sphericities (outliers)
    lab = np.zeros(shape, np.int32)
    lab[ball(shape, (10, 10, 10), 7)] = 1
    lab[ball(shape, (10, 28, 28), 8)] = 2
    records = morphology.analyze_nuclei(lab, (60, 56.4, 56.4), k=3, seed=0)
    text = _report(records, source="files", preset="paper")
    assert "2 nuclei, 0 of them cut by the volume border" in text and "0 flagged as outliers" in text
    assert "K-means (k = 3)" in text and "| 0 | 1 |" in text and "| 1 | 1 |" in text
    volumes = sorted(r["volume_um3"] for r in records)
    assert f"| volume (um^3) | {np.median(volumes):.1f} | {np.percentile(volumes, 5):.1f} |" in text
    assert "SYNTHETIC" not in text and "CPU preset" not in text and "the paper's protocol" in text
    assert "No nuclei" not in text


def test_segment_watershed_splits_touching_nuclei():
    from fusionnet_keras.experiments.zebrafish import segment

    z, y, x = np.mgrid[:30, :30, :60]
    ball1 = (z - 15) ** 2 + (y - 15) ** 2 + (x - 17) ** 2 <= 12**2
    ball2 = (z - 15) ** 2 + (y - 15) ** 2 + (x - 40) ** 2 <= 12**2
    prob = (ball1 | ball2).astype(np.float32)
    assert segment(prob, method="components").max() == 1  # merged by connected components
    split = segment(prob, method="watershed", voxel_size=(1, 1, 1), h=2.0)
    assert split.max() == 2
    assert len(np.unique(split[ball1 & ~ball2])) == 1 and len(np.unique(split[ball2 & ~ball1])) == 1


def test_load_experiment_instance_method(tmp_path):
    from fusionnet_keras.experiments.zebrafish import load_experiment

    path = tmp_path / "e.toml"
    path.write_text('instances = "magic"\n')
    with pytest.raises(FusionNetError, match="instances"):
        load_experiment(path)
