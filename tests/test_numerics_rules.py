"""The rules of ``refquant.numerics`` against independent formulas.

* ``qparams_from_range``: asymmetric, symmetric (divisor 2**(b-1) - 1), narrow range,
  degenerate and empty ranges, NaN/Inf; ``QParams`` validation errors.
* quantize∘dequantize: error ≤ scale/2 inside the representable range, saturation outside,
  monotonicity, the grid maps to itself; per-axis and blocked broadcasting; 4-bit packing.
* requantization, each mode against a formula written independently of ``requant.py``: the
  float modes element by element with NumPy float32/float64 *scalars*, the fixed-point modes
  with exact ``fractions.Fraction`` arithmetic of TFLite's rounding rules; the documented
  float32-vs-float64 difference on exact ties with an odd zero point.
* ``WORKED_EXAMPLES``: the table of spec/numerics.md, each row checked in every mode.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refquant.numerics import (
    REQUANT_MODES,
    QParams,
    dequantize,
    expand_along_axis,
    float32_multiplier,
    int_format,
    make_requantizer,
    pack_nibbles,
    qparams_from_range,
    quantize,
    quantize_multiplier,
    requantize,
    tensor_range,
    unpack_nibbles,
)
from refquant.kernels.fast_requant import requantize as fast_requantize

FORMATS = ["int8", "uint8", "int16", "uint16", "int4", "uint4", "int2", "uint5", "int12"]
f32 = np.float32

# range bounds: 0 or magnitudes whose span/levels stays a normal float32 (tinier ones underflow
# and raise, which test_bad_ranges_are_rejected checks)
finite32 = st.one_of(st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False, width=32).filter(lambda v: abs(v) > 1e-30))
positive_scales = st.floats(2.0**-20, 1024.0, width=32)


# ------------------------------------------------------------------------- qparams_from_range

@given(lo=finite32, hi=finite32, fmt=st.sampled_from(FORMATS))
def test_asymmetric_qparams_formula(lo, hi, fmt):
    lo, hi = min(lo, hi), max(lo, hi)
    f = int_format(fmt)
    qp = qparams_from_range(lo, hi, fmt)
    lo_, hi_ = f32(min(lo, 0.0)), f32(max(hi, 0.0))
    if lo_ == hi_:
        assert float(qp.scale) == 1.0
    else:
        assert qp.scale == f32(f32(hi_ - lo_) / f32(f.qmax - f.qmin))
    zp = np.rint(np.clip(f32(f.qmin) - f32(lo_ / qp.scale), f.qmin, f.qmax))
    assert int(qp.zero_point) == int(zp)
    assert f.qmin <= int(qp.zero_point) <= f.qmax
    # real zero is exactly representable: it quantizes to the zero point and back to 0
    assert int(quantize(np.float32(0), qp)) == int(qp.zero_point)
    assert float(dequantize(quantize(np.float32(0), qp), qp)) == 0.0


@given(lo=finite32, hi=finite32, fmt=st.sampled_from(["int8", "uint8", "int16", "uint16", "int4", "uint4"]))
def test_asymmetric_range_is_covered_to_half_a_step(lo, hi, fmt):
    """Every x in [min(lo,0), max(hi,0)] comes back within scale/2 (the zero point's rounding
    moves the grid by at most half a step, so the ends are covered too)."""
    lo, hi = min(lo, hi), max(lo, hi)
    qp = qparams_from_range(lo, hi, fmt)
    s = float(qp.scale)
    x = np.linspace(min(lo, 0.0), max(hi, 0.0), 101).astype(np.float32)
    err = np.abs(dequantize(quantize(x, qp), qp).astype(np.float64) - x)
    assert np.all(err <= s / 2 + 2.0**-20 * (np.abs(x) + s))


@given(amax=st.floats(2.0**-20, 2.0**20, width=32), sign=st.sampled_from([-1, 1]), bits=st.integers(2, 16),
       signed=st.booleans(), narrow=st.booleans())
def test_symmetric_qparams_use_2_pow_b_minus_1_minus_1(amax, sign, bits, signed, narrow):
    f = int_format(f"{'' if signed else 'u'}int{bits}", narrow=narrow and signed)
    lo, hi = (-amax, amax / 3) if sign < 0 else (-amax / 3, amax)
    qp = qparams_from_range(lo, hi, f, symmetric=True)
    half = 2 ** (bits - 1) - 1
    assert qp.scale == f32(f32(amax) / f32(half))  # 127 for 8 bits, not PyTorch's 127.5
    assert int(qp.zero_point) == (0 if signed else 2 ** (bits - 1))
    q = quantize(np.array([-amax, amax], np.float32), qp).astype(np.int64) - int(qp.zero_point)
    assert q.tolist() == [-half, half]  # ±amax land on ±(2**(b-1) - 1): the grid is symmetric


def test_symmetric_int8_worked_example():
    qp = qparams_from_range(-2.54, 1.0, "int8", symmetric=True)
    assert qp.scale == f32(f32(2.54) / f32(127)) and int(qp.zero_point) == 0
    narrow = qparams_from_range(-2.54, 1.0, int_format("int8", narrow=True), symmetric=True)
    assert quantize(np.float32(-100), narrow) == -127  # narrow range saturates at -127
    assert quantize(np.float32(-100), qp) == -128  # full range at -128


def test_asymmetric_uint8_worked_example():
    qp = qparams_from_range(-1.0, 3.0, "uint8")
    assert qp.scale == f32(4) / f32(255)
    assert int(qp.zero_point) == 64  # 0 - (-1)/(4/255) = 63.75 → 64
    assert quantize(np.array([-1.0, 0.0, 3.0], np.float32), qp).tolist() == [0, 64, 255]


@pytest.mark.parametrize("fmt, zp", [("uint8", 0), ("int8", -128), ("int4", -8)])
def test_degenerate_and_empty_ranges_get_scale_one(fmt, zp):
    for lo, hi in [(0.0, 0.0), tensor_range(np.zeros((0, 3), np.float32))]:
        qp = qparams_from_range(lo, hi, fmt)
        assert float(qp.scale) == 1.0 and int(qp.zero_point) == zp
    qp = qparams_from_range(0.0, 0.0, fmt, symmetric=True)
    assert float(qp.scale) == 1.0
    assert tensor_range(np.zeros(0, np.float32)) == (0.0, 0.0)
    lo, hi = tensor_range(np.zeros((2, 0)), axis=0)
    assert lo.tolist() == [0, 0] and hi.tolist() == [0, 0]


def test_a_constant_range_is_extended_to_zero():
    qp = qparams_from_range(5.0, 5.0, "uint8")
    assert qp.scale == f32(5) / f32(255) and int(qp.zero_point) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_ranges_are_rejected(bad):
    with pytest.raises(ValueError, match="weights"):
        qparams_from_range(bad, 1.0, name="weights")
    with pytest.raises(ValueError, match="act.*non-finite"):
        tensor_range(np.array([1.0, bad], np.float32), name="act")


def test_bad_ranges_are_rejected():
    with pytest.raises(ValueError, match="lower bound exceeds"):
        qparams_from_range(2.0, 1.0)
    with pytest.raises(ValueError, match="underflows"):
        qparams_from_range(0.0, 1e-45)
    with pytest.raises(TypeError, match="real-valued"):
        tensor_range(np.array(["a"]))


def test_per_axis_ranges():
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.25, 0.0]], np.float32)
    lo, hi = tensor_range(x, axis=0)
    assert lo.tolist() == [-2.0, 0.0] and hi.tolist() == [3.0, 0.5]
    qp = qparams_from_range(lo, hi, "int8", symmetric=True, axis=0)
    assert qp.scale.tolist() == [f32(3) / f32(127), f32(0.5) / f32(127)]
    assert qp.axis == 0 and qp.zero_point.tolist() == [0, 0]


# ------------------------------------------------------------------------ QParams validation

@pytest.mark.parametrize("scale, zp, kwargs, err, match", [
    (0.0, 0, {}, ValueError, "finite and > 0"),
    (-1.0, 0, {}, ValueError, "finite and > 0"),
    (np.nan, 0, {}, ValueError, "finite and > 0"),
    (np.inf, 0, {}, ValueError, "finite and > 0"),
    (1e-46, 0, {}, ValueError, "finite and > 0"),  # underflows float32 to 0
    (np.array([], np.float32), 0, {}, ValueError, "empty"),
    ("0.1", 0, {}, TypeError, "real number"),
    (1.0, 128, {}, ValueError, r"outside the int8 range \[-128, 127\]"),
    (1.0, -129, {}, ValueError, "outside"),
    (1.0, 0.5, {}, ValueError, "must be an integer"),
    (1.0, np.array("a"), {}, TypeError, "must be an integer"),
    (np.ones(3, np.float32), 0, {}, ValueError, "per-tensor qparams need a scalar"),
    (np.ones(3, np.float32), np.zeros(2, np.int32), {"axis": 0}, ValueError, "shape"),
    (np.ones((2, 3), np.float32), 0, {"axis": 0}, ValueError, "must be 1-D"),
    (1.0, 0, {"block_size": -1, "axis": 0}, ValueError, "block_size"),
])
def test_qparams_validation_names_the_tensor(scale, zp, kwargs, err, match):
    with pytest.raises(err, match=match) as info:
        QParams(scale, zp, int_format("int8"), name="conv1.weight", **kwargs)
    assert "conv1.weight" in str(info.value)


def test_qparams_round_trip_through_dict():
    qp = QParams(np.array([0.5, 0.25], np.float32), np.array([1, -2]), int_format("int4", narrow=True), axis=1)
    back = QParams.from_dict(qp.to_dict())
    assert back == qp and back.fmt.narrow and back.fmt.qmin == -7


def test_integer_formats():
    assert [(f.qmin, f.qmax) for f in map(int_format, ["int8", "uint8", "int4", "uint4", "int2", "int16"])] == [
        (-128, 127), (0, 255), (-8, 7), (0, 15), (-2, 1), (-32768, 32767)]
    assert int_format("int8", narrow=True).qmin == -127 and int_format("uint8", narrow=True).qmin == 1
    assert int_format("int4").storage_dtype == np.int8 and int_format("uint12").storage_dtype == np.uint16
    for bad in ("int1", "int17", "float8"):
        with pytest.raises(ValueError):
            int_format(bad)


# ------------------------------------------------------------------ quantize and dequantize

@st.composite
def qparams_and_values(draw, n=64):
    fmt = int_format(draw(st.sampled_from(FORMATS)), narrow=draw(st.booleans()))
    scale = draw(positive_scales)
    zp = draw(st.integers(fmt.qmin, fmt.qmax))
    qp = QParams(scale, zp, fmt)
    s = float(qp.scale)
    lo, hi = (fmt.qmin - zp) * s, (fmt.qmax - zp) * s
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    inside = rng.uniform(lo, hi, n).astype(np.float32)
    inside = inside[(inside >= lo) & (inside <= hi)]
    return qp, inside


@given(case=qparams_and_values())
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(case):
    qp, x = case
    s = float(qp.scale)
    err = np.abs(dequantize(quantize(x, qp), qp).astype(np.float64) - x)
    # half a step, plus the float32 roundings of x / s and of (q - z) · s
    assert np.all(err <= s / 2 + 2.0**-22 * (np.abs(x) + s))


@given(case=qparams_and_values(), factor=st.floats(1.0, 1e3))
def test_values_outside_the_range_saturate(case, factor):
    qp, _ = case
    s, zp, f = float(qp.scale), int(qp.zero_point), qp.fmt
    above = np.float32(((f.qmax - zp) + 0.5) * s * factor + s)
    below = np.float32(((f.qmin - zp) - 0.5) * s * factor - s)
    assert int(quantize(above, qp)) == f.qmax
    assert int(quantize(below, qp)) == f.qmin
    assert int(quantize(np.float32(3e38), qp)) == f.qmax  # x / s overflows to inf: still saturates


@given(case=qparams_and_values(n=200))
def test_quantize_is_monotonic(case):
    qp, x = case
    x = np.sort(np.concatenate([x, x * 3, -x]).astype(np.float32))
    q = quantize(x, qp).astype(np.int64)
    assert np.all(np.diff(q) >= 0)


@given(fmt=st.sampled_from(FORMATS), scale=positive_scales, data=st.data())
def test_every_grid_point_maps_to_itself(fmt, scale, data):
    f = int_format(fmt)
    zp = data.draw(st.integers(f.qmin, f.qmax))
    qp = QParams(scale, zp, f)
    grid = np.arange(f.qmin, f.qmax + 1).astype(f.storage_dtype)
    assert np.array_equal(quantize(dequantize(grid, qp), qp), grid)


def test_quantize_rounds_half_to_even_then_adds_the_zero_point():
    qp = QParams(1.0, 1, int_format("int8"))
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.5], np.float32)
    assert quantize(x, qp).tolist() == [1, 3, 3, 1, -1, 127]  # rint(126.5) = 126, + 1 = 127
    assert quantize(np.float32(0.3), QParams(0.1, 0, int_format("int8"))) == 3  # divide, not × 1/s


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite_inputs(bad):
    with pytest.raises(ValueError, match="act.*non-finite"):
        quantize(np.array([1.0, bad], np.float32), QParams(1.0, 0, int_format("int8"), name="act"))


def test_dequantize_rejects_floats():
    with pytest.raises(TypeError, match="expected integers"):
        dequantize(np.zeros(3, np.float32), QParams(1.0, 0, int_format("int8")))


# ------------------------------------------------------------- per-axis and blocked broadcast

@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data())
def test_per_axis_broadcast_puts_entry_i_at_index_i(shape, data):
    shape = tuple(shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    values = np.arange(shape[axis], dtype=np.float32) + 1
    b = np.broadcast_to(expand_along_axis(values, shape, axis), shape)
    for idx in np.ndindex(*shape):
        assert b[idx] == values[idx[axis]]


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), data=st.data())
def test_blocked_broadcast_puts_block_i_div_b_at_index_i(shape, data):
    shape = tuple(shape)
    axis = data.draw(st.integers(0, len(shape) - 1))
    block = data.draw(st.integers(1, shape[axis]))
    s_shape = list(shape)
    s_shape[axis] = -(-shape[axis] // block)
    values = np.arange(np.prod(s_shape), dtype=np.float32).reshape(s_shape)
    b = expand_along_axis(values, shape, axis, block)
    assert b.shape == shape
    for idx in np.ndindex(*shape):
        src = list(idx)
        src[axis] = idx[axis] // block
        assert b[idx] == values[tuple(src)]
    qp = QParams(values + 1, np.zeros(s_shape, np.int32), int_format("int8"), axis=axis, block_size=block)
    s_b, _ = qp.broadcast_to(shape)
    assert np.array_equal(s_b, b + 1)
    assert np.array_equal(quantize(np.asarray(s_b, np.float32) * 3, qp), np.full(shape, 3, np.int8))


def test_broadcast_shape_errors_name_the_tensor():
    with pytest.raises(ValueError, match="w: per-axis .* 3 entries"):
        expand_along_axis(np.ones(2), (2, 3), 1, name="w")
    with pytest.raises(ValueError, match="w: blocked .* shape \\(2, 2\\)"):
        expand_along_axis(np.ones((2, 3)), (2, 4), 1, 2, name="w")
    with pytest.raises(ValueError, match="axis 2 out of range"):
        expand_along_axis(np.ones(2), (2, 3), 2, name="w")


# ------------------------------------------------------------------------------ nibbles

@given(fmt=st.sampled_from(["int4", "uint4"]), data=st.data(), n=st.integers(0, 33))
def test_pack_unpack_round_trip(fmt, data, n):
    f = int_format(fmt)
    v = np.array(data.draw(st.lists(st.integers(f.qmin, f.qmax), min_size=n, max_size=n)), f.storage_dtype)
    packed = pack_nibbles(v, fmt)
    assert packed.dtype == np.uint8 and packed.size == (n + 1) // 2
    assert np.array_equal(unpack_nibbles(packed, n, fmt), v)


def test_nibble_order_and_errors():
    assert pack_nibbles(np.array([1, 2, 3], np.int8), "int4").tolist() == [0x21, 0x03]  # 2i low
    assert pack_nibbles(np.array([-1, -8], np.int8), "int4").tolist() == [0x8F]
    assert unpack_nibbles(np.array([0x8F], np.uint8), 2, "int4").tolist() == [-1, -8]
    assert unpack_nibbles(np.array([0x8F], np.uint8), 2, "uint4").tolist() == [15, 8]
    with pytest.raises(ValueError, match="outside the int4 range"):
        pack_nibbles(np.array([8], np.int8), "int4")
    with pytest.raises(ValueError, match="4-bit"):
        pack_nibbles(np.array([1], np.int8), "int8")
    with pytest.raises(ValueError, match="does not fit"):
        unpack_nibbles(np.array([0], np.uint8), 3, "int4")
    with pytest.raises(TypeError, match="uint8"):
        unpack_nibbles(np.array([0], np.int8), 1, "int4")


# ------------------------------------------------------- requantization: independent oracles

def _oracle_float32(acc, sx, sw, sy, zp, lo, hi):
    """``float32`` mode with NumPy float32 scalars, one element at a time."""
    m = f32(f32(f32(sx) * f32(sw)) / f32(sy))
    y = int(np.rint(f32(acc) * m)) + zp
    return min(max(y, lo), hi)


def _oracle_float64(acc, sx, sw, sy, zp, lo, hi):
    """``float64`` mode: the same float32 multiplier, product and + zero point in float64."""
    m = f32(f32(f32(sx) * f32(sw)) / f32(sy))
    y = int(np.rint(np.float64(acc) * np.float64(m) + np.float64(zp)))
    return min(max(y, lo), hi)


def _oracle_multiplier(real: float, single: bool):
    """TFLite ``QuantizeMultiplier`` by exact arithmetic: ``real = Q · 2**(e - 31)``, Q31 ``Q``."""
    r = Fraction(real)
    if r == 0:
        return 0, 0
    e = 0
    while r >= Fraction(2) ** e:  # find 2**(e-1) <= r < 2**e
        e += 1
    while r < Fraction(2) ** (e - 1):
        e -= 1
    q = math.floor(r / Fraction(2) ** e * 2**31 + Fraction(1, 2))  # half away, r > 0
    if q == 2**31:
        q, e = 2**30, e + 1
    if e < -31:
        return 0, 0
    if single and e > 30:
        return 2**31 - 1, 30
    return q, e


def _round_half_away(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2)) if v >= 0 else -math.floor(-v + Fraction(1, 2))


def _oracle_fixed_point(acc, sx, sw, sy, zp, lo, hi):
    """TFLite double rounding: SRDHM rounds to nearest with ties toward +inf (gemmlowp's nudge
    and truncating division), RoundingDivideByPOT rounds half away from zero."""
    real = float(f32(sx)) * float(f32(sw)) / float(f32(sy))
    q, e = _oracle_multiplier(real, single=False)
    x = acc * 2 ** max(e, 0)
    assert -(2**31) <= x < 2**31
    t = math.floor(Fraction(x * q, 2**31) + Fraction(1, 2))
    y = _round_half_away(Fraction(t, 2 ** max(-e, 0))) + zp
    return min(max(y, lo), hi)


def _oracle_fixed_point_single(acc, sx, sw, sy, zp, lo, hi):
    """TFLite single rounding: one rounding of ``acc · Q / 2**(31 - e)``, ties toward +inf."""
    real = float(f32(sx)) * float(f32(sw)) / float(f32(sy))
    q, e = _oracle_multiplier(real, single=True)
    y = math.floor(Fraction(acc * q, 2 ** (31 - e)) + Fraction(1, 2)) + zp
    return min(max(y, lo), hi)


ORACLES = {"float32": _oracle_float32, "float64": _oracle_float64,
           "fixed-point": _oracle_fixed_point, "fixed-point-single": _oracle_fixed_point_single}


def _clamp(fmt, zp, sy, activation):
    lo, hi = fmt.qmin, fmt.qmax
    if activation in ("relu", "relu6"):
        lo = max(lo, zp)
    if activation == "relu6":
        hi = min(hi, zp + int(np.rint(f32(6) / f32(sy))))
    return lo, hi


@st.composite
def requant_cases(draw):
    fmt = int_format(draw(st.sampled_from(["int8", "uint8", "int16", "uint4"])))
    channels = draw(st.integers(1, 4))
    pow2 = draw(st.booleans())  # power-of-two scales: exact ties in every mode
    if pow2:  # M = 2**-j per channel: M = 1/2, 1/4 make SRDHM and RDBPOT see exact ties
        sx = 2.0 ** draw(st.integers(-10, 0))
        sw = [2.0 ** draw(st.integers(-2, 0)) for _ in range(channels)]
        sy = sx * 2.0 ** draw(st.sampled_from([-1, 0, 0, 1, 1, 2, 4, 7, 10]))
    else:
        sx = draw(st.floats(1e-4, 1.0))
        sw = [draw(st.floats(1e-4, 1.0)) for _ in range(channels)]
        sy = draw(st.floats(1e-6, 1.0))
    zp = draw(st.integers(fmt.qmin, fmt.qmax))
    activation = draw(st.sampled_from([None, None, "relu", "relu6"]))
    m = max(sx * w / sy for w in sw)
    bound = min(2**31 - 1, int((fmt.qmax - fmt.qmin + 4) / m) + 4)  # stay near the output range
    small = draw(st.booleans())
    acc = draw(st.lists(st.integers(-bound, bound) if small else st.integers(-(2**31), 2**31 - 1),
                        min_size=channels, max_size=channels * 6))
    acc = acc[: len(acc) // channels * channels] or acc[:channels]
    return fmt, np.float32(sx), np.array(sw, np.float32), np.float32(sy), zp, activation, acc


def _numba_requantize(acc, rq, *, channel_axis=1):
    """The numba backend's kernel, also for the few accumulators it leaves to the NumPy rule."""
    from refquant.kernels import fast_requant

    old, fast_requant.NUMPY_BELOW = fast_requant.NUMPY_BELOW, 0
    try:
        return fast_requantize(acc, rq, channel_axis=channel_axis)
    finally:
        fast_requant.NUMPY_BELOW = old


#: the NumPy rule and the numba backend's kernel (refquant.kernels.fast_requant), one oracle
REQUANTIZE = {"numpy": requantize, "numba": _numba_requantize}


@pytest.mark.parametrize("implementation", sorted(REQUANTIZE))
@pytest.mark.parametrize("mode", REQUANT_MODES)
@given(case=requant_cases())
def test_requantize_matches_the_independent_formula(implementation, mode, case):
    fmt, sx, sw, sy, zp, activation, acc = case
    c = sw.size
    rq = make_requantizer(sx, sw, sy, zp, fmt, mode=mode, activation=activation)
    if mode == "fixed-point":  # acc · 2**e must fit int32 when e > 0 (it raises otherwise)
        assume(all(abs(a) * 2 ** max(int(e), 0) < 2**31 for a in acc for e in rq.shift))
    a = np.array(acc, np.int32).reshape(-1, c)
    got = REQUANTIZE[implementation](a, rq, channel_axis=1)
    lo, hi = _clamp(fmt, zp, sy, activation)
    want = [[ORACLES[mode](int(a[i, j]), sx, sw[j], sy, zp, lo, hi) for j in range(c)] for i in range(a.shape[0])]
    assert got.dtype == fmt.storage_dtype
    assert got.tolist() == want


@given(real=st.floats(1e-12, 1e6))
def test_quantize_multiplier_matches_exact_arithmetic(real):
    for single in (False, True):
        assert quantize_multiplier(real, single_rounding=single) == _oracle_multiplier(real, single)


@pytest.mark.parametrize("implementation", sorted(REQUANTIZE))
def test_fixed_point_overflow_is_an_error(implementation):
    rq = make_requantizer(1.0, 1.0, 0.25, 0, "int8", mode="fixed-point")  # M = 4: acc << 3
    with pytest.raises(OverflowError, match=r"acc · 2\*\*shift overflows int32"):
        REQUANTIZE[implementation](np.array([[2**29]], np.int32), rq)


def test_requant_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown requant mode"):
        make_requantizer(1.0, 1.0, 1.0, mode="float16")
    with pytest.raises(ValueError, match="y_scale must be finite and > 0"):
        make_requantizer(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="output zero point"):
        make_requantizer(1.0, 1.0, 1.0, 300, "uint8")
    with pytest.raises(TypeError, match="int32"):
        requantize(np.zeros((1, 1), np.int64), make_requantizer(1.0, 1.0, 1.0))


@given(k=st.integers(0, 12), t=st.integers(-1000, 1000), zp=st.integers(-100, 100))
def test_float32_and_float64_modes_differ_exactly_on_ties_with_an_odd_zero_point(k, t, zp):
    """acc · 2**-k = t + 1/2 exactly: float32 rounds the product (to even), then adds z_y;
    float64 adds z_y first — the two agree when z_y is even and differ by one when it is odd."""
    acc = (2 * t + 1) * 2 ** max(k - 1, 0) if k else None
    assume(acc is not None)
    rq32 = make_requantizer(1.0, 1.0, 2.0**k, zp, "int16", mode="float32")
    rq64 = make_requantizer(1.0, 1.0, 2.0**k, zp, "int16", mode="float64")
    a = np.array([[acc]], np.int32)
    y32, y64 = int(requantize(a, rq32)[0, 0]), int(requantize(a, rq64)[0, 0])
    even = lambda n: n if n % 2 == 0 else n + 1  # noqa: E731 - half to even of n + 1/2
    assert y32 == even(t) + zp  # round, then add z_y
    assert y64 == even(t + zp)  # add z_y, then round
    assert abs(y64 - y32) == zp % 2  # odd z_y: the other neighbour


def test_float32_product_rounds_where_float64_does_not():
    """Beyond 2**24 ``float32(acc)`` itself rounds, so the modes differ without a tie:
    acc = 16778239 becomes 16778240 in float32; times m = float32(0.7) / 1024 that is
    11469.5 (a tie, to even: 11470) against the exact 11469.4991 (11469)."""
    acc, sx, sw, sy = 16778239, 0.7, 1.0, 1024.0
    a = np.array([[acc]], np.int32)
    y32 = int(requantize(a, make_requantizer(sx, sw, sy, 0, "int16", mode="float32"))[0, 0])
    y64 = int(requantize(a, make_requantizer(sx, sw, sy, 0, "int16", mode="float64"))[0, 0])
    assert float(f32(acc)) == acc + 1
    assert (y32, y64) == (11470, 11469)
    assert (y32, y64) == tuple(ORACLES[m](acc, sx, sw, sy, 0, -(2**15), 2**15 - 1) for m in ("float32", "float64"))


# --------------------------------------------------------------------------- worked examples

#: (acc, x_scale, w_scale, y_scale, y_zero_point, output format) → output in each mode.
#: These rows are quoted in spec/numerics.md ("Requantization: worked examples").
WORKED_EXAMPLES = [
    # acc·M = 1.5, odd z_y: float32 rounds 1.5 → 2 then + 3; float64 rounds 4.5 → 4
    ((12, 0.5, 0.25, 1.0, 3, "int8"), {"float32": 5, "float64": 4, "fixed-point": 5, "fixed-point-single": 5}),
    # acc·M = -1.5: single rounding rounds ties toward +inf (-1), double rounding away (-2)
    ((-12, 0.5, 0.25, 1.0, 3, "int8"), {"float32": 1, "float64": 2, "fixed-point": 1, "fixed-point-single": 2}),
    # acc·M = -0.5 with M = 1/2 (shift 0): SRDHM alone rounds -0.5 up to 0
    ((-1, 1.0, 0.5, 1.0, 0, "int8"), {"float32": 0, "float64": 0, "fixed-point": 0, "fixed-point-single": 0}),
    # acc·M = 0.5: half to even gives 0, TFLite's rounding gives 1
    ((1, 1.0, 0.5, 1.0, 0, "int8"), {"float32": 0, "float64": 0, "fixed-point": 1, "fixed-point-single": 1}),
    # double rounding: acc·M = 2.4961; SRDHM rounds acc·Q/2**31 = 319.50… up to 320, then
    # RDBPOT(320, 7) = 2.5 rounds away to 3; single rounding gives 2
    ((574, 0.0066, 0.00705, 0.0107, 0, "int8"), {"float32": 2, "float64": 2, "fixed-point": 3,
                                                 "fixed-point-single": 2}),
    # acc·M = 0.49999998 exactly, but the float32 product rounds to 0.5 (→ 0, to even) while the
    # float64 product stays above it (→ 1); double rounding also reaches 1, single rounding 0
    ((300, 0.05, 0.01, 0.3, 0, "int8"), {"float32": 0, "float64": 1, "fixed-point": 1, "fixed-point-single": 0}),
    # an ordinary case: M = float32(0.0066·0.00705/0.0107), acc = -3000, z_y = 118 (uint8)
    ((-3000, 0.0066, 0.00705, 0.0107, 118, "uint8"), {"float32": 105, "float64": 105, "fixed-point": 105,
                                                      "fixed-point-single": 105}),
    # saturation: acc·M = 200 > 127
    ((800, 0.5, 0.5, 1.0, 0, "int8"), {"float32": 127, "float64": 127, "fixed-point": 127, "fixed-point-single": 127}),
]


@pytest.mark.parametrize("args, want", WORKED_EXAMPLES)
def test_worked_requant_examples(args, want):
    acc, sx, sw, sy, zp, fmt = args
    for mode in REQUANT_MODES:
        rq = make_requantizer(sx, sw, sy, zp, fmt, mode=mode)
        got = int(requantize(np.array([[acc]], np.int32), rq)[0, 0])
        f = int_format(fmt)
        assert got == ORACLES[mode](acc, sx, sw, sy, zp, f.qmin, f.qmax), mode
        assert got == want[mode], (mode, got)


def test_float32_multiplier_is_a_product_then_a_quotient_in_float32():
    m = float32_multiplier(0.0066, 0.00705, 0.0107)
    assert m.dtype == np.float32 and m[0] == f32(f32(f32(0.0066) * f32(0.00705)) / f32(0.0107))


def test_requantizer_rejects_multipliers_the_arithmetic_cannot_hold():
    import pytest as _pytest
    from refquant.numerics import make_requantizer as _mk

    with _pytest.raises(ValueError, match="overflows float32"):
        _mk(1e20, 1e20, 1.0)
    with _pytest.raises(ValueError, match="shift must be <= 30"):
        _mk(2.0**35, 2.0**35, 1.0, mode="fixed-point")
    assert int(_mk(2.0**35, 2.0**35, 1.0, mode="fixed-point-single").shift[0]) == 30  # saturated, as TFLite
