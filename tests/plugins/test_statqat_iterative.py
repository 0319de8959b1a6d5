"""The iterative quantizer against a direct minimisation of the empirical MSE, and its update rules.

The oracle is written here, independently of the package: the empirical MSE of a level set from
sorted samples and prefix sums, scanned over ±4 in log scale around the answer and polished
by ``scipy.optimize.minimize_scalar`` (bounded, on log s).
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import optimize

import refquant_statqat as sq
from refquant_statqat import tables
from refquant_statqat.iterative import least_squares_update, minmax_scale, naive_float_update, statistical_update
from refquant_statqat.samples import SortedSamples

SPEC = Path(__file__).resolve().parents[2] / "spec" / "strategies" / "statqat.md"


class EmpiricalMSE:
    """mean (x - nearest level)^2 from sorted samples and prefix sums (the test's own code)."""

    def __init__(self, x):
        self.x = np.sort(x)
        self.c1 = np.concatenate(([0.0], np.cumsum(self.x)))
        self.c2 = np.concatenate(([0.0], np.cumsum(self.x**2)))

    def __call__(self, levels):
        t = 0.5 * (levels[1:] + levels[:-1])
        idx = np.concatenate(([0], np.searchsorted(self.x, t, side="right"), [self.x.size]))
        n, s1, s2 = np.diff(idx), np.diff(self.c1[idx]), np.diff(self.c2[idx])
        return float(np.sum(s2 - 2 * levels * s1 + levels**2 * n)) / self.x.size


def direct_minimum(mse, levels, around):
    f = lambda v: mse(np.exp(v) * levels)
    grid = np.linspace(np.log(around) - 4, np.log(around) + 4, 801)
    values = np.array([f(v) for v in grid])
    i = int(np.argmin(values))
    r = optimize.minimize_scalar(f, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 800)]), method="bounded",
                                 options={"xatol": 1e-10})
    return min(float(r.fun), float(values[i]))


@pytest.fixture(scope="module", params=["gaussian", "laplace"])
def million(request):
    """1M seeded samples and iterative_scale's result for every grid (the spec's table data)."""
    d = request.param
    return d, tables.table_samples(d), tables.iterative_results(d)


def test_within_half_a_percent_of_the_direct_minimiser(million):
    d, x, results = million
    mse = EmpiricalMSE(x)
    worst = {}
    for name, r in results.items():
        assert r.converged, name
        best = direct_minimum(mse, sq.grid(name).levels, r.scale)
        assert mse(r.scale * sq.grid(name).levels) == pytest.approx(r.mse, rel=1e-9)
        worst[name] = r.mse / best - 1
    assert max(worst.values()) <= 0.005, worst


def test_iterative_table_is_quoted_in_the_spec(million):
    d, _, results = million
    assert tables.iterative_table(d, results) in SPEC.read_text(encoding="utf-8")


def test_uniform_update_is_octav():
    """Symmetric grid, clip c = Q s: c' = Σ_{|x|>=c} |x| / (N_in / (12 Q^2) + N_clip) (§4.6), zeros left out."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(5000), np.zeros(300)])
    S = SortedSamples(x)
    for name, q in (("int4", 7), ("int8", 127)):
        for c in (0.5, 1.7, 3.0):
            a = np.abs(x)
            clipped, inside = a >= c, (a < c) & (a > 0)
            expected = a[clipped].sum() / (inside.sum() / (12 * q * q) + clipped.sum())
            assert statistical_update(S, name, c / q) * q == pytest.approx(expected, rel=1e-12)


def test_octav_grid_fixed_point_on_a_million_samples():
    """PAPERS §4.6: OCTAV's grid (−2^(B−1) … 2^(B−1)) on 1M Gaussian samples: s* ≈ 2.566 (B=4), 3.926 (B=8)."""
    x = np.random.default_rng(0).standard_normal(1_000_000)
    for b, clip in ((4, 2.566), (8, 3.926)):
        q = 2 ** (b - 1)
        r = sq.iterative_scale(x, sq.uniform_grid(-q, q), refine=False)
        assert r.model_scale * q == pytest.approx(clip, rel=5e-3)
        assert r.iterations <= 20


def test_float_update_rules_on_fp4():
    """PAPERS §3.4: corrected FP4 rule → s ≈ 0.505 (MSE ~0.3 % above the optimum); naive → s ≈ 0.409 (+8.6 %)."""
    x = tables.table_samples("gaussian", 400_000)
    S = SortedSamples(x)
    g = sq.grid("float4_e2m1fn")
    corrected = sq.iterative_scale(x, g, refine=False).model_scale
    s = corrected
    for _ in range(200):
        s = naive_float_update(S, g, s)
    best = sq.iterative_scale(x, g).mse
    assert corrected == pytest.approx(0.505, abs=0.005)
    assert s == pytest.approx(0.409, abs=0.005)
    assert S.exact_mse(corrected * g.levels) / best - 1 < 0.005
    assert S.exact_mse(s * g.levels) / best - 1 > 0.07


def test_float_update_counts_only_subnormals():
    """E2M1 at s = 1: clip 6, subnormal below 1 (step 0.5): s' = 6 Σ_clip|x| / (N_sub 0.25/12 + 36 N_clip)."""
    x = np.array([0.2, -0.7, 0.0, 1.5, 3.0, -6.5, 8.0])
    S = SortedSamples(x)
    expected = 6 * (6.5 + 8.0) / (2 * 0.25 / 12 + 36 * 2)
    assert statistical_update(S, "float4_e2m1fn", 1.0) == pytest.approx(expected, rel=1e-12)


def test_one_sided_grid_ignores_negative_samples():
    """uint: negatives go to 0 at every scale and drop out of the update."""
    rng = np.random.default_rng(4)
    pos = np.abs(rng.standard_normal(3000))
    both = np.concatenate([pos, -np.abs(rng.standard_normal(2000))])
    a = statistical_update(SortedSamples(pos), "uint4", 0.2)
    b = statistical_update(SortedSamples(both), "uint4", 0.2)
    assert a == pytest.approx(b, rel=1e-12)


def test_least_squares_update_is_the_least_squares_scale():
    rng = np.random.default_rng(5)
    x = rng.laplace(size=2000)
    S = SortedSamples(x)
    for name, s in (("int3", 0.5), ("float4_e2m1fn", 0.4), ("uint2", 0.6)):
        k = sq.quantize_to_grid(x, name, s) / s
        assert least_squares_update(S, name, s) == pytest.approx(np.dot(k, x) / np.dot(k, k), rel=1e-9)


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=200).filter(lambda v: np.ptp(v) > 1e-3),
       st.sampled_from(sq.GRID_NAMES))
@example(values=[5e-324, -1.0], name="uint2")  # the one positive sample / 3 underflows: no scale > 0
@example(values=[1.0, 4.0, 4.0, 4.0, 15.0, 7.203125, 12.4375, 13.5625, 13.53125, 18.40625, 21.90625, 35.1484375],
         name="int8")  # 1e-4 above the result a sample changes level and the MSE drops by 0.06 %
def test_refinement_never_raises_the_mse(values, name):
    x = np.array(values)
    if minmax_scale(SortedSamples(x), sq.grid(name)) == 0.0:
        # no sample on the grid's side, or only ones whose min-max scale underflows to 0
        with pytest.raises(ValueError, match="every sample is 0"):
            sq.iterative_scale(x, name)
        return
    r = sq.iterative_scale(x, name)
    assert r.mse <= r.model_mse * (1 + 1e-12) + 1e-300
    assert r.scale > 0 and np.isfinite(r.scale)
    # a local minimum of the exact MSE on its piece: the MSE is a quadratic in s while no sample
    # changes level and jumps where one does, so no better scale within ±1e-4 that keeps every
    # sample's level (a scale past such a jump may be lower: another piece's minimum)
    mse = EmpiricalMSE(x)
    levels = sq.grid(name).levels
    with np.errstate(over="ignore"):  # x / s past float64 saturates to the grid's end, as intended
        own = sq.quantize_to_grid(x, name, r.scale) / r.scale
        same_piece = [f * r.scale for f in np.linspace(1 - 1e-4, 1 + 1e-4, 21)
                      if np.array_equal(sq.quantize_to_grid(x, name, f * r.scale) / (f * r.scale), own)]
    assert same_piece, "the window holds r.scale itself"
    nearby = min(mse(s * levels) for s in same_piece)
    assert r.mse <= nearby * (1 + 1e-6) + 1e-12


def test_warm_start():
    x = np.random.default_rng(6).standard_normal(100_000)
    cold = sq.iterative_scale(x, "int4")
    warm = sq.iterative_scale(x, "int4", init=cold.model_scale)
    assert warm.iterations <= 2 and warm.model_scale == pytest.approx(cold.model_scale, rel=1e-7)
    far = sq.iterative_scale(x, "int4", init=100 * cold.scale)
    assert far.scale == pytest.approx(cold.scale, rel=1e-6)
    few = sq.iterative_scale(x, "int4", init=10 * cold.scale, max_iter=2)
    assert not few.converged


def test_constant_samples_are_represented_exactly():
    r = sq.iterative_scale(np.full(10, 1.5), "uint4")
    assert r.mse == 0 and r.clip == pytest.approx(1.5)


def test_best_zero_point():
    rng = np.random.default_rng(7)
    relu = np.maximum(rng.standard_normal(4000), 0)
    assert sq.best_zero_point(SortedSamples(relu), 0, 255).zero_point == 0
    assert sq.best_zero_point(SortedSamples(-relu), -128, 127).zero_point == 127
    skew = np.concatenate([rng.standard_normal(3000) * 0.2, rng.exponential(2.0, 3000)])
    S = SortedSamples(skew)
    r = sq.best_zero_point(S, 0, 15)
    # brute force: every zero point with its own iterative scale
    mses = {z: sq.iterative_scale(skew, sq.uniform_grid(-z, 15 - z)).mse for z in range(1, 15)}
    assert r.result.mse <= min(mses.values()) * (1 + 1e-3)
    assert 0 < r.zero_point < 8  # the long tail is on the positive side


@pytest.mark.parametrize("call, match", [
    (lambda: sq.iterative_scale(np.zeros(5), "int4"), "every sample is 0"),
    (lambda: sq.iterative_scale(np.array([1.0, np.inf]), "int4"), "NaN or infinite"),
    (lambda: sq.iterative_scale(np.ones(5), "int4", tol=-1), "tol"),
    (lambda: sq.iterative_scale(np.ones(5), "int4", max_iter=0), "max_iter"),
    (lambda: sq.iterative_scale(np.ones(5), "int4", init=-2.0), "init"),
    (lambda: sq.iterative_scale(np.ones(5), "fp4"), "unknown grid"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
