"""The compiled hot paths of the strategies equal the NumPy / SciPy code they replace, bit for bit.

Each oracle below is the expression the compiled code was written from (the one its docstring
gives): the KL search's cross terms (``refquant_static.entropy``), Lloyd-Max's sample MSE, its
bounded Brent refinement of the uniform grid (``refquant_lloydmax``: SciPy's
``minimize_scalar(method="bounded")`` itself is the oracle) and the prior fit's mean, standard
deviation, median and mean absolute deviation (NumPy's functions are the oracle), StatQAT's
sample MSEs and its statistical fixed point (``refquant_statqat``). Equality is ``==`` on
float64, never a tolerance.
"""

import numpy as np
import pytest
import scipy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize

from refquant.numerics import IntFormat, pairwise_sum, qparams_from_range
from refquant_lloydmax.densities import Samples
from refquant_lloydmax.fit import _fit_statistics
from refquant_lloydmax.uniform import _BRENT_MAXFUN, _bounded_brent, optimal_uniform
from refquant_static.clipsearch import clip_fractions, fake_quantize, squared_errors
from refquant_static.entropy import _xlogx, entropy_threshold_bins, first_candidate, kl_divergences
from refquant_statqat.grids import uniform_grid
from refquant_statqat.iterative import _iterate, _statistical_fixed_point, minmax_scale, statistical_update
from refquant_statqat.samples import SortedSamples


def numpy_squared_errors(values, lo, hi, fmt, symmetric):
    """``squared_errors`` without counts as the NumPy expression it was written from:
    ``fake_quantize`` on every candidate, ``d = Q(v) − v`` in float64, squared, and
    ``d.sum(axis=-1)``."""
    qp = qparams_from_range(lo.ravel(), hi.ravel(), fmt, symmetric=symmetric, axis=0)
    k, rows = lo.shape
    q = fake_quantize(values, qp.scale.reshape(k, rows, 1), qp.zero_point.astype(np.float32).reshape(k, rows, 1),
                      qp.fmt)
    d = np.subtract(q, values, dtype=np.float64)
    return d * d


# The compiled code was written from these releases' algorithms: SciPy's bounded Brent search
# (1.10–1.17) and NumPy 2's pairwise summation. The strategies keep those additions whatever is
# installed; only the comparison with the library itself depends on the release.
SCIPY_BRENT_AS_PORTED = tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 18)
NUMPY_PAIRWISE_AS_PORTED = np.__version__.split(".")[0] == "2"


def numpy_kl(hist, levels):
    """``kl_divergences`` as one vectorised NumPy expression (the module docstring's formulas)."""
    h = np.asarray(hist, dtype=np.int64)
    n = h.shape[0]
    total = int(h.sum())
    cum = np.concatenate([[0], np.cumsum(h)])
    cum_nonempty = np.concatenate([[0], np.cumsum(h > 0)])
    cum_hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    i = np.arange(levels, n + 1)
    inside = cum[i]
    outliers = total - inside
    last = h[i - 1] + outliers
    self_term = (cum_hlogh[i - 1] + _xlogx(last)) / total - np.log(total)
    g = np.arange(levels + 1)
    edges = -((-g[None, :] * i[:, None]) // levels)
    group = cum[edges[:, 1:]] - cum[edges[:, :-1]]
    nonempty = cum_nonempty[edges[:, 1:]] - cum_nonempty[edges[:, :-1]]
    mass = group.astype(np.float64)
    mass[:, -1] += outliers
    filled = group > 0
    q_level = group / (np.maximum(nonempty, 1) * np.maximum(inside, 1)[:, None])
    cross = np.where(filled, mass * np.log(np.where(filled, q_level, 1.0)), 0.0).sum(axis=1) / total
    kl = self_term - cross
    kl[(h[i - 1] == 0) & (outliers > 0)] = np.inf
    return i, kl


histograms = st.one_of(
    hnp.arrays(np.int64, st.integers(16, 600), elements=st.integers(0, 10**6)),
    hnp.arrays(np.int64, st.integers(16, 600), elements=st.sampled_from([0, 0, 0, 1, 7, 10**9])),
).filter(lambda h: h.sum() > 0)


@settings(max_examples=40, deadline=None)
@given(h=histograms, levels=st.sampled_from([2, 8, 16, 128]), saturation=st.sampled_from([1.0, 0.9, 0.3]))
def test_kl_divergences_and_the_threshold_are_the_numpy_expression(h, levels, saturation):
    if h.size < levels:
        return
    i, kl = kl_divergences(h, levels)
    i_ref, kl_ref = numpy_kl(h, levels)
    assert np.array_equal(i, i_ref) and kl.tobytes() == kl_ref.tobytes()
    # the search over every candidate, as it was written before it computed only the searched ones
    start = first_candidate(levels, h.size)
    used = int(np.flatnonzero(h)[-1]) + 1
    want = used
    if used >= start:
        i, kl = numpy_kl(h[:used], levels)
        saturated = int(h.sum()) - np.cumsum(h)[i - 1]
        keep = (i >= start) & (saturated / int(h.sum()) <= saturation)
        i, kl = i[keep], kl[keep]
        want = int(i[len(kl) - 1 - int(np.argmin(kl[::-1]))])
    assert entropy_threshold_bins(h, levels, max_saturation=saturation) == want


sample_sets = st.one_of(
    hnp.arrays(np.float64, st.integers(2, 400), elements=st.floats(-50, 50, width=32)),
    hnp.arrays(np.float64, st.integers(2, 60), elements=st.sampled_from([-2.0, -0.5, 0.0, 0.25, 3.0])),
).filter(lambda a: a.min() < a.max())


def numpy_samples_mse(density, levels):
    """``Samples.mse`` as the NumPy expression (prefix sums, ``np.sum`` over the last axis)."""
    y = np.asarray(levels, dtype=np.float64)
    idx = density.cell_bounds(0.5 * (y[..., 1:] + y[..., :-1]))
    count = np.diff(idx, axis=-1)
    sum1 = np.diff(density.s1[idx], axis=-1)
    sum2 = np.diff(density.s2[idx], axis=-1)
    d = y - density.mean
    return np.sum(np.maximum(sum2 - 2.0 * d * sum1 + d * d * count, 0.0) / density.n, axis=-1)


@settings(max_examples=40, deadline=None)
@given(x=sample_sets, n=st.sampled_from([2, 3, 16, 17, 256]), seed=st.integers(0, 2**32 - 1))
def test_samples_mse_and_the_uniform_search_are_numpy_and_scipy(x, n, seed):
    density = Samples(x)
    rng = np.random.default_rng(seed)
    levels = np.sort(rng.uniform(x.min() - 1, x.max() + 1, size=(5, n)), axis=-1)
    assert density.mse(levels).tobytes() == numpy_samples_mse(density, levels).tobytes()
    assert density.mse(levels[0]) == float(numpy_samples_mse(density, levels[0]))
    # the compiled Brent search evaluates the points SciPy evaluates and returns its minimum
    m = density.mean
    offsets = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    reach = float(max(m - density.x[0], density.x[-1] - m))
    a, b = sorted(reach * rng.uniform(1e-3, 2.0, 2))
    if b > a and SCIPY_BRENT_AS_PORTED:
        ref = optimize.minimize_scalar(lambda c: float(numpy_samples_mse(density, m + offsets * (2.0 * c / n))),
                                       bounds=(a, b), method="bounded", options={"xatol": 1e-12 * a})
        x_min, fun = _bounded_brent(density.x, density.s1, density.s2, m, m, offsets, n, a, b, 1e-12 * a,
                                    _BRENT_MAXFUN)
        assert (x_min, fun) == (float(ref.x), float(ref.fun))
    optimal_uniform(density, n)  # runs through the compiled scan and search


@pytest.mark.skipif(not NUMPY_PAIRWISE_AS_PORTED, reason=f"NumPy {np.__version__}: pairwise_sum follows NumPy 2's")
@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(np.float64, st.integers(1, 700), elements=st.floats(-1e6, 1e6, width=32)))
def test_pairwise_sum_is_numpy_sum(a):
    assert 0.0 + pairwise_sum(a, 0, a.size) == np.sum(a)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(2, 3000), elements=st.floats(-50, 50, width=32)),
       qmin_qmax=st.sampled_from([(0, 255), (0, 15), (-128, 127), (-8, 7), (-2, 1)]),
       s=st.floats(1e-3, 1.0))
def test_statqat_sample_mses_and_fixed_point_are_the_numpy_code(x, qmin_qmax, s):
    S = SortedSamples(x)
    g = uniform_grid(*qmin_qmax)
    levels = s * g.levels
    count, s1, s2 = S.cells(levels)
    want = float(np.sum(np.maximum(s2 - 2.0 * levels * s1 + levels * levels * count, 0.0))) / S.n
    assert S.mse(levels) == want
    t = 0.5 * (levels[1:] + levels[:-1])
    d = S.x - levels[np.searchsorted(t, S.x, side="left")]
    # the squares summed left to right (np.cumsum is sequential): no BLAS, no FMA, any host
    assert S.exact_mse(levels) == float(np.cumsum(d * d)[-1]) / S.n
    s_minmax = minmax_scale(S, g)
    if s_minmax > 0:
        want = _iterate(lambda v: statistical_update(S, g, v), s, 1e-9, 100, lambda: s_minmax)
        assert _statistical_fixed_point(S, g, s, 1e-9, 100, s_minmax) == want


@settings(max_examples=40, deadline=None)
@given(x=st.one_of(hnp.arrays(np.float64, st.integers(2, 3000), elements=st.floats(-50, 50, width=32)),
                   hnp.arrays(np.float64, st.integers(2, 40), elements=st.sampled_from([-1.0, -0.0, 0.0, 0.5]))))
def test_prior_fit_statistics_are_numpys(x):
    mean, sigma, median, b = _fit_statistics(x, np.sort(x))
    want_median = float(np.median(x))
    want = (float(np.mean(x)), float(np.std(x)), want_median, float(np.mean(np.abs(x - want_median))))
    assert np.array([mean, sigma, median, b]).tobytes() == np.array(want).tobytes()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 4), n=st.integers(1, 700), bits=st.integers(2, 8),
       signed=st.booleans(), symmetric=st.booleans(), grid=st.integers(1, 30))
def test_mse_clip_search_errors_are_the_numpy_code(seed, rows, n, bits, signed, symmetric, grid):
    """The fused kernel of the MSE weight search: every squared error is ``fake_quantize``'s,
    each row summed by the pairwise rule (and so equal to ``d.sum(axis=-1)`` under NumPy 2),
    on values spread over 2**±12 with exact zeros, ties of the rounding and clipped outliers."""
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((rows, n)) * np.exp2(rng.integers(-12, 12, (rows, 1)))).astype(np.float32)
    values[rng.random((rows, n)) < 0.1] = 0.0
    fmt = IntFormat(bits, signed)
    lo, hi = values.min(axis=1).astype(np.float64), values.max(axis=1).astype(np.float64)
    alpha = clip_fractions(grid)[:, None]
    got = squared_errors(values, alpha * lo, alpha * hi, fmt, symmetric=symmetric)
    terms = numpy_squared_errors(values, alpha * lo, alpha * hi, fmt, symmetric)
    want = np.array([[0.0 + pairwise_sum(terms[k, r], 0, n) for r in range(rows)] for k in range(grid)])
    assert got.tobytes() == want.tobytes()
    if NUMPY_PAIRWISE_AS_PORTED:
        assert got.tobytes() == terms.sum(axis=2).tobytes()
