"""Float formats (FP8/FP6/FP4): layouts, rounding, saturation, encoding.

Oracles: ``ml_dtypes`` (decoding every bit pattern, casts from float16/float32), exact
``fractions.Fraction`` arithmetic (casts from float64, where ``ml_dtypes`` rounds through
float32 first), the ``onnx`` reference evaluator's Cast and onnxruntime's Cast. Every place
where an oracle disagrees with refquant is asserted here with the documented values
(spec/numerics.md, "Float formats").
"""

from __future__ import annotations

import bisect
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refquant.numerics.floatformats import (
    FLOAT_FORMATS,
    FloatFormat,
    as_ml_dtypes,
    decode_format,
    encode_format,
    float_format,
    format_values,
    round_to_format,
)

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - the test extra installs it
    ml_dtypes = None

needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None, reason="needs ml_dtypes (test extra)")

NAMES = list(FLOAT_FORMATS)
FP8 = ["float8_e4m3fn", "float8_e5m2"]
NO_NAN = ["float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"]
ONNX_TYPE = {
    "float8_e4m3fn": "FLOAT8E4M3FN",
    "float8_e5m2": "FLOAT8E5M2",
    "float6_e2m3fn": "FLOAT6E2M3",
    "float6_e3m2fn": "FLOAT6E3M2",
    "float4_e2m1fn": "FLOAT4E2M1",
}


def bits_equal(a, b) -> bool:
    """Bit-exact float32 equality (distinguishes -0.0 from 0.0; NaN payloads ignored)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    same = a.view(np.uint32) == b.view(np.uint32)
    return bool(np.all(same | (np.isnan(a) & np.isnan(b))))


def ml_cast(x, name):
    """``ml_dtypes`` cast and its bit patterns."""
    with np.errstate(invalid="ignore"):  # signalling NaNs among random bit patterns
        y = np.asarray(x).astype(getattr(ml_dtypes, name))
    return y.astype(np.float32), y.view(np.uint8)


def all_float16():
    return np.arange(2**16, dtype=np.uint16).view(np.float16)


def random_float32(n, seed):
    """Random float32 bit patterns (every exponent equally likely) plus values near the range."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**32, n, dtype=np.uint32).view(np.float32)
    return x


def in_range_float32(fmt, n, seed):
    rng = np.random.default_rng(seed)
    m = fmt.max_finite
    return np.concatenate(
        [
            rng.uniform(-1.1 * m, 1.1 * m, n),
            rng.standard_normal(n) * fmt.min_normal * 4,  # subnormal and small normal range
        ]
    ).astype(np.float32)


# ------------------------------------------------------------------ layouts


# Closed-form table (spec/numerics.md): bias, max finite, min normal, min subnormal, finite count.
LAYOUT_TABLE = {
    "float8_e4m3fn": (7, 448.0, 2.0**-6, 2.0**-9, 253),
    "float8_e5m2": (15, 57344.0, 2.0**-14, 2.0**-16, 247),
    "float6_e2m3fn": (1, 7.5, 1.0, 0.125, 63),
    "float6_e3m2fn": (3, 28.0, 0.25, 0.0625, 63),
    "float4_e2m1fn": (1, 6.0, 1.0, 0.5, 15),
}


@pytest.mark.parametrize("name", NAMES)
def test_layout_matches_spec_table(name):
    fmt = FLOAT_FORMATS[name]
    bias, max_finite, min_normal, min_subnormal, count = LAYOUT_TABLE[name]
    assert (fmt.bias, fmt.max_finite, fmt.min_normal, fmt.min_subnormal) == (
        bias, max_finite, min_normal, min_subnormal
    )
    assert fmt.total_bits == 1 + fmt.exponent_bits + fmt.mantissa_bits
    assert len(format_values(fmt)) == count


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_layout_matches_ml_dtypes_finfo(name):
    fmt = FLOAT_FORMATS[name]
    fi = ml_dtypes.finfo(getattr(ml_dtypes, name))
    assert fmt.total_bits == fi.bits
    assert fmt.exponent_bits == fi.nexp
    assert fmt.mantissa_bits == fi.nmant
    assert fmt.max_finite == float(fi.max)
    assert fmt.min_normal == float(fi.smallest_normal)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.min_exponent == fi.minexp


def test_special_value_conventions():
    assert (FLOAT_FORMATS["float8_e4m3fn"].has_inf, FLOAT_FORMATS["float8_e4m3fn"].nan) == (False, "fn")
    assert (FLOAT_FORMATS["float8_e5m2"].has_inf, FLOAT_FORMATS["float8_e5m2"].nan) == (True, "ieee")
    for name in NO_NAN:
        assert (FLOAT_FORMATS[name].has_inf, FLOAT_FORMATS[name].nan) == (False, None)


def test_float_format_lookup_and_errors():
    fmt = FLOAT_FORMATS["float8_e5m2"]
    assert float_format("float8_e5m2") is fmt
    assert float_format(fmt) is fmt
    with pytest.raises(ValueError, match="unknown float format 'fp8'.*float8_e4m3fn.*float4_e2m1fn"):
        float_format("fp8")
    with pytest.raises(TypeError, match="expected a name"):
        float_format(8)
    with pytest.raises(ValueError, match="nan must be one of"):
        FloatFormat("bad", exponent_bits=4, mantissa_bits=3, has_inf=False, nan="quiet")
    with pytest.raises(ValueError, match="infinities need"):
        FloatFormat("bad", exponent_bits=4, mantissa_bits=3, has_inf=True, nan="fn")
    with pytest.raises(ValueError, match="exponent_bits"):
        FloatFormat("bad", exponent_bits=5, mantissa_bits=3, has_inf=False, nan=None)


# ------------------------------------------------------------------ decoding / encoding


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_decode_every_pattern_matches_ml_dtypes(name):
    fmt = FLOAT_FORMATS[name]
    bits = np.arange(2**fmt.total_bits, dtype=np.uint8)
    expected = bits.view(getattr(ml_dtypes, name)).astype(np.float32)
    got = decode_format(bits, fmt)
    assert got.dtype == np.float32
    assert bits_equal(got, expected)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(np.signbit(got), np.signbit(expected))  # also the sign of NaNs


@pytest.mark.parametrize("name", NAMES)
def test_encode_decode_round_trip_every_pattern(name):
    fmt = FLOAT_FORMATS[name]
    bits = np.arange(2**fmt.total_bits)
    values = decode_format(bits, fmt)
    is_nan = np.isnan(values)
    # Every number (zeros, subnormals, ±inf) re-encodes to its own pattern.
    assert np.array_equal(encode_format(values[~is_nan], fmt, saturate=False), bits[~is_nan])
    # Every NaN pattern re-encodes to the format's one NaN of the same sign.
    nan_bits = encode_format(values[is_nan], fmt)
    sign = 1 << (fmt.total_bits - 1)
    if fmt.nan is None:
        assert nan_bits.size == 0
    else:
        canonical = {"fn": 0x7F, "ieee": 0x7E}[fmt.nan]
        assert set(nan_bits.tolist()) <= {canonical, canonical | sign}
    assert np.array_equal(nan_bits & sign, bits[is_nan] & sign)
    # Saturating: ±inf patterns become ±max_finite patterns, everything else is unchanged.
    sat = encode_format(values[~is_nan], fmt, saturate=True)
    finite = np.isfinite(values[~is_nan])
    assert np.array_equal(sat[finite], bits[~is_nan][finite])
    assert bits_equal(decode_format(sat[~finite], fmt), np.copysign(fmt.max_finite, values[~is_nan][~finite]))


@pytest.mark.parametrize("name", NAMES)
def test_format_values_sorted_one_zero_symmetric(name):
    fmt = FLOAT_FORMATS[name]
    v = format_values(fmt)
    assert v.dtype == np.float64
    assert np.all(np.diff(v) > 0)
    assert np.count_nonzero(v == 0) == 1 and not np.signbit(v[v == 0][0])
    assert np.array_equal(v, -v[::-1])
    assert v[-1] == fmt.max_finite and v[v > 0][0] == fmt.min_subnormal
    # Every grid value is a fixed point of rounding.
    assert bits_equal(round_to_format(v, fmt), v)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_format_values_equal_ml_dtypes_finite_values(name):
    fmt = FLOAT_FORMATS[name]
    allv = np.arange(2**fmt.total_bits, dtype=np.uint8).view(getattr(ml_dtypes, name)).astype(np.float64)
    expected = np.unique(allv[np.isfinite(allv)])
    assert np.array_equal(format_values(fmt), expected)


@pytest.mark.parametrize("name", NAMES)
def test_decode_rejects_bits_that_do_not_fit(name):
    fmt = FLOAT_FORMATS[name]
    top = 2**fmt.total_bits
    with pytest.raises(ValueError, match=rf"codes: bit pattern {top} at index \(1,\) does not fit in the {fmt.total_bits} bits"):
        decode_format(np.array([0, top]), fmt, name="codes")
    with pytest.raises(ValueError, match="does not fit"):
        decode_format(np.array([-1]), fmt)
    with pytest.raises(TypeError, match="expected an integer array"):
        decode_format(np.array([1.0]), fmt)


# ------------------------------------------------------------------ rounding vs ml_dtypes


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_non_saturating_equals_ml_dtypes_on_every_float16(name):
    """saturate=False is ml_dtypes' cast, bit pattern for bit pattern (NaN sign included)."""
    fmt = FLOAT_FORMATS[name]
    x = all_float16()
    if fmt.nan is None:
        x = x[~np.isnan(x)]
    _, expected_bits = ml_cast(x, name)
    assert np.array_equal(encode_format(x, fmt, saturate=False), expected_bits)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_non_saturating_equals_ml_dtypes_on_random_float32(name):
    fmt = FLOAT_FORMATS[name]
    x = np.concatenate([random_float32(100_000, seed=1), in_range_float32(fmt, 50_000, seed=2)])
    if fmt.nan is None:
        x = x[~np.isnan(x)]
    _, expected_bits = ml_cast(x, name)
    assert np.array_equal(encode_format(x, fmt, saturate=False), expected_bits)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_saturating_equals_ml_dtypes_of_clipped_input(name):
    """saturate=True is ml_dtypes' cast of ``clip(x, -max, max)`` (the onnx reference recipe)."""
    fmt = FLOAT_FORMATS[name]
    x = np.concatenate([all_float16().astype(np.float32), random_float32(100_000, seed=3),
                        in_range_float32(fmt, 50_000, seed=4)])
    if fmt.nan is None:
        x = x[~np.isnan(x)]
    _, expected_bits = ml_cast(np.clip(x, -fmt.max_finite, fmt.max_finite), name)
    assert np.array_equal(encode_format(x, fmt), expected_bits)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_saturating_equals_plain_ml_dtypes_cast_inside_range(name):
    fmt = FLOAT_FORMATS[name]
    x = in_range_float32(fmt, 50_000, seed=5)
    x = x[np.abs(x) <= fmt.max_finite]
    expected, _ = ml_cast(x, name)
    assert bits_equal(round_to_format(x, fmt), expected)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
@given(x=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64))
def test_hypothesis_float32_equals_ml_dtypes(name, x):
    fmt = FLOAT_FORMATS[name]
    x = np.array(x, np.float32)
    _, expected_bits = ml_cast(x, name)
    assert np.array_equal(encode_format(x, fmt, saturate=False), expected_bits)
    _, clipped_bits = ml_cast(np.clip(x, -fmt.max_finite, fmt.max_finite), name)
    assert np.array_equal(encode_format(x, fmt), clipped_bits)


def midpoints(fmt):
    """Exact midpoints between consecutive finite grid values (all are float32 numbers)."""
    g = format_values(fmt)
    mids = (g[:-1] + g[1:]) / 2
    assert np.array_equal(mids.astype(np.float32).astype(np.float64), mids)
    return g, mids.astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_midpoints_round_to_even_pattern(name):
    fmt = FLOAT_FORMATS[name]
    g, mids = midpoints(fmt)
    r = round_to_format(mids, fmt).astype(np.float64)
    assert np.all((r == g[:-1]) | (r == g[1:]))
    assert np.all(encode_format(mids, fmt) & 1 == 0)  # even mantissa field (zero counts as even)
    up = np.nextafter(mids, np.float32(np.inf))
    down = np.nextafter(mids, np.float32(-np.inf))
    assert np.array_equal(round_to_format(up, fmt).astype(np.float64), g[1:])
    assert np.array_equal(round_to_format(down, fmt).astype(np.float64), g[:-1])


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_midpoints_and_neighbours_equal_ml_dtypes(name):
    fmt = FLOAT_FORMATS[name]
    _, mids = midpoints(fmt)
    x = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))])
    _, expected_bits = ml_cast(x, name)
    assert np.array_equal(encode_format(x, fmt), expected_bits)


# ------------------------------------------------------------------ float64 input: exact oracle


def exact_round(x: float, fmt: FloatFormat) -> float:
    """Saturating round-to-nearest-even by exact rational arithmetic (an independent oracle).

    Nearest finite grid value by |x - g| as Fractions; a tie goes to the neighbour whose bit
    pattern is even (ties to even) — the k-th non-negative value has pattern k, since the
    patterns of a sign are in increasing order of magnitude. Beyond ±max_finite the nearest
    finite value is ±max_finite, which is the saturate=True rule.
    """
    grid = [float(v) for v in format_values(fmt)]
    pattern = {v: k for k, v in enumerate(v for v in grid if v >= 0)}
    i = bisect.bisect_left(grid, x)
    if i == 0:
        return grid[0]
    if i == len(grid):
        return grid[-1]
    lo, hi = grid[i - 1], grid[i]
    d_lo, d_hi = Fraction(x) - Fraction(lo), Fraction(hi) - Fraction(x)
    if d_lo != d_hi:
        out = lo if d_lo < d_hi else hi
    else:
        out = lo if pattern[abs(lo)] % 2 == 0 else hi
    if out == 0:
        out = float(np.copysign(0.0, x))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_float64_just_off_midpoints_is_rounded_once(name):
    """x = mid ± mid·2**-30: nearer to one neighbour, but float32(x) == mid (a tie)."""
    fmt = FLOAT_FORMATS[name]
    g, mids = midpoints(fmt)
    m = mids.astype(np.float64)
    m = m[m != 0]
    for off in (2.0**-30, -(2.0**-30)):
        x = m * (1 + off)  # off > 0: away from zero
        assert np.array_equal(x.astype(np.float32), mids[mids != 0])  # float32 would make ties
        got = round_to_format(x, fmt).astype(np.float64)
        oracle = np.array([exact_round(float(v), fmt) for v in x])
        assert np.array_equal(got, oracle)
        assert np.all(np.abs(got) > np.abs(m)) if off > 0 else np.all(np.abs(got) < np.abs(m))


@pytest.mark.parametrize("name", NAMES)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_hypothesis_float64_equals_exact_rational_rounding(name, x):
    fmt = FLOAT_FORMATS[name]
    assert bits_equal(round_to_format(np.float64(x), fmt), np.float32(exact_round(x, fmt)))


@pytest.mark.parametrize("name", NAMES)
@given(
    x=st.lists(st.floats(width=32, allow_nan=False), min_size=2, max_size=32),
)
def test_hypothesis_rounding_properties(name, x):
    """Odd symmetry, idempotence, monotonicity, results on the grid, nearest neighbour."""
    fmt = FLOAT_FORMATS[name]
    x = np.sort(np.array(x, np.float32))
    r = round_to_format(x, fmt)
    assert bits_equal(round_to_format(-x, fmt), -r)
    assert bits_equal(round_to_format(r, fmt), r)
    assert np.all(np.diff(r.astype(np.float64)) >= 0)
    g = format_values(fmt)
    assert np.all(np.isin(r.astype(np.float64), g))
    xf = np.clip(x.astype(np.float64), -fmt.max_finite, fmt.max_finite)
    dist = np.abs(xf - r)
    assert np.all(dist <= np.min(np.abs(xf[:, None] - g[None, :]), axis=1))


def ml_dtypes_float64_rounding() -> str:
    """How the installed ml_dtypes casts float64 to E4M3FN: ``"double"`` or ``"exact"``.

    Measured, not assumed: ml_dtypes up to 0.5 cast float64 by way of float32 (two roundings),
    0.7.0 rounds float64 once. ``17 + 2**-30`` lies just above the midpoint 17 between the
    E4M3FN neighbours 16 and 18; float32 makes it the tie 17, which rounds to even (16).
    """
    x = np.array([17 + 2.0**-30], np.float64)
    return {16.0: "double", 18.0: "exact"}[float(x.astype(ml_dtypes.float8_e4m3fn)[0])]


@needs_ml_dtypes
def test_ml_dtypes_float64_cast_is_one_of_the_known_behaviours():
    """refquant rounds float64 once, whatever ml_dtypes does; ml_dtypes is an oracle for
    float64 input only where it rounds once too (spec/numerics.md records the versions)."""
    x = np.array([17 + 2.0**-30, 46 - 2.0**-28], np.float64)
    assert round_to_format(x, "float8_e4m3fn").tolist() == [18.0, 44.0]
    assert exact_round(float(x[0]), FLOAT_FORMATS["float8_e4m3fn"]) == 18.0
    oracle = x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64).tolist()
    expected = {"double": [16.0, 48.0], "exact": [18.0, 44.0]}[ml_dtypes_float64_rounding()]
    assert oracle == expected


@needs_ml_dtypes
def test_ml_dtypes_equals_refquant_on_float64_where_it_rounds_once():
    """Where the installed ml_dtypes rounds float64 once, it is an oracle for float64 too."""
    if ml_dtypes_float64_rounding() != "exact":
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} rounds float64 through float32")
    for name in ("float8_e4m3fn", "float8_e5m2"):
        fmt = FLOAT_FORMATS[name]
        _, mids = midpoints(fmt)
        mids = mids.astype(np.float64)
        x = np.concatenate([mids * (1 + 2.0**-30), mids * (1 - 2.0**-30)])
        x = x[np.abs(x) <= fmt.max_finite]
        ours = round_to_format(x, fmt)
        theirs = x.astype(getattr(ml_dtypes, name)).astype(np.float64)
        assert np.array_equal(ours, theirs), name


# ------------------------------------------------------------------ worked examples (spec)


WORKED_EXAMPLES = [
    # (format, input, dtype, result) — the examples in spec/numerics.md
    ("float8_e4m3fn", 0.3, np.float32, 0.3125),  # q = 2**-5, 0.3/q = 9.6 -> 10
    ("float8_e4m3fn", 17.0, np.float32, 16.0),  # q = 2, 8.5 -> 8 (tie, even)
    ("float8_e4m3fn", 19.0, np.float32, 20.0),  # 9.5 -> 10 (tie, even)
    ("float8_e4m3fn", 17 + 2.0**-30, np.float64, 18.0),  # exact value is above the tie
    ("float8_e4m3fn", 0.001, np.float32, 0.001953125),  # subnormal: q = 2**-9, 0.512 -> 1
    ("float8_e4m3fn", 0.0009765625, np.float32, 0.0),  # 2**-10 = q/2: tie to 0
    ("float8_e4m3fn", 464.0, np.float32, 448.0),  # q = 32, 14.5 -> 14 (tie, even)
    ("float8_e4m3fn", 465.0, np.float32, 448.0),  # 480 on the extended grid, saturated
    ("float8_e5m2", 100.0, np.float32, 96.0),  # q = 16, 6.25 -> 6
    ("float8_e5m2", 61440.0, np.float32, 57344.0),  # 65536 on the extended grid, saturated
    ("float4_e2m1fn", 2.5, np.float32, 2.0),  # q = 1, 2.5 -> 2
    ("float4_e2m1fn", 5.0, np.float32, 4.0),  # q = 2, 2.5 -> 2
    ("float4_e2m1fn", 0.25, np.float32, 0.0),  # q = 0.5, 0.5 -> 0
    ("float4_e2m1fn", 0.75, np.float32, 1.0),  # 1.5 -> 2
    ("float4_e2m1fn", 7.0, np.float32, 6.0),  # 3.5 -> 4: 8 on the extended grid, saturated
    ("float6_e2m3fn", 25.0, np.float32, 7.5),  # ONNX float6 doc example
    ("float6_e3m2fn", 25.0, np.float32, 24.0),  # ONNX float6 doc example: q = 4, 6.25 -> 6
    ("float6_e3m2fn", 30.0, np.float32, 28.0),  # 7.5 -> 8: 32, saturated
]


@pytest.mark.parametrize("name,x,dtype,expected", WORKED_EXAMPLES)
def test_worked_examples(name, x, dtype, expected):
    got = round_to_format(np.array([x, -x], dtype), name)
    assert got.dtype == np.float32
    assert bits_equal(got, np.array([expected, -expected], np.float32))


# ------------------------------------------------------------------ overflow, inf, NaN, zero


INF = np.float32(np.inf)
E4M3_ABOVE_464 = np.nextafter(np.float32(464), INF)
E5M2_BELOW_61440 = np.nextafter(np.float32(61440), -INF)

# (format, input, saturate=True result, saturate=False result) — spec/numerics.md saturate table
SATURATE_TABLE = [
    ("float8_e4m3fn", 464.0, 448.0, 448.0),
    ("float8_e4m3fn", E4M3_ABOVE_464, 448.0, np.nan),
    ("float8_e4m3fn", 1e6, 448.0, np.nan),
    ("float8_e4m3fn", np.inf, 448.0, np.nan),
    ("float8_e5m2", E5M2_BELOW_61440, 57344.0, 57344.0),
    ("float8_e5m2", 61440.0, 57344.0, np.inf),
    ("float8_e5m2", np.inf, 57344.0, np.inf),
    ("float6_e2m3fn", 7.75, 7.5, 7.5),
    ("float6_e2m3fn", np.inf, 7.5, 7.5),
    ("float6_e3m2fn", 1e6, 28.0, 28.0),
    ("float6_e3m2fn", np.inf, 28.0, 28.0),
    ("float4_e2m1fn", 7.0, 6.0, 6.0),
    ("float4_e2m1fn", np.inf, 6.0, 6.0),
]


@pytest.mark.parametrize("name,x,sat,nonsat", SATURATE_TABLE)
def test_saturate_table(name, x, sat, nonsat):
    x = np.array([x, -x], np.float32)
    assert bits_equal(round_to_format(x, name, saturate=True), np.array([sat, -sat], np.float32))
    got = round_to_format(x, name, saturate=False)
    assert bits_equal(got, np.array([nonsat, -nonsat], np.float32))
    if np.isnan(nonsat):  # the NaN keeps the sign: 0x7F / 0xFF
        assert encode_format(x, name, saturate=False).tolist() == [0x7F, 0xFF]


@needs_ml_dtypes
def test_documented_differences_from_ml_dtypes():
    """ml_dtypes does not saturate the FP8 types: E4M3FN gives NaN above 464, E5M2 ±inf from 61440."""
    x = np.array([464.0, E4M3_ABOVE_464, 1e6, np.inf], np.float32)
    ml, _ = ml_cast(x, "float8_e4m3fn")
    assert ml[0] == 448 and np.all(np.isnan(ml[1:]))
    assert np.all(round_to_format(x, "float8_e4m3fn") == 448)
    x = np.array([E5M2_BELOW_61440, 61440.0, 1e6, np.inf], np.float32)
    ml, _ = ml_cast(x, "float8_e5m2")
    assert ml[0] == 57344 and np.all(ml[1:] == np.inf)
    assert np.all(round_to_format(x, "float8_e5m2") == 57344)
    for name in NO_NAN:  # these ml_dtypes types do saturate
        fmt = FLOAT_FORMATS[name]
        ml, _ = ml_cast(np.array([1e30, np.inf], np.float32), name)
        assert np.all(ml == fmt.max_finite)
        # ... and turn NaN into a zero of the opposite sign; refquant raises instead.
        ml, _ = ml_cast(np.array([np.nan, -np.nan], np.float32), name)
        assert bits_equal(ml, np.array([-0.0, 0.0], np.float32))


@pytest.mark.parametrize("name", FP8)
@pytest.mark.parametrize("saturate", [True, False])
def test_nan_propagates_with_sign(name, saturate):
    canonical = {"float8_e4m3fn": 0x7F, "float8_e5m2": 0x7E}[name]
    x = np.array([np.nan, -np.nan], np.float32)
    r = round_to_format(x, name, saturate=saturate)
    assert np.all(np.isnan(r)) and np.signbit(r).tolist() == [False, True]
    assert encode_format(x, name, saturate=saturate).tolist() == [canonical, canonical | 0x80]


@pytest.mark.parametrize("name", NO_NAN)
@pytest.mark.parametrize("saturate", [True, False])
def test_nan_input_raises_where_format_has_no_nan(name, saturate):
    x = np.array([[1.0, 2.0], [np.nan, 3.0]], np.float32)
    with pytest.raises(ValueError, match=rf"weights: 1 NaN value\(s\) \(first at index \(1, 0\)\); {name} has no NaN"):
        round_to_format(x, name, saturate=saturate, name="weights")
    with pytest.raises(ValueError, match="has no NaN"):
        encode_format(x, name, saturate=saturate)


@pytest.mark.parametrize("name", NAMES)
def test_signed_zero_is_kept(name):
    fmt = FLOAT_FORMATS[name]
    tiny = fmt.min_subnormal / 4  # rounds to zero
    x = np.array([0.0, -0.0, tiny, -tiny], np.float32)
    assert bits_equal(round_to_format(x, fmt), np.array([0.0, -0.0, 0.0, -0.0], np.float32))
    sign = 1 << (fmt.total_bits - 1)
    assert encode_format(x, fmt).tolist() == [0, sign, 0, sign]


# ------------------------------------------------------------------ input handling


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8])
def test_accepted_input_dtypes(dtype):
    x = np.array([[1, 3], [5, 100]], dtype)
    r = round_to_format(x, "float4_e2m1fn")
    assert r.dtype == np.float32 and r.shape == (2, 2)
    assert r.tolist() == [[1.0, 3.0], [4.0, 6.0]]
    assert encode_format(x, "float4_e2m1fn").dtype == np.uint8


def test_scalars_and_empty_arrays():
    assert round_to_format(0.3, "float8_e4m3fn").shape == ()
    assert float(round_to_format(0.3, "float8_e4m3fn")) == 0.3125
    assert int(encode_format(-448.0, "float8_e4m3fn")) == 0xFE
    assert round_to_format(np.zeros((0, 3), np.float32), "float8_e5m2").shape == (0, 3)
    assert encode_format(np.zeros(0), "float4_e2m1fn").shape == (0,)


def test_huge_float64_input_saturates_without_warning():
    x = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max])
    with np.errstate(all="raise"):
        assert round_to_format(x, "float8_e5m2").tolist() == [57344.0, -57344.0]
        assert round_to_format(x, "float8_e5m2", saturate=False).tolist() == [np.inf, -np.inf]
        assert np.all(round_to_format(np.array([5e-324]), "float8_e5m2") == 0)


@pytest.mark.parametrize("bad", [np.array([True]), np.array([1 + 1j]), np.array([1.0], np.longdouble)])
def test_rejected_input_dtypes(bad):
    if bad.dtype == np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=r"acts: expected a float16/float32/float64 \(or integer\) array"):
        round_to_format(bad, "float8_e4m3fn", name="acts")


@needs_ml_dtypes
def test_ml_dtypes_arrays_are_rejected_as_input():
    with pytest.raises(TypeError, match="expected a float16/float32/float64"):
        round_to_format(np.array([1.0], ml_dtypes.bfloat16), "float8_e4m3fn")


# ------------------------------------------------------------------ as_ml_dtypes


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
def test_as_ml_dtypes_views_the_same_values(name):
    fmt = FLOAT_FORMATS[name]
    bits = np.arange(2**fmt.total_bits)
    viewed = as_ml_dtypes(bits, fmt)
    assert viewed.dtype == np.dtype(getattr(ml_dtypes, name))
    assert bits_equal(viewed.astype(np.float32), decode_format(bits, fmt))
    with pytest.raises(ValueError, match="does not fit"):
        as_ml_dtypes(np.array([2**fmt.total_bits]), fmt)


def test_as_ml_dtypes_without_ml_dtypes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes `import ml_dtypes` fail
    with pytest.raises(ImportError, match=r"refquant\[test\]"):
        as_ml_dtypes(np.array([0]), "float8_e4m3fn")


# ------------------------------------------------------------------ onnx reference evaluator


def onnx_cast_model(onnx_type: str, saturate: int, src: str = "FLOAT", decode: bool = False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    to = getattr(TensorProto, onnx_type)
    if decode:  # cast back, for runtimes whose Python API cannot return the 8-bit type
        nodes = [
            helper.make_node("Cast", ["x"], ["q"], to=to, saturate=saturate),
            helper.make_node("Cast", ["q"], ["y"], to=getattr(TensorProto, src)),
        ]
        out_type = getattr(TensorProto, src)
    else:
        nodes = [helper.make_node("Cast", ["x"], ["y"], to=to, saturate=saturate)]
        out_type = to
    graph = helper.make_graph(
        nodes, "cast",
        [helper.make_tensor_value_info("x", getattr(TensorProto, src), [None])],
        [helper.make_tensor_value_info("y", out_type, [None])],
    )
    # Cast to FLOAT4E2M1 needs opset 23, to FLOAT6* opset 28; 21 is the newest onnxruntime
    # implements for FP8 Cast on CPU.
    opset = 21 if decode else 28
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def onnx_reference_cast_bits(x, name, saturate):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    src = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE", np.dtype(np.float16): "FLOAT16"}[x.dtype]
    model = onnx_cast_model(ONNX_TYPE[name], saturate, src)
    with np.errstate(invalid="ignore"):  # signalling NaNs among random bit patterns
        (y,) = ReferenceEvaluator(model).run(None, {"x": x})
    return np.asarray(y).view(np.uint8)


@needs_ml_dtypes
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("saturate", [1, 0])
def test_onnx_reference_cast_equals_encode_format(name, saturate):
    fmt = FLOAT_FORMATS[name]
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e30, -1e30], np.float32)
    x = np.concatenate([specials, random_float32(20_000, seed=7), in_range_float32(fmt, 20_000, seed=8)])
    if fmt.nan is None:
        x = x[~np.isnan(x)]
    _, mids = midpoints(fmt)
    x = np.concatenate([x, mids])
    assert np.array_equal(onnx_reference_cast_bits(x, name, saturate), encode_format(x, fmt, saturate=bool(saturate)))
    # float16 input, every value
    x16 = all_float16()
    x16 = x16[~np.isnan(x16)] if fmt.nan is None else x16
    assert np.array_equal(onnx_reference_cast_bits(x16, name, saturate), encode_format(x16, fmt, saturate=bool(saturate)))


@needs_ml_dtypes
@pytest.mark.parametrize("name", NO_NAN)
def test_onnx_reference_cast_of_nan_gives_a_zero(name):
    """Measured: the onnx reference (via ml_dtypes) casts NaN to -0 and -NaN to +0 for FP4/FP6."""
    bits = onnx_reference_cast_bits(np.array([np.nan, -np.nan], np.float32), name, 1)
    sign = 1 << (FLOAT_FORMATS[name].total_bits - 1)
    assert bits.tolist() == [sign, 0]


@needs_ml_dtypes
def test_onnx_reference_cast_from_float64_follows_ml_dtypes():
    """The onnx reference casts through ml_dtypes: float64 is rounded twice where the installed
    ml_dtypes rounds through float32, once where it does not; refquant always rounds once."""
    x = np.array([17 + 2.0**-30, 46 - 2.0**-28], np.float64)
    ref = decode_format(onnx_reference_cast_bits(x, "float8_e4m3fn", 1), "float8_e4m3fn")
    expected = {"double": [16.0, 48.0], "exact": [18.0, 44.0]}[ml_dtypes_float64_rounding()]
    assert ref.tolist() == expected
    assert round_to_format(x, "float8_e4m3fn").tolist() == [18.0, 44.0]


# ------------------------------------------------------------------ onnxruntime


def ort_cast(x, name, saturate):
    ort = pytest.importorskip("onnxruntime")
    src = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE", np.dtype(np.float16): "FLOAT16"}[x.dtype]
    model = onnx_cast_model(ONNX_TYPE[name], saturate, src, decode=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    return y


@pytest.mark.parametrize("name", FP8)
def test_onnxruntime_saturating_cast_equals_round_to_format(name):
    fmt = FLOAT_FORMATS[name]
    x = np.concatenate([all_float16().astype(np.float32), random_float32(50_000, seed=9),
                        in_range_float32(fmt, 50_000, seed=10), midpoints(fmt)[1]])
    assert bits_equal(ort_cast(x, name, 1), round_to_format(x, fmt))


# onnxruntime's saturate=0 disagreements, measured over every float32 in the range:
# E4M3FN |x| in [480, 496) -> ±448 (exact rounding gives 480 > 448: NaN);
# E5M2   |x| in [61440, 65536) -> NaN (exact rounding gives 65536 > 57344: ±inf).
ORT_NONSAT_DIFFERENCE = {"float8_e4m3fn": (480.0, 496.0), "float8_e5m2": (61440.0, 65536.0)}


@pytest.mark.parametrize("name", FP8)
def test_onnxruntime_non_saturating_cast_differs_only_where_documented(name):
    fmt = FLOAT_FORMATS[name]
    lo, hi = ORT_NONSAT_DIFFERENCE[name]
    # every float32 from just below the overflow threshold to past the difference band
    start = np.float32(fmt.max_finite)
    stop = np.float32(hi * 1.01)
    band = np.arange(start.view(np.uint32), stop.view(np.uint32), dtype=np.uint32).view(np.float32)
    x = np.concatenate([band, -band, random_float32(50_000, seed=11), np.array([np.inf, -np.inf], np.float32)])
    got = ort_cast(x, name, 0)
    ours = round_to_format(x, fmt, saturate=False)
    differ = ~((got.view(np.uint32) == ours.view(np.uint32)) | (np.isnan(got) & np.isnan(ours)))
    in_band = (np.abs(x) >= lo) & (np.abs(x) < hi)
    assert np.array_equal(differ, in_band)
    expected_ort = np.copysign(np.float32(fmt.max_finite), x[in_band]) if name == "float8_e4m3fn" else np.nan
    assert bits_equal(got[in_band], np.broadcast_to(expected_ort, got[in_band].shape))


@pytest.mark.parametrize("name", FP8)
def test_onnxruntime_cast_from_float64_goes_through_float32(name):
    """Measured: onnxruntime rounds float64 input to float32 before the FP8 cast."""
    fmt = FLOAT_FORMATS[name]
    _, mids = midpoints(fmt)
    m = mids.astype(np.float64)
    m = m[m != 0]
    x = np.concatenate([m * (1 + 2.0**-30), m * (1 - 2.0**-30)])
    got = ort_cast(x, name, 1)
    assert bits_equal(got, round_to_format(x.astype(np.float32), fmt))  # double rounding
    # float32(x) is the midpoint, which goes to the even neighbour; the exact value goes to the
    # nearer one. For each midpoint exactly one of the two offsets makes them differ.
    exact = round_to_format(x, fmt)
    assert np.count_nonzero(got.astype(np.float32) != exact) == len(m)
