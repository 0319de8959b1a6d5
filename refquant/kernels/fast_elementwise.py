"""Numba forms of two elementwise rules, the ``numba`` backend's ``quantize`` and
``dequantized_add`` hooks.

* :func:`quantize` — :func:`refquant.numerics.quantize` for per-tensor qparams:
  ``clip(float64(rint(float32(x) / s)) + z, qmin, qmax)`` in the storage dtype. The quotient is
  one float32 division (correctly rounded, as NumPy's), ``rint`` rounds half to even, the
  zero point is added in float64 (exact for every integer the sum can take), and a quotient
  beyond float32 is ``±inf``, which the clamp saturates. It is what the executor quantizes
  a float32 tensor with — a graph input, the result of a float rule of the integer-operator
  table (Add, GlobalAveragePool's mean, Softmax, …).
* :func:`dequantized_add` — the integer-operator table's fallback for ``Add`` of two quantized
  tensors of one shape: ``float32(int32(a) − z_a) · s_a + float32(int32(b) − z_b) · s_b``, each
  product and the sum one float32 operation, in that order (no fused multiply-add: the
  kernels are compiled without ``fastmath``), exactly what
  :func:`refquant.numerics.dequantize` then the float ``Add`` compute, in one pass instead of
  five arrays. Both are 8- or 16-bit integers, so ``int32(q) − z`` is exact in float32.

Each returns ``None`` where it does not apply (per-channel qparams, other dtypes or shapes, a
non-finite input to quantize — the reference then raises its error), and the caller runs the
NumPy rule. Every element is computed alone by one thread, so the result does not depend on
the thread count; below :data:`refquant.kernels.grain.PARALLEL_GRAIN` elements the serial loop
runs on the calling thread with no parallel region (:func:`refquant.kernels.grain.run_chunked`).
``tests/test_kernels_speed.py`` checks both bit for bit against the NumPy rules, on one and two
threads and with the pool forced.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..numerics import QParams
from .fast import _chunk_bounds
from .grain import run_chunked

__all__ = ["quantize", "dequantized_add"]

_INT_DTYPES = (np.int8, np.uint8, np.int16, np.uint16)


@njit(cache=True)
def _quantize_run(x, scale, zero_point, qmin, qmax, out):  # pragma: no cover - compiled
    """``out[i] = clip(float64(rint(x[i] / scale)) + zero_point, qmin, qmax)`` over one run;
    returns how many inputs are not finite (their outputs are meaningless: the caller then
    runs the reference, which raises)."""
    count = 0
    for i in range(x.size):
        v = x[i]
        count += (v - v) != 0  # NaN and ±inf: inf − inf is NaN
        r = np.float64(np.rint(v / scale)) + zero_point
        out[i] = min(max(r, qmin), qmax)
    return count


@njit(parallel=True, cache=True)
def _quantize_kernel(x, scale, zero_point, qmin, qmax, out, chunks):  # pragma: no cover - compiled
    """:func:`_quantize_run` over ``chunks`` contiguous chunks in parallel; returns the count
    of non-finite inputs."""
    n = x.size
    bad = 0
    for t in prange(chunks):
        start, stop = _chunk_bounds(n, chunks, t)
        bad += _quantize_run(x[start:stop], scale, zero_point, qmin, qmax, out[start:stop])
    return bad


def quantize(x: np.ndarray, qp: QParams) -> np.ndarray | None:
    """:func:`refquant.numerics.quantize` of a float32 ``x`` with per-tensor ``qp`` (module
    doc); ``None`` where it does not apply or ``x`` holds a non-finite value."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and qp.per_tensor):
        return None
    storage = np.dtype(qp.fmt.storage_dtype)
    if storage.type not in _INT_DTYPES:
        return None
    src = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(x.shape, storage)
    bad = run_chunked(src.size, _quantize_run, _quantize_kernel, src, np.float32(qp.scale.reshape(())),
                      float(qp.zero_point.reshape(())), float(qp.fmt.qmin), float(qp.fmt.qmax), out.reshape(-1))
    return None if bad else out


@njit(cache=True)
def _dequantized_add_run(a, za, sa, b, zb, sb, out):  # pragma: no cover - compiled
    """``out[i] = (float32(a[i]) − za) · sa + (float32(b[i]) − zb) · sb`` over one run, every
    operation in float32 and in that order. ``za``, ``zb`` are float32: an 8- or 16-bit
    integer minus a zero point is exact in float32, so this is ``float32(int32(a) − z_a)``."""
    for i in range(a.size):
        out[i] = (np.float32(a[i]) - za) * sa + (np.float32(b[i]) - zb) * sb


@njit(parallel=True, cache=True)
def _dequantized_add_kernel(a, za, sa, b, zb, sb, out, chunks):  # pragma: no cover - compiled
    """:func:`_dequantized_add_run` over ``chunks`` contiguous chunks in parallel."""
    n = a.size
    for t in prange(chunks):
        start, stop = _chunk_bounds(n, chunks, t)
        _dequantized_add_run(a[start:stop], za, sa, b[start:stop], zb, sb, out[start:stop])


def dequantized_add(a: np.ndarray, qa: QParams, b: np.ndarray, qb: QParams) -> np.ndarray | None:
    """``dequantize(a, qa) + dequantize(b, qb)`` in float32 for two integer tensors of one shape
    with per-tensor qparams (module doc); ``None`` otherwise."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype.type in _INT_DTYPES and b.dtype.type in _INT_DTYPES and qa.per_tensor and qb.per_tensor):
        return None
    out = np.empty(a.shape, np.float32)
    run_chunked(a.size, _dequantized_add_run, _dequantized_add_kernel,
                np.ascontiguousarray(a).reshape(-1), np.float32(qa.zero_point.reshape(())), np.float32(qa.scale.reshape(())),
                np.ascontiguousarray(b).reshape(-1), np.float32(qb.zero_point.reshape(())), np.float32(qb.scale.reshape(())),
                out.reshape(-1))
    return out
