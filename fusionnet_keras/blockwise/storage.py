"""Chunked outputs of blockwise jobs and their done markers.

Outputs are OME-Zarr images (zarr format 3 and NGFF 0.5, or 2 and NGFF 0.4
inside an existing format-2 group; see :mod:`fusionnet_keras.data.io.ome`):
the array written is level 0 (``<output>/0``), created up front with one chunk per block (a block write touches whole chunks
only, so no two workers ever write one chunk; zarr writes each chunk file
atomically). Beside the chunks, in ``<array>/.blocks/``, every finished block
gets a JSON marker, written atomically *after* its data: a block is done only
when its marker names this job (the run's signature) and the block's region,
so a killed run never leaves a half-written block marked done, and a run with
other settings never takes another run's blocks for its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from fusionnet_keras.data.io.paths import ZARR_EXTS, _display, parse_path, user_errors
from fusionnet_keras.errors import FusionNetError, OutputExistsError
from fusionnet_keras.utils.atomic import atomic_write_text

MARKERS = ".blocks"


def signature(settings: dict) -> str:
    """A short hash of a job's settings (JSON); markers of another signature are not this job's."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_job(job_file, sig: str) -> bool:
    """Whether ``job_file`` (JSON written when a job's output was created) names the signature ``sig``."""
    try:
        job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(job, dict) and job.get("signature") == sig


class DoneMarkers:
    """One JSON file per finished block in ``root``, tagged with the job's signature.

    Examples:
        >>> import tempfile
        >>> from fusionnet_keras.inference.grid import BlockGrid
        >>> markers = DoneMarkers(Path(tempfile.mkdtemp()) / "m", "abc")
        >>> block = next(iter(BlockGrid((4, 4), (2, 2))))
        >>> markers.is_done(block), markers.mark(block, {"n": 3}), markers.is_done(block)
        (False, None, True)
    """

    def __init__(self, root, sig: str):
        self.root = Path(root)
        self.signature = sig

    def _path(self, block) -> Path:
        return self.root / f"{block.id}.json"

    def read(self, block) -> dict | None:
        """The marker of ``block`` if it is a complete marker of this job, else None."""
        try:
            marker = json.loads(self._path(block).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (not isinstance(marker, dict) or marker.get("signature") != self.signature
                or marker.get("block") != block.to_json()):
            return None
        return marker

    def is_done(self, block) -> bool:
        return self.read(block) is not None

    def mark(self, block, result=None, worker=None) -> None:
        """Mark ``block`` done (call after its data are written), with a small JSON ``result``."""
        marker = {"signature": self.signature, "block": block.to_json(), "result": result, "worker": worker}
        atomic_write_text(self._path(block), json.dumps(marker))

    def result(self, block):
        marker = self.read(block)
        return None if marker is None else marker.get("result")

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def zarr_target(path, what: str = "output") -> tuple[Path, str | None]:
    """``(store, key)`` of a zarr path (``x.zarr`` or ``x.zarr:group/array``); other formats refused."""
    file, key = parse_path(path)
    if file.suffix.lower() not in ZARR_EXTS:
        raise FusionNetError(
            f"blockwise {what} must be a zarr array (x.zarr or x.zarr:group/array), got {_display(file, key)}"
        )
    return file, key


def _array_dir(file: Path, key: str | None) -> Path:
    return file / key if key else file


def _writable(path: Path, display: str) -> None:
    """Refuse a read-only output (no write permission, or no write bit at all: respected even for root)."""
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK) or not ancestor.stat().st_mode & 0o222:
        raise FusionNetError(f"cannot write {display}: {ancestor} is read-only")


def _group_format(file: Path) -> int:
    import zarr

    if (file / ".zgroup").exists():
        return 2
    if (file / "zarr.json").exists():
        return int(getattr(zarr.open_group(str(file), mode="r").metadata, "zarr_format", 3))
    return 3


class BlockOutput:
    """A zarr array written block by block, with its done markers.

    :meth:`open` creates the array (chunks = the block shape) or, to resume,
    opens the existing one after checking its shape, dtype and chunks and that
    its markers belong to the same job; anything else is refused without
    ``overwrite`` and nothing finished is touched.
    """

    def __init__(self, path, shape, dtype, chunks, sig: str, fill_value=0, meta=None, array_options=None):
        self.file, self.image = zarr_target(path)
        self.display = _display(self.file, self.image)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(int(min(c, s)) for c, s in zip(chunks, self.shape))
        self.fill_value = fill_value
        #: the :class:`~fusionnet_keras.data.io.ome.ImageMeta` of an OME-Zarr output; None: a plain array (work files)
        self.meta = meta
        #: more keywords of a plain array's ``create_array`` (e.g. the dimension names of a pyramid level)
        self.array_options = dict(array_options or {})
        #: the output's folder (the image group, or the plain array)
        self.root = _array_dir(self.file, self.image)
        #: the array written: level 0 of the image, or the plain array
        self.key = self.image if meta is None else f"{self.image}/0" if self.image else "0"
        self.dir = _array_dir(self.file, self.key)
        self.markers = DoneMarkers(self.dir / MARKERS, sig)

    def __getstate__(self):
        return dict(self.__dict__, _array=None)

    # -- creating or resuming ----------------------------------------------------
    def _existing(self):
        import zarr

        with user_errors(f"cannot open the existing output {self.display}"):
            node = zarr.open(store=str(self.file), mode="r", path=self.image or "")
            if self.meta is not None and isinstance(node, zarr.Group) and "0" in node:
                node = node["0"]
            elif self.meta is not None and not isinstance(node, zarr.Group):  # a plain array (an older output)
                raise OutputExistsError(f"output exists: {self.display} (use --overwrite)")
        if isinstance(node, zarr.Group):
            raise FusionNetError(f"output {self.display} is a zarr group, not an array")
        return node

    def _job_file(self) -> Path:
        return self.markers.root / "job.json"

    def _same_job(self) -> bool:
        return same_job(self._job_file(), self.markers.signature)

    def _check_existing(self, node) -> None:
        shape, dtype = tuple(node.shape), np.dtype(node.dtype)
        chunks = tuple(getattr(node, "chunks", ()))
        if shape != self.shape or dtype != self.dtype:
            raise FusionNetError(
                f"output {self.display} exists with shape {shape} and dtype {dtype}; this job writes shape "
                f"{self.shape} and dtype {self.dtype} (use --overwrite or another output)"
            )
        if chunks != self.chunks:
            raise FusionNetError(
                f"output {self.display} is chunked {chunks}, the blocks are {self.chunks}; resume with "
                f"--block {','.join(map(str, chunks))} or use --overwrite"
            )

    def check(self, overwrite: bool = False) -> bool:
        """Refuse what :meth:`open` would refuse, creating nothing; returns whether the array exists."""
        _writable(self.root, self.display)
        exists = self.root.exists() and any(self.root.iterdir())
        if exists and not overwrite:
            self._check_existing(self._existing())
            if not self._same_job():
                raise OutputExistsError(
                    f"output exists: {self.display} (use --overwrite; a run is resumed only with the same settings)"
                )
            _writable(self.markers.root, self.display)
        return exists

    def open(self, overwrite: bool = False):
        """Create the array, or reopen it to resume (same job); anything else refused (:meth:`check`)."""
        import zarr

        exists = self.check(overwrite)
        if exists and not overwrite:
            return self
        with user_errors(f"cannot create {self.display}"):
            if exists:
                self.markers.clear()
            if self.meta is not None:
                self._create_image()
            elif self.key is None:
                zarr.create_array(store=str(self.file), shape=self.shape, dtype=self.dtype, chunks=self.chunks,
                                  fill_value=self.fill_value, overwrite=True)
            else:
                fmt = _group_format(self.file) if self.file.exists() else 3
                group = zarr.open_group(str(self.file), mode="a", zarr_format=fmt)
                group.create_array(self.key, shape=self.shape, dtype=self.dtype, chunks=self.chunks,
                                   fill_value=self.fill_value, overwrite=True, **self.array_options)
            atomic_write_text(self._job_file(), json.dumps({"signature": self.markers.signature}))
        return self

    def _create_image(self) -> None:
        """The OME-Zarr image group (replacing whatever was there: an older plain array, a pyramid) with
        its metadata and an empty level 0."""
        import zarr

        from fusionnet_keras.data.io.ome import array_options, write_attributes

        if self.image is None:
            group = zarr.open_group(str(self.file), mode="w", zarr_format=3)
        else:
            fmt = _group_format(self.file) if self.file.exists() else 3
            root = zarr.open_group(str(self.file), mode="a", zarr_format=fmt)
            if self.root.exists():
                shutil.rmtree(self.root)
            group = root.create_group(self.image)
        write_attributes(group, len(self.shape), self.meta)
        group.create_array("0", shape=self.shape, dtype=self.dtype, chunks=self.chunks, fill_value=self.fill_value,
                           overwrite=True, **array_options(group, len(self.shape), self.meta))

    # -- writing ---------------------------------------------------------------------
    @property
    def array(self):
        """The zarr array, opened for writing (once per process)."""
        if getattr(self, "_array", None) is None:
            import zarr

            with user_errors(f"cannot open {self.display}"):
                self._array = zarr.open_array(store=str(self.file), path=self.key or "", mode="r+")
        return self._array

    def write(self, block, data) -> None:
        """Write ``data`` (the block's region, plus any leading axes) into the array."""
        index = (slice(None),) * (len(self.shape) - len(block.region)) + tuple(block.region)
        with user_errors(f"cannot write {self.display}"):
            self.array[index] = data


class WorkDir:
    """A job's folder of work files (``OUT.work/``), tagged with the job's signature like a :class:`BlockOutput`.

    :meth:`check` refuses another job's folder without ``overwrite``;
    :meth:`open` creates the folder, or keeps it to resume the same job.
    """

    def __init__(self, path, sig: str):
        self.path = Path(path)
        self.signature = sig

    def __fspath__(self) -> str:  # a path: claimed for a run like one (see blockwise.engine.session)
        return str(self.path)

    def check(self, overwrite: bool = False) -> bool:
        """Refuse what :meth:`open` would refuse, creating nothing; returns whether the folder holds this job."""
        _writable(self.path, str(self.path))
        same = self.path.exists() and same_job(self.path / "job.json", self.signature)
        if self.path.exists() and not (same or overwrite):
            raise OutputExistsError(f"work files of another run exist: {self.path} (use --overwrite, or remove them)")
        return same

    def open(self, overwrite: bool = False) -> Path:
        """The folder, created afresh unless it holds this job's work (kept to resume); its path."""
        if not self.check(overwrite) or overwrite:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            atomic_write_text(self.path / "job.json", json.dumps({"signature": self.signature}))
        return self.path
