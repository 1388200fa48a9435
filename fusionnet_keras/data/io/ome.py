"""Voxel sizes and OME-Zarr (NGFF) metadata: parsed from ``--voxel-size``, the multiscale read and checked,
the metadata of the outputs built.

Voxel sizes are ``(z, y, x)`` in nanometres; :mod:`fusionnet_keras.data.io.voxel_sizes` reads them from
every input format (:func:`~fusionnet_keras.data.io.voxel_sizes.read_voxel_size`).
"""

from __future__ import annotations

import json
import math

from dataclasses import dataclass, field, replace

from fusionnet_keras.errors import FusionNetError

#: NGFF space units (UDUNITS-2 names) and common abbreviations, in nanometres.
UNIT_NM = {
    "angstrom": 0.1, "picometer": 1e-3, "nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6,
    "centimeter": 1e7, "decimeter": 1e8, "meter": 1e9,
    "pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micron": 1e3, "microns": 1e3, "mm": 1e6,
    "cm": 1e7, "m": 1e9, "a": 0.1, "\u00c5": 0.1,
}

#: Versions of the NGFF spec this package reads.
NGFF_VERSIONS = ("0.4", "0.5")


def parse_voxel_size(text, name: str = "--voxel-size") -> tuple[float, float, float]:
    """``"Z,Y,X"`` in nm (e.g. ``"40,4,4"``) -> three positive finite floats; a one-line error otherwise.

    Example:
        >>> parse_voxel_size("40, 4, 4.5")
        (40.0, 4.0, 4.5)
    """
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise FusionNetError(f"{name} needs 3 numbers in nm as Z,Y,X (e.g. 40,4,4), got {len(parts)}: {text!r}")
    values = []
    for axis, part in zip("ZYX", parts):
        try:
            value = float(part)
        except (TypeError, ValueError):
            raise FusionNetError(f"{name}: {axis} is not a number: {part!r} (give Z,Y,X in nm, e.g. 40,4,4)") \
                from None
        if not math.isfinite(value):
            raise FusionNetError(f"{name}: {axis} must be a finite number of nm, got {part!r}")
        if value == 0:
            raise FusionNetError(f"{name}: {axis} is zero; a voxel size must be positive (nm)")
        if value < 0:
            raise FusionNetError(f"{name}: {axis} is negative ({value:g}); a voxel size must be positive (nm)")
        values.append(value)
    return tuple(values)


def _unit_nm(unit, where: str) -> float:
    if unit is None or unit == "":
        return 1.0
    factor = UNIT_NM.get(str(unit).strip()) or UNIT_NM.get(str(unit).strip().lower())
    if factor is None:
        raise FusionNetError(f"{where}: unknown space unit {unit!r}")
    return factor


def _checked(values, where: str) -> tuple[float, float, float]:
    """Three positive finite floats from metadata, or an error naming ``where``."""
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise FusionNetError(f"{where}: the voxel size is not a list of numbers: {values!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise FusionNetError(f"{where}: the voxel size must be 3 positive numbers (z, y, x), got {values!r}")
    return values


# -- OME-Zarr ------------------------------------------------------------------------------------------------
def ome_attributes(attrs) -> dict | None:
    """The NGFF metadata of a zarr group's attributes (0.5: under ``ome``; 0.4: the attributes), or None
    where the group has no ``multiscales``."""
    attrs = dict(attrs or {})
    if isinstance(attrs.get("ome"), dict):
        meta = dict(attrs["ome"])
    else:
        meta = attrs
    return meta if "multiscales" in meta else None


def multiscale(attrs, where: str) -> dict:
    """The only multiscale of an OME-Zarr group's attributes; one-line errors for none, several, no level 0."""
    meta = ome_attributes(attrs)
    if meta is None:
        raise FusionNetError(f"{where} is not an OME-Zarr image (no multiscales)")
    scales = meta["multiscales"]
    if not isinstance(scales, list) or not scales:
        raise FusionNetError(f"{where}: OME-Zarr multiscales is empty")
    if len(scales) > 1:
        raise FusionNetError(f"{where} holds {len(scales)} multiscales; this package reads an OME-Zarr image with "
                             "one (name the array as PATH:ARRAY)")
    ms = scales[0]
    if not isinstance(ms, dict) or not isinstance(ms.get("datasets"), list) or not ms["datasets"] \
            or not isinstance(ms["datasets"][0], dict) or not ms["datasets"][0].get("path"):
        raise FusionNetError(f"{where}: OME-Zarr multiscale has no level 0 (its datasets list is empty)")
    return ms


def _scale(transforms, where: str) -> list | None:
    scale = None
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            scale = t.get("scale")
            if not isinstance(scale, list):
                raise FusionNetError(f"{where}: an OME-Zarr scale transform without a scale list")
    return scale


def _space_sizes(ms: dict, level: int, where: str) -> list | None:
    """The sizes in nm of the space axes of ``level`` of the multiscale ``ms`` (None: no scale, no units)."""
    axes = ms.get("axes") or []
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise FusionNetError(f"{where}: OME-Zarr multiscale has no level {level}")
    scale = _scale(datasets[level].get("coordinateTransformations"), where)
    if scale is None:
        return None
    overall = _scale(ms.get("coordinateTransformations"), where)
    if overall is not None and len(overall) == len(scale):
        scale = [a * b for a, b in zip(scale, overall)]
    if not axes:  # NGFF 0.3 and older: no axes; take the last three as z, y, x
        return list(scale[-3:]) if len(scale) >= 3 else None
    if len(axes) != len(scale):
        raise FusionNetError(f"{where}: OME-Zarr scale has {len(scale)} values for {len(axes)} axes")
    space = [(i, a) for i, a in enumerate(axes) if isinstance(a, dict) and a.get("type") == "space"]
    if not space:  # 0.4 allows axes without types: the names tell
        space = [(i, {"name": n}) for i, n in enumerate(names) if n in ("z", "y", "x")]
    if not space or not any(a.get("unit") for _, a in space):  # no unit: a voxel grid, size unknown
        return None
    return [scale[i] * _unit_nm(a.get("unit"), where) for i, a in space]


def multiscale_voxel_size(ms: dict, level: int = 0, where: str = "OME-Zarr") -> tuple[float, float, float] | None:
    """``(z, y, x)`` nm of ``level`` of the multiscale ``ms`` (None without a scale, units or 3 space axes)."""
    sizes = _space_sizes(ms, level, where)
    return _checked(sizes, where) if sizes is not None and len(sizes) == 3 else None


def level_path(group, where: str) -> str:
    """The array path of level 0 of the OME-Zarr ``group`` (checked to exist), the array read as the image."""
    ms = multiscale(group.attrs, where)
    path = str(ms["datasets"][0]["path"]).strip("/")
    try:
        node = group[path]
    except KeyError:
        raise FusionNetError(f"{where}: OME-Zarr level 0 '{path}' is missing") from None
    from fusionnet_keras.data.io.containers import zarr_is_group

    if zarr_is_group(node):
        raise FusionNetError(f"{where}: OME-Zarr level 0 '{path}' is a group, not an array")
    return path


def is_ome_group(node) -> bool:
    """Whether the zarr node is a group with NGFF ``multiscales`` metadata."""
    from fusionnet_keras.data.io.containers import zarr_is_group

    return zarr_is_group(node) and ome_attributes(node.attrs) is not None


# -- writing -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageMeta:
    """What an output's metadata says besides its array: the voxel size (``(z, y, x)`` nm, None: unknown),
    whether it is a segmentation (an NGFF label image) or has a leading channel axis ``c`` (affinities),
    its provenance (command, model, settings: :func:`provenance`) and further ``attributes`` a reader of
    the output needs (JSON-able, e.g. ``{"affinity_offsets": [[dz, dy, dx], ...]}``: the offset of each
    affinity channel): written as attributes of the OME-Zarr group (of a plain zarr array) and of the HDF5
    dataset (JSON text), read back by :func:`read_meta` and
    :attr:`fusionnet_keras.data.io.volumes.Volume.attributes`."""

    voxel_size: tuple | None = None
    labels: bool = False
    channels: bool = False
    provenance: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)

    def __post_init__(self):
        clash = sorted(set(self.attributes) & set(RESERVED_ATTRIBUTES))
        if clash:
            raise FusionNetError(f"output attributes {', '.join(clash)} would overwrite the image metadata")

    def with_voxel_size(self, voxel_size) -> "ImageMeta":
        return replace(self, voxel_size=None if voxel_size is None else _checked(voxel_size, "voxel size"))


def provenance(command: str, model=None, **settings) -> dict:
    """The provenance kept in an output's attributes: the package version, the command, the model and the
    settings (JSON-able: paths and tuples as strings and lists)."""
    from fusionnet_keras import __version__

    def plain(value):
        import dataclasses

        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return plain(dataclasses.asdict(value))
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return str(value)

    record = {"software": "fusionnet-keras", "version": __version__, "command": command}
    if model is not None:
        record["model"] = plain(model)
    record["settings"] = {k: plain(v) for k, v in settings.items() if v is not None}
    return record


#: The attribute holding an output's provenance (zarr group, HDF5 dataset).
PROVENANCE_KEY = "fusionnet_keras"

#: Attributes of an output that are its image metadata, not :attr:`ImageMeta.attributes`.
RESERVED_ATTRIBUTES = ("ome", "multiscales", "image-label", "omero", "resolution", PROVENANCE_KEY)


def stored_attributes(attrs, json_text: bool = False) -> dict:
    """The :attr:`ImageMeta.attributes` among an output's attributes ``attrs`` (an OME-Zarr group's, a zarr
    array's or, with ``json_text``, an HDF5 dataset's, whose values are JSON text): all but the image
    metadata (:data:`RESERVED_ATTRIBUTES`)."""
    out = {}
    for key, value in dict(attrs or {}).items():
        if key in RESERVED_ATTRIBUTES:
            continue
        if json_text and isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:  # plain text written by another program
                pass
        out[str(key)] = value
    return out


def ngff_version(zarr_format: int) -> str:
    """NGFF 0.5 for zarr format 3, 0.4 for format 2."""
    return "0.5" if int(zarr_format) == 3 else "0.4"


def _axes(ndim: int, meta: ImageMeta) -> list[dict]:
    spatial = ndim - (1 if meta.channels else 0)
    if not 2 <= spatial <= 3 or (meta.channels and ndim < 3):
        raise FusionNetError(f"an OME-Zarr image needs 2 or 3 space axes (plus a channel axis), got {ndim} axes")
    unit = {"unit": "nanometer"} if meta.voxel_size is not None else {}
    axes = [{"name": "c", "type": "channel"}] if meta.channels else []
    return axes + [{"name": n, "type": "space", **unit} for n in "zyx"[3 - spatial:]]


def array_options(group, ndim: int, meta: ImageMeta) -> dict:
    """Keywords of ``create_array`` for a level of an image in ``group``: NGFF 0.5 (zarr 3) names the array's
    dimensions like the axes."""
    if int(getattr(group.metadata, "zarr_format", 3)) != 3:
        return {}
    return {"dimension_names": [a["name"] for a in _axes(ndim, meta)]}


def level_scale(ndim: int, meta: ImageMeta, factors=None) -> list[float]:
    """The ``scale`` of a level ``factors`` (per space axis, cumulative) coarser than level 0."""
    spatial = ndim - (1 if meta.channels else 0)
    size = list(meta.voxel_size[3 - spatial:]) if meta.voxel_size is not None else [1.0] * spatial
    factors = [1] * spatial if factors is None else list(factors)[-spatial:]
    return ([1.0] if meta.channels else []) + [float(s) * f for s, f in zip(size, factors)]


def image_attributes(ndim: int, meta: ImageMeta, zarr_format: int, levels=None, method: str | None = None) -> dict:
    """The attributes of an OME-Zarr image (or label image) group.

    ``levels``: ``[(path, factors)]`` (factors per space axis relative to level
    0); default one level ``"0"``. ``method``: how the levels were downsampled.
    NGFF 0.5 (zarr 3: under ``ome``) or 0.4 (zarr 2).
    """
    version = ngff_version(zarr_format)
    levels = levels or [("0", None)]
    multiscale = {
        "name": "labels" if meta.labels else "image",
        "axes": _axes(ndim, meta),
        "datasets": [{"path": str(path), "coordinateTransformations": [
            {"type": "scale", "scale": level_scale(ndim, meta, factors)}]} for path, factors in levels],
    }
    if method is not None:
        multiscale["type"] = method
    ome = {"multiscales": [multiscale]}
    if meta.labels:
        ome["image-label"] = {}
    attrs = {}
    if version == "0.5":
        attrs["ome"] = {"version": version, **ome}
    else:
        multiscale["version"] = version
        if meta.labels:
            ome["image-label"]["version"] = version
        attrs.update(ome)
    if meta.provenance:
        attrs[PROVENANCE_KEY] = meta.provenance
    attrs.update(meta.attributes)
    return attrs


def write_attributes(group, ndim: int, meta: ImageMeta, levels=None, method: str | None = None) -> None:
    """Set the OME-Zarr attributes of ``group`` (a zarr group; its format picks the NGFF version)."""
    zarr_format = int(getattr(group.metadata, "zarr_format", 3))
    group.attrs.update(image_attributes(ndim, meta, zarr_format, levels, method))


def read_meta(group, where: str) -> ImageMeta:
    """The :class:`ImageMeta` of an OME-Zarr image group (checked like :func:`multiscale`)."""
    ms = multiscale(group.attrs, where)
    meta = ome_attributes(group.attrs)
    axes = ms.get("axes") or []
    channels = any(isinstance(a, dict) and a.get("type") == "channel" for a in axes)
    prov = dict(group.attrs).get(PROVENANCE_KEY) or {}
    sizes = _space_sizes(ms, 0, where)
    if sizes is not None and len(sizes) == 2:  # a 2-D image: y and x (z is not written)
        sizes = [1.0] + sizes
    voxel_size = _checked(sizes, where) if sizes is not None and len(sizes) == 3 else None
    return ImageMeta(voxel_size=voxel_size, labels="image-label" in meta, channels=channels,
                     provenance=prov if isinstance(prov, dict) else {}, attributes=stored_attributes(group.attrs))


def h5_attributes(meta: ImageMeta | None) -> dict:
    """HDF5 dataset attributes of an output: ``resolution`` (z, y, x nm, the CREMI convention), the
    provenance and the further :attr:`~ImageMeta.attributes` as JSON text."""
    if meta is None:
        return {}
    attrs = {}
    if meta.voxel_size is not None:
        attrs["resolution"] = list(meta.voxel_size)
    if meta.provenance:
        attrs[PROVENANCE_KEY] = json.dumps(meta.provenance)
    attrs.update({key: json.dumps(value) for key, value in meta.attributes.items()})
    return attrs


def tiff_options(meta: ImageMeta | None, arr) -> dict:
    """``tifffile.imwrite`` keywords carrying the voxel size: the ImageJ spacing and unit with the X/Y
    resolution where ImageJ can hold the data (uint8, uint16, float32; Z, Y, X), else the resolution tags
    in centimetres and ``spacing``/``unit`` in the file's JSON description."""
    if meta is None or meta.voxel_size is None:
        return {}
    import numpy as np

    z, y, x = meta.voxel_size
    if np.dtype(arr.dtype) in (np.uint8, np.uint16, np.float32) and arr.ndim in (2, 3) and not meta.channels:
        return {"imagej": True, "resolution": (1.0 / x, 1.0 / y),
                "metadata": {"spacing": z, "unit": "nm", "axes": "ZYX" if arr.ndim == 3 else "YX"}}
    return {"resolution": (1e7 / x, 1e7 / y), "resolutionunit": "CENTIMETER",
            "metadata": {"spacing": z, "unit": "nm"}}


def output_meta(inputs, voxel_size=None, *, labels: bool = False, channels: bool = False, command: str,
                model=None, attributes=None, **settings) -> ImageMeta:
    """The :class:`ImageMeta` of a command's output: the voxel size of ``voxel_size`` (``--voxel-size``) or
    of the first input that has one (:func:`voxel_size_of`), the provenance (:func:`provenance`; the
    inputs and the voxel size's origin are in its settings) and the further ``attributes``."""
    from fusionnet_keras.data.io.voxel_sizes import voxel_size_of

    size = voxel_size_of(inputs, voxel_size)
    origin = "--voxel-size" if voxel_size is not None else "input" if size is not None else None
    record = provenance(command, model, inputs=[str(i) for i in inputs if i is not None], voxel_size_from=origin,
                        **settings)
    return ImageMeta(voxel_size=size, labels=labels, channels=channels, provenance=record,
                     attributes=dict(attributes or {}))
