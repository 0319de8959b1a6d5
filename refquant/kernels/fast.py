"""Numba integer kernels: the signatures and the exact results of ``kernels/reference.py``, fast.

Same layouts (matmul ``a [M, K]``, ``w [N, K]``; conv NCHW input, OIHW weights), same
validation (:func:`~refquant.kernels.reference.check_operands`,
:func:`~refquant.kernels.geometry.conv_geometry`), same errors and messages, same output
dtypes, and the same numbers, bit for bit, for

    acc[m, n] = Σ_k (a[m, k] - z_a) · (w[n, k] - z_w[n]) + bias[n]

How the exact sum is computed quickly
-------------------------------------
1. **Zero points by algebra.** Expanding the product leaves one O(M·N·K) term, a pure
   integer dot product, and corrections that cost O(M·K + N·K)::

       acc[m, n] = D[m, n] - z_w[n] · R[m] + c[n]
       D[m, n] = Σ_k a[m, k] · w[n, k]                          (the tile microkernels)
       R[m]    = Σ_k a[m, k]                                    (per row; skipped if z_w ≡ 0)
       c[n]    = bias[n] - z_a · Σ_k w[n, k] + K · z_a · z_w[n]   (per call)

   The microkernels want operands of one signedness (see the paths below), so an operand
   may be read with its top bit flipped: the bits of an int8 ``a`` XOR 0x80 are the uint8
   value ``a + 128``, those of a uint8 ``w`` are the int8 value ``w - 128`` (likewise for
   16 bits). The zero point moves with its operand, so ``a - z_a``, ``w - z_w`` and
   ``acc`` do not change; only ``D``, ``R`` and ``c`` are computed on the shifted values.
2. **D in int32 is exact** when ``K · max|a| · max|w| < 2**31`` (for 8-bit operands from
   their dtype's range, for 16-bit ones from the data and zero points): every partial sum,
   in any order, then fits in int32. Otherwise ``D`` accumulates in int64.
3. **The accumulator and the overflow check in int64.** ``D``, ``R`` and ``c`` are exact,
   so ``acc`` is exact, and each one is compared with the int32 range:
   :class:`AccumulatorOverflowError` is raised exactly when the reference raises it, at the
   same (first, in C order) output index, with the same message. Partial sums leaving
   int32 while the final value fits are no error, as in the reference.
4. **Requantization** (``*_requant``) follows a block of accumulators immediately: four
   matmul rows, or one output row of one conv group, are requantized to 8 bits (or 16)
   before the next block is computed, so no buffer the size of the output is ever
   allocated. The scalar functions below restate :func:`refquant.numerics.requant.requantize`
   operation for operation: float32 product in float32, ``rint`` (round half to even),
   the zero point before or after rounding as the mode says, gemmlowp's high multiply with
   C's truncating division, ... — the tests compare them with ``requantize`` directly.

Tile paths (the microkernel computing a 4×4 block of ``D``):

* ``"vnni"`` — :func:`refquant.kernels.vnni.dot_tile`: ``vpdpbusd`` (uint8 × int8) on hosts
  with AVX-512 VNNI, for 8-bit operands with ``K · 255 · 128 < 2**31``;
* ``"int32"`` — portable Numba: sixteen single dot-product loops over int8 (or int16)
  operands, which LLVM vectorises into ``vpmaddwd`` — it does so only with one reduction per
  loop and both operands of the same signedness, hence the flips to signed;
* ``"int64"`` — portable, exact for any 8/16-bit operands and any K.

Parallelism: the output is cut into as many chunks as Numba has threads (rows of the
matmul, or its columns when M is small; (image, output row) pairs of the conv), and each
chunk runs on one thread with its own scratch. All scratch is allocated by the Python
wrappers before the jitted kernel runs, and :func:`requant_scratch_bytes` states it.

Conv: for each output row the kernel gathers its receptive field into a patch matrix
``[OW, K]`` (K ordered kernel row, kernel column, channel) from a ring of transposed input
rows ``[W + pads, C_in]`` (each input row is transposed once per thread, not once per
kernel offset), and multiplies it with the weights repacked to ``[C_out, kh·kw·C_in/group]``.
Padding reads the (shifted) input zero point, i.e. real zero.

The Numba backend (:mod:`refquant.kernels.numba_backend`) runs 8-bit Conv and MatMul layers
above a size threshold not on these tile kernels but in float32 BLAS, exact by a bound on every
partial sum (:mod:`refquant.kernels.exact_gemm`, whose calls have these signatures and choose
between the two).

Depthwise conv (one input channel per group — ``group = C_in``, any channel multiplier; the
bulk of MobileNet/EfficientNet): the patch matrix would have rows of ``kh·kw`` bytes (9 for a
3×3), far too short for the tile microkernels, so :func:`_depthwise_kernel` runs these
instead, for 8-bit operands: per (image, output channel) the input channel is copied once,
centred (``x - z_x``), into a zero-bordered int32 plane, and each output row is accumulated
kernel tap by kernel tap along the row (``acc[ox] += plane[iy, ix0 + ox·s] · (w - z_w)``, a
loop LLVM vectorises), exact in int32 since ``kh·kw·255·255 < 2**31``; then the bias in int64,
the overflow check and the requantization of the row, as in the generic kernel. Chunks are
(image, channel) pairs. ``USE_DEPTHWISE = False`` sends these convs to the generic kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from ..numerics.requant import Requantizer
from .geometry import conv_geometry
from .reference import AccumulatorOverflowError, check_operands
from .channel_vectors import (CHANNELS, PIXELS, ROW, pixels_in, requantized_out, row_sums_k3s1, row_sums_k3s2,
                              row_sums_k5s1, row_sums_k5s2, tap_sums)
from .phases import split_row
from .vnni import CHUNK, HOST_HAS_VNNI, TILE_COLS, TILE_ROWS, dot_tile

__all__ = [
    "AccumulatorOverflowError",
    "matmul_int32",
    "matmul_requant",
    "conv2d_int32",
    "conv2d_requant",
    "check_operands",
    "requant_scratch_bytes",
    "TILE_PATHS",
    "USE_VNNI",
]

TILE_PATHS = ("vnni", "int32", "int64")
USE_VNNI = HOST_HAS_VNNI  # set to False to run the portable kernels on a VNNI host
_FORCE_PATH = None        # tests set this to one of TILE_PATHS to exercise every path

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_NO_REQUANT = -1  # mode code of the unfused kernels: store the int32 accumulator

# ---------------------------------------------------------------------------------------
# Requantization of one accumulator (restating refquant.numerics.requant.requantize)
# ---------------------------------------------------------------------------------------


def _mode_code(mode: str) -> int:
    """0 float32, 1 float64, 2 fixed-point, 3 anything else (``requantize`` treats every
    other mode string as ``fixed-point-single``)."""
    return {"float32": 0, "float64": 1, "fixed-point": 2}.get(mode, 3)


@njit(cache=True)
def _saturating_rounding_doubling_high_mul(a, b):
    """``floor(a · b / 2**31 + 1/2)`` as gemmlowp computes it: the nudge ``2**30`` (or
    ``1 - 2**30`` below zero), then C's truncating division — ties go toward +∞."""
    ab = a * b
    nudged = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    high = (nudged >> 31) if nudged >= 0 else -((-nudged) >> 31)  # truncation toward zero
    if a == _INT32_MIN and b == _INT32_MIN:
        return np.int64(_INT32_MAX)
    return high


@njit(cache=True)
def _rounding_divide_by_pot(x, exponent):
    """``round_half_away(x / 2**exponent)`` with shifts, as gemmlowp."""
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


@njit(cache=True)
def _clamp_float(y, lo, hi):
    """``np.clip(y, lo, hi)`` of a float64, then to int64 (the value is integral)."""
    if y < lo:
        y = np.float64(lo)
    if y > hi:
        y = np.float64(hi)
    return np.int64(y)


@njit(cache=True)
def _float32_mode(acc, multiplier, zero_point, lo, hi):
    """``clip(rint(float32(acc) · m) + z_y)``: the product in float32 (both operands are
    float32), ``rint`` rounds half to even, ``+ z_y`` and the clamp in float64."""
    product = np.float32(acc) * multiplier
    return _clamp_float(np.float64(np.rint(product)) + np.float64(zero_point), lo, hi)


@njit(cache=True)
def _float32_unchecked_one(y, bias, multiplier, zero_point, lo, hi):
    """``clip(rint(float32(int32(y) + bias) · m) + z_y, lo, hi)`` — the float32 mode
    (:func:`_float32_mode`) of one sum ``y + bias`` proven to fit int32 (by the caller: the
    depthwise kernel's per-channel bound, ``exact_gemm.GemmBinding.unchecked``), in int32 and
    float32 only, so that loops of it run eight lanes wide on AVX2. Exactly the mode's
    result: the clamp moves before ``+ z_y`` (``clip(R + z, lo, hi) = clip(R, lo - z, hi - z) + z``
    for the integral ``R = rint(product)``; ``lo - z`` and ``hi - z`` are small integers, so the
    float32 comparisons are exact, and an infinite ``R`` clamps the same way)."""
    return _float32_clamped(y, bias, multiplier, zero_point, np.float32(lo - zero_point),
                            np.float32(hi - zero_point))


@njit(cache=True)
def _float32_clamped(y, bias, multiplier, zero_point, low, high):
    """:func:`_float32_unchecked_one` with its clamp bounds given as float32 ``low = lo - z_y``,
    ``high = hi - z_y`` (a loop over a vector of them runs without int64 conversions: 1.7× faster,
    measured). Numba widens ``int32 + int32`` to int64, so each sum is narrowed back
    explicitly."""
    acc = np.int32(np.int32(y) + np.int32(bias))
    r = np.rint(np.float32(acc) * multiplier)
    r = min(max(r, low), high)
    return np.int32(np.int32(r) + zero_point)


@njit(cache=True)
def _float64_mode(acc, multiplier, zero_point, lo, hi):
    """``clip(rint(float64(acc) · float64(m) + z_y))``: ``z_y`` is added before rounding."""
    return _clamp_float(np.rint(np.float64(acc) * np.float64(multiplier) + np.float64(zero_point)),
                        lo, hi)


@njit(cache=True)
def _fixed_point_mode(acc, q_multiplier, shift, zero_point, lo, hi):
    """TFLite double rounding; ``(y, ok)`` with ``ok`` False where ``acc · 2**shift`` leaves
    int32 (the reference raises OverflowError there)."""
    e = np.int64(shift)
    left = e if e > 0 else np.int64(0)
    scaled = acc << left if left < 64 else np.int64(0)  # NumPy's << gives 0 from 64 bits on
    if scaled < _INT32_MIN or scaled > _INT32_MAX:
        return np.int64(0), False
    t = _saturating_rounding_doubling_high_mul(scaled, np.int64(q_multiplier))
    y = _rounding_divide_by_pot(t, -e if e < 0 else np.int64(0)) + zero_point
    return min(max(y, np.int64(lo)), np.int64(hi)), True


@njit(cache=True)
def _fixed_point_single_mode(acc, q_multiplier, shift, zero_point, lo, hi):
    """TFLite single rounding: ``floor((acc · Q + 2**(30 - e)) / 2**(31 - e)) + z_y``."""
    total = 31 - np.int64(shift)
    y = ((acc * np.int64(q_multiplier) + (np.int64(1) << (total - 1))) >> total) + zero_point
    return min(max(y, np.int64(lo)), np.int64(hi))


@njit(cache=True)
def _requantize_one(acc, mode, multiplier, q_multiplier, shift, zero_point, lo, hi):
    """One output of ``requantize`` for an int32 accumulator held in an int64: ``(y, ok)``."""
    if mode == 0:
        return _float32_mode(acc, multiplier, zero_point, lo, hi), True
    if mode == 1:
        return _float64_mode(acc, multiplier, zero_point, lo, hi), True
    if mode == 2:
        return _fixed_point_mode(acc, q_multiplier, shift, zero_point, lo, hi)
    return _fixed_point_single_mode(acc, q_multiplier, shift, zero_point, lo, hi), True


@njit(cache=True)
def _record(status, t, status_code, flat, acc):
    """Keep, per chunk, the first (in C order) output index of each kind of overflow."""
    if status_code == 1:
        if status[t, 0] < 0 or flat < status[t, 0]:
            status[t, 0] = flat
            status[t, 1] = acc
    elif status_code == 2:
        if status[t, 2] < 0 or flat < status[t, 2]:
            status[t, 2] = flat


@njit(cache=True)
def _check_int32(acc, count, flat0, status, t):
    """Record every accumulator outside int32 (``acc[e]`` is output ``flat0 + e`` in C
    order) and zero it so that requantizing it stays harmless; the wrapper then raises."""
    outside = 0
    for e in range(count):
        outside += (acc[e] < _INT32_MIN) | (acc[e] > _INT32_MAX)
    if outside:
        for e in range(count):
            if acc[e] < _INT32_MIN or acc[e] > _INT32_MAX:
                _record(status, t, 1, flat0 + e, acc[e])
                acc[e] = 0


@njit(cache=True)
def _store_row(acc, ch0, rq, out, flat0, status, t):
    """``out[e] = requantize(acc[e])`` in channel ``ch0 + e`` (a matmul row), or the int32
    accumulator itself for the unfused kernels. One loop per mode with no early exit, so that
    LLVM vectorises the float modes."""
    mode, multiplier, q_multiplier, shift, zero_point, lo, hi = rq
    if mode == _NO_REQUANT:
        for e in range(out.shape[0]):
            out[e] = acc[e]
    elif mode == 0:
        for e in range(out.shape[0]):
            c = ch0 + e
            out[e] = _float32_mode(acc[e], multiplier[c], zero_point[c], lo[c], hi[c])
    elif mode == 1:
        for e in range(out.shape[0]):
            c = ch0 + e
            out[e] = _float64_mode(acc[e], multiplier[c], zero_point[c], lo[c], hi[c])
    else:
        for e in range(out.shape[0]):
            c = ch0 + e
            y, ok = _requantize_one(acc[e], mode, multiplier[c], q_multiplier[c], shift[c],
                                    zero_point[c], lo[c], hi[c])
            if ok:
                out[e] = y
            else:
                _record(status, t, 2, flat0 + e, acc[e])


@njit(cache=True)
def _float32_row(acc, multiplier, zero_point, lo, hi, out):
    """``out[e] = _float32_mode(acc[e], ...)`` for accumulators already checked to fit
    int32, in conversions AVX2 vectorises: ``float32(int32(acc))`` is ``float32(acc)`` (the same
    integer, rounded once), and the clamped result, an integer inside ``[lo, hi]``, converts
    through int32 as exactly as through int64."""
    z, low, high = np.float64(zero_point), np.float64(lo), np.float64(hi)
    for e in range(out.shape[0]):
        product = np.float32(np.int32(acc[e])) * multiplier
        y = np.float64(np.rint(product)) + z
        y = min(max(y, low), high)
        out[e] = np.int32(y)


@njit(cache=True)
def _store_channel(acc, c, rq, out, flat0, status, t):
    """``out[e] = requantize(acc[e])``, all in channel ``c`` (a conv output row)."""
    mode, multiplier, q_multiplier, shift, zero_point, lo, hi = rq
    if mode == _NO_REQUANT:
        for e in range(out.shape[0]):
            out[e] = acc[e]
    elif mode == 0:
        m, z, low, high = multiplier[c], zero_point[c], lo[c], hi[c]
        for e in range(out.shape[0]):
            out[e] = _float32_mode(acc[e], m, z, low, high)
    elif mode == 1:
        m, z, low, high = multiplier[c], zero_point[c], lo[c], hi[c]
        for e in range(out.shape[0]):
            out[e] = _float64_mode(acc[e], m, z, low, high)
    else:
        for e in range(out.shape[0]):
            y, ok = _requantize_one(acc[e], mode, multiplier[c], q_multiplier[c], shift[c],
                                    zero_point[c], lo[c], hi[c])
            if ok:
                out[e] = y
            else:
                _record(status, t, 2, flat0 + e, acc[e])


# ---------------------------------------------------------------------------------------
# Tile microkernels: block[r0 + i, c0 + j] (or [c0 + j, r0 + i]) = Σ_{k < K} a[rows[i], k] · w[cols[j], k]
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _dot_int32(x, y, x_flip, y_flip, k):
    """``Σ (x ^ x_flip)·(y ^ y_flip)`` accumulated in int32 (wrapping; exact under the bound).

    One reduction per loop, both operands int8 (or both uint8) widened to int32 and the sum
    cast back to int32: the form LLVM turns into ``vpmaddwd``. (With one uint8 and one int8
    operand, or with several sums in one loop, it falls back to 32-bit multiplies.)
    """
    s = np.int32(0)
    for i in range(k):
        s = np.int32(s + np.int32(x[i] ^ x_flip) * np.int32(y[i] ^ y_flip))
    return s


@njit(cache=True)
def _dot_int64(x, y, x_flip, y_flip, k):
    s = np.int64(0)
    for i in range(k):
        s += np.int64(x[i] ^ x_flip) * np.int64(y[i] ^ y_flip)
    return s


@njit(cache=True)
def _put(block, r, c, transposed, value):
    if transposed:
        block[c, r] = value
    else:
        block[r, c] = value


@njit(cache=True)
def _tile_int32(a, rows, w, cols, k, a_flip, w_flip, block, r0, c0, transposed):
    for i in range(TILE_ROWS):
        for j in range(TILE_COLS):
            _put(block, r0 + i, c0 + j, transposed, _dot_int32(a[rows[i]], w[cols[j]], a_flip, w_flip, k))


@njit(cache=True)
def _tile_int64(a, rows, w, cols, k, a_flip, w_flip, block, r0, c0, transposed):
    for i in range(TILE_ROWS):
        for j in range(TILE_COLS):
            _put(block, r0 + i, c0 + j, transposed, _dot_int64(a[rows[i]], w[cols[j]], a_flip, w_flip, k))


@njit(cache=True)
def _tile_vnni(a, rows, w, cols, k, a_flip, w_flip, block, r0, c0, transposed):
    """``vpdpbusd`` over the first ``32·⌊k/32⌋`` bytes, a scalar loop over the rest."""
    body = k // CHUNK
    if transposed:
        dot_tile(a, rows, w, cols, body, a_flip, w_flip, block, r0, c0, True)
    else:
        dot_tile(a, rows, w, cols, body, a_flip, w_flip, block, r0, c0, False)
    for kk in range(body * CHUNK, k):
        for i in range(TILE_ROWS):
            av = np.int64(np.uint8(a[rows[i], kk] ^ a_flip))
            for j in range(TILE_COLS):
                product = av * np.int64(np.int8(w[cols[j], kk] ^ w_flip))
                if transposed:
                    block[c0 + j, r0 + i] += product
                else:
                    block[r0 + i, c0 + j] += product


@njit(cache=True)
def _four(start, stop):
    """Four row indices from ``start``; past ``stop`` the last valid one is repeated."""
    last = stop - 1
    return (start, min(start + 1, last), min(start + 2, last), min(start + 3, last))


@njit(cache=True)
def _chunk_bounds(total, chunks, t):
    return t * total // chunks, (t + 1) * total // chunks


@njit(cache=True)
def _column_constants(w, w_flip, k, bias, z_a, z_w, out):
    """``out[n] = bias[n] - z_a · Σ_k (w[n, k] ^ w_flip) + K · z_a · z_w[n]`` in int64 (the
    ``c[n]`` of the module doc, for the operands as the kernel sees them)."""
    for n in range(w.shape[0]):
        s = np.int64(0)
        for kk in range(w.shape[1]):
            s += np.int64(w[n, kk] ^ w_flip)
        out[n] = bias[n] - z_a * s + k * z_a * z_w[n]


# ---------------------------------------------------------------------------------------
# Matmul kernel (one per tile path; the path is a compile-time constant of the closure)
# ---------------------------------------------------------------------------------------


def _make_matmul_kernel(path):
    # compile-time constants of the closure: Numba prunes the branches not taken, so the
    # portable kernels never contain the VNNI intrinsic
    vnni, wide = path == "vnni", path == "int64"

    @njit(parallel=True, cache=True)
    def kernel(a, w, a_flip, w_flip, z_w, col_const, need_row_sums, split_rows, rq, out,
               blocks, status):
        m_total, k = a.shape
        n_total = w.shape[0]
        chunks = status.shape[0]
        for t in prange(chunks):
            if split_rows:
                m0, m1 = _chunk_bounds(m_total, chunks, t)
                n0, n1 = 0, n_total
            else:
                m0, m1 = 0, m_total
                n0, n1 = _chunk_bounds(n_total, chunks, t)
            block = blocks[t]
            no_flips = a_flip == 0 and w_flip == 0
            for mb in range(m0, m1, TILE_ROWS):
                rows = _four(mb, m1)
                for nb in range(n0, n1, TILE_COLS):  # D for 4 rows × all columns of the chunk
                    cols = _four(nb, n1)
                    if no_flips:  # literal zeros: LLVM drops the XORs from the inner loop
                        if vnni:
                            _tile_vnni(a, rows, w, cols, k, 0, 0, block, 0, nb - n0, False)
                        elif wide:
                            _tile_int64(a, rows, w, cols, k, 0, 0, block, 0, nb - n0, False)
                        else:
                            _tile_int32(a, rows, w, cols, k, 0, 0, block, 0, nb - n0, False)
                    elif vnni:
                        _tile_vnni(a, rows, w, cols, k, a_flip, w_flip, block, 0, nb - n0, False)
                    elif wide:
                        _tile_int64(a, rows, w, cols, k, a_flip, w_flip, block, 0, nb - n0, False)
                    else:
                        _tile_int32(a, rows, w, cols, k, a_flip, w_flip, block, 0, nb - n0, False)
                for i in range(min(TILE_ROWS, m1 - mb)):
                    m = mb + i
                    s = np.int64(0)
                    if need_row_sums:
                        for kk in range(k):
                            s += np.int64(a[m, kk] ^ a_flip)
                    acc = block[i]
                    for n in range(n0, n1):  # the exact accumulators, in int64
                        acc[n - n0] += col_const[n] - z_w[n] * s
                    _check_int32(acc, n1 - n0, m * n_total + n0, status, t)
                    _store_row(acc, n0, rq, out[m, n0:n1], m * n_total + n0, status, t)

    return kernel


_MATMUL_KERNELS = {path: _make_matmul_kernel(path) for path in TILE_PATHS}


# ---------------------------------------------------------------------------------------
# Conv kernel
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _pack_weights(w, flip, packed):
    """``packed[o, (i·kw + j)·C_g + c] = w[o, c, i, j] ^ flip`` (OIHW → [C_out, K], K ordered
    kernel row, kernel column, channel, like the patch rows); columns past K are left as is."""
    c_out, cin_g, kh, kw = w.shape
    for o in range(c_out):
        for i in range(kh):
            for j in range(kw):
                for c in range(cin_g):
                    packed[o, (i * kw + j) * cin_g + c] = w[o, c, i, j] ^ flip


@njit(cache=True)
def _load_input_row(x, b, iy, flip, ring_row, left):
    """``ring_row[left + ix, c] = x[b, c, iy, ix] ^ flip``: one input row, channels last."""
    c_in, width = x.shape[1], x.shape[3]
    for c in range(c_in):
        for ix in range(width):
            ring_row[left + ix, c] = x[b, c, iy, ix] ^ flip


def _make_conv_kernel(path):
    vnni, wide = path == "vnni", path == "int64"

    @njit(parallel=True, cache=True)
    def kernel(x, w, geometry, x_flip, pad_value, z_w, col_const, need_row_sums, rq, out,
               rings, ring_keys, patches, row_sums, blocks, status):
        sh, sw, dh, dw, top, left, kh, kw, group = geometry
        n_img, c_in, height = x.shape[0], x.shape[1], x.shape[2]
        c_out, oh, ow = out.shape[1], out.shape[2], out.shape[3]
        cin_g, cout_g = c_in // group, c_out // group
        k = kh * kw * cin_g
        k_padded = patches.shape[2]
        slots = rings.shape[1]
        chunks = status.shape[0]
        for t in prange(chunks):
            ring, keys, patch, rsum = rings[t], ring_keys[t], patches[t], row_sums[t]
            block = blocks[t]
            q0, q1 = _chunk_bounds(n_img * oh, chunks, t)
            for q in range(q0, q1):
                b, oy = q // oh, q % oh
                for i in range(kh):  # the kh input rows of this output row, into the ring
                    iy = oy * sh + i * dh - top
                    if 0 <= iy < height and keys[iy % slots] != b * height + iy:
                        _load_input_row(x, b, iy, x_flip, ring[iy % slots], left)
                        keys[iy % slots] = b * height + iy
                for g in range(group):
                    for ox in range(ow):  # patch[ox, (i·kw + j)·C_g + c]
                        for i in range(kh):
                            iy = oy * sh + i * dh - top
                            for j in range(kw):
                                base = (i * kw + j) * cin_g
                                if 0 <= iy < height:
                                    src = ring[iy % slots, ox * sw + j * dw]
                                    for c in range(cin_g):
                                        patch[ox, base + c] = src[g * cin_g + c]
                                else:
                                    for c in range(cin_g):
                                        patch[ox, base + c] = pad_value
                        if need_row_sums:
                            s = np.int64(0)
                            for kk in range(k):
                                s += np.int64(patch[ox, kk])
                            rsum[ox] = s
                    n_first, n_stop = g * cout_g, (g + 1) * cout_g
                    for xb in range(0, ow, TILE_ROWS):
                        rows = _four(xb, ow)
                        for nb in range(n_first, n_stop, TILE_COLS):
                            cols = _four(nb, n_stop)
                            if vnni:  # block[n - n_first, ox]: channel rows, pixels along
                                _tile_vnni(patch, rows, w, cols, k_padded, 0, 0, block, xb, nb - n_first, True)
                            elif wide:
                                _tile_int64(patch, rows, w, cols, k, 0, 0, block, xb, nb - n_first, True)
                            else:
                                _tile_int32(patch, rows, w, cols, k_padded, 0, 0, block, xb, nb - n_first, True)
                    for n in range(n_first, n_stop):  # one output row of channel n
                        acc = block[n - n_first]
                        for ox in range(ow):
                            acc[ox] += col_const[n] - z_w[n] * rsum[ox]
                        flat0 = ((b * c_out + n) * oh + oy) * ow
                        _check_int32(acc, ow, flat0, status, t)
                        _store_channel(acc, n, rq, out[b, n, oy], flat0, status, t)

    return kernel


_CONV_KERNELS = {path: _make_conv_kernel(path) for path in TILE_PATHS}


# ---------------------------------------------------------------------------------------
# Depthwise conv kernel (one input channel per group: C_in/group = 1)
# ---------------------------------------------------------------------------------------

USE_DEPTHWISE = True  # set to False to run depthwise convolutions on the generic tile kernels
_DEPTHWISE_MAX_K = (2**31 - 1) // (255 * 255)  # K·255·255 < 2**31: the int32 row sums are exact
_DEPTHWISE_BLOCK = 4096  # int32 sums of the output rows one pass sweeps (16 KiB: in L1)
_VECTOR_SLACK = 16  # the tap loops' length is rounded up to a multiple of this (no scalar remainder)
USE_CHANNELS_LAST = True  # small planes channels last (_channels_last; tests toggle it)
# 255 · Σ_taps |w_c| ≤ 255 · 258 · 255 < 2**24: with at most this many taps every partial sum of
# a depthwise output is an integer a float32 holds (the channels-last kernel sums in float32)
_FLOAT_SUM_TAPS = 258
_CHANNELS_LAST_PIXELS = 112 * 112  # input pixels per plane at most (measured: spec/numerics.md)
_CHANNELS_LAST_BAND = 256  # output pixels whose sums one pass of a block holds (32 KiB of float32)


def _uses_depthwise(w_shape, x_dtype, w_dtype, group) -> bool:
    """The depthwise kernel runs a conv whose groups have one input channel each (``group =
    C_in > 1``, any channel multiplier C_out/group), for 8-bit operands and ``K = kh·kw`` small
    enough that ``Σ (x - z_x)(w - z_w)`` — each factor within ±255 — is exact in int32.

    A one-channel input with ``group = 1`` (a stem on grey images) is not taken: its planes are
    one per image, and the kernel's per-row cost dominates there (digits-cnn's 599×1×8×8 stem:
    16.7 ms against 2.4 ms on the tile kernel, one thread)."""
    return (USE_DEPTHWISE and int(group or 1) > 1 and len(w_shape) == 4 and w_shape[1] == 1
            and np.dtype(x_dtype).itemsize == 1 and np.dtype(w_dtype).itemsize == 1
            and w_shape[2] * w_shape[3] <= _DEPTHWISE_MAX_K)


def _depthwise_plan(g, threads):
    """Chunking and scratch arrays ``{name: (shape, itemsize)}`` of one depthwise conv call."""
    chunks = max(1, min(threads, g.n * g.c_out))
    sh, sw = g.strides
    hq = -(-(g.h + g.pads[0] + g.pads[2]) // sh)  # the padded plane's rows per phase, rounded up
    wq = -(-(g.w + g.pads[1] + g.pads[3]) // sw)
    arrays = {
        "centred_weights": ((g.c_out, g.kh * g.kw), 4),
        "bias": ((g.c_out,), 8),
        "requant_vectors": ((6, g.c_out), 4),
        # one zero-padded input channel, centred (x - z_x), split into its stride phases, per thread;
        # rows past the plane's (zero) let the tap loops run to a whole number of vectors
        "planes": ((chunks, sh * sw, hq + -(-_VECTOR_SLACK // wq), wq), 4),
        "row_sums": ((chunks, g.oh * wq + _VECTOR_SLACK), 4),
        "accumulators": ((chunks, g.ow), 8),
        "status": ((chunks, 3), 8),
        # the channels-last kernel's padded, centred float32 planes, a block of channels each
        # (one per thread: _channels_last_parts gives every thread at least one task)
        "channels_last": ((max(1, threads), g.h + g.pads[0] + g.pads[2] + _channels_last_slack(g),
                           g.w + g.pads[1] + g.pads[3], CHANNELS)
                          if _channels_last(g) else (0, 0, 0, 0), 4),
    }
    return chunks, arrays


def _channels_last(g) -> bool:
    """Whether a depthwise conv may run channels last (:func:`_depthwise_channels_last`; it does
    when its sums are also proven inside int32 in the float32 mode): one output channel per
    input channel, at most :data:`_FLOAT_SUM_TAPS` taps, input planes of at most
    :data:`_CHANNELS_LAST_PIXELS` pixels (the largest measured: its float32 plane per thread is
    32 channels of the padded input)."""
    return (USE_CHANNELS_LAST and g.c_out == g.c_in == g.group and g.kh * g.kw <= _FLOAT_SUM_TAPS
            and g.h * g.w <= _CHANNELS_LAST_PIXELS)

def _centred_depthwise_weights(w, zw):
    """``w[o, 0, i, j] - z_w[o]`` as int32 ``[C_out, kh·kw]``."""
    c_out = w.shape[0]
    zw = np.broadcast_to(np.asarray(zw, np.int64), (c_out,))
    return np.ascontiguousarray(w.reshape(c_out, -1).astype(np.int32) - zw.astype(np.int32)[:, None])


@njit(cache=True)
def _one_pass_channels(wc, bias, rq):
    """Per output channel, whether the float32 mode may run in one pass from int32 sums: the
    mode is float32 and ``|acc| ≤ 255 · Σ_taps |w_c[o]| + |bias[o]| ≤ 2**31 - 1`` (every 8-bit
    input has ``|x - z_x| ≤ 255``)."""
    one_pass = np.zeros(wc.shape[0], np.bool_)
    for o in range(wc.shape[0]):
        bound = np.abs(bias[o])
        for tap in range(wc.shape[1]):
            bound += 255 * np.abs(np.int64(wc[o, tap]))
        one_pass[o] = rq[0] == 0 and bound <= _INT32_MAX
    return one_pass


@njit(cache=True)
def _depthwise_kernel(x, wc, wb, geometry, zx, bias, rq, one_pass, out, planes, row_sums, accs, status, blocks):
    """A depthwise conv: channels last (:func:`_depthwise_channels_last`, on the block weights
    ``wb`` of :func:`_channels_last_weights`) where the plan gave it ``blocks``
    (:func:`_channels_last`) and every channel runs in one pass (``one_pass``: the caller's
    :func:`_one_pass_channels` of these weights, bias and requantizer), else
    :func:`_depthwise_planes` on the centred weights ``wc``."""
    if blocks.size > 0 and one_pass.all():
        _depthwise_channels_last(x, wb, geometry, zx, bias, rq, out, blocks)
    else:
        _depthwise_planes(x, wc, geometry, zx, bias, rq, out, planes, row_sums, accs, status, one_pass)


@njit(cache=True)
def _row_kind(kw, sw, dw):
    """Which :mod:`channel_vectors` intrinsic forms a channels-last conv's sums: ``row_sums_k3s1``
    (1), ``_k5s1`` (2), ``_k3s2`` (3), ``_k5s2`` (4) — :data:`channel_vectors.ROW` pixels of a
    row, each input pixel loaded once for every tap reading it — or 0, :func:`channel_vectors.tap_sums`
    (two pixels, any kernel, stride and dilation)."""
    if dw != 1 or sw > 2 or kw not in (3, 5):
        return 0
    return (1 if kw == 3 else 2) + 2 * (sw - 1)


@njit(cache=True)
def _channels_last_parts(n_blocks, threads):
    """Parts (ranges of output bands) each block of the channels-last kernel is cut into, so
    that ``threads`` threads get about equal work: 1 from four blocks a thread on, else enough
    parts for four a thread (32 channels on two threads: two halves of the plane)."""
    return max(1, -(-4 * threads // n_blocks)) if n_blocks < 4 * threads else 1


def _channels_last_slack(g) -> int:
    """Zero rows past a channels-last block's plane: the last call of a row reads up to
    ``(ROW - 1)·s_w + kw - 1`` pixels past its first, past the plane's end on the last row."""
    wp = g.w + g.pads[1] + g.pads[3]
    return -(-((ROW - 1) * g.strides[1] + g.kw) // wp) + 1


def _channels_last_weights(wc) -> np.ndarray:
    """The centred depthwise weights ``wc`` (int32 ``[C, taps]``) as the channels-last kernel
    reads them: float32 ``[blocks, taps·CHANNELS]``, block ``k``'s tap ``t`` of channel
    ``k·CHANNELS + e`` at ``[k, t·CHANNELS + e]`` (channels past ``C`` are 0). Exact: every
    centred weight is at most 255 in magnitude."""
    c, taps = wc.shape
    n_blocks = -(-c // CHANNELS)
    w = np.zeros((n_blocks * CHANNELS, taps), np.float32)
    w[:c] = wc
    return np.ascontiguousarray(w.reshape(n_blocks, CHANNELS, taps).transpose(0, 2, 1).reshape(n_blocks, -1))


@njit(parallel=True, cache=True)
def _depthwise_channels_last(x, wb, geometry, zx, bias, rq, out, blocks):
    """:func:`_depthwise_planes`'s outputs with the channels innermost (one output channel
    per input channel, sums proven inside int32, the float32 mode).

    The channels are cut into blocks of :data:`channel_vectors.CHANNELS` (a partial block's
    missing channels are zero), the blocks into one contiguous range per thread (``prange``
    over ``blocks.shape[0]`` chunks, each with its own plane). Per image and block
    (:func:`_channels_last_block`), the input is centred into the chunk's plane (float32
    ``[H_p, W_p, CHANNELS]``; the padding pixels are 0 = real zero) by
    :func:`channel_vectors.pixels_in`, and the row sums (or :func:`channel_vectors.tap_sums`)
    form the output pixels' sums ``S[c] = Σ_tap P[oy·s_h + i·d_h, ox·s_w + j·d_w, c] · w_c[c,
    tap]`` in registers, in float32 — every product ``|x_c · w_c| ≤ 255²`` and every partial sum ``≤ 255 ·
    Σ_taps |w_c| < 2**24`` (at most :data:`_FLOAT_SUM_TAPS` taps) is an exact integer, so the
    float32 sums are the integer sums, in any order — a band of output rows at a time
    (:data:`_CHANNELS_LAST_BAND` pixels, so the band's sums stay in L1), each sum requantized
    from ``int32(S)`` by :func:`channel_vectors.requantized_out` — :func:`_float32_clamped`
    instruction for instruction, eight lanes wide, so the same integers and outputs as the
    plane kernel's :func:`_float32_unchecked_one` — and moved out to NCHW by the same call."""
    sh, sw, dh, dw, top, left, kh, kw, group = geometry
    c, height, width = x.shape[1], x.shape[2], x.shape[3]
    n_blocks, chunks, wp = wb.shape[0], blocks.shape[0], blocks.shape[2]
    taps, oh, ow = kh * kw, out.shape[2], out.shape[3]
    offs = np.empty(taps, np.int64)  # each tap's pixel offset in a padded plane
    for i in range(kh):
        for j in range(kw):
            offs[i * kw + j] = i * dh * wp + j * dw
    at = np.empty(height * width, np.int64)  # where input pixel iy·W + ix lands in a block's plane
    for iy in range(height):
        for ix in range(width):
            at[iy * width + ix] = ((top + iy) * wp + left + ix) * CHANNELS
    # the requantizer per block, a value per lane: bias and z_y (int32; the bias fits, as every
    # sum does), multiplier and the float32 clamp bounds lo - z_y, hi - z_y; missing channels 0
    ints = np.zeros((n_blocks, 2, CHANNELS), np.int32)
    floats = np.zeros((n_blocks, 3, CHANNELS), np.float32)
    for o in range(c):
        k, e = o // CHANNELS, o % CHANNELS
        ints[k, 0, e], ints[k, 1, e] = bias[o], rq[4][o]
        floats[k, 0, e] = rq[1][o]
        floats[k, 1, e], floats[k, 2, e] = np.float32(rq[5][o] - rq[4][o]), np.float32(rq[6][o] - rq[4][o])
    row_kind = _row_kind(kw, sw, dw)
    band = max(1, min(oh, _CHANNELS_LAST_BAND // ow)) * ow
    # each chunk's sums, allocated once; spare pixels for the last call of a row
    sums = np.empty((chunks, band + ROW, CHANNELS), np.float32)
    parts = _channels_last_parts(n_blocks, chunks)
    for t in prange(chunks):
        _zero_padding(blocks[t], top, left, height, width)  # once: the moves in write only `at` places
        a0, a1 = _chunk_bounds(n_blocks * parts, chunks, t)
        for a in range(a0, a1):
            k = a // parts
            _channels_last_block(x, k, sh, sw, dh, kh, row_kind, top, zx, out, blocks[t], wb[k], offs, at,
                                 ints[k], floats[k], sums[t], band, a % parts, parts)


@njit(cache=True)
def _zero_padding(block, top, left, height, width):
    """Zero every place of a channels-last plane (``[H_p, W_p, CHANNELS]``) no input pixel lands
    on: the rows above and below the input (the slack rows too) and the columns left and right."""
    wp = block.shape[1]
    plane = block.reshape(block.size)
    for r in range(block.shape[0]):
        row = plane[r * wp * CHANNELS:(r + 1) * wp * CHANNELS]
        if top <= r < top + height:  # the left and right padding of an input row
            for f in range(left * CHANNELS):
                row[f] = 0.0
            right = row[(left + width) * CHANNELS:]
            for f in range(right.shape[0]):
                right[f] = 0.0
        else:
            for f in range(row.shape[0]):
                row[f] = 0.0


@njit(cache=True)
def _channels_last_block(x, k, sh, sw, dh, kh, row_kind, top, zx, out, block, weights, offs, at, ints, floats,
                         sums, band, part, parts):
    """Part ``part`` of ``parts`` of block ``k`` of :func:`_depthwise_channels_last`, every
    image: the part's bands of output rows (:func:`_chunk_bounds` of the bands), on a plane
    whose padding is zero (:func:`_zero_padding`); per image the input rows those bands read
    moved in, and per band the
    tap sums (:func:`_row_kind`: eight pixels of a row a call, or two), then their
    requantization and move out, eight pixels a call (:func:`channel_vectors.requantized_out`).
    Rows of the plane the part does not read are left as they are (the last call of a row
    reads past it only for sums that are never stored). Pixels that do not fill a call of
    ``requantized_out`` go through a scalar loop (:func:`_float32_clamped`); a run of input
    pixels that is not a whole number of calls ends with a call that overlaps the one before."""
    n_img, c, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    hw, pixels = height * width, oh * ow
    wp = block.shape[1]
    c0 = k * CHANNELS
    nc = min(CHANNELS, c - c0)
    band_rows = band // ow
    q0, q1 = _chunk_bounds(-(-oh // band_rows), parts, part)
    first, last = q0 * band_rows, min(oh, q1 * band_rows)  # the part's output rows
    if first >= last:
        return
    # the input rows they read: padded rows first·s_h .. (last - 1)·s_h + (kh - 1)·d_h
    p_lo = max(0, first * sh - top) * width
    p_hi = max(0, min(height, (last - 1) * sh + (kh - 1) * dh - top + 1)) * width
    plane = block.reshape(block.size)
    flat_sums = sums.reshape(sums.size)
    zf = np.float32(zx)
    bias_k, zero_k, mult_k, low_k, high_k = ints[0], ints[1], floats[0], floats[1], floats[2]
    for b in range(n_img):
        src = x[b].reshape(c * hw)[c0 * hw:]
        if p_hi - p_lo >= PIXELS:
            for p0 in range(p_lo, p_hi - PIXELS + 1, PIXELS):
                pixels_in(src, hw, p0, zf, nc, at, plane)
            if (p_hi - p_lo) % PIXELS:
                pixels_in(src, hw, p_hi - PIXELS, zf, nc, at, plane)
        else:
            for p in range(p_lo, p_hi):
                px = plane[at[p]:at[p] + CHANNELS]
                for e in range(CHANNELS):
                    px[e] = np.float32(src[e * hw + p]) - zf if e < nc else 0.0
        dst = out[b].reshape(c * pixels)[c0 * pixels:]
        for r0 in range(first, last, band_rows):
            r1 = min(last, r0 + band_rows)
            f0, n = r0 * ow, (r1 - r0) * ow
            for oy in range(r0, r1):
                if row_kind > 0:  # ROW pixels a call (the last call's extra sums are overwritten or never read)
                    for ox in range(0, ow, ROW):
                        row_sums = flat_sums[((oy - r0) * ow + ox) * CHANNELS:]
                        pixel = oy * sh * wp + ox * sw
                        if row_kind == 1:
                            row_sums_k3s1(plane, weights, kh, dh * wp, pixel, row_sums)
                        elif row_kind == 2:
                            row_sums_k5s1(plane, weights, kh, dh * wp, pixel, row_sums)
                        elif row_kind == 3:
                            row_sums_k3s2(plane, weights, kh, dh * wp, pixel, row_sums)
                        else:
                            row_sums_k5s2(plane, weights, kh, dh * wp, pixel, row_sums)
                    continue
                for ox in range(0, ow, 2):
                    step = sw if ox + 1 < ow else 0  # the row's last pixel alone: its pair repeats it
                    tap_sums(plane, weights, offs, oy * sh * wp + ox * sw, step,
                             flat_sums[((oy - r0) * ow + ox) * CHANNELS:])
            whole_f = n // PIXELS * PIXELS
            band_dst = dst[f0:]
            for g in range(0, whole_f, PIXELS):
                requantized_out(flat_sums, g, band_dst, pixels, nc, ints, floats)
            for f in range(whole_f, n):
                for e in range(nc):
                    band_dst[e * pixels + f] = _float32_clamped(np.int32(sums[f, e]), bias_k[e], mult_k[e], zero_k[e],
                                                                low_k[e], high_k[e])


@njit(parallel=True, cache=True)
def _depthwise_planes(x, wc, geometry, zx, bias, rq, out, planes, row_sums, accs, status, one_pass):
    """``acc[b, o, oy, ox] = Σ_{i,j} (x[b, c, iy, ix] - z_x)(w[o, 0, i, j] - z_w[o]) + bias[o]``
    with ``c = o // (C_out / C_in)``, then requantized (or stored) one output row at a time.

    Each thread takes a range of (image, output channel) pairs. Per pair the input channel is
    copied once, centred, into its zero-padded plane (padding is real zero) split by stride
    phase: ``P[(r mod s_h)·s_w + (q mod s_w), r div s_h, q div s_w] = padded[r, q]``, each
    phase ``H_q × W_q``. Output ``(oy, ox)`` reads ``padded[oy·s_h + i·d_h, ox·s_w + j·d_w]``,
    which is phase ``((i·d_h) mod s_h, (j·d_w) mod s_w)`` at ``(oy + (i·d_h) div s_h,
    ox + (j·d_w) div s_w)``: with ``f = oy·W_q + ox`` every tap is one unit-stride loop over
    the plane, ``S[f] += P_tap[f + offset_tap] · w[i, j]`` (the columns ``ox ≥ OW`` of a row are
    summed from other positions and never read), four taps per pass over a block of output rows
    whose sums stay in L1 (``_DEPTHWISE_BLOCK``), each block requantized when its taps are
    done. The sums are int32 (exact: ``_uses_depthwise``; an integer sum does not depend on its
    order; float32 sums, exact for at most :data:`_FLOAT_SUM_TAPS` taps, measured slower: the
    conversions in and out cost more than the multiplies save), then moved to int64
    with the bias for the overflow check and the requantization — the same steps, per
    accumulator, as the generic kernel, so the same outputs and errors. In the float32 mode a
    channel whose sums are provably inside int32 (``255 · Σ_taps |w_c[o]| + |bias[o]| ≤ 2**31
    - 1``: every 8-bit input has ``|x - z_x| ≤ 255``) skips both and is requantized straight
    from its int32 row sums (:func:`_float32_unchecked_one`, the same integers).
    """
    sh, sw, dh, dw, top, left, kh, kw, group = geometry
    n_img, c_in, height, width = x.shape
    c_out, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    mult = c_out // c_in
    chunks = status.shape[0]
    hq, wq = planes.shape[2], planes.shape[3]  # hq: the plane's rows and the slack rows
    tap_at = np.empty(kh * kw, np.int64)  # where tap (i, j) starts in the flat phase planes
    for i in range(kh):
        for j in range(kw):
            ri, cj = i * dh, j * dw
            tap_at[i * kw + j] = ((ri % sh) * sw + cj % sw) * hq * wq + (ri // sh) * wq + cj // sw
    k_full = kh * kw // 4 * 4
    block_rows = max(1, _DEPTHWISE_BLOCK // wq)
    for t in prange(chunks):
        phases, rsum, acc = planes[t], row_sums[t], accs[t]
        flat = phases.reshape(phases.size)
        loaded = -1
        q0, q1 = _chunk_bounds(n_img * c_out, chunks, t)
        for q in range(q0, q1):
            b, o = q // c_out, q % c_out
            c = o // mult
            if loaded != b * c_in + c:
                for iy in range(height):
                    r = top + iy
                    split_row(x[b, c, iy], zx, flat, (r % sh) * sw * hq * wq + (r // sh) * wq, hq * wq, left, sw)
                loaded = b * c_in + c
            for r0 in range(0, oh, block_rows):
                r1 = min(oh, r0 + block_rows)
                f0 = r0 * wq
                # the block's rows (the last one only to OW), rounded up to whole vectors: the sums
                # past OW are formed from other positions (zero rows at the end) and never read
                span = (r1 - 1) * wq + ow - f0
                rs = rsum[f0:f0 + -(-span // _VECTOR_SLACK) * _VECTOR_SLACK]
                for f in range(rs.shape[0]):
                    rs[f] = 0
                for tap in range(0, k_full, 4):
                    w0, w1 = wc[o, tap], wc[o, tap + 1]
                    w2, w3 = wc[o, tap + 2], wc[o, tap + 3]
                    # views: indices from 0 let LLVM vectorise the loop
                    s0 = flat[tap_at[tap] + f0:]
                    s1 = flat[tap_at[tap + 1] + f0:]
                    s2 = flat[tap_at[tap + 2] + f0:]
                    s3 = flat[tap_at[tap + 3] + f0:]
                    for f in range(rs.shape[0]):
                        rs[f] += s0[f] * w0 + s1[f] * w1 + s2[f] * w2 + s3[f] * w3
                for tap in range(k_full, kh * kw):
                    wv = wc[o, tap]
                    s0 = flat[tap_at[tap] + f0:]
                    for f in range(rs.shape[0]):
                        rs[f] += s0[f] * wv
                if one_pass[o]:  # the float32 mode of sums proven inside int32: straight from the sums
                    m, z, low, high, bo = rq[1][o], rq[4][o], rq[5][o], rq[6][o], bias[o]
                    # 2-D views, indices from ranges: no view per row, and LLVM vectorises the rows
                    sums2 = rsum[r0 * wq:r1 * wq].reshape(r1 - r0, wq)
                    dst2 = out[b, o, r0:r1]
                    for oy in range(r1 - r0):
                        for ox in range(ow):
                            dst2[oy, ox] = _float32_unchecked_one(sums2[oy, ox], bo, m, z, low, high)
                    continue
                for oy in range(r0, r1):
                    base = oy * wq
                    for ox in range(ow):
                        acc[ox] = np.int64(rsum[base + ox]) + bias[o]
                    flat0 = ((b * c_out + o) * oh + oy) * ow
                    _check_int32(acc, ow, flat0, status, t)
                    if rq[0] == 0:  # float32 mode, in conversions AVX2 vectorises
                        _float32_row(acc, rq[1][o], rq[4][o], rq[5][o], rq[6][o], out[b, o, oy])
                    else:
                        _store_channel(acc, o, rq, out[b, o, oy], flat0, status, t)


def _depthwise_geometry(g):
    return (g.strides[0], g.strides[1], g.dilations[0], g.dilations[1], g.pads[0], g.pads[1],
            g.kh, g.kw, g.group)


def _depthwise_scratch(arrays):
    """The per-call scratch of the depthwise kernel (planes zeroed: their borders are the
    padding; the channels-last kernel zeroes its blocks' borders itself)."""
    return (np.zeros(arrays["planes"][0], np.int32), np.zeros(arrays["row_sums"][0], np.int32),
            np.zeros(arrays["accumulators"][0], np.int64), np.full(arrays["status"][0], -1, np.int64),
            np.empty(arrays["channels_last"][0], np.float32))


_NO_BLOCK_WEIGHTS = np.zeros((0, 0), np.float32)  # the block weights of a conv the plane kernel runs


# ---------------------------------------------------------------------------------------
# Planning: the tile path, operand views and zero-point shifts, and every scratch array
# ---------------------------------------------------------------------------------------


def _check_dtype(q: np.ndarray, what: str, name: str) -> None:
    if q.dtype.kind not in "iu" or q.dtype.itemsize > 2:
        raise TypeError(f"{name}: {what} must be an 8- or 16-bit integer tensor, got dtype {q.dtype}")


def _kernel_operand(q: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order (a copy only when ``q`` is neither)."""
    if not q.dtype.isnative:
        q = q.astype(q.dtype.newbyteorder("="))
    return np.ascontiguousarray(q)


class _Operands(NamedTuple):
    """What a kernel reads: the tile path, operand views, and the XOR masks that turn their
    bits into ``a + α`` and ``w + β`` (module doc, 1.)."""

    path: str
    a: np.ndarray
    w: np.ndarray
    a_flip: np.integer
    w_flip: np.integer
    alpha: int
    beta: int


def _signed(q):
    """``(view, flip, shift)`` presenting ``q`` as signed: unsigned bits XOR the top bit are
    the signed value ``q - 2**(bits-1)``; signed operands are read as they are."""
    if q.dtype.kind == "i":
        return q, q.dtype.type(0), 0
    signed = np.dtype(f"i{q.dtype.itemsize}")
    half = 2 ** (8 * q.dtype.itemsize - 1)
    return q.view(signed), signed.type(-half), -half


def _magnitude(q, shift, zero_points) -> int:
    """``max |q + shift|`` over the possible values (8-bit: the dtype's; 16-bit: the data's)
    and the zero points, which padding and the algebra also multiply."""
    if q.dtype.itemsize == 1:
        return 128
    m = int(np.abs(np.asarray(zero_points, np.int64) + shift).max(initial=0))
    if q.size:
        m = max(m, abs(int(q.min()) + shift), abs(int(q.max()) + shift))
    return m


def _uses_vnni(a_dtype, w_dtype, k) -> bool:
    wanted = _FORCE_PATH or ("vnni" if USE_VNNI else "int32")
    eight_bit = np.dtype(a_dtype).itemsize == np.dtype(w_dtype).itemsize == 1
    return wanted == "vnni" and HOST_HAS_VNNI and eight_bit and k * 255 * 128 < 2**31


def _operands(a, w, za, zw, k) -> _Operands:
    """Choose the fastest tile path whose dot product is provably exact (module doc, 2.).

    ``"vnni"`` sees (uint8, int8): int8 activations are flipped to ``a + 128``, uint8 weights
    to ``w - 128``. The portable paths see signed operands (LLVM vectorises int8 products only
    when both have the same signedness): every unsigned operand is flipped to ``q - 2**(bits-1)``;
    they take ``"int32"`` when ``K · max|a| · max|w| < 2**31`` for the flipped values, else
    ``"int64"``.
    """
    if _uses_vnni(a.dtype, w.dtype, k):
        alpha = 128 if a.dtype.kind == "i" else 0
        beta = -128 if w.dtype.kind == "u" else 0
        return _Operands("vnni", a.view(np.uint8), w.view(np.int8), np.uint8(alpha and 0x80),
                         np.int8(beta), alpha, beta)
    (a_view, a_flip, alpha), (w_view, w_flip, beta) = _signed(a), _signed(w)
    wanted = _FORCE_PATH or ("vnni" if USE_VNNI else "int32")
    exact32 = k * _magnitude(a, alpha, za) * _magnitude(w, beta, zw) < 2**31
    path = "int32" if wanted in ("vnni", "int32") and exact32 else "int64"
    return _Operands(path, a_view, w_view, a_flip, w_flip, alpha, beta)


def _threads(threads) -> int:
    return numba.get_num_threads() if threads is None else max(1, int(threads))


def _matmul_plan(m, n, k, threads):
    """Chunking and scratch arrays ``{name: (shape, itemsize)}`` of one matmul call."""
    split_rows = m >= TILE_ROWS * threads
    chunks = threads if split_rows else max(1, min(threads, n))
    arrays = {
        # int64 vectors over the N channels: bias, z_w, z_w + β, c[n], and a flag per channel
        "channel_vectors": ((5, n), 8),
        # the requantizer broadcast to N channels (multiplier, Q, shift, z_y, lo, hi)
        "requant_vectors": ((6, n), 4),
        # D for 4 rows of outputs, then their accumulators (+3 columns: tiles store squares)
        "blocks": ((chunks, TILE_ROWS, n + TILE_COLS - 1), 8),
        "status": ((chunks, 3), 8),
    }
    return split_rows, chunks, arrays


def _padded_k(k, path) -> int:
    """The conv's patch and packed-weight row length: K rounded up to 32 on the ``vnni`` and
    ``int32`` paths (the columns past K are zero in both, so they add nothing to ``D``). On the
    ``int32`` path this keeps the vectorised dot products free of a scalar remainder loop —
    for the 7×7×3 stem (K = 147) that remainder took most of the layer's time."""
    return -(-k // CHUNK) * CHUNK if path in ("vnni", "int32") else k


def _conv_plan(g, path, x_itemsize, w_itemsize, threads):
    """Chunking and scratch arrays ``{name: (shape, itemsize)}`` of one conv call."""
    k = g.k
    k_padded = _padded_k(k, path)
    chunks = max(1, min(threads, g.n * g.oh))
    slots = (g.kh - 1) * g.dilations[0] + 1  # rows a window spans: distinct modulo `slots`
    arrays = {
        "channel_vectors": ((5, g.c_out), 8),
        "requant_vectors": ((6, g.c_out), 4),
        "packed_weights": ((g.c_out, k_padded), w_itemsize),
        "rings": ((chunks, slots, g.w + g.pads[1] + g.pads[3], g.c_in), x_itemsize),
        "ring_keys": ((chunks, slots), 8),
        "patches": ((chunks, g.ow, k_padded), x_itemsize),
        "row_sums": ((chunks, g.ow), 8),
        # D for one output row of one group, [channel, pixel] (+3: tiles store squares)
        "blocks": ((chunks, g.c_out // g.group + TILE_COLS - 1, g.ow + TILE_ROWS - 1), 8),
        "status": ((chunks, 3), 8),
    }
    return chunks, arrays


def _nbytes(arrays) -> int:
    return sum(int(np.prod(shape)) * itemsize for shape, itemsize in arrays.values())


def requant_scratch_bytes(kind: str, a_shape, w_shape, *, a_dtype=np.int8, w_dtype=np.int8,
                          threads=None, strides=None, pads=None, dilations=None, group=1,
                          auto_pad="NOTSET") -> int:
    """Bytes of scratch one fused call allocates besides its output (an upper bound).

    ``kind`` is ``"matmul"`` (``a_shape = [M, K]``, ``w_shape = [N, K]``) or ``"conv2d"``
    (NCHW and OIHW shapes plus the conv attributes). ``threads`` defaults to Numba's current
    thread count ``T``. With 8-bit operands:

    * matmul: ``64·N + T·(32·N + 120)`` — O(N) channel vectors, and per thread the int64
      accumulators of four rows of outputs and an overflow record. No O(M·N) buffer.
    * conv2d: ``64·C_out + C_out·K' + T·(S·(W + pad_l + pad_r)·C_in + OW·K' + 8·OW
      + 8·(C_out/group + 3)·(OW + 3) + 8·S + 24)`` with ``K = C_in/group·kh·kw``, ``K'`` = K
      rounded up to 32 on the VNNI and int32 paths, and ``S = (kh - 1)·dilation_h + 1`` input rows in
      each thread's ring: the packed weights, and per thread the ring, the patch of one output
      row, its row sums and its int64 accumulators for one group. For 1×64×56×56 → 64, 3×3,
      pad 1, two threads: 191 984 bytes (187.5 KiB; the output is 196 KiB in int8, 784 KiB
      in int32).

    The unfused ``*_int32`` kernels allocate the same plus their int32 output.
    """
    threads = _threads(threads)
    a_dtype, w_dtype = np.dtype(a_dtype), np.dtype(w_dtype)
    if kind == "matmul":
        (m, k), (n, _) = a_shape, w_shape
        return _nbytes(_matmul_plan(int(m), int(n), int(k), threads)[2])
    if kind == "conv2d":
        g = conv_geometry(a_shape, w_shape, strides=strides, pads=pads, dilations=dilations,
                          group=group, auto_pad=auto_pad, name="requant_scratch_bytes")
        if _uses_depthwise(tuple(w_shape), a_dtype, w_dtype, g.group):
            return _nbytes(_depthwise_plan(g, threads)[1])
        path = "vnni" if _uses_vnni(a_dtype, w_dtype, g.k) else "int32"
        return _nbytes(_conv_plan(g, path, a_dtype.itemsize, w_dtype.itemsize, threads)[1])
    raise ValueError(f"requant_scratch_bytes: kind must be 'matmul' or 'conv2d', got {kind!r}")


def _requant_args(rq, n_out):
    """``(mode, multiplier, q_multiplier, shift, zero_point, lo, hi)`` per channel, for the
    kernels; ``rq=None`` selects the unfused kernel (store the int32 accumulator)."""
    if rq is None:
        f, i = np.zeros(1, np.float32), np.zeros(1, np.int32)
        return (_NO_REQUANT, f, i, i, i, i, i)
    rq = rq.for_channels(n_out) if rq.channels != n_out else rq

    def vector(v, dtype):  # contiguous and writable: one compiled kernel for every requantizer
        v = np.ascontiguousarray(v, dtype)
        return v if v.flags.writeable else v.copy()

    return (_mode_code(rq.mode), vector(rq.multiplier, np.float32),
            *(vector(v, np.int32) for v in (rq.q_multiplier, rq.shift, rq.zero_point, rq.lo, rq.hi)))


def _fused_requant_args(rq, n_out, unfused):
    """``_requant_args`` for a fused call. A requantizer whose channel count does not match
    fails in the reference only after the accumulators, so their overflow comes first:
    ``unfused()`` runs the int32 kernel to raise it before the ValueError is re-raised."""
    try:
        return _requant_args(rq, n_out)
    except ValueError:
        unfused()
        raise


def _signed_view(out):
    """uint8/uint16 outputs are written through their signed views: every value in range
    keeps its bits, and half as many kernels are compiled."""
    if out.dtype == np.uint8:
        return out.view(np.int8)
    if out.dtype == np.uint16:
        return out.view(np.int16)
    return out


def _raise_overflows(status, shape, name):
    """Raise what the reference raises: the first accumulator overflow in C order, else a
    fixed-point requantization overflow."""
    first = status[:, 0]
    if np.any(first >= 0):
        t = int(np.argmin(np.where(first >= 0, first, np.iinfo(np.int64).max)))
        index = np.unravel_index(int(first[t]), shape)
        raise AccumulatorOverflowError(
            f"{name}: int32 accumulator overflow at output index {tuple(int(i) for i in index)} "
            f"(exact value {int(status[t, 1])}); reduce K, the operand ranges or the bias"
        )
    if np.any(status[:, 2] >= 0):
        raise OverflowError("requantize (fixed-point): acc · 2**shift overflows int32")


# ---------------------------------------------------------------------------------------
# Matmul
# ---------------------------------------------------------------------------------------


def _prepare_matmul(a, w, a_zero_point, w_zero_point, bias, name):
    """The reference's checks, in the reference's order."""
    a, w = np.asarray(a), np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"{name}: expected a [M, K] and w [N, K] with equal K, got {a.shape} and {w.shape}")
    za, zw, b = check_operands(a, w, a_zero_point, w_zero_point, bias, w.shape[0], name)
    _check_dtype(a, "input", name)
    _check_dtype(w, "weight", name)
    return _kernel_operand(a), _kernel_operand(w), int(za), zw, b


def _run_matmul(a, w, za, zw, b, rq_args, out, name):
    (m, k), n = a.shape, w.shape[0]
    op = _operands(a, w, za, zw, k)
    za_s, zw_s = za + op.alpha, zw + op.beta  # the zero points move with the operands
    col_const = np.empty(n, np.int64)
    _column_constants(op.w, op.w_flip, k, b, za_s, zw_s, col_const)
    split_rows, chunks, arrays = _matmul_plan(m, n, k, _threads(None))
    blocks = np.zeros(arrays["blocks"][0], np.int64)
    status = np.full(arrays["status"][0], -1, np.int64)
    _MATMUL_KERNELS[op.path](op.a, op.w, op.a_flip, op.w_flip, zw_s, col_const, bool(np.any(zw_s != 0)),
                             split_rows, rq_args, _signed_view(out), blocks, status)
    _raise_overflows(status, out.shape, name)
    return out


def matmul_int32(a, w, a_zero_point=0, w_zero_point=0, bias=None, *, name="matmul") -> np.ndarray:
    """``acc[m, n] = Σ_k (a[m,k] - z_a)(w[n,k] - z_w[n]) + bias[n]`` as int32 ``[M, N]``.

    Same contract as :func:`refquant.kernels.reference.matmul_int32`; allocates the int32
    output and ``requant_scratch_bytes("matmul", ...)``.
    """
    a, w, za, zw, b = _prepare_matmul(a, w, a_zero_point, w_zero_point, bias, name)
    out = np.empty((a.shape[0], w.shape[0]), np.int32)
    return _run_matmul(a, w, za, zw, b, _requant_args(None, 0), out, name)


def matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq: Requantizer, *, name="matmul") -> np.ndarray:
    """``requantize(matmul_int32(...))``, fused — channels are the N columns.

    Each block of four rows is requantized as soon as its accumulators are known: besides
    the output the call allocates ``requant_scratch_bytes("matmul", ...)`` =
    ``64·N + T·(32·N + 120)`` bytes for T threads.
    """
    a, w, za, zw, b = _prepare_matmul(a, w, a_zero_point, w_zero_point, bias, name)
    m, n = a.shape[0], w.shape[0]

    def unfused():
        _run_matmul(a, w, za, zw, b, _requant_args(None, 0), np.empty((m, n), np.int32), name)

    rq_args = _fused_requant_args(rq, n, unfused)
    return _run_matmul(a, w, za, zw, b, rq_args, np.empty((m, n), rq.out_dtype), name)


# ---------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------


def _prepare_conv(x, w, x_zero_point, w_zero_point, bias, strides, pads, dilations, group,
                  auto_pad, name):
    """The reference's checks, in the reference's order."""
    x, w = np.asarray(x), np.asarray(w)
    g = conv_geometry(x.shape, w.shape, strides=strides, pads=pads, dilations=dilations,
                      group=group, auto_pad=auto_pad, name=name)
    zx, zw, b = check_operands(x, w, x_zero_point, w_zero_point, bias, g.c_out, name)
    _check_dtype(x, "input", name)
    _check_dtype(w, "weight", name)
    return _kernel_operand(x), _kernel_operand(w), int(zx), zw, b, g


def _run_conv(x, w, zx, zw, b, g, rq_args, out, name):
    if _uses_depthwise(w.shape, x.dtype, w.dtype, g.group):
        _, arrays = _depthwise_plan(g, _threads(None))
        planes, row_sums, accs, status, blocks = _depthwise_scratch(arrays)
        wc, bias = _centred_depthwise_weights(w, zw), np.ascontiguousarray(b, np.int64)
        _depthwise_kernel(x, wc, _channels_last_weights(wc) if blocks.size else _NO_BLOCK_WEIGHTS,
                          _depthwise_geometry(g), np.int32(zx), bias, rq_args, _one_pass_channels(wc, bias, rq_args),
                          _signed_view(out), planes, row_sums, accs, status, blocks)
        _raise_overflows(status, out.shape, name)
        return out
    k = g.k
    op = _operands(x, w, zx, zw, k)
    zx_s, zw_s = zx + op.alpha, zw + op.beta
    chunks, arrays = _conv_plan(g, op.path, x.dtype.itemsize, w.dtype.itemsize, _threads(None))
    packed = np.zeros(arrays["packed_weights"][0], op.w.dtype)  # columns past K stay 0
    _pack_weights(op.w, op.w_flip, packed)
    col_const = np.empty(g.c_out, np.int64)
    _column_constants(packed, 0, k, b, zx_s, zw_s, col_const)
    pad_value = op.a.dtype.type(zx_s)
    rings = np.full(arrays["rings"][0], pad_value, op.a.dtype)  # pad columns stay z_x
    ring_keys = np.full(arrays["ring_keys"][0], -1, np.int64)
    patches = np.zeros(arrays["patches"][0], op.a.dtype)  # columns past K stay 0
    row_sums = np.zeros(arrays["row_sums"][0], np.int64)
    blocks = np.zeros(arrays["blocks"][0], np.int64)
    status = np.full(arrays["status"][0], -1, np.int64)
    geometry = (g.strides[0], g.strides[1], g.dilations[0], g.dilations[1], g.pads[0], g.pads[1],
                g.kh, g.kw, g.group)
    _CONV_KERNELS[op.path](op.a, packed, geometry, op.a_flip, pad_value, zw_s, col_const,
                        bool(np.any(zw_s != 0)), rq_args, _signed_view(out),
                        rings, ring_keys, patches, row_sums, blocks, status)
    _raise_overflows(status, out.shape, name)
    return out


def conv2d_int32(x, w, x_zero_point=0, w_zero_point=0, bias=None, *, strides=None, pads=None,
                 dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """2-D convolution accumulators ``[N, C_out, OH, OW]`` in int32 (ONNX ConvInteger + bias).

    Same contract as :func:`refquant.kernels.reference.conv2d_int32`; allocates the int32
    output and ``requant_scratch_bytes("conv2d", ...)``.
    """
    x, w, zx, zw, b, g = _prepare_conv(x, w, x_zero_point, w_zero_point, bias, strides, pads,
                                       dilations, group, auto_pad, name)
    out = np.empty((g.n, g.c_out, g.oh, g.ow), np.int32)
    return _run_conv(x, w, zx, zw, b, g, _requant_args(None, 0), out, name)


def conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq: Requantizer, *, strides=None,
                   pads=None, dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """``requantize(conv2d_int32(...))``, fused — channels are C_out (axis 1).

    Each output row is gathered into a patch, multiplied and requantized before the next:
    besides the output the call allocates ``requant_scratch_bytes("conv2d", ...)``.
    """
    x, w, zx, zw, b, g = _prepare_conv(x, w, x_zero_point, w_zero_point, bias, strides, pads,
                                       dilations, group, auto_pad, name)
    shape = (g.n, g.c_out, g.oh, g.ow)

    def unfused():
        _run_conv(x, w, zx, zw, b, g, _requant_args(None, 0), np.empty(shape, np.int32), name)

    rq_args = _fused_requant_args(rq, g.c_out, unfused)
    return _run_conv(x, w, zx, zw, b, g, rq_args, np.empty(shape, rq.out_dtype), name)

