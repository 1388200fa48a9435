"""The 8 orientations of a section: the dihedral group D4 (4 rotations x mirror), as one small type.

An :class:`Orientation` flips y and/or x, then transposes them: every element
of D4 is one of these 8 combinations. Both predictors use it: the 2-D
predictor averages the 8 orientations of a section (the paper, section 2.2,
"data enrichment", trains on all 8 and averages the 8 turned-back predictions
at test time), the affinity predictor the first 1, 4 (flips) or 8
(:data:`XY_ORIENTATIONS`).

:func:`orient` numbers them the paper's way: orientation ``k`` (0..7) rotates
the last two axes by ``k % 4`` quarter turns (counter-clockwise, as
:func:`numpy.rot90`) and, for ``k >= 4``, first mirrors the last axis
(left-right flip); :func:`unorient` is the exact inverse, so
``unorient(orient(x, k), k) == x``.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from fusionnet_keras.utils.validate import check_int

NUM_ORIENTATIONS = 8
N_ORIENTATIONS = NUM_ORIENTATIONS


def _flipped(s: slice, n: int) -> slice:
    """Where ``s`` lies on an axis of size ``n`` after a flip (also for slices that reach past the axis)."""
    return slice(n - s.stop, n - s.start)


class Orientation(NamedTuple):
    """One xy orientation: flip y (``flip_y``) and/or x (``flip_x``), then swap them (``transpose``).

    Examples:
        >>> x = np.arange(6).reshape(2, 3)
        >>> o = Orientation(transpose=True, flip_x=True)
        >>> o.apply(x).tolist()
        [[2, 5], [1, 4], [0, 3]]
        >>> bool((o.undo(o.apply(x)) == x).all())
        True
    """

    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False

    @classmethod
    def of(cls, k) -> Orientation:
        """Orientation ``k`` (0..7) of :func:`orient`: mirror x if ``k >= 4``, then ``k % 4`` quarter turns."""
        return _BY_INDEX[check_int("orientation index", k, minimum=0, maximum=NUM_ORIENTATIONS - 1)]

    def apply(self, x, axes=(-2, -1)) -> np.ndarray:
        """``x`` in this orientation over ``axes`` (y, x; default the last two); a view when possible."""
        x = np.asarray(x)
        for axis, flip in zip(axes, (self.flip_y, self.flip_x)):
            if flip:
                x = np.flip(x, axis=axis)
        return np.swapaxes(x, *axes) if self.transpose else x

    def undo(self, x, axes=(-2, -1)) -> np.ndarray:
        """Inverse of :meth:`apply`: ``undo(apply(x)) == x``."""
        x = np.swapaxes(np.asarray(x), *axes) if self.transpose else np.asarray(x)
        for axis, flip in zip(axes, (self.flip_y, self.flip_x)):
            if flip:
                x = np.flip(x, axis=axis)
        return x

    def region(self, shape, region) -> tuple:
        """Where the part ``region`` (y, x slices) of an array of ``shape`` (h, w) lies after :meth:`apply`.

        Regions may reach past the array (mirrored context): orientations are
        flips and transposes, which commute with mirror reflection.
        """
        (h, w), (ys, xs) = shape, region
        ys = _flipped(ys, h) if self.flip_y else ys
        xs = _flipped(xs, w) if self.flip_x else xs
        return (xs, ys) if self.transpose else (ys, xs)

    def unregion(self, shape, region) -> tuple:
        """Inverse of :meth:`region`: ``shape`` (h, w) is the oriented array's, the result is in the original."""
        (h, w), (ys, xs) = shape, region
        if self.transpose:
            h, w, ys, xs = w, h, xs, ys
        ys = _flipped(ys, h) if self.flip_y else ys
        xs = _flipped(xs, w) if self.flip_x else xs
        return ys, xs


# orient()'s k: 0..3 quarter turns, 4..7 the same after mirroring x (a quarter turn is transpose(flip x))
_BY_INDEX = tuple(Orientation(*bits) for bits in (
    (False, False, False), (True, False, True), (False, True, True), (True, True, False),
    (False, False, True), (True, False, False), (False, True, False), (True, True, True),
))

#: The orientations in the order of the affinity predictor: the first 4 are the flips, all 8 add the transposes.
XY_ORIENTATIONS = tuple(Orientation(*bits) for bits in itertools.product((False, True), repeat=3))


def orient(x, k, axes=(-2, -1)):
    """Return orientation ``k`` (0-7) of ``x`` over ``axes`` (default last two).

    For channels-last batches ``(N, H, W, C)`` pass ``axes=(1, 2)``.
    ``k >= 4``: mirror (reverse ``axes[1]``) first, then ``np.rot90`` by
    ``k % 4``. Returns a view when possible.
    """
    return Orientation.of(k).apply(x, axes)


def unorient(x, k, axes=(-2, -1)):
    """Inverse of :func:`orient`: ``unorient(orient(x, k), k) == x``."""
    return Orientation.of(k).undo(x, axes)


def orientations(x, axes=(-2, -1)):
    """Return the list of the 8 orientations ``[orient(x, k) for k in 0..7]``."""
    return [orient(x, k, axes=axes) for k in range(NUM_ORIENTATIONS)]
