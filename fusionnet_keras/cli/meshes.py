"""``fusionnet-keras meshes``: a mesh per label (zmesh), for neuroglancer (precomputed) or as PLY/OBJ files."""

from __future__ import annotations

import time

import click

from fusionnet_keras.cli.options import (
    blockwise_options,
    handle_errors,
    overwrite_option,
    voxel_size_option,
)

#: The voxel size (nm) of a volume that carries none and was given none.
UNKNOWN_VOXEL_SIZE = (1.0, 1.0, 1.0)


def voxel_size_or_unit(inputs, given) -> tuple[tuple, str]:
    """The voxel size of ``inputs`` (``given`` first, then their metadata; 1 nm where none is known) and its
    description for the command's summary line (which says where none was known)."""
    from fusionnet_keras.data.io.voxel_sizes import voxel_size_of

    vs = voxel_size_of(inputs, given)
    known = vs is not None
    vs = tuple(vs) if known else UNKNOWN_VOXEL_SIZE
    text = " x ".join(f"{v:g}" for v in vs) + " nm"
    return vs, text if known else f"{text} (none in the input: give --voxel-size Z,Y,X)"


@click.command()
@click.argument("labels", metavar="SEG")
@click.argument("out", metavar="OUT")
@click.option("--format", "fmt", type=click.Choice(["precomputed", "ply", "obj"]), default="precomputed",
              show_default=True,
              help="precomputed: neuroglancer's mesh folder (info, LABEL:0 manifests, per-block fragments), "
                   "for 'fusionnet-keras view --meshes OUT'; ply/obj: one file LABEL.ply/.obj per label.")
@click.option("--simplify", type=click.IntRange(0), default=10, show_default=True,
              help="zmesh's triangle reduction factor (0: keep every marching-cubes triangle).")
@click.option("--max-error", type=click.FloatRange(0), default=None, metavar="NM",
              help="The most the simplification may move a vertex, in nm. Default: the largest voxel side.")
@voxel_size_option(help="Voxel size in nm as Z,Y,X (e.g. 40,10,10); the meshes' vertices are in nm. "
                        "Default: SEG's own (OME-Zarr scale, HDF5 resolution, ImageJ TIFF spacing), else 1 nm.")
@blockwise_options(writes="SEG is read by block, each block's meshes are fragments that neuroglancer joins "
                          "(work files in OUT.work/),",
                   block_help="Block shape for blockwise meshing [default: 64,256,256].")
@overwrite_option
@handle_errors
def meshes(labels, out, fmt, simplify, max_error, voxel_size, workers, block, scheduler, overwrite):
    """A mesh of every label of SEG (Z, Y, X; 0 = background), written to the folder OUT.

    zmesh's marching cubes, simplified, with the vertices in nm (x, y, z), so
    that 'fusionnet-keras view EM --labels SEG --meshes OUT' shows the neurons
    in 3-D. With --workers, --block or --scheduler, volumes larger than memory
    run block by block on Dask; running the same command again finishes an
    interrupted run.
    """
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.job import blockwise_requested
    from fusionnet_keras.blockwise.meshes import DEFAULT_BLOCK, check_mesh_output, mesh_volume

    start = time.perf_counter()
    check_mesh_output(out, labels, fmt, overwrite)
    vs, vs_text = voxel_size_or_unit([labels], voxel_size)
    blockwise = blockwise_requested(workers, block, scheduler)
    shape = None if not blockwise else parse_block(block or DEFAULT_BLOCK)
    info = mesh_volume(labels, out, vs, fmt=fmt, simplify=simplify, max_error=max_error, block=shape,
                       workers=(workers or 1) if blockwise else 0, scheduler=scheduler, overwrite=overwrite)
    click.echo(f"{info['labels']} meshes ({info['fragments']} fragments from {info['blocks']} "
               f"block{'s' if info['blocks'] != 1 else ''}), voxel size {vs_text}; "
               f"wrote {out} ({fmt}, {time.perf_counter() - start:.1f} s)")
