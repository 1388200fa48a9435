"""The install resolves: the default (GPU-capable ``tensorflow``) and the ``cuda``, ``jax``, ``jax-cuda``, ``docs``,
``bioimageio`` extras.

``pip install --dry-run --ignore-installed --report`` resolves the dependencies
from the package index without installing; pip reads the wheels' metadata
(PEP 658) rather than the wheels, so the CUDA libraries (GBs) are not
downloaded. Needs the package index: slow tests only (``make check-install``,
``make test-slow``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED = {  # extra -> distributions that must be in the resolved set
    "": {"tensorflow", "keras", "numpy"},
    "cuda": {"tensorflow", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"},
    "jax": {"jax", "jaxlib"},
    "jax-cuda": {"jax", "jaxlib", "jax-cuda12-plugin"},
    "docs": {"mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python"},
    "bioimageio": {"bioimageio.core", "bioimageio.spec"},
}


def _resolve(extra, tmp_path):
    target = f"{REPO}[{extra}]" if extra else str(REPO)
    report = tmp_path / f"report-{extra or 'default'}.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), target],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXPECTED))
def test_install_resolves(extra, tmp_path):
    names = _resolve(extra, tmp_path)
    assert EXPECTED[extra] <= names, EXPECTED[extra] - names
    assert "tensorflow-cpu" not in names  # the default install is the GPU-capable tensorflow
    if extra == "bioimageio":  # the export runs TensorFlow SavedModel weights: no PyTorch (and no CUDA) for it
        assert not {"torch", "onnxruntime"} & names, {"torch", "onnxruntime"} & names
