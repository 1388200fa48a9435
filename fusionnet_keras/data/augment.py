"""On-the-fly data augmentation layers (elastic deformation, Gaussian noise).

All layers here use only ``keras.ops`` and ``keras.random``, so they run on any
Keras 3 backend (TensorFlow, JAX, NumPy) and on the accelerator inside the
training step. They are the identity at inference (``training=False``, the
default when a layer is called directly).

Conventions
-----------
* Images and labels are channels-last tensors of shape ``(N, H, W, C)``
  (normally ``C == 1``). Height and width must be known statically (the
  datasets built by :mod:`fusionnet_keras.data` have static shapes); the batch
  size may be dynamic.
* Layer call convention: ``layer((image, label), training=True, seed=None)``
  returns a tuple ``(image, label)``. ``ElasticDeform`` and ``Augmenter`` also
  accept a single image tensor (then they return a single tensor and nothing is
  re-binarised). ``GaussianImageNoise`` accepts an image or an
  ``(image, label)`` tuple; the label is returned untouched.
* Randomness: each layer holds a ``keras.random.SeedGenerator(seed)``, so every
  call (every ``fit`` step) draws new random numbers, every sample of a batch
  gets its own field/noise, and two layers built with the same integer seed
  produce the same sequence. ``call(..., seed=s)`` bypasses the generator and
  uses an explicit seed instead: a Python int or an integer tensor (scalar or
  shape ``(2,)``). The same explicit seed gives the same result eagerly, inside
  ``tf.data`` (``ds.map``) and inside a compiled function; this is also how
  per-element seeds can be fed from a ``tf.data`` pipeline. Caveat: under
  TensorFlow with XLA (``jit_compile=True``) the stateless RNG picks another
  algorithm, so XLA-compiled draws differ from eager/``tf.function`` draws for
  the same seed (they are still deterministic). Without an explicit seed the
  layers also work inside ``ds.map`` (the generator state advances per batch)
  and inside ``model.fit`` on TensorFlow and JAX.
* Mirror padding and out-of-image sampling use the *reflect* convention of
  ``numpy.pad(mode="reflect")``: ``(d c b | a b c d | c b a)`` - the edge pixel
  is not repeated. The data pipeline pads with :func:`mirror_pad` too; the
  predictor's numpy reads (:func:`fusionnet_keras.inference.tiling.read_block`)
  follow the same convention and also repeat the reflection for pads larger
  than the image, which ``mirror_pad`` refuses.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fusionnet_keras.data.warp import (
    _bilinear_warp,
    _explicit_seed,
    _FixedSeed,
    _seed_dtype,
    _static_hw,
    interpolation_matrix,
)
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import KERAS_PACKAGE

__all__ = [
    "ElasticDeform",
    "GaussianImageNoise",
    "MirrorPad",
    "Augmenter",
    "mirror_pad",
    "interpolation_matrix",
]

# Offset applied to the first seed component to derive the noise seed from an
# explicit Augmenter seed (keeps the elastic and noise streams decorrelated).
_NOISE_SEED_OFFSET = 1_000_003
















def _split_inputs(inputs):
    """Return ``(image, label_or_None, is_pair)`` for the call convention."""
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 2:
            raise FusionNetError(
                f"expected an (image, label) pair, got a sequence of {len(inputs)} tensors"
            )
        return inputs[0], inputs[1], True
    return inputs, None, False


def mirror_pad(x, pad):
    """Mirror-pad the two spatial axes of ``x`` by ``pad`` pixels on each side.

    ``x`` is ``(N, H, W, C)`` (or ``(H, W)``/``(N, H, W)``: the last two axes
    are padded then). Uses the "reflect" convention of
    ``numpy.pad(mode="reflect")`` (edge pixel not repeated), so
    ``pad`` must be smaller than the height and the width.
    """
    pad = int(pad)
    if pad < 0:
        raise FusionNetError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return x
    rank = len(x.shape)
    if rank == 4:
        axes = (1, 2)
    elif rank in (2, 3):
        axes = (rank - 2, rank - 1)
    else:
        raise FusionNetError(f"cannot mirror-pad a tensor of shape {tuple(x.shape)}")
    for axis in axes:
        size = x.shape[axis]
        if size is not None and pad >= size:
            raise FusionNetError(
                f"mirror padding of {pad} px needs images larger than {pad} px, got shape {tuple(x.shape)}"
            )
    widths = [[0, 0] for _ in range(rank)]
    for axis in axes:
        widths[axis] = [pad, pad]
    return ops.pad(x, widths, mode="reflect")


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MirrorPad(keras.layers.Layer):
    """Layer form of :func:`mirror_pad` (numpy "reflect" convention).

    ``(N, H, W, C) -> (N, H + 2 * pad, W + 2 * pad, C)``. Active at training
    and inference alike.
    """

    def __init__(self, pad=64, **kwargs):
        super().__init__(**kwargs)
        if int(pad) < 0:
            raise FusionNetError(f"pad must be >= 0, got {pad}")
        self.pad = int(pad)

    def call(self, inputs):
        return mirror_pad(inputs, self.pad)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis in (1, 2):
            if shape[axis] is not None:
                shape[axis] += 2 * self.pad
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"pad": self.pad})
        return config


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class ElasticDeform(keras.layers.Layer):
    """Random smooth elastic deformation of an image and its label.

    For every sample a coarse ``grid_size x grid_size`` displacement field with
    two components ``(dy, dx)`` is drawn. Its interior nodes are i.i.d.
    ``uniform(-amplitude, amplitude)`` (``distribution="uniform"``, default) or
    ``normal(0, amplitude)`` (``distribution="normal"``); its border nodes are
    exactly zero (the paper's "random sparse 12x12 vector field whose
    amplitudes at the boundaries have vanished"). ``amplitude`` is in **pixels
    of the input image** (the padded image when used after mirror padding).
    The coarse field is interpolated (``interpolation="bilinear"`` or
    ``"bicubic"``, align-corners geometry: the dense field is exactly zero on
    the image border) to the image size, and the output is
    ``out[y, x] = in[y + dy(y, x), x + dx(y, x)]`` sampled bilinearly, with
    samples outside the image reflected (numpy "reflect").

    Call: ``layer((image, label), training=True, seed=None)`` with image and
    label ``(N, H, W, C)`` returns ``(warped_image, warped_label)``; the label
    is warped with the same field (bilinearly) and re-binarised at 0.5 so it
    keeps values in ``{0, 1}``. ``layer(image, ...)`` warps a single tensor
    (no binarisation). ``training=False`` (the default) and ``amplitude=0`` are
    the exact identity. See the module docstring for ``seed``.
    """

    def __init__(
        self,
        grid_size=12,
        amplitude=10.0,
        seed=None,
        interpolation="bilinear",
        distribution="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        grid_size = int(grid_size)
        if grid_size < 3:
            raise FusionNetError(
                f"elastic grid_size must be at least 3 (border nodes are zero), got {grid_size}"
            )
        amplitude = float(amplitude)
        if not np.isfinite(amplitude) or amplitude < 0:
            raise FusionNetError(f"elastic amplitude must be >= 0 pixels, got {amplitude}")
        if interpolation not in ("bilinear", "bicubic"):
            raise FusionNetError(
                f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}"
            )
        if distribution not in ("uniform", "normal"):
            raise FusionNetError(
                f"distribution must be 'uniform' or 'normal', got {distribution!r}"
            )
        self.grid_size = grid_size
        self.amplitude = amplitude
        self.seed = seed
        self.interpolation = interpolation
        self.distribution = distribution
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._matrices = {}
        self.supports_masking = False

    # -- random field -------------------------------------------------------
    def _seed(self, seed):
        if seed is None:
            return self.seed_generator
        return _FixedSeed(_explicit_seed(seed, _seed_dtype(self.seed_generator)))

    def _matrix(self, size):
        if size not in self._matrices:
            self._matrices[size] = interpolation_matrix(
                size, self.grid_size, self.interpolation
            )
        return self._matrices[size]

    def _coarse_field(self, batch, seed):
        inner = self.grid_size - 2
        shape = (batch, inner, inner, 2)
        if self.distribution == "uniform":
            values = keras.random.uniform(
                shape, minval=-self.amplitude, maxval=self.amplitude, seed=seed
            )
        else:
            values = keras.random.normal(shape, stddev=self.amplitude, seed=seed)
        return ops.pad(values, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def _dense_field(self, coarse, height, width):
        my = ops.convert_to_tensor(self._matrix(height), dtype=coarse.dtype)
        mx = ops.convert_to_tensor(self._matrix(width), dtype=coarse.dtype)
        return ops.einsum("hi,nijc,wj->nhwc", my, coarse, mx)

    def sample_field(self, images, seed=None):
        """Draw displacement fields for a batch.

        ``images`` is an image batch ``(N, H, W, C)``, an ``(image, label)``
        pair, or a shape tuple ``(N, H, W)``. Returns ``(coarse, dense)``: the
        coarse field ``(N, grid_size, grid_size, 2)`` with zero border nodes
        and the dense field ``(N, H, W, 2)`` in pixels; component 0 is the row
        displacement ``dy``, component 1 the column displacement ``dx``.
        Advances the layer's seed generator unless ``seed`` is given.
        """
        if isinstance(images, (tuple, list)) and all(
            isinstance(v, (int, np.integer)) for v in images
        ):
            if len(images) < 3:
                raise FusionNetError(f"expected a shape (N, H, W), got {tuple(images)}")
            batch, height, width = (int(v) for v in images[:3])
        else:
            image, _, _ = _split_inputs(images)
            height, width = _static_hw(image)
            batch = ops.shape(image)[0]
        coarse = self._coarse_field(batch, self._seed(seed))
        return coarse, self._dense_field(coarse, height, width)

    # -- layer API ----------------------------------------------------------
    def warp(self, inputs, dense):
        """Warp ``inputs`` (image or ``(image, label)``) with a dense field."""
        image, label, is_pair = _split_inputs(inputs)
        height, width = _static_hw(image)
        dense = ops.cast(dense, "float32")
        rows = ops.cast(ops.reshape(ops.arange(height), (1, height, 1)), "float32")
        cols = ops.cast(ops.reshape(ops.arange(width), (1, 1, width)), "float32")
        rows = rows + dense[..., 0]
        cols = cols + dense[..., 1]
        # sampling positions and weights stay float32 under a mixed policy (bfloat16 has 8 bits of
        # mantissa: a position of 600 px would be off by up to 2 px)
        if not is_pair:
            return ops.cast(_bilinear_warp(ops.cast(image, "float32"), rows, cols), image.dtype)
        _static_hw(label, "label")
        channels = image.shape[-1]
        stacked = ops.concatenate([ops.cast(image, "float32"), ops.cast(label, "float32")], axis=-1)
        warped = _bilinear_warp(stacked, rows, cols)
        out_image = ops.cast(warped[..., :channels], image.dtype)
        out_label = ops.cast(warped[..., channels:] >= 0.5, label.dtype)
        return out_image, out_label

    def call(self, inputs, training=False, seed=None):
        if not training or self.amplitude == 0.0:
            return inputs
        image, label, is_pair = _split_inputs(inputs)
        if is_pair and tuple(label.shape[1:3]) != tuple(image.shape[1:3]):
            raise FusionNetError(
                f"image shape {tuple(image.shape)} differs from label shape {tuple(label.shape)}"
            )
        _, dense = self.sample_field(image, seed=seed)
        return self.warp(inputs, dense)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "grid_size": self.grid_size,
                "amplitude": self.amplitude,
                "seed": self.seed,
                "interpolation": self.interpolation,
                "distribution": self.distribution,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class GaussianImageNoise(keras.layers.Layer):
    """Additive Gaussian noise on the image only: ``image + N(0, sigma^2)``.

    ``sigma`` is on the ``[0, 1]`` intensity scale (paper: mu=0, sigma=0.1).
    With ``clip=True`` (default) the result is clipped back to ``[0, 1]``;
    note that clipping slightly lowers the noise std near 0 and 1. Call with an
    image or an ``(image, label)`` pair; the label is returned untouched.
    Identity when ``training=False`` (default) or ``sigma=0``.
    """

    def __init__(self, sigma=0.1, clip=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        sigma = float(sigma)
        if not np.isfinite(sigma) or sigma < 0:
            raise FusionNetError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = sigma
        self.clip = bool(clip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False, seed=None):
        if not training or self.sigma == 0.0:
            return inputs
        image, label, is_pair = _split_inputs(inputs)
        if seed is None:
            seed_obj = self.seed_generator
        else:
            seed_obj = _FixedSeed(_explicit_seed(seed, _seed_dtype(self.seed_generator)))
        noise = keras.random.normal(
            ops.shape(image), stddev=self.sigma, dtype=image.dtype, seed=seed_obj
        )
        noisy = image + noise
        if self.clip:
            noisy = ops.clip(noisy, 0.0, 1.0)
        return (noisy, label) if is_pair else noisy

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"sigma": self.sigma, "clip": self.clip, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class Augmenter(keras.layers.Layer):
    """Training-time augmentation: elastic warp (image + label), then noise (image).

    ``Augmenter(elastic_amplitude=10.0, noise_sigma=0.1, seed=None)``; call as
    ``augmenter((image, label), training=True, seed=None)`` ->
    ``(image, label)`` (a single image tensor is also accepted). Identity when
    ``training=False`` (the default). ``elastic_amplitude`` is in pixels of the
    input image, ``noise_sigma`` on the [0, 1] intensity scale. With an integer
    ``seed`` the elastic sub-layer is seeded with ``seed`` and the noise
    sub-layer with ``seed + 1``; an explicit call ``seed`` ``s`` uses ``s`` for
    the field and ``s + (1000003, 0)`` for the noise.
    """

    def __init__(
        self,
        elastic_amplitude=10.0,
        noise_sigma=0.1,
        seed=None,
        grid_size=12,
        interpolation="bilinear",
        clip=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.elastic_amplitude = float(elastic_amplitude)
        self.noise_sigma = float(noise_sigma)
        self.seed = seed
        self.grid_size = int(grid_size)
        self.interpolation = interpolation
        self.clip = bool(clip)
        noise_seed = None if seed is None else int(seed) + 1
        self.elastic = ElasticDeform(
            grid_size=self.grid_size,
            amplitude=self.elastic_amplitude,
            seed=seed,
            interpolation=interpolation,
            dtype=self.dtype_policy,
            name="elastic",
        )
        self.noise = GaussianImageNoise(
            sigma=self.noise_sigma, clip=self.clip, seed=noise_seed, dtype=self.dtype_policy, name="noise"
        )

    def build(self, input_shape):
        self.elastic.build(input_shape)
        self.noise.build(input_shape)
        self.built = True

    def call(self, inputs, training=False, seed=None):
        if not training:
            return inputs
        if seed is None:
            elastic_seed = noise_seed = None
        else:
            elastic_seed = _explicit_seed(seed, _seed_dtype(self.elastic.seed_generator))
            offset = ops.convert_to_tensor(
                np.array([_NOISE_SEED_OFFSET, 0]), dtype=elastic_seed.dtype
            )
            noise_seed = elastic_seed + offset
        outputs = self.elastic(inputs, training=True, seed=elastic_seed)
        return self.noise(outputs, training=True, seed=noise_seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "elastic_amplitude": self.elastic_amplitude,
                "noise_sigma": self.noise_sigma,
                "seed": self.seed,
                "grid_size": self.grid_size,
                "interpolation": self.interpolation,
                "clip": self.clip,
            }
        )
        return config
