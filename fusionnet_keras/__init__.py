"""fusionnet-keras: FusionNet (Quan, Hildebrand, Jeong 2016/2021) for EM connectomics in Keras 3.

``import fusionnet_keras`` registers the model classes with Keras, so
``keras.saving.load_model("model.keras")`` works with no custom objects. Public API::

    from fusionnet_keras import FusionNet, FusionNetW, UNet, predict, load_model, metrics
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_MODELS = ("FusionNet", "FusionNetW", "UNet", "build_model")
_SUBMODULES = ("metrics", "io", "models", "augment", "data", "train", "config", "morphology", "synthetic")

__all__ = [*_MODELS, "predict", "load_model", "metrics", "io", "__version__"]

from .predictor import predict  # noqa: E402  (numpy only at import time)

# The console script imports Keras inside its commands, so that --help is instant.
if not _os.path.basename(_sys.argv[0] if _sys.argv else "").startswith("fusionnet-keras"):
    from .models import FusionNet, FusionNetW, UNet, build_model  # noqa: E402,F401


def __getattr__(name):
    import importlib

    if name in _MODELS:
        return getattr(importlib.import_module(".models", __name__), name)
    if name == "load_model":
        return importlib.import_module(".cli", __name__).load_weights
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fusionnet_keras' has no attribute {name!r}")
