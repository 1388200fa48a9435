"""The voxel size of any input the package reads: OME-Zarr, zarr, HDF5 and TIFF metadata.

Voxel sizes are ``(z, y, x)`` in nanometres. Where they come from, per format:

* OME-Zarr image or label group (NGFF 0.4: ``multiscales`` in the group's
  attributes; NGFF 0.5: under ``ome``): the scale of level 0 (the first
  dataset of the group's only multiscale), times the multiscale's own scale if
  it has one, converted from the axes' units (space axes without any unit are
  a voxel grid of unknown size: None). An array inside such a group (``x.zarr:0``) has the
  scale of its level (:mod:`fusionnet_keras.data.io.ome` reads the multiscale).
* zarr array or HDF5 dataset with a ``resolution`` attribute (the CREMI
  convention: ``z, y, x`` in nm); for HDF5 a ``resolution`` on a group above
  the dataset counts too.
* TIFF with ImageJ metadata (``unit``, ``spacing`` for z, the X/YResolution
  tags in pixels per unit), or with the resolution tags in centimetres (and
  the ImageJ ``spacing`` for z).

Anything else has no voxel size (:func:`read_voxel_size` returns None).
"""

from __future__ import annotations

import os
from pathlib import Path

from fusionnet_keras.data.io.ome import (
    _checked,
    _unit_nm,
    multiscale,
    multiscale_voxel_size,
    ome_attributes,
    parse_voxel_size,
)
from fusionnet_keras.errors import FusionNetError


# -- zarr ----------------------------------------------------------------------------------------------------
def _zarr_voxel_size(file: Path, key: str | None, display: str):
    import zarr

    from fusionnet_keras.data.io.containers import zarr_is_group

    root = zarr.open(store=str(file), mode="r")
    node = root[key] if key else root
    if zarr_is_group(node):
        if ome_attributes(node.attrs) is not None:
            return multiscale_voxel_size(multiscale(node.attrs, display), 0, display)
        return _resolution(node.attrs, display)
    found = _resolution(node.attrs, display)
    if found is not None or not key:
        return found
    parent_key, _, name = key.rpartition("/")
    parent = root[parent_key] if parent_key else root
    if ome_attributes(parent.attrs) is not None:
        ms = multiscale(parent.attrs, display)
        paths = [str(d.get("path", "")).strip("/") for d in ms["datasets"]]
        if name in paths:
            return multiscale_voxel_size(ms, paths.index(name), display)
    return None


def _resolution(attrs, where: str):
    value = dict(attrs or {}).get("resolution")
    if value is None:
        return None
    try:
        value = [float(v) for v in list(value)]
    except (TypeError, ValueError):
        raise FusionNetError(f"{where}: the resolution attribute is not a list of numbers: {value!r}") from None
    if len(value) == 2:  # a 2-D image: no z
        return None
    return _checked(value, where)


# -- HDF5 and TIFF -------------------------------------------------------------------------------------------
def _h5_voxel_size(file: Path, key: str | None, display: str):
    from fusionnet_keras.data.io.containers import h5_datasets, only_member, open_h5

    with open_h5(file, "r") as f:
        if key is None:
            key = only_member(h5_datasets(f), "datasets", file)
        if key not in f:
            return None
        parts = key.strip("/").split("/")
        for depth in range(len(parts), -1, -1):  # the dataset, then the groups above it
            node = f["/".join(parts[:depth]) or "/"]
            found = _resolution(node.attrs, display)
            if found is not None:
                return found
    return None


def _tiff_voxel_size(file: Path):
    import tifffile

    with tifffile.TiffFile(str(file)) as tif:
        page = tif.pages[0]
        ij = tif.imagej_metadata or {}
        tags = page.tags
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        unit_tag = tags.get("ResolutionUnit")
        unit_value = int(unit_tag.value) if unit_tag is not None else 1
        shaped = (tif.shaped_metadata or ({},))[0] or {}
        if ij.get("unit"):
            try:
                factor = _unit_nm(ij["unit"], str(file))
            except FusionNetError:
                return None
        elif unit_value == 3:  # centimetre; z as this package writes it beside ImageJ (JSON description)
            factor = 1e7
            ij = {"spacing": shaped["spacing"] * _unit_nm(shaped.get("unit"), str(file)) / factor} \
                if isinstance(shaped.get("spacing"), (int, float)) else {}
        else:  # no unit (or inches, usually a meaningless 72 dpi): no voxel size
            return None
        if xres is None or yres is None:
            return None

        def size(tag):
            num, den = tag.value
            return den / num * factor if num else None

        x, y = size(xres), size(yres)
        z = ij.get("spacing")
        if x is None or y is None or z is None:
            return None
        try:
            return _checked((float(z) * factor, y, x), str(file))
        except FusionNetError:
            return None


def read_voxel_size(path) -> tuple[float, float, float] | None:
    """The ``(z, y, x)`` voxel size in nm of any input the package reads, or None where it has none.

    ``path`` is a volume spec (``x.tif``, ``f.h5:dataset``, ``x.zarr``,
    ``x.zarr:group/array``, an OME-Zarr group). See the module docstring for
    the metadata read. Raises :class:`FusionNetError` for metadata that cannot
    be used (an OME-Zarr group with several multiscales or no level 0, a
    resolution that is not three positive numbers, an unknown unit).
    """
    from fusionnet_keras.data.io.paths import HDF5_EXTS, TIFF_EXTS, _display, _is_zarr_store, parse_path, user_errors

    file, key = parse_path(path)
    display = _display(file, key)
    if not file.exists():
        return None
    suffix = file.suffix.lower()
    with user_errors(f"cannot read the voxel size of {display}"):
        if suffix in HDF5_EXTS:
            return _h5_voxel_size(file, key, display)
        if _is_zarr_store(file):
            return _zarr_voxel_size(file, key, display)
        if suffix in TIFF_EXTS and file.is_file():
            return _tiff_voxel_size(file)
    return None


def voxel_size_of(inputs, given=None) -> tuple[float, float, float] | None:
    """The voxel size of a command's outputs: ``given`` (``--voxel-size``, parsed) if any, else the first
    input's metadata that has one (None: none known)."""
    if given is not None:
        return parse_voxel_size(given) if isinstance(given, str) else _checked(given, "--voxel-size")
    for spec in inputs:
        if spec is None:
            continue
        found = read_voxel_size(os.fspath(spec))
        if found is not None:
            return found
    return None
