"""Tests for fusionnet_keras.data.io: reading, normalising and atomically writing volumes."""

import os

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from fusionnet_keras.data import io
from fusionnet_keras.data.io import volumes as io_volumes
from fusionnet_keras.data.io import writers as io_writers
from fusionnet_keras.errors import FusionNetError, OutputExistsError

SHAPE = (3, 64, 64)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def vol8(rng):
    return rng.integers(0, 256, SHAPE, dtype=np.uint8)


def assert_one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------
# parse_path
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, path, key",
    [
        ("a/b.h5:raw", "a/b.h5", "raw"),
        ("b.HDF5:/grp/ds", "b.HDF5", "grp/ds"),
        ("v.zarr:group/arr", "v.zarr", "group/arr"),
        ("v.zarr", "v.zarr", None),
        ("v.h5:", "v.h5", None),
        ("plain.tif", "plain.tif", None),
        ("C:\\data\\x.tif", "C:\\data\\x.tif", None),
        ("C:/data/x.h5:raw", "C:/data/x.h5", "raw"),
        ("weird:name.tif", "weird:name.tif", None),
    ],
)
def test_parse_path(spec, path, key):
    p, k = io.parse_path(spec)
    assert str(p) == str(type(p)(path)) and k == key


def test_parse_path_existing_file_with_colon_not_split(tmp_path):
    f = tmp_path / "odd.h5:x"
    f.write_bytes(b"")
    assert io.parse_path(str(f)) == (f, None)


# ----------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".h5", ".hdf5", ".zarr"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int32", "bool"])
def test_round_trip(tmp_path, rng, ext, dtype):
    if dtype == "bool":
        data = rng.random(SHAPE) > 0.5
    elif dtype == "float32":
        data = rng.random(SHAPE, dtype=np.float32)
    else:
        data = rng.integers(0, np.iinfo(dtype).max, SHAPE).astype(dtype)
    out = tmp_path / f"vol{ext}"
    assert io.write_volume(out, data) == out
    back = io.read_volume(out)
    assert back.shape == SHAPE
    if dtype == "bool" and ext in (".tif", ".tiff"):
        assert back.dtype == np.uint8  # TIFF has no bool: stored as 0/1
        np.testing.assert_array_equal(back, data.astype(np.uint8))
    else:
        assert back.dtype == data.dtype
        np.testing.assert_array_equal(back, data)
    assert listing(tmp_path) == [out.name]  # no temporary files left behind


@pytest.mark.parametrize("ext", [".tif", ".h5", ".zarr"])
def test_round_trip_2d(tmp_path, rng, ext):
    data = rng.random((64, 48), dtype=np.float32)
    io.write_volume(tmp_path / f"img{ext}", data)
    np.testing.assert_array_equal(io.read_image(tmp_path / f"img{ext}"), data)


def test_write_uint8_conversion(tmp_path):
    data = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    io.write_volume(tmp_path / "p.tif", data, dtype="uint8")
    back = io.read_volume(tmp_path / "p.tif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, np.round(255 * data.astype(np.float64)).astype(np.uint8))
    assert back.min() == 0 and back.max() == 255


def test_write_uint8_rejects_out_of_range_float(tmp_path):
    with pytest.raises(FusionNetError) as e:
        io.write_volume(tmp_path / "p.tif", np.full((4, 4), 2.0), dtype="uint8")
    assert_one_line_error(e, "outside [0, 1]")
    assert listing(tmp_path) == []


def test_write_float32_conversion(tmp_path, vol8):
    io.write_volume(tmp_path / "p.h5", vol8.astype(np.float64), dtype="float32")
    assert io.read_volume(tmp_path / "p.h5").dtype == np.float32


def test_write_creates_parent_dirs(tmp_path, vol8):
    out = tmp_path / "a" / "b" / "v.tif"
    io.write_volume(out, vol8)
    np.testing.assert_array_equal(io.read_volume(out), vol8)


def test_write_unsupported_output_format(tmp_path, vol8):
    with pytest.raises(FusionNetError) as e:
        io.write_volume(tmp_path / "v.npy", vol8)
    assert_one_line_error(e, "unsupported output format", "v.npy")


# ----------------------------------------------------------------------------
# TIFF, PNG and directories
# ----------------------------------------------------------------------------


def test_multipage_tiff(tmp_path, vol8):
    f = tmp_path / "stack.tif"
    with tifffile.TiffWriter(f) as tw:
        for section in vol8:
            tw.write(section, photometric="minisblack")
    assert len(tifffile.TiffFile(f).pages) == 3
    np.testing.assert_array_equal(io.read_image(f), vol8)


def test_single_page_tiff_and_png(tmp_path, vol8):
    tifffile.imwrite(tmp_path / "one.tif", vol8[0])
    iio.imwrite(tmp_path / "one.png", vol8[1])
    np.testing.assert_array_equal(io.read_image(tmp_path / "one.tif"), vol8[0])
    np.testing.assert_array_equal(io.read_image(tmp_path / "one.png"), vol8[1])


def test_png_16bit(tmp_path, rng):
    data = rng.integers(0, 65535, (32, 32)).astype(np.uint16)
    iio.imwrite(tmp_path / "s.png", data)
    back = io.read_image(tmp_path / "s.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, data)


def test_directory_natural_sort(tmp_path, vol8):
    d = tmp_path / "sections"
    d.mkdir()
    # written in an order that differs from both natural and lexical order
    for name, section in [("s10.png", vol8[2]), ("s1.png", vol8[0]), ("s2.png", vol8[1])]:
        iio.imwrite(d / name, section)
    (d / "notes.txt").write_text("ignored")
    vol = io.read_image(d)
    np.testing.assert_array_equal(vol, vol8)  # s1, s2, s10
    with io.open_volume(d) as v:
        assert [f.name for f in v.files] == ["s1.png", "s2.png", "s10.png"]


def test_directory_of_tiffs(tmp_path, vol8):
    d = tmp_path / "tifs"
    d.mkdir()
    for i, section in enumerate(vol8):
        tifffile.imwrite(d / f"z{i}.tif", section)
    np.testing.assert_array_equal(io.read_volume(d), vol8)


def test_directory_mismatched_shapes(tmp_path, vol8):
    d = tmp_path / "bad"
    d.mkdir()
    iio.imwrite(d / "a1.png", vol8[0])
    iio.imwrite(d / "a2.png", vol8[1, :32])
    with pytest.raises(FusionNetError) as e:
        io.read_image(d)
    assert_one_line_error(e, "a2.png", "shape")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FusionNetError) as e:
        io.read_image(tmp_path / "empty")
    assert_one_line_error(e, "no .png", "empty")


# ----------------------------------------------------------------------------
# HDF5 and zarr
# ----------------------------------------------------------------------------


def test_hdf5_dataset_selection(tmp_path, vol8):
    f = tmp_path / "multi.h5"
    with h5py.File(f, "w") as h:
        h["raw"] = vol8
        h["labels/gt"] = vol8.astype(np.int32) * 2
    np.testing.assert_array_equal(io.read_image(f"{f}:raw"), vol8)
    np.testing.assert_array_equal(io.read_volume(f"{f}:labels/gt"), vol8.astype(np.int32) * 2)
    np.testing.assert_array_equal(io.read_volume(f"{f}:/labels/gt"), vol8.astype(np.int32) * 2)


def test_hdf5_single_dataset_is_default(tmp_path, vol8):
    f = tmp_path / "one.h5"
    with h5py.File(f, "w") as h:
        h["grp/only"] = vol8
    np.testing.assert_array_equal(io.read_image(f), vol8)


def test_hdf5_ambiguous_lists_datasets(tmp_path, vol8):
    f = tmp_path / "multi.h5"
    with h5py.File(f, "w") as h:
        h["raw"] = vol8
        h["labels"] = vol8
    with pytest.raises(FusionNetError) as e:
        io.read_image(f)
    assert_one_line_error(e, "labels", "raw", str(f))
    with pytest.raises(FusionNetError) as e:
        io.read_image(f"{f}:nope")
    assert_one_line_error(e, "nope", "labels, raw")


def test_hdf5_write_keeps_other_datasets(tmp_path, vol8):
    f = tmp_path / "out.h5"
    io.write_volume(f"{f}:raw", vol8)
    io.write_volume(f, vol8 // 2)  # default dataset name "data"
    with h5py.File(f, "r") as h:
        assert sorted(h.keys()) == ["data", "raw"]
        assert h["data"].compression == "gzip"
    np.testing.assert_array_equal(io.read_volume(f"{f}:data"), vol8 // 2)
    np.testing.assert_array_equal(io.read_volume(f"{f}:raw"), vol8)
    with pytest.raises(OutputExistsError):
        io.write_volume(f"{f}:raw", vol8 * 0)
    io.write_volume(f"{f}:raw", vol8 * 0, overwrite=True)
    assert io.read_volume(f"{f}:raw").max() == 0
    assert listing(tmp_path) == ["out.h5"]


def test_zarr_group_selection(tmp_path, vol8):
    z = tmp_path / "vol.zarr"
    io.write_volume(f"{z}:raw", vol8)
    io.write_volume(f"{z}:pred/prob", vol8.astype(np.float32) / 255)
    np.testing.assert_array_equal(io.read_image(f"{z}:raw"), vol8)
    np.testing.assert_allclose(io.read_volume(f"{z}:pred/prob"), vol8 / 255, rtol=1e-6)
    with pytest.raises(FusionNetError) as e:
        io.read_volume(z)
    assert_one_line_error(e, "pred/prob", "raw")
    with pytest.raises(OutputExistsError):
        io.write_volume(f"{z}:raw", vol8)
    assert listing(tmp_path) == ["vol.zarr"]


def test_zarr_array_is_chunked_by_section(tmp_path, vol8):
    z = tmp_path / "a.zarr"
    io.write_volume(z, vol8)
    arr = zarr.open(store=str(z), mode="r", path="0")  # level 0 of the OME-Zarr image
    assert arr.chunks[0] == 1 and arr.shape == SHAPE


def test_zarr_written_by_zarr(tmp_path, vol8):
    z = tmp_path / "ext.zarr"
    g = zarr.open_group(str(z), mode="w")
    a = g.create_array("em/raw", shape=SHAPE, dtype="uint8", chunks=(1, 32, 32))
    a[...] = vol8
    np.testing.assert_array_equal(io.read_image(z), vol8)  # only array -> default
    np.testing.assert_array_equal(io.read_image(f"{z}:em/raw"), vol8)


# ----------------------------------------------------------------------------
# lazy access
# ----------------------------------------------------------------------------


def _write_each(tmp_path, data):
    specs = []
    for ext in (".tif", ".h5", ".zarr"):
        out = tmp_path / f"v{ext}"
        io.write_volume(out, data)
        specs.append(out)
    compressed = tmp_path / "zlib.tif"  # not memory-mappable: per-page reads
    tifffile.imwrite(compressed, data, photometric="minisblack", compression="zlib")
    specs.append(compressed)
    d = tmp_path / "dir"
    d.mkdir()
    for i, s in enumerate(data):
        iio.imwrite(d / f"sec{i}.png", s)
    specs.append(d)
    return specs


def test_open_volume_slicing(tmp_path, rng):
    data = rng.integers(0, 256, (6, 16, 20), dtype=np.uint8)
    for spec in _write_each(tmp_path, data):
        with io.open_volume(spec) as vol:
            assert vol.shape == data.shape and vol.dtype == np.uint8 and len(vol) == 6
            np.testing.assert_array_equal(vol[2:4], data[2:4])
            np.testing.assert_array_equal(vol[3], data[3])
            np.testing.assert_array_equal(vol[-1], data[-1])
            np.testing.assert_array_equal(vol[1:6:2, 2:5, ::3], data[1:6:2, 2:5, ::3])
            np.testing.assert_array_equal(vol[[4, 0]], data[[4, 0]])
            np.testing.assert_array_equal(vol[..., 1], data[..., 1])
            np.testing.assert_array_equal(vol[4:100], data[4:100])
            assert vol[5:2].shape == (0, 16, 20)
            np.testing.assert_array_equal(np.asarray(vol), data)
            with pytest.raises(IndexError):
                vol[6]


def test_open_volume_reads_only_requested_sections(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    d = tmp_path / "dir"
    d.mkdir()
    for i, s in enumerate(data):
        iio.imwrite(d / f"s{i}.png", s)
    read = []
    real = io_volumes._read_section_file
    monkeypatch.setattr(io_volumes, "_read_section_file", lambda p: read.append(p.name) or real(p))
    vol = io.open_volume(d)
    read.clear()
    np.testing.assert_array_equal(vol[2:4], data[2:4])
    assert read == ["s2.png", "s3.png"]


def test_open_volume_tiff_per_page(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    f = tmp_path / "c.tif"
    tifffile.imwrite(f, data, photometric="minisblack", compression="zlib")
    with io.open_volume(f) as vol:
        monkeypatch.setattr(type(vol), "_read_all", lambda self: pytest.fail("read everything"))
        np.testing.assert_array_equal(vol[1:3], data[1:3])


def test_open_image_validates_without_reading(tmp_path):
    f = tmp_path / "rgb.h5"
    with h5py.File(f, "w") as h:
        h["x"] = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(FusionNetError) as e:
        io.open_image(f)
    assert_one_line_error(e, "greyscale")


# ----------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------


def test_normalize_rules():
    out = io.normalize(np.array([0, 51, 255], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0.2, 1])
    np.testing.assert_allclose(io.normalize(np.array([0, 65535], np.uint16)), [0, 1])
    np.testing.assert_allclose(io.normalize(np.array([False, True])), [0, 1])
    np.testing.assert_allclose(io.normalize(np.array([0, 2**31 - 1], np.int32)), [0, 1])
    np.testing.assert_allclose(io.normalize(np.array([0, 2**32 - 1], np.uint32)), [0, 1])
    np.testing.assert_allclose(io.normalize(np.array([-10, 0, 10], np.int16)), [0, 0.5, 1])
    # floats already in [0, 1] are kept as they are (no stretching)
    np.testing.assert_allclose(io.normalize(np.array([0.2, 0.4], np.float64)), [0.2, 0.4])
    # otherwise min-max rescaled
    np.testing.assert_allclose(io.normalize(np.array([-1.0, 0.0, 3.0], np.float32)), [0, 0.25, 1])
    np.testing.assert_allclose(io.normalize(np.array([10.0, 20.0], np.float16)), [0, 1])
    # constant image outside [0, 1] -> zeros; inside -> kept
    np.testing.assert_array_equal(io.normalize(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    np.testing.assert_allclose(io.normalize(np.full((2, 2), 0.5)), 0.5)
    for dtype in (np.uint8, np.uint16, np.int32, np.float64, np.bool_):
        assert io.normalize(np.zeros((2, 3), dtype)).dtype == np.float32


def test_normalize_rejects_nan():
    with pytest.raises(FusionNetError):
        io.normalize(np.array([0.0, np.nan]))


def test_load_image(tmp_path, vol8):
    io.write_volume(tmp_path / "v.tif", vol8)
    out = io.load_image(tmp_path / "v.tif")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vol8 / 255.0, rtol=1e-6)


# ----------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    for name in ("nope.tif", "nope.h5:raw", "nope.zarr", "nope"):
        with pytest.raises(FusionNetError) as e:
            io.read_image(tmp_path / name if ":" not in name else f"{tmp_path}/{name}")
        assert_one_line_error(e, "file not found:", "nope")


def test_truncated_tiff(tmp_path, vol8):
    f = tmp_path / "t.tif"
    tifffile.imwrite(f, vol8, photometric="minisblack")
    raw = f.read_bytes()
    for cut in (len(raw) // 2, 6):
        f.write_bytes(raw[:cut])
        with pytest.raises(FusionNetError) as e:
            io.read_image(f)
        assert_one_line_error(e, "cannot read", str(f))


def test_corrupt_hdf5(tmp_path):
    f = tmp_path / "bad.h5"
    f.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(FusionNetError) as e:
        io.read_image(f)
    assert_one_line_error(e, "cannot read", str(f))


def test_unsupported_extension(tmp_path):
    f = tmp_path / "img.jpg"
    f.write_bytes(b"\xff\xd8")
    with pytest.raises(FusionNetError) as e:
        io.read_image(f)
    assert_one_line_error(e, "unsupported format", "img.jpg", ".tif/.tiff, .png, .h5/.hdf5, .zarr")


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((32, 32, 3), np.uint8), "greyscale"),
        (np.zeros((2, 32, 32, 4), np.uint8), "greyscale"),
        (np.zeros((2, 2, 32, 32), np.uint8), "4-D"),
        (np.zeros((64,), np.uint8), "1-D"),
        (np.zeros((0, 32, 32), np.uint8), "empty"),
        (np.array([[0.0, np.nan], [1.0, 0.5]], np.float32), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 0.5]], np.float32), "infinite"),
    ],
)
def test_bad_arrays(tmp_path, array, fragment):
    f = tmp_path / "bad.h5"
    with h5py.File(f, "w") as h:
        h["x"] = array
    with pytest.raises(FusionNetError) as e:
        io.read_image(f)
    assert_one_line_error(e, fragment, str(f))


def test_scalar_dataset(tmp_path):
    f = tmp_path / "s.h5"
    with h5py.File(f, "w") as h:
        h["x"] = 3.0
    with pytest.raises(FusionNetError) as e:
        io.read_image(f)
    assert_one_line_error(e, "0-D")


def test_rgb_png_and_tiff(tmp_path):
    iio.imwrite(tmp_path / "c.png", np.zeros((32, 32, 3), np.uint8))
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    for name in ("c.png", "c.tif"):
        with pytest.raises(FusionNetError) as e:
            io.read_image(tmp_path / name)
        assert_one_line_error(e, "convert to greyscale first", name)


def test_read_volume_accepts_any_shape(tmp_path):
    f = tmp_path / "x.h5"
    with h5py.File(f, "w") as h:
        h["x"] = np.arange(10)
    np.testing.assert_array_equal(io.read_volume(f), np.arange(10))


# ----------------------------------------------------------------------------
# existing outputs and atomicity
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".tif", ".h5", ".zarr"])
def test_existing_output_untouched(tmp_path, vol8, ext):
    out = tmp_path / f"o{ext}"
    io.write_volume(out, vol8)
    with pytest.raises(OutputExistsError) as e:
        io.write_volume(out, vol8 // 2)
    assert_one_line_error(e, "output exists:", str(out), "--overwrite")
    with pytest.raises(OutputExistsError):
        io.check_output(out)
    np.testing.assert_array_equal(io.read_volume(out), vol8)
    assert io.check_output(out, overwrite=True) == out
    io.write_volume(out, vol8 // 2, overwrite=True)
    np.testing.assert_array_equal(io.read_volume(out), vol8 // 2)
    assert listing(tmp_path) == [out.name]


def test_check_output_fresh_and_bad_parent(tmp_path):
    assert io.check_output(tmp_path / "new" / "x.tif") == tmp_path / "new" / "x.tif"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FusionNetError) as e:
        io.check_output(tmp_path / "afile" / "x.tif")
    assert_one_line_error(e, "not a directory")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def _boom(*args, **kwargs):
    raise RuntimeError("disk on fire")


def test_failed_tiff_write_keeps_old(tmp_path, vol8, monkeypatch):
    out = tmp_path / "o.tif"
    io.write_volume(out, vol8)

    def partial_write(path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tifffile, "imwrite", partial_write)
    with pytest.raises(FusionNetError) as e:
        io.write_volume(out, vol8 // 2, overwrite=True)
    assert_one_line_error(e, "cannot write", "disk on fire")
    monkeypatch.undo()
    np.testing.assert_array_equal(io.read_volume(out), vol8)
    assert listing(tmp_path) == ["o.tif"]


def test_failed_hdf5_write_keeps_old(tmp_path, vol8, monkeypatch):
    out = tmp_path / "o.h5"
    io.write_volume(out, vol8)
    monkeypatch.setattr(h5py.Group, "create_dataset", _boom)
    with pytest.raises(FusionNetError):
        io.write_volume(out, vol8 // 2, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(io.read_volume(out), vol8)
    assert listing(tmp_path) == ["o.h5"]


def test_failed_zarr_write_keeps_old(tmp_path, vol8, monkeypatch):
    out = tmp_path / "o.zarr"
    io.write_volume(out, vol8)
    real = io_writers._zarr_create_image

    def create_then_fail(store, arr, meta=None, zarr_format=None):
        real(store, arr, meta, zarr_format)  # data fully written to the temp dir...
        raise RuntimeError("disk on fire")  # ...then the process dies

    monkeypatch.setattr(io_writers, "_zarr_create_image", create_then_fail)
    with pytest.raises(FusionNetError):
        io.write_volume(out, vol8 // 2, overwrite=True)
    with pytest.raises(FusionNetError):
        io.write_volume(f"{out.with_name('g.zarr')}:a/b", vol8, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(io.read_volume(out), vol8)
    assert sorted(set(listing(tmp_path)) - {"g.zarr"}) == ["o.zarr"]
    assert not (tmp_path / "g.zarr" / "a" / "b").exists()


def test_failed_rename_restores_old_zarr(tmp_path, vol8, monkeypatch):
    out = tmp_path / "o.zarr"
    io.write_volume(out, vol8)
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the move of the new data into place
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(FusionNetError) as e:
        io.write_volume(out, vol8 // 2, overwrite=True)
    assert_one_line_error(e, "No space left on device")
    monkeypatch.undo()
    np.testing.assert_array_equal(io.read_volume(out), vol8)
    assert listing(tmp_path) == ["o.zarr"]
