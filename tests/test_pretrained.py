"""The registry of shipped models (issue 28): cards, sha256 checks, float16 storage, defaults, the
``models`` command, ``--weights`` by name or default, ``fk.predict(image)``, ``make pretrained``."""

from __future__ import annotations

import configparser
import inspect
import os
import shutil
from pathlib import Path, PurePosixPath

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

import fusionnet_keras as fk
from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.pretrained import registry as reg

from conftest import REPO
from pretrained_helpers import NAME_2D, NAME_3D, SETTINGS_2D, base_card, build_registry, write_card

PACKAGE_REGISTRY = REPO / "fusionnet_keras" / "pretrained" / "models"
ENTRY_FILES = ("model.keras", "card.md", "card.toml", "test_input.npy", "test_output.npy", "classifier.npz")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_registry(tmp_path_factory.mktemp("pretrained"))


@pytest.fixture
def registry(built, monkeypatch, tmp_path):
    """A private copy of the tiny registry, made the registry of the process (``FUSIONNET_REGISTRY``)."""
    copy = shutil.copytree(built["registry"], tmp_path / "registry")
    monkeypatch.setenv("FUSIONNET_REGISTRY", str(copy))
    monkeypatch.setenv("FUSIONNET_CACHE", str(tmp_path / "cache"))
    return copy


def _cli(*args):
    kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**kwargs).invoke(main, [str(a) for a in args], catch_exceptions=True)


def _user_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------
# the shipped registry: package data, and every entry reproduces its stored output


def _package_data_globs():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg.has_option("options.package_data", "fusionnet_keras.pretrained"), "no package data for the registry"
    return [g.strip() for g in cfg["options.package_data"]["fusionnet_keras.pretrained"].splitlines() if g.strip()]


def _covered(relative: str, globs) -> bool:
    path = PurePosixPath(relative)
    return any(len(path.parts) == len(PurePosixPath(g).parts) and path.match(g) for g in globs)


def test_package_data_covers_every_registry_file():
    globs = _package_data_globs()
    for name in ENTRY_FILES:  # the files an entry may have, in any entry's folder
        assert _covered(f"models/some-model/{name}", globs), name
    shipped = [p.relative_to(PACKAGE_REGISTRY.parent).as_posix() for p in PACKAGE_REGISTRY.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts]
    assert "models/README.md" in shipped
    assert [p for p in shipped if not _covered(p, globs)] == []
    manifest = (REPO / "MANIFEST.in").read_text()
    assert "recursive-include fusionnet_keras/pretrained/models" in manifest
    assert all(f"*{Path(n).suffix}" in manifest for n in ENTRY_FILES)


@pytest.mark.parametrize("name", reg.names(PACKAGE_REGISTRY))
def test_shipped_entry_loads_matches_its_card_and_reproduces_its_output(name):
    entry = reg.get(name, PACKAGE_REGISTRY)
    assert reg.sha256_file(entry.path) == entry.card["sha256"]
    assert entry.path.stat().st_size <= 10_000_000
    assert reg.check_entry(entry, atol=1e-4) <= 1e-4


def test_shipped_registry_has_at_most_one_default_per_task():
    found = reg.entries(PACKAGE_REGISTRY)  # raises on several defaults or a bad card
    assert len({e.name for e in found}) == len(found)


def test_every_entry_of_a_registry_is_checked(registry):
    assert reg.names() == [NAME_2D, NAME_3D]
    for entry in reg.entries():
        assert reg.check_entry(entry) <= 1e-4
    # a stored output the network no longer gives fails the check
    out = registry / NAME_2D / "test_output.npy"
    np.save(out, np.load(out) + 1e-3)
    with pytest.raises(FusionNetError, match="differs from test_output.npy"):
        reg.check_entry(reg.get(NAME_2D))
    # a card that misstates the storage dtype fails too
    card = registry / NAME_3D / "card.toml"
    card.write_text(card.read_text().replace('weights_dtype = "float16"', 'weights_dtype = "float32"'))
    with pytest.raises(FusionNetError, match="stores its weights as float16, its card says float32"):
        reg.check_entry(reg.get(NAME_3D))


# ---------------------------------------------------------------------------
# float16 storage, loading, sha256


def test_float16_file_loads_as_float32(built, tmp_path):
    from fusionnet_keras.pretrained.storage import save_compact, stored_dtype

    net = built["net2d"]
    save_compact(net, tmp_path / "half.keras", "float16")
    net.save(tmp_path / "plain.keras")
    assert stored_dtype(tmp_path / "half.keras") == "float16"
    assert stored_dtype(tmp_path / "plain.keras") == "float32"
    assert (tmp_path / "half.keras").stat().st_size < (tmp_path / "plain.keras").stat().st_size / 2
    loaded = fk.load_model(tmp_path / "half.keras")
    assert {v.dtype for v in loaded.weights} == {"float32"}
    image = built["image"]
    a = fk.predict(net, image, precision="float32", **SETTINGS_2D)
    b = fk.predict(loaded, image, precision="float32", **SETTINGS_2D)
    assert 0 < np.abs(a - b).max() < 1e-2  # rounded to float16, computed in float32


def test_load_by_name_default_and_from_preset(registry, built):
    net = fk.pretrained.load(NAME_2D)
    assert {v.dtype for v in net.weights} == {"float32"}
    assert fk.pretrained.from_preset is fk.pretrained.load
    image = built["image"]
    expected = np.load(registry / NAME_2D / "test_output.npy")
    np.testing.assert_allclose(fk.predict(net, image, precision="float32", **SETTINGS_2D), expected, atol=1e-5)
    # fk.predict without a model: the default 2-D entry; by name: the same
    np.testing.assert_allclose(fk.predict(image, precision="float32", **SETTINGS_2D), expected, atol=1e-5)
    np.testing.assert_allclose(fk.predict(NAME_2D, image, precision="float32", **SETTINGS_2D), expected, atol=1e-5)
    with pytest.raises(FusionNetError, match="no image given"):
        fk.predict(net)
    assert fk.pretrained.default_for("affinities-3d").name == NAME_3D
    aff = fk.predict_affinities(None, np.load(registry / NAME_3D / "test_input.npy"), precision="float32")
    np.testing.assert_allclose(aff, np.load(registry / NAME_3D / "test_output.npy"), atol=1e-5)


def test_hash_mismatch_is_refused_naming_the_file(registry):
    path = registry / NAME_2D / "model.keras"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FusionNetError, match=r"refusing .*tiny-2d/model\.keras: its sha256"):
        fk.pretrained.load(NAME_2D)
    clf = registry / NAME_3D / "classifier.npz"
    clf.write_bytes(clf.read_bytes()[:-1])
    with pytest.raises(FusionNetError, match=r"refusing .*classifier\.npz"):
        fk.pretrained.resolve_classifier(None)


def test_unknown_name_lists_the_names(registry):
    with pytest.raises(FusionNetError, match=f"unknown model 'nope' .*{NAME_2D}, {NAME_3D}"):
        fk.pretrained.load("nope")


def test_task_of_a_name_and_of_a_model_file(registry, tmp_path):
    with pytest.raises(FusionNetError, match=f"{NAME_3D} has task affinities-3d, not membranes-2d"):
        fk.pretrained.resolve_weights(NAME_3D, "membranes-2d")
    with pytest.raises(FusionNetError, match="it is an affinities-3d .*use 'fusionnet-keras affinities'"):
        fk.pretrained.load(str(registry / NAME_3D / "model.keras"), task="membranes-2d")


def test_no_default_for_a_task(registry):
    shutil.rmtree(registry / NAME_2D)
    with pytest.raises(FusionNetError, match="no shipped membranes-2d model .*pass --weights"):
        fk.pretrained.default_for("membranes-2d")


# ---------------------------------------------------------------------------
# card validation


def _card_error(registry, change, entry=NAME_2D):
    import tomllib

    folder = registry / entry
    card = tomllib.loads((folder / "card.toml").read_text())
    change(card)
    write_card(folder, card)
    with pytest.raises(FusionNetError) as info:
        reg.entries()
    message = str(info.value)
    assert "\n" not in message and str(folder / "card.toml") in message
    return message


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("sha256"), "needs 'sha256'"),
    (lambda c: c.update(task="cells-2d"), "unknown task 'cells-2d'"),
    (lambda c: c.update(seed="zero"), "'seed' must be an integer"),
    (lambda c: c.update(weights_dtype="bfloat16"), "'weights_dtype' must be one of"),
    (lambda c: c.update(name="other"), "differs from its folder"),
    (lambda c: c["training"].pop("hardware"), "[training] needs 'hardware'"),
    (lambda c: c.pop("data"), "needs a [data] table"),
    (lambda c: c["scores"].update(headline="ARAND"), "headline 'ARAND' is not one of its values"),
    (lambda c: c["test"].update(input="missing.npy"), "names missing.npy, which is missing"),
    (lambda c: c.update(file="../model.keras"), "must be a file name"),
    (lambda c: c["test"]["settings"].update(orientations=4), "[test] settings orientations unknown"),
])
def test_bad_card_is_a_one_line_error(registry, change, needle):
    assert needle in _card_error(registry, change)


def test_bad_3d_card_and_two_defaults(registry):
    assert "needs a [segmentation] table" in _card_error(registry, lambda c: c.pop("segmentation"), NAME_3D)
    shutil.rmtree(registry / NAME_3D)
    assert "threshold must be in [0, 1]" in _card_error(
        registry, lambda c: c.update(task="affinities-3d", test={**c["test"], "settings": {}}, segmentation={
            "classifier": "card.md", "classifier_sha256": "0" * 64, "threshold": 2.0, "ws_size": 1,
            "chosen_on": "v", "validation_curve": [[0.5, 1.0]]}))
    (registry / NAME_2D / "card.toml").unlink()
    (registry / "broken").mkdir()
    (registry / "broken" / "card.toml").write_text("name = \n")
    with pytest.raises(FusionNetError, match="not valid TOML"):
        reg.entries()


def test_several_defaults_for_a_task(registry):
    shutil.copytree(registry / NAME_2D, registry / "tiny-2d-b")
    card = (registry / "tiny-2d-b" / "card.toml").read_text().replace(f'"{NAME_2D}"', '"tiny-2d-b"')
    (registry / "tiny-2d-b" / "card.toml").write_text(card)
    with pytest.raises(FusionNetError, match="several default models for membranes-2d: tiny-2d, tiny-2d-b"):
        reg.entries()


def test_base_card_is_valid():
    from fusionnet_keras.pretrained.card import check_card

    assert check_card(base_card("x", "membranes-2d", "a" * 64), "card.toml")["name"] == "x"


# ---------------------------------------------------------------------------
# the command line


def test_models_lists_and_prints_cards(registry):
    result = _cli("models")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith(NAME_2D))
    size = (registry / NAME_2D / "model.keras").stat().st_size / 1e6
    assert "membranes-2d" in row and f"{size:.1f} MB" in row and "V_rand=0.5" in row and "*" in row
    assert any(line.startswith(NAME_3D) and "affinities-3d" in line for line in lines)
    result = _cli("models", NAME_3D)
    assert result.exit_code == 0 and result.stdout.startswith(f"# {NAME_3D}\n\nA tiny test network.")
    _user_error(_cli("models", "nope"), "unknown model 'nope'", NAME_2D, NAME_3D)


def test_models_with_an_empty_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONNET_REGISTRY", str(tmp_path))
    result = _cli("models")
    assert result.exit_code == 0 and "no models in the registry" in result.stdout
    _user_error(_cli("predict", tmp_path / "in.tif", tmp_path / "out.tif"),
                "no shipped membranes-2d model", "--weights")
    _user_error(_cli("affinities", tmp_path / "in.tif", tmp_path / "out.h5"), "no shipped affinities-3d model")


def test_predict_without_weights_uses_the_default(registry, built, tmp_path):
    image = (built["image"] * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    result = _cli("predict", tmp_path / "in.tif", tmp_path / "out.tif", "--tta", "1", "--pad", "8",
                  "--precision", "float32")
    assert result.exit_code == 0, result.output
    expected = fk.predict(fk.pretrained.load(NAME_2D), image / np.float32(255), tta=1, pad=8, precision="float32")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected, atol=1e-5)
    result = _cli("predict", tmp_path / "in.tif", tmp_path / "out2.tif", "-w", NAME_2D, "--tta", "1", "--pad", "8",
                  "--precision", "float32")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out2.tif"), tifffile.imread(tmp_path / "out.tif"))


def test_affinities_without_weights_uses_the_default(registry, tmp_path):
    volume = np.load(registry / NAME_3D / "test_input.npy")
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    result = _cli("affinities", tmp_path / "in.tif", tmp_path / "out.tif", "--precision", "float32")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), np.load(registry / NAME_3D / "test_output.npy"),
                               atol=1e-5)


@pytest.mark.parametrize("command, args, needles", [
    ("predict", ["-w", NAME_3D], ["tiny-3d has task affinities-3d", "use 'fusionnet-keras affinities'"]),
    ("affinities", ["-w", NAME_2D], ["tiny-2d has task membranes-2d", "use 'fusionnet-keras predict'"]),
    ("predict", ["-w", "nope"], ["unknown model 'nope'", NAME_2D]),
    ("predict", ["-w", "3d-file"], ["it is an affinities-3d", "use 'fusionnet-keras affinities'"]),
    ("affinities", ["-w", "2d-file"], ["it is a membranes-2d", "use 'fusionnet-keras predict'"]),
    ("predict", ["--input", "4d"], ["expected a 2-D image or 3-D stack", "4-D"]),
    ("affinities", ["--input", "2d"], ["expected a 3-D volume"]),
])
def test_bad_input_rows(registry, tmp_path, command, args, needles):
    files = {"3d-file": registry / NAME_3D / "model.keras", "2d-file": registry / NAME_2D / "model.keras"}
    images = {"2d": np.zeros((16, 16), np.uint8), "3d": np.zeros((4, 16, 16), np.uint8),
              "4d": np.zeros((2, 2, 16, 16), np.uint8)}
    kind = args[1] if args[0] == "--input" else ("2d" if command == "predict" else "3d")
    np.save(tmp_path / "in.npy", images[kind])
    import h5py

    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["x"] = images[kind]
    extra = [] if args[0] == "--input" else [files.get(args[1], args[1])]
    extra = ["-w", *extra] if extra else []
    out = tmp_path / ("out.tif" if command == "predict" else "out.h5")
    _user_error(_cli(command, f"{tmp_path / 'in.h5'}:x", out, *extra), *needles)
    assert not out.exists()


def test_segment_learned_uses_the_default_classifier(registry, built, tmp_path):
    import h5py

    with h5py.File(tmp_path / "affs.h5", "w") as f:
        f["a"] = built["affs"]
    common = ["--method", "learned", "--ws-size", "0"]
    assert _cli("segment", f"{tmp_path / 'affs.h5'}:a", tmp_path / "a.h5:l", *common).exit_code == 0
    result = _cli("segment", f"{tmp_path / 'affs.h5'}:a", tmp_path / "b.h5:l", *common,
                  "--classifier", registry / NAME_3D / "classifier.npz")
    assert result.exit_code == 0, result.output
    result = _cli("segment", f"{tmp_path / 'affs.h5'}:a", tmp_path / "c.h5:l", *common, "--classifier", NAME_3D)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "c.h5") as c:
        np.testing.assert_array_equal(a["l"][()], b["l"][()])
        np.testing.assert_array_equal(a["l"][()], c["l"][()])
    _user_error(_cli("segment", f"{tmp_path / 'affs.h5'}:a", tmp_path / "d.h5:l", *common, "--classifier", NAME_2D),
                "tiny-2d has task membranes-2d")


# ---------------------------------------------------------------------------
# make pretrained


def test_regenerate_runs_every_card_command(registry, tmp_path, monkeypatch, capsys):
    from fusionnet_keras.pretrained.regenerate import main as regenerate

    monkeypatch.chdir(tmp_path)
    assert regenerate(["--dry-run"]) == 0
    assert not (tmp_path / "regenerated.txt").exists()
    assert f"[{NAME_3D}] echo {NAME_3D} >> regenerated.txt" in capsys.readouterr().out
    assert regenerate([]) == 0
    assert (tmp_path / "regenerated.txt").read_text().split() == [NAME_2D, NAME_3D]
    assert regenerate(["nope"]) == 2


def test_make_pretrained_is_not_part_of_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert "\npretrained: " in makefile and "-m fusionnet_keras.pretrained.regenerate" in makefile
    test_recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "pretrained" not in test_recipe


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_registry(tmp_path):
    """Build the wheel and the sdist of a copy of the package holding one entry: its files are in both."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(REPO / "fusionnet_keras", src / "fusionnet_keras",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    entry = src / "fusionnet_keras" / "pretrained" / "models" / "some-model"
    entry.mkdir()
    for name in ENTRY_FILES:
        (entry / name).write_text("x")
    code = "from setuptools import build_meta as b; b.build_wheel('dist'); b.build_sdist('dist')"
    subprocess.run([sys.executable, "-c", code], cwd=src, check=True, capture_output=True)
    wheel = next((src / "dist").glob("*.whl"))
    sdist = next((src / "dist").glob("*.tar.gz"))
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for name in (*ENTRY_FILES, "../README.md"):
        path = os.path.normpath(f"fusionnet_keras/pretrained/models/some-model/{name}")
        assert path in in_wheel and path in in_sdist, path
