"""Blocks of a volume: a regular grid of cores from the origin, the last ones cut at the volume's end.

The tiling core of blockwise work (:mod:`fusionnet_keras.blockwise`) and of the
predictors that read a volume block by block (:mod:`fusionnet_keras.inference`):
the grid, the ``--block`` argument, and the one rule that turns a block of any
dtype into the network's float32 input (:func:`normalize_block`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int


@dataclass(frozen=True)
class Block:
    """One block: its number, its position in the grid and the region it writes (slices)."""

    id: int
    index: tuple
    region: tuple

    @property
    def start(self) -> tuple:
        return tuple(s.start for s in self.region)

    @property
    def shape(self) -> tuple:
        return tuple(s.stop - s.start for s in self.region)

    def grown(self, before, after, shape) -> tuple:
        """The region grown by ``before`` / ``after`` voxels per axis, inside ``[0, shape)``."""
        return tuple(slice(max(0, s.start - b), min(n, s.stop + a))
                     for s, b, a, n in zip(self.region, before, after, shape))

    def to_json(self) -> dict:
        return {"id": self.id, "index": list(self.index), "region": [[s.start, s.stop] for s in self.region]}


def parse_block(text, ndim: int = 3, name: str = "--block") -> tuple:
    """``"Z,Y,X"`` (or one number for every axis) -> a tuple of positive ints."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) == 1:
        values *= ndim
    if len(values) != ndim or min(values) < 1:
        raise FusionNetError(f"{name} must be {ndim} positive integers as Z,Y,X, got {text!r}")
    return values


def check_multiple(block, multiple, what: str = "the network's grid") -> tuple:
    """``block`` if every axis is a multiple of ``multiple``; else an error naming the nearest that is."""
    block, multiple = tuple(block), tuple(multiple)
    if any(b % m for b, m in zip(block, multiple)):
        nearest = ",".join(str(-(-b // m) * m) for b, m in zip(block, multiple))
        raise FusionNetError(
            f"block {','.join(map(str, block))} is not a multiple of {what} "
            f"{','.join(map(str, multiple))}; use e.g. --block {nearest}"
        )
    return block


class BlockGrid:
    """Blocks of ``block`` voxels covering ``shape`` on a grid from the origin.

    Args:
        shape: the volume's (spatial) shape.
        block: block shape per axis (capped at the volume's size).

    Examples:
        >>> grid = BlockGrid((5, 10), (4, 4))
        >>> len(grid), [b.region for b in grid][-1]
        (6, (slice(4, 5, None), slice(8, 10, None)))
    """

    def __init__(self, shape, block):
        self.shape = tuple(check_int("shape", s, 1) for s in shape)
        block = tuple(block)
        if len(block) != len(self.shape):
            raise FusionNetError(f"a block of {len(block)} axes does not fit a volume of shape {self.shape}")
        self.block = tuple(min(check_int("block", b, 1), s) for b, s in zip(block, self.shape))
        self.grid_shape = tuple(-(-s // b) for s, b in zip(self.shape, self.block))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape, dtype=np.int64))

    def __iter__(self):
        for i, index in enumerate(itertools.product(*(range(n) for n in self.grid_shape))):
            region = tuple(slice(k * b, min((k + 1) * b, s)) for k, b, s in zip(index, self.block, self.shape))
            yield Block(i, index, region)

    @property
    def block_size(self) -> int:
        """Voxels of a whole block (an upper bound of the ids one block can number)."""
        return int(np.prod(self.block, dtype=np.int64))


def normalize_block(block, name="the input") -> np.ndarray:
    """A block as float32 in [0, 1] by a rule that depends on the dtype only (the same for every block).

    Unsigned integers (and non-negative signed ones) are divided by their dtype's
    maximum, as :func:`fusionnet_keras.data.io.normalize` does; floats must
    already lie in [0, 1] (min-max scaling needs the whole volume).
    """
    from fusionnet_keras.data.io import normalize

    a = np.asarray(block)
    if a.dtype.kind == "f" and a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
        raise FusionNetError(f"{name} has float values outside [0, 1] (or NaN); blockwise prediction needs "
                             "values in [0, 1] or an integer type")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise FusionNetError(f"{name} has negative values; blockwise prediction needs unsigned data")
    return normalize(a)
