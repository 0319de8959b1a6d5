"""The analytic quantizer: the κ table against a fresh computation, and the per-layer weight SNR
of ``statqat-analytic`` against min-max on every shipped model."""
from pathlib import Path

import numpy as np
import pytest

import refquant_statqat as sq
from refquant.registry import models
from refquant_statqat import kappa, tables
from refquant_statqat.analytic import exact_mse

SPEC = Path(__file__).resolve().parents[2] / "spec" / "strategies" / "statqat.md"
#: grids whose optimum is a plateau rippled by the float grid: its local minima differ by less
#: than 3e-9 relative, so only the MSE is compared, not which minimum κ is
FLAT = {"float8_e4m3fn", "float8_e5m2"}


#: relative precision of the exact MSE at a given scale across scipy releases: measured
#: agreement 2.3e-13 (scipy 1.17.1 versus the release that wrote the κ module); 50x margin
MSE_PRECISION = 1e-11


@pytest.fixture(scope="module")
def fresh():
    return tables.kappa_values()


def scale_tolerance(distribution, g, k) -> float:
    """How far (relative) the minimiser's κ may move when the MSE is known to MSE_PRECISION:
    near the minimum ``MSE(k(1+r)) ≈ MSE(k) + ½·c·k²·r²`` (c the curvature in the scale), so
    the MSE cannot tell apart κs within ``r = sqrt(2·ε·MSE / (c·k²))``; times 4 for the
    finite-difference curvature and the minimiser's own xatol."""
    h = 1e-3
    f0 = float(exact_mse(distribution, g, k))
    fp, fm = float(exact_mse(distribution, g, k * (1 + h))), float(exact_mse(distribution, g, k * (1 - h)))
    ck2 = (fp - 2 * f0 + fm) / h**2  # c·k², per unit relative change
    return 4 * float(np.sqrt(2 * MSE_PRECISION * f0 / ck2))


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_kappa_module_is_recomputed(fresh, distribution):
    assert set(kappa.KAPPA[distribution]) == set(sq.GRID_NAMES)
    for g, o in fresh[distribution].items():
        stored = kappa.KAPPA[distribution][g]
        assert float(exact_mse(distribution, g, stored)) == pytest.approx(o.mse, rel=1e-9), g
        assert kappa.MSE[distribution][g] == pytest.approx(o.mse, rel=1e-9), g
        if g not in FLAT:
            # the optimum is flat: the scale is pinned only as well as the MSE determines it
            # (measured: up to 1.03e-6 relative between scipy releases, uint8 gaussian)
            tol = scale_tolerance(distribution, g, stored)
            assert tol < 1e-3, (g, tol)
            assert stored == pytest.approx(o.scale, rel=tol), (g, tol)


def test_kappa_is_a_minimum(fresh):
    for d in ("gaussian", "laplace"):
        for g in sq.GRID_NAMES:
            k = kappa.KAPPA[d][g]
            here = float(exact_mse(d, g, k))
            assert here <= float(exact_mse(d, g, k * 1.001)) and here <= float(exact_mse(d, g, k / 1.001))


def test_kappa_tables_in_the_spec():
    """The tables are printed at the stored κ (not a fresh minimisation, whose last digits
    depend on the scipy release; the test above pins the stored κ against it)."""
    text = SPEC.read_text(encoding="utf-8")
    stored = tables.stored_kappa_values()
    for d in ("gaussian", "laplace"):
        assert tables.kappa_table(d, stored) in text, f"regenerate with python -m refquant_statqat.tables ({d})"
    assert tables.snr_clip_table("gaussian") in text
    assert tables.decomposition_table("gaussian", stored) in text
    assert tables.float_update_table() in text


def test_analytic_scale_is_kappa_sigma():
    assert sq.analytic_scale("int4", 2.0) == pytest.approx(2 * 0.353411, rel=1e-5)
    s = sq.analytic_scale("float4_e2m1fn", np.array([0.5, 1.0, 0.0]))
    assert s.shape == (3,) and s[2] == 0 and s[1] == pytest.approx(0.48708, rel=1e-5)
    assert sq.analytic_scale("int4", distribution="laplace") == pytest.approx(3.4082 / 7, rel=1e-4)


def test_kappa_sigma_on_samples():
    """κσ on 1M samples of N(0, σ²) gives σ² times the tabulated MSE (statistical tolerance)."""
    sigma = 0.037
    x = np.random.default_rng(8).standard_normal(1_000_000) * sigma
    for g in ("int4", "float4_e2m1fn", "int8"):
        e = sq.quantization_error(x, g, sq.analytic_scale(g, sigma))
        assert e.total / sigma**2 == pytest.approx(kappa.MSE["gaussian"][g], rel=0.01)


@pytest.mark.parametrize("call, match", [
    (lambda: sq.analytic_scale("int9"), "unknown grid"),
    (lambda: sq.analytic_scale("int4", -1.0), "sigma"),
    (lambda: sq.analytic_scale("int4", np.nan), "sigma"),
    (lambda: sq.analytic_scale("int4", distribution="cauchy"), "unknown distribution"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- per-layer weight SNR on the shipped models ---------------------------------------------
SHIPPED = [m for m in tables.SNR_MODELS if m in models()]


@pytest.mark.skipif(not SHIPPED, reason="no shipped models registered")
@pytest.mark.parametrize("model", SHIPPED)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_statqat_weight_snr_at_least_minmax(model, bits):
    for row in tables.weight_snr(model, bits):
        for gran in ("per-tensor", "per-channel"):
            assert row[f"statqat {gran}"] >= row[f"minmax {gran}"] - 1e-9, (row["layer"], gran, row)


@pytest.mark.skipif(set(SHIPPED) != set(tables.SNR_MODELS), reason="not every shipped model is registered")
def test_weight_snr_table_in_the_spec():
    table = tables.weight_snr_table(4)
    assert table in SPEC.read_text(encoding="utf-8"), f"regenerate with python -m refquant_statqat.tables:\n{table}"
