"""Whole-section and tiled inference with 8-fold test-time augmentation.

:func:`predict` turns a 2-D section ``(H, W)`` or a stack ``(Z, H, W)`` of float
images in ``[0, 1]`` into a float32 probability map of the same shape:

1. **Orientations (TTA).** With ``tta=8`` (the paper's section 2.2) each section
   is presented in all 8 orientations of the dihedral group D4
   (:class:`fusionnet_keras.data.orient.Orientation`); every prediction is turned back
   (:meth:`~fusionnet_keras.data.orient.Orientation.undo`) and the 8 maps are
   averaged. Each orientation is padded and tiled *after* it has been oriented,
   so the result is exactly D4-equivariant:
   ``predict(orient(x, k)) == orient(predict(x), k)`` up to float round-off.
   ``tta=1`` is a single plain pass.
2. **Mirror padding.** The oriented section gets ``pad`` pixels of mirror
   (``np.pad(mode="reflect")``) context on every side, then further mirror
   padding up to the next multiple of ``multiple`` (split between the two
   sides, the odd pixel at the bottom/right) so every pooling level divides
   evenly: the *frame* (:func:`~fusionnet_keras.inference.tiling.pad_for_model`).
   The prediction is cropped back to the section.
3. **Tiling.** Without ``tile`` the network sees the whole frame at once.
   With ``tile`` the frame is cut by a :class:`~fusionnet_keras.inference.tiling.TilePlan`
   (``mode="fit"``): ``tile`` is the core each window contributes, and every
   window adds ``overlap`` pixels of context on each side (default: the
   network's receptive-field radius, :func:`receptive_field_margin`), with
   window offsets on the pooling grid of the frame. So **any tile size gives
   the untiled result** up to float round-off. A smaller explicit ``overlap``
   trades exactness for speed; then neighbouring windows cross-fade with
   linear ramps over at least ``min(overlap, tile / 2)`` pixels so no seams show.

Inference runs in inference mode (batch norm uses its moving statistics,
folded into the convolutions: :func:`fusionnet_keras.models.inference_graph.inference_model`) via
``predict_on_batch``, which compiles the forward pass once per input
shape; windows of the same shape (all orientations of a square window, all
tiles) are batched together up to ``batch_size``; a ``once`` prediction of a
single small call (the ``predict`` command on a small image) calls the model
eagerly instead, without tracing. Models with several outputs (FusionNetW^k)
are read at their last output.

``precision`` (``float32``, ``bfloat16``, ``float16``; default: the model's own,
saved with it) runs the convolutions in that format
(:func:`fusionnet_keras.models.precision.with_precision`); the input block, the
sigmoid output and the orientation average stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusionnet_keras.data.orient import N_ORIENTATIONS, Orientation
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.tiling import Tile, TilePlan, frame_widths, pad_for_model
from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple
from fusionnet_keras.models.inference_graph import for_inference
from fusionnet_keras.models.loading import check_network
from fusionnet_keras.models.precision import with_precision
from fusionnet_keras.utils.validate import check_int

__all__ = ["predict", "predict_section", "SectionPredictor"]

# Orientations grouped by output shape (even k keep (H, W), odd k transpose it), so
# that windows of equal shape follow each other and batch together.
_TTA_ORDER = tuple(Orientation.of(k) for k in (0, 2, 4, 6, 1, 3, 5, 7))


def _check_tta(tta):
    if isinstance(tta, bool) or tta not in (1, N_ORIENTATIONS):
        raise FusionNetError(f"tta must be 1 (plain) or 8 (all D4 orientations), got {tta!r}")
    return int(tta)


def _check_finite(array, where=""):
    if not np.all(np.isfinite(array)):
        raise FusionNetError(f"the image{where} contains NaN or infinite values")


@dataclass(eq=False)
class _Accumulator:
    """The accumulator of one orientation of one section."""

    orientation: Orientation
    offsets: tuple
    acc: np.ndarray
    left: int
    z: int = 0  # the section of a block (predict_region)


@dataclass(eq=False)
class _Job:
    """One network window: its pixels, its tile, the orientation it belongs to."""

    window: np.ndarray
    tile: Tile
    state: _Accumulator = field(repr=False)


# Memory model of one network window (calibrated on the paper model, TensorFlow CPU, float32:
# docs/benchmarks.md, "Tile choice"), and the free memory assumed when the backend does not say.
BYTES_PER_PIXEL_AND_FILTER = 16
DEFAULT_FREE_MEMORY = 4 << 30


def window_bytes(model, window) -> int:
    """Estimated activation memory of one ``window`` (``(h, w)``) in ``model``: 16 B per pixel and base filter."""
    filters = getattr(model, "nb_filters", None)
    if filters is None:  # any other Keras model: the widest layer of the first level is unknown; assume 64
        filters = 64
    return int(np.prod(window)) * filters * BYTES_PER_PIXEL_AND_FILTER


def _snap(start, stop, context, multiple, size):
    """A window ``[start - context, stop + context)`` widened to the ``multiple`` grid, inside ``[0, size)``."""
    return slice(max(0, (start - context) // multiple * multiple), min(size, -(-(stop + context) // multiple) * multiple))


def _batches(items, key, batch_size):
    """Group ``items`` by ``key`` into lists of ``batch_size``, each flushed as soon as it is full."""
    pending = {}
    for item in items:
        queue = pending.setdefault(key(item), [])
        queue.append(item)
        if len(queue) >= batch_size:
            yield pending.pop(key(item))
    yield from pending.values()


#: Pixels (windows x height x width) up to which the one model call of a ``once`` prediction runs eagerly:
#: there, tracing the graph costs more than its faster arithmetic saves (measured: docs/benchmarks.md,
#: "Figures behind the code's defaults"); larger calls are traced as usual.
EAGER_MAX_PIXELS = 8 * 256 * 256


class SectionPredictor:
    """Prediction settings resolved once for a model; plans and runs 2-D sections.

    Same arguments as :func:`predict`. :meth:`plan` and :meth:`schedule` give the
    geometry without running the model (the benchmarks count FLOPs with them).

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, padding="same")])
        >>> sp = SectionPredictor(net, tta=1, tile=16, pad=4, multiple=1)
        >>> sp.context, len(sp.plan((40, 40)))
        (1, 9)
        >>> sp.predict(np.zeros((40, 40), np.float32)).shape
        (40, 40)
    """

    def __init__(self, model, tta=8, tile=None, pad=64, batch_size=None, overlap=None, multiple=None,
                 precision=None):
        self.model = model if precision is None else with_precision(model, precision)
        self._network = None
        self.tta = _check_tta(tta)
        self.pad = check_int("pad", pad, 0)
        #: windows per model call; None: :meth:`windows_per_call` decides from the free memory
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.multiple = check_int("multiple", multiple, 1, allow_none=True) or size_multiple(model)
        self.tile = check_int("tile", tile, 1, allow_none=True)
        overlap = check_int("overlap", overlap, 0, allow_none=True)
        #: context (px) each window has beyond its core at inner edges
        self.context = 0
        #: least cross-fade overlap of neighbouring windows (only when not exact)
        self.blend = 0
        #: whether the tiled result equals the untiled one (context >= receptive field)
        self.exact = True
        if self.tile is not None:
            try:
                margin = receptive_field_margin(model)
            except FusionNetError:
                if overlap is None:
                    raise
                margin = None
            self.context = margin if overlap is None else overlap
            self.exact = margin is not None and self.context >= margin
            if not self.exact:
                self.blend = max(self.multiple, min(self.context, self.tile // 2))

    @property
    def network(self):
        """What runs: :attr:`model` with its batch norms folded into its convolutions
        (:func:`~fusionnet_keras.models.inference_graph.inference_model`), built on first use."""
        if self._network is None:
            self._network = for_inference(self.model)
        return self._network

    @network.setter
    def network(self, value):
        self._network = value

    @property
    def orientations(self):
        return _TTA_ORDER if self.tta == N_ORIENTATIONS else (Orientation(),)

    def plan(self, shape):
        """The :class:`TilePlan` of one (oriented) section of ``shape`` over its padded frame."""
        widths = frame_widths(shape, self.pad, self.multiple)
        frame = tuple(s + lo + hi for s, (lo, hi) in zip(shape, widths))
        region = tuple(slice(lo, lo + s) for s, (lo, _) in zip(shape, widths))
        tile = frame if self.tile is None else self.tile
        return TilePlan(frame, tile, halo=self.context, multiple=self.multiple, region=region,
                        mode="fit", blend=self.blend)

    def windows_per_call(self, shape):
        """Windows per model call for a section of ``shape``: ``batch_size``, or when that is ``None``
        as many as fit in a quarter of the free memory (:func:`window_bytes`), a power of two <= 8
        (so the 8 orientations of a window go in one call when memory allows)."""
        if self.batch_size is not None:
            return self.batch_size
        from fusionnet_keras.utils.hardware import free_memory_bytes

        free = free_memory_bytes() or DEFAULT_FREE_MEMORY
        fits = int(free // 4 // window_bytes(self.model, self.plan(tuple(shape)).window))
        return max(1, min(N_ORIENTATIONS, 1 << max(fits, 1).bit_length() - 1))

    def schedule(self, shape):
        """The model calls :meth:`predict` makes for a section of ``shape``: a list of ``(n, h, w)``."""
        shapes = []
        for o in self.orientations:
            plan = self.plan(tuple(shape)[::-1] if o.transpose else tuple(shape))
            shapes += [plan.window] * len(plan)
        return [(len(b),) + b[0] for b in _batches(shapes, lambda s: s, self.windows_per_call(shape))]

    def _jobs(self, section, states):
        for o in self.orientations:
            y = o.apply(section)
            frame, offsets = pad_for_model(y, self.pad, self.multiple)
            plan = self.plan(y.shape)
            state = _Accumulator(o, offsets, np.zeros(y.shape, np.float32), len(plan))
            states.append(state)
            for tile in plan:
                yield _Job(np.ascontiguousarray(frame[tile.read], dtype=np.float32), tile, state)

    def margin(self):
        """Context (px) that makes a window's core exact: the receptive field radius (or ``overlap``)."""
        return self.context if self.tile is not None else receptive_field_margin(self.model)

    def _region_jobs(self, read, shape, region, depth, states):
        """Jobs for ``region`` of ``depth`` sections of ``shape``: one window per section and orientation.

        Each orientation's window is the region's core in the padded frame
        grown by :meth:`margin` and widened to the pooling grid, inside the
        frame (where the frame ends, the window ends: the network sees the edge
        it sees on the whole frame), so the core equals the whole-section result.
        """
        context = self.margin()
        plans = []
        for i, o in enumerate(self.orientations):
            oshape = tuple(shape)[::-1] if o.transpose else tuple(shape)
            widths = frame_widths(oshape, self.pad, self.multiple)
            frame = [s + lo + hi for s, (lo, hi) in zip(oshape, widths)]
            core = [slice(r.start + lo, r.stop + lo) for r, (lo, _) in zip(o.region(shape, region), widths)]
            window = tuple(_snap(c.start, c.stop, context, self.multiple, f) for c, f in zip(core, frame))
            source = o.unregion(oshape, [slice(w.start - lo, w.stop - lo) for w, (lo, _) in zip(window, widths)])
            tile = Tile(index=(i,), read=window, write=tuple(core),
                        crop=tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(core, window)))
            plans.append((o, tile, source))
        box = tuple(slice(min(p[2][a].start for p in plans), max(p[2][a].stop for p in plans)) for a in range(2))
        stack = read(box)  # (depth, ...) the sections' union of all windows, mirrored past the edges
        for o, tile, source in plans:
            part = stack[(slice(None),) + tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(source, box))]
            windows = o.apply(part)
            for z in range(depth):
                state = _Accumulator(o, tuple(c.start for c in tile.write),
                                     np.zeros(tile.write_shape, np.float32), 1, z)
                states.append(state)
                yield _Job(np.ascontiguousarray(windows[z], dtype=np.float32), tile, state)

    def predict_region(self, read, shape, region, depth=1):
        """Probability map of ``region`` (y, x slices) of ``depth`` sections of ``shape`` (blockwise prediction).

        ``read(box)`` returns the ``depth`` sections' pixels in ``box`` (y, x
        slices that may reach past the section, mirrored as
        :func:`~fusionnet_keras.inference.tiling.read_block` does), float32 in
        [0, 1]. The result, ``(depth, h, w)``, equals the same part of
        :meth:`predict` of the whole sections up to float round-off, for any region.

        Examples:
            >>> import keras
            >>> from fusionnet_keras.inference.tiling import read_block
            >>> net = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, padding="same")])
            >>> sp, x = SectionPredictor(net, tta=8, pad=4, multiple=1), np.random.default_rng(0).random((1, 9, 7))
            >>> part = sp.predict_region(lambda box: read_block(x, (slice(0, 1),) + box), (9, 7), (slice(2, 5), slice(0, 4)))
            >>> bool(np.allclose(part[0], sp.predict(x[0])[2:5, 0:4], atol=1e-6))
            True
        """
        region = tuple(slice(r.start, r.stop) for r in region)
        total = np.zeros((depth,) + tuple(r.stop - r.start for r in region), np.float32)

        def finish(state):
            total[state.z] += state.orientation.undo(state.acc)
            state.acc = None

        states = []
        jobs = self._region_jobs(read, tuple(shape), region, depth, states)
        # batches of one section each, as predict() makes them: the same float round-off for any block depth
        per_call = self.windows_per_call(tuple(shape))
        for batch in _batches(jobs, lambda job: (job.state.z, job.window.shape), per_call):
            self._run(batch, finish)
        assert all(s.left == 0 for s in states)
        total /= self.tta
        np.clip(total, 0.0, 1.0, out=total)
        return total

    def _run(self, batch, finish, eager=False):
        x = np.stack([job.window for job in batch])[..., None]
        # one small call in all: eagerly, as tracing the graph would cost more than it saves (EAGER_MAX_PIXELS)
        # (the eager call runs the model as built: folding it would cost more than the call, e.g. 1-3 s for 16/4)
        y = self.model(x, training=False) if eager else self.network.predict_on_batch(x)
        if isinstance(y, (list, tuple)):  # FusionNetW^k: the last unit's output is the prediction
            y = y[-1]
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 4:
            if y.shape[-1] != 1:
                raise FusionNetError(f"the model must output one channel, got output shape {y.shape}")
            y = y[..., 0]
        if y.shape != x.shape[:3]:
            raise FusionNetError(f"the model output shape {y.shape} does not match its input {x.shape[:3]}")
        for out, job in zip(y, batch):
            part = out[job.tile.crop]
            weight = job.tile.weight()
            if weight is not None:
                part = (part * weight).astype(np.float32)
            state = job.state
            target = tuple(slice(s.start - o, s.stop - o) for s, o in zip(job.tile.write, state.offsets))
            state.acc[target] += part
            state.left -= 1
            if state.left == 0:
                finish(state)

    def predict(self, section, once=False):
        """Probability map (float32 in [0, 1]) of one 2-D ``section``.

        ``once``: nothing else is predicted with this model in this process, so
        a section that needs a single model call of at most
        :data:`EAGER_MAX_PIXELS` runs it eagerly (saving the graph's tracing,
        most of a small prediction's first call).
        """
        section = np.asarray(section, dtype=np.float32)
        total = np.zeros(section.shape, np.float32)

        def finish(state):
            total[...] += state.orientation.undo(state.acc)
            state.acc = None

        states = []
        per_call = self.windows_per_call(section.shape)
        calls = self.schedule(section.shape) if once else []
        eager = len(calls) == 1 and np.prod(calls[0]) <= EAGER_MAX_PIXELS
        for batch in _batches(self._jobs(section, states), lambda job: job.window.shape, per_call):
            self._run(batch, finish, eager)
        assert all(s.left == 0 for s in states)
        total /= self.tta
        np.clip(total, 0.0, 1.0, out=total)
        return total


def _check_image(image):
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    shape = tuple(image.shape)
    if len(shape) not in (2, 3):
        raise FusionNetError(f"expected a 2-D image or a 3-D stack (Z, H, W), got shape {shape}")
    if 0 in shape:
        raise FusionNetError(f"the image is empty (shape {shape})")
    return image, shape


def predict_section(model, section, tta=8, tile=None, pad=64, batch_size=None, overlap=None, multiple=None,
                    precision=None):
    """Predict one 2-D section ``(H, W)``; returns float32 ``(H, W)`` in ``[0, 1]``.

    Same arguments as :func:`predict`.
    """
    section, shape = _check_image(section)
    if len(shape) != 2:
        raise FusionNetError(f"expected a 2-D section (H, W), got shape {shape}")
    section = np.asarray(section, dtype=np.float32)
    _check_finite(section)
    return SectionPredictor(model, tta, tile, pad, batch_size, overlap, multiple, precision).predict(section)


def predict(
    model,
    image,
    tta=8,
    tile=None,
    pad=64,
    batch_size=None,
    overlap=None,
    multiple=None,
    progress=False,
    out=None,
    precision=None,
    once=False,
):
    """Probability map of a section ``(H, W)`` or a stack ``(Z, H, W)``.

    FusionNet (Quan, Hildebrand, Jeong 2016, sec. 2.2): 8-orientation averaging
    over mirror-padded sections.

    ``fk.predict`` (:func:`fusionnet_keras.pretrained.resolve.predict`) takes
    ``model`` also as a registry name, a ``.keras`` path or a URL, or not at
    all (``fk.predict(image)``: the shipped default 2-D model), and calls this.

    Args:
        model: a Keras model mapping ``(N, H, W, 1)`` float32 in [0, 1] to
            ``(N, H, W, 1)`` probabilities (H, W divisible by ``multiple``).
        image: 2-D section or 3-D stack (any array-like with ``shape`` and
            indexing, e.g. a memmap), floats in [0, 1]; stacks are processed
            section by section. Any size >= 1x1.
        tta: 8 to average all 8 D4 orientations (the paper), 1 for a plain pass.
        tile: side of the square core each network window contributes (px);
            each window is ``tile + 2 * overlap``, rounded up to ``multiple``,
            at most the padded section. ``None`` = the whole padded section in
            one window. Any tile size gives the untiled result (default overlap).
        pad: mirror-padding context in pixels added around each section.
        batch_size: windows per forward pass. Default ``None``: as many
            windows of one shape as fit in a quarter of the free memory (of the
            accelerator, else of the machine), at most 8, so the 8 orientations
            of a window go through the network in one call when memory allows.
        overlap: context (px) each window has beyond its core at inner tile
            edges. Default: ``receptive_field_margin(model)``, which makes
            tiling exact. A smaller value is faster and not exact (the windows
            then cross-fade linearly).
        multiple: required input size multiple; default :func:`size_multiple`.
        progress: show a tqdm progress bar over sections.
        out: optional array-like of the image's shape (zarr, h5py, memmap) to
            write the result into section by section; it is returned.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``: the number
            format of the convolutions (:mod:`fusionnet_keras.models.precision`;
            the input block, the output and the orientation average stay
            float32). Default ``None``: the model's own precision, saved with it.
        once: this is the only prediction with ``model`` in this process (the
            ``predict`` command): a section that needs one model call runs it
            eagerly, without tracing a graph first (faster for that one call).

    Returns:
        float32 array (or ``out``) of the same shape as ``image``, in [0, 1].

    Raises:
        FusionNetError: bad shape, empty or non-finite image, bad settings.

    Examples:
        >>> import fusionnet_keras as fk
        >>> net = fk.FusionNet(nb_filters=2, depth=2)
        >>> fk.predict(net, np.full((40, 50), 0.5, np.float32), tta=1, tile=16).shape
        (40, 50)
    """
    check_network(model, "fusionnet_keras.predict")
    image, shape = _check_image(image)
    predictor = SectionPredictor(model, tta, tile, pad, batch_size, overlap, multiple, precision)
    if out is not None and tuple(out.shape) != shape:
        raise FusionNetError(f"out has shape {tuple(out.shape)}, expected {shape}")
    if isinstance(image, np.ndarray):
        _check_finite(image)
    if len(shape) == 2:
        section = np.asarray(image, dtype=np.float32)
        if not isinstance(image, np.ndarray):
            _check_finite(section)
        result = predictor.predict(section, once=once)
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
        result[z] = predictor.predict(section)
    return result
