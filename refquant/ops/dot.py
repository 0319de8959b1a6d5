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
  code, not by a BLAS kernel's blocking, SIMD width or thread count.  The Numba kernels are
  compiled without ``fastmath``, so LLVM may not reassociate them; it vectorises across
  independent outputs ``n`` only, which leaves each output's order untouched.
* for speed the kernels block the work — tasks of rows × columns, two rows and four
  consecutive terms per pass over a row (``o = (((o + p_k) + p_(k+1)) + p_(k+2)) + p_(k+3)``,
  the parenthesised order being the specified one), the columns converted to float64 once
  per task, Conv's taps four per pass — and none of it changes which additions happen or
  in which order, so no bit (``tests/test_float_dot_kernels.py`` checks them against NumPy
  sums that add one term at a time, for every block remainder and on one and two threads).
* the one float32 rounding at the end is correctly rounded (NumPy's ``astype``).

Accuracy: ``|S_K - exact| <= gamma64_K * sum|a*b|`` with ``gamma64_K ~ K * 2**-53``, far
below half a float32 ulp of the result unless the sum cancels by a factor of ~2**29 / K;
the result is the correctly rounded float32 of the exact sum except in those cases.

This is the **inference** numerics (float executor, calibration, golden replay).  Training
keeps float32 BLAS products (:data:`refquant.ops.TRAINING_OPS`), as the shipped models were
trained.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..kernels.phases import split_row

__all__ = ["batched_dot_f64", "batched_dot_rounded", "conv_direct_f64", "conv_direct_rounded", "dot_f64"]


#: rows of one task of the batched dot (its float64 copy of a column tile serves them all)
_M_CHUNK = 64
#: float64 elements of a task's column tile (K × columns, at least 128 columns): 256 KiB
_TILE = 32768


@njit(cache=True, parallel=True)
def _batched_dot_kernel(a, b, ia, ib, out, out32, bias, mode, m_chunk, n_chunk):  # pragma: no cover - compiled
    """``S = a[ia[i]] @ b[ib[i]]`` with each sum in increasing k, in float64, from ``+0.0``;
    ``mode`` 0 stores ``S`` in ``out`` (B, M, N) float64, 1 stores ``fl32(S + bias[m])`` and 2
    ``fl32(S)`` in ``out32`` (B, M, N) float32 (one float64 addition, one rounding to nearest
    even, as NumPy's ``astype``); the other output is not touched.

    ``a`` (Ba, M, K) and ``b`` (Bb, K, N) float32. One task per (batch, block of ``m_chunk`` rows, block of ``n_chunk``
    columns): an output is only ever touched by one task, in one order, so the result does
    not depend on the thread count or on the chunk sizes. A task converts its columns of
    ``b`` to float64 once (a product of the converted values is the same exact float64
    product), then, for two rows at a time, adds four consecutive terms per pass over the
    row tile::

        o[n] = (((o[n] + a[m, k]·b[k, n]) + a[m, k+1]·b[k+1, n]) + a[m, k+2]·b[k+2, n]) + a[m, k+3]·b[k+3, n]

    — the same additions, in the same order, as one term per pass (the parentheses are the
    order; no ``fastmath``, so LLVM may not reassociate them), with a quarter of the loads and
    stores of ``o``. LLVM vectorises the loop over ``n``: SIMD across independent outputs.
    The sums live in the task's own float64 tile until they are stored.
    """
    nb, m_len, n_len = (out.shape if mode == 0 else out32.shape)
    k_len = a.shape[2]
    k_full = k_len // 4 * 4
    m_tasks = (m_len + m_chunk - 1) // m_chunk
    n_tasks = (n_len + n_chunk - 1) // n_chunk
    for t in prange(nb * m_tasks * n_tasks):
        i = t // (m_tasks * n_tasks)
        mt = (t // n_tasks) % m_tasks
        nt = t % n_tasks
        ai = ia[i]
        bi = ib[i]
        m_lo = mt * m_chunk
        m_hi = min(m_len, m_lo + m_chunk)
        n_lo = nt * n_chunk
        n_hi = min(n_len, n_lo + n_chunk)
        n_w = n_hi - n_lo
        bb = np.empty((k_len, n_w))
        for k in range(k_len):
            src = b[bi, k, n_lo:n_hi]
            dst = bb[k]
            for n in range(n_w):
                dst[n] = np.float64(src[n])
        tile = np.zeros((m_hi - m_lo, n_w))
        m_pairs = m_lo + (m_hi - m_lo) // 2 * 2
        for m0 in range(m_lo, m_pairs, 2):
            r0 = a[ai, m0]
            r1 = a[ai, m0 + 1]
            o0 = tile[m0 - m_lo]
            o1 = tile[m0 + 1 - m_lo]
            for k in range(0, k_full, 4):
                a00, a01, a02, a03 = np.float64(r0[k]), np.float64(r0[k + 1]), np.float64(r0[k + 2]), np.float64(r0[k + 3])
                a10, a11, a12, a13 = np.float64(r1[k]), np.float64(r1[k + 1]), np.float64(r1[k + 2]), np.float64(r1[k + 3])
                b0, b1, b2, b3 = bb[k], bb[k + 1], bb[k + 2], bb[k + 3]
                for n in range(n_w):
                    x0, x1, x2, x3 = b0[n], b1[n], b2[n], b3[n]
                    o0[n] = (((o0[n] + a00 * x0) + a01 * x1) + a02 * x2) + a03 * x3
                    o1[n] = (((o1[n] + a10 * x0) + a11 * x1) + a12 * x2) + a13 * x3
            for k in range(k_full, k_len):
                a00, a10 = np.float64(r0[k]), np.float64(r1[k])
                b0 = bb[k]
                for n in range(n_w):
                    o0[n] += a00 * b0[n]
                    o1[n] += a10 * b0[n]
        for m in range(m_pairs, m_hi):
            r0 = a[ai, m]
            o0 = tile[m - m_lo]
            for k in range(0, k_full, 4):
                a00, a01, a02, a03 = np.float64(r0[k]), np.float64(r0[k + 1]), np.float64(r0[k + 2]), np.float64(r0[k + 3])
                b0, b1, b2, b3 = bb[k], bb[k + 1], bb[k + 2], bb[k + 3]
                for n in range(n_w):
                    o0[n] = (((o0[n] + a00 * b0[n]) + a01 * b1[n]) + a02 * b2[n]) + a03 * b3[n]
            for k in range(k_full, k_len):
                a00 = np.float64(r0[k])
                b0 = bb[k]
                for n in range(n_w):
                    o0[n] += a00 * b0[n]
        for m in range(m_lo, m_hi):
            _store(tile[m - m_lo], out, out32, bias, mode, i, m, n_lo)


@njit(cache=True, inline="always")
def _store(sums, out, out32, bias, mode, i, m, start):  # pragma: no cover - compiled
    """Row ``sums`` of float64 sums into ``out[i, m, start:]`` (mode 0), or rounded to float32
    into ``out32[i, m, start:]``: ``fl32(S + bias[m])`` (mode 1), ``fl32(S)`` (mode 2)."""
    if mode == 0:
        dst = out[i, m, start:]
        for n in range(sums.shape[0]):
            dst[n] = sums[n]
    elif mode == 1:
        dst32 = out32[i, m, start:]
        bm = bias[m]
        for n in range(sums.shape[0]):
            dst32[n] = np.float32(sums[n] + bm)
    else:
        dst32 = out32[i, m, start:]
        for n in range(sums.shape[0]):
            dst32[n] = np.float32(sums[n])


def _chunks(m_len: int, n_len: int, k_len: int) -> tuple[int, int]:
    """Task sizes of :func:`_batched_dot_kernel`: ``_M_CHUNK`` rows; columns in equal blocks
    whose float64 tile (K × columns) stays under ``_TILE`` elements or 128 columns. Speed
    only: any sizes give the same bits."""
    widest = max(128, _TILE // max(k_len, 1))
    n_tasks = -(-n_len // widest)
    return _M_CHUNK, max(1, -(-n_len // n_tasks))


def batched_dot_f64(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """float64 ``out[i] = a[ia[i]] @ b[ib[i]]`` (sums in increasing k), unrounded.

    ``a`` (Ba, M, K) and ``b`` (Bb, K, N) float32; ``ia``, ``ib`` int64 index arrays of one
    length B.  Returns (B, M, N) float64: the caller adds its bias in float64 and rounds once.
    """
    return _batched_dot(a, b, ia, ib, None)


def batched_dot_rounded(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, bias=None) -> np.ndarray:
    """:func:`batched_dot_f64` plus ``float64(bias[m])`` on row ``m``, rounded once to float32
    (``fl32(S + bias)``; ``fl32(S)`` without a bias): NumPy's float64 addition and ``astype``,
    without the (B, M, N) float64 array."""
    return _batched_dot(a, b, ia, ib, _bias64(bias, a.shape[1]))


def _batched_dot(a, b, ia, ib, bias):
    """``bias``: ``None`` (float64 sums), ``False`` (rounded), or float64 (M,) (added, rounded)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    ia = np.ascontiguousarray(ia, dtype=np.int64)
    ib = np.ascontiguousarray(ib, dtype=np.int64)
    if a.shape[2] != b.shape[1]:
        raise ValueError(f"inner dimensions differ: {a.shape} and {b.shape}")
    shape = (len(ia), a.shape[1], b.shape[2])
    out, out32, b64, mode = _outputs(shape, bias)
    if not a.shape[2]:  # empty sums: S = +0.0
        if mode == 0:
            out[...] = 0.0
        else:
            out32[...] = ((0.0 + b64) if mode == 1 else np.zeros(shape[1]))[None, :, None].astype(np.float32)  # +0 + -0 = +0
    elif np.prod(shape):
        with numba.parallel_chunksize(1):  # tasks handed out one by one: balanced on a busy machine
            _batched_dot_kernel(a, b, ia, ib, out, out32, b64, mode, *_chunks(a.shape[1], b.shape[2], a.shape[2]))
    return out if mode == 0 else out32


def _bias64(bias, m):
    """``False`` for no bias, else the bias as float64 (m,)."""
    return False if bias is None else np.asarray(bias).astype(np.float64).reshape(m)


def _outputs(shape, bias):
    """The kernel's two outputs (the unused one a 1-element dummy), its bias and its mode."""
    if bias is None:
        return np.empty(shape), np.empty((1, 1, 1), np.float32), np.zeros(1), 0
    if bias is False:
        return np.empty((1, 1, 1)), np.empty(shape, np.float32), np.zeros(1), 2
    return np.empty((1, 1, 1)), np.empty(shape, np.float32), bias, 1


def dot_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 ``a @ b`` for 2-D float32 ``a`` (M, K), ``b`` (K, N), sums in increasing k."""
    zero = np.zeros(1, dtype=np.int64)
    return batched_dot_f64(a[None], b[None], zero, zero)[0]


#: float64 elements of the block of output rows a direct-conv pass sweeps (16 KiB: in L1)
_ROW_BLOCK = 2048
#: at most this many parallel tasks of a direct conv (each converts its own planes)
_DIRECT_TASKS = 64


@njit(cache=True, parallel=True)
def _conv_direct_kernel(x, w, top, left, sh, sw, dh, dw, group, oh_n, ow_n, out, out32, bias, mode, n_tasks):  # pragma: no cover - compiled
    """``S[n, m] = Σ_(c, i, j) w[m, c, i, j] · x[n, g·Cg + c, oh·sh + i·dh − top, ow·sw + j·dw − left]``
    in float64, each output's terms in increasing ``(c, i, j)``; taps in the padding skipped.
    Stored as :func:`_batched_dot_kernel` stores (``mode``), in ``out``/``out32`` shaped
    (N, M, OH·OW).

    The (image, output channel) pairs are split into ``n_tasks`` contiguous runs, one per
    parallel iteration: an output is only ever touched by one thread, in one order. A task
    keeps one zero-padded float64 copy of an input plane, split into ``sh·sw`` phase planes
    (padded row ``r``, column ``p`` at phase ``(r % sh, p % sw)``, row ``r // sh``, column
    ``p // sw``) of ``wq`` columns each, stored flat. The sums are kept flat too, ``wq`` per
    output row (the columns past ``OW`` are scratch), so tap ``(i, j)`` of every output of a
    block of rows is one contiguous pass: output ``q = oh·wq + ow`` reads phase plane
    ``((i·dh) % sh, (j·dw) % sw)`` at ``q + ((i·dh) // sh)·wq + (j·dw) // sw``. Four taps per
    pass, ``o = (((o + w_0·x_0) + w_1·x_1) + w_2·x_2) + w_3·x_3`` in the order ``(c, i, j)``
    (the parentheses are the order, no ``fastmath``), the remainder one per pass, over blocks
    of ``_ROW_BLOCK`` sums that stay in L1. Padding taps are added: their product is ±0.0
    when the weight is finite, which changes no bit (:func:`conv_direct_f64`). A channel
    with a non-finite weight instead sums each output's inside taps one by one (``inf · 0``
    would be NaN).

    The padding of a task's planes is written once (zeros) and never overwritten; each plane
    conversion writes only the inside, so the planes are reused from one pair to the next.
    """
    n_img, m_out = x.shape[0], w.shape[0]
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = x.shape[2], x.shape[3]
    mg = m_out // group
    wq = max((left + wd - 1) // sw + 1, ow_n + ((kw - 1) * dw) // sw)
    hq = max((top + h - 1) // sh + 1, oh_n + ((kh - 1) * dh) // sh + 1)
    k_taps = kh * kw
    phase = np.empty(k_taps, np.int64)
    offset = np.empty(k_taps, np.int64)
    for i in range(kh):
        for j in range(kw):
            phase[i * kw + j] = ((i * dh) % sh) * sw + (j * dw) % sw
            offset[i * kw + j] = ((i * dh) // sh) * wq + (j * dw) // sw
    k_full = k_taps // 4 * 4
    rows = max(1, _ROW_BLOCK // wq)
    pairs = n_img * m_out
    finite = np.ones(m_out, np.bool_)  # per output channel: every weight finite
    for m in range(m_out):
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    if not np.isfinite(w[m, c, i, j]):
                        finite[m] = False
    for task in prange(n_tasks):
        planes = np.zeros((sh * sw, hq * wq))
        flat = planes.reshape(planes.size)
        sums = np.empty(oh_n * wq)
        wt = np.empty(k_taps)
        for t in range(task * pairs // n_tasks, (task + 1) * pairs // n_tasks):
            n = t // m_out
            m = t % m_out
            c0 = (m // mg) * cg
            sums[:] = 0.0
            for c in range(cg):
                src = x[n, c0 + c]
                if not finite[m]:
                    _inside_taps(sums, src, w[m, c], top, left, sh, sw, dh, dw, oh_n, ow_n, wq)
                    continue
                for y in range(h):
                    r = top + y
                    split_row(src[y], 0.0, flat, (r % sh) * sw * hq * wq + (r // sh) * wq, hq * wq, left, sw)
                for i in range(kh):
                    for j in range(kw):
                        wt[i * kw + j] = np.float64(w[m, c, i, j])
                for r0 in range(0, oh_n, rows):
                    q0 = r0 * wq
                    acc = sums[q0:min(oh_n, r0 + rows) * wq]
                    for k in range(0, k_full, 4):
                        w0, w1, w2, w3 = wt[k], wt[k + 1], wt[k + 2], wt[k + 3]
                        x0 = planes[phase[k], q0 + offset[k]:]
                        x1 = planes[phase[k + 1], q0 + offset[k + 1]:]
                        x2 = planes[phase[k + 2], q0 + offset[k + 2]:]
                        x3 = planes[phase[k + 3], q0 + offset[k + 3]:]
                        for q in range(acc.shape[0]):
                            acc[q] = (((acc[q] + w0 * x0[q]) + w1 * x1[q]) + w2 * x2[q]) + w3 * x3[q]
                    for k in range(k_full, k_taps):
                        w0 = wt[k]
                        x0 = planes[phase[k], q0 + offset[k]:]
                        for q in range(acc.shape[0]):
                            acc[q] += w0 * x0[q]
            for oh in range(oh_n):
                _store(sums[oh * wq:oh * wq + ow_n], out, out32, bias, mode, n, m, oh * ow_n)


@njit(cache=True)
def _inside_taps(sums, src, wc, top, left, sh, sw, dh, dw, oh_n, ow_n, wq):  # pragma: no cover - compiled
    """Add to each output of ``sums`` (``wq`` per row) its taps of one input channel that lie
    inside the input, one by one in increasing ``(i, j)``: the path of a channel with a
    non-finite weight, whose product with a padding zero would be NaN."""
    h, wd = src.shape
    for oh in range(oh_n):
        for ow in range(ow_n):
            s = sums[oh * wq + ow]
            for i in range(wc.shape[0]):
                ih = oh * sh + i * dh - top
                if 0 <= ih < h:
                    for j in range(wc.shape[1]):
                        iw = ow * sw + j * dw - left
                        if 0 <= iw < wd:
                            s += np.float64(wc[i, j]) * np.float64(src[ih, iw])
            sums[oh * wq + ow] = s


def conv_direct_f64(x: np.ndarray, w: np.ndarray, group: int, pads, out_hw, strides, dilations) -> np.ndarray:
    """float64 Conv sums without unrolling: ``(N, M, OH, OW)``, unrounded, no bias.

    Each output is ``S_K`` of the module docstring with the terms in increasing
    ``k = (c, i, j)`` — the order of an im2col column — except that taps falling in the zero
    padding are skipped. Skipping them changes no bit: their product is ``±0.0``, and adding
    ``±0.0`` to a sum that starts at ``+0.0`` leaves it unchanged (a float64 sum of such terms
    is never ``−0.0``: ``+0 + −0 = +0`` and an exact cancellation gives ``+0``). So this is
    the same float64 value as :func:`batched_dot_f64` on the unrolled input, without the
    ``kH·kW``-fold copy (a test checks the two agree bit for bit). For the same reason the
    kernel adds the padding taps of an output channel whose weights are all finite (from a
    zero-padded row: no border tests) and skips them only where a weight is ±∞ or NaN, whose
    product with 0 would be NaN.
    """
    return _conv_direct(x, w, group, pads, out_hw, strides, dilations, None)


def conv_direct_rounded(x, w, group: int, pads, out_hw, strides, dilations, bias=None) -> np.ndarray:
    """:func:`conv_direct_f64` plus ``float64(bias[m])`` on channel ``m``, rounded once to
    float32 — NumPy's float64 addition and ``astype`` without the float64 array."""
    return _conv_direct(x, w, group, pads, out_hw, strides, dilations, _bias64(bias, w.shape[0]))


def _conv_direct(x, w, group, pads, out_hw, strides, dilations, bias):
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    shape = (x.shape[0], w.shape[0], int(out_hw[0]) * int(out_hw[1]))
    out, out32, b64, mode = _outputs(shape, bias)
    if np.prod(shape):
        with numba.parallel_chunksize(1):  # tasks handed out one by one: balanced on a busy machine
            _conv_direct_kernel(x, w, int(pads[0]), int(pads[1]), int(strides[0]), int(strides[1]),
                                int(dilations[0]), int(dilations[1]), int(group), int(out_hw[0]), int(out_hw[1]),
                                out, out32, b64, mode, min(_DIRECT_TASKS, shape[0] * shape[1]))
    return (out if mode == 0 else out32).reshape(x.shape[0], w.shape[0], int(out_hw[0]), int(out_hw[1]))
