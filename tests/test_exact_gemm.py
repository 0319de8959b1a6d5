"""The exact-by-bound float32 GEMM (``refquant/kernels/exact_gemm.py``) equals the reference.

Every layer, however small, is sent to the sgemm path (size thresholds 0), and the per-chunk
bound is drawn among 2**24 (the real one), 70 000 (a few columns per chunk) and 1 (every column
its own chunk), so the K-chunking and the float64 sum of the chunks are exercised on small
shapes. Compared with the NumPy reference kernels bit for bit, errors included (first
overflowing accumulator, fixed-point shift overflow), through the unprepared calls and the
prepared layer, over the conv cases of ``test_kernels_fast`` (strides, pads, dilations,
groups, auto_pad, u8/s8 × u8/s8, per-tensor and per-channel zero points, all requant modes).
"""

from __future__ import annotations

import contextlib
import tracemalloc

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.kernels import exact_gemm, fast, fast_prepared, pair_gemm
from refquant.kernels import reference as ref
from refquant.kernels.geometry import conv_geometry
from refquant.numerics.requant import make_requantizer
from test_kernels_fast import assert_same, conv_operands, matmul_case, outcome, requantizer

LIMITS = (exact_gemm.EXACT_LIMIT, 70_000, 1)


@contextlib.contextmanager
def sgemm_everywhere(limit=exact_gemm.EXACT_LIMIT, shifted=None, run=exact_gemm._EPILOGUE_RUN, pairs=None):
    """Every 8-bit layer on the sgemm path, with this chunk bound, stride-1 layout and im2col
    epilogue run (1: one image per run); ``pairs``: whether stride-1 one-group convs take
    ``pair_gemm``'s int16 tiles where exact (``None``: as on this host)."""
    names = ("MIN_MACS", "MIN_POINTWISE_MACS", "MIN_MATMUL_MACS", "MIN_COLUMNS", "_LIMIT", "_FORCE_SHIFTED",
             "_EPILOGUE_RUN", "USE_PAIRS", "VNNI_MATMUL")
    saved = [getattr(exact_gemm, name) for name in names]
    if pairs is None:
        pairs = exact_gemm.USE_PAIRS
    for name, value in zip(names, (0, 0, 0, 0, limit, shifted, run, pairs, False)):
        setattr(exact_gemm, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(exact_gemm, name, value)


def _prepared(kind, x, w, x_zp, w_zp, bias, rq, attrs):
    layer = fast_prepared.prepare_layer(kind, w, w_zp, x_dtype=x.dtype, name={"conv2d": "conv"}.get(kind, kind),
                                        **attrs)
    binding = layer.bind(x_zp, bias)
    shape = np.shape(x)
    if kind == "conv2d" and not fast._uses_depthwise(w.shape, x.dtype, w.dtype, attrs.get("group", 1)):
        assert layer._plan(shape, fast._threads(None))[4]  # the sgemm path was taken
    if rq is None:
        return layer.run(x, binding, layer.requant_args(None), np.int32)
    return layer.run(x, binding, layer.requant_args(rq), rq.out_dtype)


PAIR_SETTINGS = (False, True) if pair_gemm.HOST_HAS_AVX2 else (False,)


def _check(kind, args, rq, attrs, limit, shifted=None, run=exact_gemm._EPILOGUE_RUN):
    """The sgemm path (and, for a conv on an AVX2 host, also the int16 pair tiles) against the
    reference: same outputs, or the same error."""
    unfused = rq is None
    if kind == "conv2d":
        expected = (outcome(ref.conv2d_int32, *args, **attrs) if unfused
                    else outcome(ref.conv2d_requant, *args, rq, **attrs))
    else:
        expected = outcome(ref.matmul_int32, *args) if unfused else outcome(ref.matmul_requant, *args, rq)
    for pairs in PAIR_SETTINGS if kind == "conv2d" else (False,):
        with sgemm_everywhere(limit, shifted, run, pairs):
            if kind == "conv2d":
                got = (outcome(exact_gemm.conv2d_int32, *args, **attrs) if unfused
                       else outcome(exact_gemm.conv2d_requant, *args, rq, **attrs))
            else:
                got = (outcome(exact_gemm.matmul_int32, *args) if unfused
                       else outcome(exact_gemm.matmul_requant, *args, rq))
            assert_same(expected, got)
            assert_same(expected, outcome(_prepared, kind, *args, rq, attrs))


@st.composite
def conv_case(draw):
    """``test_kernels_fast``'s conv cases, weighted toward what this path distinguishes:
    stride 1 (two layouts), several groups, unequal dilations, up to 3 images."""
    group, cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 2), (1, 2), (3, 1)]))
    return draw(conv_operands(group, cin_g, cout_g, (kh, kw), strides, images=[1, 1, 2, 3, 0]))


@settings(deadline=None, max_examples=40)
@given(conv_case(), st.sampled_from(LIMITS), st.booleans(), st.sampled_from([1, 7, 1024]), st.data())
def test_conv_equals_reference(case, limit, shifted, run, data):
    """``shifted``: stride-1 convs on the padded input (True) or the im2col (False); ``run``:
    the im2col epilogue's outputs per run (1 and 7: one image per run, or runs of several
    images of a few pixels; 1024: all images of a small case in one run)."""
    x, w, zx, zw, bias, attrs = case
    rq = data.draw(st.one_of(st.none(), requantizer(w.shape[0])))
    _check("conv2d", (x, w, zx, zw, bias), rq, attrs, limit, shifted, run)


@settings(deadline=None, max_examples=40)
@given(conv_case())
def test_unchecked_binding_means_every_reference_accumulator_fits_int32(case):
    """``GemmBinding.unchecked`` (the epilogue skips the int32 check) is a proof: whenever it
    holds, the reference's accumulators are inside int32 for these operands — and it holds for
    ordinary operands (a 3×3 conv of 64 channels with a bias of ±10⁶)."""
    x, w, zx, zw, bias, attrs = case
    layer = fast_prepared.prepare_layer("conv2d", w, zw, x_dtype=x.dtype, name="conv", **attrs)
    if layer.gemm is None:
        return
    b = np.zeros(w.shape[0], np.int32) if bias is None else bias
    binding = layer.gemm.bind(zx, b)
    if binding.unchecked:
        acc = ref.conv2d_int32(x, w, zx, zw, bias, **attrs)  # raises on an accumulator outside int32
        # and the bound the flag rests on really bounds every accumulator
        bound = exact_gemm.activation_bound(x.dtype, zx) * layer.gemm.row_bound + int(np.abs(np.int64(b)).max())
        assert int(np.abs(acc.astype(np.int64)).max(initial=0)) <= bound
    w64 = np.full((8, 64, 3, 3), -128, np.int8)
    ordinary = exact_gemm.GemmLayer("conv2d", w64, np.zeros(8, np.int32), np.uint8, "c")
    assert ordinary.bind(0, np.full(8, 10**6, np.int64)).unchecked  # 255·128·576 + 10⁶ < 2**31
    assert not ordinary.bind(0, np.full(8, 2**31 - 255 * 128 * 576, np.int64)).unchecked


@settings(deadline=None, max_examples=25)
@given(matmul_case(), st.sampled_from(LIMITS), st.data())
def test_matmul_equals_reference(case, limit, data):
    a, w, za, zw, bias = case
    rq = data.draw(st.one_of(st.none(), requantizer(w.shape[0])))
    _check("matmul", (a, w, za, zw, bias), rq, {}, limit)


@settings(deadline=None, max_examples=30)
@given(st.integers(1, 6), st.integers(1, 60), st.integers(0, 255), st.sampled_from([1, 64, 70_000, 2**24]),
       st.integers(0, 2**32 - 1))
def test_chunks_keep_every_partial_sum_within_the_bound_and_are_maximal(n, k, a_max, limit, seed):
    rng = np.random.default_rng(seed)
    wc = rng.integers(-255, 256, (n, k)).astype(np.float32)
    bounds = exact_gemm.chunk_bounds(wc, a_max, limit)
    assert bounds[0] == 0 and bounds[-1] == k and np.all(np.diff(bounds) >= 1)
    budget = limit // max(a_max, 1)
    sums = np.abs(wc).astype(np.int64)
    for k0, k1 in zip(bounds[:-1], bounds[1:]):
        assert k1 - k0 == 1 or sums[:, k0:k1].sum(axis=1).max() <= budget
        if k1 < k:  # one more column would break the bound
            assert sums[:, k0:k1 + 1].sum(axis=1).max() > budget


def test_activation_bound():
    assert exact_gemm.activation_bound(np.uint8, 0) == 255
    assert exact_gemm.activation_bound(np.uint8, 128) == 128
    assert exact_gemm.activation_bound(np.int8, -128) == 255
    assert exact_gemm.activation_bound(np.int8, 0) == 128


def test_extreme_operands_need_and_take_several_chunks():
    """K = 600, every product ±255²: one chunk would reach 600·255² ≈ 3.9e7 > 2**24."""
    x = np.full((1, 600, 3, 3), 255, np.uint8)
    x[0, ::3] = 0
    w = np.full((5, 600, 1, 1), -128, np.int8)
    w[1, 1::2] = 127
    layer = exact_gemm.GemmLayer("conv2d", w, np.full(5, 127), np.uint8, "conv")
    assert len(layer.bind(0, np.zeros(5, np.int64)).bounds) - 1 == 3  # ⌈600 / ⌊65 793 / 255⌋⌉
    rq = make_requantizer(0.5, 1e-3, 0.05, 3, "int8", mode="fixed-point")
    _check("conv2d", (x, w, 0, 127, None), None, {}, exact_gemm.EXACT_LIMIT)
    _check("conv2d", (x, w, 0, 127, None), rq, {}, exact_gemm.EXACT_LIMIT)


# --- overflow: the same error, at the same first index ----------------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def test_conv_overflow_reports_the_first_index_like_the_reference():
    x = np.full((2, 3, 6, 5), 255, np.uint8)
    w = np.full((4, 3, 3, 3), -128, np.int8)
    bias = np.array([0, INT32_MIN + 27 * 255 * 128 - 1, 0, 0], np.int32)
    for limit in LIMITS:
        for shifted in (False, True):
            for run in (1, 1024):
                _check("conv2d", (x, w, 0, 0, bias), None, {"pads": (1, 1, 1, 1)}, limit, shifted, run)
    with sgemm_everywhere(), pytest.raises(ref.AccumulatorOverflowError, match=r"output index \(0, 1, 1, 1\)"):
        exact_gemm.conv2d_int32(x, w, 0, 0, bias, pads=(1, 1, 1, 1))
    # the second image alone overflows: the index is found across image groups and threads
    x[0] = 0
    with sgemm_everywhere(), pytest.raises(ref.AccumulatorOverflowError, match=r"output index \(1, 1, 1, 1\)"):
        exact_gemm.conv2d_int32(x, w, 0, 0, bias, pads=(1, 1, 1, 1))


def test_matmul_overflow_and_fixed_point_overflow_like_the_reference():
    a = np.full((3, 10), 127, np.int8)
    a[1] = 1
    w = np.full((4, 10), 127, np.int8)
    bias = np.array([0, INT32_MAX - 161290 + 1, 0, INT32_MIN], np.int32)
    rq = make_requantizer(0.1, 0.1, 1.0, 0, "int8")
    for limit in LIMITS:
        _check("matmul", (a, w, 0, 0, bias), None, {}, limit)
        _check("matmul", (a, w, 0, 0, bias), rq, {}, limit)
    big = make_requantizer(1.0, 1.0, 1 / 40000, 0, "int8", mode="fixed-point")
    a2, w2 = np.full((2, 64), 127, np.int8), np.full((3, 64), 127, np.int8)
    _check("matmul", (a2, w2, 0, 0, None), big, {}, 1)
    with sgemm_everywhere(), pytest.raises(OverflowError, match="fixed-point"):
        exact_gemm.matmul_requant(a2, w2, 0, 0, None, big)


# --- threads ----------------------------------------------------------------------------------

def test_one_and_two_threads_give_the_same_bits():
    """Numba threads and BLAS threads (threadpoolctl), with several K-chunks."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (3, 160, 9, 9), dtype=np.uint8)
    w = rng.integers(-128, 128, (40, 160, 3, 3), dtype=np.int8)
    bias = rng.integers(-(2**20), 2**20, 40).astype(np.int32)
    rq = make_requantizer(0.02, rng.uniform(1e-3, 4e-3, 40), 0.05, 3, "int8", mode="float32")
    expected = ref.conv2d_requant(x, w, 5, 0, bias, rq, pads=(1, 1, 1, 1), strides=(2, 1))
    a = rng.integers(-128, 128, (70, 900), dtype=np.int8)
    wm = rng.integers(0, 256, (30, 900), dtype=np.uint8)
    expected_mm = ref.matmul_int32(a, wm, -3, 130)
    layer = exact_gemm.GemmLayer("conv2d", w, 0, np.uint8, "conv")
    assert len(layer.bind(5, bias).bounds) > 2
    saved = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            with threadpoolctl.threadpool_limits(3 - threads, user_api="blas"):  # BLAS follows Numba in the call
                y = exact_gemm.conv2d_requant(x, w, 5, 0, bias, rq, pads=(1, 1, 1, 1), strides=(2, 1))
                assert np.array_equal(y, expected)
                assert np.array_equal(exact_gemm.matmul_int32(a, wm, -3, 130), expected_mm)
            for blas in (1, 2):
                with threadpoolctl.threadpool_limits(blas, user_api="blas"):
                    with exact_gemm._BlasThreads(blas):
                        assert np.array_equal(exact_gemm.matmul_int32(a, wm, -3, 130), expected_mm)
    finally:
        numba.set_num_threads(saved)


def test_blas_threads_follow_numba_during_a_call_and_are_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    controllers = exact_gemm._blas_controllers()
    assert controllers, "threadpoolctl finds NumPy's BLAS"
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with exact_gemm._BlasThreads(1):
            assert {c.get_num_threads() for c in controllers} == {1}
        assert {c.get_num_threads() for c in controllers} == {2}


# --- which layers take the path, and the scratch they state --------------------------------------

def test_resnet_shapes_take_the_sgemm_path_tiny_and_depthwise_layers_do_not():
    def plan(x_shape, w_shape, **attrs):
        layer = fast_prepared.prepare_layer("conv2d", np.zeros(w_shape, np.int8), 0, x_dtype=np.uint8, name="c",
                                            **attrs)
        return layer._plan(x_shape, 1)[4]

    assert plan((1, 64, 56, 56), (64, 64, 3, 3), pads=(1, 1, 1, 1))
    assert plan((1, 512, 7, 7), (512, 512, 3, 3), pads=(1, 1, 1, 1))
    assert not plan((1, 4, 4, 4), (4, 4, 1, 1))
    assert plan((1, 80, 14, 14), (480, 80, 1, 1))  # a 1×1 conv from 2**18 multiply-adds (7.5 M here)
    assert plan((1, 24, 14, 14), (24, 24, 3, 3), pads=(1, 1, 1, 1))  # 1.0 M, 3×3: from 2**18 too
    assert plan((32, 1, 8, 8), (16, 1, 3, 3), pads=(1, 1, 1, 1))  # 0.29 M: a digits batch's first conv
    assert not plan((1, 1, 8, 8), (16, 1, 3, 3), pads=(1, 1, 1, 1))  # 9 216: one digit, the tile kernels
    assert not plan((1, 512, 2, 2), (512, 512, 3, 3), pads=(1, 1, 1, 1))  # 4 columns: weight streaming
    assert plan((8, 512, 2, 2), (512, 512, 3, 3), pads=(1, 1, 1, 1))
    assert not plan((1, 32, 56, 56), (32, 1, 3, 3), group=32, pads=(1, 1, 1, 1))  # depthwise kernel
    assert fast_prepared.prepare_layer("matmul", np.zeros((3, 4), np.int16), 0, x_dtype=np.int16, name="m") is None


@pytest.mark.parametrize("m", [1, 64])
def test_matmuls_take_the_vnni_tiles_on_a_vnni_host(m):
    """A classifier row and a 64-row matmul: ``sgemm`` (float32 weights, 5 MB for 1280 × 1000)
    elsewhere, ``fast``'s ``vpdpbusd`` tiles on a VNNI host (:data:`exact_gemm.VNNI_MATMUL`);
    the same outputs either way."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (m, 1280), dtype=np.uint8)
    w = rng.integers(-128, 128, (1000, 1280), dtype=np.int8)
    rq = make_requantizer(0.02, rng.uniform(0.001, 0.01, 1000), 0.5, 3, "uint8")
    layer = fast_prepared.prepare_layer("matmul", w, 0, x_dtype=np.uint8, name="fc")
    assert layer._plan((m, 1280), 1)[4] == (not fast.HOST_HAS_VNNI)  # sgemm unless the host has VNNI
    binding = layer.bind(3, None)
    got = layer.run(a, binding, layer.requant_args(rq), np.uint8)
    assert np.array_equal(got, ref.matmul_requant(a, w, 3, 0, None, rq))


@pytest.mark.parametrize("kind, a_shape, w_shape, attrs", [
    ("conv2d", (2, 64, 28, 28), (64, 64, 3, 3), {"pads": (1, 1, 1, 1)}),  # shifted; several chunks possible
    ("conv2d", (2, 64, 28, 28), (64, 64, 3, 3), {"pads": (1, 1, 1, 1), "strides": (2, 2)}),  # im2col
    ("conv2d", (2, 64, 40, 40), (96, 32, 1, 1), {"group": 2}),  # K = 32: never several chunks
    ("matmul", (64, 512), (100, 512), {}),
])
def test_fused_call_allocates_only_its_output_and_the_stated_scratch(kind, a_shape, w_shape, attrs, monkeypatch):
    monkeypatch.setattr(exact_gemm, "VNNI_MATMUL", False)  # the sgemm path's scratch, on any host
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, a_shape, dtype=np.uint8)
    w = rng.integers(-128, 128, w_shape, dtype=np.int8)
    n_out = w_shape[0]
    rq = make_requantizer(0.02, 0.003, 0.05, 0, "uint8")
    call = (lambda: exact_gemm.conv2d_requant(a, w, 0, 0, None, rq, **attrs)) if kind == "conv2d" else \
        (lambda: exact_gemm.matmul_requant(a, w, 0, 0, None, rq))
    scratch = exact_gemm.requant_scratch_bytes(kind, a_shape, w_shape, a_dtype=np.uint8, **attrs)
    g = conv_geometry(a_shape, w_shape, **attrs) if kind == "conv2d" else None
    assert scratch == sum(int(np.prod(s)) * i for s, i in
                          exact_gemm.scratch_arrays(kind, a_shape, w_shape, g, fast._threads(None)).values())
    call()  # compiled
    tracemalloc.start()
    try:
        out = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= out.nbytes + scratch + 16384
    assert out.shape[1] == n_out
    layer = fast_prepared.prepare_layer(kind, w, 0, x_dtype=np.uint8, name="x", **attrs)
    assert layer.scratch_bytes(a_shape) == scratch


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 5), st.integers(1, 5),
       st.tuples(*(st.integers(0, 2),) * 4), st.integers(0, 2), st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_pad_centre_writes_every_column_once_and_nothing_outside(n, c, h, w, pads, slack, za, seed):
    """``_pad_centre`` (one pass, no bounds checks in Numba): the centred plane inside its
    padding, 0 in the padding and the slack, and not one value outside the buffer (guards on
    both sides)."""
    top, left, bottom, right = pads
    wp = w + left + right
    pitch = (h + top + bottom) * wp + slack
    x = np.random.default_rng(seed).integers(0, 256, (n, c, h, w)).astype(np.uint8)
    buffer = np.full((c, n * pitch + 2), np.nan, np.float32)  # one guard column each side
    exact_gemm._pad_centre(x, 0, n, 0, top, left, wp, pitch, np.int32(za), buffer[:, 1:-1])
    expected = np.zeros((c, n, pitch), np.float32)
    for b in range(n):
        plane = np.zeros((c, h + top + bottom, wp), np.float32)
        plane[:, top:top + h, left:left + w] = x[b].astype(np.float32) - za
        expected[:, b, :plane[0].size] = plane.reshape(c, -1)
    assert np.array_equal(buffer[:, 1:-1], expected.reshape(c, -1))
    assert np.isnan(buffer[:, 0]).all() and np.isnan(buffer[:, -1]).all()


@pytest.mark.parametrize("size", [4, 8])  # 16 outputs per image: staged runs; 64: rows requantized in place
@pytest.mark.parametrize("run", [1, 7, 1024])
def test_im2col_epilogue_layouts_equal_the_reference_in_every_mode(size, run):
    """The im2col epilogue's three forms (checked runs, unchecked staged runs, unchecked rows in
    place) on a batch of small images, every requant mode, against the reference."""
    rng = np.random.default_rng(size * 100 + run)
    x = rng.integers(0, 256, (5, 3, size, size), dtype=np.uint8)
    w = rng.integers(-128, 128, (6, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 6).astype(np.int32)
    for mode in ("float32", "float64", "fixed-point", "fixed-point-single"):
        rq = make_requantizer(0.02, rng.uniform(0.005, 0.02, 6), 0.9, 7, "uint8", mode=mode, activation="relu")
        _check("conv2d", (x, w, 3, 0, bias), rq, {"pads": (1, 1, 1, 1), "strides": (1, 1)}, exact_gemm.EXACT_LIMIT,
               False, run)
    _check("conv2d", (x, w, 3, 0, bias), None, {"pads": (1, 1, 1, 1)}, exact_gemm.EXACT_LIMIT, False, run)
