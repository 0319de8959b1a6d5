"""Prior selection: Gaussian and Laplace fits, KS statistics, per-tensor and per-channel."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refquant_lloydmax as lm


def ks_statistic(x, cdf):
    """D = max_i max(i/n - F(x_(i)), F(x_(i)) - (i-1)/n) over the sorted sample (i = 1..n)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    f = np.array([cdf(v) for v in x])
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def gaussian_cdf(loc, scale):
    return lambda v: 0.5 * math.erfc(-(v - loc) / (scale * math.sqrt(2)))


def laplace_cdf(loc, b):
    return lambda v: 0.5 * math.exp((v - loc) / b) if v < loc else 1 - 0.5 * math.exp(-(v - loc) / b)


def test_gaussian_weights_choose_gaussian():
    w = np.random.default_rng(0).normal(0.1, 0.05, size=4000)
    fit = lm.fit_prior(w)
    assert fit.prior == "gaussian" and fit.ks_gaussian < fit.ks_laplace
    assert fit.loc == pytest.approx(np.mean(w), rel=1e-12)
    assert fit.scale == pytest.approx(np.std(w), rel=1e-12)
    assert fit.std == fit.scale and fit.size == 4000


def test_laplace_weights_choose_laplace():
    w = np.random.default_rng(1).laplace(-0.2, 0.03, size=4000)
    fit = lm.fit_prior(w)
    assert fit.prior == "laplace" and fit.ks_laplace < fit.ks_gaussian
    median = np.median(w)
    assert fit.loc == median
    assert fit.scale == pytest.approx(np.mean(np.abs(w - median)), rel=1e-12)
    assert fit.std == pytest.approx(math.sqrt(2) * fit.scale)


def test_ks_statistics_match_the_sorted_sample_formula():
    w = np.random.default_rng(2).standard_t(5, size=500)
    fit = lm.fit_prior(w)
    mean, std, median = np.mean(w), np.std(w), np.median(w)
    b = np.mean(np.abs(w - median))
    assert fit.ks_gaussian == pytest.approx(ks_statistic(w, gaussian_cdf(mean, std)), abs=1e-12)
    assert fit.ks_laplace == pytest.approx(ks_statistic(w, laplace_cdf(median, b)), abs=1e-12)


def test_per_channel_fits_along_axis_zero_and_other_axes():
    rng = np.random.default_rng(3)
    w = np.stack([rng.normal(0, 1, (50, 60)), rng.laplace(0, 2, (50, 60)),
                  rng.normal(5, 0.1, (50, 60)), rng.laplace(1, 0.5, (50, 60))])
    fits = lm.fit_prior(w, axis=0)
    assert isinstance(fits, tuple) and len(fits) == 4
    assert [f.prior for f in fits] == ["gaussian", "laplace", "gaussian", "laplace"]
    for f, channel in zip(fits, w):
        assert f.size == channel.size
        assert f == lm.fit_prior(channel)
    moved = np.moveaxis(w, 0, 2)
    assert lm.fit_prior(moved, axis=2) == fits
    assert lm.fit_prior(moved, axis=-1) == fits


def test_override_forces_a_prior_and_still_reports_both_statistics():
    w = np.random.default_rng(4).laplace(0, 1, 3000)
    auto = lm.fit_prior(w)
    gauss = lm.fit_prior(w, prior="gaussian")
    emp = lm.fit_prior(w, prior="empirical")
    lap = lm.fit_prior(w, prior="laplace")
    assert auto.prior == "laplace" and lap == auto
    assert gauss.prior == "gaussian" and gauss.loc == pytest.approx(np.mean(w)) and gauss.scale == pytest.approx(np.std(w))
    assert emp.prior == "empirical" and emp.loc == pytest.approx(np.mean(w)) and emp.std == pytest.approx(np.std(w))
    for f in (gauss, emp, lap):
        assert (f.ks_gaussian, f.ks_laplace) == (auto.ks_gaussian, auto.ks_laplace)


def test_scaled_table_is_the_lloyd_max_quantizer_of_the_fitted_prior():
    """loc + std * (unit-variance table) is Lloyd-Max for N(loc, std^2): the centroid condition
    holds after scaling, checked on the exact Gaussian cells of the standardised levels."""
    w = np.random.default_rng(6).normal(0.3, 0.02, 5000)
    fit = lm.fit_prior(w)
    table = lm.lloyd_max("gaussian", 8)
    codebook = fit.loc + fit.std * table.levels
    standardised = (codebook - fit.loc) / fit.std
    cells = lm.Gaussian().cells(standardised)
    assert np.allclose(cells.centroid, standardised, atol=1e-12)


@given(
    w=hnp.arrays(np.float64, st.integers(2, 200), elements=st.floats(-50, 50).map(lambda v: round(v, 6)))
    .filter(lambda a: a.min() < a.max()),
)
def test_choice_is_the_smaller_statistic(w):
    fit = lm.fit_prior(w)
    assert 0 < fit.ks_gaussian <= 1 and 0 < fit.ks_laplace <= 1
    assert fit.prior == ("gaussian" if fit.ks_gaussian <= fit.ks_laplace else "laplace")
    assert fit.scale > 0 and np.isfinite(fit.loc)
    assert w.min() <= fit.loc <= w.max()


@pytest.mark.parametrize(
    "w, kwargs, error, match",
    [
        (np.array([0.1, np.nan, 0.2]), {"name": "conv1.weight"}, ValueError,
         r"conv1.weight: 1 of 3 values are NaN or infinite \(first at index \(1,\)"),
        (np.array([[0.1, 0.2], [0.3, np.inf]]), {"name": "fc.weight"}, ValueError, r"first at index \(1, 1\)"),
        (np.zeros(16), {"name": "fc.weight"}, ValueError, "fc.weight: all 16 values equal 0.0"),
        (np.array([[1.0, 2.0], [3.0, 3.0]]), {"axis": 0, "name": "w"}, ValueError,
         "w, channel 1 along axis 0: all 2 values equal 3.0"),
        (np.array([1.0]), {}, ValueError, "needs at least 2 values"),
        (np.array([2.6e-270, 0.0]), {}, ValueError, "spread of the values underflows"),
        (np.ones((3, 1)) * np.arange(3)[:, None], {"axis": 0}, ValueError, "channel 0 along axis 0: needs at least 2"),
        (np.arange(6.0).reshape(2, 3), {"axis": 2}, ValueError, "axis 2 is invalid for shape"),
        (np.array(1.5), {"axis": 0}, ValueError, "scalar has no axis"),
        (np.arange(6.0), {"prior": "normal"}, ValueError, "prior must be one of"),
        (np.array(["a", "b"]), {}, TypeError, "expected an array of real numbers"),
        (np.array([1 + 2j, 3]), {}, TypeError, "complex"),
    ],
)
def test_bad_input_is_named(w, kwargs, error, match):
    with pytest.raises(error, match=match):
        lm.fit_prior(w, **kwargs)


@settings(max_examples=40)
@given(x=hnp.arrays(np.float64, st.integers(2, 500), elements=st.floats(-1e4, 1e4, allow_nan=False, width=32)),
       prior=st.sampled_from(["gaussian", "laplace"]))
def test_ks_statistic_is_scipy_kstest_statistic_bit_for_bit(x, prior):
    from scipy import stats

    from refquant_lloydmax.fit import ks_statistic

    if x.min() == x.max():
        return
    loc = float(np.mean(x)) if prior == "gaussian" else float(np.median(x))
    scale = float(np.std(x)) if prior == "gaussian" else float(np.mean(np.abs(x - loc)))
    name = "norm" if prior == "gaussian" else "laplace"
    assert ks_statistic(x, prior, loc, scale) == float(stats.kstest(x, name, args=(loc, scale)).statistic)
