"""The real-network kernels equal their specifications bit for bit, on any thread count.

* the depthwise conv kernel (``fast._depthwise_kernel``: one input channel per group) — the
  NumPy reference conv, unprepared and prepared, over shapes, strides, pads, dilations,
  channel multipliers, zero points, biases and every requant mode; its channels-last form for
  planes up to 112×112 (``fast._depthwise_channels_last``) and the intrinsics it is built on
  (the move into channels-last order, the tap sums of two pixels, the row sums of eight, the
  requantization on the way out);
* the integer pooling hooks of the ``numba`` backend (``kernels/fast_pool.py``) — the NumPy
  rules of the integer-operator table (MaxPool: the float32 MaxPool of the integers;
  GlobalAveragePool: ``average_integers``);
* the backend's ``requantize`` (``kernels/fast_requant.py``) — ``refquant.numerics.requantize``
  over ranks, channel axes, formats and every mode, errors included;
* the backend's ``quantize`` and ``dequantized_add`` (``kernels/fast_elementwise.py``) —
  ``refquant.numerics.quantize`` (ties, saturation, overflow to ±inf, every integer format)
  and the fallback's dequantize-then-Add, float32 bits;
* every one of them with 1 and 2 Numba threads: identical outputs (the pooling and requantize
  kernels also with the thread pool forced for small inputs: ``refquant.kernels.grain``).
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refquant.executor.integer_ops import TABLE, QTensor, average_integers
from refquant.kernels import fast
from refquant.kernels import fast_pool, fast_requant, grain
from refquant.kernels.channel_vectors import (CHANNELS, PIXELS, ROW, pixels_in, requantized_out,
                                              row_sums_k3s1, row_sums_k3s2, row_sums_k5s1, row_sums_k5s2, tap_sums)
from refquant.kernels.geometry import conv_geometry
from refquant.kernels import reference as ref
from refquant.kernels.fast_prepared import prepare_layer
from refquant.numerics import QParams
from refquant.numerics.requant import REQUANT_MODES, make_requantizer, requantize
from refquant.ops import FLOAT_OPS
from tests_support import outcome, smallest_input

EIGHT_BIT = (np.int8, np.uint8)


@contextlib.contextmanager
def threads(n):
    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)


@contextlib.contextmanager
def pool_forced():
    """A grain of 0 (``refquant.kernels.grain``): every kernel call wakes the thread pool, as a
    large input does."""
    old = grain.PARALLEL_GRAIN
    grain.PARALLEL_GRAIN = 0
    try:
        yield
    finally:
        grain.PARALLEL_GRAIN = old


@contextlib.contextmanager
def configuration(name):
    """``1``: one thread; ``2``: two threads, small inputs on the calling thread (the grain);
    ``2-pool``: two threads and the pool woken for every input."""
    with threads(1 if name == "1" else 2), (pool_forced() if name == "2-pool" else contextlib.nullcontext()):
        yield


CONFIGURATIONS = ("1", "2", "2-pool")


def assert_same(expected, got):
    assert expected[0] == got[0], f"expected {expected[:1] + expected[2:]}, got {got[:1] + got[2:]}"
    if expected[0] == "ok":
        assert got[1].dtype == expected[1].dtype and got[1].shape == expected[1].shape
        assert np.array_equal(got[1], expected[1])
    else:
        assert got[1] is expected[1] and got[2] == expected[2]


def int_array(rng, shape, dtype, fill):
    info = np.iinfo(dtype)
    if fill == "extreme":
        return rng.choice(np.array([info.min, info.max], dtype), size=shape)
    if fill == "small":
        return rng.integers(max(info.min, -3), min(info.max, 3) + 1, size=shape).astype(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


@st.composite
def depthwise_case(draw):
    channels, mult = draw(st.integers(2, 12)), draw(st.sampled_from([1, 1, 1, 2, 3]))  # group = C_in > 1
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (1, 1), (3, 1), (2, 4), (7, 7)]))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4)) if auto_pad == "NOTSET" else None
    h_min, w_min = smallest_input((kh, kw), dilations, pads, auto_pad)
    h, wd = draw(st.integers(h_min, h_min + 12)), draw(st.integers(w_min, w_min + 12))
    n = draw(st.sampled_from([1, 1, 2, 3, 0]))
    x_dtype, w_dtype = draw(st.sampled_from(EIGHT_BIT)), draw(st.sampled_from(EIGHT_BIT))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "extreme", "small"]))
    x = int_array(rng, (n, channels, h, wd), x_dtype, fill)
    c_out = channels * mult
    w = int_array(rng, (c_out, 1, kh, kw), w_dtype, fill)
    xi, wi = np.iinfo(x_dtype), np.iinfo(w_dtype)
    zx = int(rng.integers(xi.min, int(xi.max) + 1))
    zw = (rng.integers(wi.min, int(wi.max) + 1, c_out).astype(w_dtype) if draw(st.booleans())
          else int(rng.integers(wi.min, int(wi.max) + 1)))
    bias_kind = draw(st.sampled_from(["none", "small", "large"]))
    bias = (None if bias_kind == "none" else
            rng.integers(-1000 if bias_kind == "small" else -(2**31),
                         1000 if bias_kind == "small" else 2**31, c_out).astype(np.int32))
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=channels, auto_pad=auto_pad)
    return x, w, zx, zw, bias, attrs


@st.composite
def requantizer(draw, channels):
    mode = draw(st.sampled_from(REQUANT_MODES))
    fmt = draw(st.sampled_from(["int8", "uint8", "int16"]))
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1)}[fmt]
    w_scale = (np.array(draw(st.lists(st.floats(1e-4, 1.0), min_size=channels, max_size=channels)))
               if draw(st.booleans()) else draw(st.floats(1e-4, 1.0)))
    return make_requantizer(draw(st.floats(1e-4, 1.0)), w_scale, draw(st.floats(1e-6, 2.0)),
                            draw(st.integers(lo, hi)), fmt, mode=mode,
                            activation=draw(st.sampled_from([None, "relu", "relu6"])))


def prepared_run(x, w, zx, zw, bias, attrs, rq):
    layer = prepare_layer("conv2d", w, zw, x_dtype=x.dtype, name="conv", **attrs)
    binding = layer.bind(zx, bias)
    if rq is None:
        return layer.run(x, binding, layer.requant_args(None), np.int32)
    return layer.run(x, binding, layer.requant_args(rq), rq.out_dtype)


@settings(max_examples=80, deadline=None)
@given(depthwise_case(), st.data())
def test_depthwise_conv_equals_reference_on_one_and_two_threads(case, data):
    x, w, zx, zw, bias, attrs = case
    assert fast._uses_depthwise(w.shape, x.dtype, w.dtype, attrs.get("group", 1))
    rq = data.draw(requantizer(w.shape[0]))
    for args, kernel in (((x, w, zx, zw, bias), "conv2d_int32"), ((x, w, zx, zw, bias, rq), "conv2d_requant")):
        expected = outcome(getattr(ref, kernel), *args, name="conv", **attrs)
        for n in (1, 2):
            with threads(n):
                assert_same(expected, outcome(getattr(fast, kernel), *args, name="conv", **attrs))
                prepared_rq = rq if kernel == "conv2d_requant" else None
                assert_same(expected, outcome(prepared_run, x, w, zx, zw, bias, attrs, prepared_rq))


@st.composite
def channels_last_case(draw):
    """Depthwise convs the channels-last kernel takes (``fast._channels_last``): one output
    channel per input channel — up to 80, several blocks of 32 and a partial one — small
    planes, any strides, dilations and pads, the float32 mode with sums proven inside int32."""
    channels = draw(st.integers(2, 80))
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (1, 1), (2, 3), (7, 7)]))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h_min, w_min = smallest_input((kh, kw), dilations, pads, "NOTSET")
    h, wd = draw(st.integers(h_min, h_min + 9)), draw(st.integers(w_min, w_min + 9))
    x_dtype, w_dtype = draw(st.sampled_from(EIGHT_BIT)), draw(st.sampled_from(EIGHT_BIT))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "extreme", "small"]))
    x = int_array(rng, (draw(st.sampled_from([1, 2, 0])), channels, h, wd), x_dtype, fill)
    w = int_array(rng, (channels, 1, kh, kw), w_dtype, fill)
    xi, wi = np.iinfo(x_dtype), np.iinfo(w_dtype)
    zx = int(rng.integers(xi.min, int(xi.max) + 1))
    zw = (rng.integers(wi.min, int(wi.max) + 1, channels).astype(w_dtype) if draw(st.booleans())
          else int(rng.integers(wi.min, int(wi.max) + 1)))
    bias = rng.integers(-(2**20), 2**20, channels).astype(np.int32) if draw(st.booleans()) else None
    rq = make_requantizer(draw(st.floats(1e-4, 1.0)), rng.uniform(1e-4, 1.0, channels), draw(st.floats(1e-6, 2.0)),
                          draw(st.integers(0, 255)), "uint8", mode="float32",
                          activation=draw(st.sampled_from([None, "relu", "relu6"])))
    return x, w, zx, zw, bias, rq, dict(strides=strides, pads=pads, dilations=dilations, group=channels)


def _strided_block_case():
    """Two images, 40 channels (a whole block and a partial one), 9×9 → 5×5 at stride 2, pad 1."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (2, 40, 9, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (40, 1, 3, 3)).astype(np.int8)
    rq = make_requantizer(0.02, rng.uniform(0.001, 0.02, 40), 0.05, 3, "uint8", mode="float32")
    return x, w, 5, 0, rng.integers(-1000, 1000, 40).astype(np.int32), rq, dict(
        strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), group=40)


def _banded_case(kernel, strides, x_dtype):
    """28×28 outputs (four bands of rows, split into parts on one and two threads; pixel
    counts that leave scalar tails in and out), 72 channels (two blocks and a partial one), values at
    the extremes, a 5×5 or 3×3 kernel at stride 1 or 2 (the row sums' four forms) or 3×3 at
    dilation 2 (the tap sums)."""
    rng = np.random.default_rng(len(str(kernel)) + 10 * strides[0])
    k, dil = (3, (2, 2)) if kernel == "dilated" else (kernel, (1, 1))
    h = 28 * strides[0] - 1
    info = np.iinfo(x_dtype)
    x = rng.choice(np.array([info.min, info.max, info.min + 1], x_dtype), (1, 72, h, h + 1))
    w = rng.choice(np.array([-128, 127, 5], np.int8), (72, 1, k, k))
    pad = dil[0] * (k - 1) // 2
    rq = make_requantizer(0.02, rng.uniform(0.001, 0.02, 72), 0.5, 7, "uint8", mode="float32", activation="relu")
    return x, w, int(info.min) + 3, 1, rng.integers(-10_000, 10_000, 72).astype(np.int32), rq, dict(
        strides=strides, pads=(pad,) * 4, dilations=dil, group=72)


@settings(max_examples=60, deadline=None)
@given(channels_last_case())
@example(case=_strided_block_case())
@example(case=_banded_case(5, (1, 1), np.uint8))
@example(case=_banded_case(3, (1, 1), np.int8))
@example(case=_banded_case(5, (2, 2), np.int8))
@example(case=_banded_case(3, (2, 2), np.uint8))
@example(case=_banded_case("dilated", (1, 1), np.uint8))
def test_depthwise_channels_last_equals_the_reference_and_the_plane_kernel(case):
    """The channels-last kernel called directly (with the plan's blocks, filled with NaN: the
    kernel zeroes their padding itself) and through the dispatcher, on 1 and 2 threads,
    against the reference; and the plane kernel (the channels-last path switched off) gives
    the same bits."""
    x, w, zx, zw, bias, rq, attrs = case
    g = conv_geometry(x.shape, w.shape, name="dw", **attrs)
    assert fast._channels_last(g) == (g.h * g.w <= fast._CHANNELS_LAST_PIXELS)
    expected = outcome(ref.conv2d_requant, x, w, zx, zw, bias, rq, name="dw", **attrs)
    assert expected[0] == "ok"  # 255 · 49 · 255 + 2**20 is far inside int32: always proven
    if fast._channels_last(g):
        for n in (1, 2):  # a plane per thread, each thread a range of (block, part of its bands)
            _, arrays = fast._depthwise_plan(g, n)
            blocks = fast._depthwise_scratch(arrays)[4]
            nb = -(-x.shape[1] // CHANNELS)
            assert blocks.shape[0] == n and nb * fast._channels_last_parts(nb, n) >= n  # a task for every plane
            blocks.fill(np.nan)
            out = np.empty(expected[1].shape, np.uint8)
            b = np.zeros(w.shape[0], np.int64) if bias is None else bias.astype(np.int64)
            wb = fast._channels_last_weights(fast._centred_depthwise_weights(w, zw))
            with threads(n):
                fast._depthwise_channels_last(x, wb, fast._depthwise_geometry(g), np.int32(zx), b,
                                              fast._requant_args(rq, w.shape[0]), fast._signed_view(out), blocks)
            assert_same(expected, ("ok", out))
    for n in (1, 2):
        with threads(n):
            assert_same(expected, outcome(fast.conv2d_requant, x, w, zx, zw, bias, rq, name="dw", **attrs))
            assert_same(expected, outcome(prepared_run, x, w, zx, zw, bias, attrs, rq))
    old = fast.USE_CHANNELS_LAST
    fast.USE_CHANNELS_LAST = False
    try:
        assert_same(expected, outcome(fast.conv2d_requant, x, w, zx, zw, bias, rq, name="dw", **attrs))
    finally:
        fast.USE_CHANNELS_LAST = old


def test_channels_last_weights_are_the_centred_weights_in_blocks():
    """Block ``k``'s tap ``t`` of channel ``32k + e`` at ``[k, 32t + e]``; channels past C are 0."""
    wc = np.arange(-35 * 4, 35 * 4).reshape(70, 4).astype(np.int32)[:, ::-1].copy()
    wb = fast._channels_last_weights(wc)
    assert wb.shape == (3, 4 * CHANNELS) and wb.dtype == np.float32
    for c in (0, 31, 32, 69):
        for t in range(4):
            assert wb[c // CHANNELS, t * CHANNELS + c % CHANNELS] == wc[c, t]
    assert np.all(wb[2].reshape(4, CHANNELS)[:, 70 - 64:] == 0)


@numba.njit(cache=True)
def _tap_sums(plane, weights, offs, pixel, step, out):
    tap_sums(plane, weights, offs, pixel, step, out)


@pytest.mark.parametrize("taps", [1, 2, 9, 25, 258])
def test_tap_sums_are_the_exact_integer_sums_of_the_taps(taps):
    """``out[e] = Σ_t plane[(pixel + offs[t])·32 + e] · weights[t·32 + e]`` and ``out[32 + e]``
    the same at ``pixel + step``, with centred activations and weights at ±255 and a partial
    sum up to 255 · 258 · 255 = 16 776 450 < 2**24 (the kernel's limit): every float32 sum
    equals the int64 one, odd and even tap counts; ``step = 0`` repeats the first pixel."""
    rng = np.random.default_rng(taps)
    pixels = 300
    plane = rng.choice(np.array([-255.0, 255.0], np.float32), pixels * CHANNELS).astype(np.float32)
    weights = rng.choice(np.array([-255.0, 255.0], np.float32), taps * CHANNELS).astype(np.float32)
    weights[:CHANNELS] = 255.0
    plane[:] = np.where(np.arange(plane.size) % 2 == 0, plane, 255.0)
    offs = rng.integers(0, pixels - 40, taps).astype(np.int64)
    out = np.full(2 * CHANNELS + 4, 7.0, np.float32)
    p = plane.reshape(pixels, CHANNELS).astype(np.int64)
    wts = weights.reshape(taps, CHANNELS).astype(np.int64)
    for step in (3, 0):
        _tap_sums(plane, weights, offs, 17, step, out)
        for at, first in ((17, 0), (17 + step, CHANNELS)):
            expected = sum(p[at + offs[t]] * wts[t] for t in range(taps))
            assert np.array_equal(out[first:first + CHANNELS].astype(np.int64), expected)
        assert np.all(out[2 * CHANNELS:] == 7.0)  # nothing past the two pixels is written
    ones = np.full(taps * CHANNELS, 255.0, np.float32)
    full = np.full(pixels * CHANNELS, 255.0, np.float32)
    _tap_sums(full, ones, offs, 17, 1, out)
    assert np.all(out[:2 * CHANNELS] == 255 * 255 * taps)


_ROW_SUMS = {(3, 1): row_sums_k3s1, (5, 1): row_sums_k5s1, (3, 2): row_sums_k3s2, (5, 2): row_sums_k5s2}


@numba.njit(cache=True)
def _row_sums(kind, plane, weights, kh, pitch, pixel, out):
    if kind == 1:
        row_sums_k3s1(plane, weights, kh, pitch, pixel, out)
    elif kind == 2:
        row_sums_k5s1(plane, weights, kh, pitch, pixel, out)
    elif kind == 3:
        row_sums_k3s2(plane, weights, kh, pitch, pixel, out)
    else:
        row_sums_k5s2(plane, weights, kh, pitch, pixel, out)


@pytest.mark.parametrize("kw,sw", sorted(_ROW_SUMS))
@pytest.mark.parametrize("kh", [1, 3, 10])
def test_row_sums_are_the_exact_sums_of_eight_pixels(kw, sw, kh):
    """``out[p·32 + e] = Σ_{i<kh, j<kw} plane[(pixel + i·pitch + p·s_w + j)·32 + e] ·
    weights[(i·kw + j)·32 + e]`` for the eight pixels ``p``, at the 2**24 bound (10·5 taps of
    255·255 with a mixed-sign start) and with ``fast._row_kind`` naming each intrinsic."""
    assert fast._row_kind(kw, sw, 1) == {(3, 1): 1, (5, 1): 2, (3, 2): 3, (5, 2): 4}[kw, sw]
    assert fast._row_kind(kw, sw, 2) == 0 and fast._row_kind(7, 1, 1) == 0
    rng = np.random.default_rng(kw * 10 + sw + kh)
    pitch, pixels = 40, 40 * (kh + 1)
    plane = rng.choice(np.array([-255.0, 255.0, 3.0], np.float32), (pixels, CHANNELS))
    weights = rng.choice(np.array([-255.0, 255.0, 0.0], np.float32), (kh * kw, CHANNELS))
    plane[:, :4], weights[:, :4] = 255.0, 255.0  # four channels at the bound: 255 · 255 · 50 < 2**24
    out = np.full((ROW + 1, CHANNELS), 7.0, np.float32)
    _row_sums(fast._row_kind(kw, sw, 1), plane.reshape(-1), weights.reshape(-1), kh, pitch, 5, out.reshape(-1))
    p, wts = plane.astype(np.int64), weights.astype(np.int64)
    for q in range(ROW):
        expected = sum(p[5 + i * pitch + q * sw + j] * wts[i * kw + j] for i in range(kh) for j in range(kw))
        assert np.array_equal(out[q].astype(np.int64), expected)
    assert np.all(out[ROW] == 7.0)


@numba.njit(cache=True)
def _pixels_in(src, hw, p0, zx, nc, at, dst):
    pixels_in(src, hw, p0, zx, nc, at, dst)


@pytest.mark.parametrize("dtype", EIGHT_BIT)
@pytest.mark.parametrize("nc", [32, 7, 1])
def test_pixels_move_into_channels_last_order(dtype, nc):
    """``pixels_in``: eight pixels of ``nc`` channels (each ``hw`` apart) land, centred and in
    float32, at their ``at`` places, channels ``≥ nc`` as 0 and nothing else written."""
    rng = np.random.default_rng(nc)
    info = np.iinfo(dtype)
    hw, p0 = 21, 9
    src = rng.integers(info.min, int(info.max) + 1, nc * hw).astype(dtype)
    at = (rng.permutation(40)[:hw] * CHANNELS).astype(np.int64)
    dst = np.full(40 * CHANNELS, 7.5, np.float32)
    _pixels_in(src, hw, p0, np.float32(-3), nc, at, dst)
    placed = dst.reshape(40, CHANNELS)
    for j in range(PIXELS):
        pixel = placed[at[p0 + j] // CHANNELS]
        assert np.array_equal(pixel[:nc], src.reshape(nc, hw)[:, p0 + j].astype(np.float32) + 3)
        assert np.all(pixel[nc:] == 0)
    others = np.setdiff1d(np.arange(40), at[p0:p0 + PIXELS] // CHANNELS)
    assert np.all(placed[others] == 7.5)


@numba.njit(cache=True)
def _requantized_out(sums, f0, dst, pixels, nc, ints, floats):
    requantized_out(sums, f0, dst, pixels, nc, ints, floats)


@numba.njit(cache=True)
def _clamped_one(y, bias, m, z, low, high):
    return fast._float32_clamped(np.int32(y), bias, m, z, low, high)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("nc", [32, 5])
def test_requantized_out_is_float32_clamped_lane_for_lane(dtype, nc):
    """``requantized_out`` = ``fast._float32_clamped`` of each sum (then the output's low
    bits), eight pixels of 32 channels: ties of ``rint``, both clamps, an infinite product
    (``m = inf``), ``0 · inf`` (NaN: the clamps pass it on, and the conversion gives what the
    scalar conversion gives), a bias that wraps the int32 sum, multipliers from 1e-9 to 1e9;
    channels ``≥ nc`` not stored."""
    rng = np.random.default_rng(nc)
    pixels, f0 = 21, 9
    sums = rng.integers(-(2**24), 2**24, (pixels + 1, CHANNELS)).astype(np.float32)
    sums[f0:f0 + 2, :4] = [0.0, 5.0, -5.0, 2.0**24]
    ints = np.stack([rng.integers(-(2**20), 2**20, CHANNELS), rng.integers(-200, 200, CHANNELS)]).astype(np.int32)
    ints[0, 3] = 2**31 - 1  # 2**24 + 2**31 - 1 wraps, in both
    mult = (10.0 ** rng.uniform(-9, 9, CHANNELS)).astype(np.float32)
    mult[:3] = [np.inf, 0.5, 1.0]  # 0 · inf, ties at ±2.5 (bias 0 below), plain
    ints[0, :3] = 0
    low, high = np.float32(-128) - ints[1], np.float32(127) - ints[1]
    floats = np.stack([mult, low.astype(np.float32), high.astype(np.float32)]).astype(np.float32)
    out = np.full(nc * pixels, 77, dtype)
    _requantized_out(sums.reshape(-1), f0, out, pixels, nc, ints, floats)
    planes = out.reshape(nc, pixels)
    for j in range(PIXELS):
        for e in range(nc):
            want = _clamped_one(sums[f0 + j, e], ints[0, e], floats[0, e], ints[1, e], floats[1, e], floats[2, e])
            assert planes[e, f0 + j] == np.array(want, np.int32).astype(dtype), (j, e)
    assert np.all(planes[:, :f0] == 77) and np.all(planes[:, f0 + PIXELS:] == 77)


def test_depthwise_channels_last_only_where_its_int32_sums_are_proven():
    """A 5×5 plane whose channel 1's bias leaves no room for its sums (``255 · Σ|w_c| + |bias|
    > 2**31 - 1``): the dispatcher keeps the plane kernel, which checks every accumulator, and
    the overflow is raised as the reference raises it (the channels-last sums would wrap)."""
    x = np.full((1, 3, 5, 5), 255, np.uint8)
    w = np.full((3, 1, 3, 3), 127, np.int8)
    bias = np.array([0, 2**31 - 1 - 200_000, 0], np.int32)  # 9 · 255 · 127 = 291 465 > 200 000
    rq = make_requantizer(0.02, 0.01, 0.05, 0, "uint8", mode="float32")
    assert fast._channels_last(conv_geometry(x.shape, w.shape, name="dw", pads=(1, 1, 1, 1), group=3))
    expected = outcome(ref.conv2d_requant, x, w, 0, 0, bias, rq, name="dw", pads=(1, 1, 1, 1), group=3)
    assert expected[0] == "error"
    for n in (1, 2):
        with threads(n):
            assert_same(expected, outcome(fast.conv2d_requant, x, w, 0, 0, bias, rq, name="dw", pads=(1, 1, 1, 1),
                                          group=3))


def test_depthwise_prepared_layer_takes_the_depthwise_kernel():
    w = np.ones((8, 1, 3, 3), np.int8)
    layer = prepare_layer("conv2d", w, 0, x_dtype=np.uint8, name="dw", group=8, pads=(1, 1, 1, 1))
    assert layer.path == "depthwise" and layer.kernel is fast._depthwise_kernel
    dense = prepare_layer("conv2d", np.ones((8, 2, 3, 3), np.int8), 0, x_dtype=np.uint8, name="c", group=4)
    assert dense.path != "depthwise"


def test_depthwise_overflow_is_raised_like_the_reference():
    x = np.full((1, 2, 6, 6), -128, np.int8)
    w = np.full((2, 1, 3, 3), -128, np.int8)
    bias = np.array([0, 2**31 - 1], np.int32)
    expected = outcome(ref.conv2d_int32, x, w, 0, 0, bias, group=2, name="dw")
    assert expected[0] == "error"
    for n in (1, 2):
        with threads(n):
            assert_same(expected, outcome(fast.conv2d_int32, x, w, 0, 0, bias, group=2, name="dw"))


def test_depthwise_scratch_is_stated():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 32, 120, 120), dtype=np.uint8)  # past the channels-last planes
    w = rng.integers(-128, 128, (32, 1, 3, 3), dtype=np.int8)
    stated = fast.requant_scratch_bytes("conv2d", x.shape, w.shape, a_dtype=np.uint8, pads=(1, 1, 1, 1),
                                        group=32, threads=2)
    # the planes (2 threads × 122 × 122 int32) dominate; no buffer of the output's size in int32
    assert 2 * 122 * 122 * 4 < stated < 4 * 32 * 120 * 120
    # channels last (56×56, 96 channels: three blocks on two threads): a padded float32 plane per
    # thread, with its slack rows, is counted — not one per block
    w = rng.integers(-128, 128, (96, 1, 3, 3), dtype=np.int8)
    g = conv_geometry((1, 96, 56, 56), w.shape, name="dw", pads=(1, 1, 1, 1), group=96)
    assert fast._channels_last(g)
    stated = fast.requant_scratch_bytes("conv2d", (1, 96, 56, 56), w.shape, a_dtype=np.uint8, pads=(1, 1, 1, 1),
                                        group=96, threads=2)
    plane = (58 + fast._channels_last_slack(g)) * 58 * CHANNELS * 4
    assert 2 * plane <= stated < 3 * plane


# --- pooling hooks -------------------------------------------------------------------------

@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    ceil_mode = draw(st.integers(0, 1)) if auto_pad == "NOTSET" else 0
    pads = [draw(st.integers(0, min(k - 1, 2))) for k in (kh, kw, kh, kw)] if auto_pad == "NOTSET" else None
    h = draw(st.integers(dilations[0] * (kh - 1) + 1, dilations[0] * (kh - 1) + 10))
    wd = draw(st.integers(dilations[1] * (kw - 1) + 1, dilations[1] * (kw - 1) + 10))
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    info = np.iinfo(dtype)
    x = rng.integers(info.min, int(info.max) + 1, (draw(st.integers(0, 3)), draw(st.integers(1, 6)), h, wd)).astype(dtype)
    attrs = dict(kernel_shape=[kh, kw], strides=list(strides), dilations=list(dilations), auto_pad=auto_pad,
                 ceil_mode=ceil_mode)
    if pads is not None:
        attrs["pads"] = pads
    return x, attrs


def numpy_max_pool(x, attrs):
    return FLOAT_OPS["MaxPool"](x.astype(np.float32), **attrs).astype(x.dtype)


@settings(max_examples=120, deadline=None)
@given(pool_case())
def test_max_pool_hook_equals_the_numpy_rule(case):
    x, attrs = case
    expected = outcome(numpy_max_pool, x, attrs)
    for name in CONFIGURATIONS:
        with configuration(name):
            assert_same(expected, outcome(fast_pool.max_pool_integers, x, **attrs))


@st.composite
def inside_pool_case(draw):
    """Windows that never reach the padding (the hook's direct kernel): no leading pad, any
    trailing pad or ``ceil_mode`` that no window uses, more planes than threads."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    oh, ow = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    h = (oh - 1) * sh + dh * (kh - 1) + 1 + draw(st.integers(0, sh - 1))  # the rest of a stride: unused
    wd = (ow - 1) * sw + dw * (kw - 1) + 1 + draw(st.integers(0, sw - 1))
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "extreme", "small"]))
    x = int_array(rng, (draw(st.integers(0, 5)), draw(st.integers(1, 17)), h, wd), dtype, fill)
    if draw(st.booleans()):  # a strided view: the hook reads a contiguous copy
        x = np.concatenate([x, x], axis=3)[..., ::2]
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw])
    form = draw(st.sampled_from(["none", "zeros", "trailing", "valid"]))
    if form == "zeros":
        attrs["pads"] = [0, 0, 0, 0]
    elif form == "trailing":  # a trailing pad shorter than a stride adds no window
        attrs["pads"] = [0, 0, draw(st.integers(0, min(sh - 1, kh - 1))), draw(st.integers(0, min(sw - 1, kw - 1)))]
    elif form == "valid":
        attrs["auto_pad"] = "VALID"
    return x, attrs


@settings(max_examples=120, deadline=None)
@given(inside_pool_case())
def test_max_pool_without_padding_reads_the_source_and_equals_the_numpy_rule(case):
    x, attrs = case
    expected = outcome(numpy_max_pool, x, attrs)
    assert expected[0] == "ok"
    for name in CONFIGURATIONS:
        with configuration(name):
            assert_same(expected, outcome(fast_pool.max_pool_integers, x, **attrs))


def test_max_pool_takes_the_direct_kernel_exactly_when_no_window_reaches_padding(monkeypatch):
    calls = []
    real = fast_pool._max_pool_inside_kernel
    monkeypatch.setattr(fast_pool, "_max_pool_inside_kernel", lambda *a: calls.append(1) or real(*a))
    x = np.arange(2 * 3 * 8 * 8, dtype=np.int64).astype(np.int8).reshape(2, 3, 8, 8)
    for attrs, direct in ((dict(kernel_shape=[2, 2], strides=[2, 2]), True),  # the digits CNN's pool
                          (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]), False),
                          (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1), False),
                          (dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]), True),
                          (dict(kernel_shape=[3, 3], pads=[1, 0, 0, 0]), False),
                          (dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), False),
                          (dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), False),
                          (dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), True)):
        calls.clear()
        got = fast_pool.max_pool_integers(x, **attrs)
        assert bool(calls) == direct, attrs
        assert np.array_equal(got, numpy_max_pool(x, attrs))


def test_max_pool_entry_uses_the_hook_and_the_rule_is_the_default():
    from refquant.kernels import numba_backend, reference

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 4, 9, 9)).astype(np.uint8)
    qp = QParams(np.float32(0.1), np.uint8(7), "uint8")
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    entry = TABLE["MaxPool"]
    spec = entry.compute("MaxPool", [QTensor(x, qp)], attrs, name="p")
    assert np.array_equal(spec, entry.compute("MaxPool", [QTensor(x, qp)], attrs, name="p", backend=reference))
    assert np.array_equal(spec, entry.compute("MaxPool", [QTensor(x, qp)], attrs, name="p",
                                              backend=numba_backend))
    assert not hasattr(reference, "max_pool_integers")


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([np.int8, np.uint8]), st.integers(0, 3), st.integers(1, 9), st.integers(1, 20),
       st.integers(1, 20), st.integers(0, 2**32 - 1), st.floats(1e-6, 10.0), st.booleans())
def test_global_average_hook_equals_the_numpy_rule(dtype, n, c, h, wd, seed, scale, extreme):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    if extreme:
        x = rng.choice(np.array([info.min, info.max], dtype), size=(n, c, h, wd))
    else:
        x = rng.integers(info.min, int(info.max) + 1, (n, c, h, wd)).astype(dtype)
    z = int(rng.integers(info.min, int(info.max) + 1))
    qp = QParams(np.float32(scale), dtype(z), np.dtype(dtype).name)
    expected = average_integers("GlobalAveragePool", x, qp, {})
    for name in CONFIGURATIONS:
        with configuration(name):
            got = fast_pool.global_average_integers(x, qp.zero_point, qp.scale)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_global_average_hook_declines_what_it_cannot_prove():
    assert fast_pool.global_average_integers(np.zeros((1, 1, 300, 300), np.uint8), 0, 1.0) is None
    assert fast_pool.global_average_integers(np.zeros((1, 1, 3, 3), np.int16), 0, 1.0) is None


# --- requantize hook ------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.data())
def test_requantize_hook_equals_the_numpy_rule_on_any_layout(data):
    rank = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.lists(st.integers(0 if rank > 1 else 1, 6), min_size=rank, max_size=rank)))
    axis = data.draw(st.integers(-rank, rank - 1))
    channels = shape[axis]
    per_channel = channels > 1 and data.draw(st.booleans())
    rq_channels = channels if per_channel else 1
    mode = data.draw(st.sampled_from(REQUANT_MODES))
    fmt = data.draw(st.sampled_from(["int8", "uint8", "int16", "uint4"]))
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1), "uint4": (0, 15)}[fmt]
    w_scale = np.array(data.draw(st.lists(st.floats(1e-4, 1.0), min_size=rq_channels, max_size=rq_channels)))
    rq = make_requantizer(data.draw(st.floats(1e-4, 1.0)), w_scale, data.draw(st.floats(1e-6, 2.0)),
                          data.draw(st.integers(lo, hi)), fmt, mode=mode,
                          activation=data.draw(st.sampled_from([None, "relu", "relu6"])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    acc = int_array(rng, shape, np.int32, data.draw(st.sampled_from(["random", "extreme", "small"])))
    if data.draw(st.booleans()):  # a strided view
        acc = np.repeat(acc, 2, axis=0)[::2]
    expected = outcome(requantize, acc, rq, channel_axis=axis)
    for name in CONFIGURATIONS:
        with configuration(name), numpy_below(0):  # the kernel, whatever the size
            assert_same(expected, outcome(fast_requant.requantize, acc, rq, channel_axis=axis))


@contextlib.contextmanager
def numpy_below(n):
    old = fast_requant.NUMPY_BELOW
    fast_requant.NUMPY_BELOW = n
    try:
        yield
    finally:
        fast_requant.NUMPY_BELOW = old


def test_requantize_hook_takes_the_numpy_rule_for_few_accumulators_and_the_kernel_above(monkeypatch):
    calls = []
    kernel = fast_requant._requantize_kernel
    monkeypatch.setattr(fast_requant, "_requantize_kernel", lambda *a: calls.append(1) or kernel(*a))
    rq = make_requantizer(0.02, 0.003, 0.05, 3, "uint8")
    rng = np.random.default_rng(0)
    for shape, uses_kernel in (((599, 10), False), ((16, 32, 8, 8), True)):
        calls.clear()
        acc = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
        assert np.array_equal(fast_requant.requantize(acc, rq), requantize(acc, rq))
        assert bool(calls) == uses_kernel


def test_small_kernels_run_on_the_calling_thread_and_large_ones_on_the_pool():
    with threads(2):
        assert grain.kernel_threads(grain.PARALLEL_GRAIN - 1) == 1
        assert grain.kernel_threads(grain.PARALLEL_GRAIN) == numba.get_num_threads()
        with grain.threads_for(10) as n:
            assert n == 1 == numba.get_num_threads()
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)  # restored
        with pool_forced(), grain.threads_for(10) as n:
            assert n == numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)


def test_requantize_hook_raises_what_the_numpy_rule_raises():
    rq = make_requantizer(0.1, np.array([0.02, 0.03]), 0.5, 3, "int8")
    acc = np.arange(12, dtype=np.int32).reshape(2, 3, 2)
    for args, kwargs in (((acc, rq), {}),  # 3 channels, a requantizer for 2
                         ((acc.astype(np.int64), rq), {}), ((acc.astype(">i4"), rq), {"channel_axis": 2}),
                         ((acc, rq), {"channel_axis": 3}), ((acc, rq), {"channel_axis": True}),
                         ((np.int32(5), rq), {})):
        expected = outcome(requantize, *args, **kwargs)
        with numpy_below(0):
            assert_same(expected, outcome(fast_requant.requantize, *args, **kwargs))
    big = make_requantizer(1.0, 1.0, 0.25, 0, "int8", mode="fixed-point")  # acc · 2**3
    expected = outcome(requantize, np.array([[1, 2**29]], np.int32), big)
    assert expected[0] == "error"
    with numpy_below(0):
        assert_same(expected, outcome(fast_requant.requantize, np.array([[1, 2**29]], np.int32), big))


def test_the_numba_backend_requantizes_with_its_hook():
    from refquant.kernels import numba_backend

    assert numba_backend.requantize is fast_requant.requantize


# ---- quantize and the dequantized Add (kernels/fast_elementwise.py) ------------------------

FORMATS = ("uint8", "int8", "int4", "uint4", "int2", "int16", "uint16")


@st.composite
def quantize_case(draw):
    """A float32 tensor with values on and between the grid's half-steps (ties), beyond the
    range, huge (the quotient overflows to ±inf), tiny and ±0; a per-tensor format and scale."""
    from refquant.numerics import int_format

    fmt = int_format(draw(st.sampled_from(FORMATS)))
    scale = np.float32(draw(st.sampled_from([1e-30, 1e-6, 0.013, 0.5, 1.0, 3.7, 1e20])))
    zero_point = draw(st.integers(fmt.qmin, fmt.qmax))
    qp = QParams(np.float32(scale), np.int32(zero_point), fmt)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.sampled_from([0, 1, 7, 300, 5000]))
    steps = rng.integers(-2 * 70000, 2 * 70000, n).astype(np.float64) / 2  # half-steps: ties
    x = (steps * float(scale)).astype(np.float32)
    x[rng.random(n) < 0.1] = rng.choice(np.array([0.0, -0.0, 3e38, -3e38, 1e-45], np.float32))
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1, 1)]))
    return x.reshape(shape), qp


@settings(max_examples=150, deadline=None)
@given(quantize_case())
def test_quantize_hook_equals_the_numpy_rule(case):
    from refquant.kernels import fast_elementwise
    from refquant.numerics import quantize

    x, qp = case
    expected = quantize(x, qp)
    for name in CONFIGURATIONS:
        with configuration(name):
            got = fast_elementwise.quantize(x, qp)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_quantize_hook_declines_what_the_rule_must_decide():
    """Non-finite values (the rule raises, naming them), per-channel qparams and other input
    dtypes return ``None``: the executor then runs the NumPy rule."""
    from refquant.kernels import fast_elementwise
    from refquant.numerics import int_format

    qp = QParams(np.float32(0.1), np.int32(3), int_format("uint8"))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(100, np.float32)
        x[57] = bad
        assert fast_elementwise.quantize(x, qp) is None
    per_channel = QParams(np.full(2, 0.1, np.float32), np.zeros(2, np.int32), int_format("int8"), axis=1)
    assert fast_elementwise.quantize(np.zeros((1, 2), np.float32), per_channel) is None
    assert fast_elementwise.quantize(np.zeros(3, np.float64), qp) is None


@st.composite
def add_case(draw):
    from refquant.numerics import int_format

    def operand(shape):
        fmt = int_format(draw(st.sampled_from(FORMATS)))
        qp = QParams(np.float32(draw(st.floats(0.0001220703125, 10.0, width=32))), np.int32(draw(st.integers(fmt.qmin, fmt.qmax))), fmt)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return rng.integers(fmt.qmin, fmt.qmax + 1, shape).astype(fmt.storage_dtype), qp

    shape = draw(st.sampled_from([(0,), (1,), (3, 5), (2, 4, 7, 9), (1, 64, 16, 16)]))
    return (*operand(shape), *operand(shape))


@settings(max_examples=120, deadline=None)
@given(add_case())
def test_dequantized_add_hook_equals_the_fallback_bit_for_bit(case):
    from refquant.kernels import fast_elementwise
    from refquant.numerics import dequantize

    a, qa, b, qb = case
    expected = FLOAT_OPS["Add"](dequantize(a, qa), dequantize(b, qb))
    for name in CONFIGURATIONS:
        with configuration(name):
            got = fast_elementwise.dequantized_add(a, qa, b, qb)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_dequantized_add_hook_declines_broadcasts_and_per_channel():
    from refquant.kernels import fast_elementwise
    from refquant.numerics import int_format

    qp = QParams(np.float32(0.1), np.int32(3), int_format("uint8"))
    a = np.zeros((2, 3), np.uint8)
    assert fast_elementwise.dequantized_add(a, qp, np.zeros((1, 3), np.uint8), qp) is None
    per_channel = QParams(np.full(3, 0.1, np.float32), np.zeros(3, np.int32), int_format("uint8"), axis=1)
    assert fast_elementwise.dequantized_add(a, qp, a, per_channel) is None
    assert fast_elementwise.dequantized_add(a.astype(np.int32), qp, a, qp) is None


def test_the_fallback_add_takes_the_hook_and_keeps_the_rule(monkeypatch):
    """The table's fallback asks the backend for ``dequantized_add`` on a quantized + quantized
    Add and returns its array; without the hook (the reference backend) the NumPy rule runs,
    with the same bits."""
    from refquant.executor.integer_ops import FALLBACK
    from refquant.kernels import fast_elementwise, numba_backend
    from refquant.kernels import reference as reference_backend
    from refquant.numerics import int_format

    rng = np.random.default_rng(4)
    qa = QParams(np.float32(0.05), np.int32(128), int_format("uint8"))
    qb = QParams(np.float32(0.02), np.int32(-3), int_format("int8"))
    a = QTensor(rng.integers(0, 256, (2, 8, 5, 5)).astype(np.uint8), qa)
    b = QTensor(rng.integers(-128, 128, (2, 8, 5, 5)).astype(np.int8), qb)
    calls = []
    real = fast_elementwise.dequantized_add
    monkeypatch.setattr(numba_backend, "dequantized_add", lambda *args: calls.append(1) or real(*args))
    fast_y = FALLBACK.compute("Add", [a, b], {}, name="add", backend=numba_backend)
    rule_y = FALLBACK.compute("Add", [a, b], {}, name="add", backend=reference_backend)
    assert calls == [1]
    np.testing.assert_array_equal(fast_y.view(np.uint32), rule_y.view(np.uint32))
