"""The imaging part of :mod:`fusionnet_keras.data.synthetic`: smooth noise fields, section jitter, blur, noise.

The renderer draws a noise-free canvas from :func:`smooth_noise` textures; the
canvas is then cut into sections with their own xy offsets and gains
(:func:`jitter_sections`, the serial-section misalignment) and imaged
(:func:`imaging`: in-plane blur, shot noise and read noise, 8-bit output).
Every function draws from the generator it is given, so the volume stays a
function of the generator's seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SLAB", "imaging", "jitter_sections", "smooth_noise"]

SLAB = 16
"""Sections per slab for elementwise work (keeps the temporaries small)."""


def smooth_noise(rng, shape, sigma, factor=1) -> np.ndarray:
    """Unit-variance Gaussian-smoothed noise (float32); ``factor > 1`` generates it
    on a grid ``factor`` times coarser and upsamples linearly (much faster for large
    ``sigma``)."""
    if factor <= 1:
        field = rng.standard_normal(shape, dtype=np.float32)
        ndi.gaussian_filter(field, sigma, output=field)  # line-buffered: safe in place
    else:
        low = tuple(int(math.ceil(s / factor)) + 2 for s in shape)
        coarse = ndi.gaussian_filter(
            rng.standard_normal(low, dtype=np.float32), np.asarray(sigma, float) / factor
        )
        field = ndi.zoom(coarse, np.asarray(shape, float) / np.asarray(low, float), order=1)
        field = field[: shape[0], : shape[1], : shape[2]]
    sub = field[::3, ::3, ::3]
    field -= np.float32(sub.mean())
    field /= np.float32(sub.std() + 1e-12)
    return field


def _imaging_slab(v, rng, noise):
    """Shot noise (Gaussian approximation, ~4 electrons per grey level) and read
    noise on float slab ``v``; returns it as uint8."""
    if noise > 0:
        np.maximum(v, 0.0, out=v)
        shot = np.sqrt(v / np.float32(4.0))
        shot *= rng.standard_normal(v.shape, dtype=np.float32)
        v += np.float32(noise) * shot
        v += np.float32(noise * 4.0) * rng.standard_normal(v.shape, dtype=np.float32)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def jitter_sections(rng, img, labels, shape, max_jitter, jitter_prob):
    """Crop each section of the canvas with its own xy offset (and a per-section gain); returns
    ``(image, labels, offsets)`` of ``shape``."""
    Z, Y, X = shape
    J = int(max_jitter)
    gain = (1.0 + rng.normal(0.0, 0.03, Z)).astype(np.float32)
    offsets = rng.integers(-J, J + 1, size=(Z, 2))
    offsets[rng.random(Z) >= float(jitter_prob)] = 0
    out_img = np.empty(shape, dtype=np.float32)
    out_lab = np.empty(shape, dtype=np.int32)
    for z in range(Z):
        oy, ox = J + int(offsets[z, 0]), J + int(offsets[z, 1])
        out_img[z] = img[z, oy:oy + Y, ox:ox + X] * gain[z]
        out_lab[z] = labels[z, oy:oy + Y, ox:ox + X]
    return out_img, out_lab, offsets


def imaging(rng, img, blur_sigma, noise):
    """In-plane blur, then shot and read noise; returns uint8."""
    if blur_sigma > 0:
        ndi.gaussian_filter(img, sigma=(0.0, blur_sigma, blur_sigma), output=img)
    image = np.empty(img.shape, dtype=np.uint8)
    for z0 in range(0, img.shape[0], SLAB):
        image[z0:z0 + SLAB] = _imaging_slab(img[z0:z0 + SLAB], rng, noise)
    return image
