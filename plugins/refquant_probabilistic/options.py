"""Options of the ``probabilistic`` strategy, read from ``LayerSpec.options`` and validated.

=============== ============= ================================================================
option          default       meaning
=============== ============= ================================================================
gamma           1             patch-sampling stride γ: every γ-th output position in each
                              spatial direction (1 = every patch, the exact patch moments)
aggregator      ``"max"``     how per-image widths become α, β: ``max``, ``mean``,
                              ``percentile``
percentile      90            the percentile of the ``percentile`` aggregator (0 < p ≤ 100)
search          ``"none"``    ``"mse"``: search α, β minimising the layer's output MSE on the
                              calibration images (within ``[0, aggregated max]``)
grid            24            candidates per width of the MSE search (``k/grid``·max, k=1..grid)
width           4.0           α = β of a layer that was never calibrated
weight_model    per-channel   ``per-channel``: each output channel's own (m_o, v_o);
                              ``per-tensor``: one (m, v) for the whole weight
float_tensors   ``"range"``   tensors without a patch surrogate (graph input, Add, pools):
                              ``range`` = the tensor's own range, ``calibrated`` = the
                              calibration min-max
=============== ============= ================================================================

Every error is a ``ValueError`` naming the layer and the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from refquant.strategies import LayerSpec

__all__ = ["AGGREGATORS", "Options", "read_options"]

AGGREGATORS = ("max", "mean", "percentile")
_SEARCHES = ("none", "mse")
_WEIGHT_MODELS = ("per-channel", "per-tensor")
_FLOAT_TENSORS = ("range", "calibrated")
_KNOWN = ("gamma", "aggregator", "percentile", "search", "grid", "width", "weight_model",
          "float_tensors")


@dataclass(frozen=True)
class Options:
    gamma: int = 1
    aggregator: str = "max"
    percentile: float = 90.0
    search: str = "none"
    grid: int = 24
    width: float = 4.0
    weight_model: str = "per-channel"
    float_tensors: str = "range"


def _number(spec: LayerSpec, key: str, default, kind):
    value = spec.option(key, default)
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"layer {spec.layer!r}: option {key!r} must be {'an integer' if kind is int else 'a number'}, "
                         f"got {value!r}") from None
    return number


def _choice(spec: LayerSpec, key: str, default: str, choices: tuple) -> str:
    value = spec.option(key, default)
    if value not in choices:
        raise ValueError(f"layer {spec.layer!r}: option {key!r} must be one of {choices}, got {value!r}")
    return value


def read_options(spec: LayerSpec) -> Options:
    """The validated :class:`Options` of ``spec`` (unknown option names are an error).

    Cached per spec (a layer reads its options at every run); a spec whose options cannot be
    hashed is read afresh.
    """
    try:
        return _read_cached(spec)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _read(spec)


@lru_cache(maxsize=1024)
def _read_cached(spec: LayerSpec) -> Options:
    return _read(spec)


def _read(spec: LayerSpec) -> Options:
    unknown = sorted(k for k, _ in spec.options if k not in _KNOWN)
    if unknown:
        raise ValueError(f"layer {spec.layer!r}: unknown option(s) {unknown} for strategy 'probabilistic'; "
                         f"known: {list(_KNOWN)}")
    d = Options()
    gamma = _number(spec, "gamma", d.gamma, int)
    if not 1 <= gamma <= 1024:
        raise ValueError(f"layer {spec.layer!r}: option 'gamma' must be in 1..1024, got {gamma}")
    percentile = _number(spec, "percentile", d.percentile, float)
    if not 0 < percentile <= 100:
        raise ValueError(f"layer {spec.layer!r}: option 'percentile' must be in (0, 100], got {percentile}")
    grid = _number(spec, "grid", d.grid, int)
    if not 1 <= grid <= 1000:
        raise ValueError(f"layer {spec.layer!r}: option 'grid' must be in 1..1000, got {grid}")
    width = _number(spec, "width", d.width, float)
    if not 0 <= width < 1e6:
        raise ValueError(f"layer {spec.layer!r}: option 'width' must be a finite number >= 0, got {width}")
    return Options(gamma=gamma,
                   aggregator=_choice(spec, "aggregator", d.aggregator, AGGREGATORS),
                   percentile=percentile,
                   search=_choice(spec, "search", d.search, _SEARCHES),
                   grid=grid, width=width,
                   weight_model=_choice(spec, "weight_model", d.weight_model, _WEIGHT_MODELS),
                   float_tensors=_choice(spec, "float_tensors", d.float_tensors, _FLOAT_TENSORS))
