"""One hand-written building block of the channels-last depthwise conv: the tap sums of a block
of channels, kept in registers.

    tap_sums(plane, weights, offs, pixel, out)
    out[e] = Σ_t plane[(pixel + offs[t])·CHANNELS + e] · weights[t·CHANNELS + e]      (e < CHANNELS)

``plane`` is one block of :data:`CHANNELS` channels of a channels-last float32 image, flattened
(pixels of ``CHANNELS`` values), ``weights`` the block's float32 ``[taps, CHANNELS]`` weights,
flattened, ``offs`` the int64 pixel offset of each tap, ``out`` a float32 vector of at least
``CHANNELS`` values. The sums are two sets of four vectors of eight float32 lanes — taps
``0, 2, 4, …`` into one set, ``1, 3, 5, …`` into the other, so that two additions are in flight
per vector — each updated by a multiply and an add (no fused multiply-add is asked for), the
sets added at the end. They stay in registers across the taps, where a Numba loop over the
channels loads and stores its sums once per tap (3× slower, measured). The operations are plain
LLVM vector instructions, which any x86-64 host runs.

Callers make every product and partial sum an integer below ``2**24`` in magnitude, so each
float32 operation is exact and neither the order nor the grouping matters
(``fast._depthwise_channels_last``).

Numba's on-disk cache keys a cached kernel by its own file only: after editing this module,
clear ``refquant/kernels/__pycache__/fast.*``.
"""

from __future__ import annotations

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["CHANNELS", "tap_sums"]

_LANES = 8
_VECTORS = 4
CHANNELS = _LANES * _VECTORS  # channels of one block


@intrinsic
def tap_sums(typingctx, plane, weights, offs, pixel, out):
    """Typing of :func:`tap_sums`: see the module docstring for the formula."""
    for what, arr, dtype in (("plane", plane, types.float32), ("weights", weights, types.float32),
                             ("offs", offs, types.int64), ("out", out, types.float32)):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype == dtype):
            raise TypingError(f"tap_sums: {what} must be a 1-D C-contiguous {dtype} array, got {arr}")
    sig = types.none(plane, weights, offs, pixel, out)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64, f32 = ir.IntType(64), ir.FloatType()
        vec = ir.VectorType(f32, _LANES)
        zero = ir.Constant(vec, [0.0] * _LANES)
        pixel_v = context.cast(builder, args[3], tys[3], types.int64)
        plane_a, weights_a, offs_a, out_a = (context.make_array(tys[i])(context, builder, args[i])
                                             for i in (0, 1, 2, 4))
        taps = builder.extract_value(offs_a.shape, 0)
        stride = ir.Constant(i64, CHANNELS)

        def vector_at(base, index):
            return builder.bitcast(builder.gep(base, [index]), ir.PointerType(vec))

        sets = [[cgutils.alloca_once_value(builder, zero) for _ in range(_VECTORS)] for _ in range(2)]

        def add_tap(tap, sums):
            off = builder.load(builder.gep(offs_a.data, [tap]))
            x0 = builder.mul(builder.add(pixel_v, off), stride)
            w0 = builder.mul(tap, stride)
            for v, s in enumerate(sums):
                step = ir.Constant(i64, _LANES * v)
                x = builder.load(vector_at(plane_a.data, builder.add(x0, step)), align=4)
                w = builder.load(vector_at(weights_a.data, builder.add(w0, step)), align=4)
                builder.store(builder.fadd(builder.load(s), builder.fmul(x, w)), s)

        pairs = builder.sdiv(taps, ir.Constant(i64, 2))
        with cgutils.for_range(builder, pairs) as pair:
            first = builder.mul(pair.index, ir.Constant(i64, 2))
            add_tap(first, sets[0])
            add_tap(builder.add(first, ir.Constant(i64, 1)), sets[1])
        odd = builder.icmp_signed("!=", builder.mul(pairs, ir.Constant(i64, 2)), taps)
        with builder.if_then(odd):
            add_tap(builder.sub(taps, ir.Constant(i64, 1)), sets[0])
        for v in range(_VECTORS):
            total = builder.fadd(builder.load(sets[0][v]), builder.load(sets[1][v]))
            builder.store(total, vector_at(out_a.data, ir.Constant(i64, _LANES * v)), align=4)
        return context.get_dummy_value()

    return sig, codegen
