"""Plans that carry the ``probabilistic`` strategy's options (γ, aggregator, …) to every layer.

A plan string has no place for strategy options, so :func:`probabilistic_plan` builds the
:class:`~refquant.plan.Plan` object directly, with an activation :class:`OptionsTensorPlan`
whose ``spec()`` adds the options to every ``LayerSpec`` it makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from refquant.plan import Plan, TensorPlan
from refquant.strategies import LayerSpec

from .options import _KNOWN

__all__ = ["OptionsTensorPlan", "probabilistic_plan"]


@dataclass(frozen=True)
class OptionsTensorPlan(TensorPlan):
    """A :class:`TensorPlan` whose specs carry ``options`` (a tuple of ``(key, value)`` pairs)."""

    options: tuple = ()

    def spec(self, layer: str, op: str, options: tuple = ()) -> LayerSpec:
        return LayerSpec(layer, op, self.bits, self.signed, self.granularity, self.symmetric,
                         tuple(self.options) + tuple(options))


def probabilistic_plan(*, weights: str = "minmax", weight_bits: int = 8, weight_granularity: str = "per-channel",
                       activations: str = "probabilistic", bits: int = 8, granularity: str = "per-tensor",
                       **options) -> Plan:
    """Weights ``weights:weight_bits:weight_granularity`` (signed symmetric), activations
    ``activations:bits:granularity`` (unsigned asymmetric, as ``refquant compare`` uses) with
    ``options`` given to every activation spec (only for ``probabilistic``)."""
    unknown = sorted(k for k in options if k not in _KNOWN)
    if unknown:
        raise ValueError(f"probabilistic_plan: unknown option(s) {unknown}; known: {list(_KNOWN)}")
    opts = tuple(sorted(options.items())) if activations == "probabilistic" else ()
    return Plan(TensorPlan(weights, weight_bits, weight_granularity, True, True),
                OptionsTensorPlan(activations, bits, granularity, False, False, opts))
