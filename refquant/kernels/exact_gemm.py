"""Exact-by-bound float32 GEMM: 8-bit Conv and MatMul accumulators from BLAS ``sgemm``, bit-exact.

Computes, for 8-bit operands, the same numbers as :mod:`refquant.kernels.reference` and the
tile kernels of :mod:`refquant.kernels.fast`::

    acc[m, n] = Σ_k (a[m, k] - z_a) · (w[n, k] - z_w[n]) + bias[n]

with the dot product done in float32 by BLAS ``sgemm`` (SciPy's OpenBLAS, which on an AVX2
host runs up to about twice as fast as the int8 loops Numba emits), and the bias, the int32
overflow check and the requantization in a Numba epilogue.

Why a float32 sum of these products is exact
--------------------------------------------
Both operands are centred before the product: ``a_c = a - z_a`` and ``w_c = w - z_w[n]`` are
integers with ``|a_c| ≤ A_max`` and ``|w_c| ≤ 255``, where ``A_max = max(z_a - lo, hi - z_a)``
over the activation dtype's range ``[lo, hi]`` (≤ 255 for 8 bits; padding holds real zero).
Every product ``a_c · w_c`` is an integer of magnitude < 2**16, exactly representable in
float32. A float32 addition (or fused multiply-add) whose exact result is an integer of
magnitude ≤ 2**24 returns that result exactly, because every such integer is a float32. A
classical GEMM (every BLAS: any blocking, SIMD width, FMA or not, any thread count — but not
Strassen-like schemes, which no BLAS NumPy uses implements) computes each output as a sum of
its K products in *some* order and grouping; every partial sum it forms is the sum of a
subset of those products, so its magnitude is at most

    B[n] = A_max · Σ_{k0 ≤ k < k1} |w_c[n, k]|

over the K-range ``[k0, k1)`` the product covers. If ``B[n] ≤ 2**24`` for every output
channel ``n``, every partial sum and the result are exact integers, whatever the order. So
:func:`chunk_bounds` cuts K (when the input zero point is bound, which fixes ``A_max``) into
consecutive chunks, greedily as long as ``max_n Σ_{chunk} |w_c[n, k]| ≤ ⌊2**24 / A_max⌋``;
a chunk of one column is always exact (a single product). Each chunk is one ``sgemm``, exact;
the chunk results are added in float64 (exact: ``|acc - bias| ≤ K · 255 · 255 < 2**53``),
converted to int64 in the epilogue, the bias added in int64 — exactly the accumulator of the
reference, on any CPU.

Worked example: ResNet-18's last 3×3 conv, ``K = 512 · 9 = 4608``, uint8 activations with
``z_a = 0`` (``A_max = 255``) and 7-bit weights (``|w_c| ≤ 64``). The per-chunk budget is
``⌊2**24 / 255⌋ = 65 793``; a channel with mean ``|w_c|`` of 20 sums to 92 160 over K, so K is
cut into two chunks (≈ 3290 + 1318 columns): two ``sgemm`` calls and one float64 add. With
``K · A_max · max|w_c| ≤ 2**24`` (here ``K ≤ 258`` for any 8-bit operands) there is always
one chunk.

Layout
------
Conv (NCHW in, OIHW weights, out NCHW), weights centred to ``W_c[C_out, K]`` with K ordered
(kernel tap, input channel of the group), so that ``W_tap = W_c[:, tap·C_g : (tap+1)·C_g]``:

* stride 1, padded rows at most 1/8 longer than the output rows (:func:`use_shifted`): no
  im2col. The input is centred and zero-padded once, ``X_p[C_in, N·((H + pads)·(W + pads) +
  slack)]`` (:func:`_pad_centre`), and ``Y[C_out, ·] = Σ_taps W_tap @ X_p[:, off_tap:]`` with
  ``off_tap = i·dh·Wp + j·dw``: one ``sgemm`` per tap on a column-shifted view, accumulating
  (``beta = 1``) within a K-chunk. Output ``(oy, ox)`` is column ``oy·Wp + ox``; the columns
  ``ox ≥ OW`` of each row are computed from other positions (their partial sums obey the same
  bound) and never read.
* otherwise a Caffe-style im2col ``P[K_g, cols]`` per group (row = kernel tap and channel: the
  input plane shifted by the tap and strided, centred, zero where it reads padding; columns
  are the output pixels of up to ``images`` images side by side), then ``Y = W_c @ P`` per
  K-chunk. The input is centred and zero-padded first (:func:`_pad_centre`, planes of ``(H +
  pads)·(W + pads)``), so building ``P`` is one gather per value through a table of the offset
  each output pixel reads for each tap (:func:`tap_offsets`, :func:`_gather_columns`, ``prange``
  over rows): no padding test and no short row loops, which made small images (8×8, 4×4)
  cost 4–9 ns per value.

Either way ``Y`` is channel-major, so the epilogues write NCHW directly: :func:`_conv_epilogue`
(shifted layout, ``prange`` over (image, channel) rows) and :func:`_im2col_epilogue` (``prange``
over runs of whole images of one channel, about 1024 outputs each, staged then copied — a 4×4
image is one loop of 16 outputs otherwise; images of at least 32 outputs are requantized in
place by the unchecked pass). Where every accumulator is provably inside int32
(:class:`GemmBinding`, ``unchecked``) the float32 mode runs as one int32/float32 pass
(:func:`_float32_unchecked`). MatMul ``a [M, K]``, ``w [N, K]``:
``Y = a_c @ w_cᵀ`` per K-chunk (``sgemm`` reading ``w_c`` transposed), :func:`_matmul_epilogue`
over rows. ``sgemm`` is SciPy's BLAS (``scipy.linalg.cython_blas``), called through ctypes
with explicit leading dimensions and ``beta``, which NumPy's ``matmul`` does not expose.

The epilogues run, per accumulator, the same steps as :mod:`fast`'s kernels
(``fast._check_int32``, ``fast._store_channel`` / ``fast._store_row`` with the same
requantizer arguments), so the outputs and errors — the first overflowing accumulator in C
order, the fixed-point shift overflow — are those of the other backends.

Threads: refquant's thread count is Numba's (``numba.set_num_threads``, the CLI's
``--threads``, ``NUMBA_NUM_THREADS``). The Numba parts (centring, im2col, epilogues) run on
Numba's threads; the products run with BLAS set to one thread for the call (through
``threadpoolctl`` when it is installed; restored after) and their output columns (matmul:
rows) cut into as many ranges as refquant has threads, each range's ``sgemm`` calls on its own
Python thread (ctypes releases the GIL). Every output value is computed by one range's calls,
and the bound makes it exact in any case, so the bits do not depend on either count. (With
BLAS's own pool threads instead, spinning while Numba's ran, two threads took 1.1 s where one
took 0.11 s on a ResNet-18 at 224×224 on two loaded cores.)

Convs of one group on an AVX2 host run instead on :mod:`pair_gemm`'s integer register tiles
(the same two layouts on channels packed into int32 lanes — int16 pairs through ``vpmaddwd``,
or u8·s8 byte quads where the weights allow, through ``vpdpbusd`` on an AVX-512 VNNI host and
``vpmaddubsw`` elsewhere — requantized per tile)
whenever their int32 lanes are exact (:attr:`GemmBinding.pairs`); ``sgemm`` keeps the others
(grouped convs, layers past the int32 bound, MatMul, hosts without AVX2).

Which layers: :func:`uses_sgemm` — 8-bit operands, not a depthwise conv (``fast``'s depthwise
kernel), at least :data:`MIN_MACS` multiply-adds and :data:`MIN_COLUMNS` output pixels per
conv call (:data:`MIN_MATMUL_MACS` per matmul, and on a VNNI host no matmul that ``fast``'s
``vpdpbusd`` tiles take: :data:`VNNI_MATMUL`); smaller calls keep ``fast``'s tile kernels.
:func:`conv2d_requant` and its siblings here have ``fast``'s signatures, validation and
errors, and are what the ``numba`` backend exports.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import glob
import os

import numpy as np
from numba import njit, prange
from numba.extending import get_cython_function_address

from ..numerics.requant import Requantizer
from . import fast, pair_gemm
from .geometry import conv_geometry

__all__ = ["EXACT_LIMIT", "GemmLayer", "activation_bound", "chunk_bounds", "eligible", "uses_sgemm",
           "scratch_arrays", "matmul_int32", "matmul_requant", "conv2d_int32", "conv2d_requant",
           "requant_scratch_bytes"]

EXACT_LIMIT = 2**24    # every integer of magnitude ≤ 2**24 is a float32
_LIMIT = EXACT_LIMIT   # the per-chunk bound actually used; tests lower it to force several chunks
USE_SGEMM = True       # set to False to run every 8-bit layer on fast's tile kernels
USE_PAIRS = pair_gemm.HOST_HAS_AVX2  # one-group convs on pair_gemm's packed tiles where exact (tests toggle it)
USE_QUADS = True  # among those, a byte-quad tile where the weights allow it (tests toggle it)
USE_VNNI = True   # among those, on a host with AVX-512 VNNI, its vpdpbusd tile (tests toggle it)
# Below these sizes the tile kernels' lower fixed cost (about 0.05 ms less per call) wins. With
# the gather im2col and the run epilogue the crossover is between 0.01 and 0.6 M multiply-adds
# for the conv shapes measured (digits batches of 8×8 and 4×4 images to 64×64 ResNet stems;
# above 2**18 the tile kernels take 1.2–7× the GEMM's time: bench/small_images.py,
# bench/RESULTS.md "Small images on the exact GEMM"), 1×1 included.
MIN_MACS = 1 << 18          # multiply-adds of one conv call (all images)
MIN_POINTWISE_MACS = 1 << 18
MIN_MATMUL_MACS = 1 << 19   # multiply-adds of one matmul call
# On a host with AVX-512 VNNI a matmul whose K fast's vpdpbusd tiles take runs there: faster than
# sgemm at every M measured (1–256 rows, K 384–1536, N 384–1536: 1.1–17×, the one-row classifier
# 17×; bench/RESULTS.md). Tests set it False to run matmuls on sgemm.
VNNI_MATMUL = True
MIN_COLUMNS = 16            # output pixels of one conv call (all images)
_FORCE_SHIFTED = None  # tests set True/False to run every stride-1 conv on one layout
# columns of one im2col: as many whole images as keep P and Y under this many float32 values
_MAX_COLUMN_VALUES = 1 << 22
# the im2col epilogue's run: whole images of one channel, about this many outputs per loop
_EPILOGUE_RUN = 1024
_DIRECT_ROW = 32  # image rows at least this long are requantized in place (the unchecked float32 pass)


def activation_bound(x_dtype, x_zero_point) -> int:
    """``A_max = max |a - z_a|`` over the values of ``x_dtype`` (and 0, the padding)."""
    info = np.iinfo(np.dtype(x_dtype))
    za = int(x_zero_point)
    return max(za - int(info.min), int(info.max) - za, 0)


def eligible(a_dtype, w_dtype, w_shape, group=1) -> bool:
    """8-bit operands, and not a depthwise conv (``fast``'s depthwise kernel runs those)."""
    a_dtype, w_dtype = np.dtype(a_dtype), np.dtype(w_dtype)
    return (USE_SGEMM and a_dtype.itemsize == 1 and w_dtype.itemsize == 1
            and a_dtype.kind in "iu" and w_dtype.kind in "iu"
            and not (len(w_shape) == 4 and fast._uses_depthwise(tuple(w_shape), a_dtype, w_dtype, group)))


def _conv_macs(g) -> int:
    """Multiply-adds of one image: ``C_out · OH · OW · K``."""
    return g.c_out * g.oh * g.ow * g.k


def uses_sgemm(a_dtype, w_dtype, w_shape, macs: int, columns: int, group=1) -> bool:
    """The exact float32 path runs :func:`eligible` operands of a call with at least
    :data:`MIN_MACS` multiply-adds and :data:`MIN_COLUMNS` output pixels (a conv, ``w_shape``
    OIHW) or :data:`MIN_MATMUL_MACS` multiply-adds (a matmul)."""
    if len(w_shape) == 4:
        least = MIN_POINTWISE_MACS if w_shape[2] * w_shape[3] == 1 else MIN_MACS
        return eligible(a_dtype, w_dtype, w_shape, group) and macs >= least and columns >= MIN_COLUMNS
    if VNNI_MATMUL and fast._uses_vnni(a_dtype, w_dtype, w_shape[1]):
        return False
    return eligible(a_dtype, w_dtype, w_shape) and macs >= MIN_MATMUL_MACS


@njit(cache=True)
def _largest_row_sum(wc):
    """``max_n Σ_k |wc[n, k]|`` (int64; 0 for no rows) without a temporary array."""
    best = np.int64(0)
    for n in range(wc.shape[0]):
        run = np.int64(0)
        for k in range(wc.shape[1]):
            run += np.int64(abs(wc[n, k]))
        best = max(best, run)
    return best


@njit(cache=True)
def _greedy_chunks(wc, cap, sums, out):
    """Cut ``[0, K)`` into the longest chunks with ``max_n Σ_{chunk} |wc[n, k]| ≤ cap`` (a
    one-column chunk is always taken): ``out[0..count]`` the boundaries, returns ``count``.
    ``sums [N, K + 1]`` is scratch for the prefix sums of ``|wc|`` along K."""
    n, k = wc.shape
    for i in range(n):
        run = np.int64(0)
        sums[i, 0] = 0
        for kk in range(k):
            run += np.int64(abs(wc[i, kk]))
            sums[i, kk + 1] = run
    count = 0
    out[0] = 0
    k0 = 0
    while k0 < k:
        k1 = k
        for i in range(n):  # k1 = min over n of the furthest reach from k0
            target = sums[i, k0] + cap
            if sums[i, k1] <= target:
                continue
            lo, hi = k0 + 1, k1  # the first j in (k0, k1] with sums[i, j] > target
            while lo < hi:
                mid = (lo + hi) // 2
                if sums[i, mid] > target:
                    hi = mid
                else:
                    lo = mid + 1
            k1 = lo - 1
        k1 = max(k1, k0 + 1)
        count += 1
        out[count] = k1
        k0 = k1
    return count


def chunk_bounds(wc: np.ndarray, a_max: int, limit: int | None = None) -> np.ndarray:
    """K-chunk boundaries ``[0, k1, …, K]`` for centred weights ``wc [N, K]`` (float32 holding
    integers) and ``A_max``: within each chunk ``A_max · Σ |wc[n, k]| ≤ limit`` (default
    ``_LIMIT`` = 2**24) for every ``n``, or the chunk is one column."""
    limit = _LIMIT if limit is None else int(limit)
    out = np.empty(wc.shape[1] + 1, np.int64)
    sums = np.empty((wc.shape[0], wc.shape[1] + 1), np.int32)  # ≤ K · 255 < 2**31
    count = _greedy_chunks(wc, np.int64(limit // max(int(a_max), 1)), sums, out)
    return out[:count + 1] if count else np.zeros(2, np.int64)  # K = 0: one empty chunk


def use_shifted(g) -> bool:
    """Stride-1 convolutions whose padded rows are at most 1/8 longer than the output rows run
    on the padded input without im2col (module doc); the others (strided; small images, where
    the unused columns would cost more than the im2col) take the im2col."""
    wp = g.w + g.pads[1] + g.pads[3]
    if g.strides != (1, 1):
        return False
    return _FORCE_SHIFTED if _FORCE_SHIFTED is not None else 8 * (wp - g.ow) <= wp


def pairs_use_shifted(g) -> bool:
    """The layout of :mod:`pair_gemm`'s tiles: shifted for stride 1 when an image's padded plane
    has at most twice its outputs' columns (7×7 with pad 1: 83 for 49). Wider than the sgemm's
    rule (:func:`use_shifted`): there the unused columns cost ``sgemm`` work, here the im2col's
    gather (``taps ×`` the input) costs more than a few unused columns of 16-column tiles."""
    if g.strides != (1, 1):
        return False
    return _FORCE_SHIFTED if _FORCE_SHIFTED is not None else shifted_pitch(g) <= 2 * g.oh * g.ow


def shifted_pitch(g) -> int:
    """Columns of one image's padded input: ``(H + pads)·(W + pads)`` plus the slack the
    last kernel tap's shifted view reads past it."""
    return (g.h + g.pads[0] + g.pads[2]) * (g.w + g.pads[1] + g.pads[3]) + (g.kw - 1) * g.dilations[1]


def _may_need_chunks(k: int) -> bool:
    """Whether some 8-bit operands of inner size ``k`` can need more than one chunk."""
    return k * 255 * 255 > _LIMIT


def _epilogue_run(hw: int) -> int:
    """Length of the im2col epilogue's per-thread rows: whole images, at least one."""
    return max(1, _EPILOGUE_RUN // max(hw, 1)) * max(hw, 1)


def _images_per_gemm(n: int, k: int, c_out: int, hw: int) -> int:
    return max(1, min(n, _MAX_COLUMN_VALUES // max(1, max(k, c_out) * hw)))


def scratch_arrays(kind: str, a_shape, w_shape, g, threads: int) -> dict:
    """The arrays one call allocates besides its output, ``{name: (shape, itemsize)}`` (``g``:
    the conv geometry, ``None`` for a matmul). ``chunk_sums`` is counted whenever some 8-bit
    operands of this K could need two chunks (``K · 255 · 255 > 2**24``), so the figure is an
    upper bound that depends on shapes only."""
    if kind == "matmul":
        (m, k), n = a_shape, w_shape[0]
        c_out, rows, cols, chunks = n, m, n, max(1, min(threads, m))
        arrays = {"centred_weights": ((n, k), 4), "centred_input": ((m, k), 4), "accumulators": ((chunks, n), 8)}
    elif use_shifted(g):
        k, c_out, hw, pitch = g.k, g.c_out, g.oh * g.ow, shifted_pitch(g)
        rows, cols = c_out, _images_per_gemm(g.n, max(g.c_in, c_out), 1, pitch) * pitch
        chunks = max(1, min(threads, g.n * c_out))
        arrays = {"centred_weights": ((c_out, k), 4), "padded_input": ((g.c_in, cols), 4),
                  "accumulators": ((chunks, hw), 8)}
    else:
        k, c_out, hw = g.k, g.c_out, g.oh * g.ow
        images = _images_per_gemm(g.n, k, c_out, hw)
        rows, cols, chunks = c_out, images * hw, max(1, min(threads, g.n * c_out))
        run = _epilogue_run(hw)
        arrays = {"centred_weights": ((c_out, k), 4), "padded_input": ((g.c_in, images * padded_pitch(g)), 4),
                  "tap_offsets": ((g.kh * g.kw, hw), 8), "columns": ((k, cols), 4),
                  "accumulators": ((chunks, run), 8), "staged_outputs": ((chunks, run), 4)}
    arrays.update({
        "bias": ((c_out,), 8),
        "requant_vectors": ((6, c_out), 4),
        "chunk_bounds": ((k + 1,), 8),
        "chunk_prefix_sums": ((c_out, k + 1), 4),  # the greedy cut's, freed before the products
        "products": ((rows, cols), 4),
        "status": ((chunks, 3), 8),
    })
    if _may_need_chunks(k):
        arrays["chunk_sums"] = ((rows, cols), 8)
    return arrays


# ---------------------------------------------------------------------------------------
# Numba pieces: centring, im2col, epilogues
# ---------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _centre_rows(a, za, out):
    """``out[m, k] = float32(a[m, k] - z_a)``."""
    for m in prange(a.shape[0]):
        for k in range(a.shape[1]):
            out[m, k] = np.float32(np.int32(np.int32(a[m, k]) - za))  # int32 - int32 widens to int64 in Numba


@njit(cache=True)
def _centre_weights(w, zw, out):
    """``out[n, k] = float32(w[n, k] - z_w[n])``."""
    for n in range(w.shape[0]):
        for k in range(w.shape[1]):
            out[n, k] = np.float32(np.int32(w[n, k]) - zw[n])


@njit(parallel=True, cache=True)
def _gather_columns(xp, c0, nb, pitch, taps, p):
    """``p[tap·C_g + c, bl·OH·OW + e] = xp[c0 + c, bl·pitch + taps[tap, e]]``: the im2col read
    from the padded, centred input (:func:`_pad_centre`), one gather per value; ``taps[tap, e]``
    is the offset in one image's padded plane that output pixel ``e`` reads for that tap
    (:func:`tap_offsets`), so padding needs no test and no conversion is left to do."""
    ntap, hw = taps.shape
    cin_g = p.shape[0] // ntap
    for r in prange(p.shape[0]):
        tap, c = r // cin_g, r % cin_g
        src, row, off = xp[c0 + c], p[r], taps[tap]
        for bl in range(nb):
            s0, d0 = bl * pitch, bl * hw
            for e in range(hw):
                row[d0 + e] = src[s0 + off[e]]


def tap_offsets(g) -> np.ndarray:
    """``taps[i·kw + j, oy·OW + ox] = (oy·sh + i·dh)·Wp + ox·sw + j·dw`` (int64): where each
    output pixel reads each kernel tap in one image's padded plane of width ``Wp = W + pads``."""
    wp = g.w + g.pads[1] + g.pads[3]
    oy = np.arange(g.oh, dtype=np.int64)[:, None] * g.strides[0]
    ox = np.arange(g.ow, dtype=np.int64)[None, :] * g.strides[1]
    rows = [((oy + i * g.dilations[0]) * wp + ox + j * g.dilations[1]).reshape(-1)
            for i in range(g.kh) for j in range(g.kw)]
    return np.ascontiguousarray(np.stack(rows))


def padded_pitch(g) -> int:
    """Columns of one image's padded plane for the im2col: ``(H + pads)·(W + pads)``."""
    return (g.h + g.pads[0] + g.pads[2]) * (g.w + g.pads[1] + g.pads[3])


@njit(parallel=True, cache=True)
def _pad_centre(x, b0, nb, c0, top, left, wp, pitch, za, xp):
    """``xp[c, bl·pitch + (top + iy)·wp + left + ix] = x[b0 + bl, c0 + c, iy, ix] - z_a``; every
    other column (the padding, and the slack after each image) 0 — real zero. One pass: each
    column is written once (a 1×1 conv has no padding, and its input is only converted)."""
    height, width = x.shape[2], x.shape[3]
    right = wp - left - width
    for c in prange(xp.shape[0]):
        row = xp[c]
        for bl in range(nb):
            base = bl * pitch
            # the top rows and the first row's left padding (no rows: the whole pitch)
            for e in range(top * wp + left if height > 0 else pitch):
                row[base + e] = 0.0
            plane = x[b0 + bl, c0 + c]
            for iy in range(height):
                d = base + (top + iy) * wp + left
                src = plane[iy]
                for ix in range(width):
                    row[d + ix] = np.float32(np.int32(np.int32(src[ix]) - za))  # kept int32: AVX2 converts int32 lanes
                # this row's right padding and the next row's left padding (or the bottom rows)
                stop = d + width + right + left if iy + 1 < height else base + pitch
                for e in range(d + width, stop):
                    row[e] = 0.0


@njit(cache=True)
def _float32_unchecked(src, s0, count, bias, multiplier, zero_point, lo, hi, dst, d0):
    """``dst[d0 + e] = fast._float32_unchecked_one(src[s0 + e], ...)`` in one channel."""
    for e in range(count):
        dst[d0 + e] = fast._float32_unchecked_one(src[s0 + e], bias, multiplier, zero_point, lo, hi)


@njit(parallel=True, cache=True)
def _conv_epilogue(y, b0, nb, image_pitch, row_pitch, oh, ow, bias, unchecked, rq, out, accs, status, narrow):
    """Per (image, channel) row: ``acc = int64(y) + bias``, the int32 check and the store.
    ``out`` is ``[N, C_out, OH·OW]``; output ``(bl, n, oy, ox)`` is
    ``y[n, bl·image_pitch + oy·row_pitch + ox]``; ``narrow``: ``y`` is one chunk's float32
    (``|y| ≤ 2**24``), else float64 chunk sums; ``unchecked``: every sum is proven inside int32
    (:class:`GemmBinding`), so the float32 mode is one pass, :func:`_float32_unchecked`."""
    c_out = y.shape[0]
    hw = oh * ow
    chunks = status.shape[0]
    for t in prange(chunks):
        acc = accs[t]
        q0, q1 = fast._chunk_bounds(nb * c_out, chunks, t)
        for q in range(q0, q1):
            bl, n = q // c_out, q % c_out
            src = y[n]
            bn = bias[n]
            if unchecked and rq[0] == 0:
                dst = out[b0 + bl, n]
                for oy in range(oh):
                    _float32_unchecked(src, bl * image_pitch + oy * row_pitch, ow, bn, rq[1][n], rq[4][n],
                                       rq[5][n], rq[6][n], dst, oy * ow)
                continue
            for oy in range(oh):
                base = bl * image_pitch + oy * row_pitch
                if narrow:  # |y| ≤ 2**24: through int32, the conversion AVX2 vectorises
                    for ox in range(ow):
                        acc[oy * ow + ox] = np.int64(np.int32(src[base + ox])) + bn
                else:
                    for ox in range(ow):
                        acc[oy * ow + ox] = np.int64(src[base + ox]) + bn
            flat0 = ((b0 + bl) * c_out + n) * hw
            fast._check_int32(acc, hw, flat0, status, t)
            if rq[0] == 0:  # float32 mode, through int32 (fast._float32_row)
                fast._float32_row(acc, rq[1][n], rq[4][n], rq[5][n], rq[6][n], out[b0 + bl, n])
            else:
                fast._store_channel(acc, n, rq, out[b0 + bl, n], flat0, status, t)


@njit(parallel=True, cache=True)
def _im2col_epilogue(y, b0, nb, hw, bias, unchecked, narrow, rq, out, accs, staged, status):
    """The epilogue of the im2col layout (``y[n, bl·OH·OW + e]`` is output ``(b0 + bl, n, e)``),
    in runs of ``accs.shape[1] // hw`` images per channel, so that a small image costs one long
    loop, not one short loop per (image, channel). A run is converted (``acc = int64(y) +
    bias``), checked against int32 (recording each outside value's C-order index) and stored
    into ``staged`` through ``fast._float32_row`` / ``fast._store_channel``, then copied to its
    images' rows; with ``unchecked`` (sums proven inside int32) and the float32 mode it is
    :func:`_float32_unchecked`, one pass. ``narrow``: ``y`` is one chunk's float32 (``|y| ≤ 2**24``,
    converted through int32, which AVX2 vectorises), else float64 chunk sums."""
    c_out = y.shape[0]
    per = max(1, accs.shape[1] // hw)
    runs = (nb + per - 1) // per
    chunks = status.shape[0]
    for t in prange(chunks):
        acc, stage = accs[t], staged[t]
        q0, q1 = fast._chunk_bounds(c_out * runs, chunks, t)
        for q in range(q0, q1):  # run-major: a run's images are written whole, one block of ``out``
            r, n = q // c_out, q % c_out
            i0 = r * per
            i1 = min(nb, i0 + per)
            count, base, src = (i1 - i0) * hw, i0 * hw, y[n]
            if unchecked and rq[0] == 0 and hw >= _DIRECT_ROW:  # rows long enough to write in place
                for i in range(i0, i1):
                    _float32_unchecked(src, i * hw, hw, bias[n], rq[1][n], rq[4][n], rq[5][n], rq[6][n],
                                       out[b0 + i, n], 0)
                continue
            if unchecked and rq[0] == 0:
                _float32_unchecked(src, base, count, bias[n], rq[1][n], rq[4][n], rq[5][n], rq[6][n], stage, 0)
            else:
                bn = bias[n]
                if narrow:
                    for e in range(count):
                        acc[e] = np.int64(np.int32(src[base + e])) + bn
                else:
                    for e in range(count):
                        acc[e] = np.int64(src[base + e]) + bn
                outside = 0
                for e in range(count):
                    outside += (acc[e] < fast._INT32_MIN) | (acc[e] > fast._INT32_MAX)
                if outside:
                    for e in range(count):
                        if acc[e] < fast._INT32_MIN or acc[e] > fast._INT32_MAX:
                            fast._record(status, t, 1, ((b0 + i0 + e // hw) * c_out + n) * hw + e % hw, acc[e])
                            acc[e] = 0
                if rq[0] == 0:
                    fast._float32_row(acc[:count], rq[1][n], rq[4][n], rq[5][n], rq[6][n], stage[:count])
                else:  # a fixed-point overflow is recorded with this run's first index (only its kind is raised)
                    fast._store_channel(acc[:count], n, rq, stage[:count], ((b0 + i0) * c_out + n) * hw, status, t)
            for i in range(i0, i1):
                dst, o = out[b0 + i, n], (i - i0) * hw
                for e in range(hw):
                    dst[e] = stage[o + e]


@njit(parallel=True, cache=True)
def _matmul_epilogue(y, bias, unchecked, rq, out, accs, status):
    """Per row ``m``: ``acc = int64(y[m]) + bias``, the int32 check and the store; with
    ``unchecked`` (sums proven inside int32) and the float32 mode, :func:`_float32_unchecked`'s
    one int32/float32 pass with the column's (= channel's) constants."""
    m_total, n_total = y.shape
    chunks = status.shape[0]
    for t in prange(chunks):
        acc = accs[t]
        m0, m1 = fast._chunk_bounds(m_total, chunks, t)
        for m in range(m0, m1):
            src = y[m]
            if unchecked and rq[0] == 0:
                multiplier, zero_point, lo, hi, dst = rq[1], rq[4], rq[5], rq[6], out[m]
                for e in range(n_total):  # column e is channel e
                    dst[e] = fast._float32_unchecked_one(src[e], bias[e], multiplier[e], zero_point[e], lo[e], hi[e])
                continue
            for e in range(n_total):
                acc[e] = np.int64(src[e]) + bias[e]
            fast._check_int32(acc, n_total, m * n_total, status, t)
            fast._store_row(acc, 0, rq, out[m], m * n_total, status, t)


# ---------------------------------------------------------------------------------------
# BLAS threads
# ---------------------------------------------------------------------------------------

_SGEMM = None  # (sgemm through ctypes, its integer type): see _sgemm


def _numpy_openblas_sgemm():
    """NumPy's own OpenBLAS ``sgemm`` (the ILP64 Fortran entry ``scipy_sgemm_64_`` of the
    ``libscipy_openblas64_`` that NumPy's wheels ship in ``numpy.libs``), or ``None`` where
    NumPy carries no such library."""
    here = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(here, "libscipy_openblas64_*.so*"))):
        try:
            return ctypes.CDLL(path).scipy_sgemm_64_
        except (OSError, AttributeError):
            continue
    return None


def _sgemm():
    """The Fortran ``sgemm`` the products call, and the C type of its integer arguments.

    NumPy's bundled OpenBLAS when present — on the products here (M = 16–64 rows, K = 9–576)
    it ran 1.3–1.6× faster than SciPy's on one thread (OpenBLAS 0.3.31 against 0.3.30, AMD
    EPYC Zen 3, bench/RESULTS.md) — else SciPy's ``cython_blas.sgemm`` (LP64). Which BLAS it
    is changes no bit: every product is exact by the bound of the module docstring."""
    global _SGEMM
    if _SGEMM is None:
        fn = _numpy_openblas_sgemm()
        if fn is not None:
            fn.restype = None
            _SGEMM = (fn, ctypes.c_int64)
        else:
            address = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
            _SGEMM = (ctypes.CFUNCTYPE(None, *(ctypes.c_void_p,) * 13)(address), ctypes.c_int)
    return _SGEMM


_N, _T = ctypes.c_char(b"N"), ctypes.c_char(b"T")


def _gemm(m, n, k, a, lda, b, ldb, c, ldc, beta, b_transposed=False):
    """Row-major ``C[m, n] = A[m, k] @ B + beta · C`` on float32 buffers given by address and
    leading dimension, ``B`` being ``[k, n]`` (or ``[n, k]`` with ``b_transposed``). ``sgemm``
    is column-major, so it is asked for ``Cᵀ = Bᵀ Aᵀ``."""
    if m == 0 or n == 0:
        return
    fn, i = _sgemm()
    fn(ctypes.byref(_T if b_transposed else _N), ctypes.byref(_N), ctypes.byref(i(n)), ctypes.byref(i(m)),
       ctypes.byref(i(k)), ctypes.byref(ctypes.c_float(1.0)), ctypes.c_void_p(b), ctypes.byref(i(ldb)),
       ctypes.c_void_p(a), ctypes.byref(i(lda)), ctypes.byref(ctypes.c_float(beta)), ctypes.c_void_p(c),
       ctypes.byref(i(ldc)))


_POOL = None  # Python threads for the column ranges of one product (ctypes releases the GIL)
_MIN_PART = 64  # columns (rows of a matmul) per thread, at least


def _in_parts(run, total: int, threads: int) -> None:
    """``run(lo, hi)`` over ``[0, total)`` cut into up to ``threads`` ranges, concurrently;
    each output value is computed by one range's ``sgemm`` calls, so the cut changes no bit."""
    global _POOL
    parts = max(1, min(threads, total // _MIN_PART))
    if parts == 1:
        run(0, total)
        return
    if _POOL is None or _POOL._max_workers < parts - 1:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=max(parts - 1, 1), thread_name_prefix="refquant-gemm")
    cuts = [total * t // parts for t in range(parts + 1)]
    futures = [_POOL.submit(run, cuts[t], cuts[t + 1]) for t in range(1, parts)]
    run(cuts[0], cuts[1])
    for f in futures:
        f.result()


_BLAS = None  # threadpoolctl's controllers of the loaded BLAS libraries ([] without threadpoolctl)


def _blas_controllers() -> list:
    global _BLAS
    if _BLAS is None:
        _sgemm()  # the BLAS the products call is loaded before the libraries are listed
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS = []
        else:
            _BLAS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _BLAS


class _BlasThreads:
    """Run BLAS with ``threads`` threads inside the block, then restore each library's count.
    The products run with one BLAS thread: :func:`_in_parts` spreads them over refquant's
    threads itself (BLAS's own pool threads, spinning while Numba's run, took 2 threads
    from 110 ms to 1.1 s on the 224×224 ResNet-18 on two loaded cores)."""

    __slots__ = ("threads", "before")

    def __init__(self, threads: int):
        self.threads, self.before = threads, []

    def __enter__(self):
        for c in _blas_controllers():
            n = c.get_num_threads()
            if n != self.threads:
                c.set_num_threads(self.threads)
                self.before.append((c, n))

    def __exit__(self, *exc):
        for c, n in self.before:
            c.set_num_threads(n)


# ---------------------------------------------------------------------------------------
# The prepared layer
# ---------------------------------------------------------------------------------------


class GemmBinding:
    """``bias`` (int64 ``[C_out]``), ``z_a``, the K-chunk boundaries for ``A_max(z_a)``,
    ``unchecked``: every accumulator is provably inside int32, ``A_max · max_n Σ_k |w_c[n, k]| +
    max |bias| ≤ 2**31 - 1``, so the epilogue may skip the int32 check and run in int32; and
    ``pairs``: every partial dot product is inside int32 (the same bound without the bias,
    :func:`pair_gemm.pairs_exact`), so :mod:`pair_gemm`'s int32 lanes are exact; ``quad_bias``:
    the quad tile's ``bias - z'·S`` (:meth:`pair_gemm.PackedWeights.quad_bias`) when the weights
    allow that tile, else ``None``."""

    __slots__ = ("x_zero_point", "bias", "bounds", "unchecked", "pairs", "quad_bias")

    def __init__(self, x_zero_point, bias, bounds, unchecked=False, pairs=False, quad_bias=None):
        self.x_zero_point, self.bias, self.bounds, self.unchecked = x_zero_point, bias, bounds, unchecked
        self.pairs, self.quad_bias = pairs, quad_bias


class GemmLayer:
    """A Conv (OIHW) or MatMul (``[N, K]``) weight centred to float32 for the sgemm path.

    ``zw`` are the weight zero points as :func:`~refquant.kernels.reference.check_operands`
    returns them (validated by the caller).
    """

    def __init__(self, kind: str, w: np.ndarray, zw, x_dtype, name: str, group: int = 1):
        self.kind, self.name, self.x_dtype = kind, name, np.dtype(x_dtype)
        n_out = w.shape[0]
        zw = np.ascontiguousarray(np.broadcast_to(np.asarray(zw, np.int32), (n_out,)))
        w = np.ascontiguousarray(w)
        if kind == "conv2d":  # K ordered (kernel tap, channel): W_tap[n, c] is a block of columns
            w = w.transpose(0, 2, 3, 1)
        w2 = np.ascontiguousarray(w).reshape(n_out, int(np.prod(w.shape[1:])))
        self.wc = np.empty(w2.shape, np.float32)  # |w - z_w| ≤ 255: exact
        _centre_weights(w2, zw, self.wc)
        self.k = self.wc.shape[1]
        # max_n Σ_k |w_c[n, k]|: an exact integer (≤ K · 255), the row bound of the dot products
        self.row_bound = int(_largest_row_sum(self.wc))
        self._taps: dict = {}
        self._offsets: dict = {}
        self._pair_plans: dict = {}
        # convs of one group on pair_gemm's packed tiles (which calls take them: conv())
        self.pairs = (pair_gemm.PackedWeights(w.transpose(0, 3, 1, 2), zw)
                      if kind == "conv2d" and int(group or 1) == 1 and pair_gemm.HOST_HAS_AVX2 else None)

    def bind(self, x_zero_point: int, bias: np.ndarray) -> GemmBinding:
        a_max = activation_bound(self.x_dtype, x_zero_point)
        bias = np.ascontiguousarray(bias, np.int64)
        largest_bias = int(np.abs(bias).max()) if bias.size else 0
        unchecked = a_max * self.row_bound + largest_bias <= fast._INT32_MAX
        quad_bias = (self.pairs.quad_bias(bias, x_zero_point, self.x_dtype)
                     if self.pairs is not None and self.pairs.vnni else None)
        return GemmBinding(int(x_zero_point), bias, chunk_bounds(self.wc, a_max), unchecked,
                           pair_gemm.pairs_exact(a_max, self.row_bound), quad_bias)

    def shifted_offsets(self, g) -> np.ndarray:
        """The shifted layout's column offset of each kernel tap, ``i·dh·Wp + j·dw`` (int64),
        memoised per geometry."""
        key = (g.w, g.pads, g.dilations, g.kh, g.kw)
        offs = self._offsets.get(key)
        if offs is None:
            wp = g.w + g.pads[1] + g.pads[3]
            dh, dw = g.dilations
            offs = self._offsets[key] = np.array([i * dh * wp + j * dw for i in range(g.kh) for j in range(g.kw)],
                                                 np.int64)
        return offs

    def tap_offsets(self, g) -> np.ndarray:
        """:func:`tap_offsets` of ``g``, memoised per geometry."""
        key = (g.h, g.w, g.pads, g.strides, g.dilations, g.kh, g.kw)
        taps = self._taps.get(key)
        if taps is None:
            taps = self._taps[key] = tap_offsets(g)
        return taps

    def _chunked(self, pieces, m, c_addr, ldc, rows, y32, y64, threads, columns):
        """``y = Σ_chunks Σ_pieces A @ B`` over ``columns`` output columns: ``pieces[ci]`` is a
        list of ``(a, lda, b, ldb, k)`` (addresses of the first column) accumulated by ``sgemm``
        into ``y32[rows]`` (float32 — exact within a chunk); with several chunks each chunk's
        result is added into ``y64[rows]`` (float64 — exact)."""
        multi = len(pieces) > 1

        def run(lo, hi):
            for ci, chunk in enumerate(pieces):
                beta = 0.0
                for a, lda, b, ldb, k in chunk:
                    _gemm(m, hi - lo, k, a, lda, b + 4 * lo, ldb, c_addr + 4 * lo, ldc, beta)
                    beta = 1.0
                if multi:
                    if ci == 0:
                        y64[rows, lo:hi] = y32[rows, lo:hi]
                    else:
                        y64[rows, lo:hi] += y32[rows, lo:hi]

        _in_parts(run, columns, threads)

    def _conv_im2col(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        hw = g.oh * g.ow
        k_g, cout_g, cin_g = self.k, g.c_out // g.group, g.c_in // g.group
        nb_max = _images_per_gemm(g.n, k_g, g.c_out, hw)
        cols_max = nb_max * hw
        pitch = padded_pitch(g)
        xp = np.empty((g.c_in, nb_max * pitch), np.float32)
        p = np.empty((k_g, cols_max), np.float32)
        y32 = np.empty((g.c_out, cols_max), np.float32)
        bounds = binding.bounds
        multi = len(bounds) > 2
        y64 = np.empty((g.c_out, cols_max), np.float64) if multi else None
        chunks = max(1, min(threads, g.n * g.c_out))
        run = _epilogue_run(hw)
        accs = np.empty((chunks, run), np.int64)
        staged = np.empty((chunks, run), out.dtype)
        status = np.full((chunks, 3), -1, np.int64)
        taps = self.tap_offsets(g)
        top, left = g.pads[0], g.pads[1]
        wp = g.w + g.pads[1] + g.pads[3]
        out3 = out.reshape(g.n, g.c_out, hw)
        za = np.int32(binding.x_zero_point)
        wa, pa, ya = self.wc.ctypes.data, p.ctypes.data, y32.ctypes.data
        with _BlasThreads(1):
            for b0 in range(0, g.n, nb_max):
                nb = min(nb_max, g.n - b0)
                _pad_centre(x, b0, nb, 0, top, left, wp, pitch, za, xp)
                for grp in range(g.group):
                    _gather_columns(xp, grp * cin_g, nb, pitch, taps, p)
                    pieces = [[(wa + 4 * (grp * cout_g * k_g + int(k0)), k_g, pa + 4 * int(k0) * cols_max, cols_max,
                                int(k1 - k0))] for k0, k1 in zip(bounds[:-1], bounds[1:])]
                    self._chunked(pieces, cout_g, ya + 4 * grp * cout_g * cols_max, cols_max,
                                  slice(grp * cout_g, (grp + 1) * cout_g), y32, y64, threads, nb * hw)
                _im2col_epilogue(y64 if multi else y32, b0, nb, hw, binding.bias, binding.unchecked, not multi,
                                 rq_args, out3, accs, staged, status)
        return status

    def conv(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """The conv into ``out`` (NCHW, the kernel's signed view); returns the status array.
        One group on an AVX2 host, where exact: :mod:`pair_gemm`'s int16 tiles; else ``sgemm``,
        on the shifted layout (:func:`use_shifted`) or on the im2col."""
        if USE_PAIRS and self.pairs is not None and binding.pairs:
            return self._conv_pairs(x, g, binding, rq_args, out, threads)
        if use_shifted(g):
            return self._conv_shifted(x, g, binding, rq_args, out, threads)
        return self._conv_im2col(x, g, binding, rq_args, out, threads)

    def _conv_pairs(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """:mod:`pair_gemm`'s tiles — byte quads where the weights allow (:data:`USE_QUADS`),
        else int16 pairs — on the shifted layout (:func:`pairs_use_shifted`: the packed planes
        and the tap offsets) or on an im2col of packed rows (``P[tap·cp + q, ·]`` is packed row
        ``q`` gathered through :func:`tap_offsets`, read with one offset 0). The batches of
        images and each one's tile schedule depend on the geometry, the thread count and the
        tile only: :meth:`_pairs_plan`, memoised."""
        tile_kind = self.pairs.kind(USE_QUADS, USE_VNNI) if binding.quad_bias is not None else pair_gemm.PAIRS
        key = (g, threads, tile_kind, _FORCE_SHIFTED)
        plan = self._pair_plans.get(key)
        if plan is None:
            plan = self._pair_plans[key] = self._pairs_plan(g, threads, tile_kind)
        shifted, offs, taps, pitch, cp, batches = plan
        quads = tile_kind != pair_gemm.PAIRS
        bias = binding.quad_bias if quads else binding.bias
        top, left, wp = g.pads[0], g.pads[1], g.w + g.pads[1] + g.pads[3]
        out3 = out.reshape(g.n, g.c_out, g.oh * g.ow)
        statuses = []
        for b0, nb, cols, width, schedule in batches:
            xk = pair_gemm.pack_input(x, b0, nb, top, left, wp, pitch, binding.x_zero_point, width, self.pairs,
                                      quads, threads)
            if shifted:
                statuses.append(pair_gemm.run_tiles(xk, offs, cp, self.pairs, tile_kind, cols, b0, pitch, wp, g.oh,
                                                    g.ow, bias, binding.unchecked, rq_args, out3, threads, schedule))
                continue
            hw = g.oh * g.ow
            rows = np.empty((taps.shape[0] * cp, -(-cols // pair_gemm.TILE_COLUMNS) * pair_gemm.TILE_COLUMNS),
                            np.int32)  # columns past `cols`: never stored
            _gather_columns(xk, 0, nb, pitch, taps, rows)
            statuses.append(pair_gemm.run_tiles(rows, offs, taps.shape[0] * cp, self.pairs, tile_kind, cols, b0, hw,
                                                g.ow, g.oh, g.ow, bias, binding.unchecked, rq_args, out3, threads,
                                                schedule))
        if len(statuses) == 1:
            return statuses[0]
        return np.concatenate(statuses) if statuses else np.full((1, 3), -1, np.int64)  # no images: no overflow

    def _pairs_plan(self, g, threads: int, tile_kind: int) -> tuple:
        """``(shifted, offsets, im2col taps, pitch, cp, batches)`` of :meth:`_conv_pairs`: each batch ``(b0,
        nb, columns, packed width, tile schedule)``. The shifted layout's columns are the
        images' padded planes (the last image's rows past OH not needed), its width whole tiles
        plus the last tap's offset (tiles read whole vectors); the im2col's are the output
        pixels, its packed width the padded planes."""
        quads = tile_kind != pair_gemm.PAIRS
        cp = self.pairs.cq if quads else self.pairs.cp
        tile, hw = pair_gemm.TILE_COLUMNS, g.oh * g.ow
        wp = g.w + g.pads[1] + g.pads[3]
        batches = []
        if pairs_use_shifted(g):
            offs, pitch = self.shifted_offsets(g), shifted_pitch(g)
            images = _images_per_gemm(g.n, max(g.c_in, g.c_out), 1, pitch)
            for b0 in range(0, g.n, images):
                nb = min(images, g.n - b0)
                cols = (nb - 1) * pitch + g.oh * wp
                width = max(nb * pitch, -(-cols // tile) * tile + int(offs[-1]))
                batches.append((b0, nb, cols, width, pair_gemm.tile_schedule(self.pairs, tile_kind, cols, offs.size,
                                                                             cp, threads)))
            return True, offs, None, pitch, cp, batches
        offs, pitch, taps = np.zeros(1, np.int64), padded_pitch(g), self.tap_offsets(g)
        images = _images_per_gemm(g.n, self.k, g.c_out, hw)
        for b0 in range(0, g.n, images):
            nb = min(images, g.n - b0)
            batches.append((b0, nb, nb * hw, nb * pitch,
                            pair_gemm.tile_schedule(self.pairs, tile_kind, nb * hw, 1, taps.shape[0] * cp, threads)))
        return False, offs, taps, pitch, cp, batches

    def _conv_shifted(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """Stride 1: ``Y = Σ_taps W_tap @ X_p[:, off_tap:]`` on the padded, centred input with
        rows of ``Wp = W + pads`` (module doc), accumulated by ``sgemm`` with ``beta = 1`` within
        a K-chunk; columns ``ox ≥ OW`` of each row are computed and never read."""
        top, left, bottom, right = g.pads
        wp = g.w + left + right
        dh, dw = g.dilations
        pitch = shifted_pitch(g)
        cin_g, cout_g = g.c_in // g.group, g.c_out // g.group
        nb_max = _images_per_gemm(g.n, max(g.c_in, g.c_out), 1, pitch)
        width = nb_max * pitch
        xp = np.empty((g.c_in, width), np.float32)
        y32 = np.empty((g.c_out, width), np.float32)  # columns past `cols` are never written nor read
        bounds = binding.bounds
        multi = len(bounds) > 2
        y64 = np.empty((g.c_out, width), np.float64) if multi else None
        chunks = max(1, min(threads, g.n * g.c_out))
        accs = np.empty((chunks, g.oh * g.ow), np.int64)
        status = np.full((chunks, 3), -1, np.int64)
        out3 = out.reshape(g.n, g.c_out, g.oh * g.ow)
        za = np.int32(binding.x_zero_point)
        k_g = self.k
        wa, xa, ya = self.wc.ctypes.data, xp.ctypes.data, y32.ctypes.data
        with _BlasThreads(1):
            for b0 in range(0, g.n, nb_max):
                nb = min(nb_max, g.n - b0)
                cols = (nb - 1) * pitch + g.oh * wp  # the last image's rows past OH are not needed
                _pad_centre(x, b0, nb, 0, top, left, wp, pitch, za, xp)
                for grp in range(g.group):
                    pieces = []
                    for k0, k1 in zip(bounds[:-1], bounds[1:]):
                        k0, k1, chunk = int(k0), int(k1), []
                        while k0 < k1:  # the pieces of the chunk, one kernel tap each
                            tap, c0 = divmod(k0, cin_g)
                            c1 = min(cin_g, c0 + k1 - k0)
                            off = (tap // g.kw) * dh * wp + (tap % g.kw) * dw
                            chunk.append((wa + 4 * (grp * cout_g * k_g + tap * cin_g + c0), k_g,
                                          xa + 4 * ((grp * cin_g + c0) * width + off), width, c1 - c0))
                            k0 += c1 - c0
                        pieces.append(chunk)
                    self._chunked(pieces, cout_g, ya + 4 * grp * cout_g * width, width,
                                  slice(grp * cout_g, (grp + 1) * cout_g), y32, y64, threads, cols)
                _conv_epilogue(y64 if multi else y32, b0, nb, pitch, wp, g.oh, g.ow, binding.bias, binding.unchecked,
                               rq_args, out3, accs, status, not multi)
        return status

    def matmul(self, a, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """The matmul into ``out`` (``[M, N]``, the kernel's signed view); returns the status array.
        ``Y[M, N] = a_c @ w_cᵀ``, its rows cut over the threads."""
        m, n, k = a.shape[0], self.wc.shape[0], self.k
        ac = np.empty((m, k), np.float32)
        _centre_rows(a, np.int32(binding.x_zero_point), ac)
        y32 = np.empty((m, n), np.float32)
        bounds = binding.bounds
        multi = len(bounds) > 2
        y = np.empty((m, n), np.float64) if multi else y32
        chunks = max(1, min(threads, m))
        accs = np.empty((chunks, n), np.int64)
        status = np.full((chunks, 3), -1, np.int64)
        wa, aa, ya = self.wc.ctypes.data, ac.ctypes.data, y32.ctypes.data

        def run(lo, hi):
            for ci, (k0, k1) in enumerate(zip(bounds[:-1], bounds[1:])):
                k0, k1 = int(k0), int(k1)
                _gemm(hi - lo, n, k1 - k0, aa + 4 * (lo * k + k0), k, wa + 4 * k0, k, ya + 4 * lo * n, n, 0.0,
                      b_transposed=True)
                if multi:
                    if ci == 0:
                        y[lo:hi] = y32[lo:hi]
                    else:
                        y[lo:hi] += y32[lo:hi]

        with _BlasThreads(1):
            _in_parts(run, m, threads)
        _matmul_epilogue(y, binding.bias, binding.unchecked, rq_args, out, accs, status)
        return status


# ---------------------------------------------------------------------------------------
# The Numba backend's calls: fast's signatures and checks, this path where it is chosen
# ---------------------------------------------------------------------------------------


def _run_matmul(a, w, za, zw, b, rq_args, out, name):
    m, k, n = a.shape[0], a.shape[1], w.shape[0]
    if not uses_sgemm(a.dtype, w.dtype, w.shape, m * n * k, m):
        return fast._run_matmul(a, w, za, zw, b, rq_args, out, name)
    layer = GemmLayer("matmul", w, zw, a.dtype, name)
    status = layer.matmul(a, layer.bind(za, b), rq_args, fast._signed_view(out), fast._threads(None))
    fast._raise_overflows(status, out.shape, name)
    return out


def _run_conv(x, w, zx, zw, b, g, rq_args, out, name):
    if not uses_sgemm(x.dtype, w.dtype, w.shape, g.n * _conv_macs(g), g.n * g.oh * g.ow, g.group):
        return fast._run_conv(x, w, zx, zw, b, g, rq_args, out, name)
    layer = GemmLayer("conv2d", w, zw, x.dtype, name, g.group)
    status = layer.conv(x, g, layer.bind(zx, b), rq_args, fast._signed_view(out), fast._threads(None))
    fast._raise_overflows(status, out.shape, name)
    return out


def matmul_int32(a, w, a_zero_point=0, w_zero_point=0, bias=None, *, name="matmul") -> np.ndarray:
    """:func:`refquant.kernels.fast.matmul_int32`, on this path when :func:`uses_sgemm`."""
    a, w, za, zw, b = fast._prepare_matmul(a, w, a_zero_point, w_zero_point, bias, name)
    out = np.empty((a.shape[0], w.shape[0]), np.int32)
    return _run_matmul(a, w, za, zw, b, fast._requant_args(None, 0), out, name)


def matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq: Requantizer, *, name="matmul") -> np.ndarray:
    """:func:`refquant.kernels.fast.matmul_requant`, on this path when :func:`uses_sgemm`."""
    a, w, za, zw, b = fast._prepare_matmul(a, w, a_zero_point, w_zero_point, bias, name)
    m, n = a.shape[0], w.shape[0]

    def unfused():
        _run_matmul(a, w, za, zw, b, fast._requant_args(None, 0), np.empty((m, n), np.int32), name)

    rq_args = fast._fused_requant_args(rq, n, unfused)
    return _run_matmul(a, w, za, zw, b, rq_args, np.empty((m, n), rq.out_dtype), name)


def conv2d_int32(x, w, x_zero_point=0, w_zero_point=0, bias=None, *, strides=None, pads=None,
                 dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """:func:`refquant.kernels.fast.conv2d_int32`, on this path when :func:`uses_sgemm`."""
    x, w, zx, zw, b, g = fast._prepare_conv(x, w, x_zero_point, w_zero_point, bias, strides, pads,
                                            dilations, group, auto_pad, name)
    out = np.empty((g.n, g.c_out, g.oh, g.ow), np.int32)
    return _run_conv(x, w, zx, zw, b, g, fast._requant_args(None, 0), out, name)


def conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq: Requantizer, *, strides=None,
                   pads=None, dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """:func:`refquant.kernels.fast.conv2d_requant`, on this path when :func:`uses_sgemm`."""
    x, w, zx, zw, b, g = fast._prepare_conv(x, w, x_zero_point, w_zero_point, bias, strides, pads,
                                            dilations, group, auto_pad, name)
    shape = (g.n, g.c_out, g.oh, g.ow)

    def unfused():
        _run_conv(x, w, zx, zw, b, g, fast._requant_args(None, 0), np.empty(shape, np.int32), name)

    rq_args = fast._fused_requant_args(rq, g.c_out, unfused)
    return _run_conv(x, w, zx, zw, b, g, rq_args, np.empty(shape, rq.out_dtype), name)


def requant_scratch_bytes(kind: str, a_shape, w_shape, *, a_dtype=np.int8, w_dtype=np.int8,
                          threads=None, strides=None, pads=None, dilations=None, group=1,
                          auto_pad="NOTSET") -> int:
    """Bytes of scratch one call allocates besides its output (an upper bound):
    :func:`scratch_arrays` where :func:`uses_sgemm` chooses this path, else
    :func:`refquant.kernels.fast.requant_scratch_bytes`.

    This path's arrays: the centred float32 weights, the padded input or the im2col, the
    float32 products ``[C_out, pixels]`` (matmul: ``[M, N]``, an O(M·N) buffer), their float64
    sum when K may need several chunks (``K·255² > 2**24``; counted whether or not the weights
    do), per-thread int64 rows, and the chunk boundaries with their prefix sums. For
    1×64×56×56 → 64, 3×3, pad 1, two threads: 3 798 840 bytes (3.6 MiB; the tile kernel's
    191 984) — speed bought with memory.
    """
    if kind in ("matmul", "conv2d"):
        threads_ = fast._threads(threads)
        if kind == "matmul":
            (m, k), (n, _) = a_shape, w_shape
            if uses_sgemm(a_dtype, w_dtype, w_shape, int(m) * int(n) * int(k), int(m)):
                return fast._nbytes(scratch_arrays("matmul", (int(m), int(k)), (int(n), int(k)), None, threads_))
        else:
            g = conv_geometry(a_shape, w_shape, strides=strides, pads=pads, dilations=dilations,
                              group=group, auto_pad=auto_pad, name="requant_scratch_bytes")
            if uses_sgemm(a_dtype, w_dtype, w_shape, g.n * _conv_macs(g), g.n * g.oh * g.ow, g.group):
                return fast._nbytes(scratch_arrays("conv2d", a_shape, w_shape, g, threads_))
    return fast.requant_scratch_bytes(kind, a_shape, w_shape, a_dtype=a_dtype, w_dtype=w_dtype, threads=threads,
                                      strides=strides, pads=pads, dilations=dilations, group=group,
                                      auto_pad=auto_pad)
