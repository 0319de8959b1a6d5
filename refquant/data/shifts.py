"""Shifted copies of the test images, for judging quantizers off the training distribution.

Each shift is a rule on pixel values ``p`` in 0..16 (the digits' native scale: the count of
"on" pixels in a 4x4 block), applied to the test images *before* normalisation. All
arithmetic is float64; results are clipped to [0, 16] so every shifted image is still a
possible digit image, and only then normalised like any other (``refquant.data.digits``).

==============  =========================================  ==================================
name            rule on each image (pixels p, float64)     randomness
==============  =========================================  ==================================
contrast-0.5    clip(m + 0.5 (p - m), 0, 16)               none; m = mean of the image's 64
contrast-2      clip(m + 2 (p - m), 0, 16)                 pixels (contrast about the mean)
brightness+4    clip(p + 4, 0, 16)                         none
noise           clip(p + 2 z, 0, 16), z ~ N(0, 1) i.i.d.   Generator(PCG64(NOISE_SEED))
occlusion       p with one 3x3 patch set to 0              Generator(PCG64(OCCLUSION_SEED)):
                                                           patch top-left (r, c) uniform in
                                                           {0..5}^2, one per image
inverted        16 - p                                     none
==============  =========================================  ==================================

Why these: contrast about the image mean (the ImageNet-C and torchvision rule) changes the
spread of the pixels but not their mean; brightness changes the mean (and, through the clip
at 16, narrows the spread), so a strategy that predicts activation ranges from input moments
is probed on each moment. Gaussian noise adds spread everywhere, including the blank
background, and because of the clip at 0 it also raises the background's mean (by
2·E[max(z, 0)] ≈ 0.80). Occlusion removes part of the stroke. Inversion is the extreme case:
the mean pixel moves from about 4.9 to about 11.1 and the strokes become dark on a bright
background. A float model is not expected to read these digits; the set shows what a
quantizer does when its calibrated ranges are wrong, not how accurate a model is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

PIXEL_MAX = 16.0
CONTRAST_LOW = 0.5
CONTRAST_HIGH = 2.0
BRIGHTNESS_OFFSET = 4.0
NOISE_SIGMA = 2.0
NOISE_SEED = 2
OCCLUSION_SIZE = 3
OCCLUSION_SEED = 3


def _pixels(pixels: np.ndarray, shift: str) -> np.ndarray:
    """Check ``pixels`` is [N, H, W] with finite values in [0, 16]; return a float64 copy."""
    array = np.asarray(pixels)
    if array.ndim != 3:
        raise ValueError(f"shift {shift!r}: pixels must be [N, H, W], got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"shift {shift!r}: pixels must be integer or float, got {array.dtype}")
    array = array.astype(np.float64)
    in_range = array.min(initial=0.0) >= 0 and array.max(initial=0.0) <= PIXEL_MAX
    if not (np.all(np.isfinite(array)) and in_range):
        raise ValueError(f"shift {shift!r}: pixels must be finite values in [0, 16]")
    return array


def contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    """``clip(m + factor·(p − m), 0, 16)`` with ``m`` each image's mean pixel (float64)."""
    p = _pixels(pixels, f"contrast-{factor:g}")
    m = p.mean(axis=(1, 2), keepdims=True)
    return np.clip(m + factor * (p - m), 0.0, PIXEL_MAX)


def brightness(pixels: np.ndarray, offset: float) -> np.ndarray:
    """``clip(p + offset, 0, 16)`` (float64)."""
    p = _pixels(pixels, f"brightness{offset:+g}")
    return np.clip(p + offset, 0.0, PIXEL_MAX)


def gaussian_noise(pixels: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``clip(p + sigma·z, 0, 16)``, ``z = Generator(PCG64(seed)).standard_normal(p.shape)``.

    One draw for the whole array in C order, so image ``i`` gets the ``i``-th block of 64.
    """
    p = _pixels(pixels, "noise")
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(p.shape)
    return np.clip(p + sigma * z, 0.0, PIXEL_MAX)


def occlusion_corners(count: int, height: int, width: int, size: int, seed: int) -> np.ndarray:
    """Top-left corners int64 [count, 2] of the occluding patches, each fully inside the image.

    ``Generator(PCG64(seed)).integers(0, [height - size + 1, width - size + 1],
    size=(count, 2))``: row and column uniform over the positions where the patch fits.
    """
    high = np.array([height - size + 1, width - size + 1])
    if size < 1 or np.any(high < 1):
        raise ValueError(f"occlusion patch of size {size} does not fit a {height}x{width} image")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, high, size=(count, 2)).astype(np.int64)


def occlusion(pixels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``p`` with a ``size × size`` patch of each image set to 0.

    Image ``i``'s patch has its top-left corner at ``occlusion_corners(...)[i]``.
    """
    p = _pixels(pixels, "occlusion")
    n, height, width = p.shape
    corners = occlusion_corners(n, height, width, size, seed)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    r0 = corners[:, 0, None, None]
    c0 = corners[:, 1, None, None]
    inside = (rows >= r0) & (rows < r0 + size) & (cols >= c0) & (cols < c0 + size)
    return np.where(inside, 0.0, p)


def invert(pixels: np.ndarray) -> np.ndarray:
    """``16 − p`` (float64; stays in [0, 16], no clip needed)."""
    return PIXEL_MAX - _pixels(pixels, "inverted")


@dataclass(frozen=True)
class Shift:
    """A named shift: ``apply(pixels) -> float64 pixels`` and its rule in words."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    rule: str


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift(
            "contrast-0.5",
            partial(contrast, factor=CONTRAST_LOW),
            "clip(m + 0.5 (p - m), 0, 16), m = image mean",
        ),
        Shift(
            "contrast-2",
            partial(contrast, factor=CONTRAST_HIGH),
            "clip(m + 2 (p - m), 0, 16), m = image mean",
        ),
        Shift("brightness+4", partial(brightness, offset=BRIGHTNESS_OFFSET), "clip(p + 4, 0, 16)"),
        Shift(
            "noise",
            partial(gaussian_noise, sigma=NOISE_SIGMA, seed=NOISE_SEED),
            "clip(p + 2 z, 0, 16), z ~ N(0, 1)",
        ),
        Shift(
            "occlusion",
            partial(occlusion, size=OCCLUSION_SIZE, seed=OCCLUSION_SEED),
            "one random 3x3 patch set to 0",
        ),
        Shift("inverted", invert, "16 - p"),
    )
}

SHIFTED_SETS: tuple[str, ...] = tuple(SHIFTS)


def apply_shift(name: str, pixels: np.ndarray) -> np.ndarray:
    """Apply the shift called ``name`` to pixels [N, H, W] in 0..16; return float64 pixels."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shifted set {name!r}; valid names: {', '.join(SHIFTED_SETS)}")
    return SHIFTS[name].apply(pixels)
