"""fusionnet-keras: FusionNet (Quan, Hildebrand, Jeong 2016/2021) for EM connectomics in Keras 3.

Public API (imported lazily, so ``import fusionnet_keras`` and the command
line's ``--help`` stay fast)::

    import fusionnet_keras as fk
    fk.FusionNet, fk.FusionNetW, fk.UNet, fk.build_model   # fusionnet_keras.models
    fk.UNet3D, fk.FusionNet3D                               # 3-D affinity networks
    fk.malis_weights                                        # fusionnet_keras.training.malis
    fk.predict                                              # fusionnet_keras.inference (model: a network,
                                                            # registry name, path, URL or none: pretrained.resolve)
    fk.predict_affinities                                   # 3-D affinities (inference.affinities), the same
    fk.load_model                                           # any .keras file of this package
    fk.pretrained.load                                      # a shipped model by name (or a URL)
    fk.metrics                                              # fusionnet_keras.evaluation

``fk.load_model`` (or importing :mod:`fusionnet_keras.models`) registers the
package's layers and models with Keras; after that plain
``keras.saving.load_model`` works too. A compiled training checkpoint also names
its loss: :func:`fusionnet_keras.training.networks.register_custom_objects`
registers the losses as well.

Layout: ``models/`` networks and blocks, ``data/`` readers, writers,
orientations, targets, the tf.data pipeline and augmentation, ``training/``
config, losses, callbacks and the trainer, ``inference/`` tiling and
predictors, ``evaluation/`` metrics, post-processing and morphology,
``experiments/`` the experiment flows, ``cli/`` the command line,
``utils/`` atomic writes and validators.
"""

import importlib
import sys

__version__ = "0.1.0"

#: The oldest Python the package runs on (tomllib, zarr 3 and waterz 0.10 need it); setup.cfg's python_requires.
MIN_PYTHON = (3, 11)

if tuple(sys.version_info[:2]) < MIN_PYTHON:  # e.g. a checkout run with an older interpreter
    raise ImportError(f"fusionnet-keras needs Python {'.'.join(map(str, MIN_PYTHON))} or newer, this is Python "
                      f"{'.'.join(map(str, sys.version_info[:3]))}; install it with a newer Python")

_LAZY = {
    "FusionNet": ("fusionnet_keras.models", "FusionNet"),
    "FusionNetW": ("fusionnet_keras.models", "FusionNetW"),
    "UNet": ("fusionnet_keras.models", "UNet"),
    "UNet3D": ("fusionnet_keras.models", "UNet3D"),
    "FusionNet3D": ("fusionnet_keras.models", "FusionNet3D"),
    "malis_weights": ("fusionnet_keras.training.malis", "malis_weights"),
    "build_model": ("fusionnet_keras.models", "build_model"),
    "load_model": ("fusionnet_keras.models.loading", "load_model"),
    "predict": ("fusionnet_keras.pretrained.resolve", "predict"),
    "predict_affinities": ("fusionnet_keras.pretrained.resolve", "predict_affinities"),
    "metrics": ("fusionnet_keras.evaluation", None),
    "io": ("fusionnet_keras.data.io", None),
    "pretrained": ("fusionnet_keras.pretrained", None),
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'fusionnet_keras' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
