"""Morphology of segmented nuclei (paper section 4.2, Figs. 9 and 10).

For every nucleus of a 3-D segmentation this module measures

* ``volume_um3``: voxel count x voxel volume;
* ``surface_area_um2``: area of a marching-cubes mesh (``skimage.measure``,
  level 0.5, with the anisotropic voxel size as ``spacing``) of the binary mask
  of the nucleus, zero-padded around its bounding box, so a nucleus cut by the
  volume border is closed by a flat cap there (see ``touches_border``). The mask
  is first smoothed with a Gaussian of ``smooth_sigma`` = 0.5 voxel per axis:
  this keeps flat faces in place but removes most of the staircase error of
  marching cubes on raw binary voxels (which over-estimates a sphere's area by
  ~8%; with the smoothing a digital sphere of radius 20 voxels is within ~4%
  and gets sphericity ~0.96; a cube gets ~0.82 instead of 0.806 because its
  edges are bevelled);
* ``sphericity``: pi^(1/3) (6 V)^(2/3) / A (1 for a sphere, ~0.806 for a cube).
  It is unreliable for objects of a few hundred voxels or fewer (the mesh of
  a single voxel gives ~2.8), which :func:`flag_outliers` flags;
* the centroid, in voxels and in um (voxel index x voxel size), and the
  bounding box (``bbox_z0`` ... ``bbox_x1``: voxel ranges ``[z0, z1)``).

Every measure is gathered from *parts* of the volume
(:func:`~fusionnet_keras.evaluation.mesh_parts.object_parts`):
the whole volume is one part, a volume larger than memory is cut into blocks
(:mod:`fusionnet_keras.blockwise.morphology`). A part counts the voxels it owns
(volume, centroid sums, bounding box: exact integers) and the marching-cubes
cells it owns (each part owns the cells whose lowest corner is its voxel; the
first and last parts along an axis also the cells outside the volume), on the
smoothed mask computed with the Gaussian's radius of context, so its triangles
are exactly those of the whole volume's mesh in these cells: the area of an
object cut by blocks is the sum of its parts, up to float round-off.

Units: ``voxel_size`` is given in **nanometres**, ``(Z, Y, X)`` order (e.g. the
paper's ``(60, 56.4, 56.4)``); every output is in **micrometres** (um, um^2, um^3).

Input is an instance volume (each nucleus one positive id, 0 = background) or a
binary mask, which is split into 3-D connected components (26-connectivity by
default, 6 with ``connectivity=6``). ``binary=None`` decides automatically: a
boolean array, or an integer array whose values are only 0 and 1, is binary.

The morphology groups are found with K-means (:func:`cluster`) on the
standardised features (volume, surface area, sphericity), fitted on all whole
nuclei as the 2016 paper does (its Fig. 10: the outliers form their own
"magenta cluster" of large volumes and areas); :func:`flag_outliers` is the
project's robust z-score pre-flagging, which :func:`annotate` can also leave
out of the fit (``exclude_outliers=True``; not the paper's method).
:mod:`~fusionnet_keras.evaluation.population`: `silhouettes` helps to choose k, `symmetry` is the paper's
left-right check: the feature distributions of the nuclei on the two sides of
the midline (two-sample Kolmogorov-Smirnov tests). :func:`write_csv` writes the table,
:func:`plot_overlay` draws Fig. 9 (segmentation over the EM in a transverse x-y
and a horizontal x-z section, nuclei coloured by sphericity, blue -> red) and
:func:`plot_features` Fig. 10 (volume, area and sphericity against the
centroid's horizontal coordinate x, coloured by cluster). Figures use
matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.mesh_parts import (  # noqa: F401 (re-exported: the blockwise measurement's parts)
    PART_KEYS,
    combine_parts,
    margins,
    object_parts,
    part_regions,
    read_part,
)
from fusionnet_keras.utils.atomic import atomic_path, check_overwrite

MEASURE_FIELDS = [
    "label",
    "n_voxels",
    "volume_um3",
    "surface_area_um2",
    "sphericity",
    "centroid_z_um",
    "centroid_y_um",
    "centroid_x_um",
    "centroid_z_vox",
    "centroid_y_vox",
    "centroid_x_vox",
    "touches_border",
    "bbox_z0",
    "bbox_y0",
    "bbox_x0",
    "bbox_z1",
    "bbox_y1",
    "bbox_x1",
]
"""Keys of every record returned by :func:`measure_nuclei` (bounding box: ``[z0, z1)`` voxels, ...)."""

CSV_FIELDS = MEASURE_FIELDS + ["cluster", "outlier"]
"""Columns of :func:`write_csv` (``cluster``/``outlier`` empty when not annotated)."""

FEATURES = ("volume_um3", "surface_area_um2", "sphericity")
"""Features used for clustering, in this column order."""


# --------------------------------------------------------------------------- input


def check_voxel_size(voxel_size) -> np.ndarray:
    """Return ``voxel_size`` (nm, Z, Y, X) as a float array; FusionNetError unless 3 positive numbers."""
    try:
        vs = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FusionNetError(f"voxel_size must be 3 positive numbers in nm (Z, Y, X), got {voxel_size!r}") from None
    if vs.size != 3 or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise FusionNetError(f"voxel_size must be 3 positive numbers in nm (Z, Y, X), got {voxel_size!r}")
    return vs


def is_binary_mask(arr) -> bool:
    """Whether an integer/boolean volume is a mask: bool, or a single non-zero value (0/1, 0/255)."""
    arr = np.asarray(arr)
    if arr.dtype == bool or arr.size == 0:
        return True
    top = arr.max()
    return bool(top <= 1 or not np.any((arr != 0) & (arr != top)))


def instance_labels(labels, binary: bool | None = None, connectivity: int = 26) -> np.ndarray:
    """The instance volume that :func:`measure_nuclei` measures.

    A binary input (see the module doc for ``binary=None``) becomes its 3-D
    connected components (``connectivity`` 6 or 26), numbered in scan order;
    an instance input is returned unchanged (as an integer array).
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise FusionNetError(f"labels must be a 3-D (Z, Y, X) volume, got {arr.ndim} dimensions")
    if connectivity not in (6, 26):
        raise FusionNetError(f"connectivity must be 6 or 26, got {connectivity}")
    if arr.dtype == bool:
        is_binary = True if binary is None else bool(binary)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() < 0:
            raise FusionNetError("labels must not be negative")
        is_binary = bool(arr.size == 0 or arr.max() <= 1) if binary is None else bool(binary)
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or arr.min() < 0):
            raise FusionNetError("labels must hold non-negative integers (float labels must be whole numbers)")
        arr = arr.astype(np.int64)
        is_binary = bool(arr.size == 0 or arr.max() <= 1) if binary is None else bool(binary)
    else:
        raise FusionNetError(f"labels must be an integer or boolean array, got dtype {arr.dtype}")
    if is_binary:
        structure = ndi.generate_binary_structure(3, 1 if connectivity == 6 else 3)
        out, _ = ndi.label(arr != 0, structure=structure)
        return out
    return arr


# ------------------------------------------------------------------------ measures


def sphericity(volume, area):
    """pi^(1/3) (6 V)^(2/3) / A (any consistent units; NaN where A is 0)."""
    volume = np.asarray(volume, dtype=float)
    area = np.asarray(area, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(area > 0, math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / np.where(area > 0, area, 1), np.nan)
    return out[()] if out.ndim == 0 else out


def part_records(combined: dict, shape, voxel_size, min_voxels: int = 1) -> list[dict]:
    """The records of :func:`measure_nuclei` from the combined parts (:func:`combine_parts`) of a volume of ``shape``."""
    vs_um = check_voxel_size(voxel_size) / 1000.0
    voxel_volume = float(np.prod(vs_um))
    records = []
    shape = np.asarray(shape)
    for i in range(combined["label"].size):
        n = int(combined["n"][i])
        if n < max(int(min_voxels), 1):
            continue
        cent = combined["sum"][i] / n
        lo, hi = combined["lo"][i], combined["hi"][i]
        area = float(combined["area"][i] if combined["peak"][i] > 0.5 else combined["area_binary"][i])
        volume = n * voxel_volume
        record = {
            "label": int(combined["label"][i]),
            "n_voxels": n,
            "volume_um3": volume,
            "surface_area_um2": area,
            "sphericity": float(sphericity(volume, area)),
            **{f"centroid_{a}_um": float(c * v) for a, c, v in zip("zyx", cent, vs_um)},
            **{f"centroid_{a}_vox": float(c) for a, c in zip("zyx", cent)},
            "touches_border": bool(np.any(lo == 0) or np.any(hi == shape)),
        }
        record.update({f"bbox_{a}0": int(v) for a, v in zip("zyx", lo)})
        record.update({f"bbox_{a}1": int(v) for a, v in zip("zyx", hi)})
        records.append(record)
    return records


def measure_nuclei(labels, voxel_size, *, binary: bool | None = None, connectivity: int = 26,
                   min_voxels: int = 1, smooth_sigma: float = 0.5) -> list[dict]:
    """Measure every nucleus of ``labels``.

    Args:
        labels: (Z, Y, X) instance or binary volume (see :func:`instance_labels`).
        voxel_size: (Z, Y, X) voxel size in nm.
        binary: whether the input is a binary mask to split (module doc).
        connectivity: the connectivity that splits a binary input (module doc).
        min_voxels: skip objects with fewer voxels.
        smooth_sigma: Gaussian smoothing (in voxels, per axis) of the binary mask
            before marching cubes (module doc); 0 = the raw binary mask.

    Returns:
        One dict per nucleus, ordered by label, with the keys of
            :data:`MEASURE_FIELDS` (``label`` is the id in ``labels``, or the
            connected-component id for binary input; ``touches_border`` is True when
            the nucleus reaches the volume border, so its shape is truncated). An
            empty volume gives ``[]``.

    The whole volume is one part (:func:`object_parts`); the blockwise
    measurement gathers the same records from blocks.
    """
    vs_nm = check_voxel_size(voxel_size)
    if not (np.isfinite(smooth_sigma) and smooth_sigma >= 0):
        raise FusionNetError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
    inst = instance_labels(labels, binary=binary, connectivity=connectivity)
    if inst.size == 0 or not inst.any():
        return []
    whole = tuple(slice(0, n) for n in inst.shape)
    read, points = part_regions(whole, inst.shape, smooth_sigma)
    local = lambda region: tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, read))  # noqa: E731
    parts = object_parts(read_part(inst, read, inst.shape), [r.start for r in read], local(whole), local(points),
                         vs_nm / 1000.0, float(smooth_sigma))
    return part_records(combine_parts([parts]), inst.shape, vs_nm, min_voxels)


# ---------------------------------------------------------------------- analysis


def feature_matrix(records) -> np.ndarray:
    """(N, 3) array of :data:`FEATURES` (volume um^3, surface area um^2, sphericity)."""
    if isinstance(records, np.ndarray):
        arr = np.asarray(records, dtype=float)
    else:
        try:
            arr = np.array([[float(r[f]) for f in FEATURES] for r in records], dtype=float)
        except KeyError as exc:
            raise FusionNetError(f"nucleus record lacks the feature {exc.args[0]!r}") from None
    arr = arr.reshape(-1, 3) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise FusionNetError(f"features must be an (N, 3) array (volume, area, sphericity), got shape {arr.shape}")
    return arr


def cluster(features, k: int = 3, seed: int = 0, exclude=None) -> np.ndarray:
    """K-means cluster ids (0..k-1) of nuclei.

    ``features`` are records or an (N, 3) array (volume, surface area,
    sphericity). They are standardised (zero mean, unit variance per feature;
    constant features are left at 0) and clustered by scikit-learn's KMeans with
    ``random_state=seed`` and ``n_init=10``, so the result is deterministic for a
    seed. Clusters are renumbered by increasing mean volume (0 = smallest nuclei).
    Rows where ``exclude`` (a boolean mask, e.g. outliers) is True are left out of
    the fit and then assigned to the nearest centre. With fewer fitting rows than
    ``k``, ``k`` is reduced to that number; no rows gives an empty array.
    """
    from sklearn.cluster import KMeans

    x = feature_matrix(features)
    if int(k) < 1:
        raise FusionNetError(f"the number of clusters must be >= 1, got {k}")
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(x)):
        raise FusionNetError("features must be finite numbers (remove objects with NaN sphericity)")
    fit = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, dtype=bool).reshape(-1)
    if fit.shape != (n,):
        raise FusionNetError(f"exclude must have one entry per nucleus ({n}), got {fit.size}")
    if not fit.any():
        fit[:] = True
    mean = x[fit].mean(axis=0)
    std = x[fit].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    kk = min(int(k), int(len(np.unique(z[fit], axis=0))))
    km = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(z[fit])
    raw = km.predict(z)
    order = np.argsort([x[raw == c, 0].mean() if np.any(raw == c) else np.inf for c in range(kk)], kind="stable")
    remap = np.empty(kk, dtype=np.int64)
    remap[order] = np.arange(kk)
    return remap[raw]


def flag_outliers(features, z_max: float = 3.5, min_sphericity: float = 0.6,
                  max_sphericity: float = 1.0) -> np.ndarray:
    """Boolean mask of outlying nuclei.

    A nucleus is an outlier when its robust z-score (0.6745 (x - median) / MAD,
    Iglewicz-Hoaglin) of volume or of surface area exceeds ``z_max`` in absolute
    value (a feature with MAD 0 flags nothing), or its sphericity is below
    ``min_sphericity`` (merged or badly split nuclei), above ``max_sphericity``
    (physically impossible: tiny objects whose mesh is too coarse) or not finite.
    """
    x = feature_matrix(features)
    out = np.zeros(len(x), dtype=bool)
    if len(x) == 0:
        return out
    for col in (0, 1):
        v = x[:, col]
        med = np.median(v)
        mad = np.median(np.abs(v - med))
        if mad > 0:
            out |= np.abs(0.6745 * (v - med) / mad) > z_max
    s = x[:, 2]
    out |= ~np.isfinite(s) | (s < min_sphericity) | (s > max_sphericity)
    return out


def annotate(records: list[dict], k: int = 3, seed: int = 0, exclude_border: bool = True,
             exclude_outliers: bool = False, **outlier_kwargs) -> list[dict]:
    """Add ``outlier`` (:func:`flag_outliers`) and ``cluster`` to every record, in place.

    K-means (:func:`cluster`) is fitted on all whole nuclei, as the 2016 paper
    does (the outliers then form their own cluster): with ``exclude_border``
    (default) the nuclei cut by the volume border (their volume and shape are
    truncated) are left out of the fit as long as at least ``k`` nuclei remain.
    ``exclude_outliers`` also leaves the flagged outliers out of the fit (the
    project's pre-flagging; not the paper's method). Nuclei left out of the fit
    get the cluster of the nearest centre. Returns ``records``.
    """
    if not records:
        return records
    x = feature_matrix(records)
    out = flag_outliers(x, **outlier_kwargs)
    ok = np.all(np.isfinite(x), axis=1)
    ids = np.full(len(x), -1, dtype=np.int64)
    if ok.any():
        skip = out[ok] if exclude_outliers else np.zeros(int(ok.sum()), bool)
        if exclude_border:
            border = np.array([bool(r.get("touches_border")) for r in records])[ok]
            if np.count_nonzero(~(skip | border)) >= k:
                skip = skip | border
        ids[ok] = cluster(x[ok], k=k, seed=seed, exclude=skip)
    for r, o, c in zip(records, out, ids):
        r["outlier"] = bool(o)
        r["cluster"] = int(c)
    return records


def analyze_nuclei(labels, voxel_size, k: int = 3, seed: int = 0, exclude_outliers: bool = False,
                   **kwargs) -> list[dict]:
    """:func:`measure_nuclei` then :func:`annotate` (``kwargs`` go to measure_nuclei)."""
    return annotate(measure_nuclei(labels, voxel_size, **kwargs), k=k, seed=seed, exclude_outliers=exclude_outliers)


def whole(records) -> list[dict]:
    """The nuclei not cut by the volume border (their size and shape are complete)."""
    return [r for r in records if not r.get("touches_border")]


# -------------------------------------------------------------------------- output


def write_csv(records, path, overwrite: bool = True) -> Path:
    """Write ``records`` as CSV with the :data:`CSV_FIELDS` header (atomically: a
    temporary file in the same folder, then :func:`os.replace`). Missing values
    (e.g. ``cluster`` before :func:`annotate`) are empty; extra keys are ignored.
    No records gives a header-only file."""
    path = check_overwrite(path, overwrite)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow({f: _fmt(r.get(f, "")) for f in CSV_FIELDS})
    return path


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v
