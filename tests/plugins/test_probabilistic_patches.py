"""Patch moments of the probabilistic strategy: the Numba pass against the NumPy sum-pool and
against an independent oracle, the engine's reference convolution with an all-ones kernel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refquant.kernels import reference
from refquant_probabilistic.patches import (
    patch_grid,
    patch_sums,
    patch_sums_reference,
    patch_sums_scratch_bytes,
    sample_positions,
)


@st.composite
def conv_cases(draw):
    """A random Conv geometry (strides, pads, dilations, groups), an 8-bit input and γ."""
    group = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = group * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    attrs = {"strides": [draw(st.integers(1, 3)), draw(st.integers(1, 3))],
             "pads": [draw(st.integers(0, 2)) for _ in range(4)],
             "dilations": [draw(st.integers(1, 2)), draw(st.integers(1, 2))], "group": group}
    span_h = (kh - 1) * attrs["dilations"][0] + 1
    span_w = (kw - 1) * attrs["dilations"][1] + 1
    assume(h + attrs["pads"][0] + attrs["pads"][2] >= span_h and w + attrs["pads"][1] + attrs["pads"][3] >= span_w)
    signed = draw(st.booleans())
    dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).integers(info.min, info.max + 1, (n, c_in, h, w), dtype=dtype)
    zero_point = draw(st.integers(int(info.min), int(info.max)))
    gamma = draw(st.integers(1, 9))
    return x, zero_point, (2 * group, c_in // group, kh, kw), attrs, gamma


@given(conv_cases())
def test_numba_pass_equals_the_numpy_sum_pool_on_both_paths(case):
    x, z, w_shape, attrs, gamma = case
    grid = patch_grid(x.shape, w_shape, attrs, gamma, "conv")
    expected = patch_sums_reference(x, z, grid, "conv")
    for path in (grid, replace(grid, direct=not grid.direct)):  # the ring and the direct loop
        got = patch_sums(x, z, path, "conv")
        assert got.t1.dtype == np.int64 and got.count == grid.count
        for a, b in ((got.t1, expected.t1), (got.q1, expected.q1), (got.t2, expected.t2)):
            assert np.array_equal(a, b)


def ones_conv(x, attrs, kh, kw, group):
    """Σ over each window of x (int), every output position: the reference ConvInteger with ones."""
    c_in = x.shape[1]
    ones = np.ones((group, c_in // group, kh, kw), np.int8)
    return reference.conv2d_int32(x, ones, 0, 0, **attrs).astype(np.int64)  # [N, G, OH, OW]


@given(conv_cases())
def test_patch_sums_equal_the_reference_convolution_with_ones(case):
    """S1 = ConvInteger(x − z, ones), S2 = ConvInteger((x − z)², ones) per group, then the sample."""
    x, z, (_, cpg, kh, kw), attrs, gamma = case
    group = attrs["group"]
    centred = x.astype(np.int64) - z
    # ConvInteger takes ≤16-bit operands: (x − z) fits int16, (x − z)² fits uint16... up to 255² = 65025
    s1 = ones_conv(centred.astype(np.int16), attrs, kh, kw, group)
    s2 = ones_conv((centred * centred).astype(np.uint16), attrs, kh, kw, group)
    rows = sample_positions(s1.shape[2], gamma)
    cols = sample_positions(s1.shape[3], gamma)
    s1, s2 = s1[:, :, rows][:, :, :, cols], s2[:, :, rows][:, :, :, cols]
    got = patch_sums(x, z, patch_grid(x.shape, (group, cpg, kh, kw), attrs, gamma, "conv"), "conv")
    assert np.array_equal(got.t1, s1.sum(axis=(2, 3)))
    assert np.array_equal(got.q1, (s1 * s1).sum(axis=(2, 3)))
    assert np.array_equal(got.t2, s2.sum(axis=(2, 3)))


@given(conv_cases())
def test_float_input_runs_the_same_sums_in_float64(case):
    x, z, w_shape, attrs, gamma = case
    xf = (x.astype(np.float32) - z) * np.float32(0.37)
    grid = patch_grid(x.shape, w_shape, attrs, gamma, "conv")
    got, exact = patch_sums(xf, 0.0, grid), patch_sums(x, z, grid)
    assert got.t1.dtype == np.float64
    np.testing.assert_allclose(got.t1, 0.37 * exact.t1, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(got.t2, 0.37**2 * exact.t2, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize(("size", "gamma", "expected"), [
    (8, 1, list(range(8))), (8, 2, [0, 2, 4, 6]), (8, 4, [1, 5]), (8, 8, [3]), (4, 4, [1]),
    (5, 2, [0, 2, 4]), (1, 8, [0]), (7, 3, [0, 3, 6]), (6, 4, [0, 4])])
def test_sample_positions_split_the_leftover_between_the_borders(size, gamma, expected):
    assert sample_positions(size, gamma).tolist() == expected


def test_gemm_input_is_one_patch_of_the_whole_row():
    x = np.array([[1, 2, 3, 250], [0, 0, 0, 0]], np.uint8)
    grid = patch_grid(x.shape, (5, 4), {}, 4, "fc")
    s = patch_sums(x, 10, grid, "fc")
    centred = x.astype(np.int64) - 10
    assert grid.count == 1
    assert s.t1[:, 0].tolist() == centred.sum(axis=1).tolist() == [216, -40]
    assert s.q1[:, 0].tolist() == [216**2, 1600]
    assert s.t2[:, 0].tolist() == (centred**2).sum(axis=1).tolist()


def test_scratch_is_independent_of_the_output_size():
    """O(window rows × width) on the ring path, O(images) on the direct one — never O(C_out·OH·OW)."""
    small = patch_grid((1, 16, 56, 56), (64, 16, 3, 3), {"pads": [1, 1, 1, 1]}, 1, "conv")
    wide = patch_grid((1, 16, 56, 56), (512, 16, 3, 3), {"pads": [1, 1, 1, 1]}, 1, "conv")
    assert not small.direct
    assert patch_sums_scratch_bytes(small) == patch_sums_scratch_bytes(wide) == 8 * 3 * 56 + 8 * 3 + 24
    sparse = patch_grid((1, 16, 56, 56), (64, 16, 3, 3), {"pads": [1, 1, 1, 1]}, 8, "conv")
    assert sparse.direct and patch_sums_scratch_bytes(sparse) == 24


def test_bad_inputs_name_the_layer():
    grid = patch_grid((1, 2, 4, 4), (3, 2, 3, 3), {}, 1, "convX")
    with pytest.raises(TypeError, match="convX"):
        patch_sums(np.zeros((1, 2, 4, 4), np.int32), 0, grid, "convX")
    with pytest.raises(ValueError, match="convX"):
        patch_sums(np.zeros((1, 2, 5, 4), np.uint8), 0, grid, "convX")
    with pytest.raises(ValueError, match="convX"):
        patch_grid((1, 2, 2, 2), (3, 2, 3, 3), {}, 1, "convX")  # the kernel does not fit
    with pytest.raises(ValueError, match="fcY"):
        patch_grid((1, 7), (3, 6), {}, 1, "fcY")


def test_sixteen_bit_inputs_use_int64_rings_and_stay_exact():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 65536, (2, 3, 6, 6)).astype(np.uint16)
    for gamma in (1, 4):
        grid = patch_grid(x.shape, (2, 3, 3, 3), {"pads": [1, 1, 1, 1]}, gamma, "conv")
        expected = patch_sums_reference(x, 7, grid)
        for path in (grid, replace(grid, direct=not grid.direct)):
            got = patch_sums(x, 7, path)
            assert np.array_equal(got.t1, expected.t1) and np.array_equal(got.q1, expected.q1)
            assert np.array_equal(got.t2, expected.t2)


@given(st.integers(1, 5), st.integers(1, 300), st.sampled_from([np.uint8, np.int8, np.int16]),
       st.integers(0, 2**32 - 1))
def test_gemm_row_sums_are_the_exact_sums_of_each_row(n, k, dtype, seed):
    """A Gemm input [N, K] (one 1×1 patch per image) takes the row-sum loop: T1 = Σ x̃, Q1 = T1², T2 = Σ x̃²."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, info.max + 1, (n, k), dtype=dtype)
    z = int(rng.integers(info.min, info.max + 1))
    grid = patch_grid(x.shape, (3, k), {}, 4, "fc")
    assert grid.single and grid.count == 1
    got = patch_sums(x, z, grid, "fc")
    centred = x.astype(np.int64) - z
    assert got.t1.dtype == np.int64
    assert np.array_equal(got.t1[:, 0], centred.sum(axis=1))
    assert np.array_equal(got.q1[:, 0], centred.sum(axis=1) ** 2)
    assert np.array_equal(got.t2[:, 0], (centred * centred).sum(axis=1))
    ref = patch_sums_reference(x, z, grid, "fc")
    assert np.array_equal(got.t2, ref.t2) and np.array_equal(got.q1, ref.q1)
