"""StatQAT: a statistical error model for uniform and float quantizers, and the quantizers it gives (arXiv 2605.17745).

The error of a quantizer is a clipping error plus a stepping error (:func:`quantization_error`,
exact for N(0,1) and the unit-variance Laplace density, sample averages otherwise, with the
``Δ²/12`` approximations beside). Setting its derivative to zero gives

* the **iterative** quantizer (:func:`iterative_scale`): a fixed point for the MSE-optimal scale
  of any samples — OCTAV's update for uniform grids, a corrected update for float formats —
  refined on the exact empirical MSE; and
* the **analytic** quantizer (:func:`analytic_scale`): ``κ(grid)·σ`` for Gaussian-like weights,
  κ tabulated for every grid (:mod:`.kappa`).

Registered through the ``refquant`` entry-point group (``statqat = "refquant_statqat"``):

================================ ====================== ========================================
name                             hook                   what
================================ ====================== ========================================
``statqat-analytic``             register_quantizers    weights: scale ``min(κ·σ, max|w|/Q)``
``statqat-iterative``            register_quantizers    activations: fixed point on calibration data
``statqat-analytic``             register_qat_quantizers weights in QAT (every step)
``statqat-iterative``            register_qat_quantizers activations in QAT (EMA of per-batch fixed points)
``minmax-float``                 register_qat_quantizers min-max baseline on float formats (weights)
``ema-minmax-float``             register_qat_quantizers min-max baseline on float formats (activations)
================================ ====================== ========================================

Grids are named ``"int2"``…``"int8"`` (narrow symmetric), ``"uint2"``…``"uint8"`` and the float
formats ``"float8_e4m3fn"``, ``"float8_e5m2"``, ``"float6_e2m3fn"``, ``"float6_e3m2fn"``,
``"float4_e2m1fn"``. The mathematics and the measured results: ``spec/strategies/statqat.md``.
"""

from refquant.hookspecs import hookimpl

from .analytic import OptimalScale, analytic_scale, exact_mse, optimal_scale
from .errormodel import QuantizationError, quantization_error, snr_vs_clip
from .grids import FLOAT_GRIDS, GRID_NAMES, INT_GRIDS, UINT_GRIDS, Grid, fake_quantize_float, grid, quantize_to_grid, uniform_grid
from .iterative import IterativeResult, best_zero_point, iterative_scale
from .qat import EMAMinMaxFloatQATActivations, MinMaxFloatQATWeights, StatQATActivations, StatQATWeights
from .strategies import AnalyticWeights, IterativeActivations

__all__ = [
    "AnalyticWeights", "IterativeActivations",
    "StatQATWeights", "StatQATActivations", "MinMaxFloatQATWeights", "EMAMinMaxFloatQATActivations",
    "quantization_error", "QuantizationError", "snr_vs_clip",
    "iterative_scale", "IterativeResult", "best_zero_point",
    "analytic_scale", "optimal_scale", "OptimalScale", "exact_mse",
    "grid", "Grid", "uniform_grid", "quantize_to_grid", "fake_quantize_float",
    "GRID_NAMES", "INT_GRIDS", "UINT_GRIDS", "FLOAT_GRIDS",
    "register_quantizers", "register_qat_quantizers",
]


@hookimpl
def register_quantizers(register):
    register(AnalyticWeights())
    register(IterativeActivations())


@hookimpl
def register_qat_quantizers(register):
    for quantizer in (StatQATWeights(), StatQATActivations(), MinMaxFloatQATWeights(),
                      EMAMinMaxFloatQATActivations()):
        register(quantizer)
