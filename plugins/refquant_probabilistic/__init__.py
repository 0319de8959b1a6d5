"""Probabilistic activation quantization (arXiv 2505.10689): output ranges estimated before the layer runs.

Registered through the ``refquant`` entry-point group (``probabilistic = "refquant_probabilistic"``),
exactly as a third-party plugin is. One strategy, ``probabilistic`` (kind ``activations``,
timing ``before``): from the layer's quantized input and cached weight statistics, a surrogate
gives the mean and variance of each image's pre-activations; the range
``[μ − α σ, μ + β σ]`` (α, β calibrated) becomes the output qparams, and the layer runs with
the fused kernel — the memory of static quantization, the input-adaptivity of dynamic.

Modules: :mod:`.weightstats` (offline weight statistics), :mod:`.patches` (patch moments of
the input), :mod:`.surrogate` (the moments of the pre-activations), :mod:`.calibration` (α,
β), :mod:`.strategy`, :mod:`.diagnostics` (predicted vs actual ranges, coverage, estimator
time), :mod:`.memory` (traced bytes per step and per replayed layer), :mod:`.report` (the
command ``refquant probabilistic-report``), :mod:`.options`, :mod:`.plans`. The math:
``spec/strategies/probabilistic.md``.
"""

from refquant.hookspecs import hookimpl

from .report import add_report_command
from .options import Options, read_options
from .plans import probabilistic_plan
from .strategy import ProbabilisticActivations

__all__ = ["ProbabilisticActivations", "Options", "read_options", "probabilistic_plan", "register_quantizers",
           "register_commands"]


@hookimpl
def register_quantizers(register):
    register(ProbabilisticActivations())


@hookimpl
def register_commands(cli):
    add_report_command(cli)
