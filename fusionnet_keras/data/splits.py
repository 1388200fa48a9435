"""Section ranges and k-fold splits of a stack."""

from __future__ import annotations

import re

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int


# --------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------
def kfold_splits(n, k=3, seed=0):
    """Seeded k-fold split of ``n`` sections: list of ``(train_idx, val_idx)``.

    The indices are shuffled with ``numpy.random.default_rng(seed)`` and cut
    into ``k`` folds of near-equal size; each index is in exactly one
    validation fold. Index arrays are sorted int64.
    """
    n = check_int("number of sections", n, minimum=0)
    k = check_int("k (folds of k-fold cross-validation)", k, minimum=2)
    if n < k:
        raise FusionNetError(
            f"need at least {k} sections for {k}-fold cross-validation, got {n}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    splits = []
    for i, fold in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        splits.append((np.sort(train).astype(np.int64), np.sort(fold).astype(np.int64)))
    return splits


_RANGE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def section_range(spec, n):
    """Parse a 1-based inclusive section spec into 0-based indices.

    ``"1-20"`` -> ``[0, ..., 19]``; single numbers and comma-separated parts
    (``"1-10,15,21-30"``) are accepted. Indices keep the given order; parts
    out of ``1..n``, reversed ranges and repeated sections raise
    :class:`FusionNetError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise FusionNetError(f"invalid section range {spec!r}; expected e.g. '1-20'")
    indices = []
    for part in spec.split(","):
        match = _RANGE_PART.match(part)
        if not match:
            raise FusionNetError(f"invalid section range {spec!r}; expected e.g. '1-20'")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if start > end:
            raise FusionNetError(f"invalid section range {spec!r}: {start} > {end}")
        if start < 1 or end > n:
            raise FusionNetError(
                f"section range {spec!r} is out of range: the stack has {n} sections (1-{n})"
            )
        indices.extend(range(start - 1, end))
    if len(set(indices)) != len(indices):
        raise FusionNetError(f"section range {spec!r} lists a section more than once")
    return np.asarray(indices, dtype=np.int64)

