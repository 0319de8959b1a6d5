"""Exact convolutions from 8-bit operands packed into int32 lanes: AVX2 register tiles, requantized per tile.

Computes, for 8-bit operands, the same numbers as :mod:`refquant.kernels.reference`::

    acc[b, n, oy, ox] = Σ_tap Σ_c (x[b, c, oy·sh + i·dh - top, ox·sw + j·dw - left] - z_x) · (w[n, c, i, j] - z_w[n]) + bias[n]

(``tap = (i, j)``; a position in the padding reads the real zero ``z_x``), then the
requantization of :mod:`refquant.kernels.fast` (the same modes, checks and errors).

Layouts
-------
:mod:`exact_gemm`'s two: for stride 1 the *shifted* layout — the input padded once, a plane of
``pitch`` columns per image in rows of ``Wp = W + pads``, output ``(oy, ox)`` at column ``oy·Wp +
ox`` and ``Y[n, ·] = Σ_tap W_tap[n, :] @ X[:, off_tap + ·]`` with ``off_tap = i·dh·Wp + j·dw``
(columns ``ox ≥ OW`` computed, never stored) — else an *im2col* whose rows are (tap, channel
group) and whose columns are the output pixels, read with the one offset 0. Input channels
are packed into int32 lanes in groups, the weights the same way in (tap, group) order; a
missing channel (``C_in`` not a multiple of the group) has weight 0.

Three tiles
-----------
* **Pairs** (any 8-bit operands). ``X2[q, p] = (x_c[2q, p], x_c[2q+1, p])``, the centred
  activations ``x_c = x - z_x`` (padding 0) as two int16, and ``W2[n, tap, q] = (w_c[n, tap,
  2q], w_c[n, tap, 2q+1])``, ``w_c = w - z_w[n]``. One ``vpmaddwd`` of a broadcast ``W2`` word
  with eight columns of ``X2`` adds, per int32 lane, two products: 16 multiply-adds per
  instruction. :data:`PAIR_ROWS` output channels × 16 columns: twelve accumulators.
  *Exact* because ``|x_c|, |w_c| ≤ 255`` are int16, each product is below 2**16 (no pair sum
  reaches the one case ``vpmaddwd`` wraps, ``-32768·-32768`` twice), and every partial sum of
  the int32 lanes is a sum of a subset of the products, bounded by ``A_max · max_n Σ_k |w_c[n,
  k]|`` (``A_max = max(z_x - lo, hi - z_x)``). The tile is used only when that bound is ≤ 2**31
  - 1 (:func:`pairs_exact`; for 8-bit operands it holds up to K = 33 025 whatever the values).
* **Quads** (u8 × s8 bytes, when the weights allow). ``X4[q, p]`` holds four activation bytes
  ``a' = x ^ flip`` (uint8 inputs as they are; int8 inputs with the top bit flipped, i.e.
  ``x + 128`` as a uint8) and ``W4[n, tap, q]`` four centred weights ``w_c`` as int8.
  ``vpmaddubsw`` multiplies 32 (uint8, int8) byte pairs and adds neighbours into 16 int16 lanes,
  saturating; ``vpmaddwd`` with ones adds neighbouring int16 into 8 int32 lanes: 32
  multiply-adds per two instructions, and half the loads and broadcasts of the pairs per
  multiply-add (:data:`QUAD_ROWS` × 16 columns, eight accumulators). *Exact* when (a) every
  ``w_c`` fits int8 and each neighbour pair ``(w_c[4q + 2m], w_c[4q + 2m + 1])`` has ``|w_0| +
  |w_1| ≤ 128``, so ``|a'_0 w_0 + a'_1 w_1| ≤ 255 · 128 = 32 640 < 2**15`` never saturates, and
  (b) ``255 · max_n Σ_k |w_c[n, k]| ≤ 2**31 - 1`` bounds every int32 partial sum (checked when
  the weights are packed: :attr:`PackedWeights.quads`). The tile sums ``D = Σ a' · w_c`` over the
  raw bytes; the padding holds the byte ``z' = z_x + 128·[int8 input]`` (real zero), and the
  zero point comes back as ``acc = D + (bias[n] - z' · S[n])``, ``S[n] = Σ_k w_c[n, k]``, in
  int64 (:meth:`PackedWeights.quad_bias`). 7-bit weights (``|w_c| ≤ 64``, onnxruntime's
  reduce-range rule for its ``vpmaddubsw`` kernels) always qualify.
* **VNNI quads** (hosts with AVX-512 VNNI and VL: :data:`HOST_HAS_VNNI`). The quads' operands
  and bias, each step one ``vpdpbusd``: 32 (uint8, int8) products added in fours to the int32
  lanes with no int16 step, so no saturation — (a) drops to "every ``w_c`` fits int8", (b)
  stays (:attr:`PackedWeights.vnni`). :data:`VNNI_ROWS` output channels × 16 columns, sixteen
  accumulators of the 32 AVX-512 registers. :meth:`PackedWeights.kind` chooses the tile.

Then, per tile: the bias is added in int64 and the int32 check made on that (skipped where
:attr:`exact_gemm.GemmBinding.unchecked` proves it), and the requantization of the other
backends runs on the tile's sums while they are in L1; with the float32 mode and sums proven
inside int32, the one-pass int32/float32 form of :mod:`exact_gemm`.

Tasks and threads
-----------------
The columns are cut into panels of :data:`PANEL` and the output channels into groups of whole
tiles; a task is one (panel, group) pair (``prange``), and computes each tile's ``rows × PANEL``
sums into its own int32 buffer, then requantizes them: no ``[C_out, columns]`` product array.
On the im2col layout K runs in blocks of :data:`K_BLOCK` rows that stay in L2. Every output is
formed by one task in one fixed order, so the bits do not depend on the thread count; calls
below :data:`SERIAL_MACS` (conversion: :data:`SERIAL_VALUES`) run on the calling thread.

Only hosts whose CPU has AVX2 take these paths (:data:`HOST_HAS_AVX2`), the VNNI tile only
hosts with AVX-512 VNNI; elsewhere :mod:`exact_gemm`'s ``sgemm`` path runs. Numba's on-disk
cache is keyed by the host CPU and its features, so a cached kernel is never loaded on a
machine that cannot run it.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from . import fast
from .vnni import HOST_HAS_VNNI

__all__ = ["tile_schedule", "HOST_HAS_AVX2", "HOST_HAS_VNNI", "PAIRS", "QUADS", "VNNI", "PAIR_ROWS", "QUAD_ROWS",
           "VNNI_ROWS",
           "TILE_COLUMNS", "PANEL", "pair_tile", "quad_tile", "vnni_tile",
           "PackedWeights", "pairs_exact", "pack_input", "run_tiles"]

PAIRS, QUADS, VNNI = 0, 1, 2  # the tiles (module doc), as run_tiles' ``kind``
PAIR_ROWS = 6       # output channels per pair tile (12 accumulators, 2 operand vectors, 1 broadcast)
QUAD_ROWS = 4       # per quad tile (8 accumulators, the ones vector, products: measured fastest)
VNNI_ROWS = 8       # per VNNI tile (16 accumulators of the 32 AVX-512 registers)
TILE_ROWS = (PAIR_ROWS, QUAD_ROWS, VNNI_ROWS)  # by kind
_MAX_ROWS = max(TILE_ROWS)
_BYTE_ROWS = 8      # the byte weights' rows are padded to a multiple of both byte tiles' rows
_VECTORS = 2        # 8-lane int32 vectors per tile row
TILE_COLUMNS = 8 * _VECTORS
PANEL = 128         # columns of one task (a multiple of TILE_COLUMNS)
# packed rows of one block of K on the im2col layout: a panel's block, 256·PANEL int32 (128 KiB),
# stays in L2 while every column tile of the panel reads it
K_BLOCK = 256
# Below these sizes a call runs on the calling thread: waking Numba's workqueue pool costs 48–126
# µs per parallel region on an idle machine (refquant.kernels.grain), about the work of 2**22
# multiply-adds here, and the conversion of 2**16 columns.
SERIAL_MACS = 1 << 22
SERIAL_VALUES = 1 << 16
_INT32_MAX = 2**31 - 1


def _host_has_avx2() -> bool:
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # not every platform reports features
        return False
    return bool(features.get("avx2", False))


HOST_HAS_AVX2 = _host_has_avx2()


def _tile_intrinsic(kind: int):
    """The pair tile (``vpmaddwd``), the quad tile (``vpmaddubsw`` then ``vpmaddwd`` with ones)
    or the VNNI tile (``vpdpbusd``). On a host without AVX-512 VNNI the VNNI tile compiles to
    the quad tile's instructions, so that :func:`_task` compiles everywhere; :func:`run_tiles`
    never selects it there."""
    rows, quads = TILE_ROWS[kind], kind != PAIRS
    dpbusd_ok = kind == VNNI and HOST_HAS_VNNI
    name = ("pair_tile", "quad_tile", "vnni_tile")[kind]

    def typer(typingctx, x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate):
        if not HOST_HAS_AVX2:
            raise TypingError(f"{name} needs a CPU with AVX2")
        for what, arr, ndim, dtype in (("x", x, 1, types.int32), ("w", w, 1, types.int32),
                                       ("offs", offs, 1, types.int64), ("y", y, 2, types.int32)):
            if not (isinstance(arr, types.Array) and arr.ndim == ndim and arr.layout == "C" and arr.dtype == dtype):
                raise TypingError(f"{name}: {what} must be a {ndim}-D C-contiguous {dtype} array, got {arr}")
        sig = types.none(x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i32, i64 = ir.IntType(32), ir.IntType(64)
            v8i32, v16i16, v32i8 = ir.VectorType(i32, 8), ir.VectorType(ir.IntType(16), 16), ir.VectorType(ir.IntType(8), 32)
            pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                   "llvm.x86.avx2.pmadd.wd")
            maddubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                     "llvm.x86.avx2.pmadd.ub.sw")
            if dpbusd_ok:
                dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v8i32, v8i32, v8i32]),
                                                        "llvm.x86.avx512.vpdpbusd.256")
            operand = v32i8 if quads else v16i16
            ones = ir.Constant(v16i16, [1] * 16)
            xcol, width, wrow0, kp, cp, ycol, q0, q1 = (context.cast(builder, args[i], tys[i], types.int64)
                                                        for i in (1, 2, 4, 5, 7, 9, 10, 11))
            accumulate = context.cast(builder, args[12], tys[12], types.boolean)
            xa = context.make_array(tys[0])(context, builder, args[0])
            wa = context.make_array(tys[3])(context, builder, args[3])
            oa = context.make_array(tys[6])(context, builder, args[6])
            ya = context.make_array(tys[8])(context, builder, args[8])
            taps = builder.extract_value(oa.shape, 0)
            row_stride = builder.extract_value(ya.strides, 0)
            base = builder.bitcast(ya.data, ir.PointerType(ir.IntType(8)))

            def y_vector(r, v):
                row = builder.bitcast(builder.gep(base, [builder.mul(ir.Constant(i64, r), row_stride)]),
                                      ir.PointerType(i32))
                return builder.bitcast(builder.gep(row, [builder.add(ycol, ir.Constant(i64, 8 * v))]),
                                       ir.PointerType(v8i32))

            accs = [cgutils.alloca_once_value(builder, ir.Constant(v8i32, None)) for _ in range(rows * _VECTORS)]
            with builder.if_then(accumulate):
                for r in range(rows):
                    for v in range(_VECTORS):
                        builder.store(builder.load(y_vector(r, v), align=4), accs[r * _VECTORS + v])
            w_rows = [builder.gep(wa.data, [builder.mul(builder.add(wrow0, ir.Constant(i64, r)), kp)])
                      for r in range(rows)]
            splat = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
            with cgutils.for_range(builder, taps) as tap:
                x_tap = builder.gep(xa.data, [builder.add(xcol, builder.load(builder.gep(oa.data, [tap.index])))])
                w_tap = builder.mul(tap.index, cp)
                with cgutils.for_range_slice(builder, q0, q1, ir.Constant(i64, 1), inc=True) as (q, _):
                    x_row = builder.gep(x_tap, [builder.mul(q, width)])
                    xs = [builder.bitcast(builder.load(builder.bitcast(builder.gep(x_row, [ir.Constant(i64, 8 * v)]),
                                                                         ir.PointerType(v8i32)), align=4), operand)
                          for v in range(_VECTORS)]
                    w_index = builder.add(w_tap, q)
                    for r in range(rows):
                        scalar = builder.load(builder.gep(w_rows[r], [w_index]))
                        vec = builder.insert_element(ir.Constant(v8i32, None), scalar, ir.Constant(i32, 0))
                        wv = builder.bitcast(builder.shuffle_vector(vec, vec, splat), operand)
                        for v in range(_VECTORS):
                            acc = accs[r * _VECTORS + v]
                            if dpbusd_ok:  # the activation bytes are the unsigned operand
                                builder.store(builder.call(dpbusd, [builder.load(acc), builder.bitcast(xs[v], v8i32),
                                                                    builder.bitcast(wv, v8i32)]), acc)
                                continue
                            if quads:
                                sums = builder.call(pmadd, [builder.call(maddubs, [xs[v], wv]), ones])
                            else:
                                sums = builder.call(pmadd, [xs[v], wv])
                            builder.store(builder.add(builder.load(acc), sums), acc)
            for r in range(rows):
                for v in range(_VECTORS):
                    builder.store(builder.load(accs[r * _VECTORS + v]), y_vector(r, v), align=4)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = name
    return intrinsic(typer)


pair_tile = _tile_intrinsic(PAIRS)
pair_tile.__doc__ = """``y[r, ycol + e] (+)= Σ_t Σ_{q0 ≤ q < q1} X2[q, xcol + offs[t] + e] · W2[wrow0 + r, t·cp + q]``
for ``r < PAIR_ROWS``, ``e < TILE_COLUMNS``, each term a ``vpmaddwd`` pair sum (module doc);
``accumulate``: add to ``y``'s values (a later block of K), else overwrite them. ``x`` is the
packed input flattened (int32, rows of ``width``), ``w`` the packed weights flattened (int32,
rows of ``kp = taps·cp``), ``offs`` the int64 tap offsets, ``y`` a 2-D C-contiguous int32
array of at least ``PAIR_ROWS`` rows."""
quad_tile = _tile_intrinsic(QUADS)
quad_tile.__doc__ = """:func:`pair_tile` on byte quads: each term ``vpmaddwd(vpmaddubsw(X4, W4), 1)``, four
(uint8, int8) products; ``QUAD_ROWS`` rows."""
vnni_tile = _tile_intrinsic(VNNI)
vnni_tile.__doc__ = """:func:`pair_tile` on byte quads: each term one ``vpdpbusd`` (four (uint8, int8) products
added to the int32 lane without saturation); ``VNNI_ROWS`` rows. Only on :data:`HOST_HAS_VNNI`."""


# ---------------------------------------------------------------------------------------
# Operands
# ---------------------------------------------------------------------------------------


def pairs_exact(a_max: int, row_bound: int) -> bool:
    """Whether every int32 partial sum of the pair tile is exact: ``A_max · max_n Σ_k |w_c[n, k]|
    ≤ 2**31 - 1``."""
    return a_max * row_bound <= _INT32_MAX


class PackedWeights:
    """A conv weight (OIHW, one group) packed for the tiles (module doc).

    ``w2``: int32 ``[C_out rounded up to PAIR_ROWS, taps · cp]``, ``cp = ⌈C_in/2⌉``. ``vnni``:
    whether the byte tiles' int32 lanes are exact for these weights (every ``w_c`` an int8,
    ``255 · max_n Σ_k |w_c[n, k]| ≤ 2**31 - 1``); ``quads``: that and the quad tile's neighbour
    rule. Where ``vnni``: ``w4``, int32 ``[C_out rounded up to _BYTE_ROWS, taps · cq]``, ``cq =
    ⌈C_in/4⌉``, and ``sums`` (int64 ``S[n] = Σ_k w_c[n, k]``). Rows past ``C_out`` and missing
    channels are 0."""

    def __init__(self, w: np.ndarray, zw: np.ndarray):
        c_out, c_in, kh, kw = w.shape
        self.c_out, self.taps = c_out, kh * kw
        centred = (w.astype(np.int16).transpose(0, 2, 3, 1).reshape(c_out, kh * kw, c_in)
                   - np.asarray(zw).astype(np.int16)[:, None, None])  # |w - z_w| ≤ 255
        self.cp = (c_in + 1) // 2
        self.w2 = self._packed(centred, np.int16, 2, PAIR_ROWS)
        self.cq = (c_in + 3) // 4
        magnitude = np.abs(centred.astype(np.int32))
        neighbours = np.zeros((c_out, kh * kw, 2 * self.cp), np.int32)
        neighbours[:, :, :c_in] = magnitude
        row_bound = int(magnitude.reshape(c_out, -1).sum(axis=1).max()) if centred.size else 0
        self.vnni = bool(centred.size == 0 or (centred.min() >= -128 and centred.max() <= 127
                                               and 255 * row_bound <= _INT32_MAX))
        self.quads = bool(self.vnni and (centred.size == 0
                                         or (neighbours[:, :, 0::2] + neighbours[:, :, 1::2]).max() <= 128))
        if self.vnni:
            self.w4 = self._packed(centred, np.int8, 4, _BYTE_ROWS)
            self.sums = centred.reshape(c_out, -1).sum(axis=1, dtype=np.int64)

    def kind(self, quads: bool = True, vnni: bool = True) -> int:
        """The tile these weights run on: :data:`VNNI` where exact on a VNNI host (``vnni``
        allowing), else :data:`QUADS` where exact (``quads`` allowing), else :data:`PAIRS`."""
        if vnni and quads and self.vnni and HOST_HAS_VNNI:
            return VNNI
        return QUADS if quads and self.quads else PAIRS

    def _packed(self, centred, dtype, lanes, rows):
        c_out, taps, c_in = centred.shape
        groups = -(-c_in // lanes)
        packed = np.zeros((-(-c_out // rows) * rows, taps, groups * lanes), dtype)
        packed[:c_out, :, :c_in] = centred
        return packed.view(np.int32).reshape(packed.shape[0], taps * groups)

    def quad_bias(self, bias: np.ndarray, x_zero_point: int, x_dtype) -> np.ndarray:
        """``bias[n] - z' · S[n]`` (int64), ``z' = z_x + 128·[int8 input]``: the byte tiles' sums
        are over the raw bytes ``a'``, ``Σ (a' - z') w_c = D - z'·S``."""
        return np.asarray(bias, np.int64) - (int(x_zero_point) + _flip(x_dtype)) * self.sums


def _flip(x_dtype) -> int:
    return 128 if np.dtype(x_dtype) == np.int8 else 0


@njit(cache=True, inline="always")
def _quad(a0, a1, a2, a3, flip):
    """Four activation bytes ``a ^ flip`` in one int32, ``a0`` lowest (module doc)."""
    return np.int32(((np.int32(a0) ^ flip) & 0xFF) | (((np.int32(a1) ^ flip) & 0xFF) << 8)
                    | (((np.int32(a2) ^ flip) & 0xFF) << 16) | (((np.int32(a3) ^ flip) & 0xFF) << 24))


@njit(cache=True)
def _pack_row(q, quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2):
    """Row ``q`` of the packed input (module doc) for images ``b0 .. b0 + nb``: image ``bl``'s
    pixel ``(iy, ix)`` at column ``bl·pitch + (top + iy)·wp + left + ix``; the padding, the slack
    after each image and the columns past ``nb`` images hold real zero (pairs: 0; quads: four
    bytes ``z'``). Pairs: channels ``2q, 2q+1`` centred to int16, channel ``2q`` in the low half;
    quads: the bytes ``x ^ flip`` of channels ``4q .. 4q+3``, channel ``4q`` lowest (the order of
    the weights' int16 / int8 view on a little-endian host). A missing channel: 0 / ``z'``.
    ``x`` is the input with each image's planes flattened, ``[N, C_in, H·W]`` (a reshape per
    row and image cost as much as packing a 7×7 plane)."""
    c_in, hw = x.shape[1], height * width
    right = wp - left - width
    row = x2[q]
    lanes = 4 if quads else 2
    zq = np.int32((za + flip) & 0xFF)
    pad = np.int32(zq * 0x01010101) if quads else np.int32(0)
    c = lanes * q
    present = min(lanes, c_in - c)
    for bl in range(nb):
        base = bl * pitch
        for e in range(top * wp + left if height > 0 else pitch):
            row[base + e] = pad
        xc = x[b0 + bl]
        # rows without padding columns are one run (a 1×1 conv: the whole plane)
        whole = left == 0 and right == 0
        runs, run = (1, hw) if whole else (height, width)
        for iy in range(runs):
            d = base + (top + iy) * wp + left
            s0 = iy * run
            # views indexed from 0: an index LLVM cannot prove non-negative (Numba wraps negative
            # ones) keeps a loop scalar — 1.35 against 0.15 ns per value, measured
            dst = row[d:d + run]
            a0 = xc[c, s0:s0 + run]
            if quads and present == 4:
                a1, a2, a3 = xc[c + 1, s0:s0 + run], xc[c + 2, s0:s0 + run], xc[c + 3, s0:s0 + run]
                for ix in range(run):
                    dst[ix] = _quad(a0[ix], a1[ix], a2[ix], a3[ix], flip)
            elif quads:  # the last quad of a channel count that is not a multiple of 4
                for ix in range(run):
                    dst[ix] = pad
                for h in range(present):
                    src = xc[c + h, s0:s0 + run]
                    shift = 8 * h
                    keep = np.int32(~(0xFF << shift))
                    for ix in range(run):
                        dst[ix] = np.int32((dst[ix] & keep) | (((np.int32(src[ix]) ^ flip) & 0xFF) << shift))
            elif present == 2:
                a1 = xc[c + 1, s0:s0 + run]
                for ix in range(run):
                    dst[ix] = np.int32(((np.int32(a0[ix]) - za) & 0xFFFF) | ((np.int32(a1[ix]) - za) << 16))
            else:
                for ix in range(run):
                    dst[ix] = np.int32((np.int32(a0[ix]) - za) & 0xFFFF)
            if not whole:
                stop = d + width + right + left if iy + 1 < height else base + pitch
                for e in range(d + width, stop):
                    row[e] = pad
        if whole:
            for e in range(base + top * wp + hw, base + pitch):
                row[e] = pad
    for e in range(nb * pitch, row.shape[0]):
        row[e] = pad


@njit(cache=True)
def _pack_plane_quads(q, x, b0, nb, pitch, za, flip, x2):
    """:func:`_pack_row` for quads of four present channels on planes without padding (a 1×1
    conv): each image's plane is one run, read through one view of the four channels and
    written through one view of the row, both indexed from 0 (the same bytes as
    ``_pack_row``; 4× faster on a 7×7 plane of 1152 channels, measured)."""
    hw = x.shape[2]
    pad = np.int32(((za + flip) & 0xFF) * 0x01010101)
    row = x2[q]
    planes = x[b0:b0 + nb, 4 * q:4 * q + 4]  # [images, 4, H·W]
    for bl in range(nb):
        dst = row[bl * pitch:(bl + 1) * pitch]
        src = planes[bl]
        for ix in range(hw):
            dst[ix] = _quad(src[0, ix], src[1, ix], src[2, ix], src[3, ix], flip)
        for e in range(hw, dst.shape[0]):
            dst[e] = pad
    tail = row[nb * pitch:]
    for e in range(tail.shape[0]):
        tail[e] = pad


@njit(cache=True)
def _pack_one(q, plane_quads, quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2):
    if plane_quads and 4 * q + 4 <= x.shape[1]:
        _pack_plane_quads(q, x, b0, nb, pitch, za, flip, x2)
    else:
        _pack_row(q, quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2)


@njit(cache=True)
def _pack_serial(quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2):
    """:func:`_pack_row` for every row, on the calling thread (:func:`_pack_plane_quads` where
    the planes have no padding)."""
    plane_quads = quads and top == 0 and left == 0 and wp == width
    for q in range(x2.shape[0]):
        _pack_one(q, plane_quads, quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2)


@njit(parallel=True, cache=True)
def _pack_parallel(quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2):
    """:func:`_pack_serial`'s rows on Numba's threads."""
    plane_quads = quads and top == 0 and left == 0 and wp == width
    for q in prange(x2.shape[0]):
        _pack_one(q, plane_quads, quads, x, height, width, b0, nb, top, left, wp, pitch, za, flip, x2)


@njit(cache=True)
def _segment(col, c1, image_pitch, wp, oh, ow):
    """The run of outputs at column ``col``: ``(image, first output index in the image, count,
    next column)``; ``count`` 0 where ``col`` is padding or slack. A run ends with its output row
    where the rows have padding columns (``wp > ow``), else with the image or ``c1``."""
    bl = col // image_pitch
    rem = col - bl * image_pitch
    if wp == ow:  # rows without padding columns (a 1×1 conv, the im2col): the image's outputs are contiguous
        if rem >= oh * ow:
            return bl, 0, 0, (bl + 1) * image_pitch
        count = min(oh * ow - rem, c1 - col)
        return bl, rem, count, col + count
    oy = rem // wp
    ox = rem - oy * wp
    if oy >= oh:  # the image's bottom padding and slack
        return bl, 0, 0, (bl + 1) * image_pitch
    if ox >= ow:  # the row's right padding
        return bl, 0, 0, col + wp - ox
    count = min(ow - ox, c1 - col)
    return bl, oy * ow + ox, count, col + count


@njit(cache=True, inline='always')
def _requantize_checked(y, r, c0, c1, n, b0, image_pitch, wp, oh, ow, bias, rq, out, acc, status, t):
    """Row ``r`` of a task's sums (channel ``n``, columns ``[c0, c1)``) the general way:
    ``acc = int64(y) + bias``, ``fast._check_int32``, then ``fast._float32_row`` or
    ``fast._store_channel`` (every mode, and the int32 accumulators themselves)."""
    c_out, hw = out.shape[1], oh * ow
    mode = rq[0]
    bn, m, z, low, high = bias[n], rq[1][n], rq[4][n], rq[5][n], rq[6][n]
    col = c0
    while col < c1:
        bl, d0, count, nxt = _segment(col, c1, image_pitch, wp, oh, ow)
        s0 = col - c0
        outside = 0
        for e in range(count):
            a = np.int64(y[r, s0 + e]) + bn
            acc[e] = a
            outside += (a < fast._INT32_MIN) | (a > fast._INT32_MAX)
        flat0 = ((b0 + bl) * c_out + n) * hw + d0
        if outside:
            fast._check_int32(acc, count, flat0, status, t)
        dst = out[b0 + bl, n, d0:d0 + count]
        if mode == 0:  # every acc is now inside int32: the one-pass form is exact
            for e in range(count):
                dst[e] = fast._float32_unchecked_one(acc[e], 0, m, z, low, high)
        elif mode == 1:
            for e in range(count):
                dst[e] = fast._float64_mode(acc[e], m, z, low, high)
        elif mode == fast._NO_REQUANT:
            for e in range(count):
                dst[e] = acc[e]
        else:
            fast._store_channel(acc[:count], n, rq, dst, flat0, status, t)
        col = nxt


@njit(cache=True)
def _task(t, kind, xk, width, wk, kp, offs, cp, block, rows, groups, cols, b0, image_pitch, wp, oh, ow, bias,
          unchecked, rq, out, status):
    """Task ``t`` of one batch of images (module doc): panel ``t // groups``, tile group
    ``t % groups``, K in blocks of ``block`` packed rows; its overflows go to ``status[t]``."""
    tile_rows = TILE_ROWS[kind]
    tiles = rows // tile_rows
    c_out = out.shape[1]
    one_pass = unchecked and rq[0] == 0
    multiplier, zero_point, lo, hi = rq[1], rq[4], rq[5], rq[6]
    p, grp = t // groups, t % groups
    c0 = p * PANEL
    c1 = min(cols, c0 + PANEL)
    bl0, d00, count0, _ = _segment(c0, c1, image_pitch, wp, oh, ow)
    one_run = count0 == c1 - c0  # the panel is one run of outputs (a 1×1 conv's plane)
    y = np.empty((_MAX_ROWS, PANEL), np.int32)
    acc = np.empty(PANEL, np.int64)
    staged = np.empty(PANEL, out.dtype)
    for tile in range(grp * tiles // groups, (grp + 1) * tiles // groups):
        for q0 in range(0, cp, block):
            q1 = min(cp, q0 + block)
            for col in range(c0, c1, TILE_COLUMNS):
                if kind == VNNI:
                    vnni_tile(xk, col, width, wk, tile * tile_rows, kp, offs, cp, y, col - c0, q0, q1, q0 > 0)
                elif kind == QUADS:
                    quad_tile(xk, col, width, wk, tile * tile_rows, kp, offs, cp, y, col - c0, q0, q1, q0 > 0)
                else:
                    pair_tile(xk, col, width, wk, tile * tile_rows, kp, offs, cp, y, col - c0, q0, q1, q0 > 0)
        for r in range(min(tile_rows, c_out - tile * tile_rows)):
            n = tile * tile_rows + r
            if not one_pass:
                _requantize_checked(y, r, c0, c1, n, b0, image_pitch, wp, oh, ow, bias, rq, out, acc, status, t)
                continue
            bn, m, z, low, high = bias[n], multiplier[n], zero_point[n], lo[n], hi[n]
            sums = y[r]
            if one_run:  # straight into the outputs
                dst = out[b0 + bl0, n, d00:d00 + count0]
                for e in range(count0):
                    dst[e] = fast._float32_unchecked_one(sums[e], bn, m, z, low, high)
                continue
            for e in range(c1 - c0):  # the float32 mode of sums proven inside int32: the whole row, one loop
                staged[e] = fast._float32_unchecked_one(sums[e], bn, m, z, low, high)
            col = c0
            while col < c1:  # then its runs of outputs copied out
                bl, d0, count, nxt = _segment(col, c1, image_pitch, wp, oh, ow)
                src = staged[col - c0:col - c0 + count]
                dst = out[b0 + bl, n, d0:d0 + count]
                for e in range(count):
                    dst[e] = src[e]
                col = nxt


@njit(cache=True)
def _tiles_serial(kind, xk, width, wk, kp, offs, cp, block, rows, groups, cols, b0, image_pitch, wp, oh, ow, bias,
                  unchecked, rq, out, status):
    """Every :func:`_task` on the calling thread."""
    for t in range(status.shape[0]):
        _task(t, kind, xk, width, wk, kp, offs, cp, block, rows, groups, cols, b0, image_pitch, wp, oh, ow, bias,
              unchecked, rq, out, status)


@njit(parallel=True, cache=True)
def _tiles_parallel(kind, xk, width, wk, kp, offs, cp, block, rows, groups, cols, b0, image_pitch, wp, oh, ow, bias,
                    unchecked, rq, out, status):
    """Every :func:`_task` on Numba's threads."""
    for t in prange(status.shape[0]):
        _task(t, kind, xk, width, wk, kp, offs, cp, block, rows, groups, cols, b0, image_pitch, wp, oh, ow, bias,
              unchecked, rq, out, status)


def pack_input(x, b0, nb, top, left, wp, pitch, x_zero_point, columns, weights: PackedWeights, quads: bool,
               threads) -> np.ndarray:
    """The packed input (:func:`_pack_row`) of images ``b0 .. b0 + nb`` of ``x`` (NCHW, 8-bit):
    int32 ``[cq or cp, columns]``, each image a padded plane of ``pitch`` columns in rows of
    ``wp``."""
    x2 = np.empty((weights.cq if quads else weights.cp, columns), np.int32)
    serial = threads == 1 or x2.size < SERIAL_VALUES
    planes = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    (_pack_serial if serial else _pack_parallel)(quads, planes, x.shape[2], x.shape[3],
                                                 b0, nb, top, left, wp, pitch, np.int32(x_zero_point),
                                                 np.int32(_flip(x.dtype)), x2)
    return x2


def tile_schedule(weights: PackedWeights, kind: int, cols: int, taps: int, cp: int, threads: int) -> tuple:
    """``(rows, groups, tasks, serial, block)`` of :func:`run_tiles` for ``cols`` columns, ``taps``
    offsets of ``cp`` packed rows: the output channels rounded up to whole tiles, the tile
    groups (at least four tasks a thread where there are enough tiles), the task count, whether
    the call is below :data:`SERIAL_MACS` (or on one thread) and the K block (one offset — the
    im2col —: :data:`K_BLOCK` rows that stay in L2)."""
    tile_rows, lanes = (PAIR_ROWS, 2) if kind == PAIRS else (TILE_ROWS[kind], 4)
    rows = -(-weights.c_out // tile_rows) * tile_rows
    panels = -(-cols // PANEL)
    groups = max(1, min(rows // tile_rows, -(-4 * threads // panels)))
    serial = threads == 1 or rows * taps * cp * lanes * cols < SERIAL_MACS
    return rows, groups, panels * groups, serial, (cp if taps > 1 else K_BLOCK)


def run_tiles(xk, offs, cp, weights: PackedWeights, kind: int, cols, b0, image_pitch, wp, oh, ow, bias, unchecked,
              rq_args, out, threads, schedule=None) -> np.ndarray:
    """Every output of ``cols`` columns, requantized into ``out`` (``[N, C_out, OH·OW]``, the
    kernel's signed view; column ``bl·image_pitch + oy·wp + ox`` is output ``(b0 + bl, ·, oy, ox)``)::

        Y[n, col] = Σ_t Σ_{q < cp} xk[q, col + offs[t]] · W[n, t·cp + q]     (packed lanes)

    ``xk`` is int32 ``[rows, width]`` with ``width ≥`` ``cols`` rounded up to whole tiles plus
    ``max(offs)``. The shifted layout passes :func:`pack_input`'s rows and the kernel's tap
    offsets; the im2col its gathered rows, one offset 0 and ``cp = taps ·`` (groups per tap).
    ``bias`` is the int64 bias, for the byte tiles :meth:`PackedWeights.quad_bias`. ``kind``: the
    tile (:meth:`PackedWeights.kind`); ``schedule``: :func:`tile_schedule` of the call, if the
    caller keeps it. Returns the status array, a row per task (overflows recorded as in
    :mod:`fast`)."""
    if kind == VNNI and not (HOST_HAS_VNNI and weights.vnni) or kind == QUADS and not weights.quads:
        raise ValueError(f"run_tiles: tile {kind} is not exact for these weights on this host")
    rows, groups, tasks, serial, block = schedule or tile_schedule(weights, kind, cols, offs.size, cp, threads)
    status = np.empty((tasks, 3), np.int64)
    status.fill(-1)
    (_tiles_serial if serial else _tiles_parallel)(kind, xk.reshape(-1), xk.shape[1],
                                                   (weights.w2 if kind == PAIRS else weights.w4).reshape(-1),
                                                   offs.size * cp, offs, cp, block, rows, groups, cols, b0,
                                                   image_pitch, wp, oh, ow, bias, unchecked, rq_args, out, status)
    return status
