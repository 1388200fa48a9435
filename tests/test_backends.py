"""Backend parity: a model saved under TensorFlow predicts the same under JAX and back, and training runs under JAX.

Each backend runs in its own subprocess (Keras picks its backend once per
process). Models are tiny FusionNets with random batch-norm statistics; the
predictions go through ``fusionnet_keras.predict`` with 8 orientations.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import synthetic_em, write_tiff

REPO = Path(__file__).resolve().parents[1]

SAVE_AND_PREDICT = textwrap.dedent(
    """
    import sys, numpy as np, keras
    import fusionnet_keras as fk
    from conftest import TINY, randomize_weights
    backend, load, save, image, out = sys.argv[1:]
    assert keras.backend.backend() == backend, keras.backend.backend()
    x = np.load(image)
    if load != "-":
        np.save(out + ".loaded.npy", fk.predict(fk.load_model(load), x, tta=8, pad=8))
    keras.utils.set_random_seed(3)
    model = randomize_weights(fk.FusionNet(**TINY), seed=4)
    model.save(save)
    np.save(out + ".saved.npy", fk.predict(model, x, tta=8, pad=8))
    """
)


def _run(args, backend, cwd=None, timeout=600):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_saved_model_predicts_the_same_under_the_other_backend(tmp_path):
    image, _ = synthetic_em(1, seed=9)
    np.save(tmp_path / "x.npy", image[0].astype(np.float32) / 255.0)
    script = tmp_path / "run.py"
    script.write_text(SAVE_AND_PREDICT)
    x = str(tmp_path / "x.npy")
    _run([str(script), "tensorflow", "-", str(tmp_path / "tf.keras"), x, str(tmp_path / "tf")], "tensorflow")
    _run([str(script), "jax", str(tmp_path / "tf.keras"), str(tmp_path / "jax.keras"), x, str(tmp_path / "jax")],
         "jax")
    _run([str(script), "tensorflow", str(tmp_path / "jax.keras"), str(tmp_path / "tf2.keras"), x,
          str(tmp_path / "tf2")], "tensorflow")
    saved_tf, loaded_jax = np.load(tmp_path / "tf.saved.npy"), np.load(tmp_path / "jax.loaded.npy")
    saved_jax, loaded_tf = np.load(tmp_path / "jax.saved.npy"), np.load(tmp_path / "tf2.loaded.npy")
    for p in (saved_tf, saved_jax):  # non-trivial predictions: mostly away from the saturated ends
        assert p.shape == (64, 64) and np.mean((p > 0.01) & (p < 0.99)) > 0.5
    np.testing.assert_allclose(loaded_jax, saved_tf, atol=1e-4)  # TensorFlow -> JAX
    np.testing.assert_allclose(loaded_tf, saved_jax, atol=1e-4)  # JAX -> TensorFlow


def test_training_runs_under_jax_with_the_same_config_files(tmp_path):
    """The ISBI experiment's config files, shrunk by --set, train under JAX (train.pipeline auto: numpy there)."""
    image, labels = synthetic_em(4, seed=11)
    write_tiff(tmp_path / "images.tif", image)
    write_tiff(tmp_path / "labels.tif", labels)
    sets = {
        "data.images": str(tmp_path / "images.tif"), "data.labels": str(tmp_path / "labels.tif"),
        "data.train_sections": "1-3", "data.val_sections": "4", "model.nb_filters": 4, "model.depth": 1,
        "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 2, "train.crop": 32, "train.pad": 8,
        "train.validate_every": 1, "train.val_tta": 1, "predict.pad": 8,
    }
    args = ["-m", "fusionnet_keras.cli", "train", "experiments/isbi2012/fusionnet.toml", "experiments/isbi2012/cpu.toml",
            "--out", str(tmp_path / "run")]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value) if isinstance(value, str) else value}"]
    result = _run(args, "jax", cwd=REPO)
    assert "epoch 1/1" in result.stdout
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["best_vrand"] <= 1
    losses = [h["loss"] for h in state["history"]]
    assert all(np.isfinite(losses))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["precision"] == "auto" and config["train"]["pipeline"] == "auto"
    # best.keras is saved in the prediction precision (float32) and loads under TensorFlow
    check = ("import fusionnet_keras as fk; from fusionnet_keras.models.precision import precision_of; "
             f"m = fk.load_model({str(tmp_path / 'run' / 'best.keras')!r}); print('precision', precision_of(m))")
    assert "precision float32" in _run(["-c", check], "tensorflow").stdout
