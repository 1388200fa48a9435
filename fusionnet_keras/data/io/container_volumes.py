"""The volumes read from containers: an HDF5 dataset or a zarr array (an OME-Zarr image group's level 0),
read lazily behind :class:`~fusionnet_keras.data.io.volumes.Volume` (:func:`~fusionnet_keras.data.io.volumes.open_volume`
opens them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.data.io.containers import h5_datasets, only_member, open_h5, zarr_arrays, zarr_is_group
from fusionnet_keras.data.io.paths import _display, _listing
from fusionnet_keras.data.io.volumes import Volume
from fusionnet_keras.errors import FusionNetError


class _H5Volume(Volume):
    format = "hdf5"

    def __init__(self, path, key, display):
        import h5py

        self._file = open_h5(path, "r")
        try:
            datasets = h5_datasets(self._file)
            if key is None:
                key = only_member(datasets, "datasets", path)
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

    @property
    def lazy(self):
        return self._ds

    @property
    def attributes(self):
        from fusionnet_keras.data.io.ome import stored_attributes

        return stored_attributes(self._ds.attrs, json_text=True)

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
        self._group_attrs = {}  # those of the OME-Zarr image group whose level 0 is read
        if zarr_is_group(node):
            key = _ome_level0(node, key, display)
            arrays = zarr_arrays(node)
            if key is None:
                key = only_member(arrays, "arrays", path)
            try:
                arr = node[key]
            except KeyError:
                raise FusionNetError(
                    f"no array '{key}' in {path}; available: {_listing(arrays) or 'none'}"
                ) from None
            if zarr_is_group(arr):
                inner = [a for a in arrays if a.startswith(key + "/")]
                raise FusionNetError(
                    f"'{key}' in {path} is a group, not an array; arrays: {_listing(inner) or 'none'}"
                )
            self._group_attrs = _image_group_attrs(node, key)
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

    @property
    def lazy(self):
        return self._arr

    @property
    def attributes(self):
        from fusionnet_keras.data.io.ome import stored_attributes

        return {**stored_attributes(self._arr.attrs), **stored_attributes(self._group_attrs)}

    def _read_all(self):
        return np.asarray(self._arr[...])

    def _read_range(self, z0, z1):
        return np.asarray(self._arr[z0:z1])

    def close(self):
        self._arr = None


def _image_group_attrs(root, key: str) -> dict:
    """The attributes of the OME-Zarr image group holding the array ``key`` of ``root`` (empty: none)."""
    from fusionnet_keras.data.io.ome import is_ome_group

    parent = key.rpartition("/")[0]
    group = root[parent] if parent else root
    return dict(group.attrs) if is_ome_group(group) else {}


def _ome_level0(root, key: str | None, display: str) -> str | None:
    """``key``, or where ``key`` (None: the store) is an OME-Zarr image group, the key of its level 0 (the full
    resolution; several multiscales or a missing level 0 are errors)."""
    from fusionnet_keras.data.io.ome import is_ome_group, level_path

    try:
        node = root[key] if key else root
    except KeyError:
        return key
    if not is_ome_group(node):
        return key
    level = level_path(node, display)
    return f"{key}/{level}" if key else level
