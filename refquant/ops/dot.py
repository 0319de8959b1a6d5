"""The float reference path's dot products: float64 accumulation in a fixed order, one rounding.

Every K-term sum of the inference forward of Conv, Gemm and MatMul is computed as::

    S_0 = +0.0                                              (float64)
    S_k = fl64(S_(k-1) + float64(a[m, k]) * float64(b[k, n]))    k = 0, 1, ..., K-1 in order
    y   = fl32(S_K + extra)                                 (extra: bias / C term, float64)

Why this is machine-independent (bit for bit, on any IEEE-754 host):

* the product of two float32 values is **exact** in float64 (24 + 24 = 48 significant bits
  <= 53; exponents from 2**-298 to 2**256, inside float64's normal range), so whether the
  compiler fuses the multiply-add into an FMA or not changes no bit;
* the additions are done one after another in increasing ``k`` — an order fixed by this
  code, not by a BLAS kernel's blocking, SIMD width or thread count.  The Numba kernel is
  compiled without ``fastmath``, so LLVM may not reassociate them; it vectorises across
  independent outputs ``n`` only, which leaves each output's order untouched.
* the one float32 rounding at the end is correctly rounded (NumPy's ``astype``).

Accuracy: ``|S_K - exact| <= gamma64_K * sum|a*b|`` with ``gamma64_K ~ K * 2**-53``, far
below half a float32 ulp of the result unless the sum cancels by a factor of ~2**29 / K;
the result is the correctly rounded float32 of the exact sum except in those cases.

This is the **inference** numerics (float executor, calibration, golden replay).  Training
keeps float32 BLAS products (:data:`refquant.ops.TRAINING_OPS`), as the shipped models were
trained.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["batched_dot_f64", "conv_direct_f64", "dot_f64"]


@njit(cache=True, parallel=True)
def _batched_dot_kernel(a, b, ia, ib, out):  # pragma: no cover - compiled
    """``out[i] += a[ia[i]] @ b[ib[i]]`` with each sum in increasing k, in float64.

    ``a`` (Ba, M, K) and ``b`` (Bb, K, N) float32, ``out`` (B, M, N) float64, zero-initialised
    by the caller.  One (batch, row) pair per parallel iteration: an output is only ever
    touched by one thread, in one order.
    """
    nb = out.shape[0]
    m_rows = out.shape[1]
    n_cols = out.shape[2]
    k_len = a.shape[2]
    for t in prange(nb * m_rows):
        i = t // m_rows
        m = t % m_rows
        ai = ia[i]
        bi = ib[i]
        for k in range(k_len):
            w = np.float64(a[ai, m, k])
            for n in range(n_cols):
                out[i, m, n] += w * np.float64(b[bi, k, n])


def batched_dot_f64(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """float64 ``out[i] = a[ia[i]] @ b[ib[i]]`` (sums in increasing k), unrounded.

    ``a`` (Ba, M, K) and ``b`` (Bb, K, N) float32; ``ia``, ``ib`` int64 index arrays of one
    length B.  Returns (B, M, N) float64: the caller adds its bias in float64 and rounds once.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    ia = np.ascontiguousarray(ia, dtype=np.int64)
    ib = np.ascontiguousarray(ib, dtype=np.int64)
    if a.shape[2] != b.shape[1]:
        raise ValueError(f"inner dimensions differ: {a.shape} and {b.shape}")
    out = np.zeros((len(ia), a.shape[1], b.shape[2]), dtype=np.float64)
    if out.size and a.shape[2]:
        _batched_dot_kernel(a, b, ia, ib, out)
    return out


def dot_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 ``a @ b`` for 2-D float32 ``a`` (M, K), ``b`` (K, N), sums in increasing k."""
    zero = np.zeros(1, dtype=np.int64)
    return batched_dot_f64(a[None], b[None], zero, zero)[0]


@njit(cache=True, parallel=True)
def _conv_direct_kernel(x, w, top, left, sh, sw, dh, dw, group, out):  # pragma: no cover - compiled
    """``out[n, m] += Σ_(c, i, j) w[m, c, i, j] · x[n, g·Cg + c, oh·sh + i·dh − top, ow·sw + j·dw − left]``
    in float64, each output's terms in increasing ``(c, i, j)``; taps in the padding skipped.

    One (image, output channel) pair per parallel iteration, so an output is only ever
    touched by one thread, in one order.
    """
    n_img, m_out, oh_n, ow_n = out.shape
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = x.shape[2], x.shape[3]
    mg = m_out // group
    for t in prange(n_img * m_out):
        n = t // m_out
        m = t % m_out
        c0 = (m // mg) * cg
        for c in range(cg):
            for i in range(kh):
                oh_lo, oh_hi = _inside(top - i * dh, h + top - i * dh, sh, oh_n)
                for j in range(kw):
                    ow_lo, ow_hi = _inside(left - j * dw, wd + left - j * dw, sw, ow_n)
                    wt = np.float64(w[m, c, i, j])
                    shift = j * dw - left
                    for oh in range(oh_lo, oh_hi):
                        row = x[n, c0 + c, oh * sh + i * dh - top]
                        acc = out[n, m, oh]
                        if sw == 1:  # contiguous taps: a loop LLVM vectorises
                            for ow in range(ow_lo, ow_hi):
                                acc[ow] += wt * np.float64(row[ow + shift])
                        else:
                            for ow in range(ow_lo, ow_hi):
                                acc[ow] += wt * np.float64(row[ow * sw + shift])


@njit(cache=True, inline="always")
def _inside(lo, hi, stride, n):  # pragma: no cover - compiled
    """The outputs ``o`` in ``[0, n)`` whose tap ``o·stride − lo`` lies in ``[0, hi − lo)``:
    ``o·stride ≥ lo`` and ``o·stride < hi``, as a half-open range."""
    first = 0 if lo <= 0 else (lo + stride - 1) // stride
    last = 0 if hi <= 0 else min(n, (hi - 1) // stride + 1)
    return first, max(first, last)


def conv_direct_f64(x: np.ndarray, w: np.ndarray, group: int, pads, out_hw, strides, dilations) -> np.ndarray:
    """float64 Conv sums without unrolling: ``(N, M, OH, OW)``, unrounded, no bias.

    Each output is ``S_K`` of the module docstring with the terms in increasing
    ``k = (c, i, j)`` — the order of an im2col column — except that taps falling in the zero
    padding are skipped. Skipping them changes no bit: their product is ``±0.0``, and adding
    ``±0.0`` to a sum that starts at ``+0.0`` leaves it unchanged (a float64 sum of such terms
    is never ``−0.0``: ``+0 + −0 = +0`` and an exact cancellation gives ``+0``). So this is
    the same float64 value as :func:`batched_dot_f64` on the unrolled input, without the
    ``kH·kW``-fold copy (a test checks the two agree bit for bit).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    out = np.zeros((x.shape[0], w.shape[0], out_hw[0], out_hw[1]), dtype=np.float64)
    if out.size:
        _conv_direct_kernel(x, w, int(pads[0]), int(pads[1]), int(strides[0]), int(strides[1]),
                            int(dilations[0]), int(dilations[1]), int(group), out)
    return out
