"""ACIQ clipping: the model, its minimiser, and the scaling to samples."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, optimize, special, stats

import refquant_lloydmax as lm


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12])
def test_clip_minimises_the_model(bits):
    """An independent 1-D minimisation of E(alpha) lands on the same alpha (to its precision)."""
    for prior, alpha in (("gaussian", lm.aciq_clip("gaussian", bits)),
                         ("laplace", lm.aciq_clip("laplace", bits) * math.sqrt(2))):
        found = optimize.minimize_scalar(lambda a: lm.aciq_model_mse(a, bits, prior), bounds=(0.01, 40),
                                         method="bounded", options={"xatol": 1e-10})
        assert found.x == pytest.approx(alpha, rel=1e-6)
        assert lm.aciq_model_mse(alpha, bits, prior) <= found.fun * (1 + 1e-12)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 16])
def test_laplace_clip_solves_alpha_exp_alpha(bits):
    alpha = lm.aciq_clip("laplace", bits) * math.sqrt(2)  # alpha / b
    assert alpha * math.exp(alpha) == pytest.approx(3 * 4.0**bits, rel=1e-13)


@given(alpha=st.floats(0.05, 12), bits=st.integers(1, 10), scale=st.floats(0.1, 10))
def test_model_is_exact_clipping_error_plus_aciq_noise(alpha, bits, scale):
    """The clipping terms of E(alpha) equal 2 * integral_alpha^inf (x - alpha)^2 f(x) dx."""
    noise = alpha**2 / (3 * 4.0**bits)
    kw = dict(epsabs=0, epsrel=1e-12, limit=200)
    clip_g = 2 * integrate.quad(lambda x: (x - alpha) ** 2 * stats.norm.pdf(x, scale=scale), alpha, np.inf, **kw)[0]
    clip_l = 2 * integrate.quad(lambda x: (x - alpha) ** 2 * stats.laplace.pdf(x, scale=scale), alpha, np.inf, **kw)[0]
    assert lm.aciq_model_mse(alpha, bits, "gaussian", scale) == pytest.approx(clip_g + noise, rel=1e-8, abs=1e-300)
    assert lm.aciq_model_mse(alpha, bits, "laplace", scale) == pytest.approx(clip_l + noise, rel=1e-8, abs=1e-300)


def test_samples_use_aciqs_estimators():
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 2.0, 5000)
    assert lm.aciq_clip(x, 4, prior="gaussian") == pytest.approx(np.std(x) * lm.aciq_clip("gaussian", 4), rel=1e-12)
    b = np.mean(np.abs(x - np.mean(x)))
    assert lm.aciq_clip(x, 4, prior="laplace") == pytest.approx(b * special.lambertw(3 * 4**4).real, rel=1e-12)
    assert lm.aciq_clip(x, 4) == lm.aciq_clip(x, 4, prior=lm.fit_prior(x).prior)


def test_one_million_laplace_samples_give_the_table_clip():
    """b-hat = mean|x - mean| has relative standard error 1/sqrt(n) = 0.1% for Laplace(b=1)
    (Var|X| = b^2); 1% is ten standard errors."""
    x = np.random.default_rng(8).laplace(0.0, 1.0, 1_000_000)
    assert lm.fit_prior(x).prior == "laplace"
    assert lm.aciq_clip(x, 4) == pytest.approx(5.02864014, rel=1e-2)
    assert lm.aciq_clip(x, 8) == pytest.approx(9.89675982, rel=1e-2)


def test_aciq_uniform_is_the_clipped_grid():
    u = lm.aciq_uniform("gaussian", 3)
    alpha = lm.aciq_clip("gaussian", 3)
    assert u.levels.size == 8 and u.clip == alpha and u.center == 0.0
    assert u.step == pytest.approx(2 * alpha / 8)
    x = np.random.default_rng(9).normal(3.0, 1.0, 2000)
    v = lm.aciq_uniform(x, 2, prior="gaussian")
    assert v.center == pytest.approx(np.mean(x)) and v.clip == lm.aciq_clip(x, 2, prior="gaussian")
    assert lm.lloyd_max(x, 4).mse <= lm.optimal_uniform(x, 4).mse <= v.mse * (1 + 1e-12)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("gaussian", 0), {}, ValueError, "bits must be >= 1"),
        (("gaussian", 25), {}, ValueError, "bits must be <= 24"),
        (("gaussian", 2.0), {}, TypeError, "bits must be an integer"),
        (("gaussian", True), {}, TypeError, "bits must be an integer"),
        (("gaussian", 4), {"prior": "laplace"}, ValueError, "contradicts the gaussian"),
        ((np.arange(10.0), 4), {"prior": "uniform"}, ValueError, "prior must be None, 'gaussian' or 'laplace'"),
        (("cauchy", 4), {}, ValueError, "unknown distribution 'cauchy'"),
        ((np.array([1.0, np.nan]), 4), {}, ValueError, "NaN"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        lm.aciq_clip(*args, **kwargs)


def test_model_rejects_unknown_prior():
    with pytest.raises(ValueError, match="prior must be 'gaussian' or 'laplace'"):
        lm.aciq_model_mse(1.0, 4, "uniform")
