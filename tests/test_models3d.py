"""The 3-D affinity networks: sizes at the paper's configuration, geometry, blocks, serialisation."""

import math

import keras
import numpy as np
import pytest

import fusionnet_keras as fk
from fusionnet_keras import models
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models import analysis
from fusionnet_keras.models.fusionnet3d import FusionNet3D
from fusionnet_keras.models.geometry import ValidGeometry
from fusionnet_keras.models.layers import ConvBlock, ConvBlock3D, ResidualBlock, ResidualBlock3D, UpConv3D
from fusionnet_keras.models.unet3d import UNet3D

from conftest import randomize_batchnorm

TINY3D = {"nb_filters": 2, "depth": 1}


def output_shape(model):
    return tuple(model.output.shape[1:])


# ------------------------------------------------------------------ paper sizes (build only)
def test_unet3d_paper_sizes():
    model = UNet3D(nb_filters=64, depth=3, image_shape=(33, 204, 204, 1))
    assert output_shape(model) == (3, 116, 116, 3)
    assert model.geometry.loss == (30, 88, 88) and model.geometry.multiple == (1, 8, 8)
    assert model.count_params() == 21_719_235
    # 2 convs per level, 7 levels, plus the (3, 1, 1) output convolution; pooling never in z
    assert len([l for l in model.layers if isinstance(l, ConvBlock)]) == 14
    assert model.get_layer("output").kernel_size == (3, 1, 1)
    pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling3D)]
    assert len(pools) == 3 and all(tuple(p.pool_size) == (1, 2, 2) for p in pools)
    merges = [l for l in model.layers if l.name.endswith("_merge")]
    assert len(merges) == 3 and all(isinstance(l, keras.layers.Concatenate) for l in merges)
    names = [l.name for l in model.layers]
    assert len(names) == len(set(names))
    # the paper's other run: 44 -> 16 sections, the same network with a 1-section output conv
    assert UNet3D(head_z_kernel=1).geometry.output_shape((44, 204, 204)) == (16, 116, 116)


def test_fusionnet3d_paper_sizes():
    model = FusionNet3D(nb_filters=64, depth=3, image_shape=(33, 334, 334, 1))
    assert output_shape(model) == (3, 114, 114, 3)
    assert model.geometry.loss == (30, 220, 220)
    assert model.count_params() == 31_140_675
    res = [l for l in model.layers if isinstance(l, ResidualBlock)]
    assert len(res) == 7 and all(r.kernel_size == (1, 3, 3) and r.n_convs == 3 for r in res)
    merges = [l for l in model.layers if l.name.endswith("_merge")]
    assert len(merges) == 3 and all(isinstance(l, keras.layers.Add) for l in merges)
    assert model.get_layer("output").dtype == "float32"


@pytest.mark.parametrize("name", ["unet3d", "fusionnet3d"])
def test_registered_architectures(name):
    model = models.build_model(name, **TINY3D)
    assert isinstance(model, models.ARCHITECTURES[name])
    assert analysis.size_multiple(model) == (1, 2, 2)
    assert getattr(fk, type(model).__name__) is type(model)


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (UNet3D, {"depth": 1}),
        (UNet3D, {"depth": 2, "z_kernels": [3, 1, 3], "xy_kernel": 5, "head_z_kernel": 1}),
        (FusionNet3D, {"depth": 1, "residual_z_kernel": 3, "n_residual": 2}),
        (FusionNet3D, {"depth": 2, "z_kernels": 1}),
    ],
)
def test_geometry_matches_the_graph(cls, kwargs):
    """The size arithmetic agrees with the shapes Keras builds, for every valid size and no other."""
    model = cls(nb_filters=2, **kwargs)
    g = model.geometry
    for axis in range(3):
        sizes = g.valid_sizes(axis, g.min_input[axis] + 3 * g.multiple[axis])
        assert len(sizes) == 4 and all(o == i - g.loss[axis] for i, o in sizes)
        for n in range(g.min_input[axis] - 2, g.min_input[axis] + 2 * g.multiple[axis] + 1):
            assert (g.axis_output(n, axis) is not None) == (n in dict(sizes)), (axis, n)
    shape = tuple(g.min_input[a] + g.multiple[a] for a in range(3))
    probe = cls.from_config({**model.get_config(), "image_shape": [*shape, 1]})
    assert output_shape(probe) == (*g.output_shape(shape), 3)
    assert g.input_shape_for(g.output_shape(shape)) == shape


def test_invalid_sizes_name_the_nearest_that_fit():
    with pytest.raises(FusionNetError, match=r"input y size 200 .* 196 \(-> 108\) or 204 \(-> 116\)"):
        UNet3D(image_shape=(33, 200, 204, 1))
    with pytest.raises(FusionNetError, match=r"input z size 30 .* 31 \(-> 1\)"):
        UNet3D(image_shape=(30, 204, 204, 1))
    model = UNet3D(**TINY3D)
    with pytest.raises(FusionNetError, match=r"^input x size 25 does not fit the network; nearest sizes that do: "
                                             r"24 \(-> 8\) or 26 \(-> 10\) \(valid sizes are 18 \+ k \* 2\)$"):
        model(np.zeros((1, 17, 24, 25, 1), "float32"))
    with pytest.raises(FusionNetError, match="image_shape must be"):
        UNet3D(image_shape=(33, 204, 204, 2))
    with pytest.raises(FusionNetError, match="odd"):
        FusionNet3D(xy_kernel=4)
    with pytest.raises(FusionNetError, match="depth \\+ 1 = 4 values"):
        UNet3D(z_kernels=[3, 3])


def test_geometry_queries():
    g = UNet3D().geometry
    assert g.nearest_sizes(204, "y") == (204, 204)
    assert g.nearest_sizes(50, "x") == (None, 92)
    assert g.valid_sizes("z", 33) == [(31, 1), (32, 2), (33, 3)]
    assert g.context == (15, 44, 44)
    with pytest.raises(FusionNetError):
        g.input_shape_for((3, 115, 116))
    with pytest.raises(FusionNetError, match="odd"):
        ValidGeometry.from_kernels([[(2, 3, 3)]], [(3, 3, 3)], [[(3, 3, 3)]], (1, 1, 1), (1, 2, 2))


# ------------------------------------------------------------------ forward, receptive field, blocks
@pytest.mark.parametrize("cls,shape", [(UNet3D, (17, 24, 24)), (FusionNet3D, (17, 48, 48))])
def test_forward_range_and_dtype(rng, cls, shape):
    model = cls(**TINY3D)
    y = keras.ops.convert_to_numpy(model(rng.random((2, *shape, 1), dtype=np.float32), training=False))
    assert y.shape == (2, 3, 8, 8, 3) and y.dtype == np.float32
    assert np.all((y >= 0) & (y <= 1))


def test_receptive_field_is_the_measured_reach(rng):
    """Gradients of single output voxels reach exactly ``context + multiple - 1`` input voxels."""
    keras.utils.set_random_seed(3)
    model = randomize_batchnorm(UNet3D(nb_filters=4, depth=2))
    import tensorflow as tf

    shape = (25, 60, 60)
    out = model.geometry.output_shape(shape)
    x = tf.Variable(rng.random((1, *shape, 1), dtype=np.float32))
    reach = [0, 0, 0]
    for axis in range(3):
        for j in range(out[axis]):
            index = [o // 2 for o in out]
            index[axis] = j
            with tf.GradientTape() as tape:
                y = tf.reduce_sum(model(x, training=False)[(0, *index)])
            grad = np.abs(tape.gradient(y, x).numpy()[0, ..., 0]).sum(axis=tuple(b for b in range(3) if b != axis))
            touched = np.flatnonzero(grad)
            centre = j + model.geometry.context[axis]
            reach[axis] = max(reach[axis], centre - touched[0], touched[-1] - centre)
    assert tuple(reach) == analysis.receptive_field_margin(model) == (11, 23, 23)


@pytest.mark.parametrize("cls", [UNet3D, FusionNet3D])
def test_blockwise_equals_whole_volume(rng, cls):
    """Through the shared tiling core: small blocks (``geometry.block``) give what one block over
    the whole volume gives (mirrored context at the volume border in both)."""
    from fusionnet_keras.inference.halo import predict_with_halo

    model = randomize_batchnorm(cls(nb_filters=2, depth=2))
    g = model.geometry
    volume = rng.random((9, 37, 41), dtype=np.float32)

    def affinities(block):
        return np.moveaxis(np.asarray(model.predict_on_batch(block[None, ..., None]))[0], -1, 0)

    results = []
    for core in [(3, 16, 16), (9, 40, 44)]:  # 3 x 3 x 3 blocks, then one block
        input_shape, halo = g.block(core)
        assert input_shape == tuple(c + before + after for c, (before, after) in zip(core, halo))
        assert g.output_shape(input_shape)[0] == core[0]
        results.append(predict_with_halo(volume, affinities, core, halo, multiple=g.multiple))
    assert results[0].shape == (3, 9, 37, 41)
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    with pytest.raises(FusionNetError, match="multiple of 4"):
        g.block((3, 10, 12))


# ------------------------------------------------------------------ FLOPs
def test_flops_hand_count():
    model = UNet3D(nb_filters=2, depth=1)
    shape = (17, 24, 24)
    # (output voxels, kernel volume, in, out) of every convolution, from the level shapes
    convs = [
        ((15, 22, 22), 27, 1, 2), ((13, 20, 20), 27, 2, 2),  # down1
        ((11, 8, 8), 27, 2, 4), ((9, 6, 6), 27, 4, 4),  # bridge
        ((9, 6, 6), 4, 4, 2),  # transposed conv: per input voxel
        ((7, 10, 10), 27, 4, 2), ((5, 8, 8), 27, 2, 2),  # up1 (concatenated input: 4 maps)
        ((3, 8, 8), 3, 2, 3),  # output (3, 1, 1)
    ]
    macs = sum(math.prod(v) * k * cin * cout for v, k, cin, cout in convs)
    assert analysis.forward_flops(model, shape) == 2 * macs
    assert analysis.flops_per_output_voxel(model, shape) == 2 * macs / (3 * 8 * 8)
    shapes = dict(analysis.level_shapes(model, spatial_shape=shape))
    assert shapes["up1_conv2"] == (5, 8, 8, 2) and shapes["output"] == (3, 8, 8, 3)


def test_paper_flops():
    unet = UNet3D()
    assert analysis.flops_per_output_voxel(unet, (33, 204, 204)) == pytest.approx(31.81e6, rel=1e-3)
    assert analysis.flops_per_output_voxel(FusionNet3D(nb_filters=32), (33, 334, 334)) == pytest.approx(
        29.98e6, rel=1e-3
    )


# ------------------------------------------------------------------ serialisation
@pytest.mark.parametrize(
    "cls,kwargs,shape",
    [
        (UNet3D, {"z_kernels": [3, 1]}, (15, 24, 24)),
        (FusionNet3D, {"zero_init_residual": True, "head_z_kernel": 1}, (15, 48, 48)),
    ],
)
def test_save_load_round_trip(tmp_path, rng, cls, kwargs, shape):
    model = randomize_batchnorm(cls(**TINY3D, **kwargs))
    x = rng.random((1, *shape, 1), dtype=np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    for loaded in (keras.saving.load_model(path), fk.load_model(path, spatial_dims=3)):
        assert type(loaded) is cls
        assert loaded.get_config() == model.get_config()
        assert loaded.geometry == model.geometry
        np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    with pytest.raises(FusionNetError, match="expected a single-channel 2-D image model"):
        fk.load_model(path)


FEATURES3D = np.random.default_rng(0).random((2, 5, 10, 10, 4), dtype=np.float32)


@pytest.mark.parametrize(
    "cls, init_kwargs, output_shape, n_trainable, n_non_trainable",
    [
        (ConvBlock3D, {"filters": 3}, (2, 3, 8, 8, 3), 4, 2),
        (ConvBlock3D, {"filters": 3, "kernel_size": [1, 3, 3], "kernel_initializer": "glorot_uniform",
                       "bn_momentum": 0.9, "gamma_initializer": "zeros"}, (2, 5, 8, 8, 3), 4, 2),
        (ResidualBlock3D, {"filters": 4}, (2, 5, 4, 4, 4), 12, 6),
        (ResidualBlock3D, {"filters": 4, "n_convs": 2, "kernel_size": [3, 3, 3], "zero_init": True,
                           "kernel_initializer": "glorot_uniform", "bn_momentum": 0.9}, (2, 1, 6, 6, 4), 8, 4),
        (UpConv3D, {"filters": 2}, (2, 5, 20, 20, 2), 4, 2),
        (UpConv3D, {"filters": 2, "scale": [2, 2, 2], "kernel_initializer": "glorot_uniform", "bn_momentum": 0.9},
         (2, 10, 20, 20, 2), 4, 2),
    ],
)
def test_blocks_through_the_layer_harness(tmp_path, cls, init_kwargs, output_shape, n_trainable, n_non_trainable):
    from layer_harness import run_layer_test

    run_layer_test(cls, init_kwargs, FEATURES3D, output_shape, n_trainable, n_non_trainable, tmp_path=tmp_path,
                   atol=1e-5)


def test_dtype_policy_round_trip(rng):
    model = UNet3D(**TINY3D, dtype="mixed_bfloat16")
    # the input block stays float32 (fusionnet_keras.models.precision), the rest computes in bfloat16
    assert model.get_layer("down1_conv1").compute_dtype == "float32"
    assert model.get_layer("down1_conv2").compute_dtype == "bfloat16"
    assert model.get_layer("output").compute_dtype == "float32"
    y = model(rng.random((1, 17, 24, 24, 1), dtype=np.float32))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    clone = UNet3D.from_config(model.get_config())
    assert clone.dtype_policy.name == "mixed_bfloat16" and clone.get_config() == model.get_config()
