"""Tests of fusionnet_keras.predict: padding, D4 test-time augmentation, tiling, stacks."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import keras
from keras import layers

import fusionnet_keras as fk
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.data.orient import orient, unorient
from fusionnet_keras.inference.tiling import pad_for_model
from fusionnet_keras.inference.predictor import SectionPredictor, predict, predict_section
from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple
from fusionnet_keras.models.fusionnet import FusionNet

from conftest import tiny_unet_2d, write_tiff


@pytest.fixture(scope="module")
def model():
    return tiny_unet_2d(0)


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


@pytest.mark.parametrize("tta", [1, 8])
def test_tiled_equals_whole(model, tta):
    img = _image((96, 160), seed=3)
    r = receptive_field_margin(model)
    whole = predict(model, img, tta=tta, pad=16, batch_size=8)
    tiled = predict(model, img, tta=tta, pad=16, tile=64, overlap=r, batch_size=8)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    # the default overlap is the receptive field: exact for any tile
    tiled_default = predict(model, img, tta=tta, pad=16, tile=17, batch_size=8)
    np.testing.assert_allclose(tiled_default, whole, atol=1e-4)


TILES = [16, 17, 33, 64, 100, 512]


def test_any_tile_size_is_exact(model):
    """Tiles far smaller than the receptive field (19 px) up to 512: all equal the untiled map."""
    img = _image((50, 610), seed=11)
    whole = predict(model, img, tta=1, pad=8, batch_size=8)
    for tile in TILES:
        sp = SectionPredictor(model, tta=1, tile=tile, pad=8, batch_size=8)
        plan = sp.plan(img.shape)
        assert sp.exact and sp.context == receptive_field_margin(model)
        assert plan.grid_shape[1] >= 2  # really tiled, even at 512
        np.testing.assert_allclose(fk.predict(model, img, tta=1, pad=8, tile=tile, batch_size=8), whole,
                                   atol=1e-4, err_msg=f"tile {tile}")


def test_cli_any_tile_size_is_exact(tmp_path):
    """``fusionnet-keras predict --tile N`` equals the untiled prediction for N = 16..512."""
    from click.testing import CliRunner

    from fusionnet_keras.cli import main
    from fusionnet_keras.data.io import read_image

    keras.utils.set_random_seed(0)
    net = FusionNet(nb_filters=2, depth=2)  # receptive field 59 px
    net.save(tmp_path / "tiny.keras")
    rng = np.random.default_rng(4)
    write_tiff(tmp_path / "in.tif", rng.integers(0, 256, (120, 600), dtype=np.uint8))

    def run(out, *extra):
        args = ["predict", tmp_path / "in.tif", tmp_path / out, "-w", tmp_path / "tiny.keras", "--tta", "1",
                "--pad", "16", *extra]
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return read_image(tmp_path / out)

    whole = run("whole.tif")
    for tile in TILES:
        np.testing.assert_allclose(run(f"t{tile}.tif", "--tile", tile), whole, atol=1e-4, err_msg=f"tile {tile}")


def test_small_overlap_is_not_exact_but_seamless(model):
    """An explicit overlap below the receptive field changes the result, but blending leaves no seams."""
    img = np.tile(np.linspace(0.2, 0.8, 160, dtype=np.float32), (96, 1))
    img += 0.05 * _image((96, 160), seed=5)
    whole = predict(model, img, tta=1, pad=16)
    sp = SectionPredictor(model, tta=1, pad=16, tile=60, overlap=2)
    assert not sp.exact and sp.blend == 4
    err = sp.predict(img) - whole
    assert np.abs(err).max() > 1e-3  # the check below is not vacuous
    hard = _hard_stitched(model, img, pad=16, window=64, overlap=2) - whole
    jumps_blend = max(np.abs(np.diff(err, axis=0)).max(), np.abs(np.diff(err, axis=1)).max())
    jumps_hard = max(np.abs(np.diff(hard, axis=0)).max(), np.abs(np.diff(hard, axis=1)).max())
    assert jumps_blend < jumps_hard


def _hard_stitched(model, img, pad, window, overlap):
    """Reference without blending: each pixel from the window whose kept part is nearest its centre."""
    padded, (top, left) = pad_for_model(img, pad, 4)
    out = np.zeros(padded.shape, np.float32)
    best = np.full(padded.shape, -np.inf)
    ph, pw = padded.shape
    step = 4 * ((window - 2 * overlap) // 8)
    for r0 in range(0, ph - window + 1, step):
        for c0 in range(0, pw - window + 1, step):
            p = keras.ops.convert_to_numpy(model(padded[None, r0:r0 + window, c0:c0 + window, None],
                                                  training=False))[0, ..., 0]
            yy, xx = np.mgrid[r0:r0 + window, c0:c0 + window]
            score = -np.maximum(np.abs(yy - r0 - window / 2), np.abs(xx - c0 - window / 2))
            sel = score > best[r0:r0 + window, c0:c0 + window]
            out[r0:r0 + window, c0:c0 + window][sel] = p[sel]
            best[r0:r0 + window, c0:c0 + window][sel] = score[sel]
    return out[top:top + img.shape[0], left:left + img.shape[1]]


def test_schedule_matches_model_calls(model):
    """The batches the predictor announces are the batches it runs (the benchmarks rely on it)."""
    calls = []

    class Recorder:
        def __init__(self, net):
            self.net = net

        def predict_on_batch(self, x):
            calls.append(x.shape[:3])
            return self.net.predict_on_batch(x)

    img = _image((45, 70), seed=2)
    sp = SectionPredictor(model, tta=8, tile=24, pad=8, batch_size=3, multiple=4)
    sp.network = Recorder(sp.network)  # what runs: the folded inference graph
    sp.predict(img)
    assert calls == sp.schedule(img.shape)
    assert len(set(calls)) >= 2 and max(n for n, _, _ in calls) == 3


def test_a_single_call_with_once_runs_eagerly_and_gives_the_same_numbers(model):
    """``predict(..., once=True)`` (the ``predict`` command): one model call, run without tracing a graph
    (the start-up of a small prediction); the numbers are those of the traced call."""
    img = _image((48, 48), seed=4)  # square: the 8 orientations share one window shape, one call of 8
    sp = SectionPredictor(model, tta=8, pad=8, batch_size=8)  # eager: the model as built; traced: sp.network
    eager = sp.predict(img, once=True)
    assert sp.network.predict_function is None  # no graph traced
    np.testing.assert_allclose(eager, sp.predict(img), atol=1e-5, rtol=0)  # the model as built / folded
    assert sp.network.predict_function is not None
    np.testing.assert_array_equal(eager, predict(model, img, tta=8, pad=8, batch_size=8, once=True))
    several = SectionPredictor(model, tta=8, pad=8, batch_size=3)
    several.predict(img, once=True)  # three calls: traced as usual
    assert several.network.predict_function is not None


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
        predict(model, img, tta=1, tile=0)
    with pytest.raises(FusionNetError):
        predict(model, img, tta=1, pad=-1)
    with pytest.raises(FusionNetError):
        predict(model, img, tta=1, batch_size=0)


def test_the_inference_predictors_take_a_network_and_name_the_api_that_resolves_names():
    """Names, paths and the default model are resolved above inference/ (fk.predict, fk.predict_affinities)."""
    from fusionnet_keras.inference.affinities import predict_affinities

    with pytest.raises(FusionNetError, match="got str 'isbi2012-fusionnet': fusionnet_keras.predict also takes"):
        predict("isbi2012-fusionnet", np.zeros((8, 8), np.float32))
    with pytest.raises(FusionNetError, match="got no model: fusionnet_keras.predict_affinities also takes"):
        predict_affinities(None, np.zeros((4, 8, 8), np.uint8))
