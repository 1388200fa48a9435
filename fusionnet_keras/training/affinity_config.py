"""Validated configuration of the 3-D affinity networks (``model.architecture = "unet3d" | "fusionnet3d"``).

The same machinery as the 2-D configuration (:mod:`fusionnet_keras.training.config`):
TOML files, later ones overriding earlier ones, then ``--set key=value``;
unknown keys and bad values are refused with one line naming the key. The
``train`` command picks this schema when the files name a 3-D architecture
(:func:`fusionnet_keras.training.config.load_any_config`).

The defaults are the paper preset (the third paper: a 3-D U-Net of depth 3
pooling in x and y only, input (33, 204, 204) -> output (3, 116, 116) in z, y, x,
MALIS loss, the checkpoint chosen on validation); values the paper does not state
are listed in :data:`NOT_IN_PAPER` with the reason for each.

Example TOML (``experiments/affinity3d/unet3d_malis.toml``)::

    name = "affinity3d-unet3d-malis"

    [model]
    architecture = "unet3d"

    [train]
    loss = "malis"
"""

from __future__ import annotations

import copy

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg

ARCHITECTURES = ("unet3d", "fusionnet3d")
LOSSES = ("malis", "constrained_malis", "bce")


def _odd_sizes(value):
    if not value:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % 2 == 0 for v in value):
        return "must list odd integers >= 1 (empty = 3 everywhere)"
    return None


def _shape3(minimum):
    def check(value):
        if len(value) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value):
            return f"must list 3 integers >= {minimum} (z, y, x)"
        return None

    return check


def _block(value):
    if value and _shape3(1)(value):
        return "must be empty (automatic) or list 3 integers >= 1 (z, y, x)"
    return None


def _thresholds(value):
    if not value or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1 for v in value):
        return "must list thresholds in (0, 1)"
    return None


SCHEMA = {
    "name": (str, "affinity3d", None),
    "model": {
        "architecture": (str, "unet3d", ARCHITECTURES),
        "nb_filters": (int, 64, (1, 4096)),
        "depth": (int, 3, (0, 8)),
        "xy_kernel": (int, 3, (1, 31)),
        # z kernel of each level's convolutions: [] = 3 everywhere, or depth + 1 values (levels, then bridge)
        "z_kernels": (list, [], _odd_sizes),
        "head_z_kernel": (int, 3, (1, 31)),
        # FusionNet3D only: convolutions per residual block and their z kernel
        "n_residual": (int, 3, (1, 16)),
        "residual_z_kernel": (int, 1, (1, 31)),
        "zero_init_residual": (bool, False, None),
        "bn_momentum": (float, 0.99, (0.0, 1.0)),
    },
    "data": {
        # fusionnet_keras.data.volumes3d: the fixed train / validation / test split of each dataset
        "dataset": (str, "fib-medulla", ("fib-medulla", "gala-example")),
        # what label 0 of the ground truth means (fusionnet_keras.data.affinities): "background" (edges into
        # it have target 0 and are trained; gunpowder's and the MALIS authors' convention) or "unknown"
        # (edges touching it are masked out, for sparse or partial ground truth)
        "label_zero": (str, "background", ("background", "unknown")),
    },
    "train": {
        # the network's input block (z, y, x); the output block follows from the network's geometry
        "input_shape": (list, [33, 204, 204], _shape3(1)),
        "epochs": (int, 200, (1, 10**7)),
        "steps_per_epoch": (int, 500, (1, 10**7)),
        "batch_size": (int, 1, (1, 4096)),
        # malis (Turaga et al. 2009), constrained_malis (Funke et al. 2018), bce (class-balanced, the baseline)
        "loss": (str, "malis", LOSSES),
        # the first N epochs train with class-balanced BCE, the rest with train.loss (MALIS fine-tuning of a
        # network pre-trained by standard affinity learning; the optimizer and learning-rate schedule go on)
        "pretrain_bce_epochs": (int, 0, (0, 10**7)),
        # the error MALIS weighs per edge: squared error (Turaga et al.) or binary cross-entropy
        "malis_error": (str, "mse", ("mse", "bce")),
        "learning_rate": (float, 1e-4, (0.0, 1.0)),
        "lr_decay": (float, 1.0, (0.0, 1.0)),
        "seed": (int, 0, (0, 2**31 - 1)),
        # predict the validation block and score it every N epochs (and after the last)
        "validate_every": (int, 10, (1, 10**7)),
        # mean-agglomeration thresholds of the validation VI (best of them is the epoch's score)
        "val_thresholds": (list, [0.3, 0.5, 0.7, 0.8, 0.9], _thresholds),
        # z-watershed size threshold (voxels) of the validation fragments; the affinity3d experiment segments
        # its validation and test parts with the same size
        "val_ws_size": (int, 300, (0, 10**9)),
        "tensorboard": (bool, True, None),
        "precision": (str, "float32", ("float32", "mixed_bfloat16", "mixed_float16")),
        # threads preparing augmented samples while the network trains
        "workers": (int, 1, (1, 64)),
    },
    "augment": {
        "orientations": (bool, True, None),
        "elastic_amplitude": (float, 4.0, (0.0, 1000.0)),
        "elastic_grid": (int, 6, (3, 1000)),
        "noise_sigma": (float, 0.05, (0.0, 10.0)),
        "missing_section": (float, 0.0, (0.0, 1.0)),
        "misalign": (float, 0.0, (0.0, 1.0)),
        "misalign_max": (int, 0, (0, 1000)),
    },
    "predict": {
        # prediction block (z, y, x) of the output; [] = the predictor's automatic choice
        "block": (list, [], _block),
        "precision": (str, "float32", ("float32", "bfloat16", "float16", "auto")),
    },
}

NOT_IN_PAPER = (
    ("model.nb_filters", "the paper gives the depth (3) and the sizes but not the feature maps; 64 at the "
     "first level is the 2-D U-Net's and FusionNet's"),
    ("train.learning_rate", "not stated; Adam at 1e-4, constant, a common choice for MALIS fine-tuning"),
    ("train.epochs", "the paper picks the iteration with the least under-segmentation but gives no count; "
     "200 x 500 = 100,000 steps of batch 1"),
    ("train.malis_error", "the paper uses MALIS without naming its per-edge error; squared error is "
     "Turaga et al.'s"),
    ("augment", "the paper describes no augmentation; the 8 xy orientations, small elastic fields and noise "
     "are the 2-D papers' and common practice on anisotropic EM"),
    ("checkpoint choice", "the paper picks the least under-segmented iteration; here the lowest validation VI "
     "of the mean agglomeration (split + merge) chooses it"),
)


def load_affinity_config(paths=(), overrides=()) -> dict:
    """Defaults, each TOML file of ``paths``, then ``key=value`` overrides; validated."""
    return validate(cfg.load_settings(SCHEMA, paths, overrides))


def validate(config: dict) -> dict:
    """Check a full affinity configuration (e.g. read back from ``config.json``), with its sizes."""
    checked = cfg.defaults(SCHEMA)
    cfg._merge(checked, copy.deepcopy(config), "config", SCHEMA)
    missing = [k for k in SCHEMA if k not in config]
    if missing:
        raise FusionNetError(f"config is missing {', '.join(missing)}")
    m = checked["model"]
    if m["z_kernels"] and len(m["z_kernels"]) not in (1, m["depth"] + 1):
        raise FusionNetError(f"config key 'model.z_kernels' needs depth + 1 = {m['depth'] + 1} values, "
                             f"got {len(m['z_kernels'])}")
    for key in ("xy_kernel", "head_z_kernel", "residual_z_kernel"):
        if m[key] % 2 == 0:
            raise FusionNetError(f"config key 'model.{key}' must be odd, got {m[key]}")
    shape = tuple(checked["train"]["input_shape"])
    if checked["augment"]["orientations"] and shape[1] != shape[2]:
        raise FusionNetError(f"config key 'train.input_shape' must have y == x for the 8 xy orientations "
                             f"(augment.orientations), got {list(shape)}")
    output_shape(checked)  # the input fits the network
    return checked


def model_kwargs(config: dict) -> dict:
    """Keyword arguments for :func:`fusionnet_keras.models.build_model` (3-D architectures)."""
    m = config["model"]
    kwargs = {"nb_filters": m["nb_filters"], "depth": m["depth"], "xy_kernel": m["xy_kernel"],
              "head_z_kernel": m["head_z_kernel"], "bn_momentum": m["bn_momentum"]}
    if m["z_kernels"]:
        kwargs["z_kernels"] = m["z_kernels"][0] if len(m["z_kernels"]) == 1 else tuple(m["z_kernels"])
    if m["architecture"] == "fusionnet3d":
        kwargs.update(n_residual=m["n_residual"], residual_z_kernel=m["residual_z_kernel"],
                      zero_init_residual=m["zero_init_residual"])
    return kwargs


def geometry(config: dict):
    """The :class:`~fusionnet_keras.models.geometry.ValidGeometry` of the configured network (no model is built)."""
    from fusionnet_keras.models.base import level_z_kernels
    from fusionnet_keras.models.fusionnet3d import FusionNet3D
    from fusionnet_keras.models.unet3d import UNet3D

    m = config["model"]
    kwargs = model_kwargs(config)
    z_kernels = level_z_kernels(kwargs.get("z_kernels"), m["depth"])
    if m["architecture"] == "fusionnet3d":
        return FusionNet3D._geometry(m["depth"], m["xy_kernel"], z_kernels, m["head_z_kernel"],
                                     residual_z_kernel=m["residual_z_kernel"], n_residual=m["n_residual"])
    return UNet3D._geometry(m["depth"], m["xy_kernel"], z_kernels, m["head_z_kernel"])


def output_shape(config: dict) -> tuple:
    """The output block of ``train.input_shape`` (one-line error naming the sizes that fit)."""
    try:
        return geometry(config).output_shape(tuple(config["train"]["input_shape"]))
    except FusionNetError as e:
        raise FusionNetError(f"config key 'train.input_shape': {e}") from None
