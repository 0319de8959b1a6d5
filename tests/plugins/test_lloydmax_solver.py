"""Convergence of the Lloyd-Max iteration and the solver's handling of its arguments."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant_lloydmax as lm

# Rounding allowance when consecutive MSEs are compared. The closed-form per-cell MSE is
# accurate to about 1e-13 relative for N <= 32 and 6e-12 at N = 256 (measured against adaptive
# quadrature); near the fixed point successive MSEs differ by less than that.
MSE_RTOL = 1e-11


def assert_non_increasing(history, rtol=MSE_RTOL):
    h = np.asarray(history)
    rises = h[1:] - h[:-1] * (1 + rtol)
    assert np.all(rises <= 0), f"MSE rose at update {int(np.argmax(rises)) + 1}: {h[np.argmax(rises):][:3]}"


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("newton", [True, False], ids=["newton", "plain-lloyd"])
def test_mse_never_increases_and_starts_from_optimal_uniform(name, n, newton):
    r = lm.lloyd_max(name, n, newton=newton)
    assert r.converged
    assert len(r.mse_history) == r.iterations + 1
    assert r.mse_history[0] == pytest.approx(lm.optimal_uniform(name, n).mse, rel=1e-14)
    assert r.mse_history[-1] == r.mse
    assert_non_increasing(r.mse_history)
    if not newton:
        assert r.newton_steps == 0


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [64, 128, 256])
def test_newton_reaches_many_levels_quickly(name, n):
    """Plain Lloyd needs ~N^2/0.56 updates (117,643 at N = 256); with Newton steps a handful."""
    r = lm.lloyd_max(name, n)
    assert r.converged and r.iterations <= 20 and r.newton_steps >= 1
    assert_non_increasing(r.mse_history)
    # The fixed point: every level is the centroid of its cell.
    density = lm.Gaussian() if name == "gaussian" else lm.Laplace()
    cells = density.cells(np.array(r.levels))
    assert np.max(np.abs(cells.centroid - r.levels)) < 1e-12


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_newton_and_plain_lloyd_reach_the_same_fixed_point(name):
    """Plain Lloyd stops when a step is <= 1e-12, which at contraction rate rho leaves it up to
    1e-12 / (1 - rho) from the fixed point (about 1e-10 at N = 32); Newton lands on it."""
    for n in (4, 8, 16, 32):
        a = lm.lloyd_max(name, n)
        b = lm.lloyd_max(name, n, newton=False)
        assert np.max(np.abs(a.levels - b.levels)) < 5e-10
        assert a.mse <= b.mse * (1 + MSE_RTOL)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [4, 8])
def test_plain_lloyd_converges_at_the_predicted_linear_rate(name, n):
    """Successive plain Lloyd steps shrink by the Jacobian's spectral radius on symmetric
    perturbations (lloyd_rates), the rate the spec's iteration counts follow."""
    rho_symmetric, _ = lm.lloyd_rates(name, n)
    y = np.array(lm.optimal_uniform(name, n).levels)
    steps = []
    for _ in range(100):
        y_next = lm.lloyd_step(name, y)
        steps.append(np.max(np.abs(y_next - y)))
        y = y_next
    steps = np.array(steps)
    # After the faster modes have died out, and while steps are far above rounding.
    start = {4: 10, 8: 30}[n]
    window = np.flatnonzero((np.arange(steps.size) >= start) & (steps > 1e-9))
    assert window.size >= 3
    ratios = steps[window[1:]] / steps[window[:-1]]
    assert np.all(np.abs(ratios - rho_symmetric) < 2e-3)


def test_rates_of_the_two_densities():
    """Both densities are log-concave, so every rate is <= 1. The Laplace density is exponential
    on each half-line, where a cell's centroid moves exactly with its edges: for an even N (no
    cell straddles the kink at 0) shifting all levels together is neutral to first order, rate 1.
    Mirror-symmetric perturbations still contract."""
    for n in (2, 4, 8, 16):
        sym_g, all_g = lm.lloyd_rates("gaussian", n)
        sym_l, all_l = lm.lloyd_rates("laplace", n)
        assert 0 <= sym_g <= all_g < 1
        assert 0 <= sym_l < 1
        assert all_l == pytest.approx(1.0, abs=1e-9)
    assert lm.lloyd_rates("gaussian", 2)[1] == pytest.approx(2 / np.pi, rel=1e-12)
    assert lm.lloyd_rates("laplace", 3)[1] < 0.8
    with pytest.raises(ValueError, match="needs an analytic density"):
        lm.lloyd_rates(np.arange(5.0), 2)


@given(
    name=st.sampled_from(["gaussian", "laplace"]),
    levels=st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=12, unique=True),
)
def test_one_lloyd_step_never_raises_the_mse(name, levels):
    y = np.sort(np.array(levels))
    y_next = lm.lloyd_step(name, y)
    assert np.all(np.diff(y_next) >= 0)
    assert lm.quantizer_mse(name, y_next) <= lm.quantizer_mse(name, y) * (1 + MSE_RTOL) + 1e-300


def test_non_convergence_warns_and_reports():
    with pytest.warns(RuntimeWarning, match="not converged after 10 iterations"):
        r = lm.lloyd_max("gaussian", 32, newton=False, max_iter=10)
    assert not r.converged and r.iterations == 10
    assert_non_increasing(r.mse_history)
    assert r.mse > lm.lloyd_max("gaussian", 32).mse
    with pytest.warns(RuntimeWarning, match="not converged"):  # again, from the cache
        assert lm.lloyd_max("gaussian", 32, newton=False, max_iter=10) is r


def test_results_are_read_only_and_tables_cached():
    a = lm.lloyd_max("laplace", 8)
    assert a is lm.lloyd_max("laplace", 8)
    with pytest.raises(ValueError):
        a.levels[0] = 0.0
    with pytest.raises(ValueError):
        a.thresholds[0] = 0.0
    u = lm.optimal_uniform("gaussian", 4)
    with pytest.raises(ValueError):
        u.levels[0] = 0.0


def test_odd_level_count_has_a_zero_level():
    r = lm.lloyd_max("gaussian", 3)
    assert r.levels[1] == 0.0
    # Max (1960), Table I lists 1.2240, 0.6120 and 0.1902 for N = 3 (a row outside the
    # cross-checked tables, so checked here to its 4 decimals only).
    assert r.levels[2] == pytest.approx(1.2240, abs=5e-5)
    assert r.thresholds[1] == pytest.approx(0.6120, abs=5e-5)
    assert r.mse == pytest.approx(0.1902, abs=5e-5)


@pytest.mark.parametrize(
    "n_levels, error, match",
    [
        (1, ValueError, "n_levels must be >= 2"),
        (0, ValueError, "n_levels must be >= 2"),
        (-4, ValueError, "n_levels must be >= 2"),
        (2.0, TypeError, "n_levels must be an integer"),
        ("4", TypeError, "n_levels must be an integer"),
        (True, TypeError, "n_levels must be an integer"),
        (None, TypeError, "n_levels must be an integer"),
    ],
)
def test_bad_level_counts(n_levels, error, match):
    with pytest.raises(error, match=match):
        lm.lloyd_max("gaussian", n_levels)
    with pytest.raises(error, match=match):
        lm.optimal_uniform("gaussian", n_levels)


@pytest.mark.parametrize(
    "distribution, error, match",
    [
        ("normal", ValueError, r"unknown distribution 'normal'; expected one of \['gaussian', 'laplace'\]"),
        ("", ValueError, "unknown distribution"),
        (np.array([1.0, np.nan, 2.0]), ValueError, "1 of 3 are NaN or infinite"),
        (np.array([1.0, 2.0, np.inf]), ValueError, "NaN or infinite"),
        (np.array([]), ValueError, "empty"),
        (np.full(10, 0.25), ValueError, "all 10 samples equal 0.25"),
        (np.ones((3, 4)), ValueError, "must be a 1-D array, got shape"),
        (np.array(2.0), ValueError, "must be a 1-D array"),
        (np.array([1 + 1j, 2]), TypeError, "complex"),
        (np.array(["a", "b"]), TypeError, "real samples"),
        (np.array([1e200, -1e200, 0.0]), ValueError, "overflow"),
        (None, TypeError, "dtype object"),
    ],
)
def test_bad_distributions(distribution, error, match):
    with pytest.raises(error, match=match):
        lm.lloyd_max(distribution, 4)
    with pytest.raises(error, match=match):
        lm.optimal_uniform(distribution, 4)


@pytest.mark.parametrize("tol", [0.0, -1e-3, float("nan"), float("inf"), "1e-9", True])
def test_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol must be a positive finite number"):
        lm.lloyd_max("gaussian", 4, tol=tol)


@pytest.mark.parametrize("max_iter, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_bad_iteration_cap(max_iter, error):
    with pytest.raises(error, match="max_iter"):
        lm.lloyd_max("gaussian", 4, max_iter=max_iter)


@pytest.mark.parametrize(
    "levels, match",
    [([1.0, 0.0], "sorted"), ([0.0, np.nan], "finite"), ([1.0], "at least 2"), ([[0.0, 1.0]], "1-D")],
)
def test_bad_levels(levels, match):
    with pytest.raises(ValueError, match=match):
        lm.quantizer_mse("gaussian", levels)
    with pytest.raises(ValueError, match=match):
        lm.lloyd_step("laplace", levels)


def test_uniform_argument_errors():
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        lm.clipped_uniform("gaussian", 4, 0.0)
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        lm.clipped_uniform("gaussian", 4, float("nan"))
    with pytest.raises(ValueError, match="center must be finite"):
        lm.optimal_uniform("gaussian", 4, center=float("inf"))
    with pytest.raises(ValueError, match="needs samples"):
        lm.minmax_uniform("gaussian", 4)


def test_clipped_uniform_grid_layout():
    u = lm.clipped_uniform("laplace", 4, 2.0, center=0.5)
    assert u.step == 1.0 and u.clip == 2.0 and u.center == 0.5
    assert np.array_equal(u.levels, [-1.0, 0.0, 1.0, 2.0])
    assert np.array_equal(u.thresholds, [-0.5, 0.5, 1.5])
    assert u.mse == pytest.approx(lm.quantizer_mse("laplace", u.levels), rel=1e-15)
