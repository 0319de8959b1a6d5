"""The blocked float64 kernels of the float reference path (``refquant/ops/dot.py``) against
plain NumPy oracles that add one term at a time in the specified order, bit for bit.

The oracles are vectorised across outputs only: ``S += float64(a_k) · float64(b_k)`` for k in
order, each addition one float64 rounding (NumPy's elementwise ``+`` on exact products). The
kernels block rows, columns and terms (two rows, four terms per pass; three taps per pass)
for speed; these tests draw shapes that leave every remainder of those blocks, task sizes
that split the work in every way, signed zeros, infinities and NaNs, and one and two Numba
threads.
"""

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.ops import dot
from refquant.ops.dot import (_batched_dot_kernel, _chunks, batched_dot_f64, batched_dot_rounded, conv_direct_f64,
                              conv_direct_rounded, dot_f64)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, except that any NaN equals any NaN (a NaN's payload depends on which
    operand the CPU propagates, which the specification does not fix)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))


def sequential_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``S_k = S_(k-1) + a[:, k]·b[k, :]`` for k in order, from ``S_0 = +0.0``, in float64."""
    s = np.zeros((a.shape[0], b.shape[1]))
    with np.errstate(invalid="ignore"):
        for k in range(a.shape[1]):
            s = s + np.multiply.outer(a[:, k].astype(np.float64), b[k].astype(np.float64))
    return s


def sequential_conv(x, w, group, pads, out_hw, strides, dilations) -> np.ndarray:
    """Conv sums tap by tap in increasing (c, i, j), each tap over the outputs whose input
    position is inside the image (padding taps skipped, as the specification allows)."""
    n, c_in, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh_n, ow_n = out_hw
    top, left = pads[0], pads[1]
    sh, sw = strides
    dh, dw = dilations
    out = np.zeros((n, m, oh_n, ow_n))
    oh, ow = np.arange(oh_n), np.arange(ow_n)
    for mm in range(m):
        c0 = (mm // (m // group)) * cg
        for c in range(cg):
            for i in range(kh):
                rows = oh * sh + i * dh - top
                rin = (rows >= 0) & (rows < h)
                for j in range(kw):
                    cols = ow * sw + j * dw - left
                    cin = (cols >= 0) & (cols < wd)
                    if not rin.any() or not cin.any():
                        continue
                    xs = x[:, c0 + c][:, rows[rin]][:, :, cols[cin]].astype(np.float64)
                    with np.errstate(invalid="ignore"):
                        region = out[:, mm][:, rin][:, :, cin] + np.float64(w[mm, c, i, j]) * xs
                    block = out[:, mm]
                    block[np.ix_(np.arange(n), rin.nonzero()[0], cin.nonzero()[0])] = region
    return out


def special_f32(rng, shape, specials: bool) -> np.ndarray:
    """float32 over 2**±20 of magnitudes, both signs, some exact zeros of either sign; with
    ``specials``, a few infinities and NaNs."""
    v = (rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))).astype(np.float32)
    v[rng.random(shape) < 0.15] = 0.0
    v[rng.random(shape) < 0.05] = -0.0
    if specials:
        v[rng.random(shape) < 0.02] = np.inf
        v[rng.random(shape) < 0.02] = -np.inf
        v[rng.random(shape) < 0.02] = np.nan
    return v


def with_threads(count, fn):
    before = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 11), st.integers(0, 13), st.integers(1, 40),
       st.integers(1, 3), st.integers(1, 9), st.integers(1, 50), st.booleans())
def test_batched_dot_equals_the_sequential_sum_for_any_task_sizes(seed, m, k, n, nb, m_chunk, n_chunk, specials):
    """Every row-pair and single-row remainder, every k mod 4, any split of rows and columns
    into tasks: the same bits as adding one term at a time."""
    rng = np.random.default_rng(seed)
    a = special_f32(rng, (2, m, k), specials)
    b = special_f32(rng, (nb, k, n), specials)
    ia = rng.integers(0, 2, nb).astype(np.int64)
    ib = np.arange(nb, dtype=np.int64)
    want = np.stack([sequential_dot(a[ia[i]], b[ib[i]]) for i in range(nb)])
    out = np.full((nb, m, n), np.nan)
    if k:
        _batched_dot_kernel(a, b, ia, ib, out, np.empty((1, 1, 1), np.float32), np.zeros(1), 0, m_chunk, n_chunk)
        assert same_bits(out, want)
    assert same_bits(batched_dot_f64(a, b, ia, ib), want)
    bias = special_f32(rng, (m,), specials)
    with np.errstate(invalid="ignore", over="ignore"):
        assert same_bits(batched_dot_rounded(a, b, ia, ib, bias), (want + bias.astype(np.float64)[None, :, None]).astype(np.float32))
        assert same_bits(batched_dot_rounded(a, b, ia, ib), want.astype(np.float32))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(1, 1, 1), (7, 5, 129), (66, 9, 300), (3, 700, 131), (130, 2, 17)]))
def test_dot_is_the_same_on_one_and_two_threads(seed, shape):
    """The default task sizes (more than one column block for long rows, several row blocks
    for many rows) on one and two threads: the sequential sum both times."""
    m, k, n = shape
    rng = np.random.default_rng(seed)
    a, b = special_f32(rng, (m, k), False), special_f32(rng, (k, n), False)
    one = with_threads(1, lambda: dot_f64(a, b))
    two = with_threads(2, lambda: dot_f64(a, b))
    assert same_bits(one, two) and same_bits(one, sequential_dot(a, b))


def test_default_task_sizes_cover_the_columns():
    assert _chunks(64, 12544, 27) == (64, 12544 // 11 + 1)
    assert _chunks(320, 49, 1152) == (64, 49)
    m_chunk, n_chunk = _chunks(5, 1000, 300)
    assert n_chunk * -(-1000 // n_chunk) >= 1000 and n_chunk <= 128


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["depthwise", "grouped", "dense"]),
       st.integers(1, 7), st.integers(1, 7), st.sampled_from([(1, 1), (2, 2), (1, 3), (2, 1)]),
       st.sampled_from([(1, 1), (2, 1), (1, 2)]), st.lists(st.integers(0, 3), min_size=4, max_size=4),
       st.booleans())
def test_direct_conv_equals_the_tap_by_tap_sum(seed, kind, kh, kw, strides, dilations, pads, specials):
    """Every kernel width mod 3 (the taps a pass adds), strides and dilations, pads up to 3
    (border columns), weights with infinities/NaN (the border columns then skip their padding
    taps instead of adding ±0·w), on one and two threads."""
    rng = np.random.default_rng(seed)
    c = {"depthwise": 3, "grouped": 4, "dense": 2}[kind]
    group = {"depthwise": 3, "grouped": 2, "dense": 1}[kind]
    m = group * int(rng.integers(1, 3))
    h = (kh - 1) * dilations[0] + 1 + int(rng.integers(0, 9))
    wd = (kw - 1) * dilations[1] + 1 + int(rng.integers(0, 9))
    oh = (h + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    x = special_f32(rng, (2, c, h, wd), specials)
    w = special_f32(rng, (m, c // group, kh, kw), specials)
    args = (x, w, group, pads, (oh, ow), strides, dilations)
    want = sequential_conv(*args)
    one = with_threads(1, lambda: conv_direct_f64(*args))
    two = with_threads(2, lambda: conv_direct_f64(*args))
    assert same_bits(one, want)
    assert same_bits(two, want)
    bias = special_f32(rng, (m,), specials)
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = (want + bias.astype(np.float64)[None, :, None, None]).astype(np.float32)
        assert same_bits(conv_direct_rounded(*args, bias), rounded)
        assert same_bits(conv_direct_rounded(*args), want.astype(np.float32))


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([3, 5]), st.sampled_from([(1, 1), (2, 2), (2, 1)]),
       st.lists(st.integers(0, 2), min_size=4, max_size=4), st.booleans())
def test_direct_conv_reuses_its_planes_and_blocks_its_rows(seed, k, strides, pads, specials):
    """More (image, channel) pairs than the kernel's tasks (a task's padded planes serve one
    pair after another, non-finite channels among them) and planes wider than one row block:
    still the tap-by-tap sum, on one and two threads."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(dot._DIRECT_TASKS + 1, 2 * dot._DIRECT_TASKS))
    h, wd = int(rng.integers(k, 30)), int(rng.integers(dot._ROW_BLOCK // 20, dot._ROW_BLOCK // 8))
    oh = (h + pads[0] + pads[2] - k) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - k) // strides[1] + 1
    x = special_f32(rng, (2, c, h, wd), False)
    w = special_f32(rng, (c, 1, k, k), specials)
    args = (x, w, c, pads, (oh, ow), strides, (1, 1))
    want = sequential_conv(*args)
    assert same_bits(with_threads(1, lambda: conv_direct_f64(*args)), want)
    assert same_bits(with_threads(2, lambda: conv_direct_f64(*args)), want)


def test_a_padding_tap_of_an_infinite_weight_is_skipped():
    """``inf · 0`` would be NaN: an output whose window reaches into the padding with an
    infinite weight there keeps the sum of its inside taps (the specification's skip)."""
    x = np.ones((1, 1, 3, 3), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 1, 0] = np.inf  # the left tap of the middle row: padding for output column 0
    w[0, 0, 1, 1] = 2.0
    y = conv_direct_f64(x, w, 1, [1, 1, 1, 1], (3, 3), (1, 1), (1, 1))
    assert y[0, 0, 1, 0] == 2.0 and np.isinf(y[0, 0, 1, 1])
