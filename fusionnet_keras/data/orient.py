"""The 8 orientations of a section: the dihedral group D4 (4 rotations x mirror).

Orientation ``k`` (0..7) rotates the last two axes by ``k % 4`` quarter turns
(counter-clockwise, as :func:`numpy.rot90`) and, for ``k >= 4``, first mirrors
the last axis (left-right flip). :func:`unorient` is the exact inverse, so
``unorient(orient(x, k), k) == x``. The paper (section 2.2, "data enrichment")
trains on all 8 orientations and averages the 8 turned-back predictions at test time.
"""

import numpy as np

from fusionnet_keras.utils.validate import check_int

NUM_ORIENTATIONS = 8
N_ORIENTATIONS = NUM_ORIENTATIONS


def orient(x, k, axes=(-2, -1)):
    """Return orientation ``k`` (0-7) of ``x`` over ``axes`` (default last two).

    For channels-last batches ``(N, H, W, C)`` pass ``axes=(1, 2)``.
    ``k >= 4``: mirror (reverse ``axes[1]``) first, then ``np.rot90`` by
    ``k % 4``. Returns a view when possible.
    """
    k = check_int("orientation index", k, minimum=0, maximum=NUM_ORIENTATIONS - 1)
    x = np.asarray(x)
    if k >= 4:
        x = np.flip(x, axis=axes[1])
    return np.rot90(x, k % 4, axes=axes)


def unorient(x, k, axes=(-2, -1)):
    """Inverse of :func:`orient`: ``unorient(orient(x, k), k) == x``."""
    k = check_int("orientation index", k, minimum=0, maximum=NUM_ORIENTATIONS - 1)
    x = np.rot90(np.asarray(x), -(k % 4), axes=axes)
    if k >= 4:
        x = np.flip(x, axis=axes[1])
    return x


def orientations(x, axes=(-2, -1)):
    """Return the list of the 8 orientations ``[orient(x, k) for k in 0..7]``."""
    return [orient(x, k, axes=axes) for k in range(NUM_ORIENTATIONS)]


