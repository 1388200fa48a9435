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
    assert (out / "curves.png").stat().st_size > 0 and (out / "example.png").stat().st_size > 0


@pytest.mark.slow
def test_zebrafish_pipeline(tmp_path, monkeypatch):
    from conftest import REPO
    from fusionnet_keras.data import synthetic
    from fusionnet_keras.data.io.volumes import read_volume
    from fusionnet_keras.experiments import zebrafish

    small = {"train": [(24, 64, 64), (16, 64, 64)], "test": (24, 64, 64)}
    monkeypatch.setitem(synthetic.PRESETS, "tiny", small)
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "zebrafish", crop=0)
    (exp / "experiment.toml").write_text('source = "synthetic"\nmin_voxels = 20\n')
    monkeypatch.setattr(synthetic, "make_nucleus_volume", _small_nuclei(synthetic.make_nucleus_volume))
    out = tmp_path / "results"
    result = zebrafish.run("tiny", out, exp, tta=1)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result, default=str))
    report = (out / "report.md").read_text()
    gt = read_volume(out / "data" / "test-labels.tif")
    assert gt.shape == (24, 64, 64) and gt.max() > 0
    for name in ("fusionnet", "unet"):
        # the written instances are the ones scored
        instances = read_volume(out / name / "test-instances.tif")
        assert result["results"][name] == {**zebrafish.score(instances, gt),
                                           "components": result["results"][name]["components"]}
    r = result["results"]
    assert f"| V^Dice | {r['fusionnet']['dice']:.5f} | {r['unet']['dice']:.5f} |" in report
    assert "SYNTHETIC DATA" in report
    with open(out / "morphology.csv") as f:
        assert len(f.readlines()) == 1 + result["n_nuclei"]
    assert result["n_nuclei"] == r["fusionnet"]["n_nuclei"]
    assert (out / "fig9_overlay.png").exists() and (out / "fig10_features.png").exists()


def _small_nuclei(make):
    def wrapper(shape, *args, **kwargs):
        kwargs.setdefault("size_scale", 0.25)
        return make(shape, *args, **kwargs)

    return wrapper
