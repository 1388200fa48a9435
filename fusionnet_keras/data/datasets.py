"""Locating and verifying the public datasets (never stored in the repository)."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import DATA_DIR_ENV, data_dir
from fusionnet_keras.utils.atomic import atomic_path

ISBI_FILES = {
    # SHA-256 of the decoded uint8 pixels, shape (30, 512, 512), C order
    "train-volume.tif": "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760",
    "train-labels.tif": "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36",
    "test-volume.tif": "1b58fa7ec1d0ff9d39a855622db3ff66a97863036339b0d04be51b2f5a99b0e9",
}
ISBI_URL = "http://brainiac2.mit.edu/isbi_challenge/sites/default/files/{name}"


def pixel_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _download(url: str, target: Path, timeout=30) -> None:
    """Fetch ``url`` to ``target`` atomically; a failed transfer leaves no partial file."""
    with atomic_path(target, suffix=".part") as part, open(part, "wb") as f, \
            urllib.request.urlopen(url, timeout=timeout) as r:
        shutil.copyfileobj(r, f)


def isbi2012(root=None, download=True, verify=True) -> Path:
    """Return the folder holding the ISBI 2012 files, downloading them if missing and possible.

    Every file is verified by the SHA-256 of its decoded pixels. Offline with the
    files missing, raises a :class:`FusionNetError` saying where to put them.
    """
    from fusionnet_keras.data.io import read_volume

    folder = Path(root) if root is not None else data_dir() / "isbi2012"
    missing = [n for n in ISBI_FILES if not (folder / n).exists()]
    if missing and download:
        folder.mkdir(parents=True, exist_ok=True)
        for name in list(missing):
            try:
                _download(ISBI_URL.format(name=name), folder / name)
                missing.remove(name)
            except (OSError, http.client.HTTPException):  # offline, refused, truncated transfer
                break
    if missing:
        raise FusionNetError(
            f"ISBI 2012 data missing: {', '.join(missing)} not in {folder} and could not be downloaded; "
            f"put the challenge files (http://brainiac2.mit.edu/isbi_challenge/) there or set {DATA_DIR_ENV}"
        )
    if verify:
        for name, digest in ISBI_FILES.items():
            if pixel_sha256(read_volume(folder / name)) != digest:
                raise FusionNetError(f"{folder / name}: pixel checksum does not match the ISBI 2012 data")
    return folder
