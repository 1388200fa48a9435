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
from fusionnet_keras.segmentation import nuclei
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
        assert exp["voxel_size"] == []  # the synthetic preset's (or the paper's for files)
        assert exp["clusters"] == 3 and exp["min_volume_um3"] == 1.0 and exp["seed"] == 0 and exp["seeds"] == 3
        assert exp["exclude_outliers"] is False and exp["instances"] == "watershed"
        assert exp["val_fraction"] == 0.25
        assert exp["train_images"] == [] and exp["test_image"] == ""
    # the defaults are copies: changing one result does not change the next
    exp["voxel_size"].append(1.0)
    assert zf.load_experiment(None)["voxel_size"] == []


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
        ("min_volume_um3 = -1", "min_volume_um3"),
        ("seeds = 0", "seeds"),
        ("min_radius_um = 0", "min_radius_um"),
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
    lab = nuclei.segment_nuclei(prob, threshold=0.5)
    assert lab.dtype == np.int32 and lab.shape == prob.shape
    assert lab.max() == 4 and set(np.unique(lab)) == {0, 1, 2, 3, 4}
    lab = nuclei.segment_nuclei(prob, threshold=0.5, min_voxels=20)
    assert set(np.unique(lab)) == {0, 1, 2}  # renumbered 1..N
    sizes = sorted(int(np.sum(lab == i)) for i in (1, 2))
    assert sizes == [27, 100]
    assert np.all(lab[1:4, 1:4, 1:4] == lab[2, 2, 2]) and lab[0, 18, 18] == 0 and lab[2, 2, 5] == 0
    # a higher threshold drops the 0.8 cube; removing everything gives an all-zero volume
    assert set(np.unique(nuclei.segment_nuclei(prob, threshold=0.85, min_voxels=20))) == {0, 1}
    assert not nuclei.segment_nuclei(prob, threshold=0.5, min_voxels=1000).any()
    assert not nuclei.segment_nuclei(np.zeros((3, 4, 4)), min_voxels=5).any()


# ---------------------------------------------------------------------------
# the project's split of touching nuclei


def test_segment_splits_touching_spheres_of_several_sizes():
    """One instance per sphere, also where a small sphere presses into a large one (V^Rand >= 0.95)."""
    from fusionnet_keras.evaluation import vrand_vinfo_3d

    radii = [6, 9, 12, 15, 8, 11]  # voxels of 100 nm: 0.6 - 1.5 um
    shape = (40, 72, 110)
    centres, x = [], 8.0
    for i, r in enumerate(radii):  # a row of spheres, neighbours overlapping by 10 % of their summed radii
        if i:
            x += 0.9 * (radii[i - 1] + r)
        centres.append((20.0 + (i % 2) * 2, 36.0 - (i % 3) * 3, x - 2 + r / 2))
    z, y, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    closeness = np.stack([np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (xx - c[2]) ** 2) / r
                          for c, r in zip(centres, radii)])
    truth = np.where(closeness.min(0) <= 1, closeness.argmin(0) + 1, 0).astype(np.int32)
    assert all(np.any(truth == i + 1) for i in range(len(radii)))
    prob = (truth > 0).astype(np.float32)
    assert nuclei.segment_nuclei(prob, method="components").max() == 1  # one connected chain
    split = nuclei.segment_nuclei(prob, method="watershed", voxel_size=(100, 100, 100), min_radius_um=0.6)
    assert split.max() == len(radii)
    owners = [np.bincount(split[truth == i + 1]).argmax() for i in range(len(radii))]
    assert sorted(owners) == list(range(1, len(radii) + 1))  # each sphere its own instance
    assert vrand_vinfo_3d(split, truth)["vrand"] >= 0.95


def test_segment_keeps_one_round_nucleus_whole():
    """A single round nucleus with a rough surface is not cut into sectors."""
    rng = np.random.default_rng(3)
    shape = (40, 48, 48)
    noisy = ball(shape, (20, 24, 24), 16) & (rng.random(shape) > 0.02)  # pitted surface and holes
    split = nuclei.segment_nuclei(noisy.astype(np.float32), method="watershed", voxel_size=(60, 56.4, 56.4), min_radius_um=0.5)
    assert split.max() == 1


# ---------------------------------------------------------------------------
# scores


@pytest.fixture
def two_nuclei():
    shape = (12, 24, 24)
    gt = np.zeros(shape, np.int32)
    gt[ball(shape, (6, 6, 6), 4)] = 1
    gt[ball(shape, (6, 16, 16), 4)] = 2
    return gt


def test_instance_scores(two_nuclei):
    # different ids for the same objects are still a perfect segmentation
    s = nuclei.nucleus_scores(np.where(two_nuclei > 0, 10 - two_nuclei, 0), two_nuclei)
    assert s["vrand"] == pytest.approx(1.0) and s["vinfo"] == pytest.approx(1.0)
    assert s["n_gt_nuclei"] == 2 and s["n_nuclei"] == 9
    merged = nuclei.nucleus_scores((two_nuclei > 0).astype(np.int32), two_nuclei)
    assert merged["vrand"] < 0.9 and merged["vinfo"] < 1.0 and merged["n_nuclei"] == 1
    empty = nuclei.nucleus_scores(np.zeros_like(two_nuclei), two_nuclei)
    assert empty["n_nuclei"] == 0 and np.isfinite(empty["vrand"]) and empty["vrand"] < 0.1
    assert json.dumps(s)  # plain floats and ints


def test_table3_scores_hand_made_case():
    """The paper's protocol: per section, 4-connected components, border thinning, foreground-restricted,
    best threshold; Dice at 0.5. Section 1: two nuclei predicted eroded by one pixel (the thinning gives
    the missing rim back: V^Rand = V^Info = 1). Section 2: two nuclei joined by a bridge across the gap
    (one segment over two equal cells: V^Rand = 2/3, V^Info = 0, Fiji's value for a single segment)."""
    gt = np.zeros((2, 12, 16), np.int32)
    gt[:, 4:8, 2:6] = 1  # 4 x 4 nuclei, two pixels apart
    gt[:, 4:8, 8:12] = 2
    prob = np.zeros(gt.shape, np.float32)
    prob[0, 5:7, 3:5] = prob[0, 5:7, 9:11] = 0.9  # eroded by one pixel
    prob[1][gt[1] > 0] = 0.9
    prob[1, 5, 6:8] = 0.9  # 2-pixel bridge in the background between them
    s = nuclei.nucleus_table3_scores(prob, gt)
    assert s["vrand"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["vinfo"] == pytest.approx((1 + 0) / 2)
    assert s["vrand_threshold"] == 0.0
    assert s["dice"] == pytest.approx(2 * (8 + 32) / ((8 + 34) + 64))
    # the truth is the binary mask (the paper's labels were binary masks): its ids do not matter
    assert nuclei.nucleus_table3_scores(prob, (gt > 0).astype(np.uint8)) == s
    # without the thinning, section 1's eroded rim would be 24 unassigned voxels: far from perfect
    assert nuclei.nucleus_scores(nuclei.segment_nuclei(prob[:1]), gt[:1])["vrand"] < 0.5


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


def _results(seeds=(0, 1, 2)):
    """Per-seed results: FusionNet's V^Rand always above U-Net's (ranges apart), V^Info overlapping."""
    out = {}
    for i, s in enumerate(seeds):
        out[s] = {
            "fusionnet": {"table3": {"vrand": 0.95 + 0.01 * i, "vinfo": 0.90 + 0.05 * i, "dice": 0.9},
                          "instances": {"vrand": 0.8, "vinfo": 0.85, "n_nuclei": 30 + i, "n_gt_nuclei": 33}},
            "unet": {"table3": {"vrand": 0.90 + 0.01 * i, "vinfo": 0.93 - 0.01 * i, "dice": 0.85},
                     "instances": {"vrand": 0.7, "vinfo": 0.8, "n_nuclei": 28, "n_gt_nuclei": 33}},
        }
    return out


def _report(records, source="synthetic", preset="cpu", seeds=(0, 1, 2)):
    from fusionnet_keras.evaluation import population
    from fusionnet_keras.experiments.common import MODELS
    from fusionnet_keras.experiments.zebrafish_report import report

    exp = zf.load_experiment(None)
    exp["source"] = source
    info = {"train_shapes": [[8, 32, 32], [8, 32, 32]], "train_sections": "1-6,9-14", "val_sections": "7-8,15-16",
            "test_shape": [8, 32, 32], "voxel_size": [60.0, 56.4, 56.4]}
    config = {"model": {"nb_filters": 8, "depth": 2}, "train": {"crop": 0, "lr_decay": 0.99, "epochs": 500},
              "augment": {"elastic_amplitude": 10.0, "noise_sigma": 0.1}}
    configs = {s: {name: config for name in MODELS} for s in seeds}
    trains = {s: {name: {"epochs": 3, "best_epoch": 2, "train_seconds": 90.0, "parameters": "1,234"}
                  for name in MODELS} for s in seeds}
    morph = {"records": records, "silhouettes": population.silhouettes(records),
             "symmetry": population.symmetry(records, 0.9), "seed": seeds[0]}
    return "\n".join(report(preset, exp, info, configs, trains, _results(seeds), morph, 125.0))


def test_report_table3_over_seeds():
    from fusionnet_keras.experiments.zebrafish_report import separated

    text = _report([])
    assert "No nuclei were found" in text
    assert "SYNTHETIC DATA" in text and "CPU preset" in text
    assert "## Table 3 (the paper's protocol), 3 training seeds" in text
    # mean ± sd (range), the difference of the means, and whether it exceeds the spread
    assert "| V^Rand | 0.9600 ± 0.0100 (0.9500-0.9700) | 0.9100 ± 0.0100 (0.9000-0.9200) | +0.0500 | yes |" in text
    assert "| V^Info | 0.9500 ± 0.0500 (0.9000-1.0000) | 0.9200 ± 0.0100 (0.9100-0.9300) | +0.0300 | no |" in text
    assert "Differences larger than the spread over the seeds (the ranges do not overlap): V^Rand (FusionNet higher)" in text
    assert "**The project's own rows** (not the paper's)" in text and "| nuclei found | 31.0 ± 1.0" in text
    assert "| 2 | U-Net | 0.9200 | 0.9100 | 0.8500 |" in text  # per seed
    assert "| 1 | FusionNet | 8 | 2 | 1,234 | 3 | full | 1.5 | 2 |" in text  # training, per seed
    assert "Total wall time: 2.1 min" in text and "K-means" not in text
    # no nuclei: the symmetry check still has its paragraph, saying there is nothing to compare
    assert "Left-right symmetry" in text and "(0 left, 0 right)" in text and "nothing to compare" in text
    assert separated([1, 2], [3, 4]) and not separated([1, 3], [2, 4])


def test_report_with_nuclei():
    from fusionnet_keras.evaluation import morphology

    shape = (20, 40, 40)  # balls of a few hundred voxels or fewer get unreliable sphericities (outliers)
    lab = np.zeros(shape, np.int32)
    lab[ball(shape, (10, 10, 10), 7)] = 1
    lab[ball(shape, (10, 28, 28), 8)] = 2
    records = morphology.analyze_nuclei(lab, (60, 56.4, 56.4), k=3, seed=0)
    text = _report(records, source="files", preset="paper", seeds=(0,))
    assert "2 nuclei, 0 of them cut by the volume border" in text and "0 of the 2 others flagged as outliers" in text
    assert "K-means with k = 3" in text and "fitted on all whole nuclei, outliers included" in text
    assert "Why k = 3" in text and "magenta cluster" in text
    volumes = sorted(r["volume_um3"] for r in records)
    assert f"| volume (um^3) | {np.median(volumes):.1f} | {np.percentile(volumes, 5):.1f} |" in text
    assert "Left-right symmetry" in text and "(1 left, 1 right)" in text
    assert "SYNTHETIC" not in text and "CPU preset" not in text
    # the paper preset lists the values the papers do not state
    assert "**not stated in the paper**" in text and "train.lr_decay = 0.99" in text
    assert "No nuclei" not in text and "1 training seeds" in text


def test_report_clusters_count_only_the_fitted_whole_nuclei():
    """A nucleus cut by the volume border is left out of the K-means fit, so the cluster table (and the
    outlier count) must not list it either: the table's nuclei are the whole ones."""
    from fusionnet_keras.evaluation import morphology

    shape = (20, 40, 60)
    lab = np.zeros(shape, np.int32)
    for i, (centre, radius) in enumerate([((10, 10, 10), 7), ((10, 28, 28), 8), ((10, 10, 45), 7),
                                          ((10, 30, 57), 6)], start=1):  # the last one is cut by the x border
        lab[ball(shape, centre, radius)] = i
    records = morphology.analyze_nuclei(lab, (60, 56.4, 56.4), k=3, seed=0)
    assert sum(bool(r["touches_border"]) for r in records) == 1
    text = _report(records, source="files", preset="paper", seeds=(0,))
    assert "4 nuclei, 1 of them cut by the volume border" in text and "of the 3 others flagged" in text
    table = text[text.index("| cluster | nuclei |"):].split("\n\n")[0].splitlines()[2:]
    assert sum(int(row.split("|")[2]) for row in table) == 3


def test_morphology_seed_is_the_best_validation_fusionnet():
    trains = {s: {"fusionnet": {"best_vrand": v}, "unet": {"best_vrand": 0.99}}
              for s, v in ((0, 0.9), (1, 0.95), (2, 0.95))}
    assert zf.morphology_seed(trains) == 1  # the U-Net's scores do not count; a tie goes to the first seed
    trains[0]["fusionnet"]["best_vrand"] = 0.96
    assert zf.morphology_seed(trains) == 0


def test_load_experiment_instance_method(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('instances = "magic"\n')
    with pytest.raises(FusionNetError, match="instances"):
        zf.load_experiment(path)
