"""Validated training configuration: one schema, with a section per architecture family.

Unknown keys and invalid values are refused with a one-line
:class:`~fusionnet_keras.errors.FusionNetError` naming the key. Reading, writing
and diffing configuration files (TOML files, ``--set`` overrides,
``config.json``) is :mod:`fusionnet_keras.training.config_files`.

``model.architecture`` chooses the family, and so the keys and defaults:

* ``membranes`` (``fusionnet``, ``fusionnet_w``, ``unet``): 2-D membrane
  probability maps. Defaults are the papers' settings where the papers state
  them (Quan et al. 2016/2021): FusionNet with ``nb_filters=64``, ``depth=4``,
  640x640 inputs (512 + 2 * 64 mirror padding), Adam at 2e-4 with decay, MAE
  loss, 8-orientation enrichment, elastic deformation from a 12x12 field with
  zero border, Gaussian noise with sigma 0.1, FusionNetW units trained one after
  the other in every epoch.
* ``affinities`` (``unet3d``, ``fusionnet3d``): 3-D nearest-neighbour affinities
  (and long-range ones with ``model.offsets``, for the mutex watershed).
  Defaults are the third paper's preset: a 3-D U-Net of depth 3 pooling in x and
  y only, input (33, 204, 204) -> output (3, 116, 116) in z, y, x, MALIS loss,
  the checkpoint chosen on validation.

:data:`COMMON` holds the keys of every family (a :class:`PerFamily` default
gives each family's value); each :class:`Family` adds its own section of keys. The values the papers leave open are listed, each with the
reason for the value chosen, in the family's ``not_in_paper``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import PRECISION_WORDS
from fusionnet_keras.training.schema import defaults as schema_defaults
from fusionnet_keras.training.schema import merge, parse_override

__all__ = ["AFFINITIES", "COMMON", "FAMILIES", "Family", "MEMBRANES", "NOT_IN_PAPER_LABEL", "PerFamily",
           "affinity_offsets", "data_inputs", "defaults", "family", "geometry", "model_kwargs",
           "output_shape", "parse_override", "validate"]


class PerFamily(dict):
    """The default of a common key that differs per family: family name -> value."""


# key -> (type, default, rule) or a table; the rules are those of training/schema.py
COMMON = {
    "name": (str, PerFamily(membranes="fusionnet", affinities="affinity3d"), None),
    "model": {
        "nb_filters": (int, 64, (1, 4096)),
        "depth": (int, PerFamily(membranes=4, affinities=3), (0, 8)),
        # momentum of the batch-norm moving statistics (Keras' default 0.99)
        "bn_momentum": (float, 0.99, (0.0, 1.0)),
        # start FusionNet's residual blocks as the identity (last batch-norm scale of the branch = 0);
        # not in the papers; no effect on a U-Net, which has no residual blocks
        "zero_init_residual": (bool, False, None),
    },
    "data": {},
    "train": {
        "epochs": (int, PerFamily(membranes=500, affinities=200), (1, 10**7)),
        "batch_size": (int, 1, (1, 4096)),
        "learning_rate": (float, PerFamily(membranes=2e-4, affinities=1e-4), (0.0, 1.0)),
        # multiplicative learning-rate decay per epoch (1.0 = constant)
        "lr_decay": (float, PerFamily(membranes=0.99, affinities=1.0), (0.0, 1.0)),
        "seed": (int, 0, (0, 2**31 - 1)),
        # validate every N epochs (and after the last)
        "validate_every": (int, PerFamily(membranes=1, affinities=10), (1, 10**7)),
        "tensorboard": (bool, True, None),
        # number format of the training step (fusionnet_keras.models.precision): float32, bfloat16 (bf16
        # convolutions, float32 weights, warp, output and loss; about 2.5x faster on CPUs with
        # AVX512-BF16/AMX and on recent GPUs, but 7.9x slower on CPUs without native bf16, e.g. AVX2 only),
        # float16, or auto (the resolver of models/precision.py decides); the Keras policy names
        # mixed_bfloat16 / mixed_float16 are the same as bfloat16 / float16
        "precision": (str, "float32", PRECISION_WORDS),
    },
    "augment": {
        # maximal displacement (pixels) of the interior nodes of the elastic field of elastic_grid x
        # elastic_grid nodes (2-D: the papers' random 12x12 field with zero border)
        "elastic_amplitude": (float, PerFamily(membranes=10.0, affinities=4.0), (0.0, 1000.0)),
        "elastic_grid": (int, PerFamily(membranes=12, affinities=6), (3, 1000)),
        "noise_sigma": (float, PerFamily(membranes=0.1, affinities=0.05), (0.0, 10.0)),
    },
    "predict": {
        # number format of the convolutions at prediction time, whatever train.precision is: validation
        # predicts in it and best.keras / last.keras are saved in it, so the checkpoint is chosen by the
        # number that scoring the saved model gives (the same words as train.precision)
        "precision": (str, "float32", PRECISION_WORDS),
    },
}
"""The keys of every architecture family (a :class:`PerFamily` default: the family's)."""

NOT_IN_PAPER_LABEL = "not stated in the paper"

# ---------------------------------------------------------------------------
# membranes: the 2-D networks

MEMBRANES = {
    "model": {
        "architecture": (str, "fusionnet", ("fusionnet", "fusionnet_w", "unet")),
        "units": (int, 1, (1, 16)),
    },
    "data": {
        # paths are relative to $FUSIONNET_DATA_DIR (default data/) unless absolute
        "images": (str, "isbi2012/train-volume.tif", None),
        "labels": (str, "isbi2012/train-labels.tif", None),
        # 1-based inclusive section ranges ("1-20"); empty val_sections = no validation
        "train_sections": (str, "1-20", None),
        "val_sections": (str, "21-30", None),
    },
    "train": {
        # optimisation steps per epoch; 0 = one pass over the 8-orientation enriched set
        "steps_per_epoch": (int, 0, (0, 10**7)),
        # random crop size before padding; 0 = whole sections (the paper: 512 -> 640)
        "crop": (int, 0, (0, 100000)),
        "pad": (int, 64, (0, 4096)),
        # mae (2021 paper), mse (2016 paper), bce (binary cross-entropy: not in the papers; faster on short schedules)
        "loss": (str, "mae", ("mae", "mse", "bce")),
        # weight of membrane (label 0) pixels in the loss; cell pixels weigh 1 (1.0 = unweighted, the papers)
        "membrane_weight": (float, 1.0, (0.01, 100.0)),
        # how FusionNetW's units are trained: "units" (the 2021 paper, sec. 3.4: in every epoch unit 1 is
        # trained on its own loss, then frozen while unit 2 trains on its loss, ...; one Adam per unit) or
        # "joint" (all units at once on the sum of their losses; not the paper's)
        "unit_schedule": (str, "units", ("units", "joint")),
        # validation: V^Rand / V^Info of the validation sections, with this many test-time orientations
        "val_tta": (int, 1, (1, 8)),
        "enrich": (bool, True, None),
        # input pipeline: tf.data (TensorFlow backend), numpy (backend-neutral, no TensorFlow needed), or auto
        # (tf.data under the TensorFlow backend, else numpy); fusionnet_keras.data.pipeline.make_training_data
        "pipeline": (str, "auto", ("auto", "tf.data", "numpy")),
    },
    "predict": {
        "tta": (int, 8, (1, 8)),
        # mirror padding (px) around each section at prediction time (the paper: 64)
        "pad": (int, 64, (0, 4096)),
        # windows per forward pass; 0 = as many as fit in a quarter of the free memory, at most 8
        "batch_size": (int, 0, (0, 4096)),
        # threshold of the binary mask for 3-D instances (zebrafish)
        "threshold": (float, 0.5, (0.0, 1.0)),
    },
}

# The settings of the default (paper) configuration that the papers do not state: (setting, reason for
# the value). The paper presets, docs/experiments/index.md and the experiment reports label each one "not
# stated in the paper" with this reason; a setting that is not a config key names what it is.
MEMBRANES_NOT_IN_PAPER = (
    ("train.lr_decay",
     "the papers say only \"a decaying learning rate of 2e-4\"; x0.99 per epoch leaves 0.7 % of the "
     "starting rate after 500 epochs"),
    ("train.epochs",
     "the 2021 paper trained \"for over 50,000 epochs\" (the 2016 paper gives no number); 50,000 passes "
     "over the 160 enriched ISBI images are 8 million steps, so 500 epochs (80,000 steps at batch 1) are "
     "used; set train.epochs=50000 for the literal reading"),
    ("augment.elastic_amplitude",
     "the papers give the random 12x12 field with zero border but not its amplitude; 10 px (1.6 % of the "
     "640 px input) bends membranes visibly without folding them"),
    ("augment.noise_sigma",
     "the papers write \"variance sigma = 0.1\"; read as the standard deviation of intensities in [0, 1] "
     "(the usual meaning of sigma; a variance of 0.1, std 0.32, would drown the membranes)"),
    ("elastic warp after the mirror padding",
     "the papers list the padding and the warp but not their order; the warp is applied to the padded "
     "640 px input, so the field's zero border lies in the padding and the whole 512 px section is deformed"),
)


def _check_membranes(config: dict) -> None:
    train, model = config["train"], config["model"]
    if train["crop"] and model["depth"] and (train["crop"] + 2 * train["pad"]) % 2 ** model["depth"]:
        raise FusionNetError(
            f"config key 'train.crop' + 2 * 'train.pad' = {train['crop'] + 2 * train['pad']} must be "
            f"divisible by 2**depth = {2 ** model['depth']}"
        )
    if model["architecture"] != "fusionnet_w" and model["units"] != 1:
        raise FusionNetError("config key 'model.units' applies to architecture 'fusionnet_w' only")


def _membrane_model_kwargs(config: dict) -> dict:
    m = config["model"]
    kwargs = {"nb_filters": m["nb_filters"], "depth": m["depth"], "bn_momentum": m["bn_momentum"]}
    if m["architecture"] == "fusionnet_w":
        kwargs["units"] = m["units"]
    if m["architecture"] in ("fusionnet", "fusionnet_w"):
        kwargs["zero_init_residual"] = m["zero_init_residual"]
    return kwargs


# ---------------------------------------------------------------------------
# affinities: the 3-D networks


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


def _offsets(value):
    if not value:
        return None
    from fusionnet_keras.data.affinities import check_network_offsets

    what = "must list [dz, dy, dx] integer triples, the 3 nearest neighbours first (empty: those 3 only)"
    if any(not isinstance(o, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in o) for o in value):
        return what
    try:
        check_network_offsets(value)
    except FusionNetError as e:
        return f"{what}: {e}"
    return None


AFFINITIES = {
    "model": {
        "architecture": (str, "unet3d", ("unet3d", "fusionnet3d")),
        "xy_kernel": (int, 3, (1, 31)),
        # z kernel of each level's convolutions: [] = 3 everywhere, or depth + 1 values (levels, then bridge)
        "z_kernels": (list, [], _odd_sizes),
        "head_z_kernel": (int, 3, (1, 31)),
        # FusionNet3D only: convolutions per residual block and their z kernel
        "n_residual": (int, 3, (1, 16)),
        "residual_z_kernel": (int, 1, (1, 31)),
        # the affinity offset of each output channel (fusionnet_keras.data.affinities), the 3 nearest neighbours
        # [-1, 0, 0], [0, -1, 0], [0, 0, -1] first; further (long-range) offsets feed the mutex watershed.
        # [] = the 3 nearest neighbours only
        "offsets": (list, [], _offsets),
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
        "steps_per_epoch": (int, 500, (1, 10**7)),
        # malis (Turaga et al. 2009), constrained_malis (Funke et al. 2018), bce (class-balanced, the baseline)
        "loss": (str, "malis", ("malis", "constrained_malis", "bce")),
        # the first N epochs train with class-balanced BCE, the rest with train.loss (MALIS fine-tuning of a
        # network pre-trained by standard affinity learning; the optimizer and learning-rate schedule go on)
        "pretrain_bce_epochs": (int, 0, (0, 10**7)),
        # the error MALIS weighs per edge: squared error (Turaga et al.) or binary cross-entropy
        "malis_error": (str, "mse", ("mse", "bce")),
        # mean-agglomeration thresholds of the validation VI (best of them is the epoch's score)
        "val_thresholds": (list, [0.3, 0.5, 0.7, 0.8, 0.9], _thresholds),
        # z-watershed size threshold (voxels) of the validation fragments; the affinity3d experiment segments
        # its validation and test parts with the same size
        "val_ws_size": (int, 300, (0, 10**9)),
        # threads preparing augmented samples while the network trains
        "workers": (int, 1, (1, 64)),
    },
    "augment": {
        "orientations": (bool, True, None),
        "missing_section": (float, 0.0, (0.0, 1.0)),
        "misalign": (float, 0.0, (0.0, 1.0)),
        "misalign_max": (int, 0, (0, 1000)),
    },
    "predict": {
        # prediction block (z, y, x) of the output; [] = the predictor's automatic choice
        "block": (list, [], _block),
    },
}

AFFINITIES_NOT_IN_PAPER = (
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


def _check_affinities(config: dict) -> None:
    m = config["model"]
    if m["z_kernels"] and len(m["z_kernels"]) not in (1, m["depth"] + 1):
        raise FusionNetError(f"config key 'model.z_kernels' needs depth + 1 = {m['depth'] + 1} values, "
                             f"got {len(m['z_kernels'])}")
    for key in ("xy_kernel", "head_z_kernel", "residual_z_kernel"):
        if m[key] % 2 == 0:
            raise FusionNetError(f"config key 'model.{key}' must be odd, got {m[key]}")
    if len(m["offsets"]) > 3 and config["train"]["loss"] != "bce":
        raise FusionNetError(f"config key 'model.offsets': long-range offsets train with train.loss = \"bce\" "
                             f"only (MALIS works on the 3 nearest-neighbour channels), got "
                             f"\"{config['train']['loss']}\"")
    shape = tuple(config["train"]["input_shape"])
    if config["augment"]["orientations"] and shape[1] != shape[2]:
        raise FusionNetError(f"config key 'train.input_shape' must have y == x for the 8 xy orientations "
                             f"(augment.orientations), got {list(shape)}")
    output_shape(config)  # the input fits the network
    if m["offsets"]:
        from fusionnet_keras.data.augment3d import check_context

        try:
            check_context(geometry(config).context, affinity_offsets(config))
        except FusionNetError as e:
            raise FusionNetError(f"config key 'model.offsets': {e}") from None


def affinity_offsets(config: dict) -> tuple:
    """The affinity offset of each output channel of a configured 3-D network (``model.offsets``, default
    the 3 nearest neighbours)."""
    from fusionnet_keras.data.affinities import check_network_offsets

    return check_network_offsets(config["model"]["offsets"] or None)


def _affinity_model_kwargs(config: dict) -> dict:
    m = config["model"]
    kwargs = {"nb_filters": m["nb_filters"], "depth": m["depth"], "xy_kernel": m["xy_kernel"],
              "head_z_kernel": m["head_z_kernel"], "bn_momentum": m["bn_momentum"]}
    if m["offsets"]:
        kwargs["offsets"] = [list(o) for o in m["offsets"]]
    if m["z_kernels"]:
        kwargs["z_kernels"] = m["z_kernels"][0] if len(m["z_kernels"]) == 1 else tuple(m["z_kernels"])
    if m["architecture"] == "fusionnet3d":
        kwargs.update(n_residual=m["n_residual"], residual_z_kernel=m["residual_z_kernel"],
                      zero_init_residual=m["zero_init_residual"])
    return kwargs


def geometry(config: dict):
    """The :class:`~fusionnet_keras.models.geometry.ValidGeometry` of a configured 3-D network (no model
    is built)."""
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
    """The output block of a 3-D network's ``train.input_shape`` (one-line error naming the sizes that fit)."""
    try:
        return geometry(config).output_shape(tuple(config["train"]["input_shape"]))
    except FusionNetError as e:
        raise FusionNetError(f"config key 'train.input_shape': {e}") from None


# ---------------------------------------------------------------------------
# the families


def _compose(common: dict, section: dict, name: str) -> dict:
    """``common`` with the keys of ``section`` added and its :class:`PerFamily` defaults those of family ``name``."""
    out = {}
    for key in {**common, **section}:
        spec, own = common.get(key), section.get(key)
        if isinstance(spec, dict) or isinstance(own, dict):
            out[key] = _compose(spec or {}, own or {}, name)
        elif own is not None:
            out[key] = own
        elif isinstance(spec[1], PerFamily):
            out[key] = (spec[0], spec[1][name], spec[2])
        else:
            out[key] = spec
    return out


@dataclasses.dataclass(frozen=True)
class Family:
    """An architecture family: its section of keys, what the papers leave open, its checks across keys and
    the model builder's keyword arguments."""

    name: str
    volumetric: bool  # 3-D networks (affinities), else 2-D (membranes)
    section: dict
    not_in_paper: tuple
    check: Callable[[dict], None]
    model_kwargs: Callable[[dict], dict]

    @property
    def architectures(self) -> tuple:
        return self.section["model"]["architecture"][2]

    @property
    def schema(self) -> dict:
        """:data:`COMMON` with this family's section and defaults."""
        return _compose(COMMON, self.section, self.name)


FAMILIES = {
    "membranes": Family("membranes", False, MEMBRANES, MEMBRANES_NOT_IN_PAPER,
                        _check_membranes, _membrane_model_kwargs),
    "affinities": Family("affinities", True, AFFINITIES, AFFINITIES_NOT_IN_PAPER,
                         _check_affinities, _affinity_model_kwargs),
}
"""The architecture families by name: 2-D membranes, 3-D affinities."""

DEFAULT_ARCHITECTURE = "fusionnet"


def _architectures() -> dict:
    """Every architecture -> its :class:`Family`."""
    return {a: fam for fam in FAMILIES.values() for a in fam.architectures}


def family(config_or_architecture) -> Family:
    """The :class:`Family` of an architecture name or of a configuration (its ``model.architecture``;
    without one, the default architecture's)."""
    arch = config_or_architecture
    if isinstance(arch, dict):
        model = arch.get("model")
        arch = model.get("architecture", DEFAULT_ARCHITECTURE) if isinstance(model, dict) else DEFAULT_ARCHITECTURE
    known = _architectures()
    if not isinstance(arch, str) or arch not in known:
        raise FusionNetError(f"config key 'model.architecture' must be one of {', '.join(known)}, got {arch!r}")
    return known[arch]


def defaults(architecture: str = DEFAULT_ARCHITECTURE) -> dict:
    """The default configuration of ``architecture``'s family, with ``model.architecture`` set to it."""
    config = schema_defaults(family(architecture).schema)
    config["model"]["architecture"] = architecture
    return config


def validate(config: dict) -> dict:
    """Check a full configuration dict (e.g. read back from ``config.json``) by its family's schema."""
    fam = family(config)
    schema = fam.schema
    checked = schema_defaults(schema)
    merge(checked, copy.deepcopy(config), "config", schema)
    missing = [k for k in schema if k not in config]
    if missing:
        raise FusionNetError(f"config is missing {', '.join(missing)}")
    fam.check(checked)
    return checked


def model_kwargs(config: dict) -> dict:
    """Keyword arguments for :func:`fusionnet_keras.models.build_model` of ``model.architecture``."""
    return family(config).model_kwargs(config)


def data_inputs(config: dict) -> list[str]:
    """The data a configuration trains on, as paths: the 2-D image and label volumes (relative to
    ``$FUSIONNET_DATA_DIR`` unless absolute), or the folder of a 3-D configuration's dataset."""
    from fusionnet_keras.settings import data_dir

    if family(config).volumetric:
        return [str(data_dir() / config["data"]["dataset"])]
    from fusionnet_keras.training.inputs import resolve_data_path

    return [resolve_data_path(config["data"][key]) for key in ("images", "labels")]
