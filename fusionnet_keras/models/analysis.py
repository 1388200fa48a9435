"""Model inspection: size multiple, receptive field, FLOPs and level shapes."""

from __future__ import annotations

import math

import numpy as np
from keras import layers

from fusionnet_keras.errors import FusionNetError


def _conv_layers(layer):
    """Yield the Conv2D / Conv2DTranspose layers inside ``layer`` (recursively)."""
    from keras import layers

    if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
        yield layer
        return
    for attr in ("conv", "deconv", "convs", "layers"):
        sub = getattr(layer, attr, None)
        if sub is None:
            continue
        for s in sub if isinstance(sub, (list, tuple)) else [sub]:
            if isinstance(s, layers.Layer):
                yield from _conv_layers(s)


def level_shapes(model, height=640, width=640):
    """Output shape (H, W, C) of every named block of ``model`` for an input of ``height x width``."""
    from keras import layers

    from fusionnet_keras.models.layers import ConvBlock, ResidualBlock, UpConv

    probe = model.__class__.from_config({**model.get_config(), "image_shape": [height, width, 1]})
    shapes = []
    for layer in probe.layers:
        if isinstance(layer, (ConvBlock, ResidualBlock, UpConv, layers.Conv2D, layers.MaxPooling2D)):
            out = layer.output.shape
            shapes.append((layer.name, tuple(out[1:])))
    return shapes


def flops_per_pixel(model):
    """Floating-point operations per input pixel of one forward pass (2 FLOPs per multiply-add).

    Counts every convolution and transposed convolution (batch norm, ReLU,
    pooling and additions are a negligible fraction and are not counted). The
    count is exact for any input size divisible by ``2**depth``.
    """
    size = 2**model.depth * 8
    probe = model.__class__.from_config({**model.get_config(), "image_shape": [size, size, 1]})
    macs = 0.0
    for layer in probe.layers:
        out_pixels = layer.output.shape[1] * layer.output.shape[2] if layer.output.shape[1:3] else 0
        for conv in _conv_layers(layer):
            kh, kw = conv.kernel_size
            if isinstance(conv, layers.Conv2DTranspose):
                # every input pixel scatters a kh x kw x cout patch
                cout, cin = conv.kernel.shape[2], conv.kernel.shape[3]
                sh, sw = conv.strides
                macs += out_pixels / (sh * sw) * kh * kw * cin * cout
            else:
                cin, cout = conv.kernel.shape[2], conv.kernel.shape[3]
                macs += out_pixels * kh * kw * cin * cout
    return 2.0 * macs / (size * size)


def _pair(value):
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value[:2]) if len(value) >= 2 else (int(value[0]),) * 2
    return (int(value), int(value))


def _sublayers(layer):
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except Exception:  # pragma: no cover - very old / foreign layer classes
        return list(getattr(layer, "layers", []) or [])


def _all_layers(layer):
    """``layer`` and every layer nested in it (depth first)."""
    try:
        return list(layer._flatten_layers(include_self=True, recursive=True))
    except Exception:  # pragma: no cover
        out = [layer]
        for sub in getattr(layer, "layers", []) or []:
            out.extend(_all_layers(sub))
        return out


def size_multiple(model) -> int:
    """The number input height and width must be divisible by.

    Uses ``model.size_multiple`` when the model provides it (the models of
    :mod:`fusionnet_keras.models` do: ``2**depth``); otherwise the product of the
    strides of all 2-D pooling layers and strided (non-transposed) convolutions,
    i.e. ``2**count`` for a U-shaped net with ``count`` 2x2 max-poolings.
    """
    value = getattr(model, "size_multiple", None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    multiple = 1
    for layer in _all_layers(model):
        name = type(layer).__name__
        if "Pooling2D" in name and "Global" not in name:
            multiple *= max(_pair(layer.strides or layer.pool_size))
        elif "Conv" in name and "Transpose" not in name and hasattr(layer, "strides"):
            multiple *= max(_pair(layer.strides))
    return int(multiple)


def _leaf_rf(layer, r, j):
    """Receptive radius ``r`` and jump ``j`` (input pixels per feature pixel) after ``layer``."""
    name = type(layer).__name__
    if "Global" in name and "Pooling" in name:
        return math.inf, j
    if "Transpose" in name and hasattr(layer, "kernel_size"):
        k = max(_pair(layer.kernel_size))
        s = max(_pair(layer.strides))
        # an output pixel sees ceil(k / s) input pixels, j apart
        return r + math.ceil(k / s) * j, j / s
    if hasattr(layer, "kernel_size") and hasattr(layer, "strides"):
        k = max(_pair(layer.kernel_size))
        d = max(_pair(getattr(layer, "dilation_rate", 1) or 1))
        s = max(_pair(layer.strides))
        return r + math.ceil((k - 1) * d / 2) * j, j * s
    if hasattr(layer, "pool_size"):
        p = max(_pair(layer.pool_size))
        s = max(_pair(layer.strides or layer.pool_size))
        return r + (p - 1) * j, j * s
    if "UpSampling" in name:
        u = max(_pair(layer.size))
        return r + j, j / u
    if "Cropping" in name or "ZeroPadding" in name:
        return r, j
    subs = _sublayers(layer)
    for sub in subs:  # custom block: conservatively chain its sub-layers
        r, j = _rf(sub, r, j)
    return r, j


def _rf(layer, r, j):
    nodes_by_depth = getattr(layer, "_nodes_by_depth", None)
    inputs = getattr(layer, "inputs", None) if nodes_by_depth else None
    if nodes_by_depth and inputs:
        try:
            info = {id(t): (r, j) for t in inputs}
            for depth in sorted(nodes_by_depth, reverse=True):
                for node in nodes_by_depth[depth]:
                    if not node.operation or node.is_input:
                        continue
                    known = [info[id(t)] for t in node.input_tensors if id(t) in info]
                    if not known:
                        continue
                    r_in = max(k[0] for k in known)
                    j_in = max(k[1] for k in known)
                    out = _rf(node.operation, r_in, j_in)
                    for t in node.outputs:
                        info[id(t)] = out
            results = [info[id(t)] for t in layer.outputs]
            return max(x[0] for x in results), max(x[1] for x in results)
        except Exception:  # fall back to chaining the layers in order
            pass
    if hasattr(layer, "layers") and getattr(layer, "layers", None) is not None and _sublayers(layer):
        for sub in _sublayers(layer):
            r, j = _rf(sub, r, j)
        return r, j
    return _leaf_rf(layer, r, j)


def receptive_field_margin(model) -> int:
    """Conservative receptive-field radius of ``model`` in input pixels.

    An output pixel depends only on input pixels at most this far away (per
    axis), so tiles that discard this many pixels at inner edges reproduce the
    whole-image prediction. Computed from the layer graph: convolutions add
    ``ceil((k-1)*dilation/2)`` feature pixels, ``p x p`` pooling ``p-1``,
    upsampling/transposed convolutions one feature pixel per ``stride``, each
    scaled by the feature map's stride relative to the input; merges take the
    maximum over branches. Blocks that are not functional graphs are treated as
    chains of their sub-layers (an over-estimate at worst).
    """
    r, _ = _rf(model, 0.0, 1.0)
    if not math.isfinite(r):
        raise FusionNetError("the model has a global receptive field; tiled prediction is not exact")
    return int(math.ceil(r))

