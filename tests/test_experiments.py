"""End-to-end runs of the two experiments with tiny presets (slow: ``pytest -m slow``)."""

import json

import numpy as np
import pytest

TINY_PRESET = """
[model]
nb_filters = 4
depth = 2
bn_momentum = 0.9

[train]
crop = {crop}
pad = 0
batch_size = 2
steps_per_epoch = 2
epochs = 1
loss = "bce"
tensorboard = false

[predict]
tta = 1
"""


def _experiment_dir(tmp_path, source_dir, crop, extra=()):
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("fusionnet.toml", "unet.toml", *extra):
        (exp / name).write_text((source_dir / name).read_text())
    (exp / "tiny.toml").write_text(TINY_PRESET.format(crop=crop))
    return exp


@pytest.mark.slow
def test_isbi2012_pipeline(tmp_path, isbi_dir, monkeypatch):
    from conftest import REPO
    from fusionnet_keras.data.io import load_image
    from fusionnet_keras.data.io.volumes import read_volume
    from fusionnet_keras.evaluation import isbi_scores
    from fusionnet_keras.experiments import isbi2012 as isbi
    from fusionnet_keras.inference.predictor import predict
    from fusionnet_keras.models.loading import load_model

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(isbi_dir.parent))
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "isbi2012", crop=64)
    out = tmp_path / "results"
    result = isbi.run("tiny", out, exp, tta=8)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result, default=str))
    report = (out / "report.md").read_text()
    labels = read_volume(out / "val-labels.tif")
    assert labels.shape == (10, 512, 512)
    for name, label in (("fusionnet", "FusionNet"), ("unet", "U-Net")):
        # the written validation prediction is the one scored, and the report shows those scores
        scores = isbi_scores(read_volume(out / name / "val-prediction.tif"), labels)
        plain = result["results"][name]["plain"]
        assert plain["vrand"] == pytest.approx(scores["vrand"]) and plain["vinfo"] == pytest.approx(scores["vinfo"])
        assert f"| {label} | none | {plain['vrand']:.5f} | {plain['vinfo']:.5f} |" in report
        assert result["train"][name]["epochs"] == 1
    # the submission is FusionNet's best model on the test sections
    submission = read_volume(out / "submission.tif")
    assert submission.shape == (30, 512, 512) and submission.dtype.name == "float32"
    first = predict(load_model(out / "fusionnet" / "best.keras"), load_image(isbi_dir / "test-volume.tif")[0], tta=8)
    np.testing.assert_allclose(submission[0], first, atol=1e-5)
    assert "Preset: `tiny`." in report and "CPU preset" not in report
    assert "Sections 21-30 both select and score the checkpoint" in report
    assert (out / "curves.png").stat().st_size > 0 and (out / "example.png").stat().st_size > 0


@pytest.mark.slow
def test_isbi2012_chain(tmp_path, isbi_dir, monkeypatch):
    """make isbi2012-chain with a tiny preset and --cv: FusionNetW^2 trained unit by unit, the W^1 vs W^2
    rows, the 3-fold cross-validation section."""
    from conftest import REPO
    from fusionnet_keras.data.io.volumes import read_volume
    from fusionnet_keras.evaluation import isbi_scores
    from fusionnet_keras.experiments import isbi2012 as isbi

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(isbi_dir.parent))
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "isbi2012", crop=64, extra=("fusionnet_w2.toml",))
    out = tmp_path / "results"
    result = isbi.run("tiny", out, exp, tta=1, models="fusionnet_w2", cv=True)
    report = (out / "report.md").read_text()
    labels = read_volume(out / "val-labels.tif")
    r = result["results"]["fusionnet_w2"]
    for path, scores in ((out / "fusionnet_w2" / "val-prediction-unit1.tif", r["unit1"]),
                         (out / "fusionnet_w2" / "val-prediction.tif", r)):
        # the written predictions are the ones scored: unit 1 (W^1) and the chain's output (W^2)
        assert isbi_scores(read_volume(path), labels)["vrand"] == pytest.approx(scores["plain"]["vrand"])
    assert "# ISBI 2012: FusionNetW^2" in report and "## FusionNetW^1 vs FusionNetW^2" in report
    assert f"| W^1 (unit 1) | {r['unit1']['plain']['vrand']:.5f} |" in report
    assert f"| W^2 (unit 2) | {r['plain']['vrand']:.5f} |" in report
    with open(out / "fusionnet_w2" / "log.csv") as f:
        header = f.readline()
    assert "loss_unit1" in header and "loss_unit2" in header  # one loss per unit, trained one by one
    assert read_volume(out / "submission.tif").shape == (30, 512, 512)
    cv = result["cv"]["fusionnet_w2"]
    assert [f["fold"] for f in cv["folds"]] == [1, 2, 3] and (out / "cv" / "fusionnet_w2" / "cv.json").exists()
    assert sorted(s for f in cv["folds"] for s in f["val_sections"]) == list(range(1, 31))
    assert f"| FusionNetW^2 | {cv['mean']['vrand']:.5f} | {cv['mean']['vinfo']:.5f} |" in report


@pytest.mark.slow
def test_zebrafish_pipeline(tmp_path, monkeypatch):
    from conftest import REPO
    from fusionnet_keras.data import synthetic
    from fusionnet_keras.data.io.volumes import read_volume
    from fusionnet_keras.experiments import zebrafish
    from fusionnet_keras.segmentation import nuclei

    small = {"train": [(24, 64, 64), (16, 64, 64)], "test": (24, 64, 64), "voxel_size": (120.0, 112.8, 112.8)}
    monkeypatch.setitem(synthetic.PRESETS, "tiny", small)
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "zebrafish", crop=0)
    (exp / "experiment.toml").write_text('source = "synthetic"\nseeds = 2\nmin_volume_um3 = 0.1\nmin_radius_um = 0.5\n')
    monkeypatch.setattr(synthetic, "make_nucleus_volume", _small_nuclei(synthetic.make_nucleus_volume))
    out = tmp_path / "results"
    result = zebrafish.run("tiny", out, exp, tta=1)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result, default=str))
    report = (out / "report.md").read_text()
    gt = read_volume(out / "data" / "test-labels.tif")
    assert gt.shape == (24, 64, 64) and gt.max() > 0
    r = result["results"]
    assert sorted(r) == [0, 1] and result["seeds"] == [0, 1]
    for seed in (0, 1):
        for name in ("fusionnet", "unet"):
            # the written prediction and instances are the ones scored; each seed trained its own networks
            folder = out / f"seed{seed}" / name
            assert json.loads((folder / "config.json").read_text())["train"]["seed"] == seed
            prob = read_volume(folder / "test-prediction.tif")
            assert r[seed][name]["table3"] == pytest.approx(nuclei.nucleus_table3_scores(prob, gt))
            assert r[seed][name]["instances"] == nuclei.nucleus_scores(read_volume(folder / "test-instances.tif"), gt)
    assert "## Table 3 (the paper's protocol), 2 training seeds" in report
    assert "**The project's own rows** (not the paper's)" in report and "larger than the spread" in report
    assert f"| 1 | U-Net | {r[1]['unet']['table3']['vrand']:.4f} |" in report
    assert "SYNTHETIC DATA" in report and "voxel size 120 x 112.8 x 112.8 nm" in report
    with open(out / "morphology.csv") as f:
        assert len(f.readlines()) == 1 + result["n_nuclei"]
    # the morphology uses the FusionNet of the best validation V^Rand (not the test volume's scores)
    best = max((result["train"][s]["fusionnet"]["best_vrand"], -s) for s in (0, 1))
    assert result["morphology_seed"] == -best[1]
    assert result["n_nuclei"] == r[result["morphology_seed"]]["fusionnet"]["instances"]["n_nuclei"]
    assert f"seed {result['morphology_seed']}: the best validation V^Rand" in report
    assert "Left-right symmetry" in report and set(result["symmetry"]) >= {"n_left", "n_right", "features"}
    assert (out / "fig9_overlay.png").exists() and (out / "fig10_features.png").exists()


def _small_nuclei(make):
    def wrapper(shape, *args, **kwargs):
        kwargs.setdefault("size_scale", 0.25)
        return make(shape, *args, **kwargs)

    return wrapper


def _scores(vrand, vinfo=0.97):
    plain = {"vrand": vrand, "vinfo": vinfo, "vrand_threshold": 0.5, "vinfo_threshold": 0.5, "pixel_error": 0.1}
    return {"plain": plain, "median2": dict(plain, vrand=vrand - 0.001)}


def test_isbi2012_report_chain_and_cross_validation():
    """The W^1 vs W^2 rows, the reference FusionNet trained alone, the 3-fold CV section, the labels."""
    from fusionnet_keras.experiments import isbi2012 as isbi
    from fusionnet_keras.training import config as cfg
    from fusionnet_keras.training import config_files

    config = config_files.load_config([], ["model.architecture=fusionnet_w", "model.units=2"])
    results = {"fusionnet_w2": {**_scores(0.96), "unit1": _scores(0.95)}}
    trains = {"fusionnet_w2": {"epochs": 25, "best_epoch": 20, "train_seconds": 60.0, "parameters": "9"}}
    cv = {"fusionnet_w2": {"folds": [{"vrand": 0.9, "vinfo": 0.95}, {"vrand": 0.92, "vinfo": 0.96},
                                     {"vrand": 0.94, "vinfo": 0.97}], "mean": {"vrand": 0.92, "vinfo": 0.96}}}
    alone = {"vrand": 0.97, "vinfo": 0.98, "pixel_error": 0.09, "epochs": 30}
    text = "\n".join(isbi.report("paper", {"fusionnet_w2": config}, results, trains, 60.0, cv, alone))
    assert "# ISBI 2012: FusionNetW^2" in text
    assert "| FusionNetW^1 (unit 1 of the same chain) | none | 0.95000 |" in text
    assert "| FusionNetW^2 | none | 0.96000 |" in text
    assert "| W^1 (unit 1) | 0.95000 |" in text and "| W^2 (unit 2) | 0.96000 |" in text
    assert "| FusionNet trained alone (`make isbi2012`, same preset, 30 epochs) | 0.97000 |" in text
    assert "## 3-fold cross-validation (the 2016 paper's protocol)" in text
    assert "| FusionNetW^2 | 0.92000 | 0.96000 | 0.9000, 0.9200, 0.9400 |" in text
    assert "Sections 21-30 both select and score the checkpoint" in text and "same property per fold" in text
    assert f"**{cfg.NOT_IN_PAPER_LABEL}**" in text  # the paper preset lists the unstated values


def _cells_with_gaps(seed, size=64):
    """An ISBI-like section: Voronoi cells (labels 255, membranes 0) and a cell map with noise whose
    membranes have gaps (0.8) and one dark cell (0.65): no threshold both closes the gaps and keeps the dark
    cell, so the plain map merges cells at every threshold."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    markers = np.zeros((size, size), np.int32)
    markers[rng.integers(4, size - 4, 9), rng.integers(4, size - 4, 9)] = np.arange(1, 10)
    _, index = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    cells = markers[tuple(index)]
    membrane = ndimage.morphological_gradient(cells, size=(2, 2)) > 0
    labels = np.where(membrane, 0, 255).astype(np.uint8)
    prob = np.where(membrane, 0.1, np.where(cells == 1, 0.65, 0.95))
    for y, x in rng.integers(8, size - 8, (6, 2)):  # gaps: the membrane fades to 0.8 in small windows
        window = (slice(y - 3, y + 3), slice(x - 3, x + 3))
        prob[window] = np.where(membrane[window], 0.8, prob[window])
    prob = np.clip(prob + rng.normal(0, 0.03, prob.shape), 0, 1).astype(np.float32)
    return prob, labels


def test_isbi2012_multicut_row_on_tiny_synthetic_sections(monkeypatch):
    """The multicut row: settings chosen on the 'training' sections only (the best V^Rand of the sweep), the
    scored sections segmented once at them and scored like the plain map; the report shows the row with its
    settings."""
    from fusionnet_keras.evaluation import isbi_scores
    from fusionnet_keras.segmentation.multicut import multicut_map
    from fusionnet_keras.experiments import isbi2012 as isbi

    monkeypatch.setattr(isbi, "MULTICUT_BETAS", (0.3, 0.6))
    monkeypatch.setattr(isbi, "MULTICUT_WS_SIZES", (0, 10))
    sections = [_cells_with_gaps(seed) for seed in range(3)]
    prob, labels = (np.stack(a) for a in zip(*sections))
    row = isbi.multicut_row(prob[:2], labels[:2], prob[2:], labels[2:], log=lambda line: None)
    sweep = row["train_sweep"]
    assert len(sweep) == 2 * 2 * 2 and {r["variant"] for r in sweep} == {"segments", "cuts"}
    best = max(sweep, key=lambda r: r["vrand"])
    assert row["settings"] == {k: best[k] for k in ("beta", "ws_size", "variant")}
    chosen = multicut_map(prob[2:], **row["settings"])
    assert row["vrand"] == pytest.approx(isbi_scores(chosen, labels[2:])["vrand"])
    assert row["train_plain"]["vrand"] == pytest.approx(isbi_scores(prob[:2], labels[:2])["vrand"])
    results = {"fusionnet": {**_scores(0.96), "multicut": row}}
    from fusionnet_keras.training.config_files import load_config

    config = load_config([])
    trains = {"fusionnet": {"epochs": 1, "best_epoch": 1, "train_seconds": 6.0, "parameters": "9"}}
    text = "\n".join(isbi.report("cpu", {"fusionnet": config}, results, trains, 6.0))
    s = row["settings"]
    assert (f"| FusionNet | multicut ({s['variant']}, beta {s['beta']:g}, watershed size {s['ws_size']} px; chosen "
            f"on sections 1-20) | {row['vrand']:.5f} | {row['vinfo']:.5f} |") in text
    assert "chosen by V^Rand on sections 1-20 only" in text
