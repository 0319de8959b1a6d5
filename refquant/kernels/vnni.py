"""One hand-written SIMD building block: a 4×4 tile of int8 dot products with ``vpdpbusd``.

LLVM vectorises a plain ``Σ a·w`` loop over int8 operands into ``vpmaddwd`` (two int8 → int16
sign extensions per 16 products), but it never emits the VNNI instruction ``vpdpbusd`` on
its own, which multiplies 32 (uint8, int8) byte pairs, sums them in groups of four and adds
them to eight int32 accumulators in one instruction. This module emits it through a Numba
``@intrinsic`` so that the Numba kernels in :mod:`refquant.kernels.fast` can use it:

    dot_tile(a, rows, w, cols, nchunks, a_flip, w_flip, block, r0, c0, transposed)
    S[i, j] = Σ_{k < 32·nchunks} (a[rows[i], k] ^ a_flip) · (w[cols[j], k] ^ w_flip)   (i, j < 4)
    block[r0 + i, c0 + j] = S[i, j]      (transposed=False)
    block[c0 + j, r0 + i] = S[i, j]      (transposed=True)

``a`` is a 2-D C-contiguous uint8 array and ``w`` a 2-D C-contiguous int8 array (rows
contiguous along K); ``rows`` and ``cols`` are tuples of four row indices; ``block`` is a
2-D int64 array receiving the 16 sums as a 4×4 square (it needs 3 spare columns and rows
past the last tile: partial tiles store whole squares). ``transposed`` is a literal bool.
Each of the 16 accumulators is a register of eight int32 lanes; at the end a tree of
pairwise additions turns eight registers into one register of their eight lane sums.

Numeric decisions, all exact:

* ``vpdpbusd`` zero-extends the bytes of ``a`` and sign-extends those of ``w``: each product
  lies in [-32640, 32385] and each group of four in [-130560, 129540], so nothing saturates
  (this is the non-saturating form). The int32 lane sums wrap modulo 2**32; callers use
  the tile only when ``K · 255 · 128 < 2**31``, so every partial sum, in any order, is exact.
* ``a_flip`` / ``w_flip`` are XORed into every byte before the product. Flipping the top bit
  (``0x80``) turns int8 bits into the uint8 value ``a + 128`` and uint8 bits into the int8
  value ``w - 128``: this is how the kernels feed any 8-bit operand pair to the one
  (uint8, int8) instruction. The kernels move the zero points by the same 128 so that the
  centred values ``a - z_a`` and ``w - z_w`` are unchanged.

Only hosts whose CPU has AVX-512 VNNI with AVX-512 VL take this path (:data:`HOST_HAS_VNNI`);
the kernels fall back to portable Numba loops elsewhere, and the tests run both paths.
Numba's on-disk cache is keyed by the host CPU and its features, so a cached kernel is never
loaded on a machine that cannot run it. (The cache does not track this file: after editing
it, clear ``refquant/kernels/__pycache__``.)
"""

from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["HOST_HAS_VNNI", "TILE_ROWS", "TILE_COLS", "CHUNK", "dot_tile"]

TILE_ROWS = 4  # rows of ``a`` per tile
TILE_COLS = 4  # rows of ``w`` per tile
CHUNK = 32     # bytes of K consumed per instruction (one 256-bit register)


def _host_has_vnni() -> bool:
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # not every platform reports features
        return False
    return bool(features.get("avx512vnni", False) and features.get("avx512vl", False))


HOST_HAS_VNNI = _host_has_vnni()


@intrinsic
def dot_tile(typingctx, a, rows, w, cols, nchunks, a_flip, w_flip, block, r0, c0, transposed):
    """Typing of :func:`dot_tile`: see the module docstring for the formula."""
    if not HOST_HAS_VNNI:
        raise TypingError("dot_tile needs a CPU with AVX-512 VNNI and AVX-512 VL")
    for what, arr, dtype in (("a", a, types.uint8), ("w", w, types.int8), ("block", block, types.int64)):
        if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"
                and arr.dtype == dtype):
            raise TypingError(f"dot_tile: {what} must be a 2-D C-contiguous {dtype} array, got {arr}")
    for what, idx in (("rows", rows), ("cols", cols)):
        if not (isinstance(idx, types.UniTuple) and idx.count == 4 and isinstance(idx.dtype, types.Integer)):
            raise TypingError(f"dot_tile: {what} must be a tuple of 4 integers, got {idx}")
    if not isinstance(transposed, types.BooleanLiteral):
        raise TypingError("dot_tile: transposed must be a literal True or False")
    sig = types.none(a, rows, w, cols, nchunks, a_flip, w_flip, block, r0, c0, transposed)
    flip_result = transposed.literal_value

    def codegen(context, builder, signature, args):
        a_val, rows_val, w_val, cols_val, n_val, a_flip_val, w_flip_val, block_val, r0_val, c0_val, _ = args
        a_ty, rows_ty, w_ty, cols_ty, n_ty, a_flip_ty, w_flip_ty, block_ty, r0_ty, c0_ty, _ = signature.args
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        lanes = CHUNK // 4
        v32i8, v8i32 = ir.VectorType(i8, CHUNK), ir.VectorType(i32, lanes)
        v4i64 = ir.VectorType(i64, 4)
        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8i32, [v8i32, v8i32, v8i32]),
            "llvm.x86.avx512.vpdpbusd.256")

        def as_int64(val, ty):
            return context.cast(builder, val, ty, types.int64)

        def row_pointers(arr_ty, arr_val, idx_ty, idx_val):
            arr = context.make_array(arr_ty)(context, builder, arr_val)
            base = builder.bitcast(arr.data, ir.PointerType(i8))
            stride = builder.extract_value(arr.strides, 0)
            return [builder.gep(base, [builder.mul(as_int64(r, idx_ty.dtype), stride)])
                    for r in cgutils.unpack_tuple(builder, idx_val, idx_ty.count)]

        def splat(val, ty):
            byte = builder.trunc(as_int64(val, ty), i8)
            vec = builder.insert_element(ir.Constant(v32i8, None), byte, ir.Constant(i32, 0))
            return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(i32, CHUNK), [0] * CHUNK))

        def shuffle(x, y, mask):
            return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, len(mask)), mask))

        def hadd(x, y):  # [x0+x1, x2+x3, y0+y1, y2+y3, x4+x5, x6+x7, y4+y5, y6+y7]
            return builder.add(shuffle(x, y, [0, 2, 8, 10, 4, 6, 12, 14]),
                               shuffle(x, y, [1, 3, 9, 11, 5, 7, 13, 15]))

        def sums_of(v):  # eight accumulators → one vector of their eight lane sums
            h0123 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]))
            h4567 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]))
            return builder.add(shuffle(h0123, h4567, [0, 1, 2, 3, 8, 9, 10, 11]),
                               shuffle(h0123, h4567, [4, 5, 6, 7, 12, 13, 14, 15]))

        a_rows = row_pointers(a_ty, a_val, rows_ty, rows_val)
        w_rows = row_pointers(w_ty, w_val, cols_ty, cols_val)
        a_mask, w_mask = splat(a_flip_val, a_flip_ty), splat(w_flip_val, w_flip_ty)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(v8i32, None))
                for _ in range(TILE_ROWS * TILE_COLS)]
        count = as_int64(n_val, n_ty)
        with cgutils.for_range(builder, count) as loop:
            offset = builder.mul(loop.index, ir.Constant(i64, CHUNK))

            def load(row_ptr, mask):
                ptr = builder.bitcast(builder.gep(row_ptr, [offset]), ir.PointerType(v32i8))
                return builder.bitcast(builder.xor(builder.load(ptr, align=1), mask), v8i32)

            a_vecs = [load(p, a_mask) for p in a_rows]
            w_vecs = [load(p, w_mask) for p in w_rows]
            for i in range(TILE_ROWS):
                for j in range(TILE_COLS):
                    acc = accs[i * TILE_COLS + j]
                    builder.store(builder.call(dpbusd, [builder.load(acc), a_vecs[i], w_vecs[j]]), acc)
        # block[r0 + i, c0 + j] = sum (i, j), or block[c0 + j, r0 + i] when transposed: the
        # accumulators are taken in the order of the block's rows, four consecutive sums a row
        order = [j * TILE_COLS + i if flip_result else i * TILE_COLS + j
                 for i in range(TILE_ROWS) for j in range(TILE_COLS)]
        totals = [builder.load(accs[q]) for q in order]
        arr = context.make_array(block_ty)(context, builder, block_val)
        base = builder.bitcast(arr.data, ir.PointerType(i8))
        row_stride = builder.extract_value(arr.strides, 0)
        first_row = as_int64(c0_val if flip_result else r0_val, c0_ty if flip_result else r0_ty)
        first_col = as_int64(r0_val if flip_result else c0_val, r0_ty if flip_result else c0_ty)
        for half in range(2):  # block rows 0-1, then 2-3
            wide = builder.sext(sums_of(totals[8 * half: 8 * half + 8]), ir.VectorType(i64, lanes))
            for q in range(2):
                row = builder.add(first_row, ir.Constant(i64, 2 * half + q))
                byte = builder.add(builder.mul(row, row_stride), builder.mul(first_col, ir.Constant(i64, 8)))
                ptr = builder.bitcast(builder.gep(base, [byte]), ir.PointerType(v4i64))
                builder.store(builder.shuffle_vector(wide, wide, ir.Constant(ir.VectorType(i32, 4),
                                                                             [4 * q + e for e in range(4)])),
                              ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen
