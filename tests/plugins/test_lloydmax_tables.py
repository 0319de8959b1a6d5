"""The Lloyd-Max, optimal-uniform and ACIQ numbers against the classic tables.

The oracle numbers below are typed in from the reference tables (Max 1960 Tables I and II;
Paez-Glisson 1972 as given by Sayood, Table 9.6; ACIQ's official code; and values recomputed by
an independent script with exact integrals and a 1e-13 Lloyd tolerance). The package computes
its own values; these tests compare the two. Closed-form partial moments are also checked
against adaptive quadrature (scipy.integrate.quad on scipy.stats densities).
"""
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

import refquant_lloydmax as lm
from refquant_lloydmax.densities import Gaussian, Laplace


def assert_sig(actual, expected, digits, what=""):
    """|actual - expected| <= half a unit in the ``digits``-th significant digit of expected."""
    actual = np.atleast_1d(np.asarray(actual, dtype=float))
    expected = np.atleast_1d(np.asarray(expected, dtype=float))
    assert actual.shape == expected.shape, what
    for a, e in zip(actual, expected):
        if e == 0:
            assert abs(a) <= 1e-12, f"{what}: {a} != 0"
            continue
        unit = 10.0 ** (math.floor(math.log10(abs(e))) - digits + 1)
        assert abs(a - e) <= 0.5 * unit, f"{what}: {a!r} != {e!r} to {digits} significant digits"


def assert_published(actual, printed, decimals, what=""):
    """Agreement with a printed table to one unit in its last printed decimal place.

    Printed tables round (sometimes twice, sometimes by truncation), so a correct value can sit
    up to one unit away: Max prints 0.03454 for 0.034548, Sayood 0.5006 for 0.50055.
    """
    actual = np.atleast_1d(np.asarray(actual, dtype=float))
    printed = np.atleast_1d(np.asarray(printed, dtype=float))
    assert actual.shape == printed.shape, what
    assert np.all(np.abs(actual - printed) <= 1.0001 * 10.0**-decimals), f"{what}: {actual} vs {printed}"


# Lloyd-Max, N(0,1): N -> (MSE, positive thresholds, positive levels), computed columns.
GAUSSIAN_LLOYD_MAX = {
    2: (0.36338, [0.0], [0.79788]),
    4: (0.11748, [0.9816], [0.45278, 1.5104]),
    8: (0.034548, [0.50055, 1.0500, 1.7479], [0.24509, 0.75601, 1.3439, 2.1519]),
    16: (
        0.0095010,
        [0.25822, 0.52240, 0.79955, 1.0993, 1.4371, 1.8435, 2.4008],
        [0.12840, 0.38805, 0.65676, 0.94234, 1.2562, 1.6180, 2.0690, 2.7326],
    ),
    32: (
        0.0025047,
        [0.13197, 0.26472, 0.39904, 0.53582, 0.67603, 0.82085, 0.97167, 1.1303, 1.2991,
         1.4813, 1.6817, 1.9080, 2.1732, 2.5044, 2.9759],
        [0.065890, 0.19805, 0.33138, 0.46670, 0.60493, 0.74714, 0.89457, 1.0488, 1.2118,
         1.3863, 1.5762, 1.7872, 2.0287, 2.3177, 2.6911, 3.2607],
    ),
}

# Lloyd-Max, unit-variance Laplace (computed columns).
LAPLACE_LLOYD_MAX = {
    2: (0.5, [0.0], [0.70711]),
    4: (0.17619, [1.1269], [0.41976, 1.8340]),
    8: (0.054476, [0.53318, 1.2527, 2.3796], [0.23340, 0.83296, 1.6725, 3.0867]),
    16: (
        0.015373,
        [0.26441, 0.56674, 0.91982, 1.3444, 1.8776, 2.5971, 3.7240],
        [0.12399, 0.40484, 0.72865, 1.1110, 1.5778, 2.1773, 3.0169, 4.4311],
    ),
    32: (
        0.0041022,
        [0.13221, 0.27323, 0.42431, 0.58699, 0.76322, 0.95546, 1.1669, 1.4019, 1.6663,
         1.9687, 2.3217, 2.7463, 3.2795, 3.9990, 5.1259],
        [0.064048, 0.20038, 0.34608, 0.50253, 0.67145, 0.85499, 1.0559, 1.2779, 1.5259,
         1.8067, 2.1306, 2.5129, 2.9797, 3.5793, 4.4188, 5.8330],
    ),
}

# Published values: Max (1960) Table I MSE, and Sayood Table 9.6 levels/thresholds.
MAX_PUBLISHED_MSE = {2: 1 - 2 / math.pi, 4: 0.1175, 8: 0.03454, 16: 0.009497, 32: 0.002499}
SAYOOD_GAUSSIAN = {4: ([0.9816], [0.4528, 1.510]), 8: ([0.5006, 1.050, 1.748], [0.2451, 0.7560, 1.344, 2.152])}
SAYOOD_LAPLACE = {4: ([1.1269], [0.4196, 1.8340]), 8: ([0.5332, 1.2527, 2.3796], [0.2334, 0.8330, 1.6725, 3.0867])}

# Optimal uniform (mid-rise) quantizer: N -> (step, MSE, clip N*step/2), computed columns.
GAUSSIAN_UNIFORM = {
    2: (1.5958, 0.36338, 1.5958),
    4: (0.99569, 0.11885, 1.9914),
    8: (0.58602, 0.037440, 2.3441),
    16: (0.33520, 0.011543, 2.6816),
    32: (0.18814, 0.0034952, 3.0102),
}
MAX_PUBLISHED_STEP = {2: 1.5958, 4: 0.9957, 8: 0.586, 16: 0.3352, 32: 0.1881}
LAPLACE_UNIFORM = {
    2: (1.4142, 0.5, 1.4142),
    4: (1.0874, 0.19630, 2.1748),
    8: (0.73093, 0.071748, 2.9237),
    16: (0.46100, 0.025351, 3.6880),
    32: (0.27999, 0.0087132, 4.4798),
}

# ACIQ: bits -> (alpha*/sigma Gaussian, alpha*/b Laplace), full precision from ACIQ's code
# comments, and the rounded constants of its code for M = 1.
ACIQ_CODE = {2: (1.71063519, 2.83068299), 3: (2.15159277, 3.89722946),
             4: (2.55913646, 5.02864014), 8: (3.92403714, 9.89675982)}
ACIQ_CODE_M1 = (1.24, 1.86)


def _positive(result, n):
    t = result.thresholds[n // 2:] if n > 2 else result.thresholds
    return t, result.levels[n // 2:]


@pytest.mark.parametrize("n", sorted(GAUSSIAN_LLOYD_MAX))
@pytest.mark.parametrize("newton", [True, False], ids=["newton", "plain-lloyd"])
def test_gaussian_lloyd_max_table(n, newton):
    mse, thresholds, levels = GAUSSIAN_LLOYD_MAX[n]
    r = lm.lloyd_max("gaussian", n, newton=newton)
    assert r.converged
    t, y = _positive(r, n)
    assert_sig(r.mse, mse, 4, f"MSE N={n}")
    assert_sig(t, thresholds, 4, f"thresholds N={n}")
    assert_sig(y, levels, 4, f"levels N={n}")


@pytest.mark.parametrize("n", sorted(LAPLACE_LLOYD_MAX))
@pytest.mark.parametrize("newton", [True, False], ids=["newton", "plain-lloyd"])
def test_laplace_lloyd_max_table(n, newton):
    mse, thresholds, levels = LAPLACE_LLOYD_MAX[n]
    r = lm.lloyd_max("laplace", n, newton=newton)
    assert r.converged
    t, y = _positive(r, n)
    assert_sig(r.mse, mse, 4, f"MSE N={n}")
    assert_sig(t, thresholds, 4, f"thresholds N={n}")
    assert_sig(y, levels, 4, f"levels N={n}")


@pytest.mark.parametrize("n, decimals", [(2, 6), (4, 4), (8, 5)])
def test_max_published_mse(n, decimals):
    assert_published(lm.lloyd_max("gaussian", n).mse, MAX_PUBLISHED_MSE[n], decimals, f"N={n}")


@pytest.mark.parametrize("n", [16, 32])
def test_max_published_mse_is_slightly_low(n):
    """Max's printed MSE for 16 and 32 levels lies below the optimum, which nothing reaches.

    At N = 16 a general-purpose minimiser (BFGS on all levels, started 1% off the solution)
    finds nothing below the package's MSE; at both N, random perturbations of the levels only
    raise the MSE; and Max's printed value is lower still.
    """
    r = lm.lloyd_max("gaussian", n)
    assert MAX_PUBLISHED_MSE[n] < r.mse
    rng = np.random.default_rng(n)
    for _ in range(20):
        trial = np.sort(r.levels + 1e-3 * rng.standard_normal(n))
        assert lm.quantizer_mse("gaussian", trial) > r.mse
    if n == 16:
        found = optimize.minimize(
            lambda y: lm.quantizer_mse("gaussian", np.sort(y)), np.array(r.levels) * 1.01,
            method="BFGS", options={"gtol": 1e-12},
        )
        assert found.fun >= r.mse * (1 - 1e-10)
        assert MAX_PUBLISHED_MSE[n] < found.fun


@pytest.mark.parametrize("name, table", [("gaussian", SAYOOD_GAUSSIAN), ("laplace", SAYOOD_LAPLACE)])
def test_sayood_published_tables(name, table):
    """Sayood's 4-digit tables, to one unit in the last printed digit."""
    for n, (thresholds, levels) in table.items():
        t, y = _positive(lm.lloyd_max(name, n), n)
        for printed_t, ours in zip(thresholds, t):
            decimals = len(repr(printed_t).split(".")[1])
            assert_published(ours, printed_t, decimals, f"{name} threshold N={n}")
        for printed_y, ours in zip(levels, y):
            if (name, n, printed_y) == ("laplace", 4, 0.4196):
                # Sayood prints 0.4196 for 0.41976 (1.6 units off); the other sources agree
                # with 0.41976 (Paez-Glisson's 0.4198 as quoted in the literature).
                assert abs(ours - 0.41976) < 1e-5
                continue
            decimals = len(repr(printed_y).split(".")[1])
            assert_published(ours, printed_y, decimals, f"{name} level N={n}")


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [2, 3, 4, 8, 16, 32, 256])
def test_levels_are_mirror_symmetric_and_midpoints_exact(name, n):
    r = lm.lloyd_max(name, n)
    assert np.array_equal(r.levels, -r.levels[::-1])
    assert np.array_equal(r.thresholds, 0.5 * (r.levels[1:] + r.levels[:-1]))
    assert np.all(np.diff(r.levels) > 0)
    assert r.thresholds.size == n - 1 and np.all(np.isfinite(r.thresholds))


@pytest.mark.parametrize("n", sorted(GAUSSIAN_UNIFORM))
def test_gaussian_optimal_uniform_table(n):
    step, mse, clip = GAUSSIAN_UNIFORM[n]
    u = lm.optimal_uniform("gaussian", n)
    assert_sig(u.step, MAX_PUBLISHED_STEP[n], 3, f"published step N={n}")
    assert_sig(u.step, step, 4, f"step N={n}")
    assert_sig(u.mse, mse, 4, f"MSE N={n}")
    assert_sig(u.clip, clip, 4, f"clip N={n}")
    assert np.allclose(np.diff(u.levels), u.step, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", sorted(LAPLACE_UNIFORM))
def test_laplace_optimal_uniform_table(n):
    step, mse, clip = LAPLACE_UNIFORM[n]
    u = lm.optimal_uniform("laplace", n)
    assert_sig(u.step, step, 4, f"step N={n}")
    assert_sig(u.mse, mse, 4, f"MSE N={n}")
    assert_sig(u.clip, clip, 4, f"clip N={n}")


def test_lloyd_max_gain_over_uniform_gaussian():
    """0.05, 0.35, 0.85, 1.45 dB at N = 4, 8, 16, 32 (Max 1960, Tables I and II)."""
    gains = [10 * math.log10(lm.optimal_uniform("gaussian", n).mse / lm.lloyd_max("gaussian", n).mse)
             for n in (4, 8, 16, 32)]
    assert_sig(gains, [0.05, 0.35, 0.85, 1.45], 2, "gain dB")


@pytest.mark.parametrize("bits", sorted(ACIQ_CODE))
def test_aciq_clip_table(bits):
    gauss, laplace_b = ACIQ_CODE[bits]
    assert_sig(lm.aciq_clip("gaussian", bits), gauss, 3, f"gaussian M={bits}")
    # "laplace" is the unit-variance density: alpha / b = alpha / sigma * sqrt(2).
    assert_sig(lm.aciq_clip("laplace", bits) * math.sqrt(2), laplace_b, 3, f"laplace M={bits}")
    # Tighter: the recomputed columns agree to 5 digits.
    assert_sig(lm.aciq_clip("gaussian", bits), gauss, 5, f"gaussian M={bits}")
    assert_sig(lm.aciq_clip("laplace", bits) * math.sqrt(2), laplace_b, 5, f"laplace M={bits}")


def test_aciq_clip_one_bit_code_constants():
    assert_sig(lm.aciq_clip("gaussian", 1), ACIQ_CODE_M1[0], 3)
    assert_sig(lm.aciq_clip("laplace", 1) * math.sqrt(2), ACIQ_CODE_M1[1], 3)


@pytest.mark.parametrize(
    "density, pdf",
    [(Gaussian(), stats.norm.pdf), (Laplace(), lambda x: stats.laplace.pdf(x, scale=1 / math.sqrt(2)))],
    ids=["gaussian", "laplace"],
)
def test_partial_moments_match_quadrature(density, pdf):
    edges = [(-np.inf, -2.5), (-2.5, -0.3), (-0.3, 0.7), (0.0, 0.0), (0.7, 1.9), (1.9, np.inf),
             (-np.inf, np.inf), (3.0, 9.0), (-1e-3, 1e-3)]
    a = np.array([e[0] for e in edges])
    b = np.array([e[1] for e in edges])
    moments = density.partial_moments(a, b)
    for j in range(3):
        for k, (lo, hi) in enumerate(edges):
            ref, _ = integrate.quad(lambda x: x**j * pdf(x), lo, hi, epsabs=1e-15, epsrel=1e-12,
                                    limit=200, points=[0.0] if lo < 0 < hi and np.isfinite(lo + hi) else None)
            assert moments[j][k] == pytest.approx(ref, rel=1e-10, abs=1e-15), (j, lo, hi)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [4, 32])
def test_fixed_point_criteria_by_quadrature(name, n):
    """Each level is the conditional mean of its cell and the MSE matches, by quadrature."""
    pdf = stats.norm.pdf if name == "gaussian" else (lambda x: stats.laplace.pdf(x, scale=1 / math.sqrt(2)))
    r = lm.lloyd_max(name, n)
    edges = np.concatenate(([-np.inf], r.thresholds, [np.inf]))
    total = 0.0
    for k in range(n):
        lo, hi = edges[k], edges[k + 1]
        kw = dict(epsabs=0, epsrel=1e-13, limit=200)
        p, _ = integrate.quad(pdf, lo, hi, **kw)
        m1, _ = integrate.quad(lambda x: x * pdf(x), lo, hi, **kw)
        d, _ = integrate.quad(lambda x: (x - r.levels[k]) ** 2 * pdf(x), lo, hi, **kw)
        assert r.levels[k] == pytest.approx(m1 / p, abs=1e-11)
        total += d
    assert r.mse == pytest.approx(total, rel=1e-11)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_optimal_uniform_beats_aciq_and_lloyd_max_beats_both(name):
    for bits in (1, 2, 3, 4, 8):
        n = 2**bits
        lmx = lm.lloyd_max(name, n).mse
        opt = lm.optimal_uniform(name, n).mse
        aciq = lm.aciq_uniform(name, bits).mse
        assert lmx <= opt * (1 + 1e-12)
        assert opt <= aciq * (1 + 1e-12)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_mse_rounding_at_256_levels(name):
    """The closed-form per-cell MSE of the 256-level quantizer against quadrature, cell by cell
    (a sum of positive terms, so quadrature's own error stays relative): within 1e-11."""
    pdf = stats.norm.pdf if name == "gaussian" else (lambda x: stats.laplace.pdf(x, scale=1 / math.sqrt(2)))
    r = lm.lloyd_max(name, 256)
    edges = np.concatenate(([-np.inf], r.thresholds, [np.inf]))
    total = sum(
        integrate.quad(lambda x: (x - r.levels[k]) ** 2 * pdf(x), edges[k], edges[k + 1],
                       epsabs=0, epsrel=1e-13, limit=200)[0]
        for k in range(256)
    )
    assert r.mse == pytest.approx(total, rel=1e-11)
