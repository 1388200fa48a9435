"""Input/output size arithmetic of U-shaped networks built from *valid* convolutions.

A network without padding maps an input block to a smaller output block centred
in it: per axis, ``output = input - loss`` and output voxel ``j`` lies at input
voxel ``j + loss // 2`` (the *context* each side). Only some input sizes work:
every map that is pooled must have a size divisible by the pooling factor, and
no map may shrink below one voxel. :class:`ValidGeometry` answers, per axis,
which sizes fit, what they give, and how the skip connections are cropped; the
3-D affinity networks (:class:`~fusionnet_keras.models.unet3d.UNet3D`,
:class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`) build their graphs
from it and expose it as ``model.geometry``, and blockwise prediction uses it to
place blocks (blocks start on multiples of :attr:`ValidGeometry.multiple`, so
that every pooling window falls where it falls in the whole volume).

Pure Python (no Keras), so the tiling code can use it without building a model.

Example:
    >>> g = ValidGeometry.from_kernels(
    ...     down=[[(3, 3, 3)] * 2] * 3, bridge=[(3, 3, 3)] * 2, up=[[(3, 3, 3)] * 2] * 3,
    ...     head=(3, 1, 1), pool=(1, 2, 2))
    >>> g.output_shape((33, 204, 204))
    (3, 116, 116)
    >>> g.loss, g.multiple
    ((30, 88, 88), (1, 8, 8))
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionnet_keras.errors import FusionNetError

AXES = ("z", "y", "x")


def _axis_losses(kernels):
    """Per-axis voxels lost by a chain of valid convolutions with these kernel sizes."""
    kernels = [tuple(int(k) for k in kernel) for kernel in kernels]
    rank = len(kernels[0]) if kernels else 0
    return tuple(sum(k[a] - 1 for k in kernels) for a in range(rank))


@dataclass(frozen=True)
class ValidGeometry:
    """Size arithmetic of a U-shaped network of valid convolutions.

    The network: at every level ``i`` (0 = full resolution) the encoder runs
    convolutions that lose ``down[i]`` voxels per axis and pools by ``pool``;
    the bridge loses ``bridge``; the decoder up-samples by ``pool`` (a
    transposed convolution with kernel = stride, which loses nothing), merges
    the encoder map of the same level cropped to its size, and loses ``up[i]``;
    a head loses ``head``.

    Args:
        down: per level, per axis loss of the encoder convolutions.
        bridge: per axis loss of the bridge convolutions.
        up: per level, per axis loss of the decoder convolutions.
        head: per axis loss of the output convolution.
        pool: per axis pooling factor (``(1, 2, 2)``: never in z).
        axes: axis names used in messages.
    """

    down: tuple
    bridge: tuple
    up: tuple
    head: tuple
    pool: tuple
    axes: tuple = AXES

    @classmethod
    def from_kernels(cls, down, bridge, up, head, pool, axes=AXES):
        """Geometry from the kernel sizes: ``down[i]`` / ``up[i]`` the kernels of level ``i``'s
        convolutions (in order), ``bridge`` the bridge's, ``head`` the output convolution's."""
        for kernel in [*(k for level in [*down, *up] for k in level), *bridge, head]:
            if any(int(k) < 1 or int(k) % 2 == 0 for k in kernel):
                raise FusionNetError(f"valid-convolution kernel sizes must be odd and >= 1, got {tuple(kernel)}")
        return cls(
            down=tuple(_axis_losses(level) for level in down),
            bridge=_axis_losses(bridge),
            up=tuple(_axis_losses(level) for level in up),
            head=_axis_losses([head]),
            pool=tuple(int(p) for p in pool),
            axes=tuple(axes),
        )

    @property
    def depth(self):
        return len(self.down)

    @property
    def rank(self):
        return len(self.pool)

    # ------------------------------------------------------------- one axis
    def _trace(self, size, axis):
        """Encoder and decoder map sizes along ``axis`` for input ``size``, or None if it does not fit."""
        p = self.pool[axis]
        s = int(size)
        encoder = []
        for level in self.down:
            s -= level[axis]
            if s < 1 or s % p:
                return None
            encoder.append(s)
            s //= p
        s -= self.bridge[axis]
        if s < 1:
            return None
        decoder = [None] * self.depth
        for i in reversed(range(self.depth)):
            s *= p
            decoder[i] = s
            s -= self.up[i][axis]
            if s < 1:
                return None
        s -= self.head[axis]
        if s < 1:
            return None
        return encoder, decoder, s

    def axis_output(self, size, axis):
        """Output size along ``axis`` for input ``size``, or None if the size does not fit."""
        trace = self._trace(size, axis)
        return None if trace is None else trace[2]

    # ------------------------------------------------------------ properties
    @property
    def multiple(self):
        """Per axis: valid input sizes are ``min_input + k * multiple``; blocks start on multiples of it."""
        return tuple(p**self.depth for p in self.pool)

    @property
    def min_input(self):
        """Per axis: the smallest input size that fits."""
        out = []
        for a in range(self.rank):
            n = 1
            while self._trace(n, a) is None:
                n += 1
            out.append(n)
        return tuple(out)

    @property
    def loss(self):
        """Per axis: ``input - output`` (the same for every size that fits)."""
        return tuple(n - self.axis_output(n, a) for a, n in enumerate(self.min_input))

    @property
    def context(self):
        """Per axis: input voxels lost at each side; output voxel ``j`` is input voxel ``j + context``."""
        return tuple(loss // 2 for loss in self.loss)

    @property
    def crops(self):
        """Per level: per axis ``(before, after)`` crop that fits the encoder map to the decoder map."""
        traces = [self._trace(n, a) for a, n in enumerate(self.min_input)]
        crops = []
        for i in range(self.depth):
            per_axis = []
            for encoder, decoder, _ in traces:
                diff = encoder[i] - decoder[i]
                per_axis.append((diff // 2, diff - diff // 2))
            crops.append(tuple(per_axis))
        return tuple(crops)

    # -------------------------------------------------------------- queries
    def valid_sizes(self, axis, up_to):
        """``[(input, output), ...]`` for every input size ``<= up_to`` that fits along ``axis``."""
        a = self._axis_index(axis)
        start, step, loss = self.min_input[a], self.multiple[a], self.loss[a]
        return [(n, n - loss) for n in range(start, int(up_to) + 1, step)]

    def nearest_sizes(self, size, axis):
        """The valid input sizes just below and just above ``size`` along ``axis`` (below may be None)."""
        a = self._axis_index(axis)
        start, step = self.min_input[a], self.multiple[a]
        if size <= start:
            return None, start
        k = (int(size) - start) // step
        below = start + k * step
        return below, below if below == size else below + step

    def output_shape(self, input_shape):
        """Output shape for ``input_shape`` (spatial axes only; ``None`` stays ``None``).

        Raises :class:`FusionNetError` naming the axis and the nearest sizes that fit.
        """
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank:
            raise FusionNetError(f"expected {self.rank} spatial sizes {self.axes}, got {input_shape}")
        out = []
        for a, n in enumerate(input_shape):
            if n is None:
                out.append(None)
                continue
            o = self.axis_output(n, a)
            if o is None:
                below, above = self.nearest_sizes(n, a)
                options = [f"{s} (-> {s - self.loss[a]})" for s in (below, above) if s is not None]
                raise FusionNetError(
                    f"input {self.axes[a]} size {n} does not fit the network; nearest sizes that do: "
                    f"{' or '.join(options)} (valid sizes are {self.min_input[a]} + k * {self.multiple[a]})"
                )
            out.append(o)
        return tuple(out)

    def input_shape_for(self, output_shape):
        """The input shape that gives exactly ``output_shape`` (raises if that output size is impossible)."""
        shape = tuple(int(o) + loss for o, loss in zip(output_shape, self.loss))
        self.output_shape(shape)
        return shape

    def block(self, core_shape):
        """Input shape and per-axis ``(before, after)`` context for blockwise prediction of cores of
        ``core_shape`` voxels, each a multiple of :attr:`multiple` (so that blocks on a common grid
        see the pooling windows the whole volume sees).

        The output sizes of a valid network step by ``multiple`` from ``min_input - loss``, so a
        core that is a multiple of ``multiple`` usually needs a few more input voxels after it: the
        network then predicts ``core + (after - before)`` voxels, of which the first ``core`` are
        the block's (the tiling core crops the rest).

        Examples:
            >>> g = ValidGeometry.from_kernels([[(3, 3, 3)] * 2] * 3, [(3, 3, 3)] * 2,
            ...                                [[(3, 3, 3)] * 2] * 3, (3, 1, 1), (1, 2, 2))
            >>> g.block((8, 112, 112))
            ((38, 204, 204), ((15, 15), (44, 48), (44, 48)))
        """
        core_shape = tuple(int(c) for c in core_shape)
        input_shape, halo = [], []
        for a, core in enumerate(core_shape):
            if core < 1 or core % self.multiple[a]:
                raise FusionNetError(
                    f"block {self.axes[a]} size {core} must be a positive multiple of {self.multiple[a]}"
                )
            _, size = self.nearest_sizes(core + self.loss[a], a)
            input_shape.append(size)
            halo.append((self.context[a], size - core - self.context[a]))
        return tuple(input_shape), tuple(halo)

    def _axis_index(self, axis):
        if isinstance(axis, str):
            if axis not in self.axes:
                raise FusionNetError(f"unknown axis {axis!r}; choose one of {', '.join(self.axes)}")
            return self.axes.index(axis)
        return int(axis)
