"""The inference graph of a trained network: batch normalisation folded into the convolutions.

:func:`inference_model` rebuilds a trained functional network (FusionNet,
FusionNetW, the U-Net, the 3-D networks, or any functional model made of the
same Keras layers) as a graph of plain convolutions that computes the same
function in inference mode, up to rounding:

* **Conv -> ReLU -> batch norm** (every block of the package's networks). At
  inference batch norm is a per-channel affine map ``y * s + t``
  (``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``). ReLU comes
  first, so ``s`` and ``t`` cannot go into the same convolution as they are;
  but ``relu(z) * s = g * relu(|s| * z)`` with ``g = sign(s)`` (+1 for 0), so
  ``|s|`` is folded into the convolution's kernel and bias, the ReLU stays
  fused with it, and the block's output is *stored* as ``relu(...)`` with a
  lazy per-channel sign ``g`` and offset ``t``: ``true = stored * g + o``.
* **The consumers** fold the lazy ``g`` and ``o`` in where that is exact:
  a convolution multiplies its input kernel rows by ``g`` (exact under zero
  padding, as ``0 * g = 0``) and adds ``sum(kernel * o)`` to its bias where
  no zero padding reaches the input (``valid`` convolutions, 1x1 kernels: the
  3-D networks and the output layer); a ``same``-padded k x k convolution and
  a transposed convolution take an explicit ``+ o`` first (one element-wise
  pass: zero padding of ``stored + o`` would differ from that of the true
  tensor along the border, and each tap of a transposed convolution sees a
  different sum). Additions (residual and long skips) add the offsets, max
  pooling and cropping commute with them, concatenation concatenates them;
  a sign ``-1`` is multiplied out only before a max pooling or an addition
  whose terms disagree (never, for a network whose batch-norm scales are
  positive). Any other layer gets the true tensor.
* **Precision.** Every layer keeps the compute dtype of the layer it comes
  from (the input block and the output of a low-precision network stay
  float32, :mod:`fusionnet_keras.models.precision`), with its variables in
  that dtype too (a pure ``"bfloat16"`` policy, not ``mixed_bfloat16``), so a
  bfloat16 network runs bfloat16 from its second block to its output layer:
  no float32 round trips around the batch norms, no weight casts per call.

So a FusionNet block costs one fused convolution + bias + ReLU and (2-D only)
one element-wise addition, against a convolution, a ReLU and a batch norm (in
float32 under ``mixed_bfloat16``: two casts and an affine map) before.

Example:
    >>> import numpy as np
    >>> from fusionnet_keras.models import FusionNet
    >>> net = FusionNet(nb_filters=2, depth=1)
    >>> fast = inference_model(net)
    >>> x = np.random.default_rng(0).random((1, 16, 16, 1), dtype=np.float32)
    >>> bool(np.allclose(fast(x), net(x, training=False), atol=1e-5))
    True
    >>> any("bn" in layer.name for layer in fast.layers)
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE

__all__ = ["inference_model", "for_inference", "ChannelAffine"]

_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, *_TRANSPOSED)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelAffine(keras.layers.Layer):
    """``x * scale + offset`` per channel (the last axis); ``scale=None`` adds only.

    The explicit form of a lazy sign / offset of :func:`inference_model`.
    """

    def __init__(self, offset, scale=None, **kwargs):
        super().__init__(**kwargs)
        self.offset_values = [float(v) for v in np.asarray(offset).ravel()]
        self.scale_values = None if scale is None else [float(v) for v in np.asarray(scale).ravel()]

    def build(self, input_shape):
        channels = len(self.offset_values)
        self.offset = self.add_weight(shape=(channels,), initializer=keras.initializers.Constant(
            np.asarray(self.offset_values)), trainable=False, name="offset")
        self.scale = None if self.scale_values is None else self.add_weight(
            shape=(channels,), initializer=keras.initializers.Constant(np.asarray(self.scale_values)),
            trainable=False, name="scale")
        super().build(input_shape)

    def call(self, inputs):
        x = inputs if self.scale is None else inputs * self.scale
        return x + self.offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "offset": self.offset_values, "scale": self.scale_values}


@dataclass
class _Lazy:
    """A tensor of the folded graph: ``true = tensor * sign + offset`` per channel (``None``: 1 / 0)."""

    tensor: object
    sign: np.ndarray | None = None
    offset: np.ndarray | None = None

    @property
    def channels(self):
        return int(self.tensor.shape[-1])

    def signs(self):
        return np.ones(self.channels) if self.sign is None else self.sign

    def offsets(self):
        return np.zeros(self.channels) if self.offset is None else self.offset


def _policy(layer):
    """The pure dtype policy of ``layer``'s compute dtype (variables in it too)."""
    return str(layer.compute_dtype)


class _Folder:
    """Builds the folded graph; one instance per :func:`inference_model` call (names stay unique)."""

    def __init__(self):
        self.names = set()

    def name(self, base):
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    # -- making lazy tensors explicit ----------------------------------------------------------------------

    def explicit(self, lazy, dtype, name, keep_sign=False):
        """``lazy`` with its offset (and unless ``keep_sign`` its sign) applied; a ``_Lazy``."""
        sign = None if lazy.sign is None or np.all(lazy.sign > 0) else lazy.sign
        offset = None if lazy.offset is None or not np.any(lazy.offset) else lazy.offset
        if keep_sign:
            if offset is None:
                return _Lazy(lazy.tensor, sign)
            # true = stored * g + o = (stored + o * g) * g, as g * g = 1
            step = ChannelAffine(offset * lazy.signs(), dtype=dtype, name=self.name(name))
            return _Lazy(step(lazy.tensor), sign)
        if sign is None and offset is None:
            return _Lazy(lazy.tensor)
        step = ChannelAffine(lazy.offsets(), scale=sign, dtype=dtype, name=self.name(name))
        return _Lazy(step(lazy.tensor))

    def unsigned(self, lazy, dtype, name):
        """``lazy`` with its sign multiplied out (the offset stays lazy)."""
        if lazy.sign is None or np.all(lazy.sign > 0):
            return _Lazy(lazy.tensor, None, lazy.offset)
        step = ChannelAffine(np.zeros(lazy.channels), scale=lazy.sign, dtype=dtype, name=self.name(name))
        return _Lazy(step(lazy.tensor), None, lazy.offset)

    # -- convolutions ----------------------------------------------------------------------------------------

    def conv(self, conv, lazy, name, bn=None):
        """``conv`` (a Keras convolution) on ``lazy``, then (with ``bn``) ReLU and ``bn`` folded in."""
        transposed = isinstance(conv, _TRANSPOSED)
        kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
        bias = (np.asarray(keras.ops.convert_to_numpy(conv.bias), np.float64) if conv.use_bias
                else np.zeros(conv.filters))
        in_axis = -1 if transposed else -2
        # the input offset goes into the bias only where no zero padding and no tap structure meets it
        foldable = not transposed and (conv.padding == "valid" or all(k == 1 for k in conv.kernel_size))
        if lazy.offset is not None and np.any(lazy.offset) and not foldable:
            lazy = self.explicit(lazy, _policy(conv), f"{name}_offset", keep_sign=True)
        if lazy.offset is not None and np.any(lazy.offset):
            bias = bias + np.tensordot(kernel, lazy.offset, axes=([kernel.ndim + in_axis], [0])).reshape(
                -1, conv.filters).sum(axis=0)
        if lazy.sign is not None:
            shape = [1] * kernel.ndim
            shape[in_axis] = -1
            kernel = kernel * lazy.sign.reshape(shape)
        config = conv.get_config()
        sign = offset = None
        if bn is not None:
            scale, shift = _bn_affine(bn)
            magnitude = np.abs(scale)
            out_axis = -2 if transposed else -1
            shape = [1] * kernel.ndim
            shape[out_axis] = -1
            kernel, bias = kernel * magnitude.reshape(shape), bias * magnitude
            sign = np.where(scale < 0, -1.0, 1.0)
            sign = None if np.all(sign > 0) else sign
            offset = shift if np.any(shift) else None
            config["activation"] = "relu"
        config.update(use_bias=True, dtype=_policy(conv), name=self.name(name), bias_initializer="zeros",
                      kernel_initializer="zeros")
        for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                    "bias_constraint"):
            config.pop(key, None)
        new = conv.__class__.from_config(config)
        new.build(lazy.tensor.shape)
        new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return _Lazy(new(lazy.tensor), sign, offset)

    # -- a layer of the original graph ---------------------------------------------------------------------

    def layer(self, layer, inputs, name=None):
        """The folded form of ``layer`` called on ``inputs`` (a ``_Lazy`` or a list of them)."""
        name = name or layer.name
        conv = getattr(layer, "conv", None) or getattr(layer, "deconv", None)
        if (isinstance(conv, _CONVS) and _plain_relu(getattr(layer, "relu", None)) and conv.data_format ==
                "channels_last" and conv.get_config()["activation"] == "linear" and getattr(conv, "groups", 1) == 1
                and _plain_bn(getattr(layer, "bn", None), len(inputs.tensor.shape))):
            return self.conv(conv, inputs, name, bn=layer.bn)
        if hasattr(layer, "convs") and hasattr(layer, "add"):  # a residual block (cropped identity in 3-D)
            x = inputs
            for conv in layer.convs:
                x = self.layer(conv, x, f"{name}_{conv.name}")
            skip = self.layer(layer.crop, inputs, f"{name}_crop") if hasattr(layer, "crop") else inputs
            return self.add([skip, x], _policy(layer.add), f"{name}_add")
        if isinstance(layer, keras.layers.Add):
            return self.add(inputs, _policy(layer), name)
        if isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, len(inputs[0].tensor.shape) - 1):
            tensor = _clone(layer, self.name(name))([x.tensor for x in inputs])
            signs, offsets = np.concatenate([x.signs() for x in inputs]), np.concatenate([x.offsets() for x in inputs])
            return _Lazy(tensor, None if np.all(signs > 0) else signs, offsets if np.any(offsets) else None)
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.MaxPooling3D):
            x = self.unsigned(inputs, _policy(layer), f"{name}_sign")
            return _Lazy(_clone(layer, self.name(name))(x.tensor), None, x.offset)
        if isinstance(layer, keras.layers.Cropping2D | keras.layers.Cropping3D):
            return _Lazy(_clone(layer, self.name(name))(inputs.tensor), inputs.sign, inputs.offset)
        if isinstance(layer, _CONVS) and getattr(layer, "groups", 1) == 1 and layer.data_format == "channels_last":
            return self.conv(layer, inputs, name)
        return self.other(layer, inputs, name)

    def add(self, inputs, dtype, name):
        signs = [x.signs() for x in inputs]
        if any(not np.array_equal(s, signs[0]) for s in signs[1:]):
            inputs = [self.unsigned(x, dtype, f"{name}_sign{i}") for i, x in enumerate(inputs)]
        tensor = keras.layers.Add(dtype=dtype, name=self.name(name))([x.tensor for x in inputs])
        offset = sum(x.offsets() for x in inputs)
        return _Lazy(tensor, inputs[0].sign, offset if np.any(offset) else None)

    def other(self, layer, inputs, name):
        """Any other layer: called as it is on the true tensor(s)."""
        many = isinstance(inputs, list)
        true = [self.explicit(x, _policy(layer), f"{name}_in{i}").tensor for i, x in enumerate(
            inputs if many else [inputs])]
        out = layer(true if many else true[0])
        return [_Lazy(t) for t in out] if isinstance(out, list | tuple) else _Lazy(out)


def _plain_relu(relu):
    """Whether ``relu`` is a Keras ``ReLU`` layer computing ``max(x, 0)``."""
    return isinstance(relu, keras.layers.ReLU) and relu.max_value is None and not relu.negative_slope and not (
        relu.threshold)


def _plain_bn(bn, rank):
    """Whether ``bn`` is a Keras batch norm over the last axis of a rank-``rank`` tensor."""
    axes = [a % rank for a in np.atleast_1d(bn.axis)] if isinstance(bn, keras.layers.BatchNormalization) else []
    return axes == [rank - 1]


def _bn_affine(bn):
    """``(s, t)``: batch norm in inference mode is ``y * s + t`` per channel."""
    mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
    var = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    gamma = np.asarray(keras.ops.convert_to_numpy(bn.gamma), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(keras.ops.convert_to_numpy(bn.beta), np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _clone(layer, name):
    """A weightless layer like ``layer`` under its own pure compute-dtype policy."""
    return layer.__class__.from_config({**layer.get_config(), "dtype": _policy(layer), "name": name})


def inference_model(model):
    """``model`` for inference: batch norms folded into its convolutions, one dtype per layer, no casts inside.

    Args:
        model: a functional Keras model (the package's 2-D and 3-D networks, or
            any functional model; layers this module does not know are kept as
            they are).

    Returns:
        A new functional ``keras.Model`` with the same inputs and outputs (names
        and structure), computing ``model(x, training=False)`` up to rounding.
        It shares no weights with ``model`` (later training of ``model`` does
        not reach it) and is meant for inference only.
    """
    if not getattr(model, "_is_graph_network", False) and not hasattr(model, "_operations"):
        raise TypeError(f"inference_model needs a functional Keras model, got {type(model).__name__}")
    folder = _Folder()
    lazy = {}

    def call(layer, *args, **kwargs):
        inputs = args[0]
        if isinstance(inputs, list | tuple):
            got = [lazy.get(id(t), _Lazy(t)) for t in inputs]
        else:
            got = lazy.get(id(inputs), _Lazy(inputs))
        out = folder.layer(layer, got)
        outs = out if isinstance(out, list) else [out]
        for item in outs:
            lazy[id(item.tensor)] = item
        return [item.tensor for item in outs] if isinstance(out, list) else out.tensor

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    outputs = []
    for tensor, original in zip(clone.outputs, model.outputs):
        item = lazy.get(id(tensor), _Lazy(tensor))
        name = original._keras_history.operation.name
        outputs.append(folder.explicit(item, str(tensor.dtype), f"{name}_explicit").tensor)
    inputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs
    folded = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_inference")
    return folded


def for_inference(model):
    """:func:`inference_model` of ``model``, or ``model`` itself where it is not a functional Keras model
    (a subclassed model: its layers are not a graph that can be rebuilt)."""
    try:
        return inference_model(model)
    except TypeError:
        return model
