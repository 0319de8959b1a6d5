"""Lloyd-Max and the uniform quantizers on samples (the empirical distribution)."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, stats

import refquant_lloydmax as lm
from refquant_lloydmax.densities import as_density

# Allowance for comparing two MSEs of the same samples computed along different float paths.
MSE_RTOL = 1e-9


def tie_slack(x):
    """Allowance for midpoint ties decided by a rounded threshold (see ``brute_force_mse``)."""
    return 2 * float(np.max(np.abs(x - x.mean()))) * ulps(x)


def ulps(x, k=4):
    """k units in the last place of the largest |x|: the resolution the samples are stored at."""
    return k * float(np.spacing(np.max(np.abs(x))))


def brute_force_mse(x, levels):
    """mean over samples of min_k (x - y_k)^2: the definition, by broadcasting (O(n N)).

    The package assigns by the float64 midpoints instead; a sample within rounding of a midpoint
    may go to the level one ulp farther, which moves its squared error by at most
    2 |x - y| ulp (see ``tie_slack``).
    """
    x = np.asarray(x, dtype=float)[:, None]
    return float(np.mean(np.min((x - np.asarray(levels)[None, :]) ** 2, axis=1)))


def cell_members(x, thresholds):
    """Cell index of every sample, by comparison with each threshold (x on t goes below)."""
    return np.sum(np.asarray(x)[:, None] > np.asarray(thresholds)[None, :], axis=1)


# Finite sample sets with spread: a few distinct values, repeated values, wide and narrow ranges.
samples = st.one_of(
    hnp.arrays(np.float64, st.integers(2, 80), elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
    hnp.arrays(np.float64, st.integers(2, 80), elements=st.sampled_from([-2.0, -0.5, 0.0, 0.25, 3.0])),
    hnp.arrays(np.float64, st.integers(2, 80), elements=st.floats(-1.0, 1.0, allow_subnormal=False)).map(
        lambda a: 1e6 + 1e-3 * a
    ),
).filter(lambda a: a.min() < a.max())


@given(x=samples, n=st.integers(2, 12))
# 46 equal samples near 1e6 in one cell: np.mean's pairwise sum lands 5 ulps from their mean,
# the level itself is the exact mean rounded (the oracle is math.fsum / count, 1 ulp at most)
@example(x=1e6 + 1e-3 * np.array([0.0] * 4 + [0.75, -0.125, 0.0546875] + [0.0] * 3 + [0.1171875] * 46), n=7)
def test_lloyd_max_on_samples_properties(x, n):
    r = lm.lloyd_max(x, n)
    assert r.converged
    y, t = r.levels, r.thresholds
    assert y.shape == (n,) and t.shape == (n - 1,)
    assert np.all(np.diff(y) >= 0), "levels sorted"
    assert np.array_equal(t, 0.5 * (y[1:] + y[:-1])), "thresholds are the midpoints"
    # Centroid condition: every non-empty cell's level is the mean of its samples.
    cell = cell_members(x, t)
    spread = float(np.max(np.abs(x - x.mean())))
    for k in np.unique(cell):
        members = x[cell == k]
        assert y[k] == pytest.approx(math.fsum(members) / members.size, abs=1e-9 * spread + ulps(x))
    # The reported MSE is the definition's.
    assert r.mse == pytest.approx(brute_force_mse(x, y), rel=1e-12, abs=tie_slack(x))
    # MSE never increases along the iteration.
    h = np.array(r.mse_history)
    assert np.all(h[1:] <= h[:-1] * (1 + MSE_RTOL) + 1e-15 * spread**2)


@given(x=samples, n=st.integers(2, 12))
def test_lloyd_max_beats_optimal_uniform_beats_minmax(x, n):
    lmx = lm.lloyd_max(x, n)
    opt = lm.optimal_uniform(x, n)
    mm = lm.minmax_uniform(x, n)
    slack = 1e-15 * float(np.max(np.abs(x - x.mean()))) ** 2
    assert lmx.mse <= opt.mse * (1 + MSE_RTOL) + slack
    assert opt.mse <= mm.mse * (1 + MSE_RTOL) + slack
    # The uniform results are what they claim to be.
    for u in (opt, mm):
        assert u.mse == pytest.approx(brute_force_mse(x, u.levels), rel=1e-12, abs=slack + tie_slack(x))
        assert np.allclose(np.diff(u.levels), u.step, rtol=1e-9, atol=ulps(x))
        assert u.clip == pytest.approx(n * u.step / 2, rel=1e-15)
        assert u.center == pytest.approx(x.mean(), rel=1e-14, abs=ulps(x))
    m = opt.center
    assert mm.clip == max(m - x.min(), x.max() - m)


@given(x=samples, n=st.integers(2, 12))
@example(x=1e6 + 1e-3 * np.array([0.0] + [0.25701165] * 46), n=2)  # np.mean of the 46 equal values is 5 ulps off
def test_prefix_sum_cells_match_direct_sums(x, n):
    d = as_density(x)
    levels = np.sort(np.random.default_rng(n).uniform(x.min(), x.max(), n))
    cells = d.cells(levels)
    member = cell_members(x, cells.thresholds)
    spread = float(np.max(np.abs(x - x.mean())))
    for k in range(n):
        inside = x[member == k]
        assert cells.prob[k] == inside.size / x.size
        if inside.size:
            # the exact mean, rounded once (np.mean's pairwise float64 sum of values near 1e6 can
            # be several ulps off: 46 equal values v average to v + 5 ulps)
            assert cells.centroid[k] == pytest.approx(math.fsum(inside) / inside.size, abs=1e-9 * spread + ulps(x))
        d_k = float(np.sum((inside - levels[k]) ** 2)) / x.size
        # (tiny: squares of values near 1e-161 are subnormal and keep no relative precision)
        assert cells.sq_error[k] == pytest.approx(d_k, rel=1e-7, abs=1e-9 * spread**2 + np.finfo(float).tiny)


def test_fewer_distinct_values_than_levels():
    x = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 5.0])
    r = lm.lloyd_max(x, 8)
    assert r.converged
    assert r.mse == pytest.approx(brute_force_mse(x, r.levels), abs=1e-15)
    assert r.mse <= lm.optimal_uniform(x, 8).mse


def test_large_offset_does_not_cost_precision():
    """Samples 1e6 + N(0, 1e-6): the prefix sums are of centred values, so nothing cancels."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal(20_000)
    r_offset = lm.lloyd_max(1e6 + 1e-3 * z, 8)
    r_plain = lm.lloyd_max(1e-3 * z, 8)
    assert np.allclose(r_offset.levels - 1e6, r_plain.levels, rtol=0, atol=1e-9)
    assert r_offset.mse == pytest.approx(r_plain.mse, rel=1e-6)


def _sandwich_std(n_levels: int, n_samples: int):
    """Asymptotic standard deviations of the empirical optimum's levels, and of its thresholds.

    Pollard (1982, "A central limit theorem for k-means clustering", Ann. Probab. 10) shows
    sqrt(n) (y_hat - y*) -> Normal(0, H^-1 S H^-1) for the empirical MSE-optimal levels, where
    H is the Hessian of the MSE at the optimum and S the covariance of one sample's gradient:

        H_kk = 2 P_k - f(t_{k-1}) (y_k - t_{k-1}) - f(t_k) (t_k - y_k)
        H_k,k+1 = -f(t_k) (y_{k+1} - y_k) / 2,      S = diag(4 D_k)

    Computed here from scipy.stats and quadrature, independently of the package's cells.
    """
    r = lm.lloyd_max("gaussian", n_levels)
    y, t = np.array(r.levels), np.array(r.thresholds)
    edges = np.concatenate(([-np.inf], t, [np.inf]))
    p = np.diff(stats.norm.cdf(edges))
    d = np.array([integrate.quad(lambda x: (x - y[k]) ** 2 * stats.norm.pdf(x), edges[k], edges[k + 1])[0]
                  for k in range(n_levels)])
    f = stats.norm.pdf(t)
    h = np.diag(2 * p)
    idx = np.arange(n_levels - 1)
    h[idx, idx] -= f * (t - y[:-1])
    h[idx + 1, idx + 1] -= f * (y[1:] - t)
    h[idx, idx + 1] = h[idx + 1, idx] = -f * (y[1:] - y[:-1]) / 2
    h_inv = np.linalg.inv(h)
    cov = h_inv @ np.diag(4 * d) @ h_inv / n_samples
    level_std = np.sqrt(np.diag(cov))
    mid = 0.5 * (np.eye(n_levels)[:-1] + np.eye(n_levels)[1:])
    threshold_std = np.sqrt(np.diag(mid @ cov @ mid.T))
    return level_std, threshold_std


def test_one_million_gaussian_samples_agree_with_the_analytic_solution():
    """Empirical and analytic Lloyd-Max agree within 5 standard deviations of sampling error.

    Levels and thresholds: the asymptotic (sandwich) standard deviation of the empirical optimum
    (Pollard 1982; `_sandwich_std`). The MSE direction with the least curvature -- all levels
    shifting together -- makes it about 0.011 at n = 1e6 for N = 16, far more than a
    single cell mean's error (~2.4e-4). MSE: the standard error of the mean of the squared error
    at the analytic levels, std((x - Q(x))^2) / sqrt(n), estimated from the samples; the fitted
    levels lower the empirical MSE by O(N / n) beyond that, which is negligible.
    """
    n_samples, n = 1_000_000, 16
    x = np.random.default_rng(2024).standard_normal(n_samples)
    emp = lm.lloyd_max(x, n)
    ref = lm.lloyd_max("gaussian", n)
    assert emp.converged
    level_std, threshold_std = _sandwich_std(n, n_samples)
    assert 0.010 < level_std.min() and level_std.max() < 0.015  # the numbers the spec quotes
    assert np.all(np.abs(emp.levels - ref.levels) <= 5 * level_std)
    assert np.all(np.abs(emp.thresholds - ref.thresholds) <= 5 * threshold_std)
    sq_err = (x - ref.levels[cell_members_fast(x, ref.thresholds)]) ** 2
    mse_se = float(np.std(sq_err) / math.sqrt(n_samples))
    assert abs(emp.mse - ref.mse) <= 5 * mse_se
    # The bound is not vacuous: it is below half the closest spacing of the levels.
    assert 5 * level_std.max() < 0.5 * np.min(np.diff(ref.levels))


def cell_members_fast(x, thresholds):
    return np.searchsorted(thresholds, x, side="left")


@given(x=samples, n=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_lloyd_max_from_a_given_start(x, n, seed):
    """``init``: the iteration starts at the given levels; the MSE never rises above theirs, the
    history starts with it, and the result is a fixed point (a Lloyd step changes nothing)."""
    rng = np.random.default_rng(seed)
    lo, hi = float(np.min(x)), float(np.max(x))
    init = np.sort(rng.uniform(lo - 1, hi + 1, n))
    if np.any(np.diff(init) <= 0):
        return
    r = lm.lloyd_max(x, n, init=init)
    start = lm.quantizer_mse(x, init)
    assert r.mse_history[0] == pytest.approx(start, rel=1e-9, abs=1e-12)
    assert r.mse <= start * (1 + 1e-9) + 1e-12
    assert r.converged
    assert np.allclose(lm.lloyd_step(x, r.levels), r.levels, rtol=0, atol=1e-9 * (1 + np.std(x)))


def test_init_errors():
    with pytest.raises(ValueError, match="init must be 4 strictly increasing"):
        lm.lloyd_max("gaussian", 4, init=[0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="init must be 4"):
        lm.lloyd_max(np.arange(10.0), 4, init=[0.0, 1.0, 2.0])


def _numpy_iteration(density, y, tol, max_iter):
    """The sample iteration as it was before it was compiled: numpy ``cells`` and
    ``_centroid_step`` per update (the oracle for the compiled loop, bit for bit)."""
    from refquant_lloydmax.solver import _centroid_step

    cells = density.cells(y)
    history, iterations, converged = [cells.mse], 0, False
    while iterations < max_iter:
        y_next = _centroid_step(y, cells, False)
        cells = density.cells(y_next)
        iterations += 1
        step = float(np.max(np.abs(y_next - y)))
        y = y_next
        history.append(cells.mse)
        if step <= tol * density.std:
            converged = True
            break
    history[-1] = density.exact_mse(y)
    return y, iterations, converged, history


@settings(max_examples=40)
@given(x=st.one_of(samples, hnp.arrays(np.float64, st.integers(2, 400),
                                        elements=st.floats(-50, 50, width=32)).filter(lambda a: a.min() < a.max())),
       n=st.sampled_from([2, 3, 16, 256]), max_iter=st.sampled_from([1, 3, 10_000]))
def test_compiled_sample_iteration_is_the_numpy_iteration_bit_for_bit(x, n, max_iter):
    import warnings

    from refquant_lloydmax.densities import Samples
    from refquant_lloydmax.uniform import optimal_uniform

    density = Samples(x)
    y, iterations, converged, history = _numpy_iteration(density, optimal_uniform(density, n).levels.copy(),
                                                         1e-12, max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max_iter=1 may stop before convergence
        r = lm.lloyd_max(x, n, max_iter=max_iter)
    assert np.array_equal(r.levels, y)
    assert (r.iterations, r.converged) == (iterations, converged)
    assert list(r.mse_history) == history


@settings(max_examples=40)
@given(x=hnp.arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e3, 1e3, allow_nan=False, width=32)))
def test_samples_mse_is_the_cells_mse_bit_for_bit(x):
    from refquant_lloydmax.densities import Samples

    if x.min() == x.max():
        return
    density = Samples(x)
    levels = np.sort(np.random.default_rng(0).uniform(x.min(), x.max(), size=(3, 8)), axis=-1)
    assert np.array_equal(density.mse(levels), density.cells(levels).mse)
    assert density.mse(levels[0]) == density.cells(levels[0]).mse


@settings(max_examples=40)
@given(x=st.one_of(samples, hnp.arrays(np.float64, st.integers(2, 3000),
                                        elements=st.floats(-50, 50, width=32)).filter(lambda a: a.min() < a.max())),
       n=st.sampled_from([2, 5, 16, 256]))
def test_exact_mse_is_the_per_cell_numpy_sum_bit_for_bit(x, n):
    from refquant_lloydmax.densities import Samples, midpoints

    density = Samples(x)
    y = np.linspace(x.min(), x.max(), n)
    idx = density.cell_bounds(midpoints(y))
    total = 0.0
    for k in range(n):
        err = density.x[idx[k]:idx[k + 1]] - y[k]
        total += float(np.sum(err * err))
    assert density.exact_mse(y) == total / density.n
