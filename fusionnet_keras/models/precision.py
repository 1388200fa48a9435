"""Numeric precision of the networks: float32, bfloat16 or float16 convolutions.

A precision names the number format the convolutions compute in; it maps to a
Keras dtype policy whose variables stay float32:

============  ==================  ====================================================
precision     Keras policy        what runs in it
============  ==================  ====================================================
float32       ``float32``         everything
bfloat16      ``mixed_bfloat16``  convolutions, activations (8-bit mantissa)
float16       ``mixed_float16``   convolutions, activations (11-bit mantissa)
============  ==================  ====================================================

Under a low precision these parts stay float32, where rounding would cost
accuracy (measured with ``benchmarks/precision.py`` on a trained FusionNet,
see ``docs/benchmarks.md``):

* the **input block** of every network unit (its first :class:`ConvBlock`:
  conv, ReLU, batch norm). EM intensities are 8-bit values in [0, 1]; in
  bfloat16 the bright half of them keeps 7 bits, and the first convolution
  takes differences of neighbouring pixels on top of a large mean that its
  batch norm then subtracts: the largest error of the whole network. It costs
  nothing measurable (one input channel);
* **batch normalisation** computes in float32 when the network runs as built
  (training; Keras casts its input up, its output is stored in the compute
  dtype like every activation). At prediction the predictors run the folded
  inference graph (:mod:`fusionnet_keras.models.inference_graph`): batch norm
  folded into the convolutions, the whole network between its input block and
  its output in the low precision;
* the **output** 1x1 convolution and the sigmoid;
* the **test-time average** of the orientations (numpy float32 in the predictor).

Batch-norm outputs, residual and long-skip additions and pooling in float32
were measured too: they change nothing, because the next convolution rounds
its input to the compute dtype anyway.

Example:
    >>> import numpy as np
    >>> from fusionnet_keras.models import FusionNet
    >>> net = FusionNet(nb_filters=2, depth=1)
    >>> fast = with_precision(net, "bfloat16")
    >>> precision_of(net), precision_of(fast), fast.get_layer("output").compute_dtype
    ('float32', 'bfloat16', 'float32')
    >>> fast.get_layer("down1_conv_in").compute_dtype, fast.get_layer("down1_res").compute_dtype
    ('float32', 'bfloat16')
"""

from __future__ import annotations

import keras

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import PRECISION_POLICIES as _POLICIES

PRECISIONS = tuple(_POLICIES)

__all__ = ["PRECISIONS", "check_precision", "policy_name", "precision_of", "input_dtype", "with_precision"]


def check_precision(precision) -> str:
    """The precision name (``float32``, ``bfloat16``, ``float16``) of ``precision``.

    Keras policy names (``mixed_bfloat16``) are accepted too, and ``"auto"``:
    ``bfloat16`` where it is faster than float32 on this backend and device
    (an accelerator; a CPU with AVX512-BF16 / AMX-BF16 under TensorFlow:
    :func:`fusionnet_keras.utils.hardware.fast_bfloat16`), else ``float32``
    (emulated bfloat16, and XLA's CPU bfloat16 under JAX, are several times
    slower). Anything else is a :class:`FusionNetError`.
    """
    if precision == "auto":
        from fusionnet_keras.utils.hardware import fast_bfloat16

        return "bfloat16" if fast_bfloat16() else "float32"
    for name, policy in _POLICIES.items():
        if precision in (name, policy):
            return name
    raise FusionNetError(f"precision must be one of {', '.join(PRECISIONS)} or auto, got {precision!r}")


def policy_name(precision) -> str:
    """The Keras dtype policy of a precision: ``"bfloat16"`` -> ``"mixed_bfloat16"``."""
    return _POLICIES[check_precision(precision)]


def precision_of(obj) -> str:
    """The precision of a model, a layer or a dtype policy (name or object; ``None`` = the global policy)."""
    if obj is None:
        policy = keras.mixed_precision.global_policy()
    elif isinstance(obj, keras.layers.Layer):
        policy = obj.dtype_policy
    else:
        policy = keras.dtype_policies.get(obj)
    compute = str(policy.compute_dtype)
    if compute not in PRECISIONS:
        raise FusionNetError(f"unsupported dtype policy {policy.name!r} (compute dtype {compute})")
    return compute


def input_dtype(dtype):
    """The dtype policy of a network's input block when the network's policy is ``dtype``.

    ``"float32"`` under a low-precision policy (see the module docstring), else
    ``dtype`` unchanged (``None`` = the global policy).
    """
    return "float32" if precision_of(dtype) != "float32" else dtype


def with_precision(model, precision):
    """``model`` computing in ``precision``, with the same weights (``model`` itself if it already does).

    The package's networks are rebuilt from their config with the new dtype
    policy (so the input block and the output stay float32, and the new model
    saves its precision); any other functional Keras model is cloned layer by
    layer with the new policy, its output layers kept in float32. The weights
    are copied; the original model is not changed.

    Args:
        model: a Keras model (a FusionNet, FusionNetW, U-Net or any functional model).
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or the Keras policy name).

    Returns:
        A Keras model.

    Examples:
        >>> from fusionnet_keras.models import UNet
        >>> with_precision(UNet(nb_filters=2, depth=1), "float16").dtype_policy.name
        'mixed_float16'
    """
    precision = check_precision(precision)
    if precision_of(model) == precision:
        return model
    policy = _POLICIES[precision]
    rebuild = getattr(model, "with_policy", None)  # the package's networks (SegmentationModel)
    clone = rebuild(policy) if rebuild is not None else _clone_with_policy(model, policy)
    clone.set_weights(model.get_weights())
    return clone


def _clone_with_policy(model, policy):
    outputs = {id(t._keras_history.operation) for t in keras.tree.flatten(getattr(model, "outputs", None) or [])}
    if not outputs:
        raise FusionNetError(
            f"cannot change the precision of {type(model).__name__}: only functional or sequential Keras "
            "models and the networks of fusionnet-keras can be converted"
        )

    def clone_layer(layer):
        config = {**layer.get_config(), "dtype": "float32" if id(layer) in outputs else policy}
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone_layer)
