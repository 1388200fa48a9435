"""Meshes of a label volume with zmesh, in neuroglancer's precomputed format or as PLY/OBJ files.

Coordinates are nanometres in neuroglancer's order ``(x, y, z)``, with voxel
``(z, y, x)`` covering ``[x, x+1) * vx`` and so on: zmesh's marching cubes put
a label's surface half-way between voxel centres, so a label occupying voxels
``a..b`` along an axis has vertices from ``a * v`` to ``(b + 1) * v``, the
faces of its voxels (up to the simplification's ``max_error``).

A block is meshed with one voxel more on its upper faces (the first voxel of
the next block), so the marching cubes of neighbouring blocks meet exactly: a
cube between voxels ``i`` and ``i + 1`` belongs to the block that holds ``i``.
zmesh's simplification keeps the vertices on a block's open boundary, so the
fragments of one label join without gaps. On the volume's own faces the block
is padded with a layer of background, which closes the meshes there.

The precomputed (legacy, single-resolution) mesh directory holds ``info``
(``{"@type": "neuroglancer_legacy_mesh"}`` plus this package's metadata under
``fusionnet_keras``), one fragment file per label and block
(``LABEL:0:BLOCK``, zmesh's precomputed encoding: vertex count, float32
vertices, uint32 triangles) and one manifest per label (``LABEL:0``,
``{"fragments": [...]}``) through which neuroglancer joins the fragments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError

#: Output formats of ``fusionnet-keras meshes``.
FORMATS = ("precomputed", "ply", "obj")
#: The ``@type`` of a precomputed legacy mesh directory's ``info``.
LEGACY_MESH = "neuroglancer_legacy_mesh"
#: Where this package keeps its own metadata in ``info`` (neuroglancer reads only ``@type``).
META_KEY = "fusionnet_keras"
#: Default triangle reduction factor of zmesh's simplification (0 keeps every marching-cubes triangle).
DEFAULT_SIMPLIFY = 10


def manifest_name(label: int) -> str:
    return f"{int(label)}:0"


def fragment_name(label: int, block_id: int) -> str:
    return f"{int(label)}:0:{int(block_id)}"


def read_block(labels, region, shape):
    """``(data, origin)``: ``labels[region]`` with one voxel more on its upper faces (inside the volume) and
    a layer of background on the faces that are the volume's; ``origin`` is the voxel of ``data[0, 0, 0]``."""
    read = tuple(slice(r.start, min(r.stop + 1, n)) for r, n in zip(region, shape))
    data = np.asarray(labels[read])
    pad = [(1 if r.start == 0 else 0, 1 if r.stop >= n else 0) for r, n in zip(region, shape)]
    if any(before or after for before, after in pad):
        data = np.pad(data, pad)
    origin = tuple(r.start - before for r, (before, _) in zip(region, pad))
    return data, origin


def block_meshes(data, origin, voxel_size, simplify: int = DEFAULT_SIMPLIFY, max_error: float | None = None) -> dict:
    """``{label: zmesh.Mesh}`` of every non-zero label of ``data`` (z, y, x), vertices (x, y, z) in nm.

    Args:
        data: the labels (unsigned integers), as :func:`read_block` returns them.
        origin: the voxel (z, y, x) of ``data[0, 0, 0]`` in the volume.
        voxel_size: (z, y, x) nm.
        simplify: zmesh's triangle reduction factor (0: no simplification).
        max_error: the largest distance (nm) the simplification may move a
            vertex; default the largest side of a voxel.
    """
    import zmesh

    res = np.asarray(voxel_size, np.float64)[::-1]  # x, y, z
    mesher = zmesh.Mesher(tuple(res))
    mesher.mesh(np.asarray(data).T)  # (x, y, z) axes, so the vertices come out as (x, y, z)
    shift = (np.asarray(origin, np.float64)[::-1] * res).astype(np.float32)
    error = float(res.max() if max_error is None else max_error)
    meshes = {}
    for label in mesher.ids():
        if label == 0:
            continue
        mesh = mesher.get(label, reduction_factor=int(simplify), max_error=error, voxel_centered=True)
        if len(mesh.faces):
            mesh.vertices = mesh.vertices + shift
            meshes[int(label)] = mesh
    return meshes


def load_fragment(path):
    """A fragment file (precomputed encoding) as a zmesh Mesh."""
    import zmesh

    return zmesh.Mesh.from_precomputed(Path(path).read_bytes())


def join_fragments(meshes, label: int):
    """One mesh of a label from its blocks' fragments, the vertices they share on block faces merged."""
    import zmesh

    mesh = zmesh.Mesh.concatenate(*meshes, id=int(label))
    return mesh.consolidate()


def encode(mesh, fmt: str) -> bytes:
    """``mesh`` in ``fmt`` (precomputed fragment, PLY or OBJ) by zmesh's encoders."""
    if fmt == "precomputed":
        return mesh.to_precomputed()
    if fmt == "ply":
        return mesh.to_ply()
    if fmt == "obj":
        return mesh.to_obj()
    raise FusionNetError(f"mesh format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def info_json(meta: dict) -> str:
    """The ``info`` of a precomputed legacy mesh directory, with this package's ``meta``."""
    return json.dumps({"@type": LEGACY_MESH, META_KEY: meta}, indent=1)


def read_mesh_dir(path) -> dict:
    """Check that ``path`` is a precomputed legacy mesh directory; its metadata and labels.

    Returns ``{"meta": {...} (may be empty), "labels": [...], "sizes": {label: fragment bytes}}``.
    """
    path = Path(path)
    if not path.exists():
        raise FusionNetError(f"meshes not found: {path}")
    if not path.is_dir():
        raise FusionNetError(f"--meshes {path} is not a directory (give the output folder of 'fusionnet-keras meshes')")
    try:
        info = json.loads((path / "info").read_text(encoding="utf-8"))
    except OSError:
        raise FusionNetError(f"--meshes {path} has no info file: not a precomputed mesh directory "
                             "(write one with 'fusionnet-keras meshes SEG OUT')") from None
    except ValueError:
        raise FusionNetError(f"--meshes {path}: its info file is not JSON") from None
    if not isinstance(info, dict) or info.get("@type") != LEGACY_MESH:
        kind = info.get("@type") if isinstance(info, dict) else None
        raise FusionNetError(f"--meshes {path} is not a precomputed legacy mesh directory "
                             f"(@type {kind!r}, expected {LEGACY_MESH!r})")
    labels, sizes = [], {}
    for manifest in path.glob("*:0"):
        name = manifest.name[:-2]
        if not name.isdigit():
            continue
        try:
            fragments = json.loads(manifest.read_text(encoding="utf-8"))["fragments"]
        except (OSError, ValueError, KeyError, TypeError):
            raise FusionNetError(f"--meshes {path}: manifest {manifest.name} is damaged") from None
        label = int(name)
        labels.append(label)
        sizes[label] = sum((path / f).stat().st_size for f in fragments if (path / f).is_file())
    if not labels:
        raise FusionNetError(f"--meshes {path} holds no meshes (no LABEL:0 manifests)")
    meta = info.get(META_KEY) if isinstance(info.get(META_KEY), dict) else {}
    return {"meta": meta, "labels": sorted(labels), "sizes": sizes}
