"""Lloyd-Max: data-free, MSE-optimal non-uniform weight quantization (arXiv 2412.07391).

Model a weight tensor (or each output channel) as Gaussian or Laplace, chosen by the smaller
Kolmogorov-Smirnov statistic (:func:`fit_prior`); take the N-level Lloyd-Max quantizer of that
unit-variance density (:func:`lloyd_max`), and scale it to the fit; by default, refine that
codebook by Lloyd's iteration on the weights themselves (``refine="weights"``: never worse
than the prior's codebook, the empirical one, or min-max). Uniform quantizers with
min-max, ACIQ and MSE-optimal clipping are scored on the same densities, with the same exact
MSE, for comparison (:func:`minmax_uniform`, :func:`aciq_uniform`, :func:`optimal_uniform`).

The weight strategy ``lloydmax`` (:class:`LloydMaxWeights`, registered through the ``refquant``
entry-point group as ``lloydmax = "refquant_lloydmax"``) writes each codebook on the int8 grid
so that the ordinary int8 kernels run it (:mod:`.codebook`, :mod:`.strategy`);
:mod:`.report` compares it layer by layer with min-max and ACIQ uniform quantizers, also as
the command ``refquant lloydmax-report``.

The mathematics is in ``spec/strategies/lloydmax.md``.
"""
from refquant.hookspecs import hookimpl

from .aciq import aciq_clip, aciq_model_mse, aciq_uniform
from .codebook import INT8_NARROW, REFINE_CHOICES, CodebookDesign, design_codebook
from .densities import Gaussian, Laplace, Samples
from .fit import PRIOR_CHOICES, PriorFit, fit_prior
from .report import add_report_command
from .solver import LloydMaxResult, lloyd_max, lloyd_rates, lloyd_step, quantizer_mse
from .strategy import LloydMaxWeights, codebook_bits_per_weight, indices_of
from .uniform import UniformResult, clipped_uniform, minmax_uniform, optimal_uniform, uniform_levels

__all__ = [
    "CodebookDesign",
    "Gaussian",
    "INT8_NARROW",
    "Laplace",
    "LloydMaxResult",
    "LloydMaxWeights",
    "PRIOR_CHOICES",
    "PriorFit",
    "REFINE_CHOICES",
    "Samples",
    "UniformResult",
    "aciq_clip",
    "aciq_model_mse",
    "aciq_uniform",
    "clipped_uniform",
    "codebook_bits_per_weight",
    "design_codebook",
    "fit_prior",
    "indices_of",
    "lloyd_max",
    "lloyd_rates",
    "lloyd_step",
    "minmax_uniform",
    "optimal_uniform",
    "quantizer_mse",
    "uniform_levels",
]


@hookimpl
def register_quantizers(register):
    register(LloydMaxWeights())


@hookimpl
def register_commands(cli):
    add_report_command(cli)
