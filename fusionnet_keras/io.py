"""Reading and writing EM images, volumes and predictions.

Supported inputs
----------------
* TIFF (``.tif``/``.tiff``), single- or multi-page (one page per section).
* PNG (``.png``), a single 2-D section.
* A directory of PNG/TIFF sections, one 2-D section per file, stacked in
  natural order (``s2.png`` comes before ``s10.png``).
* HDF5 (``.h5``/``.hdf5``/``.hdf``) as ``file.h5:dataset``. Without a dataset
  name, the file's only dataset is used (an error lists them if there are more).
* Zarr (``.zarr`` directory) as ``volume.zarr`` (an array) or
  ``volume.zarr:group/array`` (an array inside a group).

Outputs can be written as TIFF, HDF5 (default dataset ``data``, gzip
compressed) or zarr (chunked). Every write is atomic: data go to a temporary
file or directory next to the output, which is then renamed into place, so an
interrupted write never leaves a half-written output or destroys the old one.

Intensity normalisation rule (:func:`normalize`)
------------------------------------------------
Images are converted to ``float32`` in ``[0, 1]`` as follows:

* ``bool``: ``False`` -> 0, ``True`` -> 1.
* ``uint8``: divided by 255; ``uint16``: divided by 65535; any other unsigned
  integer type: divided by the maximum of its dtype.
* signed integers: divided by the maximum of their dtype when no value is
  negative; otherwise min-max rescaled (as for floats below).
* floating point: kept as is when all values already lie in ``[0, 1]``;
  otherwise min-max rescaled, ``(x - min) / (max - min)``. A constant image
  outside ``[0, 1]`` becomes all zeros. NaN or infinite values are an error.

The rule depends only on the dtype (and, for floats and negative integers, on
the values of the whole array), so normalise a whole volume at once, not
chunk by chunk, when values outside ``[0, 1]`` are possible.

All problems caused by the input raise
:class:`~fusionnet_keras.errors.FusionNetError` with a one-line message.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import FusionNetError, OutputExistsError

__all__ = [
    "Volume",
    "parse_path",
    "open_volume",
    "open_image",
    "read_volume",
    "read_image",
    "normalize",
    "load_image",
    "check_output",
    "write_volume",
    "natural_sort_key",
    "DEFAULT_H5_DATASET",
]

TIFF_EXTS = (".tif", ".tiff")
PNG_EXTS = (".png",)
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
ZARR_EXTS = (".zarr",)
SECTION_EXTS = PNG_EXTS + TIFF_EXTS
CONTAINER_EXTS = HDF5_EXTS + ZARR_EXTS
READ_EXTS = TIFF_EXTS + PNG_EXTS + HDF5_EXTS + ZARR_EXTS
WRITE_EXTS = TIFF_EXTS + HDF5_EXTS + ZARR_EXTS

DEFAULT_H5_DATASET = "data"

_READ_HINT = "use .tif/.tiff, .png, .h5/.hdf5, .zarr or a directory of sections"
_WRITE_HINT = "use .tif/.tiff, .h5/.hdf5 or .zarr"
_MAX_LISTED = 10
_CHUNK_XY = 512


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short, single-line description of ``exc``."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip()
    text = " ".join(text.split())  # one line
    if not text:
        text = type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def natural_sort_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``s2`` < ``s10``)."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)] + [name]


def _display(path: Path, key: str | None) -> str:
    return f"{path}:{key}" if key else str(path)


def parse_path(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``file.h5:dataset`` / ``volume.zarr:group/array`` into (path, key).

    The spec is split at the first colon whose left part ends in an HDF5 or zarr
    extension (``.h5``, ``.hdf5``, ``.hdf``, ``.zarr``, any case). Anything else
    (plain paths, Windows drive letters such as ``C:\\data\\x.tif``, or a path
    that exists as written) is returned unsplit with key ``None``. Leading and
    trailing ``/`` are stripped from the key; an empty key becomes ``None``.
    """
    if isinstance(spec, Path):
        text = str(spec)
    else:
        try:
            text = os.fspath(spec)
        except TypeError:
            raise FusionNetError(f"invalid path: {spec!r}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = text.strip()
    if not text:
        raise FusionNetError("empty path")
    whole = Path(text).expanduser()
    if ":" in text and not whole.exists():
        for match in re.finditer(":", text):
            head = text[: match.start()]
            if head.lower().endswith(CONTAINER_EXTS):
                key = text[match.end():].strip().strip("/")
                return Path(head).expanduser(), (key or None)
    return whole, None


# ----------------------------------------------------------------------------
# lazy volumes
# ----------------------------------------------------------------------------


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
        try:
            return func(*args)
        except (FusionNetError, IndexError):
            raise
        except MemoryError:
            raise FusionNetError(f"cannot read {self.name}: not enough memory") from None
        except Exception as exc:  # library errors for corrupt/truncated files
            raise FusionNetError(f"cannot read {self.name}: {_reason(exc)}") from exc

    def read(self) -> np.ndarray:
        """Read the whole volume into memory."""
        arr = np.asarray(self._guard(self._read_all))
        if arr.shape != self.shape:
            raise FusionNetError(
                f"cannot read {self.name}: got shape {arr.shape}, expected {self.shape}"
            )
        return arr

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
        try:
            first = _read_section_file(self._files[0])
        except Exception as exc:
            raise FusionNetError(f"cannot read {self._files[0]}: {_reason(exc)}") from exc
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
            try:
                arr = _read_section_file(f)
            except FusionNetError:
                raise
            except Exception as exc:
                raise FusionNetError(f"cannot read {f}: {_reason(exc)}") from exc
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


class _H5Volume(Volume):
    format = "hdf5"

    def __init__(self, path, key, display):
        import h5py

        self._file = h5py.File(str(path), "r")
        try:
            datasets = _h5_datasets(self._file)
            if key is None:
                if len(datasets) == 1:
                    key = datasets[0]
                elif not datasets:
                    raise FusionNetError(f"no datasets in {path}")
                else:
                    raise FusionNetError(
                        f"{path} holds several datasets ({_listing(datasets)}); choose one as {path}:NAME"
                    )
            if key not in self._file:
                raise FusionNetError(
                    f"no dataset '{key}' in {path}; available: {_listing(datasets) or 'none'}"
                )
            ds = self._file[key]
            if not isinstance(ds, h5py.Dataset):
                inner = [d for d in datasets if d.startswith(key.strip("/") + "/")]
                raise FusionNetError(
                    f"'{key}' in {path} is a group, not a dataset; datasets: {_listing(inner) or 'none'}"
                )
            if ds.dtype.names or ds.dtype.kind in "OSUV":
                raise FusionNetError(f"unsupported data type {ds.dtype} in {_display(Path(path), key)}")
            self.key = key
            self._ds = ds
            super().__init__(path, ds.shape, ds.dtype, display=_display(Path(path), key))
        except BaseException:
            self._file.close()
            raise

    def _read_all(self):
        return self._ds[()]

    def _read_range(self, z0, z1):
        return self._ds[z0:z1]

    def close(self):
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._ds = None


class _ZarrVolume(Volume):
    format = "zarr"

    def __init__(self, path, key, display):
        import zarr

        node = zarr.open(store=str(path), mode="r")
        if _zarr_is_group(node):
            arrays = _zarr_arrays(node)
            if key is None:
                if len(arrays) == 1:
                    key = arrays[0]
                elif not arrays:
                    raise FusionNetError(f"no arrays in zarr group {path}")
                else:
                    raise FusionNetError(
                        f"{path} holds several arrays ({_listing(arrays)}); choose one as {path}:NAME"
                    )
            try:
                arr = node[key]
            except KeyError:
                raise FusionNetError(
                    f"no array '{key}' in {path}; available: {_listing(arrays) or 'none'}"
                ) from None
            if _zarr_is_group(arr):
                inner = [a for a in arrays if a.startswith(key + "/")]
                raise FusionNetError(
                    f"'{key}' in {path} is a group, not an array; arrays: {_listing(inner) or 'none'}"
                )
        else:
            if key is not None:
                raise FusionNetError(f"{path} is a zarr array, not a group; it has no '{key}'")
            arr = node
        dtype = np.dtype(arr.dtype)
        if dtype.names or dtype.kind in "OSUV":
            raise FusionNetError(f"unsupported data type {dtype} in {_display(Path(path), key)}")
        self.key = key
        self._arr = arr
        super().__init__(path, arr.shape, dtype, display=_display(Path(path), key))

    def _read_all(self):
        return np.asarray(self._arr[...])

    def _read_range(self, z0, z1):
        return np.asarray(self._arr[z0:z1])

    def close(self):
        self._arr = None


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    text = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        text += f", ... ({len(names)} in all)"
    return text


def _h5_datasets(h5file) -> list[str]:
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(name)

    h5file.visititems(visit)
    return sorted(found, key=natural_sort_key)


def _zarr_is_group(node) -> bool:
    import zarr

    return isinstance(node, zarr.Group)


def _zarr_arrays(group) -> list[str]:
    names = []
    if hasattr(group, "members"):  # zarr v3
        for name, node in group.members(max_depth=None):
            if not _zarr_is_group(node):
                names.append(name)
    else:  # zarr v2
        group.visititems(lambda name, node: names.append(name) if not _zarr_is_group(node) else None)
    return sorted(names, key=natural_sort_key)


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
    try:
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
    except FusionNetError:
        raise
    except MemoryError:
        raise FusionNetError(f"cannot read {display}: not enough memory") from None
    except Exception as exc:
        raise FusionNetError(f"cannot read {display}: {_reason(exc)}") from exc


def read_volume(path: str | os.PathLike) -> np.ndarray:
    """Read a whole array as stored (any dtype and shape), e.g. labels."""
    with open_volume(path) as vol:
        return vol.read()


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------


def _check_image_shape(shape, dtype, name, channel_axis=None) -> None:
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if dtype.names or dtype.kind not in "biuf":
        raise FusionNetError(f"unsupported data type {dtype} in {name}; expected integer, float or bool")
    ndim = len(shape)
    if ndim < 2:
        raise FusionNetError(
            f"expected a 2-D image or 3-D stack (Z, H, W), got {ndim}-D shape {shape} in {name}"
        )
    if 0 in shape:
        raise FusionNetError(f"empty image (shape {shape}) in {name}")
    looks_rgb = shape[-1] in (3, 4) and ndim >= 3 and min(shape[-3], shape[-2]) > 4
    colour = channel_axis is not None or (ndim == 3 and looks_rgb) or (ndim == 4 and shape[-1] in (3, 4))
    if colour and ndim >= 3:
        raise FusionNetError(
            f"{name} looks like a colour (RGB/RGBA) image, shape {shape}; convert to greyscale first"
        )
    if ndim > 3:
        raise FusionNetError(
            f"expected a 2-D image or 3-D stack (Z, H, W), got {ndim}-D shape {shape} in {name}"
        )


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise FusionNetError(f"{name} contains NaN or infinite values")


def open_image(path: str | os.PathLike) -> Volume:
    """Like :func:`open_volume`, but check that it is a grey 2-D image or 3-D stack.

    Only the shape and dtype are checked (nothing is read); values are not checked
    for NaN/inf. For chunked processing of volumes too large for memory.
    """
    vol = open_volume(path)
    try:
        _check_image_shape(vol.shape, vol.dtype, vol.name, vol.channel_axis)
    except BaseException:
        vol.close()
        raise
    return vol


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a grey image (H, W) or stack (Z, H, W), validated, dtype as stored.

    Raises :class:`FusionNetError` for colour images, arrays that are not 2-D or
    3-D, empty arrays, non-numeric dtypes and NaN/infinite values.
    """
    with open_image(path) as vol:
        arr = vol.read()
        _check_finite(arr, vol.name)
    return arr


def normalize(array) -> np.ndarray:
    """Convert an image to ``float32`` in ``[0, 1]`` by the module's documented rule."""
    a = np.asarray(array)
    kind = a.dtype.kind
    if kind == "b":
        return a.astype(np.float32)
    if kind not in "uif":
        raise FusionNetError(f"cannot normalise data type {a.dtype}; expected integer, float or bool")
    if a.size == 0:
        return a.astype(np.float32)
    if kind == "u" or (kind == "i" and a.min() >= 0):
        top = np.iinfo(a.dtype).max
        if a.dtype.itemsize <= 2:
            return a.astype(np.float32) / np.float32(top)
        return (a.astype(np.float64) / float(top)).astype(np.float32)
    if kind == "f":
        if not np.isfinite(a).all():
            raise FusionNetError("cannot normalise an image with NaN or infinite values")
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi <= 1:
            return a.astype(np.float32)
    else:
        lo, hi = a.min(), a.max()
    if lo == hi:
        return np.zeros(a.shape, dtype=np.float32)
    work = np.float32 if a.dtype in (np.float16, np.float32) else np.float64
    lo, hi = work(lo), work(hi)
    out = (a.astype(work) - lo) / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_image` followed by :func:`normalize`: float32 in [0, 1]."""
    return normalize(read_image(path))


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------


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
        return (path / key).exists() if key else (path.exists() or path.is_symlink())
    # hdf5: the output is the dataset inside the file
    if not path.exists():
        return False
    if path.is_dir():
        raise FusionNetError(f"output is a directory, not an HDF5 file: {path}")
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            return (key or DEFAULT_H5_DATASET) in f
    except Exception as exc:
        raise FusionNetError(f"cannot read existing output {path}: {_reason(exc)}") from exc


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
    ancestor = file.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise FusionNetError(f"cannot create {file}: {ancestor} is not a directory")
    if ancestor.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise FusionNetError(f"cannot write to directory {ancestor}: permission denied")
    return file


def _convert_dtype(arr: np.ndarray, dtype, display: str) -> np.ndarray:
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


def _temp_sibling(path: Path, tag: str = "tmp") -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.{tag}"


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def _write_tiff(path: Path, arr: np.ndarray) -> None:
    import tifffile

    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    tmp = _temp_sibling(path).with_suffix(".tmp" + path.suffix)
    try:
        kwargs = {"photometric": "minisblack"} if arr.ndim >= 2 else {}
        tifffile.imwrite(str(tmp), np.ascontiguousarray(arr), bigtiff=arr.nbytes > 2**31, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write_hdf5(path: Path, key: str | None, arr: np.ndarray, overwrite: bool) -> None:
    import h5py

    key = key or DEFAULT_H5_DATASET
    tmp = _temp_sibling(path).with_suffix(".tmp" + path.suffix)
    try:
        existing = path.exists()
        if existing:  # keep the file's other datasets: edit a copy, then swap
            shutil.copy2(path, tmp)
        with h5py.File(str(tmp), "a" if existing else "w") as f:
            if key in f:
                if not overwrite:
                    raise OutputExistsError(f"output exists: {path}:{key} (use --overwrite)")
                del f[key]
            f.create_dataset(key, data=arr, chunks=_chunks(arr.shape),
                             compression="gzip", compression_opts=4, shuffle=True)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


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


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing target is moved aside first, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        old = _temp_sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        _remove(old)


def _write_zarr(path: Path, key: str | None, arr: np.ndarray) -> None:
    tmp = _temp_sibling(path)
    try:
        if key is None:
            _zarr_create(tmp, arr)
            _swap_into_place(tmp, path)
            return
        import zarr

        if path.exists():
            root = zarr.open(store=str(path), mode="r")
            if not _zarr_is_group(root):
                raise FusionNetError(f"{path} is a zarr array, not a group; cannot add '{key}'")
            root = zarr.open_group(str(path), mode="a")
        else:
            root = zarr.open_group(str(path), mode="a")
        zarr_format = getattr(getattr(root, "metadata", None), "zarr_format", 2)
        parent_key = key.rpartition("/")[0]
        if parent_key:
            root.require_group(parent_key)
        _zarr_create(tmp, arr, zarr_format=zarr_format)
        _swap_into_place(tmp, path / key)
    except BaseException:
        _remove(tmp)
        raise


def write_volume(path: str | os.PathLike, array, overwrite: bool = False, dtype=None) -> Path:
    """Write ``array`` atomically as TIFF, HDF5 (``file.h5[:dataset]``) or zarr.

    ``dtype`` converts before writing: a float (or bool) array in [0, 1] becomes
    ``round(255 * x)`` for ``"uint8"`` (``round(65535 * x)`` for ``"uint16"``);
    integers are range-checked; ``"float32"`` casts. ``None`` keeps the dtype
    (bool is stored as uint8 0/1 in TIFF). HDF5 datasets (default ``data``) are
    gzip compressed and zarr arrays are chunked by section. Parent directories
    are created. Raises :class:`OutputExistsError` if the output exists and
    ``overwrite`` is false. Returns the path of the written file/directory.
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
    arr = _convert_dtype(arr, dtype, display)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "tiff":
            _write_tiff(file, arr)
        elif fmt == "hdf5":
            _write_hdf5(file, key, arr, overwrite)
        else:
            _write_zarr(file, key, arr)
    except FusionNetError:
        raise
    except MemoryError:
        raise FusionNetError(f"cannot write {display}: not enough memory") from None
    except Exception as exc:
        raise FusionNetError(f"cannot write {display}: {_reason(exc)}") from exc
    return file
