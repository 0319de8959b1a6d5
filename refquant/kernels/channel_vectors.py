"""Hand-written building blocks of the channels-last depthwise conv: a block of 32 channels
moved into channels-last order, the sums of its outputs kept in registers, and their
requantization on the way back to NCHW.

    pixels_in(src, hw, p0, zx, nc, at, dst)
    dst[at[p0 + j] + e] = float32(src[e·hw + p0 + j]) - zx      (j < 8, e < nc)
    dst[at[p0 + j] + e] = 0                                       (j < 8, nc ≤ e < CHANNELS)

    tap_sums(plane, weights, offs, pixel, step, out)
    out[e]            = Σ_t plane[(pixel + offs[t])·CHANNELS + e] · weights[t·CHANNELS + e]
    out[CHANNELS + e] = Σ_t plane[(pixel + step + offs[t])·CHANNELS + e] · weights[t·CHANNELS + e]

    row_sums_k{kw}s{sw}(plane, weights, kh, pitch, pixel, out)         (kw ∈ {3, 5}, sw ∈ {1, 2})
    out[p·CHANNELS + e] = Σ_{i<kh, j<kw} plane[(pixel + i·pitch + p·sw + j)·CHANNELS + e]
                                         · weights[(i·kw + j)·CHANNELS + e]           (p < 8)

    requantized_out(sums, f0, dst, pixels, nc, ints, floats)
    dst[e·pixels + f0 + j] = fast._float32_clamped(sums[(f0 + j)·CHANNELS + e], ints[0, e],
                             floats[0, e], ints[1, e], floats[1, e], floats[2, e])  (j < 8, e < nc)

``src`` is one image's NCHW planes from the block's first channel on (8-bit, flattened; ``hw``
values per channel), ``at`` the int64 place of each input pixel in the block's padded plane
(already times :data:`CHANNELS`), ``dst``/``plane`` a block's channels-last float32 plane
(flattened, pixels of :data:`CHANNELS` values), ``weights`` the block's float32 ``[taps,
CHANNELS]`` weights (flattened), ``offs`` the int64 pixel offset of each tap, ``out`` float32
with room for two (``tap_sums``) or eight (``row_sums``) pixels of sums; ``requantized_out``'s
``dst`` is the output image's planes from the block's first channel on (8-, 16- or 32-bit
integers; the low bits of each int32 result are stored), ``ints`` int32 ``[2, CHANNELS]`` (bias,
``z_y``) and ``floats`` float32 ``[3, CHANNELS]`` (multiplier, ``lo - z_y``, ``hi - z_y``).

* **The moves** are SIMD transposes: eight pixels of 32 channels go as four 8×8 transposes
  of 8-lane vectors (``unpck``/``shuffle``/``permute`` patterns), where a scalar loop paid
  0.6–1 ns per value (measured: the stores of one channel are 128 bytes apart). The eight
  bytes read per channel must exist: callers pass ``p0 + 8 ≤ hw`` (``f0 + 8 ≤ pixels``).
  Channels ``e ≥ nc`` of a partial block read channel ``nc - 1`` and are set to 0 (in) or not
  stored (out). Going in, the byte is zero- or sign-extended to int32 and converted to
  float32 (exact), then ``zx`` subtracted (an exact integer ``≤ 510`` in magnitude).
* **The sums** are 8-lane float32 vectors updated by fused multiply-adds (``llvm.fma``) and
  kept in registers across the taps, where a Numba loop over the channels loads and stores its
  sums once per tap (3× slower, measured). ``tap_sums`` forms two pixels (``pixel`` and
  ``pixel + step``; ``step = 0`` repeats the first), each weight vector loaded once for both;
  ``row_sums`` eight pixels of a row, one 8-lane slice of the channels at a time, each input
  pixel of a kernel row loaded once for every (pixel, tap) pair that reads it (40 GMAC/s against
  22 for ``tap_sums`` on a 5×5 kernel, measured). Callers make every product and partial sum
  an integer below ``2**24`` in magnitude, so each product, sum and fused multiply-add is
  exact and neither the order nor the grouping matters (``fast._depthwise_channels_last``).
* **The requantization** is ``fast._float32_clamped`` instruction for instruction (the int32
  sum with the bias, wrapping; ``sitofp``, ``fmul``, ``llvm.rint``; ``max`` then ``min`` as
  Numba lowers them, a select on an ordered comparison; ``fptosi`` and ``+ z_y``, wrapping),
  eight lanes wide, then the same transposes back.

The operations are plain LLVM vector instructions and ``llvm.fma``/``llvm.rint``, which any
x86-64 host runs (one without FMA hardware through a library call, slowly but with the same
result).

Numba's on-disk cache keys a cached kernel by its own file only: after editing this module,
clear ``refquant/kernels/__pycache__/fast.*``.
"""

from __future__ import annotations

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["CHANNELS", "pixels_in", "requantized_out", "tap_sums", "row_sums_k3s1", "row_sums_k5s1",
           "row_sums_k3s2", "row_sums_k5s2"]

_LANES = 8
_VECTORS = 4
CHANNELS = _LANES * _VECTORS  # channels of one block
PIXELS = 8  # pixels one call of pixels_in / requantized_out moves


def _check(name, arr, dtypes):
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype in dtypes):
        raise TypingError(f"{name} must be a 1-D C-contiguous array of {'/'.join(map(str, dtypes))}, got {arr}")


def _checks(what, pairs):
    """Type checks of an intrinsic's array arguments: ``pairs`` of (name, type, dtype)."""
    for name, arr, dtype in pairs:
        _check(f"{what}: {name}", arr, (dtype,))


def _fma_vectors(builder):
    """The 8-lane float32 vector type, ``llvm.fma`` on it, and its zero."""
    vec = ir.VectorType(ir.FloatType(), _LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                         f"llvm.fma.v{_LANES}f32")
    return vec, fma, ir.Constant(vec, [0.0] * _LANES)


def _vector_at(builder, base, index, vec):
    return builder.bitcast(builder.gep(base, [index]), ir.PointerType(vec))


def _transpose8(builder, rows):
    """The eight columns of eight 8-lane vectors (the AVX 8×8 transpose: pairs interleaved,
    then pairs of pairs, then halves)."""
    mask = ir.VectorType(ir.IntType(32), _LANES)

    def shuffle(a, b, m):
        return builder.shuffle_vector(a, b, ir.Constant(mask, m))

    low, high = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for i in range(0, 8, 2):
        t += [shuffle(rows[i], rows[i + 1], low), shuffle(rows[i], rows[i + 1], high)]
    even, odd = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = []
    for base in (0, 4):
        t0, t1, t2, t3 = t[base:base + 4]
        u += [shuffle(t0, t2, even), shuffle(t0, t2, odd), shuffle(t1, t3, even), shuffle(t1, t3, odd)]
    first, second = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    cols = [None] * 8
    for k in range(4):
        cols[k], cols[k + 4] = shuffle(u[k], u[k + 4], first), shuffle(u[k], u[k + 4], second)
    return cols


@intrinsic
def pixels_in(typingctx, src, hw, p0, zx, nc, at, dst):
    """Typing of :func:`pixels_in`: see the module docstring for the formula."""
    _check("pixels_in: src", src, (types.uint8, types.int8))
    _check("pixels_in: at", at, (types.int64,))
    _check("pixels_in: dst", dst, (types.float32,))
    sig = types.none(src, hw, p0, zx, nc, at, dst)
    signed = src.dtype == types.int8

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        bytes_v, ints_v = ir.VectorType(ir.IntType(8), _LANES), ir.VectorType(i32, _LANES)
        floats_v = ir.VectorType(ir.FloatType(), _LANES)
        src_a, at_a, dst_a = (context.make_array(tys[i])(context, builder, args[i]) for i in (0, 5, 6))
        hw_v, p0_v, nc_v = (context.cast(builder, args[i], tys[i], types.int64) for i in (1, 2, 4))
        zx_v = context.cast(builder, args[3], tys[3], types.float32)
        zx_splat = ir.Constant(floats_v, ir.Undefined)
        for lane in range(_LANES):
            zx_splat = builder.insert_element(zx_splat, zx_v, ir.Constant(i32, lane))
        zero = ir.Constant(floats_v, [0.0] * _LANES)
        last = builder.sub(nc_v, ir.Constant(i64, 1))
        rows = []
        for e in range(CHANNELS):
            inside = builder.icmp_signed("<", ir.Constant(i64, e), nc_v)
            channel = builder.select(inside, ir.Constant(i64, e), last)
            v = builder.load(_vector_at(builder, src_a.data, builder.add(builder.mul(channel, hw_v), p0_v), bytes_v),
                             align=1)
            v = builder.sext(v, ints_v) if signed else builder.zext(v, ints_v)
            v = builder.fsub(builder.sitofp(v, floats_v), zx_splat)
            rows.append(builder.select(inside, v, zero))
        for g in range(_VECTORS):
            cols = _transpose8(builder, rows[g * _LANES:(g + 1) * _LANES])
            for j in range(PIXELS):
                place = builder.load(builder.gep(at_a.data, [builder.add(p0_v, ir.Constant(i64, j))]))
                builder.store(cols[j], _vector_at(builder, dst_a.data, builder.add(place, ir.Constant(i64, g * _LANES)),
                                                  floats_v), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _store_channels(builder, dst_a, cols, g, f0_v, pixels_v, nc_v, bits):
    """Store the eight columns of group ``g`` (channel ``8g + k``: eight pixels from ``f0``)
    into their channels' planes, truncated to ``bits``, channels ``≥ nc`` skipped."""
    i64 = ir.IntType(64)
    narrow = ir.VectorType(ir.IntType(bits), _LANES)
    for k in range(_LANES):
        e = ir.Constant(i64, g * _LANES + k)
        with builder.if_then(builder.icmp_signed("<", e, nc_v)):
            at = builder.add(builder.mul(e, pixels_v), f0_v)
            value = cols[k] if bits == 32 else builder.trunc(cols[k], narrow)
            builder.store(value, _vector_at(builder, dst_a.data, at, narrow), align=1)


_OUT_DTYPES = (types.uint8, types.int8, types.uint16, types.int16, types.int32)


@intrinsic
def requantized_out(typingctx, sums, f0, dst, pixels, nc, ints, floats):
    """Typing of :func:`requantized_out`: see the module docstring for the formula."""
    _check("requantized_out: sums", sums, (types.float32,))
    _check("requantized_out: dst", dst, _OUT_DTYPES)
    for name, arr, dtype in (("ints", ints, types.int32), ("floats", floats, types.float32)):
        if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C" and arr.dtype == dtype):
            raise TypingError(f"requantized_out: {name} must be a 2-D C-contiguous {dtype} array, got {arr}")
    sig = types.none(sums, f0, dst, pixels, nc, ints, floats)
    bits = dst.dtype.bitwidth

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ints_v, floats_v = ir.VectorType(i32, _LANES), ir.VectorType(ir.FloatType(), _LANES)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(floats_v, [floats_v]),
                                              f"llvm.rint.v{_LANES}f32")
        sums_a, dst_a, ints_a, floats_a = (context.make_array(tys[i])(context, builder, args[i]) for i in (0, 2, 5, 6))
        f0_v, pixels_v, nc_v = (context.cast(builder, args[i], tys[i], types.int64) for i in (1, 3, 4))

        def lanes(arr, row, g, vec):
            return builder.load(_vector_at(builder, arr.data, ir.Constant(i64, row * CHANNELS + g * _LANES), vec),
                                align=4)

        for g in range(_VECTORS):
            bias, zero = lanes(ints_a, 0, g, ints_v), lanes(ints_a, 1, g, ints_v)
            mult, low, high = (lanes(floats_a, r, g, floats_v) for r in range(3))
            rows = []
            for j in range(PIXELS):
                index = builder.add(builder.mul(builder.add(f0_v, ir.Constant(i64, j)), ir.Constant(i64, CHANNELS)),
                                    ir.Constant(i64, g * _LANES))
                y = builder.load(_vector_at(builder, sums_a.data, index, floats_v), align=4)
                # fast._float32_clamped, instruction for instruction: the int32 sum (wrapping),
                # the float32 product, rint, max then min as Numba lowers them (select on an
                # ordered comparison), the conversion and + z_y (wrapping)
                acc = builder.add(builder.fptosi(y, ints_v), bias)
                r = builder.call(rint, [builder.fmul(builder.sitofp(acc, floats_v), mult)])
                r = builder.select(builder.fcmp_ordered(">", low, r), low, r)
                r = builder.select(builder.fcmp_ordered("<", high, r), high, r)
                rows.append(builder.add(builder.fptosi(r, ints_v), zero))
            _store_channels(builder, dst_a, _transpose8(builder, rows), g, f0_v, pixels_v, nc_v, bits)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tap_sums(typingctx, plane, weights, offs, pixel, step, out):
    """Typing of :func:`tap_sums`: see the module docstring for the formula."""
    _checks("tap_sums", (("plane", plane, types.float32), ("weights", weights, types.float32),
                         ("offs", offs, types.int64), ("out", out, types.float32)))
    sig = types.none(plane, weights, offs, pixel, step, out)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = ir.IntType(64)
        vec, fma, zero = _fma_vectors(builder)
        pixel_v, step_v = (context.cast(builder, args[i], tys[i], types.int64) for i in (3, 4))
        plane_a, weights_a, offs_a, out_a = (context.make_array(tys[i])(context, builder, args[i])
                                             for i in (0, 1, 2, 5))
        taps = builder.extract_value(offs_a.shape, 0)
        stride = ir.Constant(i64, CHANNELS)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(_VECTORS)] for _ in range(2)]
        with cgutils.for_range(builder, taps) as loop:
            tap = loop.index
            first = builder.mul(builder.add(pixel_v, builder.load(builder.gep(offs_a.data, [tap]))), stride)
            second = builder.add(first, builder.mul(step_v, stride))
            w0 = builder.mul(tap, stride)
            for v in range(_VECTORS):
                lane0 = ir.Constant(i64, _LANES * v)
                w = builder.load(_vector_at(builder, weights_a.data, builder.add(w0, lane0), vec), align=4)
                for s, x0 in zip(sums, (first, second)):
                    x = builder.load(_vector_at(builder, plane_a.data, builder.add(x0, lane0), vec), align=4)
                    builder.store(builder.call(fma, [x, w, builder.load(s[v])]), s[v])
        for p, s in enumerate(sums):
            for v in range(_VECTORS):
                at = ir.Constant(i64, p * CHANNELS + _LANES * v)
                builder.store(builder.load(s[v]), _vector_at(builder, out_a.data, at, vec), align=4)
        return context.get_dummy_value()

    return sig, codegen


ROW = 8  # output pixels of one row_sums call


def _row_sums(kw: int, sw: int):
    """:func:`row_sums_k3s1` and its siblings: the intrinsic for kernel width ``kw`` and
    horizontal stride ``sw`` (dilation 1)."""
    columns = (ROW - 1) * sw + kw  # the input pixels a row of the kernel reads for ROW outputs

    @intrinsic
    def row_sums(typingctx, plane, weights, kh, row_pitch, pixel, out):
        _checks("row_sums", (("plane", plane, types.float32), ("weights", weights, types.float32),
                             ("out", out, types.float32)))
        sig = types.none(plane, weights, kh, row_pitch, pixel, out)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = ir.IntType(64)
            vec, fma, zero = _fma_vectors(builder)
            plane_a, weights_a, out_a = (context.make_array(tys[i])(context, builder, args[i]) for i in (0, 1, 5))
            kh_v, pitch_v, pixel_v = (context.cast(builder, args[i], tys[i], types.int64) for i in (2, 3, 4))
            sums = [cgutils.alloca_once(builder, vec) for _ in range(ROW)]
            for v in range(_VECTORS):
                lane0 = ir.Constant(i64, _LANES * v)
                for s in sums:
                    builder.store(zero, s)
                with cgutils.for_range(builder, kh_v) as loop:
                    base = builder.mul(builder.add(pixel_v, builder.mul(loop.index, pitch_v)),
                                       ir.Constant(i64, CHANNELS))
                    base = builder.add(base, lane0)
                    w_base = builder.add(builder.mul(builder.mul(loop.index, ir.Constant(i64, kw)),
                                                     ir.Constant(i64, CHANNELS)), lane0)
                    w = [builder.load(_vector_at(builder, weights_a.data,
                                                 builder.add(w_base, ir.Constant(i64, j * CHANNELS)), vec), align=4)
                         for j in range(kw)]
                    acc = [builder.load(s) for s in sums]
                    for col in range(columns):  # each input pixel loaded once, used by every (pixel, tap) reading it
                        x = builder.load(_vector_at(builder, plane_a.data,
                                                    builder.add(base, ir.Constant(i64, col * CHANNELS)), vec), align=4)
                        for p in range(ROW):
                            j = col - p * sw
                            if 0 <= j < kw:
                                acc[p] = builder.call(fma, [x, w[j], acc[p]])
                    for s, a in zip(sums, acc):
                        builder.store(a, s)
                for p, s in enumerate(sums):
                    builder.store(builder.load(s), _vector_at(builder, out_a.data,
                                                              ir.Constant(i64, p * CHANNELS + _LANES * v), vec), align=4)
            return context.get_dummy_value()

        return sig, codegen

    row_sums.__doc__ = (f"Typing of the row sums for kernel width {kw}, horizontal stride {sw}: see the "
                        "module docstring for the formula.")
    return row_sums


row_sums_k3s1, row_sums_k5s1 = _row_sums(3, 1), _row_sums(5, 1)
row_sums_k3s2, row_sums_k5s2 = _row_sums(3, 2), _row_sums(5, 2)
