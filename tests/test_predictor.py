"""Tests of fusionnet_keras.predict: padding, D4 test-time augmentation, tiling, stacks."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import keras
from keras import layers

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.data.orient import orient, unorient
from fusionnet_keras.inference.tiling import pad_for_model, tile_plan
from fusionnet_keras.inference.predictor import predict, predict_section
from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple


def _randomize(model, seed):
    """Random non-symmetric conv weights and non-trivial batch-norm statistics."""
    r = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(r.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(r.uniform(0.3, 2.0, n).astype("float32"))
            layer.gamma.assign(r.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(r.normal(0, 0.3, n).astype("float32"))
        elif isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            k = layer.kernel
            fan_in = np.prod(k.shape[:-1])
            layer.kernel.assign(r.normal(0, 1.2 / np.sqrt(fan_in), k.shape).astype("float32"))
            if layer.bias is not None:
                layer.bias.assign(r.normal(0, 0.1, layer.bias.shape).astype("float32"))
    return model


def _tiny_unet(seed=0):
    """Depth-2 U-shaped stand-in: conv/BN, 2 max-pools, transposed convs, skips."""
    inp = keras.Input((None, None, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    s1 = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(s1)
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    s2 = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(s2)
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2DTranspose(6, 2, strides=2, padding="same")(x)
    x = layers.Add()([x, s2])
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Concatenate()([x, s1])
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    out = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return _randomize(keras.Model(inp, out), seed)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return _tiny_unet(0)


def _image(shape, seed=1):
    r = np.random.default_rng(seed)
    img = r.uniform(0, 1, shape).astype("float32")
    return img


# -- model inspection -----------------------------------------------------------------


def test_size_multiple_and_receptive_field(model):
    assert size_multiple(model) == 4
    # convs 1 + pool 1 + conv 2 + pool 2 + conv 4 + deconv 4 + conv 2 + upsample 2 + conv 1
    assert receptive_field_margin(model) == 19


def test_receptive_field_of_plain_chain():
    inp = keras.Input((None, None, 1))
    x = layers.Conv2D(2, 5, padding="same")(inp)
    x = layers.Conv2D(2, 3, padding="same", dilation_rate=2)(x)
    out = layers.Conv2D(1, 1)(x)
    assert receptive_field_margin(keras.Model(inp, out)) == 4
    seq = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 3, padding="same"),
                            layers.MaxPooling2D(2), layers.Conv2D(1, 3, padding="same"),
                            layers.UpSampling2D(2)])
    assert size_multiple(seq) == 2
    assert receptive_field_margin(seq) == 1 + 1 + 2 + 2


def test_fusionnet_model_inspection():
    from fusionnet_keras.models import FusionNet

    net = FusionNet(nb_filters=2, depth=2)
    assert size_multiple(net) == 4
    # per level 5 convs (conv, 3 in the residual block, conv): levels 1,2 encoder (j=1,2),
    # bridge (j=4), decoder (2,1); pools +1,+2; deconvs +4,+2
    assert receptive_field_margin(net) == 5 * (1 + 2 + 4 + 2 + 1) + (1 + 2) + (4 + 2)


# -- shapes and values ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 70), (3, 5)])
def test_output_shape_dtype_range_2d(model, shape):
    img = _image(shape)
    out = predict(model, img, tta=8, pad=8, batch_size=8)
    assert out.shape == shape and out.dtype == np.float32
    assert np.all(out >= 0) and np.all(out <= 1)
    assert np.all(np.isfinite(out))


def test_output_3d_stack_equals_sections(model):
    stack = _image((3, 13, 18))
    out = predict(model, stack, tta=8, pad=6, batch_size=8)
    assert out.shape == stack.shape and out.dtype == np.float32
    for z in range(3):
        np.testing.assert_allclose(out[z], predict(model, stack[z], tta=8, pad=6, batch_size=8), atol=1e-6)
        np.testing.assert_allclose(out[z], predict_section(model, stack[z], tta=8, pad=6, batch_size=8),
                                   atol=1e-6)


def test_out_argument_and_progress(model, tmp_path):
    stack = _image((2, 9, 11))
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=stack.shape)
    res = predict(model, stack, tta=1, pad=4, out=mm, progress=True)
    assert res is mm
    np.testing.assert_allclose(np.asarray(mm), predict(model, stack, tta=1, pad=4), atol=1e-6)
    with pytest.raises(FusionNetError):
        predict(model, stack, tta=1, out=np.zeros((2, 9, 10), np.float32))


def test_padding_geometry():
    img = _image((5, 7))
    padded, (top, left) = pad_for_model(img, 3, 4)
    assert padded.shape == (12, 16)
    np.testing.assert_array_equal(padded[top:top + 5, left:left + 7], img)
    # mirror (without repeating the edge pixel) on the left
    np.testing.assert_array_equal(padded[top, left - 1], img[0, 1])
    tiny, (t, l) = pad_for_model(np.full((1, 1), 0.25, np.float32), 64, 16)
    assert tiny.shape == (144, 144) and np.all(tiny == 0.25) and (t, l) == (71, 71)


def test_tta1_equals_direct_model_call(model):
    img = _image((21, 30))
    pad, m = 8, 4
    # independent reconstruction of the padding: reflect by pad, then up to a multiple of m
    h, w = img.shape
    eh, ew = -(h + 2 * pad) % m, -(w + 2 * pad) % m
    widths = ((pad + eh // 2, pad + eh - eh // 2), (pad + ew // 2, pad + ew - ew // 2))
    padded = np.pad(img, widths, mode="reflect")
    direct = keras.ops.convert_to_numpy(model(padded[None, ..., None], training=False))[0, ..., 0]
    expected = direct[widths[0][0]:widths[0][0] + h, widths[1][0]:widths[1][0] + w]
    got = predict(model, img, tta=1, pad=pad)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the batch-norm statistics matter: training mode gives something else
    train = keras.ops.convert_to_numpy(model(padded[None, ..., None], training=True))[0, ..., 0]
    assert np.abs(train[widths[0][0]:widths[0][0] + h, widths[1][0]:widths[1][0] + w] - got).max() > 1e-2


def test_tta8_is_mean_of_turned_back_orientations(model):
    img = _image((12, 17))
    expected = np.mean([unorient(predict(model, orient(img, k), tta=1, pad=5), k) for k in range(8)], axis=0)
    np.testing.assert_allclose(predict(model, img, tta=8, pad=5), expected, atol=1e-6)


def test_inference_mode_independent_of_batch_composition(model):
    stack = _image((2, 16, 16))
    a = predict(model, stack, tta=8, pad=4, batch_size=1)
    b = predict(model, stack, tta=8, pad=4, batch_size=8)
    c = predict(model, stack, tta=8, pad=4, batch_size=3)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


# -- D4 equivariance ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20, 20), (19, 26)])
def test_d4_equivariance(model, shape):
    img = _image(shape, seed=7)
    base = predict(model, img, tta=8, pad=6, batch_size=8)
    # the model itself is not equivariant (random weights): tta=1 must differ
    plain = predict(model, img, tta=1, pad=6)
    plain_rot = predict(model, orient(img, 1), tta=1, pad=6)
    assert np.abs(orient(plain, 1) - plain_rot).max() > 1e-3
    for k in range(8):
        got = predict(model, orient(img, k), tta=8, pad=6, batch_size=8)
        np.testing.assert_allclose(got, orient(base, k), atol=1e-5, err_msg=f"orientation {k}")


# -- tiling ---------------------------------------------------------------------------


def test_tile_plan_properties():
    for length, tile, overlap, m, lo, hi in [(224, 64, 19, 4, 64, 160), (288, 64, 19, 4, 0, 288),
                                             (640, 256, 40, 16, 64, 576), (96, 64, 8, 16, 10, 90)]:
        plan = tile_plan(length, tile, overlap, m, lo, hi)
        total = np.zeros(length)
        for start, a, b, w in plan:
            assert start % m == 0 and 0 <= start <= length - tile
            assert lo <= a < b <= hi and len(w) == b - a
            assert np.all(w > 0)
            # inner tile edges lose `overlap` pixels
            if start > 0:
                assert a >= start + overlap
            if start + tile < length:
                assert b <= start + tile - overlap
            # smooth ramps: no jumps in the weights
            assert np.abs(np.diff(w)).max(initial=0) <= 1.0 / max(1, overlap // 2) + 1e-9
            total[a:b] += w
        np.testing.assert_allclose(total[lo:hi], 1.0, atol=1e-12)
        assert np.all(total[:lo] == 0) and np.all(total[hi:] == 0)
    assert tile_plan(64, 64, 10, 4)[0][:3] == (0, 0, 64)
    with pytest.raises(FusionNetError):
        tile_plan(256, 32, 16, 4)


@pytest.mark.parametrize("tta", [1, 8])
def test_tiled_equals_whole(model, tta):
    img = _image((96, 160), seed=3)
    r = receptive_field_margin(model)
    whole = predict(model, img, tta=tta, pad=16, batch_size=8)
    tiled = predict(model, img, tta=tta, pad=16, tile=64, overlap=r, batch_size=8)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    # default overlap (min(receptive field, tile // 4)) with a tile large enough is exact too
    tiled_default = predict(model, img, tta=tta, pad=16, tile=96, batch_size=8)
    np.testing.assert_allclose(tiled_default, whole, atol=1e-4)


def test_tiling_is_sensitive_and_seamless(model):
    """Too small an overlap changes the result, but blending leaves no seams."""
    img = np.tile(np.linspace(0.2, 0.8, 160, dtype=np.float32), (96, 1))
    img += 0.05 * _image((96, 160), seed=5)
    whole = predict(model, img, tta=1, pad=16)
    err = predict(model, img, tta=1, pad=16, tile=64, overlap=2) - whole
    assert np.abs(err).max() > 1e-3  # the check below is not vacuous
    hard = _hard_stitched(model, img, pad=16, tile=64, overlap=2) - whole
    jumps_blend = max(np.abs(np.diff(err, axis=0)).max(), np.abs(np.diff(err, axis=1)).max())
    jumps_hard = max(np.abs(np.diff(hard, axis=0)).max(), np.abs(np.diff(hard, axis=1)).max())
    assert jumps_blend < jumps_hard


def _hard_stitched(model, img, pad, tile, overlap):
    """Reference without blending: each pixel from the tile whose kept part is nearest its centre."""
    padded, (top, left) = pad_for_model(img, pad, 4)
    out = np.zeros(padded.shape, np.float32)
    best = np.full(padded.shape, -np.inf)
    ph, pw = padded.shape
    for r0 in range(0, ph - tile + 1, 4 * ((tile - 2 * overlap) // 8)):
        for c0 in range(0, pw - tile + 1, 4 * ((tile - 2 * overlap) // 8)):
            p = keras.ops.convert_to_numpy(model(padded[None, r0:r0 + tile, c0:c0 + tile, None],
                                                  training=False))[0, ..., 0]
            yy, xx = np.mgrid[r0:r0 + tile, c0:c0 + tile]
            score = -np.maximum(np.abs(yy - r0 - tile / 2), np.abs(xx - c0 - tile / 2))
            sel = score > best[r0:r0 + tile, c0:c0 + tile]
            out[r0:r0 + tile, c0:c0 + tile][sel] = p[sel]
            best[r0:r0 + tile, c0:c0 + tile][sel] = score[sel]
    return out[top:top + img.shape[0], left:left + img.shape[1]]


# -- validation -----------------------------------------------------------------------


def test_errors(model):
    img = _image((8, 8))
    bad = img.copy()
    bad[2, 3] = np.nan
    with pytest.raises(FusionNetError, match="NaN"):
        predict(model, bad, tta=1)
    inf_stack = np.stack([img, img])
    inf_stack[1, 0, 0] = np.inf
    with pytest.raises(FusionNetError):
        predict(model, inf_stack, tta=1)
    for shape in [(8,), (1, 2, 8, 8)]:
        with pytest.raises(FusionNetError, match=r"expected a 2-D image or a 3-D stack \(Z, H, W\), got shape"):
            predict(model, np.zeros(shape, np.float32))
    for shape in [(0, 8), (2, 0, 8)]:
        with pytest.raises(FusionNetError, match="empty"):
            predict(model, np.zeros(shape, np.float32))
    for tta in (0, 2, 4, True, 1.5):
        with pytest.raises(FusionNetError, match="tta"):
            predict(model, img, tta=tta)
    with pytest.raises(FusionNetError, match="tile"):
        predict(model, img, tta=1, tile=2)
    with pytest.raises(FusionNetError):
        predict(model, img, tta=1, pad=-1)
    with pytest.raises(FusionNetError):
        predict(model, img, tta=1, batch_size=0)
