"""StatQAT's error model and grids against independent oracles.

Oracles: the constants of PAPERS §3.5 / §4.7 (published there to 5 digits, computed by an
independent script), adaptive quadrature of each cell (``scipy.integrate.quad``), direct sample
averages written out here, and ``ml_dtypes`` casts for the float grids.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

import refquant_statqat as sq
from refquant.numerics import format_values
from refquant_statqat.grids import float_saturation_threshold


def sig3(a, b):
    """Equal to 3 significant digits (relative difference below half a unit of the 3rd digit)."""
    return abs(a - b) <= 5e-3 * abs(b)


# ---- PAPERS §3.5: the constants and the SNR-vs-clip curve ------------------------------------
@pytest.mark.parametrize("grid_name, clip, scale, mse, snr", [
    ("int4", 2.4739, 0.35341, 0.012889, 18.898),
    ("float4_e2m1fn", 2.9225, 0.48708, 0.012685, 18.967),
    ("int8", 3.9205, 0.030870, 8.8308e-5, 40.540),
])
def test_papers_gaussian_constants(grid_name, clip, scale, mse, snr):
    o = sq.optimal_scale("gaussian", grid_name)
    assert sig3(o.clip, clip) and sig3(o.scale, scale)
    assert sig3(o.mse, mse) and abs(o.snr_db - snr) < 5e-3
    assert sig3(sq.analytic_scale(grid_name), scale)
    e = sq.quantization_error("gaussian", grid_name, sq.analytic_scale(grid_name))
    assert sig3(e.total, mse) and abs(e.snr_db - snr) < 5e-3


@pytest.mark.parametrize("grid_name, clip, snr", [
    ("int4", 3.4082, 15.62), ("float4_e2m1fn", 4.1468, 17.33), ("int8", 6.9881, 35.18),
])
def test_papers_laplace_constants(grid_name, clip, snr):
    o = sq.optimal_scale("laplace", grid_name)
    assert sig3(o.clip, clip) and abs(o.snr_db - snr) < 5e-3


@pytest.mark.parametrize("grid_name, gauss_clip, gauss_mse, laplace_clip_b1, laplace_mse_b1", [
    ("int2", 1.2240, 0.1902, 2.0000, 0.5285),
    ("int3", 1.9523, 0.04686, 3.4864, 0.1662),
    ("int4", 2.4739, 0.01289, 4.8199, 0.05479),
    ("int8", 3.9205, 8.831e-5, 9.8827, 6.066e-4),
])
def test_papers_exact_grid_optima(grid_name, gauss_clip, gauss_mse, laplace_clip_b1, laplace_mse_b1):
    """PAPERS §4.7 (Laplace there has b = 1, variance 2: clip scales by √2, MSE by 2)."""
    g = sq.optimal_scale("gaussian", grid_name)
    assert sig3(g.clip, gauss_clip) and sig3(g.mse, gauss_mse)
    lap = sq.optimal_scale("laplace", grid_name)
    assert sig3(lap.clip * np.sqrt(2), laplace_clip_b1) and sig3(2 * lap.mse, laplace_mse_b1)


def test_papers_int4_snr_curve():
    clips = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]
    papers = [8.19, 13.10, 17.44, 18.89, 18.05, 16.80, 15.65, 13.71, 12.13]
    ours = sq.snr_vs_clip("gaussian", "int4", clips)
    assert np.max(np.abs(ours - papers)) <= 0.05


def test_papers_minmax_snr_at_int4():
    """§3.5: a clip at the median max of n Gaussians gives these SNRs on [-7, 7]."""
    for clip, snr in ((3.40, 17.05), (3.76, 16.18), (4.41, 14.81), (4.97, 13.76)):
        assert abs(sq.snr_vs_clip("gaussian", "int4", [clip])[0] - snr) <= 0.05


# ---- exact integration against quadrature ---------------------------------------------------
def _quad_error(pdf, levels, scale):
    y = scale * np.asarray(levels, float)
    t = np.concatenate(([-np.inf], 0.5 * (y[1:] + y[:-1]), [np.inf]))
    total = 0.0
    for k in range(y.size):
        total += integrate.quad(lambda x: (x - y[k]) ** 2 * pdf(x), t[k], t[k + 1], epsabs=1e-14, epsrel=1e-12,
                                limit=200)[0]
    return total


@pytest.mark.parametrize("dist, pdf", [("gaussian", stats.norm.pdf),
                                       ("laplace", lambda x: stats.laplace.pdf(x, scale=1 / np.sqrt(2)))])
@pytest.mark.parametrize("grid_name, scale", [("int2", 1.1), ("int3", 0.6), ("uint3", 0.4),
                                              ("float4_e2m1fn", 0.45), ("float6_e2m3fn", 0.6)])
def test_exact_matches_quadrature(dist, pdf, grid_name, scale):
    e = sq.quantization_error(dist, grid_name, scale)
    oracle = _quad_error(pdf, sq.grid(grid_name).levels, scale)
    assert e.total == pytest.approx(oracle, rel=1e-9)


def test_exact_matches_large_sample():
    x = np.random.default_rng(1).standard_normal(2_000_000)
    for name, s in (("int4", 0.35), ("float4_e2m1fn", 0.49), ("uint4", 0.2)):
        exact = sq.quantization_error("gaussian", name, s)
        emp = sq.quantization_error(x, name, s)
        assert emp.stepping == pytest.approx(exact.stepping, rel=0.01)
        assert emp.total == pytest.approx(exact.total, rel=0.01)
        assert emp.approx_stepping == pytest.approx(exact.approx_stepping, rel=0.01)


def test_uint_grid_is_the_positive_half_of_the_next_int_grid():
    """On a symmetric density uint<b> ({0..2^b - 1}) sees the positive half of int<b+1>; the
    negative half costs E[X^2 1{X<0}] = 1/2 at every scale, so the optima coincide."""
    for b in (2, 4, 7):
        u, i = sq.optimal_scale("gaussian", f"uint{b}"), sq.optimal_scale("gaussian", f"int{b + 1}")
        assert u.scale == pytest.approx(i.scale, rel=1e-6)
        assert u.mse - 0.5 == pytest.approx(i.mse / 2, rel=1e-7)


def test_model_is_close_for_fine_grids_and_off_for_coarse_ones():
    at = lambda g: sq.quantization_error("gaussian", g, sq.analytic_scale(g))
    assert at("int8").approx_stepping == pytest.approx(at("int8").stepping, rel=1e-4)
    coarse = at("int2")
    assert abs(coarse.approx_stepping / coarse.stepping - 1) > 0.02


# ---- sample averages: properties against direct formulas ------------------------------------
def _direct(x, levels, s):
    y = s * levels
    err = np.min((x[:, None] - y[None, :]) ** 2, axis=1)
    clipped = (x > y[-1]) | (x < y[0])
    return err[clipped].sum() / x.size, err[~clipped].sum() / x.size


@given(st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=60),
       st.sampled_from(sq.GRID_NAMES[:14] + ("float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn")),
       st.floats(0.01, 3.0))
def test_sample_error_is_the_direct_average(values, grid_name, scale):
    x = np.array(values)
    e = sq.quantization_error(x, grid_name, scale)
    clipping, stepping = _direct(x, sq.grid(grid_name).levels, scale)
    assert e.clipping == pytest.approx(clipping, rel=1e-9, abs=1e-12)
    assert e.stepping == pytest.approx(stepping, rel=1e-9, abs=1e-12)
    assert e.total == pytest.approx(e.clipping + e.stepping)


@given(st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=60), st.floats(0.01, 3.0))
def test_sample_model_for_uniform_grids(values, scale):
    x = np.array(values)
    g = sq.grid("int4")
    inside = (np.abs(x) <= 7 * scale) & (x != 0)
    assert sq.quantization_error(x, g, scale).approx_stepping == pytest.approx(
        scale**2 / 12 * inside.sum() / x.size, rel=1e-12, abs=1e-15)


def test_float_model_steps_by_binade():
    """E2M1 at scale 1: |x| = 0.3 (subnormal, step 0.5), 1.2 (binade 1, step 0.5), 2.5 (binade 2, step 1), 5 (step 2)."""
    x = np.array([0.3, -1.2, 2.5, 5.0, 7.0, 0.0])
    e = sq.quantization_error(x, "float4_e2m1fn", 1.0)
    assert e.approx_stepping == pytest.approx((0.25 + 0.25 + 1 + 4) / 12 / 6)
    assert e.clipping == pytest.approx(1.0 / 6)  # 7 clips to 6


# ---- grids and the float path ---------------------------------------------------------------
def test_grid_levels():
    assert np.array_equal(sq.grid("int4").levels, np.arange(-7, 8))
    assert np.array_equal(sq.grid("uint3").levels, np.arange(0, 8))
    for f in sq.FLOAT_GRIDS:
        assert np.array_equal(sq.grid(f).levels, format_values(f))
    assert sq.grid("float4_e2m1fn").top == 6 and sq.grid("float8_e4m3fn").top == 448


@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=40),
       st.sampled_from(sq.FLOAT_GRIDS), st.floats(1e-3, 10.0))
def test_fake_quantize_float_matches_ml_dtypes(values, fmt, scale):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array(values, np.float32)
    s = np.float32(scale)
    y, mask = sq.fake_quantize_float(x, fmt, s)
    v = x / s
    top = sq.grid(fmt).top
    inside = np.abs(v) <= top
    expected = (v.astype(getattr(ml_dtypes, fmt)).astype(np.float32) * s)[inside]
    assert np.array_equal(y[inside], expected)
    assert np.all(np.abs(y) <= np.float32(top) * s)
    assert np.all(mask[inside])
    threshold, _ = float_saturation_threshold(fmt)
    assert not np.any(mask[np.abs(v) > threshold])


@pytest.mark.parametrize("fmt, threshold, tie_passes", [
    ("float4_e2m1fn", 7.0, False), ("float8_e4m3fn", 464.0, True), ("float8_e5m2", 61440.0, False),
    ("float6_e2m3fn", 7.75, False), ("float6_e3m2fn", 30.0, False)])
def test_saturation_threshold(fmt, threshold, tie_passes):
    from refquant.numerics import round_to_format

    assert float_saturation_threshold(fmt) == (threshold, tie_passes)
    top = sq.grid(fmt).top
    assert round_to_format(np.nextafter(threshold, 0), fmt) == top  # just below: rounds onto the top
    _, mask = sq.fake_quantize_float(np.array([threshold, np.nextafter(np.float32(threshold), np.float32(0))],
                                              np.float32), fmt, 1.0)
    assert mask[1] and mask[0] == tie_passes


def test_quantize_to_grid():
    assert np.array_equal(sq.quantize_to_grid([-10, -0.74, 0.25, 0.76, 9], "int2", 0.5), [-0.5, -0.5, 0, 0.5, 0.5])
    assert np.array_equal(sq.quantize_to_grid([-3, 0.3, 7.0], "uint2", 1.0), [0, 0, 3])
    assert np.array_equal(sq.quantize_to_grid([1.3, 100.0], "float4_e2m1fn", 0.5), [1.5, 3.0])


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: sq.quantization_error("cauchy", "int4", 1.0), "unknown distribution"),
    (lambda: sq.quantization_error("gaussian", "int9", 1.0), "unknown grid 'int9'"),
    (lambda: sq.quantization_error("gaussian", "int4", 0.0), "scale must be"),
    (lambda: sq.quantization_error("gaussian", "int4", np.nan), "scale must be"),
    (lambda: sq.quantization_error(np.array([1.0, np.nan]), "int4", 1.0), "NaN or infinite"),
    (lambda: sq.quantization_error(np.ones((2, 2)), "int4", 1.0), "1-D"),
    (lambda: sq.quantization_error(np.array([]), "int4", 1.0), "empty"),
    (lambda: sq.fake_quantize_float(np.ones(3), "float4_e2m1fn", 1.0), "float32"),
    (lambda: sq.uniform_grid(1, 5), "kmin <= 0 <= kmax"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
