"""HDF5 files and zarr groups as containers: opening an HDF5 file while another process writes it, and the
datasets (arrays) a container holds (temporaries of interrupted writes left out)."""

from __future__ import annotations

from fusionnet_keras.data.io.paths import _listing, natural_sort_key
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.atomic import is_temporary_name


def only_member(names: list, kind: str, path) -> str:
    """The dataset (array) of a container given without ``:NAME``: its only one, else an error."""
    if len(names) == 1:
        return names[0]
    if not names:
        raise FusionNetError(f"no {kind} in {path}")
    raise FusionNetError(f"{path} holds several {kind} ({_listing(names)}); choose one as {path}:NAME")


def open_h5(path, mode: str = "r", timeout: float | None = None):
    """``h5py.File(path, mode)``, waiting while another process has the file open for writing.

    HDF5 locks a file while a writer has it open (and a writer while readers
    have); instead of failing at once, retry for up to ``timeout`` seconds
    (default :func:`fusionnet_keras.settings.lock_timeout`).
    """
    import h5py

    from fusionnet_keras.utils.locking import wait_until

    def attempt():
        try:
            return h5py.File(str(path), mode)
        except OSError as e:
            if isinstance(e, BlockingIOError) or "unable to lock file" in str(e):  # another process has it
                return None
            raise

    return wait_until(attempt, str(path), timeout)


def h5_datasets(h5file) -> list[str]:
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not is_temporary_name(name.rpartition("/")[2]):
            found.append(name)

    h5file.visititems(visit)
    return sorted(found, key=natural_sort_key)


def zarr_is_group(node) -> bool:
    import zarr

    return isinstance(node, zarr.Group)


def zarr_arrays(group) -> list[str]:
    names = []
    if hasattr(group, "members"):  # zarr v3
        for name, node in group.members(max_depth=None):
            if not zarr_is_group(node):
                names.append(name)
    else:  # zarr v2
        group.visititems(lambda name, node: names.append(name) if not zarr_is_group(node) else None)
    names = [n for n in names if not any(is_temporary_name(part) for part in n.split("/"))]
    return sorted(names, key=natural_sort_key)
