"""End-to-end runs of the two experiments with tiny presets (slow: ``pytest -m slow``)."""

import json

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
    from fusionnet_keras.experiments import isbi2012 as isbi
    from fusionnet_keras.data.io.volumes import read_volume

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(isbi_dir.parent))
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "isbi2012", crop=64)
    out = tmp_path / "results"
    result = isbi.run("tiny", out, exp, tta=8)
    for name in ("fusionnet", "unet"):
        assert (out / name / "best.keras").exists()
        assert 0 <= result["results"][name]["plain"]["vrand"] <= 1
    submission = read_volume(out / "submission.tif")
    assert submission.shape == (30, 512, 512) and submission.dtype.name == "float32"
    report = (out / "report.md").read_text()
    assert "FusionNet" in report and "U-Net" in report and "0.97804" in report
    assert (out / "curves.png").stat().st_size > 0 and (out / "example.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["preset"] == "tiny"


@pytest.mark.slow
def test_zebrafish_pipeline(tmp_path, monkeypatch):
    from conftest import REPO
    from fusionnet_keras.data import synthetic
    from fusionnet_keras.experiments import zebrafish

    small = {"train": [(24, 64, 64), (16, 64, 64)], "test": (24, 64, 64)}
    monkeypatch.setitem(synthetic.PRESETS, "tiny", small)
    exp = _experiment_dir(tmp_path, REPO / "experiments" / "zebrafish", crop=0)
    (exp / "experiment.toml").write_text('source = "synthetic"\nmin_voxels = 20\n')
    monkeypatch.setattr(synthetic, "make_nucleus_volume", _small_nuclei(synthetic.make_nucleus_volume))
    out = tmp_path / "results"
    result = zebrafish.run("tiny", out, exp, tta=1)
    assert set(result["results"]) == {"fusionnet", "unet"}
    report = (out / "report.md").read_text()
    assert "SYNTHETIC DATA" in report and "V^Dice" in report
    assert (out / "morphology.csv").exists()
    assert (out / "fig9_overlay.png").exists() and (out / "fig10_features.png").exists()


def _small_nuclei(make):
    def wrapper(shape, *args, **kwargs):
        kwargs.setdefault("size_scale", 0.25)
        return make(shape, *args, **kwargs)

    return wrapper
