"""The Numba kernels (``kernels/fast.py``) equal the reference kernels bit for bit.

Every comparison runs the reference and the Numba kernel on the same call and requires the
same outcome: the same array (dtype and values), or the same exception type with the same
message. Each hypothesis example also picks the tile path (``vnni`` where the CPU has it,
the portable ``int32`` loops, the exact ``int64`` loops), so all three are checked on every
host that has them. The scalar requantization functions are checked directly against
``refquant.numerics.requant.requantize`` on adversarial accumulators.
"""

from __future__ import annotations

import contextlib
import tracemalloc

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from refquant.kernels import fast
from refquant.kernels import reference as ref
from refquant.kernels.geometry import conv_geometry
from refquant.numerics.requant import (
    REQUANT_MODES,
    make_requantizer,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from refquant.registry import get_backend
from tests_support import outcome, smallest_input

PATHS = (("vnni",) if fast.HOST_HAS_VNNI else ()) + ("int32", "int64")
EIGHT_BIT = (np.int8, np.uint8)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@contextlib.contextmanager
def forced_path(path):
    old = fast._FORCE_PATH
    fast._FORCE_PATH = path
    try:
        yield
    finally:
        fast._FORCE_PATH = old


def assert_same(expected, got):
    assert expected[0] == got[0], f"reference gave {expected[:1] + expected[2:]}, numba {got[:1] + got[2:]}"
    if expected[0] == "ok":
        e, g = expected[1], got[1]
        assert g.dtype == e.dtype and g.shape == e.shape
        if not np.array_equal(e, g):
            diff = np.abs(e.astype(np.int64) - g.astype(np.int64))
            raise AssertionError(f"{np.count_nonzero(diff)} of {diff.size} outputs differ, "
                                 f"by up to {diff.max()} LSB")
    else:
        assert got[1] is expected[1] and got[2] == expected[2]


def run_both(kernel, path, *args, **kwargs):
    expected = outcome(getattr(ref, kernel), *args, **kwargs)
    with forced_path(path):
        got = outcome(getattr(fast, kernel), *args, **kwargs)
    assert_same(expected, got)
    return expected


# --- strategies -----------------------------------------------------------------------

def int_array(rng, shape, dtype, fill):
    info = np.iinfo(dtype)
    if fill == "extreme":  # only the two ends of the range: the largest products
        return rng.choice(np.array([info.min, info.max], dtype), size=shape)
    if fill == "small":
        return rng.integers(max(info.min, -3), min(info.max, 3) + 1, size=shape).astype(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


@st.composite
def zero_point(draw, dtype, channels=None):
    info = np.iinfo(dtype)
    values = st.integers(int(info.min), int(info.max))
    if channels is not None and draw(st.booleans()):
        return np.array(draw(st.lists(values, min_size=channels, max_size=channels)), dtype)
    return draw(st.sampled_from([dtype, int]))(draw(values))


@st.composite
def bias_vector(draw, channels):
    kind = draw(st.sampled_from(["none", "small", "large"]))
    if kind == "none":
        return None
    bound = 1000 if kind == "small" else 2**31 - 1
    return np.array(draw(st.lists(st.integers(-bound, bound), min_size=channels, max_size=channels)),
                    np.int32)


@st.composite
def requantizer(draw, channels):
    mode = draw(st.sampled_from(REQUANT_MODES))
    fmt = draw(st.sampled_from(["int8", "uint8", "int8", "uint8", "int16", "uint16"]))
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1),
              "uint16": (0, 2**16 - 1)}[fmt]
    scale = st.floats(1e-4, 1.0)
    w_scale = (np.array(draw(st.lists(scale, min_size=channels, max_size=channels)))
               if channels and draw(st.booleans()) else draw(scale))
    y_scale = draw(st.floats(1e-6, 2.0))
    if channels and draw(st.booleans()):
        y_zp = np.array(draw(st.lists(st.integers(lo, hi), min_size=channels, max_size=channels)))
    else:
        y_zp = draw(st.integers(lo, hi))
    activation = draw(st.sampled_from([None, "relu", "relu6"]))
    return make_requantizer(draw(scale), w_scale, y_scale, y_zp, fmt, mode=mode, activation=activation)


@st.composite
def matmul_case(draw):
    m, k, n = draw(st.integers(0, 9)), draw(st.integers(0, 80)), draw(st.integers(0, 9))
    a_dtype, w_dtype = draw(st.sampled_from(EIGHT_BIT)), draw(st.sampled_from(EIGHT_BIT))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "extreme", "small"]))
    a, w = int_array(rng, (m, k), a_dtype, fill), int_array(rng, (n, k), w_dtype, fill)
    return a, w, draw(zero_point(a_dtype)), draw(zero_point(w_dtype, n)), draw(bias_vector(n))


@st.composite
def conv_case(draw):
    depthwise = draw(st.booleans())
    if depthwise:
        group = draw(st.integers(1, 5))
        cin_g, cout_g = 1, draw(st.integers(1, 2))
    else:
        group, cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return draw(conv_operands(group, cin_g, cout_g, (kh, kw), strides, images=[1, 1, 2, 0]))


@st.composite
def conv_operands(draw, group, cin_g, cout_g, kernel, strides, images):
    """A conv case of this shape: dilations, padding (explicit or ``auto_pad``), an input at
    least as large as the kernel needs, 8-bit dtypes, values (random, the range's two ends, or
    small), zero points (scalar or per channel) and a bias; ``images`` the batch sizes drawn."""
    kh, kw = kernel
    dilations = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4)) if auto_pad == "NOTSET" else None
    h_min, w_min = smallest_input((kh, kw), dilations, pads, auto_pad)
    h, wd = draw(st.integers(h_min, h_min + 7)), draw(st.integers(w_min, w_min + 7))
    n = draw(st.sampled_from(images))
    x_dtype, w_dtype = draw(st.sampled_from(EIGHT_BIT)), draw(st.sampled_from(EIGHT_BIT))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "extreme", "small"]))
    x = int_array(rng, (n, group * cin_g, h, wd), x_dtype, fill)
    w = int_array(rng, (group * cout_g, cin_g, kh, kw), w_dtype, fill)
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group, auto_pad=auto_pad)
    c_out = group * cout_g
    return x, w, draw(zero_point(x_dtype)), draw(zero_point(w_dtype, c_out)), draw(bias_vector(c_out)), attrs


# --- matmul and conv: numba == reference ---------------------------------------------------

@given(matmul_case(), st.sampled_from(PATHS))
def test_matmul_int32_equals_reference(case, path):
    a, w, za, zw, bias = case
    run_both("matmul_int32", path, a, w, za, zw, bias)


@given(matmul_case(), st.sampled_from(PATHS), st.data())
def test_matmul_requant_equals_reference(case, path, data):
    a, w, za, zw, bias = case
    rq = data.draw(requantizer(w.shape[0]))
    run_both("matmul_requant", path, a, w, za, zw, bias, rq)


@given(conv_case(), st.sampled_from(PATHS))
def test_conv2d_int32_equals_reference(case, path):
    x, w, zx, zw, bias, attrs = case
    run_both("conv2d_int32", path, x, w, zx, zw, bias, **attrs)


@given(conv_case(), st.sampled_from(PATHS), st.data())
def test_conv2d_requant_equals_reference(case, path, data):
    x, w, zx, zw, bias, attrs = case
    rq = data.draw(requantizer(w.shape[0]))
    run_both("conv2d_requant", path, x, w, zx, zw, bias, rq, **attrs)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(3, 3), (5, 5), (1, 3)]), st.sampled_from([(1, 1), (2, 2), (2, 1)]),
       st.lists(st.integers(0, 2), min_size=4, max_size=4), st.data())
def test_depthwise_rows_in_several_blocks_equal_reference(seed, kernel, strides, pads, data):
    """Planes wider than one block of the depthwise kernel's row sums (``_DEPTHWISE_BLOCK``):
    each block gets every tap and is requantized on its own, in output order."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 5))
    h = int(rng.integers(kernel[0], 40))
    wd = int(rng.integers(fast._DEPTHWISE_BLOCK // 30, fast._DEPTHWISE_BLOCK // 12))
    x = int_array(rng, (2, c, h, wd), np.uint8, "random")
    w = int_array(rng, (c, 1) + kernel, np.int8, "random")
    bias = rng.integers(-50000, 50000, c).astype(np.int32)
    attrs = dict(strides=strides, pads=tuple(pads), group=c)
    assert fast._uses_depthwise(w.shape, x.dtype, w.dtype, c)
    run_both("conv2d_int32", None, x, w, 130, 0, bias, **attrs)
    run_both("conv2d_requant", None, x, w, 130, 0, bias, data.draw(requantizer(c)), **attrs)


@given(st.sampled_from([np.int16, np.uint16, np.int8, np.uint8]), st.sampled_from([np.int16, np.uint16, np.int8]),
       st.sampled_from(["random", "small"]), st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_sixteen_bit_operands_equal_reference(a_dtype, w_dtype, fill, seed, k):
    """16-bit operands take the int32 path when the data allow it, else int64."""
    rng = np.random.default_rng(seed)
    a, w = int_array(rng, (5, k), a_dtype, fill), int_array(rng, (3, k), w_dtype, fill)
    run_both("matmul_int32", None, a, w, 1, 2)
    x, wc = int_array(rng, (1, 2, 5, 4), a_dtype, fill), int_array(rng, (3, 2, 2, 2), w_dtype, fill)
    run_both("conv2d_int32", None, x, wc, 1, 0, pads=(1, 0, 1, 1))


def test_resnet_like_conv_equals_reference():
    """One realistic layer (K = 576, a multiple of the VNNI chunk) on the default path."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (1, 64, 14, 14), dtype=np.uint8)
    w = rng.integers(-127, 128, (64, 64, 3, 3), dtype=np.int8)
    bias = rng.integers(-(2**14), 2**14, 64).astype(np.int32)
    rq = make_requantizer(0.02, rng.uniform(1e-3, 4e-3, 64), 0.05, 0, "uint8", activation="relu")
    assert run_both("conv2d_int32", None, x, w, 128, 0, bias, pads=(1, 1, 1, 1))[0] == "ok"
    assert run_both("conv2d_requant", None, x, w, 128, 0, bias, rq, pads=(1, 1, 1, 1))[0] == "ok"


# --- overflow -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_overflow_only_in_the_final_sum_is_raised_identically(path):
    """Products are small; the bias pushes two outputs past int32 at the very end."""
    a = np.full((3, 10), 127, np.int8)
    a[1] = 1
    w = np.full((4, 10), 127, np.int8)
    bias = np.array([0, INT32_MAX - 161290 + 1, 0, INT32_MIN], np.int32)  # 10·127·127 = 161290
    expected = run_both("matmul_int32", path, a, w, 0, 0, bias)
    assert expected[:2] == ("error", ref.AccumulatorOverflowError)
    assert "output index (0, 1)" in expected[2] and f"exact value {2**31}" in expected[2]
    rq = make_requantizer(0.1, 0.1, 1.0, 0, "int8")
    assert run_both("matmul_requant", path, a, w, 0, 0, bias, rq)[1] is ref.AccumulatorOverflowError


@pytest.mark.parametrize("path", PATHS)
def test_partial_sums_out_of_int32_with_a_final_that_fits_are_exact(path):
    """Σ (a - z_a)(w - z_w) = -40000·255² = -2.6e9 leaves int32; + bias brings it back."""
    k = 40000
    a = np.full((2, k), -128, np.int8)
    w = np.full((3, k), 127, np.int8)
    bias = np.array([INT32_MAX, INT32_MAX - 5, 2**31 - 2**29], np.int32)
    expected = run_both("matmul_int32", path, a, w, 127, -128, bias)
    assert expected[0] == "ok"
    exact = -k * 255 * 255 + bias.astype(np.int64)
    assert np.array_equal(expected[1], np.broadcast_to(exact, (2, 3)))
    rq = make_requantizer(1.0, 1e-7, 1.0, 0, "int8", mode="fixed-point")
    assert run_both("matmul_requant", path, a, w, 127, -128, bias, rq)[0] == "ok"


def test_large_k_takes_the_int64_path_and_stays_exact():
    """K · 128 · 128 ≥ 2**31: no int32 dot product is provably exact, so int64 is used."""
    k = 140000
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (2, k), dtype=np.uint8)
    w = rng.integers(0, 256, (2, k), dtype=np.uint8)
    assert fast._operands(a, w, 0, np.zeros(2, np.int64), k).path == "int64"
    expected = run_both("matmul_int32", None, a, w, 128, 128)
    a64, w64 = a.astype(object) - 128, w.astype(object) - 128
    assert expected[1][1, 0] == sum(a64[1] * w64[0])


def test_default_path_is_the_fastest_exact_one():
    zeros = np.zeros(3, np.int64)
    small8 = np.zeros((2, 64), np.uint8), np.zeros((3, 64), np.int8)
    assert fast._operands(*small8, 0, zeros, 64).path == ("vnni" if fast.HOST_HAS_VNNI else "int32")
    small16 = np.full((2, 64), 300, np.int16), np.full((3, 64), -300, np.int16)
    assert fast._operands(*small16, 0, zeros, 64).path == "int32"  # 64·300·300 < 2**31
    big16 = np.full((2, 64), 30000, np.int16), np.full((3, 64), -30000, np.int16)
    assert fast._operands(*big16, 0, zeros, 64).path == "int64"


@pytest.mark.parametrize("path", PATHS)
def test_conv_overflow_reports_the_first_index_like_the_reference(path):
    """Only outputs whose window lies inside the image overflow; padding keeps the rest below."""
    x = np.full((2, 3, 6, 5), 255, np.uint8)
    w = np.full((4, 3, 3, 3), -128, np.int8)
    bias = np.array([0, INT32_MIN + 27 * 255 * 128 - 1, 0, 0], np.int32)
    expected = run_both("conv2d_int32", path, x, w, 0, 0, bias, pads=(1, 1, 1, 1))
    assert expected[:2] == ("error", ref.AccumulatorOverflowError)
    assert "output index (0, 1, 1, 1)" in expected[2]


@pytest.mark.parametrize("path", PATHS)
def test_fixed_point_requant_overflow_is_raised_identically(path):
    """A multiplier ≥ 1 shifts the accumulator left first; if that leaves int32, the
    reference raises OverflowError — and an accumulator overflow is still reported first."""
    a = np.full((2, 64), 127, np.int8)
    w = np.full((3, 64), 127, np.int8)
    rq = make_requantizer(1.0, 1.0, 1 / 40000, 0, "int8", mode="fixed-point")
    got = run_both("matmul_requant", path, a, w, 0, 0, None, rq)
    assert got[:2] == ("error", OverflowError)
    bias = np.array([INT32_MAX, 0, 0], np.int32)
    mismatched = make_requantizer(1.0, np.ones(5), 1.0, 0, "int8")
    assert run_both("matmul_requant", path, a, w, 0, 0, bias, mismatched)[1] is ref.AccumulatorOverflowError
    assert run_both("matmul_requant", path, a, w, 0, 0, None, mismatched)[1] is ValueError


def test_unusual_operands_equal_reference():
    """Non-contiguous, big-endian and read-only operands; results must not depend on the
    number of threads; a fixed-point multiplier so large that its shift exceeds 63 bits."""
    rng = np.random.default_rng(5)
    a = rng.integers(-300, 300, (9, 2 * 37)).astype(">i2")[:, ::2]
    w = rng.integers(0, 256, (6, 37)).astype(np.uint8)
    w.setflags(write=False)
    assert run_both("matmul_int32", None, a, w, 3, 1)[0] == "ok"
    x = rng.integers(0, 256, (2, 3, 9, 8)).astype(np.uint8).transpose(0, 1, 3, 2)
    wc = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    expected = run_both("conv2d_int32", None, x, wc, 7, 0, pads=(1, 1, 1, 1), strides=(2, 1))
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert np.array_equal(fast.conv2d_int32(x, wc, 7, 0, pads=(1, 1, 1, 1), strides=(2, 1)), expected[1])
        assert np.array_equal(fast.matmul_int32(a, w, 3, 1), ref.matmul_int32(a, w, 3, 1))
    finally:
        numba.set_num_threads(saved)
    with pytest.raises(ValueError, match="shift must be <= 30"):  # make_requantizer refuses it
        make_requantizer(2.0**35, 2.0**35, 1.0, 0, "int8", mode="fixed-point")
    edge = make_requantizer(2.0**15, 2.0**14, 1.0, 0, "int8", mode="fixed-point")  # M = 2**29
    assert edge.shift[0] == 30
    small = np.array([[0], [1], [-1]], np.int8)
    assert run_both("matmul_requant", None, small, np.ones((1, 1), np.int8), 0, 0, None, edge)[0] == "ok"


# --- validation: same errors, same messages -------------------------------------------------

I8 = np.zeros((2, 3), np.int8)
X8 = np.zeros((1, 2, 4, 4), np.int8)
W8 = np.zeros((3, 2, 3, 3), np.int8)
RQ = make_requantizer(0.1, 0.1, 0.1, 0, "int8")

BAD_CALLS = [
    ("matmul_int32", (I8, np.zeros((3, 4), np.int8)), {}),
    ("matmul_int32", (I8.astype(np.float32), I8), {}),
    ("matmul_int32", (I8, I8.astype(np.int32)), {}),
    ("matmul_int32", (I8, I8, 300), {}),
    ("matmul_int32", (I8, I8, 0.5), {}),
    ("matmul_int32", (I8, I8, np.array([1, 2])), {}),
    ("matmul_int32", (I8, I8, 0, np.zeros(3, np.int8)), {}),
    ("matmul_int32", (I8, I8, 0, 0, np.zeros(2, np.int64)), {}),
    ("matmul_int32", (I8, I8, 0, 0, np.zeros(3, np.int32)), {}),
    ("matmul_requant", (I8, I8, 0, 0, None, make_requantizer(0.1, np.ones(4), 0.1)), {}),
    ("conv2d_int32", (X8[0], W8), {}),
    ("conv2d_int32", (X8, W8), {"group": 2}),
    ("conv2d_int32", (X8, W8), {"pads": (1, 1)}),
    ("conv2d_int32", (X8, W8), {"strides": (0, 1)}),
    ("conv2d_int32", (X8, W8), {"auto_pad": "SAME"}),
    ("conv2d_int32", (X8, W8), {"auto_pad": "SAME_UPPER", "pads": (1, 1, 1, 1)}),
    ("conv2d_int32", (X8, W8), {"dilations": (3, 3)}),
    ("conv2d_int32", (X8.astype(np.uint32), W8), {}),
    ("conv2d_int32", (X8, W8, 0, np.zeros(2, np.int8)), {}),
    ("conv2d_int32", (X8, W8, 0, 0, np.zeros(3, np.float32)), {}),
    ("conv2d_requant", (X8, W8, 0, 0, None, make_requantizer(0.1, np.ones(2), 0.1)), {}),
]


@pytest.mark.parametrize("kernel, args, kwargs", BAD_CALLS)
def test_bad_input_raises_what_the_reference_raises(kernel, args, kwargs):
    expected = outcome(getattr(ref, kernel), *args, **kwargs)
    assert expected[0] == "error"
    assert_same(expected, outcome(getattr(fast, kernel), *args, **kwargs))


def test_backend_lookup_returns_these_kernels_with_their_prepared_form():
    """The backend's kernel calls are ``exact_gemm``'s (the same signatures; they choose between
    the float32 GEMM and these tile kernels), the rest ``fast``'s."""
    from refquant.kernels import exact_gemm, fast_prepared, numba_backend

    backend = get_backend("numba")
    assert backend is numba_backend
    choosing = {"matmul_int32", "matmul_requant", "conv2d_int32", "conv2d_requant", "requant_scratch_bytes"}
    for name in fast.__all__:
        if callable(getattr(fast, name)):
            owner = exact_gemm if name in choosing else fast
            assert getattr(backend, name) is getattr(owner, name), name
    assert backend.prepare_layer is fast_prepared.prepare_layer


# --- requantization of one accumulator vs requantize ---------------------------------------

@njit(cache=True)
def _requantize_each(acc, rq_args, out, ok):
    mode, multiplier, q_multiplier, shift, zero_point, lo, hi = rq_args
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            y, fine = fast._requantize_one(np.int64(acc[r, c]), mode, multiplier[c], q_multiplier[c],
                                           shift[c], zero_point[c], lo[c], hi[c])
            out[r, c], ok[r, c] = y, fine


def requantize_with_numba(acc, rq):
    out = np.zeros(acc.shape, np.int64)
    ok = np.zeros(acc.shape, np.bool_)
    _requantize_each(acc, fast._requant_args(rq, acc.shape[1]), out, ok)
    return out, ok


EDGES = [INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1, 2**24, 2**24 + 1, 2**24 + 3,
         -(2**24) - 1, -(2**24) - 3, 2**25 + 1, 2**25 + 2, 2**25 + 6, 2**30 + 2**6 + 1, -(2**30) - 2**7 - 1,
         12345677, -7654321]
FORMAT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1),
                 "uint16": (0, 2**16 - 1)}
# multipliers: powers of two make exact .5 ties; the rest span flushed-to-zero ... ≥ 1
multiplier = st.one_of(st.sampled_from([2.0**e for e in range(-34, 4)]),
                       st.floats(2.0**-45, 2.0**6, width=32))


@st.composite
def accumulator(draw, m, offset_range):
    """Anywhere in int32, at the edges, or next to a rounding boundary: acc · m ≈ t + 1/2."""
    kind = draw(st.sampled_from(["any", "edge", "small", "near tie", "near tie", "near tie"]))
    if kind == "any":
        return draw(st.integers(INT32_MIN, INT32_MAX))
    if kind == "edge":
        return draw(st.sampled_from(EDGES))
    if kind == "small":
        return draw(st.integers(-(2**12), 2**12))
    t = draw(st.integers(*offset_range))
    acc = round((t + 0.5) / float(m)) + draw(st.sampled_from([0, 0, 0, 1, -1, 2, -2]))
    return min(max(acc, INT32_MIN), INT32_MAX)


@given(st.sampled_from(REQUANT_MODES), st.lists(multiplier, min_size=3, max_size=3),
       st.sampled_from(sorted(FORMAT_RANGES)), st.integers(1, 12), st.data())
def test_scalar_requantization_equals_requantize(mode, multipliers, fmt, rows, data):
    lo, hi = FORMAT_RANGES[fmt]
    zp = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=3, max_size=3)))
    activation = data.draw(st.sampled_from([None, "relu", "relu6"]))
    # x_scale = w_scale = 1 and y_scale = 1/m: the multiplier is float32(1 / float32(1/m)) ≈ m
    rq = make_requantizer(1.0, 1.0, 1.0 / np.array(multipliers), zp, fmt, mode=mode, activation=activation)
    acc = np.array([[data.draw(accumulator(rq.multiplier[c], (lo - int(zp[c]) - 2, hi - int(zp[c]) + 1)))
                     for c in range(3)] for _ in range(rows)], np.int32)
    got, ok = requantize_with_numba(acc, rq)
    try:
        expected = requantize(acc, rq, channel_axis=1)
    except OverflowError:
        assert mode == "fixed-point" and not ok.all()
        return
    assert ok.all()
    assert np.array_equal(got.astype(expected.dtype), expected)


def test_float32_mode_is_float32_arithmetic_with_ties_to_even():
    """Accumulators whose product lies near k + 1/2 and above 2**24 (where float32(acc)
    itself rounds): a float64 product, or a skipped float32(acc), would round differently."""
    m = np.float32(1e-4)
    rq = make_requantizer(1.0, 1.0, 1.0 / float(m), 0, "int16")
    assert rq.multiplier[0] == m
    centre = np.round((np.arange(-30000, 30000, 7) + 0.5) / np.float64(m)).astype(np.int64)
    acc = (centre[:, None] + np.arange(-2, 3)).reshape(-1, 1).astype(np.int32)
    in_float32 = np.rint(acc.astype(np.float32) * m)
    assert (in_float32 != np.rint(acc.astype(np.float64) * np.float64(m))).sum() > 10000
    assert (in_float32 != np.rint(np.float32(acc.astype(np.float64) * np.float64(m)))).sum() > 1000
    got, ok = requantize_with_numba(acc, rq)
    assert ok.all() and np.array_equal(got, np.clip(in_float32, -(2**15), 2**15 - 1))
    # exact ties: acc · 2**-1 = k + 1/2 rounds to the even neighbour (Python's round is that)
    half = make_requantizer(1.0, 1.0, 2.0, 0, "int16")
    odd = np.arange(-4001, 4001, 2, dtype=np.int32)[:, None]
    got, _ = requantize_with_numba(odd, half)
    assert np.array_equal(got[:, 0], [round(int(v) / 2) for v in odd[:, 0]])


def test_float64_mode_adds_the_zero_point_before_rounding():
    acc = np.array([[1], [3], [5], [-1], [-3]], np.int32)
    rq = make_requantizer(1.0, 1.0, 2.0, 3, "int8", mode="float64")
    got, _ = requantize_with_numba(acc, rq)
    assert list(got[:, 0]) == [round(v / 2 + 3) for v in (1, 3, 5, -1, -3)] == [4, 4, 6, 2, 2]


@njit(cache=True)
def _gemmlowp_each(a, b, e, high, divided):
    for i in range(a.shape[0]):
        high[i] = fast._saturating_rounding_doubling_high_mul(a[i], b[i])
        divided[i] = fast._rounding_divide_by_pot(high[i], e[i])


@given(st.lists(st.tuples(st.integers(INT32_MIN, INT32_MAX), st.integers(INT32_MIN, INT32_MAX),
                          st.integers(0, 31)), min_size=1, max_size=30))
def test_gemmlowp_primitives_equal_the_reference(triples):
    """Including negative ties, which C's truncating division rounds toward zero."""
    triples += [(INT32_MIN, INT32_MIN, 3), (-(2**30), 1, 0), (-(3 * 2**30), 1, 1), (-5, 2**30, 1)]
    a, b, e = (np.array(v, np.int64) for v in zip(*triples))
    high, divided = np.zeros_like(a), np.zeros_like(a)
    _gemmlowp_each(a, b, e, high, divided)
    expected_high = saturating_rounding_doubling_high_mul(a, b)
    assert np.array_equal(high, expected_high)
    assert np.array_equal(divided, rounding_divide_by_pot(expected_high, e))


# --- working memory ----------------------------------------------------------------------------

def traced_peak(fn):
    fn()  # compile / load from cache outside the measurement
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


SLACK = 16 * 1024  # Python objects of the call itself


def test_fused_matmul_allocates_only_its_output_and_the_stated_scratch():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (512, 64), dtype=np.uint8)
    w = rng.integers(-128, 128, (512, 64), dtype=np.int8)
    rq = make_requantizer(0.02, 0.01, 0.5, 0, "int8")
    out, peak = traced_peak(lambda: fast.matmul_requant(a, w, 128, 1, None, rq))
    scratch = fast.requant_scratch_bytes("matmul", a.shape, w.shape)
    assert scratch == 64 * 512 + fast._threads(None) * (32 * 512 + 120)  # the docstring's formula
    assert peak <= out.nbytes + scratch + SLACK < out.nbytes + 4 * out.size  # no int32 buffer
    acc, peak_unfused = traced_peak(lambda: fast.matmul_int32(a, w, 128, 1))
    assert peak_unfused >= acc.nbytes


def test_fused_conv_allocates_only_its_output_and_the_stated_scratch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 16, 64, 64), dtype=np.uint8)
    w = rng.integers(-128, 128, (32, 16, 3, 3), dtype=np.int8)
    rq = make_requantizer(0.02, 0.01, 0.5, 0, "uint8", activation="relu6")
    out, peak = traced_peak(lambda: fast.conv2d_requant(x, w, 128, 0, None, rq, pads=(1, 1, 1, 1)))
    scratch = fast.requant_scratch_bytes("conv2d", x.shape, w.shape, pads=(1, 1, 1, 1))
    assert peak <= out.nbytes + scratch + SLACK < out.nbytes + 4 * out.size


def test_documented_conv_scratch_number():
    g = conv_geometry((1, 64, 56, 56), (64, 64, 3, 3), pads=(1, 1, 1, 1))
    assert g.k % 32 == 0  # so the number is the same with and without VNNI
    assert fast.requant_scratch_bytes("conv2d", (1, 64, 56, 56), (64, 64, 3, 3), pads=(1, 1, 1, 1),
                                      threads=2) == 191984
