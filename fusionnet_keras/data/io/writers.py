"""Writing arrays as TIFF, HDF5 or zarr, atomically, never over an existing output without ``overwrite``.

Containers (an HDF5 file, a zarr group) may receive datasets from several
processes at once. A writer holds the container's lock
(:func:`fusionnet_keras.utils.locking.exclusive_lock`) while it adds its
datasets, so none drops another's; each dataset appears whole or not at all:

* HDF5: a new file is written under a temporary name and renamed into place;
  into an existing file each dataset is written in place under a temporary
  name (``.NAME.tmp-*``), then renamed to ``NAME`` (the other datasets are not
  rewritten). Temporaries left by a killed writer are removed by the next one.
* zarr: each array is written beside its group's folder and renamed into it.

A zarr output is an OME-Zarr image group (NGFF 0.5 in zarr 3, 0.4 inside a
zarr 2 group): level 0 is its array ``0``, the attributes carry the axes,
the voxel size as the level-0 scale and the provenance
(:mod:`fusionnet_keras.data.io.ome`); a segmentation is a label image.
HDF5 datasets carry ``resolution`` (z, y, x nm), TIFF files the ImageJ spacing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from fusionnet_keras.data.io.containers import open_h5, zarr_arrays, zarr_is_group
from fusionnet_keras.data.io.paths import (
    _CHUNK_XY,
    _WRITE_HINT,
    DEFAULT_H5_DATASET,
    HDF5_EXTS,
    TIFF_EXTS,
    ZARR_EXTS,
    _display,
    parse_path,
    user_errors,
)
from fusionnet_keras.errors import FusionNetError, OutputExistsError
from fusionnet_keras.utils.atomic import (
    atomic_dir,
    atomic_path,
    check_writable_parent,
    is_temporary_name,
    remove_stale_temporaries,
    temporary_name,
)
from fusionnet_keras.utils.locking import exclusive_lock


def _output_format(path: Path, display: str) -> str:
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTS:
        return "tiff"
    if suffix in HDF5_EXTS:
        return "hdf5"
    if suffix in ZARR_EXTS:
        return "zarr"
    shown = f"'{suffix}'" if suffix else "(no extension)"
    raise FusionNetError(f"unsupported output format {shown}: {display}; {_WRITE_HINT}")


def _output_exists(path: Path, key: str | None, fmt: str, display: str) -> bool:
    if fmt == "tiff":
        return path.exists() or path.is_symlink()
    if fmt == "zarr":
        if not path.exists():
            return False
        with exclusive_lock(path):  # not while another writer is creating the group
            return _zarr_output_exists(path, key, display)
    # hdf5: the output is the dataset inside the file
    if not path.exists():
        return False
    if path.is_dir():
        raise FusionNetError(f"output is a directory, not an HDF5 file: {path}")
    with user_errors(f"cannot read existing output {path}"), open_h5(path, "r") as f:
        return _h5_target_exists(f, key or DEFAULT_H5_DATASET, display)


def _h5_target_exists(f, key: str, display: str) -> bool:
    """Whether the dataset ``key`` exists in the open HDF5 file ``f``; an error if it is a group."""
    import h5py

    if key not in f:
        return False
    if not isinstance(f[key], h5py.Dataset):
        raise FusionNetError(f"output {display} is an HDF5 group, not a dataset; name a dataset inside it")
    return True


def _zarr_output_exists(path: Path, key: str | None, display: str) -> bool:
    """Whether the zarr array ``path[:key]`` exists; an error if it is a group (replacing it would
    drop every array in it) or if ``path`` is an array and ``key`` names something inside it."""
    target = path / key if key else path
    if not (target.exists() or target.is_symlink()):
        if key and path.exists() and not _zarr_node_is_group(path, display):
            raise FusionNetError(f"{path} is a zarr array, not a group; cannot add '{key}'")
        return False
    if _zarr_node_is_group(target, display):
        import zarr

        from fusionnet_keras.data.io.ome import is_ome_group

        with user_errors(f"cannot read existing output {display}"):
            if is_ome_group(zarr.open_group(str(target), mode="r")):  # an image this package (or another) wrote
                return True

        with user_errors(f"cannot read existing output {display}"):
            arrays = zarr_arrays(zarr.open_group(str(target), mode="r"))
        shown = ", ".join(arrays[:5]) + (", ..." if len(arrays) > 5 else "") if arrays else "none"
        raise FusionNetError(f"output {display} is a zarr group (arrays: {shown}); name an array as {path}:NAME")
    return True


def _zarr_node_is_group(path: Path, display: str) -> bool:
    import zarr

    if not path.is_dir():
        raise FusionNetError(f"output {display} exists and is not a zarr store")
    with user_errors(f"cannot read existing output {display}"):
        return zarr_is_group(zarr.open(store=str(path), mode="r"))


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written; call before expensive work starts.

    Raises :class:`OutputExistsError` if the output exists and ``overwrite`` is
    false (for HDF5 the output is the dataset, default ``data``; other datasets
    in the file are kept), and :class:`FusionNetError` for unsupported formats or
    a parent that is not a writable directory. Returns the output file/dir path.
    """
    file, key = parse_path(path)
    display = _display(file, key)
    fmt = _output_format(file, display)
    if fmt == "hdf5" and key is None:
        display = _display(file, DEFAULT_H5_DATASET)
    if _output_exists(file, key, fmt, display):
        if not overwrite:
            raise OutputExistsError(f"output exists: {display} (use --overwrite)")
        if fmt == "tiff" and file.is_dir():
            raise FusionNetError(f"output is a directory, not a TIFF file: {file}")
    check_writable_parent(file)
    return file


def convert_dtype(arr: np.ndarray, dtype, display: str) -> np.ndarray:
    if dtype is None:
        return arr
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise FusionNetError(f"unknown output dtype {dtype!r} for {display}") from None
    if target == arr.dtype:
        return arr
    if target.kind not in "biuf":
        raise FusionNetError(f"unsupported output dtype {target} for {display}")
    src = arr.dtype.kind
    if target.kind == "f":
        return arr.astype(target)
    if target.kind == "b":
        return arr.astype(bool)
    if src in "fb":
        if target.kind != "u":
            raise FusionNetError(f"cannot convert {arr.dtype} to {target} for {display}; use uint8, uint16 or float32")
        a = arr.astype(np.float64) if src == "b" else arr
        if src == "f" and not np.isfinite(a).all():
            raise FusionNetError(f"cannot convert to {target} for {display}: array contains NaN or infinite values")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise FusionNetError(
                f"cannot convert to {target} for {display}: values outside [0, 1] "
                f"(min {float(a.min()):g}, max {float(a.max()):g})"
            )
        top = np.iinfo(target).max
        return np.round(a.astype(np.float64) * top).astype(target)
    info = np.iinfo(target)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise FusionNetError(
            f"cannot convert to {target} for {display}: values outside [{info.min}, {info.max}]"
        )
    return arr.astype(target)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 1:
        return (max(1, min(shape[0], 1 << 16)),)
    lead = (1,) * (len(shape) - 2)
    return lead + (min(shape[-2], _CHUNK_XY), min(shape[-1], _CHUNK_XY))


def _write_tiff(path: Path, arr: np.ndarray, meta=None) -> None:
    import tifffile

    from fusionnet_keras.data.io.ome import tiff_options

    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    kwargs = {"photometric": "minisblack"} if arr.ndim >= 2 else {}
    kwargs.update(tiff_options(meta, arr))
    with atomic_path(path) as tmp:
        tifffile.imwrite(str(tmp), np.ascontiguousarray(arr), bigtiff=arr.nbytes > 2**31, **kwargs)


def _h5_create(f, key: str, arr: np.ndarray, meta=None):
    from fusionnet_keras.data.io.ome import h5_attributes

    ds = f.create_dataset(key, data=arr, chunks=_chunks(arr.shape), compression="gzip",
                          compression_opts=4, shuffle=True)
    ds.attrs.update(h5_attributes(meta))
    return ds


def _h5_remove_temporaries(f) -> None:
    """Delete the temporary datasets a killed writer left in ``f`` (the caller holds the lock)."""
    stale = []
    f.visit(lambda name: stale.append(name) if is_temporary_name(name.rpartition("/")[2]) else None)
    for name in stale:
        if name in f:
            del f[name]


def _write_hdf5(path: Path, datasets: dict, overwrite: bool, meta=None) -> None:
    """Write ``{key: array}`` into the HDF5 file ``path`` under its lock (see the module docstring)."""
    import h5py

    with exclusive_lock(path):
        if not path.exists():
            with atomic_path(path) as tmp, h5py.File(str(tmp), "w") as f:
                for key, arr in datasets.items():
                    _h5_create(f, key, arr, meta)
            return
        with open_h5(path, "r+") as f:
            _h5_remove_temporaries(f)
            for key in datasets:  # another writer may have added it since check_output
                if _h5_target_exists(f, key, f"{path}:{key}") and not overwrite:
                    raise OutputExistsError(f"output exists: {path}:{key} (use --overwrite)")
            temporaries = {}
            try:
                for key, arr in datasets.items():
                    group, _, name = key.rpartition("/")
                    temporaries[key] = f"{group}/{temporary_name(name)}" if group else temporary_name(name)
                    _h5_create(f, temporaries[key], arr, meta)
                f.flush()
            except BaseException:  # e.g. a full disk: leave the file as it was (space is not reclaimed)
                with contextlib.suppress(Exception):
                    _h5_remove_temporaries(f)
                raise
            for key, tmp in temporaries.items():
                if key in f:
                    del f[key]
                f.move(tmp, key)


def _image_meta(arr: np.ndarray, meta):
    """The :class:`~fusionnet_keras.data.io.ome.ImageMeta` of a zarr output (default: an image, a 4-D array's
    first axis its channels), or None for an array an OME-Zarr image cannot hold (then written plain)."""
    from fusionnet_keras.data.io.ome import ImageMeta

    if meta is None:
        meta = ImageMeta(channels=arr.ndim == 4)
        fits = 2 <= arr.ndim - meta.channels <= 3
        return meta if fits else None
    return meta


def _zarr_create_image(store: Path, arr: np.ndarray, meta, zarr_format: int | None = None):
    """An OME-Zarr image group at ``store`` (a new folder) with ``arr`` as level 0 (array ``0``)."""
    import zarr

    from fusionnet_keras.data.io.ome import array_options, write_attributes

    meta = _image_meta(arr, meta)
    if meta is None:
        return _zarr_create(store, arr, zarr_format)
    group = zarr.open_group(str(store), mode="w", zarr_format=zarr_format or 3)
    z = group.create_array("0", shape=arr.shape, dtype=arr.dtype, chunks=_chunks(arr.shape),
                           **array_options(group, arr.ndim, meta))
    z[...] = arr
    write_attributes(group, arr.ndim, meta)
    return group


def _zarr_create(store: Path, arr: np.ndarray, zarr_format: int | None = None):
    import zarr

    chunks = _chunks(arr.shape)
    if hasattr(zarr, "create_array"):  # zarr v3
        kwargs = {} if zarr_format is None else {"zarr_format": zarr_format}
        z = zarr.create_array(store=str(store), shape=arr.shape, dtype=arr.dtype, chunks=chunks, **kwargs)
    else:  # zarr v2
        z = zarr.open_array(str(store), mode="w", shape=arr.shape, dtype=arr.dtype, chunks=chunks)
    z[...] = arr
    return z


def _write_zarr(path: Path, arrays: dict, overwrite: bool, meta=None) -> None:
    """Write ``{key: array}`` as OME-Zarr images: ``{None: array}`` is the store ``path`` itself,
    other keys are images in the group ``path`` (created if needed), each written beside its
    final folder and renamed into it, under the group's lock."""
    import zarr

    with exclusive_lock(path):
        for key, arr in arrays.items():
            display = _display(path, key)
            if _zarr_output_exists(path, key, display) and not overwrite:
                raise OutputExistsError(f"output exists: {display} (use --overwrite)")
            if key is None:
                with atomic_dir(path) as tmp:
                    _zarr_create_image(tmp, arr, meta)
                continue
            root = zarr.open_group(str(path), mode="a")
            zarr_format = getattr(getattr(root, "metadata", None), "zarr_format", 2)
            parent_key = key.rpartition("/")[0]
            if parent_key:
                root.require_group(parent_key)
            remove_stale_temporaries((path / key).parent)
            with atomic_dir(path / key) as tmp:
                _zarr_create_image(tmp, arr, meta, zarr_format=zarr_format)


def write_volume(path: str | os.PathLike, array, overwrite: bool = False, dtype=None, meta=None) -> Path:
    """Write ``array`` atomically as TIFF, HDF5 (``file.h5[:dataset]``) or zarr.

    ``dtype`` converts before writing: a float (or bool) array in [0, 1] becomes
    ``round(255 * x)`` for ``"uint8"`` (``round(65535 * x)`` for ``"uint16"``);
    integers are range-checked; ``"float32"`` casts. ``None`` keeps the dtype
    (bool is stored as uint8 0/1 in TIFF). HDF5 datasets (default ``data``) are
    gzip compressed and zarr arrays are chunked by section. Parent directories
    are created. Raises :class:`OutputExistsError` if the output exists and
    ``overwrite`` is false. Returns the path of the written file/directory.

    ``meta`` (:class:`~fusionnet_keras.data.io.ome.ImageMeta`): the voxel size,
    label or channel axes and provenance written with the data (zarr: an
    OME-Zarr image group, the array its level ``0``; HDF5: ``resolution``;
    TIFF: ImageJ spacing). None: an image of unknown voxel size.
    """
    file, key = parse_path(path)
    display = _display(file, key)
    fmt = _output_format(file, display)
    check_output(path, overwrite)
    arr = np.asarray(array)
    if arr.dtype.names or arr.dtype.kind not in "biuf":
        raise FusionNetError(f"cannot write data type {arr.dtype} to {display}")
    if arr.ndim == 0 or arr.size == 0:
        raise FusionNetError(f"refusing to write an empty array (shape {arr.shape}) to {display}")
    arr = convert_dtype(arr, dtype, display)
    with user_errors(f"cannot write {display}"):
        file.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "tiff":
            _write_tiff(file, arr, meta)
        elif fmt == "hdf5":
            _write_hdf5(file, {key or DEFAULT_H5_DATASET: arr}, overwrite, meta)
        else:
            _write_zarr(file, {key: arr}, overwrite, meta)
    return file


def check_outputs(path: str | os.PathLike, names, overwrite: bool = False) -> list[str]:
    """Check that datasets ``names`` can be written into the HDF5 file or zarr group ``path``.

    Returns their keys inside the container (``group/name`` when ``path`` names
    a group). Raises like :func:`check_output`, and for a path that is not an
    HDF5 file or zarr group.
    """
    file, key = parse_path(path)
    display = _display(file, key)
    if _output_format(file, display) not in ("hdf5", "zarr"):
        raise FusionNetError(f"several volumes need an HDF5 file or a zarr group, not {display}")
    if not names:
        raise FusionNetError(f"nothing to write to {display}")
    targets = [f"{key}/{name}" if key else str(name) for name in names]
    for target in targets:
        check_output(f"{file}:{target}", overwrite)
    return targets


def write_volumes(path: str | os.PathLike, arrays: dict, overwrite: bool = False, meta=None) -> Path:
    """Write several arrays as the datasets of one HDF5 file or zarr group, each named by its key.

    ``path`` is ``file.h5``, ``file.h5:group``, ``x.zarr`` or ``x.zarr:group``.
    Every target dataset is checked first (none is overwritten without
    ``overwrite``; other datasets of the file are kept). Each dataset is
    written atomically under the container's lock (see the module docstring).
    ``meta`` as for :func:`write_volume`, for every array.
    """
    file, key = parse_path(path)
    display = _display(file, key)
    fmt = _output_format(file, display)
    targets = check_outputs(path, list(arrays), overwrite)
    names = {target: np.asarray(a) for target, a in zip(targets, arrays.values())}
    for name, arr in names.items():
        if arr.dtype.names or arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.size == 0:
            raise FusionNetError(f"cannot write an array of shape {arr.shape} and type {arr.dtype} to {file}:{name}")

    with user_errors(f"cannot write {display}"):
        file.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "hdf5":
            _write_hdf5(file, names, overwrite, meta)
        else:
            _write_zarr(file, names, overwrite, meta)
    return file
