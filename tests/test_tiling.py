"""Tests of the N-dimensional tiling core: mirrored lazy reads, tile plans, predict_with_halo."""

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import keras
import numpy as np
import pytest
import zarr
from keras import layers

from fusionnet_keras.data.io import open_volume
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.halo import predict_with_halo
from fusionnet_keras.inference.tiling import Tile, TilePlan, pad_for_model, read_block, reflect_indices
from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple

from conftest import randomize_weights, tiny_unet_2d


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


class Recorder:
    """An array-like that records every index it is read with (checks that reads stay lazy)."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        self.keys = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]


# -- mirroring ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_reflect_matches_numpy_pad_for_any_width(size):
    a = np.arange(size) * 10
    for before in (0, 1, 4, 13):
        for after in (0, 2, 9, 17):
            got = read_block(a, (slice(-before, size + after),))
            np.testing.assert_array_equal(got, np.pad(a, (before, after), mode="reflect"))
    # a region entirely outside the array
    np.testing.assert_array_equal(read_block(a, (slice(size + 3, size + 7),)),
                                  np.pad(a, (0, size + 7), mode="reflect")[size + 3:size + 7])


def test_read_block_is_lazy_and_keeps_channels():
    vol = _rand((3, 6, 7, 9))  # channel axis 0
    rec = Recorder(vol)
    region = (slice(-2, 4), slice(5, 10), slice(-3, 3))
    got = read_block(rec, region, channel_axis=0)
    expected = np.pad(vol, [(0, 0), (2, 2), (0, 3), (3, 0)], mode="reflect")[:, 0:6, 5:10, 0:6]
    np.testing.assert_array_equal(got, expected)
    assert len(rec.keys) == 1
    key = rec.keys[0]  # one basic slice per axis, the bounding box inside the array
    assert key[0] == slice(None)
    assert [(s.start, s.stop) for s in key[1:]] == [(0, 4), (3, 7), (0, 4)]
    # the channel axis may come last too
    last = read_block(np.moveaxis(vol, 0, -1), region, channel_axis=-1)
    np.testing.assert_array_equal(last, np.moveaxis(expected, 0, -1))


def test_pad_for_model_is_numpy_reflect():
    img = _rand((5, 7))
    padded, (top, left) = pad_for_model(img, 3, 4)
    assert padded.shape == (12, 16) and (top, left) == (3, 4)
    np.testing.assert_array_equal(padded, np.pad(img, [(3, 4), (4, 5)], mode="reflect"))
    tiny, offsets = pad_for_model(np.full((2, 1), 0.25, np.float32), 64, 16)
    assert tiny.shape == (144, 144) and offsets == (71, 71) and np.all(tiny == 0.25)
    vol, offsets = pad_for_model(_rand((3, 4, 5)), 2, (1, 4, 4))
    assert vol.shape == (7, 8, 12) and offsets == (2, 2, 3)


def test_mirror_conventions_agree():
    """numpy reads (predictor), keras ``mirror_pad`` (training graph) and the tf.data pad give the same pixels."""
    from fusionnet_keras.data.augment import mirror_pad
    from fusionnet_keras.data.pipeline import _pad_and_channel

    for shape, pad in [((5, 7), 1), ((5, 7), 4), ((9, 4), 3), ((16, 16), 15)]:
        img = _rand(shape, seed=pad)
        ours = read_block(img, tuple(slice(-pad, s + pad) for s in shape))
        np.testing.assert_array_equal(ours, np.pad(img, pad, mode="reflect"))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mirror_pad(img, pad)), ours)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(_pad_and_channel(img, pad))[..., 0], ours)


def test_reflect_indices_period():
    assert reflect_indices(np.arange(-3, 7), 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert reflect_indices(np.arange(-5, 5), 1).tolist() == [0] * 10


# -- plans ----------------------------------------------------------------------------

PLANS = [
    # 2-D, grid, odd shape, odd halo pairs, non-zero origin, sub-region
    dict(shape=(37, 45), tile=(8, 12), halo=((3, 5), 4), multiple=4, origin=(4, -8)),
    dict(shape=(37, 45), tile=4, halo=2, region=(slice(5, 30), slice(17, 18))),
    # array smaller than a tile
    dict(shape=(3, 5), tile=16, halo=6),
    # 3-D, grid, anisotropic multiple, "valid" network
    dict(shape=(7, 19, 23), tile=(3, 8, 6), halo=(1, 3, 3), multiple=(1, 2, 2), trim=(1, 3, 3)),
    # fit: frames of the 2-D predictor, with and without blending
    dict(shape=(68, 628), tile=16, halo=19, multiple=4, region=(slice(8, 58), slice(9, 619)), mode="fit"),
    dict(shape=(96, 160), tile=20, halo=(6, 3), multiple=4, region=(slice(3, 90), slice(0, 160)), mode="fit",
         blend=8),
    dict(shape=(32, 64, 48), tile=(8, 12, 16), halo=5, multiple=(1, 4, 8), mode="fit", blend=(0, 4, 8)),
    dict(shape=(12, 12), tile=40, halo=3, multiple=4, mode="fit"),
]


def _region(plan):
    inside = np.zeros(plan.shape, bool)
    inside[plan.region] = True
    return inside


@pytest.mark.parametrize("kwargs", PLANS)
def test_plan_covers_region_with_unit_weights(kwargs):
    plan = TilePlan(**kwargs)
    total = np.zeros(plan.shape)
    count = np.zeros(plan.shape, int)
    assert len(plan) == int(np.prod(plan.grid_shape)) >= 1
    for tile in plan:
        assert isinstance(tile, Tile)
        assert tuple(r.stop - r.start for r in tile.read) == plan.window
        w = tile.weight()
        w = np.ones(tile.write_shape) if w is None else w
        assert w.shape == tile.write_shape and np.all(w > 0)
        total[tile.write] += w
        count[tile.write] += 1
        # the crop of the network output has the write shape and lies inside that output
        assert tuple(c.stop - c.start for c in tile.crop) == tile.write_shape
        assert all(0 <= c.start and c.stop <= n for c, n in zip(tile.crop, plan.output_window))
    inside = _region(plan)
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-12)
    assert np.all(total[~inside] == 0)
    if plan.mode == "grid":
        assert np.all(count[inside] == 1)  # disjoint writes: safe for parallel writers


@pytest.mark.parametrize("kwargs", [k for k in PLANS if k.get("mode", "grid") == "grid"])
def test_grid_reads_are_cores_plus_halo_on_the_global_grid(kwargs):
    plan = TilePlan(**kwargs)
    for tile in plan:
        for axis, (r, w) in enumerate(zip(tile.read, tile.write)):
            before, after = plan.halo[axis]
            core0 = r.start + before
            assert (core0 - plan.origin[axis]) % plan.tile[axis] == 0  # a core of the global grid
            assert (r.start - plan.origin[axis] + before) % plan.multiple[axis] == 0  # on the pooling grid
            assert core0 <= w.start and w.stop <= core0 + plan.tile[axis]  # the core's context is real
            # reads reach at most a tile plus the halo past the region (mirrored there)
            region = plan.region[axis]
            assert region.start - plan.tile[axis] - before < r.start and r.stop < region.stop + plan.tile[axis] + after


@pytest.mark.parametrize("kwargs", [k for k in PLANS if k.get("mode") == "fit"])
def test_fit_reads_stay_inside_the_frame_with_context_at_inner_edges(kwargs):
    plan = TilePlan(**kwargs)
    for tile in plan:
        for axis, (r, w) in enumerate(zip(tile.read, tile.write)):
            before, after = plan.halo[axis]
            assert 0 <= r.start and r.stop <= plan.shape[axis] and r.start % plan.multiple[axis] == 0
            assert r.start == 0 or w.start - r.start >= before
            assert r.stop == plan.shape[axis] or r.stop - w.stop >= after


def test_tile_has_named_frozen_fields():
    assert [f.name for f in dataclasses.fields(Tile)] == ["index", "read", "write", "crop", "weights"]
    tile = next(iter(TilePlan((10, 7), tile=4, halo=2)))
    assert tile.index == (0, 0) and tile.read == (slice(-2, 6), slice(-2, 6))
    assert tile.write == (slice(0, 4), slice(0, 4)) and tile.crop == (slice(2, 6), slice(2, 6))
    assert tile.weights is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        tile.write = ()


def test_plan_errors():
    with pytest.raises(FusionNetError, match=r"multiple of the grid multiple \(1, 2, 2\); use \(3, 6, 8\)"):
        TilePlan((9, 9, 9), tile=(3, 5, 7), halo=1, multiple=(1, 2, 2))
    with pytest.raises(FusionNetError, match="trim"):
        TilePlan((9, 9), tile=4, halo=1, trim=2)
    with pytest.raises(FusionNetError, match="blend"):
        TilePlan((9, 9), tile=4, blend=2)
    with pytest.raises(FusionNetError, match="divisible"):
        TilePlan((9, 8), tile=4, multiple=4, mode="fit")
    with pytest.raises(FusionNetError, match="halo"):
        TilePlan((9, 9), tile=4, halo=-1)
    with pytest.raises(FusionNetError, match="2 values"):
        TilePlan((9, 9), tile=(4, 4, 4))
    with pytest.raises(FusionNetError, match="mode"):
        TilePlan((9, 9), tile=4, mode="tiles")
    for region in [(slice(-3, 5), slice(0, 9)), (slice(0, 10), slice(0, 9)), (slice(4, 4), slice(0, 9)),
                   (slice(0, 9, 2), slice(0, 9)), (slice(0, 9),)]:
        with pytest.raises(FusionNetError, match="region"):
            TilePlan((9, 9), tile=4, region=region)
    assert len(TilePlan((9, 9), tile=4, region=(slice(None), slice(5, None)))) == 3 * 2


# -- predict_with_halo: tiled == whole --------------------------------------------------


def _call(model):
    return lambda block: keras.ops.convert_to_numpy(model(block[None, ..., None], training=False))[0]


@pytest.fixture(scope="module")
def unet2d():
    return tiny_unet_2d(0)


def test_same_network_2d_blocks_equal_whole(unet2d):
    m, r = size_multiple(unet2d), receptive_field_margin(unet2d)
    halo = -(-r // m) * m
    img = _rand((37, 45), seed=3)
    # whole: one pass over the image mirrored by the halo (and up to the multiple at the end)
    padded = np.pad(img, [(halo, halo + 3), (halo, halo + 3)], mode="reflect")
    whole = _call(unet2d)(padded)[halo:halo + 37, halo:halo + 45, 0]
    for block in [(8, 8), (12, 20), (64, 64)]:
        got = predict_with_halo(img, lambda b: _call(unet2d)(b)[..., 0], block, halo, multiple=m)
        np.testing.assert_allclose(got, whole, atol=1e-5, err_msg=f"block {block}")
    # too little context is visible: the check is not vacuous
    short = predict_with_halo(img, lambda b: _call(unet2d)(b)[..., 0], (8, 8), m, multiple=m)
    assert np.abs(short - whole).max() > 1e-3


def valid_net_3d(seed=0):
    """Tiny "valid" 3-D U-shape with 3 affinity-like outputs: input (Z, Y, X) -> (Z-2, Y-6, X-6, 3).

    Context (1, 3, 3) per side; Y and X of the input must be even (one (1, 2, 2) pooling).
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, None, 1))
    c1 = layers.Conv3D(4, 3, activation="relu")(inp)
    x = layers.MaxPooling3D((1, 2, 2))(c1)
    x = layers.Conv3D(4, (1, 3, 3), activation="relu")(x)
    x = layers.UpSampling3D((1, 2, 2))(x)
    skip = layers.Cropping3D(((0, 0), (2, 2), (2, 2)))(c1)
    x = layers.Concatenate()([x, skip])
    out = layers.Conv3D(3, 1, activation="sigmoid")(x)
    return randomize_weights(keras.Model(inp, out), seed)


@pytest.fixture(scope="module")
def net3d():
    return valid_net_3d(0)


HALO3D = (1, 3, 3)
MULTIPLE3D = (1, 2, 2)


def _whole_3d(net, vol):
    """The network once over the whole volume mirrored by its context (+1 voxel where Y/X are odd)."""
    extra = [(0, 0)] + [(0, s % 2) for s in vol.shape[1:]]
    padded = np.pad(vol, [(h, h + e) for h, (_, e) in zip(HALO3D, extra)], mode="reflect")
    y = np.moveaxis(_call(net)(padded), -1, 0)  # (3, Z, Y, X)
    return y[:, :vol.shape[0], :vol.shape[1], :vol.shape[2]]


def _fn3d(net):
    return lambda block: np.moveaxis(_call(net)(block), -1, 0)


def test_valid_network_3d_blocks_equal_whole(net3d):
    vol = _rand((5, 17, 23), seed=4)
    whole = _whole_3d(net3d, vol)
    assert whole.shape == (3, 5, 17, 23)
    for block in [(1, 4, 6), (2, 8, 8), (5, 10, 12), (8, 24, 24)]:
        got = predict_with_halo(vol, _fn3d(net3d), block, HALO3D, multiple=MULTIPLE3D)
        assert got.shape == (3, 5, 17, 23) and got.dtype == np.float32
        np.testing.assert_allclose(got, whole, atol=1e-5, err_msg=f"block {block}")
    # channels last
    last = predict_with_halo(vol, _call(net3d), (2, 8, 8), HALO3D, multiple=MULTIPLE3D, out_channel_axis=-1)
    np.testing.assert_allclose(np.moveaxis(last, -1, 0), whole, atol=1e-5)
    # blocks off the pooling grid of each other change the numbers: alignment matters
    shifted = predict_with_halo(vol, _fn3d(net3d), (2, 8, 8), HALO3D, multiple=1, origin=(0, 1, 1))
    assert np.abs(shifted - whole).max() > 1e-4


def test_blocks_computed_separately_from_a_lazy_file_equal_whole(net3d, tmp_path):
    vol = _rand((6, 18, 22), seed=6)
    whole = _whole_3d(net3d, vol)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["raw"] = vol
    out = zarr.open_array(str(tmp_path / "aff.zarr"), mode="w", shape=(3,) + vol.shape, chunks=(3, 2, 8, 8),
                          dtype="float32")
    # four jobs, each its own region and block shape, as independent workers would run them
    jobs = [((slice(0, 2), slice(0, 18), slice(0, 22)), (2, 8, 8)),
            ((slice(2, 6), slice(0, 8), slice(0, 22)), (1, 4, 10)),
            ((slice(2, 6), slice(8, 18), slice(0, 8)), (4, 2, 4)),
            ((slice(2, 6), slice(8, 18), slice(8, 22)), (3, 10, 14))]
    with open_volume(f"{tmp_path / 'vol.h5'}:raw") as raw:
        for region, block in jobs:
            reads = Recorder(raw)
            predict_with_halo(reads, _fn3d(net3d), block, HALO3D, multiple=MULTIPLE3D, region=region, out=out)
            window = [b + 2 * h for b, h in zip(block, HALO3D)]
            assert len(reads.keys) == len(TilePlan(vol.shape, block, HALO3D, region=region))
            for key in reads.keys:  # each read is one block with its halo, never more
                assert all(isinstance(s, slice) and s.stop - s.start <= w for s, w in zip(key, window))
    np.testing.assert_allclose(out[...], whole, atol=1e-5)


def test_predict_with_halo_input_channels_and_errors():
    vol = _rand((2, 9, 11), seed=8)  # (C, Y, X)

    def box(block):  # "valid" 3x3 mean of the channel sum
        s = block.sum(axis=0)
        return sum(s[i:i + block.shape[1] - 2, j:j + block.shape[2] - 2] for i in range(3) for j in range(3)) / 9

    got = predict_with_halo(vol, box, (4, 4), 1, channel_axis=0)
    mirrored = np.pad(vol.sum(axis=0), 1, mode="reflect")
    expected = sum(mirrored[i:i + 9, j:j + 11] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(FusionNetError, match="out has shape"):
        predict_with_halo(vol, box, (4, 4), 1, channel_axis=0, out=np.zeros((9, 10)))
    with pytest.raises(FusionNetError, match="fn returned"):
        predict_with_halo(vol, lambda b: b[0, :-1], (4, 4), 1, channel_axis=0)
    with pytest.raises(FusionNetError, match="fn returned"):
        predict_with_halo(vol, lambda b: b, (4, 4), 1, channel_axis=0, out_channel_axis=None)
