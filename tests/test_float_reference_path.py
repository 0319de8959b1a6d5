"""The float reference path (spec/numerics.md): Conv, Gemm and MatMul at inference sum exact
float64 products in a fixed order and round once, so their bits do not depend on the host's
BLAS, SIMD width, thread count or how the work is blocked."""

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.ops import FLOAT_OPS, TRAINING_OPS, conv, gemm, matmul
from refquant.ops.conv import im2col
from refquant.ops.padding import window_plan


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def sequential(a: np.ndarray, b: np.ndarray, c=None) -> np.ndarray:
    """The specified sum, in plain Python floats (IEEE float64): S += a_k·b_k for k in order."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            s = 0.0
            for t in range(k):
                s += float(a[i, t]) * float(b[t, j])  # exact product, one float64 rounding per add
            if c is not None:
                s += float(c[i, j])
            out[i, j] = np.float32(s)
    return out


def exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The correctly rounded float32 of the exact sum (math.fsum of the exact products)."""
    return np.array([[np.float32(math.fsum(float(x) * float(y) for x, y in zip(row, col)))
                      for col in b.T] for row in a], np.float32)


def random_f32(rng, shape, spread=8):
    """float32 values over 2**±spread of magnitudes, both signs: sums that do cancel."""
    return (rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread, shape))).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_gemm_is_the_specified_fixed_order_sum(seed):
    rng = np.random.default_rng(seed)
    m, k, n = rng.integers(1, 9), rng.integers(1, 300), rng.integers(1, 9)
    a, w, c = random_f32(rng, (m, k)), random_f32(rng, (n, k)), random_f32(rng, (n,))
    got = gemm(a, w, c, transB=1)
    assert np.array_equal(bits(got), bits(sequential(a, w.T, np.broadcast_to(c, (m, n)))))


def test_matmul_is_the_correctly_rounded_exact_sum_on_random_cases():
    """Without catastrophic cancellation the float64 sum is within K·2**-53 of the exact one,
    so its float32 rounding is the correctly rounded exact sum except within that distance of
    a float32 rounding boundary (probability ~K·2**-29 per output: none in these cases)."""
    rng = np.random.default_rng(11)
    for _ in range(5):
        m, k, n = rng.integers(1, 12, 3)
        k = int(k) * 40
        a, b = random_f32(rng, (m, k), 4), np.abs(random_f32(rng, (k, n), 4))
        a = np.abs(a)
        assert np.array_equal(bits(matmul(a, b)), bits(exact(a, b)))


def test_conv_does_not_depend_on_blocking_batching_or_threads():
    rng = np.random.default_rng(3)
    x, w, b = random_f32(rng, (5, 6, 9, 9)), random_f32(rng, (8, 3, 3, 3)), random_f32(rng, (8,))
    attrs = dict(group=2, pads=[1, 0, 1, 2], strides=[2, 1])
    y = conv(x, w, b, **attrs)
    # the specified sum, by im2col and the Python reference: K ordered (channel, row, column)
    plan = window_plan("Conv", (9, 9), (3, 3), pads=attrs["pads"], strides=attrs["strides"])
    cols = im2col(x, (3, 3), plan, attrs["strides"]).reshape(5, 2, 27, -1)
    for n in (0, 4):
        for g in range(2):
            ref = sequential(w[4 * g:4 * g + 4].reshape(4, 27), cols[n, g],
                             np.broadcast_to(b[4 * g:4 * g + 4, None], (4, cols.shape[-1])))
            assert np.array_equal(bits(y[n, 4 * g:4 * g + 4].reshape(4, -1)), bits(ref))
    # image by image, in reverse order, with one Numba thread: the same bits
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one_by_one = np.concatenate([conv(x[i:i + 1], w, b, **attrs) for i in range(4, -1, -1)][::-1])
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(bits(y), bits(one_by_one))


def test_gemm_and_matmul_do_not_depend_on_the_batch_around_a_row():
    rng = np.random.default_rng(5)
    a, w = random_f32(rng, (64, 150)), random_f32(rng, (10, 150))
    full = gemm(a, w, None, transB=1)
    for rows in (slice(0, 1), slice(7, 8), slice(3, 40)):
        assert np.array_equal(bits(full[rows]), bits(gemm(np.ascontiguousarray(a[rows]), w, None, transB=1)))
    # transposed / non-contiguous operands and batch broadcasting give the same sums
    assert np.array_equal(bits(full), bits(gemm(np.asfortranarray(a.T), np.ascontiguousarray(w.T), transA=1)))
    batched = matmul(np.stack([a[:32], a[32:]]), np.ascontiguousarray(w.T))
    assert np.array_equal(bits(batched.reshape(64, 10)), bits(full))


def test_training_keeps_float32_blas_and_inference_uses_the_reference_path():
    assert FLOAT_OPS["Conv"] is conv and FLOAT_OPS["Gemm"] is gemm and FLOAT_OPS["MatMul"] is matmul
    for op in ("Conv", "Gemm", "MatMul"):
        assert TRAINING_OPS[op] is not FLOAT_OPS[op] and TRAINING_OPS[op].__name__.endswith("_float32_blas")
    assert {k for k in FLOAT_OPS if TRAINING_OPS[k] is not FLOAT_OPS[k]} == {"Conv", "Gemm", "MatMul"}
    rng = np.random.default_rng(0)
    a, w = random_f32(rng, (16, 64)), random_f32(rng, (8, 64))
    assert np.array_equal(TRAINING_OPS["Gemm"](a, w, transB=1), a @ w.T)  # float32 BLAS, as trained


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3, "depthwise"]), st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 5)]),
       st.sampled_from([(1, 1), (2, 2), (1, 2)]), st.sampled_from([(1, 1), (2, 1)]),
       st.lists(st.integers(0, 2), min_size=4, max_size=4))
def test_the_three_conv_sums_are_the_unrolled_sum_bit_for_bit(seed, group, kernel, strides, dilations, pads):
    """Grouped convolutions sum directly, unpadded 1×1 ones multiply the input itself, the rest
    unroll: each is the float64 sum of the unrolled columns in (channel, row, column) order."""
    from refquant.ops.dot import batched_dot_f64

    rng = np.random.default_rng(seed)
    c = 4 if group == "depthwise" else 2 * (group if isinstance(group, int) else 1)
    group = c if group == "depthwise" else group
    m = c if group == c else 3 * group
    h, wd = (kernel[0] - 1) * dilations[0] + 1 + int(rng.integers(0, 6)), (kernel[1] - 1) * dilations[1] + 1 + int(rng.integers(0, 6))
    x = random_f32(rng, (2, c, h, wd))
    x[rng.random(x.shape) < 0.3] = 0.0
    w = random_f32(rng, (m, c // group) + kernel)
    if rng.random() < 0.3:
        pads = [0, 0, 0, 0]
    y = conv(x, w, None, group=group, pads=pads, strides=list(strides), dilations=list(dilations))
    plan = window_plan("Conv", (h, wd), kernel, pads=pads, strides=strides, dilations=dilations)
    k = (c // group) * kernel[0] * kernel[1]
    cols = im2col(x, kernel, plan, strides, dilations).reshape(2 * group, k, -1)
    ia = np.tile(np.arange(group, dtype=np.int64), 2)
    want = batched_dot_f64(w.reshape(group, m // group, k), cols, ia, np.arange(2 * group, dtype=np.int64))
    assert np.array_equal(bits(y), bits(want.reshape(y.shape).astype(np.float32)))
