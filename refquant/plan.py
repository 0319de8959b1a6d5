"""Quantization plans: which strategy, bits, signedness and granularity for each layer.

A plan has defaults for weights and activations and overrides by layer-name pattern
(``fnmatch`` style, the last matching override wins). From a string::

    weights=minmax:8:per-channel activations=static-mse:8 fc*.activations=dynamic:8

Each value is ``STRATEGY[:BITS][:GRANULARITY][:signed|:unsigned][:sym|:asym][:KEY=VALUE...]``
where the parts after the strategy may come in any order; ``KEY=VALUE`` parts are the strategy's
own options (``LayerSpec.option(key)``; values stay strings, e.g. ``probabilistic:8:gamma=4``). Defaults: 8 bits, per-tensor; weights signed symmetric
(narrow range ``[-127, 127]``), activations unsigned asymmetric (uint8).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace

from .strategies import GRANULARITIES, LayerSpec

__all__ = ["TensorPlan", "Plan", "parse_plan"]


@dataclass(frozen=True)
class TensorPlan:
    """Strategy and grid for the weights or the activations of a layer."""

    strategy: str
    bits: int = 8
    granularity: str = "per-tensor"
    signed: bool = True
    symmetric: bool = True
    options: tuple = ()

    def spec(self, layer: str, op: str, options: tuple = ()) -> LayerSpec:
        return LayerSpec(layer, op, self.bits, self.signed, self.granularity, self.symmetric,
                         tuple(self.options) + tuple(options))

    def __str__(self) -> str:
        parts = [self.strategy, str(self.bits), self.granularity]
        parts.append("signed" if self.signed else "unsigned")
        if not self.symmetric:
            parts.append("asym")
        parts += [f"{k}={v}" for k, v in self.options]
        return ":".join(parts)


def parse_tensor_plan(text: str, *, kind: str) -> TensorPlan:
    """Parse ``STRATEGY[:BITS][:GRANULARITY][:signed|unsigned][:sym|asym]``."""
    parts = [p.strip() for p in text.split(":")]
    if not parts[0]:
        raise ValueError(f"plan: {kind} entry {text!r} has no strategy name")
    weights = kind == "weights"
    tp = {"strategy": parts[0], "bits": 8, "granularity": "per-tensor",
          "signed": weights, "symmetric": weights}
    options = []
    for p in parts[1:]:
        if "=" in p:
            key, _, value = p.partition("=")
            if not key or not value:
                raise ValueError(f"plan: option {p!r} in {kind} entry {text!r} must be KEY=VALUE")
            options.append((key, value))
        elif p.isdigit():
            tp["bits"] = int(p)
        elif p in GRANULARITIES:
            tp["granularity"] = p
        elif p in ("signed", "unsigned"):
            tp["signed"] = p == "signed"
        elif p in ("sym", "asym"):
            tp["symmetric"] = p == "sym"
        else:
            raise ValueError(f"plan: cannot read {p!r} in {kind} entry {text!r}: expected bits, "
                             f"per-tensor/per-channel, signed/unsigned or sym/asym")
    if not 2 <= tp["bits"] <= 8:
        raise ValueError(f"plan: {kind} bits must be in 2..8, got {tp['bits']} in {text!r}")
    return TensorPlan(**tp, options=tuple(options))


@dataclass(frozen=True)
class Plan:
    """Defaults plus ordered ``(pattern, kind, TensorPlan)`` overrides."""

    weights: TensorPlan = TensorPlan("minmax")
    activations: TensorPlan = TensorPlan("static-minmax", signed=False, symmetric=False)
    overrides: tuple = field(default_factory=tuple)

    def for_layer(self, layer: str) -> tuple[TensorPlan, TensorPlan]:
        """``(weights, activations)`` for the layer named ``layer``."""
        w, a = self.weights, self.activations
        for pattern, kind, tp in self.overrides:
            if fnmatch.fnmatchcase(layer, pattern):
                if kind == "weights":
                    w = tp
                else:
                    a = tp
        return w, a

    def with_override(self, pattern: str, kind: str, tp: TensorPlan) -> "Plan":
        return replace(self, overrides=self.overrides + ((pattern, kind, tp),))

    def __str__(self) -> str:
        items = [f"weights={self.weights}", f"activations={self.activations}"]
        items += [f"{p}.{k}={tp}" for p, k, tp in self.overrides]
        return " ".join(items)


def parse_plan(text: str) -> Plan:
    """Read a plan string (see the module docstring). Unknown keys raise ``ValueError``."""
    plan = Plan()
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"plan: expected KEY=VALUE, got {item!r}")
        pattern, dot, kind = key.rpartition(".")
        if kind not in ("weights", "activations"):
            raise ValueError(f"plan: key {key!r} must end in 'weights' or 'activations'")
        tp = parse_tensor_plan(value, kind=kind)
        if not dot:
            plan = replace(plan, **{kind: tp})
        else:
            plan = plan.with_override(pattern, kind, tp)
    return plan
