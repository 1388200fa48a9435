"""The 8 orientations of a section: the dihedral group D4 (4 rotations x mirror).

Orientation ``k`` (0..7) rotates the last two axes by ``k % 4`` quarter turns
(counter-clockwise, as :func:`numpy.rot90`) and, for ``k >= 4``, first mirrors
the last axis (left-right flip). :func:`unorient` is the exact inverse, so
``unorient(orient(x, k), k) == x``. The paper (section 2.2, "data enrichment")
trains on all 8 orientations and averages the 8 turned-back predictions at test time.
"""

import numpy as np

N_ORIENTATIONS = 8


def orient(x: np.ndarray, k: int, axes=(-2, -1)) -> np.ndarray:
    """Return orientation ``k`` of ``x`` over ``axes`` (default: the last two)."""
    if not 0 <= k < N_ORIENTATIONS:
        raise ValueError(f"orientation must be in 0..7, got {k}")
    if k >= 4:
        x = np.flip(x, axis=axes[1])
    return np.rot90(x, k % 4, axes=axes)


def unorient(x: np.ndarray, k: int, axes=(-2, -1)) -> np.ndarray:
    """Undo :func:`orient`: ``unorient(orient(x, k), k) == x``."""
    if not 0 <= k < N_ORIENTATIONS:
        raise ValueError(f"orientation must be in 0..7, got {k}")
    x = np.rot90(x, -(k % 4), axes=axes)
    if k >= 4:
        x = np.flip(x, axis=axes[1])
    return x
