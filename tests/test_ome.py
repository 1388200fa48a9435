"""OME-Zarr outputs, voxel sizes and pyramids, checked with an independent validator (ome-zarr-models)."""

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from fusionnet_keras.blockwise.pyramid import build_pyramid, downsample, level_factors
from fusionnet_keras.data.io import open_volume, read_volume, write_volume, write_volumes
from fusionnet_keras.data.io.ome import ImageMeta, parse_voxel_size
from fusionnet_keras.data.io.voxel_sizes import read_voxel_size
from fusionnet_keras.errors import FusionNetError, OutputExistsError

from segmentation_helpers import bodies, degrade, gt_affinities, run_cli, same_partition, user_error

ome_models = pytest.importorskip("ome_zarr_models")


def validated(store):
    """The group at ``store`` as ome-zarr-models reads it (raises unless it is valid OME-Zarr)."""
    from ome_zarr_models import open_ome_zarr

    return open_ome_zarr(zarr.open_group(str(store), mode="r"))


def ngff_scales(model):
    """``[(path, scale)]`` of the only multiscale, from the validator's model (not the package's reader)."""
    (ms,) = model.attributes.ome.multiscales if hasattr(model.attributes, "ome") else model.attributes.multiscales
    return [(d.path, list(d.coordinateTransformations[0].scale)) for d in ms.datasets], ms


# -- --voxel-size and reading voxel sizes -------------------------------------------------------------------------
def test_parse_voxel_size_values_and_one_line_errors():
    assert parse_voxel_size("40, 4,4.5") == (40.0, 4.0, 4.5)
    for text, needle in [("4,4", "3 numbers"), ("1,2,3,4", "3 numbers"), ("0,4,4", "Z is zero"),
                         ("40,-4,4", "Y is negative"), ("40,4,x", "X is not a number"), ("nan,4,4", "finite")]:
        with pytest.raises(FusionNetError, match=needle) as e:
            parse_voxel_size(text)
        assert "\n" not in str(e.value)


def _ome_05(store, scale, unit="micrometer", levels=1):
    g = zarr.open_group(str(store), mode="w")
    for i in range(levels):
        g.create_array(str(i), shape=(2, 8 >> i, 8 >> i), dtype="uint8", dimension_names=["z", "y", "x"])
    axes = [{"name": n, "type": "space", "unit": unit} for n in "zyx"]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [scale[0]] + [s * 2 ** i
                                                                                                 for s in scale[1:]]}]}
        for i in range(levels)]}]}
    return store


def test_read_voxel_size_of_every_format(tmp_path):
    # OME-Zarr 0.5 in micrometres, level 0 (and a level's own scale when the array is named)
    ome = _ome_05(tmp_path / "a.zarr", [0.04, 0.004, 0.004], levels=2)
    assert read_voxel_size(ome) == pytest.approx((40, 4, 4))
    assert read_voxel_size(f"{ome}:1") == pytest.approx((40, 8, 8))
    validated(ome)  # the fixture itself is valid NGFF
    # OME-Zarr 0.4 (zarr 2), the multiscale's own scale multiplies
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=2)
    g.create_array("s0", shape=(2, 4, 4), dtype="uint8")
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "nanometer"}
                                                          for n in "zyx"],
                               "datasets": [{"path": "s0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [1, 1, 1]}]}],
                               "coordinateTransformations": [{"type": "scale", "scale": [30, 8, 8]}]}]
    assert read_voxel_size(tmp_path / "b.zarr") == (30, 8, 8)
    assert open_volume(tmp_path / "b.zarr").shape == (2, 4, 4)  # the OME group is read at level 0
    # HDF5 (CREMI: on the dataset or a group above it), plain zarr with a resolution attribute
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((2, 3, 3), np.uint8))
        f["volumes"].attrs["resolution"] = [40.0, 4.0, 4.0]
        f.create_dataset("none", data=np.zeros((2, 3, 3), np.uint8))
    assert read_voxel_size(f"{tmp_path / 'c.h5'}:volumes/raw") == (40, 4, 4)
    assert read_voxel_size(f"{tmp_path / 'c.h5'}:none") is None
    plain = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(2, 3, 3), dtype="uint8")
    plain.attrs["resolution"] = [50, 5, 5]
    assert read_voxel_size(tmp_path / "p.zarr") == (50, 5, 5)
    # TIFF: ImageJ spacing (written by tifffile), none without metadata
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 8, 8), np.uint8), imagej=True, resolution=(1 / 0.004,) * 2,
                     metadata={"spacing": 0.05, "unit": "micron", "axes": "ZYX"})
    assert read_voxel_size(tmp_path / "ij.tif") == pytest.approx((50, 4, 4))
    tifffile.imwrite(tmp_path / "bare.tif", np.zeros((3, 8, 8), np.uint8))
    assert read_voxel_size(tmp_path / "bare.tif") is None


def test_bad_ome_metadata_is_one_line(tmp_path):
    ome = _ome_05(tmp_path / "two.zarr", [40, 4, 4])
    g = zarr.open_group(str(ome), mode="r+")
    g.attrs["ome"] = {**g.attrs["ome"], "multiscales": g.attrs["ome"]["multiscales"] * 2}
    with pytest.raises(FusionNetError, match="holds 2 multiscales"):
        read_voxel_size(ome)
    with pytest.raises(FusionNetError, match="holds 2 multiscales"):
        open_volume(ome)
    g.attrs["ome"] = {**g.attrs["ome"], "multiscales": [{**g.attrs["ome"]["multiscales"][0], "datasets": []}]}
    with pytest.raises(FusionNetError, match="no level 0"):
        open_volume(ome)


# -- what the writers write --------------------------------------------------------------------------------------
def test_zarr_outputs_are_valid_ome_zarr_images_and_labels(tmp_path):
    from ome_zarr_models.v04.image import Image as Image04
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    img = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    meta = ImageMeta(voxel_size=(40, 4, 4), provenance={"command": "test"})
    write_volume(tmp_path / "img.zarr", img, meta=meta)
    model = validated(tmp_path / "img.zarr")
    assert isinstance(model, Image) and not isinstance(model, ImageLabel)
    (levels, ms) = ngff_scales(model)
    assert levels == [("0", [40.0, 4.0, 4.0])]
    assert [(a.name, a.type, a.unit) for a in ms.axes] == [(n, "space", "nanometer") for n in "zyx"]
    assert zarr.open_group(str(tmp_path / "img.zarr")).attrs["fusionnet_keras"] == {"command": "test"}
    np.testing.assert_array_equal(read_volume(tmp_path / "img.zarr"), img)

    labels = np.arange(4 * 16 * 16, dtype=np.uint64).reshape(4, 16, 16) // 7
    write_volumes(tmp_path / "seg.zarr", {"a": labels, "b": labels + 1}, meta=ImageMeta((30, 8, 8), labels=True))
    for name in "ab":
        assert isinstance(validated(tmp_path / "seg.zarr" / name), ImageLabel)
    # affinities: a channel axis first
    write_volume(tmp_path / "aff.zarr", np.zeros((3, 4, 16, 16), np.float32), meta=ImageMeta((40, 4, 4), channels=True))
    _, ms = ngff_scales(validated(tmp_path / "aff.zarr"))
    assert [(a.name, a.type) for a in ms.axes] == [("c", "channel")] + [(n, "space") for n in "zyx"]
    assert read_voxel_size(tmp_path / "aff.zarr") == (40, 4, 4)
    # inside a zarr 2 group: NGFF 0.4
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    write_volume(f"{tmp_path / 'v2.zarr'}:pred", img, meta=meta)
    assert isinstance(validated(tmp_path / "v2.zarr" / "pred"), Image04)
    # the image is an output: refused without --overwrite, replaced with it
    with pytest.raises(OutputExistsError):
        write_volume(tmp_path / "img.zarr", img)
    write_volume(tmp_path / "img.zarr", img[:2], overwrite=True)
    assert read_volume(tmp_path / "img.zarr").shape == (2, 16, 16)


def test_hdf5_and_tiff_outputs_carry_the_voxel_size(tmp_path):
    meta = ImageMeta(voxel_size=(40, 4, 5))
    img = np.zeros((3, 8, 8), np.float32)
    write_volume(tmp_path / "o.h5", img, meta=meta)
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert list(f["data"].attrs["resolution"]) == [40, 4, 5]
    write_volume(tmp_path / "o.tif", img, meta=meta)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:  # ImageJ's own fields
        assert tif.imagej_metadata["spacing"] == 40 and tif.imagej_metadata["unit"] == "nm"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(5)
    write_volume(tmp_path / "labels.tif", np.zeros((3, 8, 8), np.uint64), meta=meta)  # not an ImageJ type
    for name in ("o.h5", "o.tif", "labels.tif"):
        assert read_voxel_size(tmp_path / name) == pytest.approx((40, 4, 5))


# -- pyramids -----------------------------------------------------------------------------------------------------
def test_level_factors_downsample_xy_first_for_anisotropic_voxels():
    assert level_factors((30, 512, 512), (50, 4, 4)) == [(1, 2, 2)] * 3 + [(2, 2, 2)]
    assert level_factors((64, 256, 256), (10, 10, 10)) == [(2, 2, 2)] * 3
    assert level_factors((1, 256, 256), None, levels=2) == [(1, 2, 2)] * 2
    assert level_factors((4, 48, 48), (40, 4, 4)) == [(1, 2, 2)]  # at least one level where one fits
    with pytest.raises(FusionNetError, match="cannot be downsampled further"):
        level_factors((2, 4, 4), None, levels=5)


def test_downsample_mean_and_label_preserving_mode():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(downsample(x, (1, 2, 2), "mean"), [[[2.5, 4.5], [10.5, 12.5]]])
    labels = np.array([[[5, 5, 7, 9], [5, 3, 9, 9], [1, 1, 2, 2]]], np.uint64)  # odd y: the edge repeats
    out = downsample(labels, (1, 2, 2), "mode")
    assert out.tolist() == [[[5, 9], [1, 2]]] and out.dtype == np.uint64
    u8 = np.array([[[0, 255], [255, 255]]], np.uint8)
    assert downsample(u8, (1, 2, 2), "mean").tolist() == [[[191]]]


def test_pyramid_blockwise_equals_whole_volume_and_validates(tmp_path):
    from ome_zarr_models.v05.image_label import ImageLabel

    gt = bodies((8, 70, 90), 12, seed=1)
    write_volume(tmp_path / "seg.zarr", gt, meta=ImageMeta((20, 8, 8), labels=True))
    info = build_pyramid(tmp_path / "seg.zarr", levels=2, block=(3, 16, 16), workers=0, progress=False)
    assert info["method"] == "mode" and [lv["shape"] for lv in info["levels"]] == [(8, 35, 45), (4, 18, 23)]
    model = validated(tmp_path / "seg.zarr")
    assert isinstance(model, ImageLabel)
    scales, _ = ngff_scales(model)
    assert scales == [("0", [20, 8, 8]), ("1", [20, 16, 16]), ("2", [40, 32, 32])]
    level1 = zarr.open_array(str(tmp_path / "seg.zarr"), path="1")[:]
    np.testing.assert_array_equal(level1, downsample(gt, (1, 2, 2), "mode"))  # blocks = whole volume
    assert set(np.unique(level1)) <= set(np.unique(gt))  # no new label
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "seg.zarr"), path="2")[:],
                                  downsample(level1, (2, 2, 2), "mode"))
    assert read_volume(tmp_path / "seg.zarr").shape == gt.shape  # read at full resolution
    with pytest.raises(OutputExistsError, match="2 downsampled levels"):
        build_pyramid(tmp_path / "seg.zarr", workers=0, progress=False)
    build_pyramid(tmp_path / "seg.zarr", levels=1, workers=0, overwrite=True, progress=False)
    assert [p for p, _ in ngff_scales(validated(tmp_path / "seg.zarr"))[0]] == ["0", "1"]
    assert not (tmp_path / "seg.zarr" / "2").exists()


# -- the commands -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ome")
    gt = bodies((4, 48, 48), 10, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    write_volume(root / "affs.zarr", affs, meta=ImageMeta((40, 4, 4), channels=True))  # an OME input
    with h5py.File(root / "affs.h5", "w") as f:
        f["affs"] = affs
    return root, gt


def test_segment_carries_the_input_voxel_size_and_writes_a_pyramid(volumes, tmp_path):
    from ome_zarr_models.v05.image_label import ImageLabel

    root, gt = volumes
    result = run_cli("segment", root / "affs.zarr", tmp_path / "seg.zarr", "--block", "4,24,24", "--pyramid")
    assert result.exit_code == 0, result.output
    assert "1 pyramid level" in result.stdout
    model = validated(tmp_path / "seg.zarr")
    assert isinstance(model, ImageLabel)
    assert ngff_scales(model)[0] == [("0", [40, 4, 4]), ("1", [40, 8, 8])]  # the OME input's voxel size
    attrs = zarr.open_group(str(tmp_path / "seg.zarr")).attrs["fusionnet_keras"]
    assert attrs["command"] == "segment" and attrs["settings"]["method"] == "mean"
    assert attrs["settings"]["voxel_size_from"] == "input"
    # in memory, an input without metadata: --voxel-size; HDF5 output: resolution
    result = run_cli("segment", f"{root / 'affs.h5'}:affs", tmp_path / "seg.h5", "--voxel-size", "30,6,6")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "seg.h5", "r") as f:
        assert list(f["data"].attrs["resolution"]) == [30, 6, 6]
    result = run_cli("segment", f"{root / 'affs.h5'}:affs", tmp_path / "mem.zarr", "--voxel-size", "30,6,6",
                     "--pyramid")
    assert result.exit_code == 0, result.output
    assert ngff_scales(validated(tmp_path / "mem.zarr"))[0][0] == ("0", [30, 6, 6])
    assert same_partition(read_volume(tmp_path / "mem.zarr"), read_volume(tmp_path / "seg.h5"))
    assert same_partition(read_volume(tmp_path / "seg.zarr"), read_volume(tmp_path / "seg.h5"))  # blockwise


def test_pyramid_command(volumes, tmp_path):
    root, _ = volumes
    write_volume(tmp_path / "em.zarr", (np.random.default_rng(0).random((6, 128, 128)) * 255).astype(np.uint8),
                 meta=ImageMeta((40, 4, 4)))
    result = run_cli("pyramid", tmp_path / "em.zarr", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "level 1: 6x64x64 (scale 40, 8, 8)" in result.stdout and "wrote 2 levels (mean)" in result.stdout
    assert [s for _, s in ngff_scales(validated(tmp_path / "em.zarr"))[0]][-1] == [40, 16, 16]
    user_error(run_cli("pyramid", tmp_path / "em.zarr"), "output exists")
    assert run_cli("pyramid", tmp_path / "em.zarr", "--levels", "1", "--overwrite").exit_code == 0
    user_error(run_cli("pyramid", root / "affs.h5"), "must be a zarr")


def test_pyramid_of_a_2d_image_keeps_its_pixel_size(tmp_path):
    write_volume(tmp_path / "s.zarr", np.zeros((100, 90), np.float32), meta=ImageMeta(voxel_size=(1, 4, 4)))
    info = build_pyramid(tmp_path / "s.zarr", workers=0, progress=False)
    assert [lv["shape"] for lv in info["levels"]] == [(50, 45)]
    scales, ms = ngff_scales(validated(tmp_path / "s.zarr"))
    assert scales == [("0", [4, 4]), ("1", [8, 8])] and [a.unit for a in ms.axes] == ["nanometer"] * 2


def test_morphology_takes_the_voxel_size_of_its_labels(tmp_path):
    ball = np.zeros((12, 20, 20), np.uint8)
    zz, yy, xx = np.ogrid[:12, :20, :20]
    ball[(zz - 6) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 16] = 1
    write_volume(tmp_path / "nuclei.h5", ball, meta=ImageMeta(voxel_size=(60, 56.4, 56.4)))
    result = run_cli("morphology", tmp_path / "nuclei.h5", "--out", tmp_path / "t.csv", "--clusters", "1")
    assert result.exit_code == 0, result.output
    assert "voxel size 60 x 56.4 x 56.4 nm" in result.stdout
    write_volume(tmp_path / "bare.h5", ball)
    user_error(run_cli("morphology", tmp_path / "bare.h5", "--out", tmp_path / "u.csv"), "--voxel-size")
