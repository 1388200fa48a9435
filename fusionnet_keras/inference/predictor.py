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

from collections import OrderedDict

import numpy as np

from fusionnet_keras.data.orient import N_ORIENTATIONS, orient, unorient
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.tiling import _floor_to, pad_for_model, tile_plan
from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple

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


# ----------------------------------------------------------------------------
# geometry


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
        if isinstance(y, (list, tuple)):  # FusionNetW^k: the last unit's output is the prediction
            y = y[-1]
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
