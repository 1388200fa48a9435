"""Whole-section and tiled inference with 8-fold test-time augmentation.

:func:`predict` turns a 2-D section ``(H, W)`` or a stack ``(Z, H, W)`` of float
images in ``[0, 1]`` into a float32 probability map of the same shape:

1. **Orientations (TTA).** With ``tta=8`` (the paper's section 2.2) each section
   is presented in all 8 orientations of the dihedral group D4
   (:func:`fusionnet_keras.orient.orient`); every prediction is turned back with
   :func:`~fusionnet_keras.orient.unorient` and the 8 maps are averaged. Each
   orientation is padded and tiled *after* it has been oriented, so the result
   is exactly D4-equivariant: ``predict(orient(x, k)) == orient(predict(x), k)``
   up to float round-off. ``tta=1`` is a single plain pass.
2. **Mirror padding.** The oriented section gets ``pad`` pixels of mirror
   (``np.pad(mode="reflect")``) context on every side, then further reflect
   padding up to the next multiple of ``multiple`` (split between the two
   sides, the odd pixel at the bottom/right) so every pooling level divides
   evenly. The prediction is cropped back to the section.
3. **Tiling.** If the padded image is larger than ``tile`` it is cut into
   overlapping ``tile x tile`` windows whose offsets are multiples of
   ``multiple`` (so the pooling grids coincide with the whole-image
   computation). Each window's outer ``overlap`` pixels at *inner* tile edges
   are discarded (there the prediction sees the window border instead of the
   neighbouring image), and neighbouring windows are blended in their shared
   zone with linear ramps (weights normalised to sum to one), so there are no
   seams. With ``overlap >= receptive_field_margin(model)`` the tiled result
   equals the whole-image result up to float round-off.

Inference runs in inference mode (batch norm uses its moving statistics) via
``model.predict_on_batch``, which compiles the forward pass once per input
shape; windows of the same shape (all orientations of a square window, all
tiles) are batched together up to ``batch_size``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .errors import FusionNetError
from .orient import N_ORIENTATIONS, orient, unorient

__all__ = [
    "predict",
    "predict_section",
    "receptive_field_margin",
    "size_multiple",
    "pad_for_model",
    "tile_plan",
]

# Orientations grouped by output shape (even k keep (H, W), odd k swap it), so
# that windows of equal shape follow each other and batch together.
_TTA_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


# ----------------------------------------------------------------------------
# model inspection


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


# ----------------------------------------------------------------------------
# geometry


def _reflect_pad(x, widths):
    """np.pad(mode="reflect") that also works for tiny images (repeats the reflection)."""
    return np.pad(x, widths, mode="reflect")


def pad_for_model(section, pad, multiple):
    """Mirror-pad a 2-D ``section`` by ``pad`` px, then up to a multiple of ``multiple``.

    Returns ``(padded, (top, left))``: the section occupies
    ``padded[top:top + H, left:left + W]``. The extra padding to the multiple is
    split between both sides (the odd pixel goes to the bottom/right).
    """
    widths = []
    for size in section.shape:
        total = size + 2 * pad
        extra = -total % multiple
        widths.append((pad + extra // 2, pad + extra - extra // 2))
    padded = _reflect_pad(section, widths)
    return padded, (widths[0][0], widths[1][0])


def _floor_to(x, m):
    return (x // m) * m


def tile_plan(length, tile, overlap, multiple, lo=0, hi=None):
    """Windows along one axis of a padded image of ``length`` pixels.

    Returns a list of ``(start, a, b, weights)``: the window is
    ``[start, start + window)`` with ``window = min(tile, length)``; it
    contributes to positions ``[a, b)`` (inside ``[lo, hi)``, the part of the
    axis that is kept) with the float weights ``weights`` (length ``b - a``).
    Over all windows the weights sum to one at every position of ``[lo, hi)``.
    Starts are multiples of ``multiple``; inside an inner window edge the
    first/last ``overlap`` pixels get no weight, and in the zone two windows
    share the weights ramp linearly.
    """
    hi = length if hi is None else hi
    if length % multiple:
        raise ValueError(f"length {length} is not a multiple of {multiple}")
    if tile >= length:
        return [(0, lo, hi, np.ones(hi - lo, np.float64))]
    window = _floor_to(tile, multiple)
    core = window - 2 * overlap  # longest kept part of an inner window
    blend = max(multiple, min(overlap, core // 2))
    step = _floor_to(core - blend, multiple)
    if step < multiple:
        step = _floor_to(core, multiple)
    if step < multiple:
        raise FusionNetError(
            f"tile {tile} is too small for overlap {overlap}: need tile >= "
            f"2 * overlap + {multiple} (the size multiple); use a larger tile or a smaller overlap"
        )
    units = (length - window) // multiple
    n_gaps = math.ceil(units / (step // multiple))
    starts = [multiple * ((i * units) // n_gaps) for i in range(n_gaps + 1)]
    n = len(starts)
    valid = []
    for i, s in enumerate(starts):
        v0 = s + overlap if i > 0 else 0
        v1 = s + window - overlap if i < n - 1 else length
        valid.append((v0, v1))
    x = np.arange(length, dtype=np.float64)
    weights = np.zeros((n, length), np.float64)
    for i, (v0, v1) in enumerate(valid):
        w = np.ones(v1 - v0, np.float64)
        xs = x[v0:v1]
        if i > 0:
            zone = valid[i - 1][1] - v0
            if zone > 0:
                w = np.minimum(w, (xs - v0 + 0.5) / zone)
        if i < n - 1:
            zone = v1 - valid[i + 1][0]
            if zone > 0:
                w = np.minimum(w, (v1 - xs - 0.5) / zone)
        weights[i, v0:v1] = w
    total = weights.sum(axis=0)
    assert np.all(total > 0), "tile plan leaves a gap"  # guaranteed by step <= core
    weights /= total
    plan = []
    for i, s in enumerate(starts):
        a, b = max(valid[i][0], lo), min(valid[i][1], hi)
        if a < b:
            plan.append((s, a, b, weights[i, a:b]))
    return plan


# ----------------------------------------------------------------------------
# validation


def _check_choice_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FusionNetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_tta(tta):
    if isinstance(tta, bool) or tta not in (1, N_ORIENTATIONS):
        raise FusionNetError(f"tta must be 1 (plain) or 8 (all D4 orientations), got {tta!r}")
    return int(tta)


def _check_finite(array, where=""):
    if not np.all(np.isfinite(array)):
        raise FusionNetError(f"the image{where} contains NaN or infinite values")


# ----------------------------------------------------------------------------
# inference


class _Predictor:
    """Settings resolved once for a model; runs sections through it."""

    def __init__(self, model, tta=8, tile=None, pad=64, batch_size=4, overlap=None, multiple=None):
        self.model = model
        self.tta = _check_tta(tta)
        self.pad = _check_choice_int("pad", pad, 0)
        self.batch_size = _check_choice_int("batch_size", batch_size, 1)
        self.multiple = _check_choice_int("multiple", multiple, 1, allow_none=True) or size_multiple(model)
        tile = _check_choice_int("tile", tile, 1, allow_none=True)
        if tile is not None:
            if tile < self.multiple:
                raise FusionNetError(f"tile {tile} is smaller than the size multiple {self.multiple}")
            tile = _floor_to(tile, self.multiple)
        self.tile = tile
        if overlap is None:
            overlap = 0
            if tile is not None:
                overlap = min(receptive_field_margin(model), tile // 4)
        self.overlap = _check_choice_int("overlap", overlap, 0)

    # -- jobs: (window, orientation state, placement) ---------------------------------
    def _jobs(self, section, states):
        for k in (_TTA_ORDER if self.tta == N_ORIENTATIONS else (0,)):
            y = orient(section, k)
            h, w = y.shape
            padded, (top, left) = pad_for_model(y, self.pad, self.multiple)
            ph, pw = padded.shape
            tile = self.tile if self.tile is not None else max(ph, pw)
            rows = tile_plan(ph, tile, self.overlap, self.multiple, top, top + h)
            cols = tile_plan(pw, tile, self.overlap, self.multiple, left, left + w)
            th, tw = min(tile, ph), min(tile, pw)
            state = {"k": k, "acc": np.zeros((h, w), np.float32), "left": len(rows) * len(cols)}
            states.append(state)
            for r0, ra, rb, wr in rows:
                for c0, ca, cb, wc in cols:
                    window = np.ascontiguousarray(padded[r0:r0 + th, c0:c0 + tw], dtype=np.float32)
                    place = (r0, ra, rb, wr, c0, ca, cb, wc, top, left)
                    yield window, state, place

    def _run(self, batch, finish):
        x = np.stack([item[0] for item in batch])[..., None]
        y = self.model.predict_on_batch(x)
        y = np.asarray(y)
        if y.ndim == 4:
            if y.shape[-1] != 1:
                raise FusionNetError(f"the model must output one channel, got output shape {y.shape}")
            y = y[..., 0]
        if y.shape != x.shape[:3]:
            raise FusionNetError(f"the model output shape {y.shape} does not match its input {x.shape[:3]}")
        for out, (_, state, place) in zip(y, batch):
            r0, ra, rb, wr, c0, ca, cb, wc, top, left = place
            part = out[ra - r0:rb - r0, ca - c0:cb - c0].astype(np.float64)
            part *= wr[:, None]
            part *= wc[None, :]
            state["acc"][ra - top:rb - top, ca - left:cb - left] += part.astype(np.float32)
            state["left"] -= 1
            if state["left"] == 0:
                finish(state)

    def section(self, section):
        section = np.asarray(section, dtype=np.float32)
        total = np.zeros(section.shape, np.float32)

        def finish(state):
            total[...] += unorient(state["acc"], state["k"])
            state["acc"] = None

        states = []
        pending = OrderedDict()  # window shape -> list of jobs
        for job in self._jobs(section, states):
            queue = pending.setdefault(job[0].shape, [])
            queue.append(job)
            if len(queue) >= self.batch_size:
                del pending[job[0].shape]
                self._run(queue, finish)
        for queue in pending.values():
            self._run(queue, finish)
        assert all(s["left"] == 0 for s in states)
        total /= self.tta
        np.clip(total, 0.0, 1.0, out=total)
        return total


def _check_image(image):
    shape = tuple(getattr(image, "shape", ()))
    if not hasattr(image, "shape"):
        image = np.asarray(image)
        shape = image.shape
    if len(shape) not in (2, 3):
        raise FusionNetError(f"expected a 2-D image or a 3-D stack (Z, H, W), got shape {shape}")
    if 0 in shape:
        raise FusionNetError(f"the image is empty (shape {shape})")
    return image, shape


def predict_section(model, section, tta=8, tile=None, pad=64, batch_size=4, overlap=None, multiple=None):
    """Predict one 2-D section ``(H, W)``; returns float32 ``(H, W)`` in ``[0, 1]``.

    Same arguments as :func:`predict`.
    """
    section, shape = _check_image(section)
    if len(shape) != 2:
        raise FusionNetError(f"expected a 2-D section (H, W), got shape {shape}")
    section = np.asarray(section, dtype=np.float32)
    _check_finite(section)
    return _Predictor(model, tta, tile, pad, batch_size, overlap, multiple).section(section)


def predict(
    model,
    image,
    tta=8,
    tile=None,
    pad=64,
    batch_size=4,
    overlap=None,
    multiple=None,
    progress=False,
    out=None,
):
    """Probability map of a section ``(H, W)`` or a stack ``(Z, H, W)``.

    Args:
        model: a Keras model mapping ``(N, H, W, 1)`` float32 in [0, 1] to
            ``(N, H, W, 1)`` probabilities (H, W divisible by ``multiple``).
        image: 2-D section or 3-D stack (any array-like with ``shape`` and
            indexing, e.g. a memmap), floats in [0, 1]; stacks are processed
            section by section. Any size >= 1x1.
        tta: 8 to average all 8 D4 orientations (the paper), 1 for a plain pass.
        tile: side of the square network input window (including context) for
            tiled inference; ``None`` = the whole padded section in one window.
            Rounded down to a multiple of ``multiple``.
        pad: mirror-padding context in pixels added around each section.
        batch_size: windows per forward pass.
        overlap: pixels discarded at inner tile edges. Default
            ``min(receptive_field_margin(model), tile // 4)``; with
            ``overlap >= receptive_field_margin(model)`` tiling is exact.
        multiple: required input size multiple; default :func:`size_multiple`.
        progress: show a tqdm progress bar over sections.
        out: optional array-like of the image's shape (zarr, h5py, memmap) to
            write the result into section by section; it is returned.

    Returns:
        float32 array (or ``out``) of the same shape as ``image``, in [0, 1].

    Raises:
        FusionNetError: bad shape, empty or non-finite image, bad settings.
    """
    image, shape = _check_image(image)
    predictor = _Predictor(model, tta, tile, pad, batch_size, overlap, multiple)
    if out is not None and tuple(out.shape) != shape:
        raise FusionNetError(f"out has shape {tuple(out.shape)}, expected {shape}")
    if isinstance(image, np.ndarray):
        _check_finite(image)
    if len(shape) == 2:
        section = np.asarray(image, dtype=np.float32)
        if not isinstance(image, np.ndarray):
            _check_finite(section)
        result = predictor.section(section)
        if out is None:
            return result
        out[...] = result
        return out

    result = np.empty(shape, np.float32) if out is None else out
    sections = range(shape[0])
    if progress:
        from tqdm.auto import tqdm

        sections = tqdm(sections, desc="predict", unit="section")
    for z in sections:
        section = np.asarray(image[z], dtype=np.float32)
        _check_finite(section, f" (section {z})")
        result[z] = predictor.section(section)
    return result
