"""The packed tiles of one-group convolutions (``refquant.kernels.pair_gemm``): int16 pairs and
u8·s8 byte quads (``vpmaddubsw``, and ``vpdpbusd`` on a VNNI host), bit-exact to the reference
on shapes of several tiles, panels and tasks, on both layouts, 1 and 2 threads, and each taken
only where its int32 lanes are exact.
``test_exact_gemm`` also runs its conv cases with the tiles on and off."""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refquant.kernels import exact_gemm, pair_gemm
from refquant.kernels import reference as ref
from test_exact_gemm import sgemm_everywhere
from test_kernels_fast import assert_same, outcome, requantizer

pytestmark = pytest.mark.skipif(not pair_gemm.HOST_HAS_AVX2, reason="the packed tiles need AVX2")


@contextlib.contextmanager
def tile_settings(n_threads=1, serial=True, k_block=None, quads=True, vnni=True):
    """``n_threads`` Numba threads; ``serial`` False forces the parallel kernels even for tiny
    calls; ``k_block``: the im2col's block of K rows (small values force several blocks);
    ``quads``: whether a byte tile may be taken; ``vnni``: whether the VNNI one may."""
    old = (numba.get_num_threads(), pair_gemm.SERIAL_MACS, pair_gemm.SERIAL_VALUES, pair_gemm.K_BLOCK,
           exact_gemm.USE_QUADS, exact_gemm.USE_VNNI)
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    if not serial:
        pair_gemm.SERIAL_MACS = pair_gemm.SERIAL_VALUES = 0
    if k_block is not None:
        pair_gemm.K_BLOCK = k_block
    exact_gemm.USE_QUADS, exact_gemm.USE_VNNI = quads, vnni
    try:
        yield
    finally:
        numba.set_num_threads(old[0])
        (pair_gemm.SERIAL_MACS, pair_gemm.SERIAL_VALUES, pair_gemm.K_BLOCK, exact_gemm.USE_QUADS,
         exact_gemm.USE_VNNI) = old[1:]


@contextlib.contextmanager
def recorded_tiles():
    """The tile each call ran: ``"pairs"``, ``"quads"`` or ``"vnni"``."""
    calls = []
    original = pair_gemm.run_tiles

    def recorded(xk, offs, cp, weights, kind, *args, **kwargs):
        calls.append(KIND_NAMES[kind])
        return original(xk, offs, cp, weights, kind, *args, **kwargs)

    pair_gemm.run_tiles = recorded
    try:
        yield calls
    finally:
        pair_gemm.run_tiles = original


KIND_NAMES = {pair_gemm.PAIRS: "pairs", pair_gemm.QUADS: "quads", pair_gemm.VNNI: "vnni"}
KINDS = ["pairs", "quads"] + (["vnni"] if pair_gemm.HOST_HAS_VNNI else [])


@numba.njit(cache=True)
def _tile(kind, x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate):
    if kind == pair_gemm.VNNI:
        pair_gemm.vnni_tile(x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate)
    elif kind == pair_gemm.QUADS:
        pair_gemm.quad_tile(x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate)
    else:
        pair_gemm.pair_tile(x, xcol, width, w, wrow0, kp, offs, cp, y, ycol, q0, q1, accumulate)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fill", ["extreme", "random"])
def test_tile_is_the_integer_dot_product_at_the_operand_extremes(kind, fill):
    """One tile, three taps at uneven offsets, K in two blocks (the second added to the first):
    every int32 lane equals the int64 sum. Pairs: centred operands at ±255, the largest an 8-bit
    centring gives. Quads: activation bytes 0 and 255 against weight neighbours whose magnitudes
    add up to 128, the largest the tile admits (±255·128 per neighbour pair, no saturation).
    VNNI: bytes 0 and 255 against any int8 weights, -128 and 127 included (no saturation to
    avoid)."""
    rng = np.random.default_rng(7)
    code = {name: k for k, name in KIND_NAMES.items()}[kind]
    quads = code != pair_gemm.PAIRS
    rows, lanes = pair_gemm.TILE_ROWS[code], (4 if quads else 2)
    cp, width, taps = 37, 200, np.array([0, 3, 41], np.int64)
    if code == pair_gemm.VNNI:
        xs = (rng.choice(np.array([0, 255]), (cp, width, lanes)) if fill == "extreme"
              else rng.integers(0, 256, (cp, width, lanes))).astype(np.uint8)
        ws = (rng.choice(np.array([-128, 127]), (rows, taps.size, cp, lanes)) if fill == "extreme"
              else rng.integers(-128, 128, (rows, taps.size, cp, lanes))).astype(np.int8)
    elif quads:
        xs = (rng.choice(np.array([0, 255]), (cp, width, lanes)) if fill == "extreme"
              else rng.integers(0, 256, (cp, width, lanes))).astype(np.uint8)
        first = (rng.choice(np.array([-128, -64, 0, 64]), (rows, taps.size, cp, lanes // 2)) if fill == "extreme"
                 else rng.integers(-64, 65, (rows, taps.size, cp, lanes // 2)))
        second = np.sign(rng.standard_normal(first.shape)).astype(int) * (128 - np.abs(first))
        second = np.clip(second, -128, 127)
        ws = np.stack([first, second], axis=-1).reshape(rows, taps.size, cp, lanes).astype(np.int8)
    else:
        xs = (rng.choice(np.array([-255, 255]), (cp, width, lanes)) if fill == "extreme"
              else rng.integers(-255, 256, (cp, width, lanes))).astype(np.int16)
        ws = (rng.choice(np.array([-255, 255]), (rows, taps.size, cp, lanes)) if fill == "extreme"
              else rng.integers(-255, 256, (rows, taps.size, cp, lanes))).astype(np.int16)
    x = np.ascontiguousarray(xs).view(np.int32).reshape(-1)
    w = np.ascontiguousarray(ws).view(np.int32).reshape(-1)
    y = np.zeros((rows, 64), np.int32)
    _tile(code, x, 5, width, w, 0, taps.size * cp, taps, cp, y, 16, 0, 20, False)
    _tile(code, x, 5, width, w, 0, taps.size * cp, taps, cp, y, 16, 20, cp, True)
    expected = np.zeros((rows, pair_gemm.TILE_COLUMNS), np.int64)
    for t, off in enumerate(taps):
        cols = xs[:, 5 + off:5 + off + pair_gemm.TILE_COLUMNS].astype(np.int64)  # [cp, 16, lanes]
        expected += np.einsum("rql,qel->re", ws[:, t].astype(np.int64), cols)
    assert np.array_equal(y[:, 16:16 + pair_gemm.TILE_COLUMNS], expected)
    assert not y[:, :16].any() and not y[:, 32:].any()  # nothing outside the tile is written


def test_packed_weights_are_the_centred_weights_in_tap_then_channel_order():
    rng = np.random.default_rng(3)
    w = rng.integers(100, 156, (7, 5, 3, 2)).astype(np.uint8)
    zw = np.full(7, 128, np.int32)
    packed = pair_gemm.PackedWeights(w, zw)
    expected = w.astype(np.int16).transpose(0, 2, 3, 1).reshape(7, 6, 5) - 128
    assert packed.w2.shape == (12, 6 * 3)  # rows up to a whole pair tile, ⌈5 / 2⌉ pairs per tap
    halves = packed.w2.view(np.int16).reshape(12, 6, 6)
    assert np.array_equal(halves[:7, :, :5], expected)
    assert not halves[7:].any() and not halves[:, :, 5].any()  # padding rows and the missing channel
    assert packed.quads  # |w_c| ≤ 28: every neighbour pair adds up to at most 56
    assert packed.vnni and packed.w4.shape == (8, 6 * 2)  # rows up to a whole VNNI tile, ⌈5 / 4⌉ quads per tap
    quarters = packed.w4.view(np.int8).reshape(8, 6, 8)
    assert np.array_equal(quarters[:7, :, :5], expected) and not quarters[7:].any() and not quarters[:, :, 5:].any()
    assert np.array_equal(packed.sums, expected.reshape(7, -1).sum(axis=1))


def test_quads_only_where_no_neighbour_pair_can_saturate():
    """``|w_0| + |w_1| ≤ 128`` for the neighbours ``(4q + 2m, 4q + 2m + 1)``: 128 is exact
    (255·128 = 32 640 < 2**15), 129 could saturate; pairs across a neighbour boundary do not
    count; a centred weight outside int8 rules the quads out."""
    def quads(row, zw=0, dtype=np.int8):
        return pair_gemm.PackedWeights(np.array(row, dtype).reshape(1, -1, 1, 1), np.array([zw])).quads

    assert quads([-64, 64, 127, 1])
    assert not quads([-64, 65, 0, 0])
    assert not quads([0, 0, 100, -29])
    assert quads([0, 100, 28, 0, 90])  # (100 | 28): not neighbours in one quad's pair
    assert not quads([255, 127, 127, 127], zw=127, dtype=np.uint8)  # centred 128, 0, 0, 0: 128 is no int8
    assert quads([128, 255, 128, 128], zw=128, dtype=np.uint8)  # centred 0, 127, 0, 0


def test_vnni_tile_takes_any_int8_weights_within_the_int32_bound():
    """``vpdpbusd`` does not saturate: every centred weight in int8 is admitted (neighbours
    -128 and 127 included), but not 128 = 255 - 127; and ``255 · max_n Σ_k |w_c[n, k]| ≤ 2**31
    - 1`` bounds its int32 lanes: 65 793 weights of 128 reach 2 147 470 080 (admitted),
    65 794 pass the bound. ``kind`` takes the VNNI tile only on a VNNI host and when allowed."""
    def packed(row, zw=0, dtype=np.int8):
        return pair_gemm.PackedWeights(np.array(row, dtype).reshape(1, -1, 1, 1), np.array([zw]))

    full = packed([-128, 127, -128, 127])
    assert full.vnni and not full.quads
    assert full.kind() == (pair_gemm.VNNI if pair_gemm.HOST_HAS_VNNI else pair_gemm.PAIRS)
    assert full.kind(vnni=False) == pair_gemm.PAIRS and full.kind(quads=False) == pair_gemm.PAIRS
    assert not packed([255, 127], zw=127, dtype=np.uint8).vnni
    assert packed(np.full(65_793, -128)).vnni and not packed(np.full(65_794, -128)).vnni
    seven = packed([-64, 64, 0, 1])
    assert seven.kind(vnni=False) == pair_gemm.QUADS
    if not pair_gemm.HOST_HAS_VNNI:
        with pytest.raises(ValueError, match="not exact"):
            pair_gemm.run_tiles(np.zeros((1, 16), np.int32), np.zeros(1, np.int64), 1, full, pair_gemm.VNNI, 0, 0,
                                1, 1, 1, 1, np.zeros(1, np.int64), True, None, None, 1)


@st.composite
def wide_case(draw):
    """One-group convs wide enough for several tiles of channels, several panels of columns and
    several images per pass; strides, padding, dilation, channel counts that are not a multiple
    of the packing; weights any 8-bit values, within the quads' reach (seven-bit) or the VNNI
    tile's (centred into int8)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c_in, c_out = draw(st.integers(1, 13)), draw(st.integers(1, 20))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (2, 1)]))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    strides = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2), (3, 1)]))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, wd = draw(st.integers(kh * dilations[0], 19)), draw(st.integers(kw * dilations[1], 23))
    n = draw(st.integers(1, 3))
    x_dtype, w_dtype = draw(st.sampled_from([np.uint8, np.int8])), draw(st.sampled_from([np.uint8, np.int8]))
    fill, weights = (draw(st.sampled_from(["random", "extreme"])),
                     draw(st.sampled_from(["any", "seven-bit", "centred int8"])))

    def values(dtype, shape, low=None, high=None):
        info = np.iinfo(dtype)
        low, high = (info.min, info.max) if low is None else (low, high)
        if fill == "extreme":
            return rng.choice(np.array([low, high], dtype), shape)
        return rng.integers(low, high + 1, shape).astype(dtype)

    x = values(x_dtype, (n, c_in, h, wd))
    zx = int(rng.integers(np.iinfo(x_dtype).min, np.iinfo(x_dtype).max + 1))
    if weights != "any":  # centred weights within ±64 or int8, the zero point in the middle
        mid = 128 if w_dtype == np.uint8 else 0
        low, high = (-64, 64) if weights == "seven-bit" else (-128, 127)
        w, zw = values(w_dtype, (c_out, c_in, kh, kw), mid + low, mid + high), w_dtype(mid)
    else:
        w = values(w_dtype, (c_out, c_in, kh, kw))
        zw = values(w_dtype, (c_out,)) if draw(st.booleans()) else w_dtype(rng.integers(0, 4))
    bias = rng.integers(-(2**20), 2**20, c_out).astype(np.int32) if draw(st.booleans()) else None
    return x, w, zx, zw, bias, dict(pads=pads, dilations=dilations, strides=strides)


@settings(deadline=None, max_examples=30)
@given(wide_case(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.sampled_from([1, 2]),
       st.booleans(), st.sampled_from([None, 1, 5]), st.data())
@example(case=(np.full((2, 3, 17, 19), 255, np.uint8), np.full((8, 3, 3, 3), -128, np.int8), 0, np.int8(0), None,
               dict(pads=(1, 1, 1, 1), dilations=(1, 1), strides=(1, 1))), shifted=True, quads=True, vnni=True,
         fused=False, n_threads=2, serial=False, k_block=None, data=None)
@example(case=(np.full((2, 5, 17, 19), 255, np.uint8), np.full((9, 5, 3, 3), -64, np.int8), 7, np.int8(0), None,
               dict(pads=(1, 2, 0, 1), dilations=(1, 1), strides=(2, 2))), shifted=False, quads=True, vnni=False,
         fused=False, n_threads=2, serial=False, k_block=5, data=None)
@example(case=(np.full((2, 5, 17, 19), 255, np.uint8), np.full((9, 5, 3, 3), 127, np.int8), 7, np.int8(0), None,
               dict(pads=(1, 2, 0, 1), dilations=(1, 1), strides=(2, 2))), shifted=False, quads=True, vnni=True,
         fused=False, n_threads=2, serial=False, k_block=5, data=None)
@example(case=(np.full((1, 1, 1, 1), 89, np.int8), np.full((1, 1, 1, 1), 35, np.int8), 0, np.int8(0), None,
               dict(pads=(0, 1, 0, 0), dilations=(1, 1), strides=(1, 1))), shifted=True, quads=True, vnni=True,
         fused=False, n_threads=1, serial=True, k_block=None, data=None)  # one row, a left pad: not one run
@example(case=(np.random.default_rng(3).integers(-128, 128, (2, 6, 5, 7)).astype(np.int8),
               np.random.default_rng(4).integers(-64, 65, (5, 6, 1, 1)).astype(np.int8), -3, np.int8(0), None,
               dict(pads=(0, 0, 1, 0), dilations=(1, 1), strides=(1, 1))), shifted=True, quads=True, vnni=True,
         fused=False, n_threads=2, serial=True, k_block=None, data=None)  # planes without padding columns: one run
@example(case=(np.random.default_rng(5).integers(0, 256, (3, 9, 4, 4)).astype(np.uint8),
               np.random.default_rng(6).integers(-64, 65, (4, 9, 1, 1)).astype(np.int8), 17, np.int8(0), None,
               dict(pads=(0, 0, 0, 0), dilations=(1, 1), strides=(1, 1))), shifted=True, quads=True, vnni=False,
         fused=False, n_threads=2, serial=False, k_block=None, data=None)  # a 1×1 conv, a partial quad, threads
def test_tiles_equal_reference(case, shifted, quads, vnni, fused, n_threads, serial, k_block, data):
    """Both layouts (``shifted`` only matters at stride 1), every tile (the byte tiles where the
    weights allow), K in one or several blocks on the im2col: the same outputs or the same error."""
    x, w, zx, zw, bias, attrs = case
    rq = data.draw(requantizer(w.shape[0])) if fused and data is not None else None
    expected = (outcome(ref.conv2d_requant, x, w, zx, zw, bias, rq, **attrs) if rq is not None
                else outcome(ref.conv2d_int32, x, w, zx, zw, bias, **attrs))
    with sgemm_everywhere(shifted=shifted, pairs=True), tile_settings(n_threads, serial, k_block, quads, vnni), \
            recorded_tiles() as calls:
        got = (outcome(exact_gemm.conv2d_requant, x, w, zx, zw, bias, rq, **attrs) if rq is not None
               else outcome(exact_gemm.conv2d_int32, x, w, zx, zw, bias, **attrs))
    packed = pair_gemm.PackedWeights(w, np.broadcast_to(np.asarray(zw, np.int32), w.shape[:1]))
    assert calls and set(calls) == {KIND_NAMES[packed.kind(quads, vnni)]}
    assert_same(expected, got)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_overflow_reports_the_first_index_across_panels_and_tasks(n_threads, kind):
    """Channel 13 (the fourth quad tile, the third pair tile, the second VNNI tile) overflows only from the second
    image's column 150 on (the second panel): the error names the first such output in C order,
    as the reference does."""
    x = np.zeros((2, 4, 12, 20), np.uint8)
    x[1, :, 7:, 10:] = 255
    w = np.full((14, 4, 1, 1), 64, np.int8)
    bias = np.zeros(14, np.int32)
    bias[13] = 2**31 - 1 - 4 * 255 * 64 + 1  # only the all-255 positions overflow
    with pytest.raises(ref.AccumulatorOverflowError) as expected:
        ref.conv2d_int32(x, w, 0, 0, bias)
    assert "(1, 13, 7, 10)" in str(expected.value)
    with sgemm_everywhere(shifted=True, pairs=True), \
            tile_settings(n_threads, False, quads=kind != "pairs", vnni=kind == "vnni"), recorded_tiles() as calls:
        with pytest.raises(ref.AccumulatorOverflowError) as got:
            exact_gemm.conv2d_int32(x, w, 0, 0, bias)
    assert calls == [kind] and str(got.value) == str(expected.value)


def test_pairs_are_taken_only_where_every_partial_sum_fits_int32():
    """``A_max · max_n Σ_k |w_c[n, k]| ≤ 2**31 - 1``: 34 000 input channels of ±255 products
    reach 2.2e9 and go to ``sgemm``'s chunks (the same result: here an overflow error); 33 000
    fit and take the pair tile."""
    for channels, taken in ((33_000, True), (34_000, False)):
        x = np.full((1, channels, 2, 2), 255, np.uint8)
        w = np.full((2, channels, 1, 1), -128, np.int8)
        layer = exact_gemm.GemmLayer("conv2d", w, np.full(2, 127), np.uint8, "conv")
        assert layer.bind(0, np.zeros(2, np.int64)).pairs is taken
        assert pair_gemm.pairs_exact(255, layer.row_bound) is taken
        expected = outcome(ref.conv2d_int32, x, w, 0, 127, None)
        assert (expected[0] == "ok") is taken  # -34 000 · 255² is below int32: the same error
        with sgemm_everywhere(shifted=True, pairs=True), recorded_tiles() as calls:
            got = outcome(exact_gemm.conv2d_int32, x, w, 0, 127, None)
        assert calls == (["pairs"] if taken else [])
        assert_same(expected, got)
