"""Compact ``.keras`` files: the weights stored in float16, loaded back as float32.

A ``.keras`` file is a zip of ``config.json``, ``metadata.json`` and
``model.weights.h5``. :func:`save_compact` saves the model as usual, then
rewrites the weights file with every float32 array stored as float16 (the
config still says float32, so Keras builds float32 variables and casts the
stored values on loading: nothing special is needed to load the file), and
deflates the zip. Half the bytes; the card states the storage dtype
(``weights_dtype``) and the scores measured with the stored file.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from fusionnet_keras.errors import FusionNetError

WEIGHTS_MEMBER = "model.weights.h5"


def _cast_weights(data: bytes, dtype) -> bytes:
    import h5py

    out = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                array = obj[()]
                if array.dtype == np.float32:
                    if array.size and np.max(np.abs(array)) > np.finfo(dtype).max:
                        raise FusionNetError(f"weight {name} exceeds the {np.dtype(dtype).name} range; store float32")
                    array = array.astype(dtype)
                dst.create_dataset(name, data=array)
            else:
                dst.require_group(name)
            dst[name].attrs.update(dict(obj.attrs))

        src.visititems(copy)
    return out.getvalue()


def save_compact(model, path, dtype: str = "float16") -> None:
    """Save ``model`` to ``path`` (``.keras``, atomically) with its float32 weights stored as ``dtype``."""
    import tempfile
    from pathlib import Path

    from fusionnet_keras.utils.atomic import atomic_path

    if dtype not in ("float16", "float32"):
        raise FusionNetError(f"weights can be stored as float16 or float32, not {dtype!r}")
    with tempfile.TemporaryDirectory() as tmpdir:
        plain = Path(tmpdir) / "model.keras"
        model.save(plain)
        with zipfile.ZipFile(plain) as zin, atomic_path(path, suffix=".keras") as tmp, \
                zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == WEIGHTS_MEMBER and dtype != "float32":
                    data = _cast_weights(data, np.dtype(dtype))
                zout.writestr(info.filename, data)


def stored_dtype(path) -> str:
    """The dtype the float weights of a ``.keras`` file are stored in (``float32``, ``float16``, or
    ``mixed`` when both occur)."""
    import h5py

    found = set()
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read(WEIGHTS_MEMBER)), "r") as f:
        def visit(_name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                found.add(obj.dtype.name)

        f.visititems(visit)
    return found.pop() if len(found) == 1 else ("mixed" if found else "float32")
