"""Static quantization: weight ranges by min-max or MSE, activation ranges fixed offline.

Registered through the ``refquant`` entry-point group (``static = "refquant_static"``), exactly
as a third-party plugin is. Strategies:

========================= =========== ===================================================
name                      kind        range rule
========================= =========== ===================================================
``minmax``                weights     ``[min, max]`` per tensor or output channel
``mse``                   weights     clip minimising ``‖w − Q(w)‖²`` (dense grid)
``static-minmax``         activations observed ``[min, max]``
``static-percentile``     activations clip ``(100 − p)%`` of ``|y|`` (or of each tail)
``static-mse``            activations range minimising the histogram's quantization MSE
``static-entropy``        activations TensorRT's KL-divergence threshold
========================= =========== ===================================================

The math and every numeric decision: ``spec/strategies/static.md``.
"""

from refquant.hookspecs import hookimpl

from .activations import StaticEntropy, StaticMinMax, StaticMSE, StaticPercentile
from .weights import MinMaxWeights, MSEWeights

__all__ = ["MinMaxWeights", "MSEWeights", "StaticMinMax", "StaticPercentile", "StaticMSE",
           "StaticEntropy", "register_quantizers"]


@hookimpl
def register_quantizers(register):
    for strategy in (MinMaxWeights(), MSEWeights(), StaticMinMax(), StaticPercentile(),
                     StaticMSE(), StaticEntropy()):
        register(strategy)
