"""A local neuroglancer viewer of EM, predictions, affinities, a segmentation and its meshes.

The ``neuroglancer`` package serves its own client and the volumes
(``LocalVolume``: chunks read on demand from the lazy readers, so HDF5 and
zarr volumes are not loaded whole); a meshes folder written by ``fusionnet-keras
meshes`` is served by neuroglancer's static file server and attached to the
segmentation layer as a second source (``precomputed://``). Coordinates are
nm, ``x, y, z``, from the voxel size.

:func:`screenshot` renders the view in a headless Chromium/Chrome and saves
neuroglancer's own screenshot (taken once every visible chunk and mesh has
loaded).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np

from fusionnet_keras.errors import FusionNetError

#: Image dtypes neuroglancer shows as they are; others are shown as float32.
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32")
#: Segmentation dtypes neuroglancer shows as they are; other integers are shown as uint64.
LABEL_DTYPES = ("uint8", "uint16", "uint32", "uint64")
#: Browsers tried for :func:`screenshot`, in order (names on PATH).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Seconds :func:`screenshot` waits for the browser to render the view.
SCREENSHOT_TIMEOUT = 180
#: Meshes shown in 3-D at start (the largest ones); the others are a click away.
SHOWN_MESHES = 30
#: The 2-D section's larger side fills about this many pixels at start
SECTION_PIXELS = 450
#: The 3-D view: looking down on the volume from above one corner (a quaternion x, y, z, w) ...
PROJECTION_ORIENTATION = (0.28, -0.36, -0.08, 0.89)
#: ... with the volume's largest side filling about 1 / PROJECTION_ZOOM of the view's height
PROJECTION_ZOOM = 1.6
#: RGB shader of a 3-channel (affinity) image layer.
RGB_SHADER = ("void main() { emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)), "
              "toNormalized(getDataValue(2)))); }")


class _Source:
    """An array-like for ``LocalVolume``: reads through a lock (readers of one file are not thread-safe) and
    converts each chunk to the dtype neuroglancer shows."""

    def __init__(self, array, dtype):
        self._array = array
        self._lock = threading.Lock()
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key):
        with self._lock:
            data = np.asarray(self._array[key])
        return data.astype(self.dtype, copy=False)


@dataclass
class Layer:
    """One volume of the view: its name, kind (image, rgb, segmentation), path and opened volume."""

    name: str
    kind: str
    path: str
    volume: object = field(repr=False)

    @property
    def spatial_shape(self) -> tuple:
        return tuple(self.volume.shape[-3:])


def _open(path, what: str):
    from fusionnet_keras.data.io import open_volume

    volume = open_volume(path)
    if volume.ndim == 2:  # one section: a volume of depth 1
        volume.close()
        raise FusionNetError(f"{what} {volume.name} is a 2-D image; view shows 3-D volumes (Z, Y, X)")
    if volume.size == 0:
        volume.close()
        raise FusionNetError(f"{what} {volume.name} is empty (shape {volume.shape})")
    return volume


def open_layers(em, labels=None, predictions=(), affinities=None) -> list[Layer]:
    """The layers of a view, opened lazily and checked: 3-D volumes (affinities ``(C, Z, Y, X)``) of EM's shape."""
    layers = []
    try:
        volume = _open(em, "EM")
        if volume.ndim != 3:
            raise FusionNetError(f"EM {volume.name} must be 3-D (Z, Y, X), got shape {volume.shape}")
        layers.append(Layer("EM", "image", str(em), volume))
        for i, path in enumerate(predictions):
            volume = _open(path, "--predictions")
            if volume.ndim != 3:
                volume.close()
                raise FusionNetError(f"--predictions {volume.name} must be 3-D (Z, Y, X), got shape {volume.shape}")
            layers.append(Layer("predictions" if len(predictions) == 1 else f"predictions {i + 1}", "image",
                                str(path), volume))
        if affinities is not None:
            volume = _open(affinities, "--affinities")
            if volume.ndim != 4:
                volume.close()
                raise FusionNetError(f"--affinities {volume.name} must be 4-D (C, Z, Y, X), got shape {volume.shape}")
            layers.append(Layer("affinities", "rgb" if volume.shape[0] == 3 else "image", str(affinities), volume))
        if labels is not None:
            volume = _open(labels, "--labels")
            if volume.ndim != 3:
                volume.close()
                raise FusionNetError(f"--labels {volume.name} must be 3-D (Z, Y, X), got shape {volume.shape}")
            if volume.dtype.kind not in "iubf":
                volume.close()
                raise FusionNetError(f"--labels {volume.name} must be integer labels, got dtype {volume.dtype}")
            layers.append(Layer("segmentation", "segmentation", str(labels), volume))
        shape = layers[0].spatial_shape
        for layer in layers[1:]:
            if layer.spatial_shape != shape:
                raise FusionNetError(f"{layer.name} {layer.volume.name} has shape {tuple(layer.volume.shape)}, "
                                     f"EM {layers[0].volume.name} has {shape}: they must cover the same voxels")
    except BaseException:
        close_layers(layers)
        raise
    return layers


def close_layers(layers) -> None:
    for layer in layers:
        with contextlib.suppress(Exception):
            layer.volume.close()


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """A one-line error when ``port`` (not 0) cannot be listened on (in use, or not allowed)."""
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, int(port)))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FusionNetError(f"port {port} is in use; choose another with --port (0: any free port)") \
                    from None
            raise FusionNetError(f"cannot listen on port {port}: {e.strerror or e}") from None


def _dimensions(names, scales, units):
    import neuroglancer

    return neuroglancer.CoordinateSpace(names=list(names), units=list(units), scales=[float(s) for s in scales])


def _local_volume(layer: Layer, voxel_size):
    import neuroglancer

    dtype = np.dtype(layer.volume.dtype)
    if layer.kind == "segmentation":
        dtype = dtype if dtype.name in LABEL_DTYPES else np.dtype("uint64")
    elif dtype.name not in IMAGE_DTYPES:
        dtype = np.dtype("float32")
    data = _Source(layer.volume.lazy, dtype)
    if layer.volume.ndim == 4:
        dims = _dimensions(["c^", "z", "y", "x"], [1, *voxel_size], ["", "nm", "nm", "nm"])
    else:
        dims = _dimensions(["z", "y", "x"], voxel_size, ["nm"] * 3)
    return neuroglancer.LocalVolume(data, dimensions=dims, volume_type="segmentation" if layer.kind ==
                                    "segmentation" else "image")


def shown_segments(mesh_info: dict | None, limit: int = SHOWN_MESHES) -> list[int]:
    """The labels whose meshes are shown at start: the ``limit`` largest (by their fragments' bytes)."""
    if not mesh_info:
        return []
    sizes = mesh_info["sizes"]
    return sorted(sorted(sizes, key=lambda label: (-sizes[label], label))[:limit])


def build_viewer(layers, voxel_size, meshes_url: str | None = None, mesh_info: dict | None = None,
                 shown: int = SHOWN_MESHES):
    """A ``neuroglancer.Viewer`` with ``layers`` at ``voxel_size`` (z, y, x nm) and the meshes attached."""
    import neuroglancer

    viewer = neuroglancer.Viewer()
    shape = layers[0].spatial_shape
    with viewer.txn() as s:
        s.dimensions = _dimensions(["x", "y", "z"], voxel_size[::-1], ["nm"] * 3)
        s.position = [shape[2] / 2, shape[1] / 2, shape[0] / 2]
        s.cross_section_background_color = "#000000"
        s.projection_background_color = "#000000"
        for layer in layers:
            source = _local_volume(layer, voxel_size)
            if layer.kind == "segmentation":
                # the meshes come from the meshes folder (neuroglancer's own, made on request, need the array in
                # memory): the volume's "meshes" subsource is off
                sources = [neuroglancer.LayerDataSource(url=source, subsources={"meshes": False})]
                if meshes_url is not None:
                    sources.append(neuroglancer.LayerDataSource(url=f"precomputed://{meshes_url}"))
                s.layers[layer.name] = neuroglancer.SegmentationLayer(
                    source=sources, segments=shown_segments(mesh_info, shown), not_selected_alpha=0.3,
                    selected_alpha=0.4)
            elif layer.kind == "rgb":
                s.layers[layer.name] = neuroglancer.ImageLayer(source=source, shader=RGB_SHADER)
            else:
                s.layers[layer.name] = neuroglancer.ImageLayer(source=source)
            s.layers[layer.name].visible = layer.name in ("EM", "segmentation")  # the others a click away
        s.layout = "xy-3d" if meshes_url is not None else "xy"
        s.show_slices = False  # the 3-D view shows the meshes, not the sections
        extent = max(n * v for n, v in zip(shape, voxel_size))  # nm
        s.cross_section_scale = max(shape[1] * voxel_size[1], shape[2] * voxel_size[2]) / min(voxel_size) / SECTION_PIXELS
        s.projection_scale = PROJECTION_ZOOM * extent / min(voxel_size)
        s.projection_orientation = PROJECTION_ORIENTATION
    return viewer


@contextlib.contextmanager
def serve(layers, voxel_size, *, port: int = 0, meshes=None, shown: int = SHOWN_MESHES, host: str = "127.0.0.1"):
    """Start the viewer (and the meshes' file server); yields the viewer; stops both at the end.

    Args:
        layers: from :func:`open_layers`.
        voxel_size: (z, y, x) nm.
        port: the viewer's port (0: any free port).
        meshes: a precomputed mesh folder (checked by
            :func:`~fusionnet_keras.viewing.meshes.read_mesh_dir`), or None.
        shown: the meshes shown at start (the largest).
        host: the address to listen on (the default serves this machine only).
    """
    import neuroglancer
    import neuroglancer.server

    from fusionnet_keras.viewing.meshes import read_mesh_dir

    mesh_info = read_mesh_dir(meshes) if meshes is not None else None
    check_port(port, host)
    neuroglancer.set_server_bind_address(host, bind_port=int(port))
    files = None
    try:
        try:
            neuroglancer.server.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FusionNetError(f"port {port} is in use; choose another with --port (0: any free port)") \
                    from None
            raise
        meshes_url = None
        if meshes is not None:
            from neuroglancer.static_file_server import StaticFileServer

            files = StaticFileServer(os.fspath(meshes), bind_address=host, daemon=True)
            meshes_url = files.url
        yield build_viewer(layers, voxel_size, meshes_url, mesh_info, shown)
    finally:
        _stop_servers(files, neuroglancer.server, timeout=STOP_TIMEOUT)


#: seconds ``serve`` waits for the servers to stop (a request still being answered can hold them up; the
#: command exits anyway, its threads with it)
STOP_TIMEOUT = 10.0


def _stop_servers(files, server, timeout: float) -> None:
    """Stop the meshes' file server and the viewer's server in a daemon thread, waiting at most ``timeout`` s."""
    import threading

    def stop():
        for thing in (files, server):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.stop()

    thread = threading.Thread(target=stop, name="stop-viewer", daemon=True)
    thread.start()
    thread.join(timeout)


def find_browser() -> str:
    """The path of a Chromium or Chrome on PATH; a one-line error naming how to install one otherwise."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise FusionNetError("a screenshot needs Chromium or Chrome on PATH (none of "
                         f"{', '.join(BROWSERS)} found; on Debian/Ubuntu: apt-get install chromium)")


def browser_command(browser: str, url: str, profile: str, size) -> list[str]:
    """A headless browser that renders WebGL in software (SwiftShader) and fetches nothing but ``url``."""
    flags = ["--headless", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
             "--use-angle=swiftshader", "--enable-unsafe-swiftshader", f"--user-data-dir={profile}",
             f"--window-size={int(size[0])},{int(size[1])}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Chromium refuses to run its sandbox as root
        flags.append("--no-sandbox")
    return [browser, *flags, url]


def _stop(process) -> None:
    """End the browser and the processes it started (its own session's process group)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def screenshot(viewer, path, size=(1200, 700), timeout: float = SCREENSHOT_TIMEOUT, browser: str | None = None):
    """Render ``viewer`` in a headless browser and write neuroglancer's screenshot (PNG) to ``path`` atomically.

    Neuroglancer answers once every visible chunk and mesh has loaded; a
    browser that gives no answer within ``timeout`` seconds is a one-line error.
    """
    from fusionnet_keras.utils.atomic import atomic_path

    browser = browser or find_browser()
    done, reply, left = threading.Event(), [], float(timeout)
    with viewer.config_state.txn() as s:
        s.show_ui_controls = False
        s.show_panel_borders = False
        s.viewer_size = [int(size[0]), int(size[1])]

    def answer(state):
        reply.append(state)
        done.set()

    with tempfile.TemporaryDirectory(prefix="fusionnet-view-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(browser_command(browser, str(viewer), profile, size), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            viewer.async_screenshot(answer)
            while not done.wait(0.5):
                left -= 0.5
                if process.poll() is not None:
                    raise FusionNetError(f"the browser {browser} exited (status {process.returncode}) before "
                                         "rendering the view")
                if left <= 0:
                    raise FusionNetError(f"the browser {browser} did not render the view in time ({timeout:g} s)")
        finally:
            _stop(process)
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(reply[0].screenshot.image)
    return path
