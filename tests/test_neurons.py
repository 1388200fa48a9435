"""``fusionnet-keras neurons``: raw EM to neurons with a registry model's card settings."""

import inspect

import numpy as np
import pytest
from click.testing import CliRunner

from fusionnet_keras.cli import main
from pretrained_helpers import NAME_2D, NAME_3D, build_registry


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_registry(tmp_path_factory.mktemp("neurons"))


@pytest.fixture
def registry(built, monkeypatch):
    monkeypatch.setenv("FUSIONNET_REGISTRY", str(built["registry"]))
    return built["registry"]


def _cli(*args):
    kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**kwargs).invoke(main, [str(a) for a in args], catch_exceptions=True)


def _volume(tmp_path):
    import h5py

    volume = (np.random.default_rng(5).random((6, 20, 20)) * 255).astype(np.uint8)
    with h5py.File(tmp_path / "em.h5", "w") as f:
        f["raw"] = volume
    return f"{tmp_path / 'em.h5'}:raw"


def _read(path):
    from fusionnet_keras.data.io import read_volume

    return read_volume(str(path))


def test_neurons_equals_the_three_commands_at_the_card_settings(registry, tmp_path):
    """neurons = affinities, then segment --method learned with the card's classifier, threshold (0.5) and
    watershed size (10); --threshold and --ws-size override the card."""
    em = _volume(tmp_path)
    result = _cli("neurons", em, tmp_path / "n.h5:labels", "--precision", "float32")
    assert result.exit_code == 0, result.output
    assert "watershed size 10, from the card of tiny-3d" in result.output
    assert _cli("affinities", em, tmp_path / "a.h5:affs", "--precision", "float32").exit_code == 0
    step = _cli("segment", tmp_path / "a.h5:affs", tmp_path / "s.h5:labels", "--method", "learned", "--threshold",
                "0.5", "--ws-size", "10")
    assert step.exit_code == 0, step.output
    labels = _read(tmp_path / "n.h5:labels")
    np.testing.assert_array_equal(labels, _read(tmp_path / "s.h5:labels"))
    assert labels.dtype == np.uint64 and labels.shape == (6, 20, 20)
    other = _cli("neurons", em, tmp_path / "o.h5:labels", "--precision", "float32", "--threshold", "0.9",
                 "--ws-size", "0")
    assert other.exit_code == 0 and "threshold 0.9, watershed size 0" in other.output
    # nothing is overwritten without --overwrite
    again = _cli("neurons", em, tmp_path / "n.h5:labels")
    assert again.exit_code == 2 and "exists" in again.stderr


def test_neurons_blockwise_is_the_blockwise_commands_at_the_card_settings(registry, tmp_path):
    """Blockwise: the affinities (kept beside OUT) equal the in-memory ones, the labels equal a blockwise
    segment --method learned of them at the card's settings, and a second run finds the work done.
    (Blockwise and in-memory learned agglomeration agree on real affinities; the tiny untrained network's
    near-constant affinities tie the classifier's scores, so they are not compared here.)"""
    em = _volume(tmp_path)
    args = ("neurons", em, tmp_path / "b.zarr", "--precision", "float32", "--workers", "1", "--block", "3,12,12")
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    affs = tmp_path / "b.zarr.affinities.zarr"
    assert _cli("affinities", em, tmp_path / "a.h5:affs", "--precision", "float32").exit_code == 0
    np.testing.assert_array_equal(_read(affs), _read(tmp_path / "a.h5:affs"))
    step = _cli("segment", affs, tmp_path / "s.zarr", "--method", "learned", "--threshold", "0.5", "--ws-size", "10",
                "--workers", "1", "--block", "3,12,12")
    assert step.exit_code == 0, step.output
    np.testing.assert_array_equal(_read(tmp_path / "b.zarr"), _read(tmp_path / "s.zarr"))
    assert _cli(*args).exit_code == 0  # a second run finds the work done


@pytest.mark.parametrize("args, needle", [
    (["--model", NAME_2D], "tiny-2d has task membranes-2d"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "MODEL_FILE"], "not a registry model, so it has no card: give its agglomeration classifier"),
])
def test_neurons_bad_input(registry, tmp_path, args, needle):
    em = _volume(tmp_path)
    args = [str(registry / NAME_3D / "model.keras") if a == "MODEL_FILE" else a for a in args]
    result = _cli("neurons", em, tmp_path / "n.h5:labels", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not (tmp_path / "n.h5").exists()
    out = _cli("neurons", em, em)
    assert out.exit_code == 2 and "input" in out.stderr
