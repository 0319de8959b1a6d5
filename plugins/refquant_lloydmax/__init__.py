"""Lloyd-Max: data-free, MSE-optimal non-uniform weight quantization (arXiv 2412.07391).

Model a weight tensor (or each output channel) as Gaussian or Laplace, chosen by the smaller
Kolmogorov-Smirnov statistic (:func:`fit_prior`); take the N-level Lloyd-Max quantizer of that
unit-variance density (:func:`lloyd_max`), and scale it to the fit. Uniform quantizers with
min-max, ACIQ and MSE-optimal clipping are scored on the same densities, with the same exact
MSE, for comparison (:func:`minmax_uniform`, :func:`aciq_uniform`, :func:`optimal_uniform`).

The mathematics is in ``spec/strategies/lloydmax.md``.
"""
from .aciq import aciq_clip, aciq_model_mse, aciq_uniform
from .densities import Gaussian, Laplace, Samples
from .fit import PRIOR_CHOICES, PriorFit, fit_prior
from .solver import LloydMaxResult, lloyd_max, lloyd_rates, lloyd_step, quantizer_mse
from .uniform import UniformResult, clipped_uniform, minmax_uniform, optimal_uniform, uniform_levels

__all__ = [
    "Gaussian",
    "Laplace",
    "LloydMaxResult",
    "PRIOR_CHOICES",
    "PriorFit",
    "Samples",
    "UniformResult",
    "aciq_clip",
    "aciq_model_mse",
    "aciq_uniform",
    "clipped_uniform",
    "fit_prior",
    "lloyd_max",
    "lloyd_rates",
    "lloyd_step",
    "minmax_uniform",
    "optimal_uniform",
    "quantizer_mse",
    "uniform_levels",
]
