"""``fusionnet-keras view``: EM, predictions, affinities, a segmentation and its meshes in neuroglancer."""

from __future__ import annotations

import click

from fusionnet_keras.cli.meshes import voxel_size_or_unit
from fusionnet_keras.cli.options import handle_errors, overwrite_option, voxel_size_option
from fusionnet_keras.errors import FusionNetError


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        width = height = 0
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise FusionNetError(f"--size must be WIDTHxHEIGHT in pixels (16-8192 each), e.g. 1200x700, got {text!r}")
    return width, height


@click.command()
@click.argument("em", metavar="EM")
@click.option("--labels", default=None, metavar="SEG", help="Segmentation (Z, Y, X): a segmentation layer.")
@click.option("--meshes", default=None, metavar="DIR",
              help="Meshes of SEG written by 'fusionnet-keras meshes SEG DIR' (precomputed): shown in 3-D.")
@click.option("--predictions", multiple=True, metavar="P",
              help="A probability map (Z, Y, X), e.g. of 'predict': an image layer (repeat for several).")
@click.option("--affinities", default=None, metavar="AFF",
              help="Affinities (3, Z, Y, X) of 'affinities': an image layer, z/y/x as red/green/blue.")
@voxel_size_option(help="Voxel size in nm as Z,Y,X (e.g. 40,10,10). Default: the inputs' own (OME-Zarr scale, "
                        "HDF5 resolution, ImageJ TIFF spacing, the first found), else 1 nm.")
@click.option("--show", type=click.IntRange(0), default=30, show_default=True, metavar="N",
              help="Meshes shown in 3-D at start: the N largest neurons (click a segment to add its mesh).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The viewer's port on 127.0.0.1 (0: any free port).")
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option("--screenshot", default=None, type=click.Path(dir_okay=False), metavar="PNG",
              help="Render the view in a headless Chromium/Chrome, write this PNG and exit (no server left running).")
@click.option("--size", default="1200x700", show_default=True, metavar="WxH", help="The screenshot's size in pixels.")
@overwrite_option
@handle_errors
def view(em, labels, meshes, predictions, affinities, voxel_size, show, port, no_browser, screenshot, size, overwrite):
    """Serve a local neuroglancer viewer of the EM volume EM (Z, Y, X), with --labels, --meshes, ...

    Prints the URL, opens it in a browser (unless --no-browser) and serves
    until Ctrl-C. Volumes are read chunk by chunk as the viewer asks (HDF5 and
    zarr are not loaded whole). The largest neurons' meshes are shown in 3-D
    (--show); double-click a segment in a 2-D view to add or remove its mesh.
    """
    import time

    from fusionnet_keras.viewing import viewer as ng

    if meshes is not None and labels is None:
        raise FusionNetError("--meshes needs --labels (the segmentation the meshes were made from)")
    if screenshot is not None:
        from fusionnet_keras.data.io.paths import check_not_input
        from fusionnet_keras.utils.atomic import check_overwrite

        pixels = _size(size)
        check_not_input(screenshot, em, labels, affinities, *predictions)
        check_overwrite(screenshot, overwrite)
        ng.find_browser()
    layers = ng.open_layers(em, labels, predictions, affinities)
    try:
        vs, vs_text = voxel_size_or_unit([em, labels, *predictions, affinities], voxel_size)
        _check_meshes(meshes, layers, vs)
        with ng.serve(layers, vs, port=port, meshes=meshes, shown=show) as viewer:
            if screenshot is not None:
                ng.screenshot(viewer, screenshot, pixels)
                click.echo(f"wrote {screenshot} ({pixels[0]} x {pixels[1]}, voxel size {vs_text})")
                return
            click.echo(f"neuroglancer viewer (voxel size {vs_text}): {viewer}")
            click.echo("serving until Ctrl-C")
            if not no_browser:
                import webbrowser

                webbrowser.open(str(viewer))
            import signal

            # Ctrl-C stops the server even where SIGINT was inherited as ignored (a job started with `&`
            # by a non-interactive shell): Python only raises KeyboardInterrupt where the handler is its own
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                click.echo("stopped")
    finally:
        ng.close_layers(layers)


def _check_meshes(meshes, layers, voxel_size) -> None:
    """Refuse meshes made of another volume shape; warn when they were made at another voxel size."""
    if meshes is None:
        return
    from fusionnet_keras.viewing.meshes import read_mesh_dir

    meta = read_mesh_dir(meshes)["meta"]
    shape = tuple(layers[-1].spatial_shape)
    if meta.get("shape") is not None and tuple(meta["shape"]) != shape:
        raise FusionNetError(f"--meshes {meshes} were made of a volume of shape {tuple(meta['shape'])}, "
                             f"--labels has shape {shape}")
    made = meta.get("voxel_size_nm")
    if made is not None and any(abs(a - b) > 1e-6 * max(abs(b), 1) for a, b in zip(made, voxel_size)):
        click.echo(f"note: --meshes {meshes} were made at voxel size {','.join(f'{v:g}' for v in made)} nm, "
                   f"the view uses {','.join(f'{v:g}' for v in voxel_size)}: they will not line up", err=True)
