"""Exact-by-bound float32 GEMM: 8-bit Conv and MatMul accumulators from BLAS ``sgemm``, bit-exact.

Computes, for 8-bit operands, the same numbers as :mod:`refquant.kernels.reference` and the
tile kernels of :mod:`refquant.kernels.fast`::

    acc[m, n] = Σ_k (a[m, k] - z_a) · (w[n, k] - z_w[n]) + bias[n]

with the dot product done by NumPy's float32 matrix product (OpenBLAS ``sgemm``, which on an
AVX2 host runs several times faster than any int8 loop Numba can emit), and the bias, the
int32 overflow check and the requantization in a Numba epilogue.

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
Conv (NCHW in, OIHW weights, out NCHW): a Caffe-style ``im2col`` ``P[K_g, cols]`` per group
(row ``(c, i, j)`` = the input plane ``c`` of the group shifted by kernel tap ``(i, j)`` and
strided, centred, zero where it reads padding; columns are the output pixels of up to
``images`` images side by side), filled by :func:`_im2col` with ``prange`` over rows; then
``Y[C_out_g, cols] = W_c[C_out_g, K_g] @ P`` per K-chunk — the output is already channel-major,
so the epilogue (:func:`_conv_epilogue`, ``prange`` over (image, channel) rows) writes NCHW
directly. MatMul ``a [M, K]``, ``w [N, K]``: ``Y = a_c @ w_c.T`` per K-chunk,
:func:`_matmul_epilogue` over rows.

The epilogues run, per accumulator, the same steps as :mod:`fast`'s kernels
(``fast._check_int32``, ``fast._store_channel`` / ``fast._store_row`` with the same
requantizer arguments), so the outputs and errors — the first overflowing accumulator in C
order, the fixed-point shift overflow — are those of the other backends.

Threads: refquant's thread count is Numba's (``numba.set_num_threads``, the CLI's
``--threads``, ``NUMBA_NUM_THREADS``). Each call runs NumPy's BLAS with the same count
(through ``threadpoolctl`` when it is installed, restored after the call; without it BLAS keeps
its own setting). The results do not depend on either count (the bound above).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import njit, prange

from . import fast

__all__ = ["EXACT_LIMIT", "GemmLayer", "activation_bound", "chunk_bounds", "eligible", "uses_sgemm",
           "scratch_arrays"]

EXACT_LIMIT = 2**24    # every integer of magnitude ≤ 2**24 is a float32
_LIMIT = EXACT_LIMIT   # the per-chunk bound actually used; tests lower it to force several chunks
USE_SGEMM = True       # set to False to run every 8-bit layer on fast's tile kernels
# Below these sizes the tile kernels' lower fixed cost (about 0.1 ms less per call) wins, and
# with few output columns sgemm streams four bytes per weight instead of one (measured on
# AMD Zen 3, one thread: bench/RESULTS.md, "Exact-by-bound float32 GEMM").
MIN_MACS = 1 << 23          # multiply-adds of one conv call (all images)
MIN_MATMUL_MACS = 1 << 19   # multiply-adds of one matmul call
MIN_COLUMNS = 16            # output pixels of one conv call (all images)
_FORCE_SHIFTED = None  # tests set True/False to run every stride-1 conv on one layout
# columns of one im2col: as many whole images as keep P and Y under this many float32 values
_MAX_COLUMN_VALUES = 1 << 22


def activation_bound(x_dtype, x_zero_point) -> int:
    """``A_max = max |a - z_a|`` over the values of ``x_dtype`` (and 0, the padding)."""
    info = np.iinfo(np.dtype(x_dtype))
    za = int(x_zero_point)
    return max(za - int(info.min), int(info.max) - za, 0)


def eligible(a_dtype, w_dtype, w_shape) -> bool:
    """8-bit operands, and not a depthwise conv (``fast``'s depthwise kernel runs those)."""
    a_dtype, w_dtype = np.dtype(a_dtype), np.dtype(w_dtype)
    return (USE_SGEMM and a_dtype.itemsize == 1 and w_dtype.itemsize == 1
            and a_dtype.kind in "iu" and w_dtype.kind in "iu"
            and not (len(w_shape) == 4 and fast._uses_depthwise(tuple(w_shape), a_dtype, w_dtype)))


def uses_sgemm(a_dtype, w_dtype, w_shape, macs: int, columns: int) -> bool:
    """The exact float32 path runs :func:`eligible` operands of a call with at least
    :data:`MIN_MACS` multiply-adds and :data:`MIN_COLUMNS` output pixels (a conv, ``w_shape``
    OIHW) or :data:`MIN_MATMUL_MACS` multiply-adds (a matmul)."""
    if len(w_shape) == 4:
        return eligible(a_dtype, w_dtype, w_shape) and macs >= MIN_MACS and columns >= MIN_COLUMNS
    return eligible(a_dtype, w_dtype, w_shape) and macs >= MIN_MATMUL_MACS


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


def shifted_pitch(g) -> int:
    """Columns of one image's padded input: ``(H + pads)·(W + pads)`` plus the slack the
    last kernel tap's shifted view reads past it."""
    return (g.h + g.pads[0] + g.pads[2]) * (g.w + g.pads[1] + g.pads[3]) + (g.kw - 1) * g.dilations[1]


def _may_need_chunks(k: int) -> bool:
    """Whether some 8-bit operands of inner size ``k`` can need more than one chunk."""
    return k * 255 * 255 > _LIMIT


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
        rows, cols, chunks = c_out, _images_per_gemm(g.n, k, c_out, hw) * hw, max(1, min(threads, g.n * c_out))
        arrays = {"centred_weights": ((c_out, k), 4), "columns": ((k, cols), 4), "accumulators": ((chunks, hw), 8)}
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
            out[m, k] = np.float32(np.int32(a[m, k]) - za)


@njit(cache=True)
def _centre_weights(w, zw, out):
    """``out[n, k] = float32(w[n, k] - z_w[n])``."""
    for n in range(w.shape[0]):
        for k in range(w.shape[1]):
            out[n, k] = np.float32(np.int32(w[n, k]) - zw[n])


@njit(parallel=True, cache=True)
def _im2col(x, b0, nb, c0, geometry, oh, ow, za, p):
    """``p[(i·kw + j)·C_g + c, bl·OH·OW + oy·OW + ox] = x[b0 + bl, c0 + c, iy, ix] - z_a`` with
    ``iy = oy·sh + i·dh - top``, ``ix = ox·sw + j·dw - left``, and 0 (real zero) outside."""
    sh, sw, dh, dw, top, left, kh, kw = geometry
    height, width = x.shape[2], x.shape[3]
    hw = oh * ow
    cin_g = p.shape[0] // (kh * kw)
    for r in prange(p.shape[0]):
        c, tap = r % cin_g, r // cin_g
        i, j = tap // kw, tap % kw
        row = p[r]
        off = j * dw - left
        lo = 0 if off >= 0 else (-off + sw - 1) // sw
        lo = min(lo, ow)
        hi = max(0, min(ow, (width - 1 - off) // sw + 1))
        hi = max(hi, lo)
        for bl in range(nb):
            plane = x[b0 + bl, c0 + c]
            for oy in range(oh):
                iy = oy * sh + i * dh - top
                d = bl * hw + oy * ow
                if iy < 0 or iy >= height:
                    for ox in range(ow):
                        row[d + ox] = 0.0
                    continue
                src = plane[iy]
                for ox in range(lo):
                    row[d + ox] = 0.0
                if sw == 1:
                    for ox in range(lo, hi):
                        row[d + ox] = np.float32(np.int32(src[ox + off]) - za)
                else:
                    for ox in range(lo, hi):
                        row[d + ox] = np.float32(np.int32(src[ox * sw + off]) - za)
                for ox in range(hi, ow):
                    row[d + ox] = 0.0


@njit(parallel=True, cache=True)
def _pad_centre(x, b0, nb, c0, top, left, wp, pitch, za, xp):
    """``xp[c, bl·pitch + (top + iy)·wp + left + ix] = x[b0 + bl, c0 + c, iy, ix] - z_a``; every
    other column (the padding, and the slack after each image) 0 — real zero."""
    height, width = x.shape[2], x.shape[3]
    for c in prange(xp.shape[0]):
        row = xp[c]
        for bl in range(nb):
            base = bl * pitch
            for e in range(pitch):
                row[base + e] = 0.0
            plane = x[b0 + bl, c0 + c]
            for iy in range(height):
                d = base + (top + iy) * wp + left
                src = plane[iy]
                for ix in range(width):
                    row[d + ix] = np.float32(np.int32(src[ix]) - za)


@njit(parallel=True, cache=True)
def _conv_epilogue(y, b0, nb, image_pitch, row_pitch, oh, ow, bias, rq, out, accs, status):
    """Per (image, channel) row: ``acc = int64(y) + bias``, the int32 check and the store.
    ``out`` is ``[N, C_out, OH·OW]``; output ``(bl, n, oy, ox)`` is
    ``y[n, bl·image_pitch + oy·row_pitch + ox]``."""
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
            for oy in range(oh):
                base = bl * image_pitch + oy * row_pitch
                for ox in range(ow):
                    acc[oy * ow + ox] = np.int64(src[base + ox]) + bn
            flat0 = ((b0 + bl) * c_out + n) * hw
            fast._check_int32(acc, hw, flat0, status, t)
            fast._store_channel(acc, n, rq, out[b0 + bl, n], flat0, status, t)


@njit(parallel=True, cache=True)
def _matmul_epilogue(y, bias, rq, out, accs, status):
    """Per row ``m``: ``acc = int64(y[m]) + bias``, the int32 check and the store."""
    m_total, n_total = y.shape
    chunks = status.shape[0]
    for t in prange(chunks):
        acc = accs[t]
        m0, m1 = fast._chunk_bounds(m_total, chunks, t)
        for m in range(m0, m1):
            src = y[m]
            for e in range(n_total):
                acc[e] = np.int64(src[e]) + bias[e]
            fast._check_int32(acc, n_total, m * n_total, status, t)
            fast._store_row(acc, 0, rq, out[m], m * n_total, status, t)


# ---------------------------------------------------------------------------------------
# BLAS threads
# ---------------------------------------------------------------------------------------

_SGEMM = None  # scipy.linalg.cython_blas.sgemm (Fortran BLAS), through ctypes


def _sgemm():
    global _SGEMM
    if _SGEMM is None:
        from numba.extending import get_cython_function_address

        address = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
        _SGEMM = ctypes.CFUNCTYPE(None, *(ctypes.c_void_p,) * 13)(address)
    return _SGEMM


_N = ctypes.c_char(b"N")


def _gemm(m, n, k, a, lda, b, ldb, c, ldc, beta):
    """Row-major ``C[m, n] = A[m, k] @ B[k, n] + beta · C`` on float32 buffers given by address
    and leading dimension (``sgemm`` is column-major: it computes ``Cᵀ = Bᵀ Aᵀ``)."""
    if m == 0 or n == 0:
        return
    i = ctypes.c_int
    _sgemm()(ctypes.byref(_N), ctypes.byref(_N), ctypes.byref(i(n)), ctypes.byref(i(m)), ctypes.byref(i(k)),
             ctypes.byref(ctypes.c_float(1.0)), b, ctypes.byref(i(ldb)), a, ctypes.byref(i(lda)),
             ctypes.byref(ctypes.c_float(beta)), c, ctypes.byref(i(ldc)))


_BLAS = None  # threadpoolctl's controllers of the loaded BLAS libraries ([] without threadpoolctl)


def _blas_controllers() -> list:
    global _BLAS
    if _BLAS is None:
        _sgemm()  # scipy's BLAS is loaded before the libraries are listed
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS = []
        else:
            _BLAS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _BLAS


class _BlasThreads:
    """Run BLAS with ``threads`` threads inside the block, then restore each library's count."""

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
    """``bias`` (int64 ``[C_out]``), ``z_a`` and the K-chunk boundaries for ``A_max(z_a)``."""

    __slots__ = ("x_zero_point", "bias", "bounds")

    def __init__(self, x_zero_point, bias, bounds):
        self.x_zero_point, self.bias, self.bounds = x_zero_point, bias, bounds


class GemmLayer:
    """A Conv (OIHW) or MatMul (``[N, K]``) weight centred to float32 for the sgemm path.

    ``zw`` are the weight zero points as :func:`~refquant.kernels.reference.check_operands`
    returns them (validated by the caller).
    """

    def __init__(self, kind: str, w: np.ndarray, zw, x_dtype, name: str):
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

    def bind(self, x_zero_point: int, bias: np.ndarray) -> GemmBinding:
        bounds = chunk_bounds(self.wc, activation_bound(self.x_dtype, x_zero_point))
        return GemmBinding(int(x_zero_point), np.ascontiguousarray(bias, np.int64), bounds)

    def _products(self, a_g, rows, bounds, y32, y64):
        """``Σ_chunks wc[rows, chunk] @ a_g[chunk]`` into ``y32[rows]`` (one chunk) or ``y64[rows]``."""
        wc = self.wc[rows]
        if len(bounds) == 2:
            np.matmul(wc, a_g, out=y32[rows])
            return
        for ci in range(len(bounds) - 1):
            k0, k1 = int(bounds[ci]), int(bounds[ci + 1])
            np.matmul(wc[:, k0:k1], a_g[k0:k1], out=y32[rows])
            if ci == 0:
                y64[rows] = y32[rows]
            else:
                y64[rows] += y32[rows]

    def _conv_im2col(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        hw = g.oh * g.ow
        k_g, cout_g = self.k, g.c_out // g.group
        nb_max = _images_per_gemm(g.n, k_g, g.c_out, hw)
        cols_max = nb_max * hw
        p = np.empty((k_g, cols_max), np.float32)
        y32 = np.empty((g.c_out, cols_max), np.float32)
        multi = len(binding.bounds) > 2
        y64 = np.empty((g.c_out, cols_max), np.float64) if multi else None
        chunks = max(1, min(threads, g.n * g.c_out))
        accs = np.empty((chunks, hw), np.int64)
        status = np.full((chunks, 3), -1, np.int64)
        geometry = (g.strides[0], g.strides[1], g.dilations[0], g.dilations[1], g.pads[0], g.pads[1],
                    g.kh, g.kw)
        out3 = out.reshape(g.n, g.c_out, hw)
        za = np.int32(binding.x_zero_point)
        with _BlasThreads(threads):
            for b0 in range(0, g.n, nb_max):
                nb = min(nb_max, g.n - b0)
                cols = nb * hw
                pv = p[:, :cols] if cols < cols_max else p
                y32v = y32[:, :cols] if cols < cols_max else y32
                y64v = (y64[:, :cols] if cols < cols_max else y64) if multi else None
                for grp in range(g.group):
                    _im2col(x, b0, nb, grp * (g.c_in // g.group), geometry, g.oh, g.ow, za, pv)
                    self._products(pv, slice(grp * cout_g, (grp + 1) * cout_g), binding.bounds, y32v, y64v)
                _conv_epilogue(y64v if multi else y32v, b0, nb, hw, g.ow, g.oh, g.ow, binding.bias, rq_args, out3,
                               accs, status)
        return status

    def conv(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """The conv into ``out`` (NCHW, the kernel's signed view); returns the status array."""
        if use_shifted(g):
            return self._conv_shifted(x, g, binding, rq_args, out, threads)
        return self._conv_im2col(x, g, binding, rq_args, out, threads)

    def _conv_shifted(self, x, g, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """Stride 1: ``Y = Σ_taps W_tap @ X_p[:, off_tap:]`` on the padded, centred input with
        rows of ``Wp = W + pads`` (module doc), accumulated by ``sgemm`` with ``beta = 1`` within
        a K-chunk; columns ``ox ≥ OW`` of each row are computed and never read."""
        top, left, bottom, right = g.pads
        hp, wp = g.h + top + bottom, g.w + left + right
        dh, dw = g.dilations
        pitch = shifted_pitch(g)
        cin_g, cout_g, taps = g.c_in // g.group, g.c_out // g.group, g.kh * g.kw
        nb_max = _images_per_gemm(g.n, max(g.c_in, g.c_out), 1, pitch)
        width = nb_max * pitch
        xp = np.empty((g.c_in, width), np.float32)
        y32 = np.zeros((g.c_out, width), np.float32)
        bounds = binding.bounds
        multi = len(bounds) > 2
        y64 = np.empty((g.c_out, width), np.float64) if multi else None
        chunks = max(1, min(threads, g.n * g.c_out))
        accs = np.empty((chunks, g.oh * g.ow), np.int64)
        status = np.full((chunks, 3), -1, np.int64)
        out3 = out.reshape(g.n, g.c_out, g.oh * g.ow)
        za = np.int32(binding.x_zero_point)
        wc, k_g = self.wc, self.k
        wa, xa, ya = wc.ctypes.data, xp.ctypes.data, y32.ctypes.data
        with _BlasThreads(threads):
            for b0 in range(0, g.n, nb_max):
                nb = min(nb_max, g.n - b0)
                cols = (nb - 1) * pitch + g.oh * wp  # the last image's rows past OH are not needed
                _pad_centre(x, b0, nb, 0, top, left, wp, pitch, za, xp)
                for grp in range(g.group):
                    rows = slice(grp * cout_g, (grp + 1) * cout_g)
                    for ci in range(len(bounds) - 1):
                        k0, k1 = int(bounds[ci]), int(bounds[ci + 1])
                        beta = 0.0
                        while k0 < k1:  # the pieces of the chunk, one kernel tap each
                            tap, c0 = divmod(k0, cin_g)
                            c1 = min(cin_g, c0 + k1 - k0)
                            off = (tap // g.kw) * dh * wp + (tap % g.kw) * dw
                            _gemm(cout_g, cols, c1 - c0,
                                  wa + 4 * (grp * cout_g * k_g + tap * cin_g + c0), k_g,
                                  xa + 4 * ((grp * cin_g + c0) * width + off), width,
                                  ya + 4 * (grp * cout_g * width), width, beta)
                            beta = 1.0
                            k0 += c1 - c0
                        if multi:
                            if ci == 0:
                                y64[rows] = y32[rows]
                            else:
                                y64[rows] += y32[rows]
                _conv_epilogue(y64 if multi else y32, b0, nb, pitch, wp, g.oh, g.ow, binding.bias, rq_args, out3,
                               accs, status)
        return status

    def matmul(self, a, binding: GemmBinding, rq_args, out, threads: int) -> np.ndarray:
        """The matmul into ``out`` (``[M, N]``, the kernel's signed view); returns the status array."""
        m, n = a.shape[0], self.wc.shape[0]
        ac = np.empty((m, self.k), np.float32)
        _centre_rows(a, np.int32(binding.x_zero_point), ac)
        y32 = np.empty((m, n), np.float32)
        chunks = max(1, min(threads, m))
        accs = np.empty((chunks, n), np.int64)
        status = np.full((chunks, 3), -1, np.int64)
        bounds = binding.bounds
        wt = self.wc.T
        with _BlasThreads(threads):
            if len(bounds) == 2:
                np.matmul(ac, wt, out=y32)
                y = y32
            else:
                y = np.empty((m, n), np.float64)
                for ci in range(len(bounds) - 1):
                    k0, k1 = int(bounds[ci]), int(bounds[ci + 1])
                    np.matmul(ac[:, k0:k1], wt[k0:k1], out=y32)
                    if ci == 0:
                        y[...] = y32
                    else:
                        y += y32
        _matmul_epilogue(y, binding.bias, rq_args, out, accs, status)
        return status
