"""Lazily read volumes: TIFF, PNG, section folders, HDF5 and zarr behind one array-like :class:`Volume`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionnet_keras.data.io.paths import (
    _READ_HINT,
    PNG_EXTS,
    READ_EXTS,
    SECTION_EXTS,
    TIFF_EXTS,
    ZARR_EXTS,
    _display,
    natural_sort_key,
    parse_path,
    user_errors,
)
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.quiet import quiet_tifffile as _quiet_tifffile


class Volume:
    """A lazily read array: ``.shape``, ``.dtype`` and numpy-style slicing.

    Slicing along the first axis (``vol[z0:z1]``, ``vol[i]``, ``vol[[1, 5]]``)
    reads only the requested sections from disk; the remaining indices are
    applied to the sections read. 2-D (and lower) volumes are read whole.
    ``np.asarray(vol)`` or :meth:`read` reads everything. Close the volume (or
    use it as a context manager) to release its file handle.
    """

    #: format name: "tiff", "png", "dir", "hdf5" or "zarr"
    format: str = "array"

    def __init__(self, path, shape, dtype, *, display=None, channel_axis=None):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        #: Index of a colour/sample axis known from file metadata, else None.
        self.channel_axis = channel_axis
        self.name = display or str(path)

    # -- array-like properties -------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d volume")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} shape={self.shape} dtype={self.dtype}>"

    @property
    def attributes(self) -> dict:
        """The further attributes written with the volume
        (:attr:`fusionnet_keras.data.io.ome.ImageMeta.attributes`, e.g. the affinity offsets): those of an
        HDF5 dataset, of a zarr array or of the OME-Zarr image group it is level 0 of, without the image
        metadata (:func:`~fusionnet_keras.data.io.ome.stored_attributes`); empty for the other formats."""
        return {}

    # -- resource handling -----------------------------------------------------
    def close(self) -> None:
        """Release file handles (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading -----------------------------------------------------------------
    def _read_all(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _read_range(self, z0: int, z1: int) -> np.ndarray:
        return np.asarray(self._read_all())[z0:z1]

    def _read_sections(self, indices: Sequence[int]) -> np.ndarray:
        indices = [int(i) for i in indices]
        if not indices:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        z0 = indices[0]
        if indices == list(range(z0, z0 + len(indices))):
            return np.asarray(self._read_range(z0, z0 + len(indices)))
        return np.stack([np.asarray(self._read_range(i, i + 1))[0] for i in indices])

    def _guard(self, func, *args):
        with user_errors(f"cannot read {self.name}", passthrough=(IndexError,)), _quiet_tifffile():
            return func(*args)

    def read(self) -> np.ndarray:
        """Read the whole volume into memory."""
        arr = np.asarray(self._guard(self._read_all))
        if arr.shape != self.shape:
            raise FusionNetError(
                f"cannot read {self.name}: got shape {arr.shape}, expected {self.shape}"
            )
        return arr

    @property
    def lazy(self):
        """An array-like whose N-D slices read only what they ask for (the HDF5/zarr dataset; else the volume)."""
        return self

    def __array__(self, dtype=None, copy=None):
        arr = self.read()
        return arr if dtype is None else arr.astype(dtype)

    def __getitem__(self, key):
        if self.ndim < 3:
            return self.read()[key]
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key) or sum(k is Ellipsis for k in key) > 1:
            return self.read()[key]
        if any(k is Ellipsis for k in key):
            pos = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:pos] + (slice(None),) * max(fill, 0) + key[pos + 1:]
        if not key:
            return self.read()
        first, rest = key[0], key[1:]
        n = self.shape[0]
        if isinstance(first, (int, np.integer)):
            i = int(first)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {n}")
            block = self._guard(self._read_sections, [i % n])[0]
            return block[rest] if rest else block
        if isinstance(first, slice):
            indices = list(range(*first.indices(n)))
        else:
            idx = np.asarray(first)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise IndexError(f"boolean index of shape {idx.shape} does not match axis 0 of size {n}")
                indices = np.nonzero(idx)[0].tolist()
            elif idx.ndim == 1 and idx.dtype.kind in "iu":
                if idx.size and (idx.min() < -n or idx.max() >= n):
                    raise IndexError(f"index out of bounds for axis 0 with size {n}")
                indices = (idx % n).tolist() if n else []
            else:
                return self.read()[key]
        block = self._guard(self._read_sections, indices)
        return block[(slice(None),) + rest] if rest else block


class _ArrayVolume(Volume):
    """A volume backed by an in-memory or memory-mapped array."""

    def __init__(self, path, array, *, fmt, display=None, channel_axis=None):
        super().__init__(path, array.shape, array.dtype, display=display, channel_axis=channel_axis)
        self._array = array
        self.format = fmt

    def _read_all(self):
        return np.array(self._array)

    def _read_range(self, z0, z1):
        return np.array(self._array[z0:z1])

    def close(self):
        self._array = None


class _TiffVolume(Volume):
    format = "tiff"

    def __init__(self, path, display):
        import tifffile

        self._tif = tifffile.TiffFile(str(path))
        try:
            all_series = list(self._tif.series)
            if not all_series:
                raise FusionNetError(f"cannot read {display}: no images in file")
            first = all_series[0]
            shape, dtype, axes = tuple(first.shape), first.dtype, first.axes
            # pages written one by one (each its own series): stack them as sections
            self._stacked = len(all_series) > 1 and all(
                tuple(s.shape) == shape and s.dtype == dtype for s in all_series[1:]
            )
            if self._stacked:
                shape, axes = (len(all_series),) + shape, "Q" + axes
            elif len(all_series) > 1:  # reading the first alone would drop sections silently
                shapes = ", ".join("x".join(map(str, s.shape)) + f" {s.dtype}" for s in all_series[:4])
                raise FusionNetError(
                    f"{display}: its {len(all_series)} pages differ in size or type ({shapes}"
                    f"{', ...' if len(all_series) > 4 else ''}); a stack needs sections of one size and type"
                )
            channel_axis = None
            if "S" in axes and shape[axes.index("S")] > 1:
                channel_axis = axes.index("S")
            super().__init__(path, shape, dtype, display=display, channel_axis=channel_axis)
            self._memmap = None
            self._per_page = False
            self._cache = None
            if len(shape) >= 3 and not self._stacked:
                try:
                    self._memmap = tifffile.memmap(str(path), mode="r")
                    if self._memmap.shape != shape:
                        self._memmap = None
                except Exception:
                    self._memmap = None
                if self._memmap is None:
                    self._per_page = (
                        len(first.pages) == shape[0] and tuple(first.keyframe.shape) == shape[1:]
                    )
        except BaseException:
            self._tif.close()
            raise

    def _read_all(self):
        if self._memmap is not None:
            return np.array(self._memmap)
        if self._cache is None:
            if self._stacked:
                self._cache = self._read_range(0, self.shape[0])
            else:
                self._cache = self._tif.series[0].asarray()
        return self._cache

    def _read_range(self, z0, z1):
        if self._memmap is not None:
            return np.array(self._memmap[z0:z1])
        if self._cache is not None:
            return self._cache[z0:z1]
        if self._stacked:
            out = np.empty((z1 - z0,) + self.shape[1:], dtype=self.dtype)
            for j, i in enumerate(range(z0, z1)):
                out[j] = self._tif.series[i].asarray()
            return out
        if self._per_page:
            data = self._tif.asarray(key=list(range(z0, z1)), series=0)
            return np.asarray(data).reshape((z1 - z0,) + self.shape[1:])
        return self._read_all()[z0:z1]

    def close(self):
        self._memmap = None
        self._cache = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None


class _DirVolume(Volume):
    format = "dir"

    def __init__(self, path, files, display):
        self._files = list(files)
        with user_errors(f"cannot read {self._files[0]}"):
            first = _read_section_file(self._files[0])
        if first.ndim not in (2, 3) or (first.ndim == 3 and first.shape[-1] > 4):
            raise FusionNetError(
                f"expected one 2-D section per file, got shape {first.shape} in {self._files[0]}"
            )
        channel_axis = 3 if first.ndim == 3 else None
        super().__init__(path, (len(self._files),) + first.shape, first.dtype,
                         display=display, channel_axis=channel_axis)
        self._first = first

    @property
    def files(self) -> list[Path]:
        """The section files, in stacking order."""
        return list(self._files)

    def _section(self, i):
        f = self._files[i]
        if i == 0 and self._first is not None:
            arr = self._first
        else:
            with user_errors(f"cannot read {f}"):
                arr = _read_section_file(f)
        if arr.shape != self.shape[1:]:
            raise FusionNetError(
                f"section {f.name} has shape {arr.shape}, expected {self.shape[1:]} (like {self._files[0].name})"
            )
        if arr.dtype != self.dtype:
            raise FusionNetError(
                f"section {f.name} has dtype {arr.dtype}, expected {self.dtype} (like {self._files[0].name})"
            )
        return arr

    def _read_all(self):
        return self._read_range(0, self.shape[0])

    def _read_range(self, z0, z1):
        out = np.empty((z1 - z0,) + self.shape[1:], dtype=self.dtype)
        for j, i in enumerate(range(z0, z1)):
            out[j] = self._section(i)
        return out

    def close(self):
        self._first = None


def _read_section_file(path: Path) -> np.ndarray:
    if path.suffix.lower() in TIFF_EXTS:
        import tifffile

        return np.asarray(tifffile.imread(str(path)))
    import imageio.v3 as iio

    return np.asarray(iio.imread(str(path)))


def _section_files(directory: Path) -> list[Path]:
    files = [
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SECTION_EXTS
    ]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def _input_format(path: Path, display: str) -> str:
    suffix = path.suffix.lower()
    if suffix in ZARR_EXTS:
        if not path.exists():
            raise FusionNetError(f"file not found: {path}")
        return "zarr"
    if path.is_dir():
        if any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
            return "zarr"
        return "dir"
    if suffix not in READ_EXTS and (suffix or path.exists()):
        shown = f"'{suffix}'" if suffix else "(no extension)"
        raise FusionNetError(f"unsupported format {shown}: {display}; {_READ_HINT}")
    if not path.exists():
        raise FusionNetError(f"file not found: {path}")
    if suffix in TIFF_EXTS:
        return "tiff"
    if suffix in PNG_EXTS:
        return "png"
    return "hdf5"


def open_volume(path: str | os.PathLike) -> Volume:
    """Open ``path`` for lazy, section-wise reading; see :class:`Volume`.

    ``path`` may use the ``file.h5:dataset`` / ``x.zarr:group/array`` syntax.
    Raises :class:`FusionNetError` for missing, unsupported or unreadable inputs.
    """
    file, key = parse_path(path)
    display = _display(file, key)
    fmt = _input_format(file, display)
    if key is not None and fmt not in ("hdf5", "zarr"):
        raise FusionNetError(f"'{key}' selects a dataset, but {file} is not an HDF5 or zarr container")
    from fusionnet_keras.data.io.container_volumes import _H5Volume, _ZarrVolume

    with user_errors(f"cannot read {display}"), _quiet_tifffile():
        if fmt == "tiff":
            return _TiffVolume(file, display)
        if fmt == "png":
            arr = _read_section_file(file)
            channel_axis = arr.ndim - 1 if arr.ndim == 3 else None
            return _ArrayVolume(file, arr, fmt="png", display=display, channel_axis=channel_axis)
        if fmt == "dir":
            files = _section_files(file)
            if not files:
                raise FusionNetError(f"no .png/.tif/.tiff sections found in directory: {file}")
            return _DirVolume(file, files, display)
        if fmt == "hdf5":
            return _H5Volume(file, key, display)
        return _ZarrVolume(file, key, display)


def read_volume(path: str | os.PathLike) -> np.ndarray:
    """Read a whole array as stored (any dtype and shape), e.g. labels."""
    with open_volume(path) as vol:
        return vol.read()

