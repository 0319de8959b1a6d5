"""Small floating-point formats: FP8 (E4M3FN, E5M2), FP6 (E2M3, E3M2) and FP4 (E2M1).

A format with ``E`` exponent bits and ``M`` mantissa bits stores ``S.EEEE.MMM`` (one sign bit)
and means, with ``bias = 2**(E-1) - 1`` and ``emin = 1 - bias``::

    exponent field e > 0 (normal):     (-1)**S * 2**(e - bias) * (1 + m / 2**M)
    exponent field e = 0 (subnormal):  (-1)**S * 2**emin       * (m / 2**M)

Formats differ only in what the top of the code space means (the ``nan`` and ``has_inf``
fields of :class:`FloatFormat`):

* ``float8_e5m2``   — IEEE-like: exponent all ones is ±inf (mantissa 0) or NaN (mantissa ≠ 0);
* ``float8_e4m3fn`` — "finite, NaN": no inf; only ``S.1111.111`` is NaN, so the top binade
  keeps seven finite values and the largest is ``1.110b * 2**8 = 448``;
* ``float6_e2m3fn``, ``float6_e3m2fn``, ``float4_e2m1fn`` — every pattern is a finite number
  (no inf, no NaN).

Names are those of ``ml_dtypes`` (and of the ONNX types FLOAT8E4M3FN, FLOAT8E5M2, FLOAT6E2M3,
FLOAT6E3M2, FLOAT4E2M1). Everything here is NumPy only; ``ml_dtypes`` is optional and only used
by :func:`as_ml_dtypes` to view bit patterns, and by the tests as an oracle.

Rounding (:func:`round_to_format`) is round to nearest, ties to even, computed from the exact
input value on the format's grid extended upward with unbounded exponent; a result beyond
``max_finite`` is then saturated to ``±max_finite`` (ONNX ``saturate=1``) or, with
``saturate=False``, becomes what ONNX Cast specifies (NaN for E4M3FN, ±inf for E5M2; the
formats without inf/NaN always saturate). See ``spec/numerics.md`` ("Float formats").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FloatFormat",
    "FLOAT_FORMATS",
    "float_format",
    "round_to_format",
    "encode_format",
    "decode_format",
    "format_values",
    "as_ml_dtypes",
]

_NAN_CONVENTIONS = ("ieee", "fn", None)


@dataclass(frozen=True)
class FloatFormat:
    """A sign + ``exponent_bits`` + ``mantissa_bits`` floating-point format.

    Only the layout (``exponent_bits``, ``mantissa_bits``) and the special-value convention
    (``has_inf``, ``nan``) are given; every other field is computed from them:

    * ``bias = 2**(exponent_bits - 1) - 1``, ``total_bits = 1 + exponent_bits + mantissa_bits``;
    * ``min_normal = 2**(1 - bias)``, ``min_subnormal = 2**(1 - bias - mantissa_bits)``;
    * ``max_finite``: the largest pattern that is a number —
      ``nan="ieee"`` (all-ones exponent reserved for inf/NaN): ``(2 - 2**-M) * 2**(2**E - 2 - bias)``;
      ``nan="fn"`` (only ``S.1…1.1…1`` is NaN): ``(2 - 2**(1-M)) * 2**(2**E - 1 - bias)``;
      ``nan=None`` (all patterns finite): ``(2 - 2**-M) * 2**(2**E - 1 - bias)``.

    ``nan`` is ``"ieee"`` (exponent all ones and mantissa non-zero), ``"fn"`` (only the
    all-ones magnitude pattern) or ``None`` (the format has no NaN).
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    has_inf: bool
    nan: str | None
    bias: int = field(init=False)
    total_bits: int = field(init=False)
    max_finite: float = field(init=False)
    min_normal: float = field(init=False)
    min_subnormal: float = field(init=False)

    def __post_init__(self):
        e, m = self.exponent_bits, self.mantissa_bits
        if not (isinstance(e, int) and isinstance(m, int) and e >= 1 and m >= 1 and 1 + e + m <= 8):
            raise ValueError(
                f"float format {self.name!r}: need integer exponent_bits >= 1 and mantissa_bits >= 1 "
                f"with 1 + exponent_bits + mantissa_bits <= 8, got {e!r} and {m!r}"
            )
        if self.nan not in _NAN_CONVENTIONS:
            raise ValueError(
                f"float format {self.name!r}: nan must be one of {_NAN_CONVENTIONS}, got {self.nan!r}"
            )
        if self.has_inf and self.nan != "ieee":
            raise ValueError(
                f"float format {self.name!r}: infinities need the IEEE all-ones exponent (nan='ieee')"
            )
        bias = 2 ** (e - 1) - 1
        top_exponent = 2**e - 2 if self.nan == "ieee" else 2**e - 1  # largest exponent field of a number
        top_mantissa = 2**m - 2 if self.nan == "fn" else 2**m - 1  # its largest mantissa field
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "total_bits", 1 + e + m)
        max_finite = np.ldexp(1.0 + top_mantissa / 2**m, top_exponent - bias)
        object.__setattr__(self, "max_finite", float(max_finite))
        object.__setattr__(self, "min_normal", float(np.ldexp(1.0, 1 - bias)))
        object.__setattr__(self, "min_subnormal", float(np.ldexp(1.0, 1 - bias - m)))

    @property
    def min_exponent(self) -> int:
        """``emin = 1 - bias``: the exponent of the smallest normal and of all subnormals."""
        return 1 - self.bias

    def __str__(self) -> str:  # used in error messages and tables
        return self.name


FLOAT_FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float8_e4m3fn", exponent_bits=4, mantissa_bits=3, has_inf=False, nan="fn"),
        FloatFormat("float8_e5m2", exponent_bits=5, mantissa_bits=2, has_inf=True, nan="ieee"),
        FloatFormat("float6_e2m3fn", exponent_bits=2, mantissa_bits=3, has_inf=False, nan=None),
        FloatFormat("float6_e3m2fn", exponent_bits=3, mantissa_bits=2, has_inf=False, nan=None),
        FloatFormat("float4_e2m1fn", exponent_bits=2, mantissa_bits=1, has_inf=False, nan=None),
    )
}


def float_format(name_or_fmt) -> FloatFormat:
    """Return the :class:`FloatFormat` for a name in :data:`FLOAT_FORMATS` (or a format itself)."""
    if isinstance(name_or_fmt, FloatFormat):
        return name_or_fmt
    if not isinstance(name_or_fmt, str):
        raise TypeError(
            f"float format: expected a name (str) or a FloatFormat, got {type(name_or_fmt).__name__}"
        )
    try:
        return FLOAT_FORMATS[name_or_fmt]
    except KeyError:
        known = ", ".join(FLOAT_FORMATS)
        raise ValueError(f"unknown float format {name_or_fmt!r}; known formats: {known}") from None


def _exact_float64(x, name: str) -> np.ndarray:
    """``x`` as float64, refusing dtypes whose values float64 would not hold exactly.

    float16/32/64 convert exactly. Integers convert exactly up to 2**53; a larger integer may
    move by a float64 ulp, but it is far past every format's ``max_finite`` (57344 at most),
    so the rounded result is unchanged. Other dtypes (bool, complex, longdouble, ml_dtypes'
    own types, objects) are refused with a ``TypeError``.
    """
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.dtype.itemsize <= 8:
        # A signalling NaN becomes a quiet NaN (same sign) and sets the "invalid" flag.
        with np.errstate(invalid="ignore"):
            return a.astype(np.float64)
    if a.dtype.kind in "iu":
        return a.astype(np.float64)
    raise TypeError(
        f"{name}: expected a float16/float32/float64 (or integer) array, got dtype {a.dtype}"
    )


def _round_magnitude(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Round finite ``a >= 0`` (float64) to nearest, ties to even, on the unbounded-exponent grid.

    With ``a = f * 2**k`` (``np.frexp``, ``f`` in [0.5, 1)), ``a`` lies in the binade
    ``[2**e, 2**(e+1))`` with ``e = k - 1``; below the smallest normal the grid spacing stops
    shrinking, so ``e = max(k - 1, emin)``. The grid spacing there is ``q = 2**(e - M)``, and
    the result is ``rint(a / q) * q``. Both scalings are by powers of two and exact in float64
    (``a / q`` lands in ``[0, 2**(M+1)]``), and ``np.rint`` rounds half to even — so the only
    rounding is the one intended, from the exact input value. The result may be one grid point
    past ``max_finite`` (or ``2**(e+1)``, the first point of the next binade); the caller
    decides what overflow means.
    """
    _, k = np.frexp(a)
    e = np.maximum(k - 1, fmt.min_exponent)
    shift = fmt.mantissa_bits - e
    # A float64 input within half an ulp of DBL_MAX rounds to 2**1024 = inf in float64: past
    # max_finite either way, so the overflow warning carries no information.
    with np.errstate(over="ignore"):
        return np.ldexp(np.rint(np.ldexp(a, shift)), -shift)


def round_to_format(x, fmt, *, saturate: bool = True, name: str = "x") -> np.ndarray:
    """Round ``x`` onto the grid of ``fmt``; return float32 values that are exactly on the grid.

    Rule, element by element, for ``v = float64(x)`` (exact for float16/32/64 input, so a
    float64 input is rounded once, from its exact value — never through float32 first):

    * finite ``v``: ``r = round_half_even(|v|)`` on the format's grid (subnormals included)
      extended upward with unbounded exponent (:func:`_round_magnitude`); the sign of ``v`` is
      kept, also on a zero result (``-1e-9 -> -0.0``).
      If ``r > max_finite`` (ONNX's ``[x] > FLT_MAX``):
      ``saturate=True`` gives ``±max_finite`` (ONNX Cast/QuantizeLinear ``saturate=1``);
      ``saturate=False`` gives NaN (sign of ``v`` kept) for ``float8_e4m3fn`` and ``±inf`` for
      ``float8_e5m2`` (ONNX ``saturate=0``). Formats without inf and NaN (FP6, FP4) always
      saturate: ONNX's ``saturate`` applies to FP8 only and its FP4/FP6 cast tables saturate.
    * ``±inf``: ``±max_finite`` when saturating (and always for FP6/FP4); with
      ``saturate=False`` ``±inf`` for E5M2 and NaN (sign kept) for E4M3FN.
    * NaN: NaN (sign bit kept) for formats that have NaN; a ``ValueError`` for FP6/FP4, which
      cannot represent it (ONNX leaves that case unspecified; ``ml_dtypes`` returns a zero).

    Every grid value of these formats is a float32, so the float32 result is exact.
    ``name`` labels ``x`` in error messages.
    """
    fmt = float_format(fmt)
    v = _exact_float64(x, name)
    nan = np.isnan(v)
    if fmt.nan is None and nan.any():
        where = tuple(int(i) for i in np.argwhere(nan)[0])
        raise ValueError(
            f"{name}: {int(nan.sum())} NaN value(s) (first at index {where}); "
            f"{fmt.name} has no NaN encoding"
        )
    clamp = saturate or (fmt.nan is None and not fmt.has_inf)
    overflow_value = fmt.max_finite if clamp else (np.inf if fmt.has_inf else np.nan)

    out = np.array(v)  # NaN stays NaN, sign bit included
    finite = np.isfinite(v)
    r = _round_magnitude(np.abs(v[finite]), fmt)
    r[r > fmt.max_finite] = overflow_value
    out[finite] = np.copysign(r, v[finite])
    infinite = np.isinf(v)
    out[infinite] = np.copysign(overflow_value, v[infinite])
    with np.errstate(invalid="ignore"):  # NaN payloads: see _exact_float64
        return out.astype(np.float32)


def _encode_grid(r: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Bit patterns (uint8) of float64 values already on the grid of ``fmt`` (or inf/NaN).

    ``sign << (E + M) | exponent_field << M | mantissa_field`` with, for finite ``|r|``:
    normal (``|r| >= min_normal``, ``|r| = 2**e * (1 + m / 2**M)``): fields ``e + bias`` and
    ``m``; subnormal: fields ``0`` and ``|r| / min_subnormal``. Inf: exponent all ones,
    mantissa 0. NaN: ``S.1…1.1…1`` for ``"fn"``; for ``"ieee"`` exponent all ones with only the
    top mantissa bit set (the quiet NaN ``0x7E`` that ``ml_dtypes`` produces for E5M2). The
    sign bit of ``r`` is kept, for zeros and NaNs too.
    """
    E, M = fmt.exponent_bits, fmt.mantissa_bits
    exp_all_ones = 2**E - 1
    sign = np.signbit(r).astype(np.uint8) << np.uint8(E + M)
    a = np.abs(r)
    exponent = np.zeros(r.shape, np.int64)
    mantissa = np.zeros(r.shape, np.int64)

    finite = np.isfinite(a)
    af = a[finite]
    _, k = np.frexp(af)
    e = np.maximum(k - 1, fmt.min_exponent)
    normal = af >= fmt.min_normal
    scaled = np.ldexp(af, M - e).astype(np.int64)  # exact: af is on the grid
    exponent[finite] = np.where(normal, e + fmt.bias, 0)
    mantissa[finite] = np.where(normal, scaled - 2**M, scaled)

    exponent[np.isinf(a)] = exp_all_ones
    isnan = np.isnan(a)
    exponent[isnan] = exp_all_ones
    mantissa[isnan] = 2**M - 1 if fmt.nan == "fn" else 2 ** (M - 1)
    return sign | (exponent << M | mantissa).astype(np.uint8)


def encode_format(x, fmt, *, saturate: bool = True, name: str = "x") -> np.ndarray:
    """Bit patterns (uint8, in the low ``total_bits`` bits) of ``round_to_format(x, fmt, saturate=...)``.

    Layout ``S | exponent field | mantissa field`` as described in :func:`_encode_grid`;
    FP6 and FP4 values use the low 6 and 4 bits of each byte (one value per byte, unpacked).
    """
    fmt = float_format(fmt)
    r = round_to_format(x, fmt, saturate=saturate, name=name)
    return _encode_grid(r.astype(np.float64), fmt)


def _checked_bits(bits, fmt: FloatFormat, name: str) -> np.ndarray:
    b = np.asarray(bits)
    if b.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array of {fmt.name} bit patterns, got dtype {b.dtype}")
    bad = (b < 0) | (b >= 2**fmt.total_bits)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: bit pattern {int(b[where])} at index {where} does not fit in the "
            f"{fmt.total_bits} bits of {fmt.name} (valid: 0..{2**fmt.total_bits - 1})"
        )
    return b.astype(np.int64)


def decode_format(bits, fmt, *, name: str = "bits") -> np.ndarray:
    """The float32 values of ``fmt`` bit patterns (integers in ``0 .. 2**total_bits - 1``).

    ``S.e.m`` decodes to ``(-1)**S * 2**(e - bias) * (1 + m / 2**M)`` for ``e > 0`` and
    ``(-1)**S * 2**emin * m / 2**M`` for ``e = 0``; for ``nan="ieee"`` an all-ones exponent
    is ``±inf`` (``m = 0``) or NaN, for ``nan="fn"`` only ``S.1…1.1…1`` is NaN. A NaN keeps
    the pattern's sign bit. Exact: every value is a float32.
    """
    fmt = float_format(fmt)
    b = _checked_bits(bits, fmt, name)
    E, M = fmt.exponent_bits, fmt.mantissa_bits
    negative = (b >> (E + M)) & 1
    exponent = (b >> M) & (2**E - 1)
    mantissa = b & (2**M - 1)
    normal = exponent > 0
    magnitude = np.where(
        normal,
        np.ldexp(1.0 + mantissa / 2**M, exponent - fmt.bias),
        np.ldexp(mantissa.astype(np.float64), fmt.min_exponent - M),
    )
    top = exponent == 2**E - 1
    if fmt.nan == "ieee":
        magnitude = np.where(top, np.where(mantissa == 0, np.inf, np.nan), magnitude)
    elif fmt.nan == "fn":
        magnitude = np.where(top & (mantissa == 2**M - 1), np.nan, magnitude)
    return np.where(negative == 1, -magnitude, magnitude).astype(np.float32)


def format_values(fmt) -> np.ndarray:
    """Every finite value of ``fmt`` as float64, ascending, with a single (+0.0) zero.

    Built by decoding all positive bit patterns: ``-v`` for each non-zero ``v`` in reverse,
    then ``0``, then the positive values. ``2**total_bits - 1`` values for formats without
    inf/NaN (e.g. 15 for FP4), 253 for E4M3FN, 247 for E5M2.
    """
    fmt = float_format(fmt)
    positive = decode_format(np.arange(2 ** (fmt.total_bits - 1)), fmt).astype(np.float64)
    positive = positive[np.isfinite(positive)]  # patterns are in increasing value order
    return np.concatenate([-positive[:0:-1], positive])


def as_ml_dtypes(bits, fmt, *, name: str = "bits") -> np.ndarray:
    """View ``fmt`` bit patterns as an array of the ``ml_dtypes`` type of the same name.

    A convenience for printing and for comparing with other libraries; ``ml_dtypes`` is an
    optional dependency (in the ``test`` extra) and is imported only here.
    """
    fmt = float_format(fmt)
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ImportError(
            "as_ml_dtypes needs the optional package ml_dtypes; install it with "
            "`pip install refquant[test]` (or `pip install ml_dtypes`)"
        ) from exc
    b = _checked_bits(bits, fmt, name)
    return b.astype(np.uint8).view(getattr(ml_dtypes, fmt.name))
