"""Tests of fusionnet_keras.data.datasets: pixel checksums, offline behaviour, the real ISBI 2012 files."""

import hashlib

import numpy as np
import pytest
import tifffile

from fusionnet_keras.data import datasets
from fusionnet_keras.data.datasets import ISBI_FILES, isbi2012, pixel_sha256
from fusionnet_keras.errors import FusionNetError


def test_pixel_sha256_of_a_known_array():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert pixel_sha256(a) == hashlib.sha256(bytes(range(6))).hexdigest()
    assert pixel_sha256(a) == "17e88db187afd62c16e5debf3e6527cd006bc012bc90b51a810cd80c2d511f43"
    # C order of the pixels, whatever the memory layout
    t = np.arange(6, dtype=np.uint8).reshape(3, 2).T
    assert not t.flags.c_contiguous
    assert pixel_sha256(t) == hashlib.sha256(t.copy(order="C").tobytes()).hexdigest()
    # the dtype is part of the pixels
    assert pixel_sha256(a.astype(np.uint16)) != pixel_sha256(a)


def test_pixel_sha256_of_empty_array():
    assert pixel_sha256(np.zeros((0,), np.uint8)) == hashlib.sha256(b"").hexdigest()


def _fake_isbi(folder, rng):
    """Write three small uint8 stacks under the ISBI names; return their pixel digests."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in ISBI_FILES:
        arr = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
        tifffile.imwrite(folder / name, arr, photometric="minisblack")
        digests[name] = pixel_sha256(arr)
    return digests


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def offline(url, target, timeout=30):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets, "_download", offline)
    return calls


def test_isbi2012_verifies_pixel_checksums(tmp_path, rng, monkeypatch, no_network):
    folder = tmp_path / "isbi2012"
    digests = _fake_isbi(folder, rng)
    monkeypatch.setattr(datasets, "ISBI_FILES", digests)
    assert isbi2012(root=folder) == folder
    assert no_network == []  # nothing missing: no download attempted

    # a re-encoded file with the same pixels still passes (the check is on pixels, not bytes)
    arr = tifffile.imread(folder / "train-labels.tif")
    tifffile.imwrite(folder / "train-labels.tif", arr, photometric="minisblack", compression="zlib")
    assert isbi2012(root=folder) == folder

    # one changed pixel is refused, naming the file
    arr[1, 2, 3] ^= 1
    tifffile.imwrite(folder / "train-labels.tif", arr, photometric="minisblack")
    with pytest.raises(FusionNetError, match="checksum") as e:
        isbi2012(root=folder)
    assert "train-labels.tif" in str(e.value)
    # verify=False skips the check
    assert isbi2012(root=folder, verify=False) == folder


def test_isbi2012_wrong_pixels_against_the_real_checksums(tmp_path, rng, no_network):
    folder = tmp_path / "isbi2012"
    _fake_isbi(folder, rng)
    with pytest.raises(FusionNetError, match="does not match"):
        isbi2012(root=folder)


def test_isbi2012_unreadable_file_is_an_error(tmp_path, rng, monkeypatch, no_network):
    folder = tmp_path / "isbi2012"
    digests = _fake_isbi(folder, rng)
    monkeypatch.setattr(datasets, "ISBI_FILES", digests)
    (folder / "test-volume.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(FusionNetError) as e:
        isbi2012(root=folder)
    assert "test-volume.tif" in str(e.value)


def test_isbi2012_missing_files_offline(tmp_path, no_network):
    folder = tmp_path / "data" / "isbi2012"
    with pytest.raises(FusionNetError) as e:
        isbi2012(root=folder)
    msg = str(e.value)
    assert str(folder) in msg
    assert "train-volume.tif" in msg
    assert "FUSIONNET_DATA_DIR" in msg
    assert "\n" not in msg
    assert len(no_network) == 1  # gave up after the first failed download
    # no partial downloads left behind
    assert not folder.exists() or list(folder.iterdir()) == []


def test_isbi2012_missing_files_without_download(tmp_path, rng, no_network):
    folder = tmp_path / "isbi2012"
    _fake_isbi(folder, rng)
    (folder / "test-volume.tif").unlink()
    with pytest.raises(FusionNetError, match="test-volume.tif") as e:
        isbi2012(root=folder, download=False)
    assert str(folder) in str(e.value)
    assert "train-volume.tif" not in str(e.value)
    assert no_network == []


def test_isbi2012_default_folder_is_under_the_data_dir(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(tmp_path / "somewhere"))
    with pytest.raises(FusionNetError) as e:
        isbi2012(download=False)
    assert str(tmp_path / "somewhere" / "isbi2012") in str(e.value)


def test_failed_download_leaves_no_partial_file(tmp_path, monkeypatch):
    """A connection that breaks mid-transfer leaves neither the target nor a temporary file."""
    import io

    class Broken(io.RawIOBase):
        def __init__(self):
            self.sent = False

        def readable(self):
            return True

        def readinto(self, b):
            if not self.sent:
                self.sent = True
                b[:4] = b"II*\x00"
                return 4
            raise ConnectionResetError("connection reset by peer")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout=30: Broken())
    with pytest.raises(OSError):
        datasets._download("http://example.invalid/train-volume.tif", tmp_path / "train-volume.tif")
    assert list(tmp_path.iterdir()) == []


def test_isbi2012_real_data_verifies(isbi_dir, no_network):
    assert isbi2012(root=isbi_dir, download=False) == isbi_dir
    assert no_network == []
