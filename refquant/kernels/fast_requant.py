"""Numba form of :func:`refquant.numerics.requantize`, the ``numba`` backend's ``requantize``.

What the executor calls on int32 accumulators after a dynamic (timing ``after``) strategy has
chosen the output qparams, and the golden replay on recorded ones. Each output is the
reference's formula for its channel ``c`` (``spec/numerics.md``, :mod:`refquant.numerics.requant`),
computed by the same per-element functions the fused kernels requantize with
(:func:`refquant.kernels.fast._store_channel`, and for ``float32`` its vectorised row
:func:`refquant.kernels.fast._float32_row` — int32 accumulators are what it needs):

* ``float32``: ``clip(rint(float32(acc) · m[c]) + z[c], lo[c], hi[c])``, the product in float32;
* ``float64``: ``clip(rint(float64(acc) · float64(m[c]) + z[c]), lo[c], hi[c])``;
* ``fixed-point``: TFLite's double rounding in int64; an ``acc · 2**shift`` outside int32
  raises the reference's ``OverflowError``;
* any other mode (``fixed-point-single``): ``floor((acc · Q + 2**(30 − e)) / 2**(31 − e)) + z``,
  clamped.

The accumulators are viewed as ``[outer, C, inner]`` (``C`` along ``channel_axis``); ``prange``
runs over chunks of the ``outer · C`` rows, one chunk per thread, every output written once by
one thread — the result does not depend on the thread count; below
:data:`refquant.kernels.grain.PARALLEL_GRAIN` accumulators on the calling thread alone.
Anything that is not a native int32 array with a valid integer ``channel_axis`` goes to the
reference, which raises what it raises (a wrong-sized requantizer raises its ``ValueError``
here as there), and so do fewer than :data:`NUMPY_BELOW` accumulators (a Gemm's ``[N, 10]``:
the NumPy rule takes 75 µs there, the kernel's call 160 µs).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..numerics.requant import Requantizer
from ..numerics.requant import requantize as reference_requantize
from .fast import _chunk_bounds, _float32_row, _raise_overflows, _requant_args, _signed_view, _store_channel
from .grain import threads_for

#: below this many accumulators the NumPy rule itself is faster than the kernel's call
NUMPY_BELOW = 1 << 14

__all__ = ["requantize"]


@njit(parallel=True, cache=True)
def _requantize_kernel(acc, rq, out, status):
    """``out[o, c, :] = requantize(acc[o, c, :])`` in channel ``c``; ``status[t, 2] >= 0`` marks
    a fixed-point overflow met by chunk ``t``."""
    mode, multiplier, zero_point, lo, hi = rq[0], rq[1], rq[4], rq[5], rq[6]
    n_outer, channels, inner = acc.shape
    rows = n_outer * channels
    chunks = status.shape[0]
    for t in prange(chunks):
        r0, r1 = _chunk_bounds(rows, chunks, t)
        for r in range(r0, r1):
            o, c = r // channels, r % channels
            if mode == 0:  # the default mode, in the loop AVX2 vectorises
                _float32_row(acc[o, c], multiplier[c], zero_point[c], lo[c], hi[c], out[o, c])
            else:
                _store_channel(acc[o, c], c, rq, out[o, c], r * inner, status, t)


def requantize(acc, rq: Requantizer, *, channel_axis: int = 1) -> np.ndarray:
    """:func:`refquant.numerics.requantize` of int32 accumulators (channels along
    ``channel_axis``), bit for bit (module doc)."""
    a = np.asarray(acc)
    if (a.dtype != np.int32 or a.size < NUMPY_BELOW or a.ndim == 0 or isinstance(channel_axis, bool)
            or not isinstance(channel_axis, (int, np.integer)) or not -a.ndim <= channel_axis < a.ndim):
        return reference_requantize(acc, rq, channel_axis=channel_axis)
    axis = int(channel_axis) % a.ndim
    c = a.shape[axis]
    rq = rq.for_channels(c) if rq.channels != c else rq
    outer, inner = int(np.prod(a.shape[:axis])), int(np.prod(a.shape[axis + 1:]))
    out = np.empty(a.shape, rq.out_dtype)
    rows = outer * c
    with threads_for(a.size) as threads:  # refquant.kernels.grain
        status = np.full((max(1, min(threads, rows)), 3), -1, np.int64)
        _requantize_kernel(np.ascontiguousarray(a).reshape(outer, c, inner), _requant_args(rq, c),
                           _signed_view(out).reshape(outer, c, inner), status)
    if np.any(status[:, 2] >= 0):
        _raise_overflows(status, out.shape, "requantize")  # the reference's OverflowError
    return out
