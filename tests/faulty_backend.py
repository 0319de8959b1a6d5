"""A deliberately faulty kernel backend, for showing what the conformance kit and ``verify`` report.

Its accumulators are exact (the reference kernels'), but its requantization rounds the
float32 product ``float32(acc) · m`` half *away from zero* instead of half to even — a real
bug (C's ``roundf``). It differs from refquant only where the product is an exact tie
``k + 1/2``, which power-of-two scales make common and arbitrary scales make very rare.
It claims every requant mode and rounds the same way in all of them.
"""

import numpy as np

from refquant.kernels import reference
from refquant.numerics import Requantizer

CAPABILITIES = {"modes": ("float32",)}


def requantize(acc, rq: Requantizer, *, channel_axis: int = 1) -> np.ndarray:
    """``clip(round_half_away(float32(acc) · m) + z_y, lo, hi)`` — the bug: ties away from zero."""
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    rq = rq.for_channels(acc.shape[channel_axis]) if rq.channels != acc.shape[channel_axis] else rq
    v = (acc.astype(np.float32) * rq.multiplier.reshape(shape)).astype(np.float64)
    y = np.sign(v) * np.floor(np.abs(v) + 0.5) + rq.zero_point.reshape(shape)
    return np.clip(y, rq.lo.reshape(shape), rq.hi.reshape(shape)).astype(rq.out_dtype)


matmul_int32 = reference.matmul_int32
conv2d_int32 = reference.conv2d_int32


def matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq, *, name="matmul"):
    return requantize(reference.matmul_int32(a, w, a_zero_point, w_zero_point, bias, name=name), rq)


def conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq, **kwargs):
    return requantize(reference.conv2d_int32(x, w, x_zero_point, w_zero_point, bias, **kwargs), rq)
