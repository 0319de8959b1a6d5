"""Dynamic quantization: each input's output qparams from the layer's own int32 accumulators.

Registered through the ``refquant`` entry-point group (``dynamic = "refquant_dynamic"``), exactly
as a third-party plugin is. One strategy, ``dynamic`` (kind ``activations``, timing ``after``):
see :class:`refquant_dynamic.strategy.DynamicActivations` and ``spec/strategies/dynamic.md``.
"""

from refquant.hookspecs import hookimpl

from .strategy import DynamicActivations

__all__ = ["DynamicActivations", "register_quantizers"]


@hookimpl
def register_quantizers(register):
    register(DynamicActivations())
