"""Padding and tile placement for tiled inference."""

from __future__ import annotations

import math

import numpy as np

from fusionnet_keras.errors import FusionNetError


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

