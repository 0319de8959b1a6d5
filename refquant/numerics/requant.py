"""Requantization: int32 accumulators → int8/uint8 outputs, in four named modes.

A quantized Conv/Gemm/MatMul accumulates ``acc = Σ (x - z_x)(w - z_w) + bias`` exactly in
int32 and must then map ``acc`` (whose real value is ``acc · s_x · s_w``) onto the output grid
``(s_y, z_y)``. Real backends do this step differently, so refquant names each convention and
reproduces it exactly — none of them is a tolerance:

``float32`` — ONNX Runtime (MLAS ``MlasRequantizeOutput``), the default::

    m   = float32(float32(s_x · s_w) / s_y)           # float32 multiply, then float32 divide
    y   = saturate(round_half_even(float32(acc) · m) + z_y)    # float32 product

    ``float32(acc)`` itself rounds (to nearest even) once |acc| > 2**24.

``float64`` — the ``onnx`` package's reference evaluator::

    m   = the same float32 multiplier
    y   = saturate(round_half_even(float64(acc) · float64(m) + z_y))   # z_y added before rounding

    Adding an odd ``z_y`` before rounding moves exact .5 ties to the other neighbour.

``fixed-point`` — TFLite / gemmlowp (``MultiplyByQuantizedMultiplier``, "double rounding")::

    M   = float64(s_x) · float64(s_w) / float64(s_y)           # TFLite computes it in double
    M   = q · 2**e with q ∈ [0.5, 1) (frexp);  Q = round_half_away(q · 2**31) ∈ [2**30, 2**31]
          (Q = 2**31 becomes 2**30 with e + 1; e < -31 flushes M to 0)
    t   = SaturatingRoundingDoublingHighMul(acc · 2**max(e, 0), Q)
        = floor(acc · 2**max(e,0) · Q / 2**31 + 1/2)     # nearest, ties toward +inf (-0.5 -> 0)
    y   = saturate(RoundingDivideByPOT(t, max(-e, 0)) + z_y)
        RoundingDivideByPOT(t, n) = round_half_away_from_zero(t / 2**n)

``fixed-point-single`` — TFLite built with ``TFLITE_SINGLE_ROUNDING``::

    same Q and e (e capped at 30 with Q = 2**31 - 1);
    y   = saturate(floor((acc · Q + 2**(30 - e)) / 2**(31 - e)) + z_y)   # one rounding, half up

Fused activations clamp in the integer domain after ``+ z_y``: ReLU to ``[max(qmin, z_y), qmax]``
and ReLU6 to ``[max(qmin, z_y), min(qmax, z_y + round_half_even(6 / s_y))]`` — what a Relu/Clip
after the layer computes exactly in QDQ form.

Every array here is per output channel (length 1 or C) so per-channel weight scales and
per-channel output qparams use the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .intformats import IntFormat, int_format

__all__ = [
    "REQUANT_MODES",
    "MAX_POT_EXPONENT",
    "Requantizer",
    "make_requantizer",
    "requantize",
    "float32_multiplier",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
]

REQUANT_MODES = ("float32", "float64", "fixed-point", "fixed-point-single")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def check_mode(mode: str) -> str:
    if mode not in REQUANT_MODES:
        raise ValueError(f"unknown requant mode {mode!r}: expected one of {', '.join(REQUANT_MODES)}")
    return mode


def float32_multiplier(x_scale, w_scale, y_scale) -> np.ndarray:
    """``float32(float32(s_x · s_w) / s_y)`` — the multiplier ONNX Runtime and the onnx reference use."""
    xs = np.asarray(x_scale, np.float32)
    ws = np.asarray(w_scale, np.float32)
    ys = np.asarray(y_scale, np.float32)
    return np.atleast_1d(((xs * ws).astype(np.float32) / ys).astype(np.float32))


def quantize_multiplier(real: float, *, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real ≈ Q · 2**(e - 31)`` with ``Q`` a Q31 integer.

    ``q, e = frexp(real)`` (``q ∈ [0.5, 1)``), ``Q = round_half_away(q · 2**31)``; ``Q == 2**31``
    becomes ``2**30`` with ``e + 1``; ``e < -31`` flushes to ``(0, 0)``. With single rounding
    ``e > 30`` saturates to ``(2**31 - 1, 30)``. Returns Python ints ``(Q, e)``.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requant multiplier must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, e = math.frexp(real)
    # q · 2**31 is exact in double, so floor(x + 0.5) is round-half-away for this positive x
    q_fixed = math.floor(q * 2**31 + 0.5)
    if q_fixed == 2**31:
        q_fixed //= 2
        e += 1
    if e < -31:
        return 0, 0
    if single_rounding and e > 30:
        return 2**31 - 1, 30
    return int(q_fixed), int(e)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``floor(a · b / 2**31 + 1/2)`` in int32.

    ``a · b`` is exact in int64; the nudge (``2**30`` for ``a · b >= 0``, ``1 - 2**30`` below)
    then C's truncating division by 2**31 round to nearest with ties toward +inf — half away
    from zero for positive products, but half *toward* zero for negative ones
    (``a · b / 2**31 = -0.5`` gives 0, ``-1.5`` gives -1). The one overflow,
    ``a == b == -2**31``, saturates.

    gemmlowp's domain is int32 ``a`` and ``b``; the formula is exact for any integers whose
    product with its nudge fits int64 (``|a · b| <= 2**63 - 1 - 2**30``), and refquant takes
    those (the kernel tests pin values beyond int32). A larger product (``2**40 · 2**40``),
    which would wrap silently, raises ``ValueError``; a non-integer raises ``TypeError``.
    """
    op = "saturating_rounding_doubling_high_mul"
    big = np.iinfo(np.int64).max
    a = _int_operand(a, "a", op, -big, big, "int64 (excluding -2**63)")
    b = _int_operand(b, "b", op, -big, big, "int64 (excluding -2**63)")
    limit = big - 2**30  # |a·b| plus the nudge must not wrap
    fits = np.abs(b) <= limit // np.maximum(np.abs(a), 1)  # exact: |a·b| <= limit
    if not np.all(fits):
        i = np.unravel_index(int(np.argmin(fits)), np.shape(fits)) if np.ndim(fits) else ()
        ai, bi = np.broadcast_to(a, np.shape(fits))[i], np.broadcast_to(b, np.shape(fits))[i]
        raise ValueError(f"{op}: the product a · b = {int(ai)} · {int(bi)} does not fit int64 "
                         f"(gemmlowp's operands are int32)")
    ab = a * b
    nudged = ab + np.where(ab >= 0, 2**30, 1 - 2**30)
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # truncation toward zero
    return np.where((a == _INT32_MIN) & (b == _INT32_MIN), _INT32_MAX, high)


#: The largest shift :func:`rounding_divide_by_pot` takes: ``2**exponent - 1`` must fit int64.
MAX_POT_EXPONENT = 62


def _int_operand(value, what: str, op: str, lo: int, hi: int, range_name: str) -> np.ndarray:
    """``value`` as int64, refusing non-integers and values outside ``[lo, hi]`` (named errors)."""
    raw = np.asarray(value)
    if raw.dtype.kind == "O":  # Python ints beyond int64
        try:
            raw = np.asarray(value, np.int64)
        except (OverflowError, TypeError, ValueError):
            raise ValueError(f"{op}: {what} must be integers in the {range_name} range [{lo}, {hi}]") from None
    if raw.dtype.kind not in "iu":
        raise TypeError(f"{op}: {what} must be an integer (array), got dtype {raw.dtype}")
    if raw.dtype == np.uint64 and raw.size and raw.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{op}: {what} must lie in the {range_name} range [{lo}, {hi}]")
    v = raw.astype(np.int64)
    if v.size and (v.min() < lo or v.max() > hi):
        bad = v[(v < lo) | (v > hi)].reshape(-1)[0]
        raise ValueError(f"{op}: {what} must lie in the {range_name} range [{lo}, {hi}], got {int(bad)}")
    return v


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``round_half_away(x / 2**exponent)`` with shifts.

    ``x`` is any int64 integer; ``exponent`` an integer in ``0 … MAX_POT_EXPONENT`` (62, so
    that ``2**exponent - 1`` fits int64; gemmlowp's own domain is int32 ``x`` and 0 … 31).
    A negative exponent (a left shift) or a larger one raises ``ValueError``: NumPy's shift
    by a negative or >= 64 amount is not defined and gave wrong values silently.
    """
    op = "rounding_divide_by_pot"
    x = _int_operand(x, "x", op, np.iinfo(np.int64).min, np.iinfo(np.int64).max, "int64")
    exponent = _int_operand(exponent, "exponent", op, 0, MAX_POT_EXPONENT, "shift")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


@dataclass(frozen=True, eq=False)
class Requantizer:
    """Everything a kernel needs to requantize: per-channel arrays of length 1 or C.

    ``multiplier`` (float32) serves the float modes; ``q_multiplier``/``shift`` (int32) the
    fixed-point modes. ``lo``/``hi`` are the output clamp after ``+ zero_point`` (the format's
    range, narrowed by a fused ReLU/ReLU6). ``out_dtype`` is int8/uint8 (or int16/uint16).
    """

    mode: str
    multiplier: np.ndarray
    q_multiplier: np.ndarray
    shift: np.ndarray
    zero_point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    fmt: IntFormat

    @property
    def out_dtype(self) -> np.dtype:
        return self.fmt.storage_dtype

    @property
    def channels(self) -> int:
        return max(a.shape[0] for a in (self.multiplier, self.zero_point, self.lo, self.hi))

    def for_channels(self, c: int) -> "Requantizer":
        """The same requantizer with every array broadcast to length ``c`` (contiguous)."""
        def widen(a, what):
            if a.shape[0] not in (1, c):
                raise ValueError(f"requantizer: {what} has {a.shape[0]} entries, layer has {c} channels")
            return np.ascontiguousarray(np.broadcast_to(a, (c,)))
        return Requantizer(
            self.mode, widen(self.multiplier, "multiplier"), widen(self.q_multiplier, "multiplier"),
            widen(self.shift, "shift"), widen(self.zero_point, "zero point"),
            widen(self.lo, "clamp"), widen(self.hi, "clamp"), self.fmt,
        )


def make_requantizer(
    x_scale,
    w_scale,
    y_scale,
    y_zero_point=0,
    fmt="int8",
    *,
    mode: str = "float32",
    activation: str | None = None,
) -> Requantizer:
    """Build the requantizer for ``acc · s_x · s_w → (s_y, z_y)`` in ``mode``.

    ``w_scale``, ``y_scale`` and ``y_zero_point`` may each be per output channel (1-D).
    ``activation`` is ``None``, ``"relu"`` or ``"relu6"``: the clamp fused into the output.
    """
    check_mode(mode)
    fmt = int_format(fmt)
    for what, s in (("x_scale", x_scale), ("w_scale", w_scale), ("y_scale", y_scale)):
        a = np.asarray(s, np.float64)
        if a.size == 0 or not np.all(np.isfinite(a)) or not np.all(a > 0):
            raise ValueError(f"requantizer: {what} must be finite and > 0, got {np.asarray(s)!r}")
    with np.errstate(over="ignore"):
        m32 = float32_multiplier(x_scale, w_scale, y_scale)
    if not np.all(np.isfinite(m32)):
        raise ValueError(f"requantizer: the multiplier s_x·s_w/s_y overflows float32 "
                         f"(x_scale={x_scale!r}, w_scale={w_scale!r}, y_scale={y_scale!r})")
    real = np.atleast_1d(
        np.asarray(x_scale, np.float32).astype(np.float64)
        * np.asarray(w_scale, np.float32).astype(np.float64)
        / np.asarray(y_scale, np.float32).astype(np.float64)
    )
    single = mode == "fixed-point-single"
    qm = [quantize_multiplier(r, single_rounding=single) for r in real]
    q_multiplier = np.array([q for q, _ in qm], np.int32)
    shift = np.array([e for _, e in qm], np.int32)
    if mode == "fixed-point" and shift.max() > 30:
        # acc · 2**shift must fit in int32 (TFLite's MultiplyByQuantizedMultiplier): a left
        # shift of 31 or more overflows for every nonzero accumulator
        raise ValueError(f"requantizer: fixed-point multiplier 2**{int(shift.max())} is too large "
                         f"(the shift must be <= 30)")
    zp = np.atleast_1d(np.asarray(y_zero_point))
    if zp.dtype.kind not in "iu" or zp.min() < fmt.qmin or zp.max() > fmt.qmax:
        raise ValueError(f"requantizer: output zero point {zp} must be integers in [{fmt.qmin}, {fmt.qmax}]")
    zp = zp.astype(np.int32)
    lo = np.full(zp.shape, fmt.qmin, np.int32)
    hi = np.full(zp.shape, fmt.qmax, np.int32)
    if activation in ("relu", "relu6"):
        lo = np.maximum(lo, zp)
    if activation == "relu6":
        six = np.rint(np.float32(6) / np.atleast_1d(np.asarray(y_scale, np.float32)))
        hi = np.minimum(hi, np.minimum(zp.astype(np.float64) + six, fmt.qmax)).astype(np.int32)
    elif activation not in (None, "relu"):
        raise ValueError(f"requantizer: activation must be None, 'relu' or 'relu6', got {activation!r}")
    n = max(a.shape[0] for a in (m32, zp, lo, hi))
    rq = Requantizer(mode, m32, q_multiplier, shift, zp, lo, hi, fmt)
    return rq.for_channels(n)


def requantize(acc, rq: Requantizer, *, channel_axis: int = 1) -> np.ndarray:
    """Reference requantization of int32 accumulators (channels along ``channel_axis``).

    Vectorised NumPy; each mode is the formula in this module's docstring, evaluated with
    exact integer arithmetic (fixed-point modes, in int64) or the stated float precision.
    """
    acc = np.asarray(acc)
    if acc.dtype.kind != "i" or acc.dtype.itemsize != 4:  # int32 of either byte order
        raise TypeError(f"requantize: accumulators must be int32, got {acc.dtype}")
    acc = acc.astype(np.int32, copy=False)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"requantize: channel_axis must be an int, got {channel_axis!r}")
    if acc.ndim and not -acc.ndim <= channel_axis < acc.ndim:
        raise ValueError(f"requantize: channel_axis {channel_axis} is out of range for accumulators "
                         f"of rank {acc.ndim} (shape {acc.shape})")
    c = acc.shape[channel_axis] if acc.ndim else 1
    rq = rq.for_channels(c) if rq.channels != c else rq

    def per_channel(a):
        shape = [1] * acc.ndim
        if acc.ndim:
            shape[channel_axis] = -1
        return a.reshape(shape) if acc.ndim else a.reshape(())

    zp, lo, hi = per_channel(rq.zero_point), per_channel(rq.lo), per_channel(rq.hi)
    if rq.mode == "float32":
        y = np.rint(acc.astype(np.float32) * per_channel(rq.multiplier)).astype(np.float64) + zp
    elif rq.mode == "float64":
        y = np.rint(acc.astype(np.float64) * per_channel(rq.multiplier).astype(np.float64) + zp)
    elif rq.mode == "fixed-point":
        e = per_channel(rq.shift).astype(np.int64)
        left = np.where(e > 0, e, 0)
        scaled = acc.astype(np.int64) << left
        if np.any((scaled < _INT32_MIN) | (scaled > _INT32_MAX)):
            raise OverflowError("requantize (fixed-point): acc · 2**shift overflows int32")
        t = saturating_rounding_doubling_high_mul(scaled, per_channel(rq.q_multiplier))
        y = rounding_divide_by_pot(t, np.where(e > 0, 0, -e)) + zp
    else:  # fixed-point-single
        total = 31 - per_channel(rq.shift).astype(np.int64)
        prod = acc.astype(np.int64) * per_channel(rq.q_multiplier).astype(np.int64)
        y = ((prod + (np.int64(1) << (total - 1))) >> total) + zp
    return np.clip(y, lo, hi).astype(rq.out_dtype)
