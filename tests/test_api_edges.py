"""Issue #15, items 4 and 6: edges of the public numerics/functional API, and interop types.

Each test would fail before its fix: a self-contradicting byte-order message, a reshape error
for K = 0, silently truncated attributes, an ``IndexError`` for a bad channel axis, wrong
values from the gemmlowp primitives outside their domain, "underflows" for an overflow, uint8
bit patterns where the caller passed an ``ml_dtypes`` type, and a refused batched ``b_scale``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant.functional as F
from refquant.numerics import (
    MAX_POT_EXPONENT,
    make_requantizer,
    qparams_from_range,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

BACKENDS = ("reference", "numba")


# ------------------------------------------------------------------------------ byte order

def test_big_endian_inputs_are_accepted_and_give_the_native_result():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    xb = x.astype(">f4")
    s = np.float32(0.02)
    assert np.array_equal(F.quantize_linear(xb, np.array(s, ">f4"), np.uint8(128)),
                          F.quantize_linear(x, s, np.uint8(128)))
    for got, want in zip(F.dynamic_quantize_linear(xb), F.dynamic_quantize_linear(x)):
        assert np.array_equal(got, want)
    q = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert np.array_equal(F.dequantize_linear(q.astype(">i4"), np.array(0.5, ">f4")),
                          F.dequantize_linear(q, np.float32(0.5)))
    acc = np.arange(-6, 6, dtype=np.int32).reshape(2, 6) * 1000
    rq = make_requantizer(0.1, 0.02, 0.5, 3, "int8")
    assert np.array_equal(requantize(acc.astype(">i4"), rq), requantize(acc, rq))


def test_a_wrong_dtype_message_names_the_dtype_and_does_not_contradict_itself():
    with pytest.raises(TypeError, match=r"x must be float32.*got dtype int64"):
        F.dynamic_quantize_linear(np.arange(3))


# ---------------------------------------------------------------------------------- K = 0

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shapes", [((2, 0), (0, 3)), ((4, 2, 0), (4, 0, 3)), ((0,), (0,)), ((3, 0), (2, 0, 5))])
def test_matmul_integer_with_empty_inner_dimension_is_numpy_zeros(backend, shapes):
    a = np.zeros(shapes[0], np.uint8)
    b = np.zeros(shapes[1], np.uint8)
    y = F.matmul_integer(a, b, np.uint8(3), np.uint8(5), backend=backend)
    want = np.matmul(a.astype(np.int32), b.astype(np.int32))
    assert y.dtype == np.int32 and y.shape == want.shape and not y.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_qlinear_matmul_with_empty_inner_dimension_is_the_output_zero_point(backend):
    a = np.zeros((2, 0), np.uint8)
    b = np.zeros((0, 3), np.int8)
    y = F.qlinear_matmul(a, np.float32(0.1), np.uint8(3), b, np.float32(0.2), np.int8(0),
                         np.float32(0.3), np.uint8(7), backend=backend)
    assert y.dtype == np.uint8 and y.shape == (2, 3) and np.all(y == 7)


# ------------------------------------------------------------------------ integer attributes

X4 = np.zeros((1, 1, 5, 5), np.uint8)
W4 = np.ones((1, 1, 2, 2), np.uint8)


@pytest.mark.parametrize("kwargs, what", [
    (dict(strides=[1.9, 1.9]), "strides"), (dict(group=1.5), "group"), (dict(dilations=["1", "1"]), "dilations"),
    (dict(pads=[0, 0, 0, 0.5]), "pads"), (dict(kernel_shape=[2.0, 2.0]), "kernel_shape"), (dict(group=True), "group"),
    (dict(strides="11"), "strides"),
])
def test_non_integer_conv_attributes_are_refused_not_truncated(kwargs, what):
    with pytest.raises(TypeError, match=what):
        F.conv_integer(X4, W4, **kwargs)


@pytest.mark.parametrize("axis", [1.7, "1", 1.0, None])
def test_non_integer_axis_is_refused(axis):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="axis"):
        F.quantize_linear(x, np.float32([0.1, 0.2, 0.3]), np.uint8([0, 0, 0]), axis=axis)
    with pytest.raises(TypeError, match="axis"):  # checked for a per-tensor scale too
        F.quantize_linear(x, np.float32(0.1), axis=axis)


def test_numpy_integer_attributes_are_accepted():
    y = F.conv_integer(X4, W4, strides=np.array([2, 2]), group=np.int64(1))
    assert np.array_equal(y, F.conv_integer(X4, W4, strides=[2, 2]))


def test_saturate_must_be_zero_or_one():
    with pytest.raises(ValueError, match="saturate"):
        F.quantize_linear(np.zeros(2, np.float32), np.float32(1), output_dtype="float8_e4m3fn", saturate=2)
    with pytest.raises(TypeError, match="saturate"):
        F.quantize_linear(np.zeros(2, np.float32), np.float32(1), output_dtype="float8_e4m3fn", saturate=0.5)


# ------------------------------------------------------------------------- requant domains

@pytest.mark.parametrize("axis", [5, -3, 2])
def test_requantize_channel_axis_out_of_range(axis):
    rq = make_requantizer(0.1, 0.1, 0.1)
    with pytest.raises(ValueError, match=f"channel_axis {axis} is out of range"):
        requantize(np.zeros((1, 2), np.int32), rq, channel_axis=axis)


@pytest.mark.parametrize("exponent", [-1, 63, 64, 2**40])
def test_rounding_divide_by_pot_refuses_shifts_outside_its_domain(exponent):
    with pytest.raises(ValueError, match="exponent"):
        rounding_divide_by_pot(5, exponent)


@given(st.integers(-(2**62), 2**62), st.integers(0, MAX_POT_EXPONENT))
@settings(max_examples=300, deadline=None)
def test_rounding_divide_by_pot_is_round_half_away(x, n):
    from fractions import Fraction

    q = Fraction(x, 2**n)
    want = int(abs(q) + Fraction(1, 2)) * (1 if q >= 0 else -1)
    assert int(rounding_divide_by_pot(x, n)) == want


@pytest.mark.parametrize("a, b", [(2**40, 2**40), (2**62, 2), (-(2**63), 1), (2**64, 1), (1.5, 2)])
def test_saturating_rounding_doubling_high_mul_refuses_products_beyond_int64(a, b):
    with pytest.raises((ValueError, TypeError), match=r"\b[ab]\b"):
        saturating_rounding_doubling_high_mul(a, b)


@given(st.integers(-(2**62), 2**62), st.integers(-3, 3))
@settings(max_examples=200, deadline=None)
def test_saturating_rounding_doubling_high_mul_is_exact_wherever_the_product_fits(a, b):
    import math
    from fractions import Fraction

    if abs(a * b) > 2**63 - 1 - 2**30:  # the product and its nudge would not fit int64
        with pytest.raises(ValueError, match="does not fit int64"):
            saturating_rounding_doubling_high_mul(a, b)
        return
    assert int(saturating_rounding_doubling_high_mul(a, b)) == math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))


@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1))
@settings(max_examples=300, deadline=None)
def test_saturating_rounding_doubling_high_mul_is_nearest_ties_up(a, b):
    from fractions import Fraction
    import math

    want = 2**31 - 1 if a == b == -(2**31) else math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))
    assert int(saturating_rounding_doubling_high_mul(a, b)) == want


# --------------------------------------------------------------------- overflowing scales

def test_a_range_beyond_float32_says_the_scale_overflows():
    with pytest.raises(ValueError, match="overflows float32"):
        qparams_from_range(-3e38, 3e38)
    with pytest.raises(ValueError, match=r"dynamic_quantize_linear x: .*overflows float32"):
        F.dynamic_quantize_linear(np.array([-3e38, 3e38], np.float32))
    qparams_from_range(-1e38, 1e38)  # a span within float32 is fine


# ------------------------------------------------------------- item 6: ml_dtypes outputs

ml_dtypes = pytest.importorskip("ml_dtypes")
FLOAT_FORMATS = ("float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn")


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_quantize_linear_returns_the_ml_dtypes_type_it_was_given(fmt):
    if not hasattr(ml_dtypes, fmt):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {fmt}")
    t = getattr(ml_dtypes, fmt)
    x = np.linspace(-3, 3, 25, dtype=np.float32)
    bits = F.quantize_linear(x, np.float32(0.5), output_dtype=fmt)
    assert bits.dtype == np.uint8  # named by string: bit patterns, ml_dtypes stays optional
    by_zero_point = F.quantize_linear(x, np.float32(0.5), np.zeros((), t))
    by_dtype = F.quantize_linear(x, np.float32(0.5), output_dtype=t)
    for y in (by_zero_point, by_dtype):
        assert y.dtype == np.dtype(t)
        assert np.array_equal(y.view(np.uint8), bits)


@pytest.mark.parametrize("name", ["int4", "uint4"])
def test_quantize_linear_returns_ml_dtypes_int4_for_an_ml_dtypes_zero_point(name):
    t = getattr(ml_dtypes, name)
    x = np.linspace(-9, 20, 30, dtype=np.float32)
    y = F.quantize_linear(x, np.float32(1.5), np.zeros((), t))
    assert y.dtype == np.dtype(t)
    plain = F.quantize_linear(x, np.float32(1.5), output_dtype=name)
    assert np.array_equal(y.astype(np.int16), plain.astype(np.int16))


def _float8_quantize_model(n):
    from onnx import TensorProto, helper

    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [n])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]),
                               helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


X_F8 = np.random.default_rng(1).normal(0, 100, 500).astype(np.float32)


def test_float8_output_compares_equal_to_the_onnx_reference_evaluator():
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(_float8_quantize_model(X_F8.size)).run(None, {"x": X_F8})[0]
    got = F.quantize_linear(X_F8, np.float32(0.5), np.zeros((), ml_dtypes.float8_e4m3fn))
    if want.dtype == np.dtype(ml_dtypes.float8_e4m3fn):  # onnx 1.16+ returns ml_dtypes (measured: 1.23)
        assert got.dtype == want.dtype
        assert np.count_nonzero(got != want) == 0  # the comparison a user writes: values, not bits
    assert np.array_equal(got.view(np.uint8), np.asarray(want).view(np.uint8))


def test_float8_output_matches_onnxruntime_in_whatever_type_it_returns():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    try:
        sess = ort.InferenceSession(_float8_quantize_model(X_F8.size).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # an onnxruntime without float8 QuantizeLinear
        pytest.skip(f"onnxruntime {ort.__version__} cannot run QuantizeLinear to float8: {exc}")
    want = sess.run(None, {"x": X_F8})[0]
    got = F.quantize_linear(X_F8, np.float32(0.5), np.zeros((), ml_dtypes.float8_e4m3fn))
    # onnxruntime's Python API returns ml_dtypes arrays in some versions and the raw uint8 bits in
    # others (measured: 1.32 returns uint8); refquant follows the type its caller passed
    assert np.array_equal(got.view(np.uint8), np.asarray(want).view(np.uint8))
    if want.dtype == np.uint8:
        assert np.array_equal(F.quantize_linear(X_F8, np.float32(0.5), output_dtype="float8_e4m3fn"), want)


# ------------------------------------------------------ item 6: batched QLinearMatMul scales

def _qlinear_matmul_model(a_shape, b_shape, bs_shape, bz_shape):
    from onnx import TensorProto as T
    from onnx import helper

    names = [("a", T.UINT8, a_shape), ("as", T.FLOAT, []), ("az", T.UINT8, []), ("b", T.INT8, b_shape),
             ("bs", T.FLOAT, bs_shape), ("bz", T.INT8, bz_shape), ("ys", T.FLOAT, []), ("yz", T.UINT8, [])]
    node = helper.make_node("QLinearMatMul", [n for n, _, _ in names], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in names],
                              [helper.make_tensor_value_info("y", T.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _feeds(a_shape, b_shape, bs_shape, bz_shape, seed=0):
    rng = np.random.default_rng(seed)
    # |b| < 64: onnxruntime's u8s8 AVX2 path saturates int16 pair sums beyond that (a known quirk)
    return {"a": rng.integers(0, 256, a_shape).astype(np.uint8), "as": np.array(0.02, np.float32),
            "az": np.array(128, np.uint8), "b": rng.integers(-63, 64, b_shape).astype(np.int8),
            "bs": rng.uniform(0.005, 0.02, bs_shape).astype(np.float32), "bz": np.zeros(bz_shape, np.int8),
            "ys": np.array(0.3, np.float32), "yz": np.array(100, np.uint8)}


ORDER = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a_shape, b_shape, bs_shape, bz_shape", [
    ((2, 3, 4), (2, 4, 5), (2, 1, 5), (2, 1, 5)),
    ((2, 3, 4), (2, 4, 5), (2, 1, 5), (1,)),
    ((3, 4), (2, 4, 5), (2, 1, 5), (2, 1, 5)),
])
def test_qlinear_matmul_batched_column_scales_match_onnxruntime(backend, a_shape, b_shape, bs_shape, bz_shape):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    feeds = _feeds(a_shape, b_shape, bs_shape, bz_shape)
    model = _qlinear_matmul_model(a_shape, b_shape, bs_shape, bz_shape)
    try:
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    except Exception as exc:
        pytest.skip(f"onnxruntime {ort.__version__} refuses b_scale {bs_shape}: {exc}")
    got = F.qlinear_matmul(*[feeds[k] for k in ORDER], backend=backend)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_qlinear_matmul_batched_scales_equal_per_batch_calls():
    feeds = _feeds((3, 2, 4), (3, 4, 6), (3, 1, 6), (3, 1, 6), seed=4)
    y = F.qlinear_matmul(*[feeds[k] for k in ORDER])
    for i in range(3):
        one = dict(feeds, a=feeds["a"][i], b=feeds["b"][i], bs=feeds["bs"][i, 0], bz=feeds["bz"][i, 0])
        assert np.array_equal(y[i], F.qlinear_matmul(*[one[k] for k in ORDER]))


@pytest.mark.parametrize("a_shape, b_shape, bs_shape", [
    ((2, 3, 4), (2, 4, 5), (2, 1, 1)), ((2, 3, 4), (2, 4, 5), (2, 5)), ((3, 4), (4, 5), (1, 1, 5)),
    ((2, 3, 4), (4, 5), (2, 1, 5)), ((2, 3, 4), (2, 4, 5), (3, 1, 5)),
])
def test_qlinear_matmul_refuses_other_scale_shapes_with_the_reason(a_shape, b_shape, bs_shape):
    feeds = _feeds(a_shape, b_shape, bs_shape, ())
    with pytest.raises(ValueError, match="b_scale"):
        F.qlinear_matmul(*[feeds[k] for k in ORDER])
