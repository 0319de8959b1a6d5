"""``refquant.functional``'s own contract: layouts, dtypes, NumPy-matmul semantics, errors.

The numbers themselves are checked against onnxruntime and the onnx reference evaluator in
``test_functional_oracles.py`` and against onnx's backend cases in
``test_functional_onnx_nodes.py``; this file checks what those cannot: per-row zero points
(neither oracle implements them), representations of int4 and float formats, and that bad
input fails with an error naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refquant import functional as F
from refquant.kernels import AccumulatorOverflowError
from refquant.numerics import REQUANT_MODES, decode_format, make_requantizer, pack_nibbles, requantize

BACKENDS = ("reference", "numba")  # the engine's own kernel backends

seeds = st.integers(0, 2**32 - 1)


def _ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


# ------------------------------------------------------------------------- numpy.matmul shapes

@given(seed=seeds, shapes=st.sampled_from([
    ((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((3, 4), (2, 4, 5)),
]), ad=st.sampled_from([np.uint8, np.int8]), bd=st.sampled_from([np.uint8, np.int8]),
       zp_kind=st.sampled_from(["none", "scalar", "row_col"]), backend=st.sampled_from(BACKENDS))
def test_matmul_integer_is_numpy_matmul_of_centred_operands(seed, shapes, ad, bd, zp_kind, backend):
    """Exact int64 ``np.matmul`` of ``(a - z_a)`` and ``(b - z_b)`` with per-row ``z_a``
    (``[M]`` for 2-D ``a``, ``[..., M, 1]`` otherwise) and per-column ``z_b``."""
    rng = np.random.default_rng(seed)
    (a_shape, b_shape) = shapes
    a, b = _ints(rng, ad, a_shape), _ints(rng, bd, b_shape)
    za = zb = None
    ca, cb = a.astype(np.int64), b.astype(np.int64)
    if zp_kind == "scalar":
        za, zb = _ints(rng, ad, ()), _ints(rng, bd, ())
        ca, cb = ca - za, cb - zb
    elif zp_kind == "row_col" and a.ndim >= 2 and b.ndim >= 2:
        za = _ints(rng, ad, (a_shape[-2],) if a.ndim == 2 else a_shape[:-1] + (1,))
        zb = _ints(rng, bd, (b_shape[-1],))
        ca = ca - (za[:, None] if a.ndim == 2 else za)
        cb = cb - zb
    got = F.matmul_integer(a, b, za, zb, backend=backend)
    want = np.matmul(ca, cb)
    assert got.dtype == np.int32 and got.shape == want.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", REQUANT_MODES)
@given(seed=seeds, per_column=st.booleans())
def test_qlinear_matmul_is_requantize_of_matmul_integer(mode, seed, per_column):
    """Every mode: QLinearMatMul = requantize(MatMulInteger) with channels along N."""
    rng = np.random.default_rng(seed)
    a, b = _ints(rng, np.uint8, (5, 9)), _ints(rng, np.int8, (9, 4))
    za, zb = np.uint8(rng.integers(0, 256)), (_ints(rng, np.int8, (4,)) if per_column else np.int8(3))
    sb = rng.uniform(0.001, 0.01, 4).astype(np.float32) if per_column else np.float32(0.004)
    sa, sy, zy = np.float32(0.02), np.float32(0.05), np.uint8(rng.integers(0, 256))
    got = F.qlinear_matmul(a, sa, za, b, sb, zb, sy, zy, requant=mode)
    acc = F.matmul_integer(a, b, za, zb)
    want = requantize(acc, make_requantizer(sa, sb, sy, zy, "uint8", mode=mode), channel_axis=1)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", REQUANT_MODES)
def test_qlinear_conv_is_requantize_of_conv_integer_plus_bias(mode):
    rng = np.random.default_rng(1)
    x, w = _ints(rng, np.int8, (2, 4, 6, 5)), _ints(rng, np.int8, (6, 2, 3, 2))
    B = rng.integers(-500, 500, 6).astype(np.int32)
    sw = rng.uniform(0.001, 0.01, 6).astype(np.float32)
    attrs = dict(group=2, strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2])
    got = F.qlinear_conv(x, 0.03, np.int8(-3), w, sw, np.int8(0), 0.2, np.int8(5), B, **attrs, requant=mode)
    acc = F.conv_integer(x, w, np.int8(-3), np.int8(0), **attrs) + B[None, :, None, None]
    want = requantize(acc, make_requantizer(0.03, sw, 0.2, 5, "int8", mode=mode), channel_axis=1)
    assert np.array_equal(got, want)


def test_one_d_convolution_is_a_2d_one_of_height_one():
    rng = np.random.default_rng(2)
    x, w = _ints(rng, np.uint8, (2, 3, 11)), _ints(rng, np.int8, (4, 3, 3))
    y = F.conv_integer(x, w, np.uint8(7), None, pads=[2, 1], strides=[2], dilations=[2])
    y2 = F.conv_integer(x[:, :, None], w[:, :, None], np.uint8(7), None, pads=[0, 2, 0, 1], strides=[1, 2],
                        dilations=[1, 2])
    assert y.shape == (2, 4, 5) and np.array_equal(y, y2[:, :, 0])


# ------------------------------------------------------------ representations of odd types

def test_int4_outputs_are_int8_values_that_pack():
    x = np.array([-9.0, -8.0, -0.6, 0.5, 3.4, 7.0, 9.0], np.float32)
    q = F.quantize_linear(x, np.float32(1.0), np.int8(0), output_dtype="int4")
    assert q.dtype == np.int8 and q.tolist() == [-8, -8, -1, 0, 3, 7, 7]
    assert pack_nibbles(q, "int4").tolist() == [0x88, 0x0F, 0x73, 0x07]  # element 2i in the low nibble
    u = F.quantize_linear(x * 2, np.float32(1.0), None, output_dtype=21)  # ONNX code of UINT4
    assert u.dtype == np.uint8 and u.tolist() == [0, 0, 0, 1, 7, 14, 15]
    assert F.dequantize_linear(q, 1.0, np.int8(0), x_dtype="int4").tolist() == q.astype(np.float32).tolist()


def test_float8_outputs_are_bit_patterns_viewable_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([0.0, -0.0, 1.0, -2.5, 300.0, 1e6], np.float32)
    bits = F.quantize_linear(x, np.float32(1.0), output_dtype="float8_e4m3fn")
    assert bits.dtype == np.uint8 and bits.tolist() == [0x00, 0x80, 0x38, 0xC2, 0x79, 0x7E]
    view = F.as_ml_dtypes(bits, "float8_e4m3fn")
    assert view.dtype == ml_dtypes.float8_e4m3fn
    assert np.array_equal(view.astype(np.float32), decode_format(bits, "float8_e4m3fn"))
    assert np.array_equal(view[:5].astype(np.float32), x[:5].astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    nan = F.quantize_linear(np.float32(1e6), np.float32(1.0), output_dtype="float8_e4m3fn", saturate=0)
    assert int(nan) == 0x7F
    # ml_dtypes arrays go in as they are
    back = F.dequantize_linear(view, np.float32(2.0))
    assert back.tolist() == [0.0, -0.0, 2.0, -5.0, 576.0, 896.0]


def test_python_scalars_take_onnx_types():
    q = F.quantize_linear(np.array([0.26, -1.0], np.float32), 0.1, 128)
    assert q.dtype == np.uint8 and q.tolist() == [131, 118]
    y = F.qlinear_matmul(np.ones((1, 2), np.int8), 0.5, 0, np.ones((2, 1), np.int8), 0.5, 0, 0.25, 1)
    assert y.dtype == np.int8 and y.tolist() == [[3]]  # acc 2 · (0.25 / 0.25) + 1


def test_float16_dequantize_rounds_the_float32_product_once():
    q = np.array([255, 0, 1], np.uint8)
    y = F.dequantize_linear(q, np.float16(0.1), np.uint8(3))
    assert y.dtype == np.float16
    want = ((q.astype(np.int32) - 3).astype(np.float32) * np.float32(np.float16(0.1))).astype(np.float16)
    assert y.view(np.uint16).tolist() == want.view(np.uint16).tolist()
    assert F.dequantize_linear(q, np.float16(0.1), np.uint8(3), output_dtype=1).dtype == np.float32


def test_dynamic_quantize_linear_degenerate_input_has_scale_one():
    for x in (np.zeros(4, np.float32), np.zeros((0,), np.float32)):
        y, s, z = F.dynamic_quantize_linear(x)
        assert y.dtype == np.uint8 and s.dtype == np.float32 and z.dtype == np.uint8
        assert float(s) == 1.0 and int(z) == 0 and not y.any()


def test_accumulator_overflow_is_an_error_not_a_wrap():
    k = 2**17 + 1  # (-128)·(-128)·k > 2**31 - 1
    a, b = np.full((1, k), -128, np.int8), np.full((k, 1), -128, np.int8)
    for backend in BACKENDS:
        with pytest.raises(AccumulatorOverflowError):
            F.matmul_integer(a, b, backend=backend)
        with pytest.raises(AccumulatorOverflowError):
            F.qlinear_matmul(a, 1.0, np.int8(0), b, 1.0, np.int8(0), 1.0, np.int8(0), backend=backend)


# ------------------------------------------------------------------------------------ errors

X8 = np.zeros((2, 3), np.uint8)
XF = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize("call, err, match", [
    (lambda: F.quantize_linear(XF, -1.0), ValueError, "quantize_linear: y_scale must be finite and > 0"),
    (lambda: F.quantize_linear(XF, np.float32(np.nan)), ValueError, "y_scale must be finite"),
    (lambda: F.quantize_linear(XF, np.array([], np.float32)), ValueError, "y_scale is empty"),
    (lambda: F.quantize_linear(XF, "0.1"), TypeError, "y_scale must be float32 or float16"),
    (lambda: F.quantize_linear(X8, 1.0), TypeError, "x must be float32 or float16"),
    (lambda: F.quantize_linear(np.array([np.nan], np.float32), 1.0), ValueError, "x has 1 non-finite"),
    (lambda: F.quantize_linear(XF, 1.0, 300), ValueError, r"y_zero_point \[300\] outside the uint8 range"),
    (lambda: F.quantize_linear(XF, 1.0, np.int8(0), output_dtype="uint8"), TypeError, "does not match y_zero_point"),
    (lambda: F.quantize_linear(XF, 1.0, np.int16(0), output_dtype="int4"), TypeError, "does not match"),
    (lambda: F.quantize_linear(XF, 1.0, output_dtype="int32"), TypeError, "output type int32 is not supported"),
    (lambda: F.quantize_linear(XF, 1.0, output_dtype="float7"), ValueError, "unknown output_dtype"),
    (lambda: F.quantize_linear(XF, 1.0, output_dtype=99), ValueError, "99 is not an ONNX type code"),
    (lambda: F.quantize_linear(XF, np.ones(2, np.float32)), ValueError, "y_scale/y_zero_point: per-axis .* 3 entries"),
    (lambda: F.quantize_linear(XF, np.ones(3, np.float32), axis=2), ValueError, "axis 2 out of range"),
    (lambda: F.quantize_linear(XF, np.ones((2, 1), np.float32), axis=1, block_size=2), ValueError,
     r"blocked .* shape \(2, 2\)"),
    (lambda: F.quantize_linear(XF, np.ones(3, np.float32), np.zeros(2, np.uint8)), ValueError,
     "y_zero_point must have the shape of its scale"),
    (lambda: F.quantize_linear(XF, 1.0, np.uint8(0), precision="int8"), ValueError, "precision must be"),
    (lambda: F.quantize_linear(XF, 1.0, backend="cuda"), ValueError, "unknown backend 'cuda'"),
    (lambda: F.quantize_linear(np.float32([1e6]), 1.0, np.uint8(0), output_dtype="float4_e2m1fn") * 0
     + F.quantize_linear(np.float32([np.nan]), 1.0, output_dtype="float4_e2m1fn"), ValueError, "no NaN"),
    (lambda: F.dequantize_linear(XF, 1.0), TypeError, "dequantize_linear: x must be a quantized"),
    (lambda: F.dequantize_linear(np.int8([9]), 1.0, x_dtype="int4"), ValueError, "outside the int4 range"),
    (lambda: F.dequantize_linear(np.int16([1]), 1.0, x_dtype="int4"), TypeError, "cannot hold int4"),
    (lambda: F.dequantize_linear(X8, 1.0, np.int8(0)), TypeError,
     "x_zero_point has dtype int8 but its tensor is uint8"),
    (lambda: F.dequantize_linear(X8, 1.0, np.uint8(1), x_dtype="float8_e4m3fn"), ValueError, "must be zero"),
    (lambda: F.dequantize_linear(np.int32([5]), 1.0, np.int32(1)), ValueError, "int32 x has no zero point"),
    (lambda: F.dequantize_linear(X8, 0.0), ValueError, "x_scale must be finite and > 0"),
    (lambda: F.dequantize_linear(X8, 1.0, output_dtype="int8"), ValueError, "output_dtype must be float32 or float16"),
    (lambda: F.dynamic_quantize_linear(X8), TypeError, "dynamic_quantize_linear: x must be float32"),
    (lambda: F.dynamic_quantize_linear(np.float32([np.inf])), ValueError, "dynamic_quantize_linear x: 1 non-finite"),
])
def test_quantize_dequantize_errors_name_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call()


A = np.zeros((2, 3), np.uint8)
B = np.zeros((3, 4), np.uint8)
S, Z = np.float32(0.1), np.uint8(0)
XC, WC = np.zeros((1, 2, 5, 5), np.uint8), np.zeros((3, 2, 3, 3), np.uint8)


@pytest.mark.parametrize("call, err, match", [
    (lambda: F.qlinear_matmul(XF, S, Z, B, S, Z, S, Z), TypeError, "qlinear_matmul: a must be int8 or uint8"),
    (lambda: F.qlinear_matmul(A, S, Z, np.zeros((4, 4), np.uint8), S, Z, S, Z), ValueError,
     r"a has 3 columns but b has 4 rows"),
    (lambda: F.qlinear_matmul(np.zeros((2, 2, 3), np.uint8), S, Z, np.zeros((3, 3, 4), np.uint8), S, Z, S, Z),
     ValueError, "batch dimensions"),
    (lambda: F.qlinear_matmul(A, S, Z, B, np.ones(3, np.float32), Z, S, Z), ValueError,
     "b_scale must be a scalar or 1-D with 4 entries"),
    (lambda: F.qlinear_matmul(A, np.ones(2, np.float32), Z, B, S, Z, S, Z), ValueError,
     "a_scale and y_scale must be scalars"),
    (lambda: F.qlinear_matmul(A, S, Z, B, S, Z, 0.0, Z), ValueError, "y_scale must be finite and > 0"),
    (lambda: F.qlinear_matmul(A, np.float16(0.1), Z, B, S, Z, S, Z), TypeError, "must share one float type"),
    (lambda: F.qlinear_matmul(A, S, Z, B, S, Z, S, np.int16(0)), TypeError, "y_zero_point must be int8 or uint8"),
    (lambda: F.qlinear_matmul(A, S, np.int8(0), B, S, Z, S, Z), TypeError, "a_zero_point has dtype int8"),
    (lambda: F.qlinear_matmul(A, S, Z, B, S, Z, S, Z, requant="float16"), ValueError, "unknown requant mode"),
    (lambda: F.qlinear_matmul(A, S, Z, B, S, Z, S, Z, backend="gpu"), ValueError, "unknown kernel backend"),
    (lambda: F.matmul_integer(A, B, np.zeros(3, np.uint8)), ValueError, r"per-row a_zero_point must have shape \[2\]"),
    (lambda: F.matmul_integer(A, B, None, np.zeros(3, np.uint8)), ValueError,
     r"per-column b_zero_point must have shape \[4\]"),
    (lambda: F.matmul_integer(A, np.float32(B)), TypeError, "matmul_integer: b must be int8 or uint8"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, np.zeros(3, np.int64)), TypeError, "B must be int32"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, np.zeros(2, np.int32)), ValueError, r"B must have shape \(3,\)"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, np.ones(2, np.float32), Z, S, Z), ValueError,
     "w_scale must be a scalar or 1-D with 3 entries"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, np.zeros(2, np.uint8), S, Z), ValueError,
     "w_zero_point must be a scalar or 1-D with 3 entries"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, kernel_shape=[2, 2]), ValueError, "kernel_shape"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, pads=[1, 1]), ValueError, "pads must have 4 entries"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, strides=[1]), ValueError, "strides must have 2 entries"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, group=2), ValueError, "group=2"),
    (lambda: F.qlinear_conv(XC[..., None], S, Z, WC[..., None], S, Z, S, Z), ValueError,
     "3-D convolutions are not supported"),
    (lambda: F.qlinear_conv(XC, S, Z, WC, S, Z, S, Z, auto_pad="SAME"), ValueError, "auto_pad must be"),
    (lambda: F.conv_integer(XC, WC, np.zeros(2, np.uint8)), ValueError, "x_zero_point must be a scalar"),
    (lambda: F.conv_integer(XC, np.zeros((3, 2, 7, 7), np.uint8)), ValueError, "does not fit"),
])
def test_matmul_and_conv_errors_name_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call()
