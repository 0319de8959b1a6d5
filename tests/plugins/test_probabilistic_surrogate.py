"""The surrogate's moments: against Monte-Carlo draws of i.i.d. Normal weights, against the brute
mixture over channels, and the worked example of ``spec/strategies/probabilistic.md``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refquant.numerics import QParams, qparams_from_range
from refquant.strategies import LayerContext, LayerSpec, QuantizedWeight
from refquant.graph import Node
from refquant_probabilistic.patches import PatchSums, patch_grid, patch_sums, sample_positions
from refquant_probabilistic.strategy import ProbabilisticActivations
from refquant_probabilistic.surrogate import (
    activation_range,
    channel_moments,
    patch_moments,
    pooled_moments,
    tensor_moments,
)
from refquant_probabilistic.weightstats import mixture_statistics

# --- Monte Carlo ------------------------------------------------------------------------------
# For a fixed input, the surrogate's μ_o and σ_o² are the mean and variance of
# y = Σ_i w_i x_{p,i} + b_o over w_i ~ i.i.d. N(m_o, v_o) and p uniform over the sampled patches.
# Each Monte-Carlo sample draws its own weights and its own patch, so the R samples are i.i.d.;
# the sample mean then has standard error σ/√R and the sample variance ≈ sqrt((m4 − σ⁴)/R)
# (m4 the fourth central moment, estimated from the samples). Bound: 5 standard errors — a
# correct formula fails an assertion with probability below 1e-6 (Chebyshev-free, by the
# central limit theorem at R = 100 000); the seed is fixed, so the test is deterministic.
R = 100_000
BOUND = 5.0


def im2col(x_real: np.ndarray, kh: int, kw: int, pads, rows, cols) -> np.ndarray:
    """The sampled patches of one image ``[C, H, W]`` as ``[P, C·kh·kw]``, zero padding, stride 1."""
    t, l, b, r = pads
    xp = np.pad(x_real, ((0, 0), (t, b), (l, r)))
    return np.array([xp[:, i:i + kh, j:j + kw].ravel() for i in rows for j in cols])


def mc_case(seed=0, gamma=2):
    """A 2-channel 7×7 uint8 input with spatial structure, a 3×3 conv of 4 channels, its stats."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 7)
    x_real = np.stack([np.outer(ramp, ramp) * 3, (rng.random((7, 7)) > 0.7) * 2.0])
    x_qp = qparams_from_range(x_real.min(), x_real.max(), "uint8", name="x")
    x_q = np.rint(x_real / x_qp.scale).astype(np.uint8)[None] + np.uint8(x_qp.zero_point)
    m = np.array([0.3, -0.1, 0.0, 0.05])   # channel means: the m²·var_p S1 term matters
    v = np.array([0.01, 0.04, 0.02, 0.001])
    b = np.array([0.5, -0.2, 0.0, 1.0])
    attrs = {"pads": [1, 1, 1, 1]}
    grid = patch_grid(x_q.shape, (4, 2, 3, 3), attrs, gamma, "conv")
    x_hat = (x_q[0].astype(np.float64) - int(x_qp.zero_point)) * float(x_qp.scale)
    patches = im2col(x_hat, 3, 3, attrs["pads"], grid.rows, grid.cols)
    moments = patch_moments(patch_sums(x_q, int(x_qp.zero_point), grid), x_qp.scale)
    return m, v, b, patches, moments


def within_sampling_error(samples, mu, var):
    n = samples.size
    mean, s2 = samples.mean(), samples.var()
    m4 = np.mean((samples - mean) ** 4)
    se_mean, se_var = np.sqrt(var / n), np.sqrt(max(m4 - s2 * s2, 0.0) / n)
    return abs(mean - mu) <= BOUND * se_mean, abs(s2 - var) <= BOUND * se_var


@pytest.mark.parametrize("gamma", [1, 3])
def test_channel_moments_match_monte_carlo_normal_weights(gamma):
    m, v, b, patches, moments = mc_case(gamma=gamma)
    mu, var = channel_moments(moments, m, v, b)
    rng = np.random.default_rng(1)
    for o in range(4):
        w = m[o] + np.sqrt(v[o]) * rng.standard_normal((R, patches.shape[1]))
        p = rng.integers(0, len(patches), R)
        y = np.einsum("rk,rk->r", w, patches[p]) + b[o]
        ok_mean, ok_var = within_sampling_error(y, mu[0, o], var[0, o])
        assert ok_mean and ok_var, (o, y.mean(), mu[0, o], y.var(), var[0, o])


def test_tensor_moments_match_monte_carlo_over_channels_too():
    """Per tensor: the channel o is drawn uniformly as well (the mixture over channels)."""
    m, v, b, patches, moments = mc_case()
    mu, var = tensor_moments(moments, mixture_statistics(m, v, b, 1))
    rng = np.random.default_rng(2)
    o = rng.integers(0, 4, R)
    w = m[o, None] + np.sqrt(v[o, None]) * rng.standard_normal((R, patches.shape[1]))
    p = rng.integers(0, len(patches), R)
    y = np.einsum("rk,rk->r", w, patches[p]) + b[o]
    ok_mean, ok_var = within_sampling_error(y, mu[0], var[0])
    assert ok_mean and ok_var, (y.mean(), mu[0], y.var(), var[0])


def test_the_monte_carlo_check_catches_a_missing_term():
    """Without the ``m_o² · var_p S1`` term (patch-to-patch spread) the variance is off by far
    more than the bound: the check above has the power to fail."""
    m, v, b, patches, moments = mc_case()
    mean_s1, var_s1, mean_s2 = moments
    wrong = v[0] * mean_s2[0, 0]  # the conditional variance alone
    rng = np.random.default_rng(3)
    w = m[0] + np.sqrt(v[0]) * rng.standard_normal((R, patches.shape[1]))
    y = np.einsum("rk,rk->r", w, patches[rng.integers(0, len(patches), R)]) + b[0]
    assert var_s1[0, 0] > 0
    assert not within_sampling_error(y, m[0] * mean_s1[0, 0] + b[0], wrong)[1]


# --- exact relations --------------------------------------------------------------------------
finite = st.floats(-3, 3, allow_nan=False, width=64)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.data())
def test_tensor_moments_equal_the_brute_mixture_over_channels(groups, per_group, n, data):
    c = groups * per_group
    arr = lambda size, lo=-3: np.array(data.draw(st.lists(st.floats(lo, 3, allow_nan=False), min_size=size, max_size=size)))
    m, v, b = arr(c), arr(c, 0), arr(c)
    moments = (arr(n * groups).reshape(n, groups), arr(n * groups, 0).reshape(n, groups),
               arr(n * groups, 0).reshape(n, groups) + 9)
    mu, var = tensor_moments(moments, mixture_statistics(m, v, b, groups))
    bmu, bvar = pooled_moments(*channel_moments(moments, m, v, b))
    np.testing.assert_allclose(mu, bmu, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(var, bvar, rtol=1e-9, atol=1e-9)


def test_patch_moments_use_exact_integers_even_beyond_int64_products():
    """``P·Q1 − T1²`` is formed in integers: no cancellation, and Python ints when int64 could overflow."""
    t1 = np.array([[3 * 10**9]], np.int64)
    q1 = np.array([[3 * 10**18 + 7]], np.int64)     # P·Q1 overflows int64 with P = 3
    sums = PatchSums(t1, q1, np.array([[5]], np.int64), 3)
    mean, var, s2 = patch_moments(sums, np.float32(0.5))
    assert mean[0, 0] == 0.5 * 10**9
    assert var[0, 0] == 0.25 * (3 * (3 * 10**18 + 7) - 9 * 10**18) / 9  # = 0.25 · 21/9
    assert s2[0, 0] == 0.25 * 5 / 3


def test_activation_range():
    lo, hi = np.array([-2.0, 1.0, 7.0]), np.array([3.0, 8.0, 9.0])
    assert activation_range(lo, hi, None, "l")[0] is lo
    np.testing.assert_array_equal(activation_range(lo, hi, "relu", "l")[0], [0, 1, 7])
    np.testing.assert_array_equal(activation_range(lo, hi, "relu6", "l")[1], [3, 6, 6])
    with pytest.raises(ValueError, match="'l'"):
        activation_range(lo, hi, "gelu", "l")


# --- the worked example of the spec -----------------------------------------------------------
def worked_example_context():
    """Gemm, K = 4, two output channels; power-of-two scales so every number is exact."""
    wq = np.array([[1, -1, 1, -1], [2, 2, 2, 2]], np.int8)
    qw = QuantizedWeight(wq, QParams(np.float32(0.125), np.int32(0), "int8"))
    node = Node("fc", "Gemm", ["x", "w", "b"], ["y"], {})
    return LayerContext(node, qw, np.array([0.125, -0.25], np.float32), {}, None)


def test_worked_example_of_the_spec():
    strategy = ProbabilisticActivations()
    spec = LayerSpec("fc", "Gemm", 8, False, "per-tensor", False, (("width", 2.0),))
    ctx = worked_example_context()
    strategy.prepare(ctx, spec)
    assert ctx.state["weight_mean"].tolist() == [0.0, 0.25]
    assert ctx.state["weight_var"].tolist() == [0.015625, 0.0]
    x_qp = QParams(np.float32(0.5), np.int32(0), "uint8")
    x_q = np.array([[1, 2, 0, 1]], np.uint8)                        # x = [0.5, 1, 0, 0.5]
    mu, sigma = strategy_moments(strategy, x_q, x_qp, ctx, spec)
    assert (mu.tolist(), sigma.tolist()) == ([0.1875], [0.125])
    lo, hi = strategy.image_ranges(x_q, x_qp, ctx, spec)
    assert (lo.tolist(), hi.tolist()) == ([-0.0625], [0.4375])       # μ ∓ 2σ
    qp = strategy.qparams_before(x_q, x_qp, ctx, spec)
    assert qp == qparams_from_range(-0.0625, 0.4375, "uint8")
    assert int(qp.zero_point) == 32 and float(qp.scale) == float(np.float32(0.5) / np.float32(255))
    per_channel = LayerSpec("fc", "Gemm", 8, False, "per-channel", False, (("width", 2.0),))
    strategy.prepare(ctx, per_channel)
    lo, hi = strategy.image_ranges(x_q, x_qp, ctx, per_channel)
    s0 = np.sqrt(0.0234375)
    np.testing.assert_allclose(lo, [[min(0.125 - 2 * s0, 0), 0.0]])
    np.testing.assert_allclose(hi, [[0.125 + 2 * s0, 0.25]])


def strategy_moments(strategy, x_q, x_qp, ctx, spec):
    from refquant_probabilistic.surrogate import layer_moments

    return layer_moments(x_q, int(x_qp.zero_point), x_qp.scale, ctx.state, ctx.bias, ctx.attributes,
                         gamma=1, weight_model="per-channel", per_channel=spec.per_channel, layer="fc")


# --- where the method breaks ------------------------------------------------------------------
def test_a_localized_feature_between_the_sampled_windows_is_missed():
    """One bright input pixel that no sampled window reads: at γ = 4 the estimate sees an empty
    image (μ = bias, σ = 0) while the real outputs around the pixel are large; at γ = 1 it is seen."""
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 0.3, (4, 1, 3, 3)).astype(np.float32)
    wqp = qparams_from_range(-np.abs(w).max(), np.abs(w).max(), "int8", symmetric=True, name="w")
    node = Node("conv", "Conv", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1]})
    ctx = LayerContext(node, QuantizedWeight(np.rint(w / wqp.scale).astype(np.int8), wqp), None,
                       dict(node.attributes), None)
    x_qp = QParams(np.float32(1 / 64), np.int32(0), "uint8")
    x_q = np.zeros((1, 1, 8, 8), np.uint8)
    x_q[0, 0, 3, 3] = 255   # rows/cols 1 and 5 are sampled at γ = 4: windows cover 0–2 and 4–6
    strategy = ProbabilisticActivations()
    widths = {}
    for gamma in (1, 4):
        spec = LayerSpec("conv", "Conv", 8, False, "per-tensor", False, (("gamma", gamma), ("width", 3.0)))
        strategy.prepare(ctx, spec)
        widths[gamma] = strategy.image_ranges(x_q, x_qp, ctx, spec)
    assert widths[4][0][0] == 0 and widths[4][1][0] == 0           # nothing predicted at all
    assert widths[1][1][0] > 0.5                                     # the full sample sees the pixel
    real = (255 / 64) * np.abs(ctx.weight.dequantize()).max()        # |largest output| at the pixel
    assert real > 1


def test_heavy_tailed_weights_need_wider_beta_for_the_same_coverage():
    """The surrogate's μ and σ are exact for any i.i.d. weights, but the extreme output in σ
    units is not: for Student-t(3) weights (same mean and variance as the Normal ones) the
    99th percentile of (max y − μ)/σ over 200 random layers is far beyond the Normal one."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0, 1, (8, 8, 8)), 0)               # a ReLU-like input, 8 channels
    patches = im2col(x, 3, 3, (1, 1, 1, 1), range(8), range(8))  # [64, 72]
    mu, sigma = 0.0, np.sqrt((patches**2).sum(axis=1).mean())  # m_o = 0, v_o = 1, no bias: σ² = mean S2

    def z_max(draw):
        w = draw((200, 16, patches.shape[1]))                    # 200 layers of 16 channels
        y = np.einsum("lok,pk->lop", w, patches)
        return (y.reshape(200, -1).max(axis=1) - mu) / sigma

    normal = z_max(lambda shape: rng.standard_normal(shape))
    heavy = z_max(lambda shape: rng.standard_t(3, shape) / np.sqrt(3.0))  # unit variance
    # measured: 99th percentiles 5.1 (Normal) and 11.3 (Student-t); medians 3.4 and 3.8
    assert np.percentile(normal, 99) < 6
    assert np.percentile(heavy, 99) > 1.5 * np.percentile(normal, 99)
