"""Strategy options read from ``LayerSpec.options``, validated with errors naming the layer.

=========== ======================= =========================================================
option      default                 meaning
=========== ======================= =========================================================
grid        100                     candidates per side of the MSE search (``α = k / grid``)
percentile  99.99                   static-percentile: the share of values kept, in percent
tails       ``"abs"``               ``"abs"``: one threshold on ``|y|``; ``"both"``: one per tail
bins        2048                    histogram bins per sign (a power of two, at least 256)
max_satu…   0.9                     ``max_saturation``: the largest share of non-zero
                                    calibration values a chosen range may saturate
                                    (:func:`refquant.strategies.check_saturation`); 1 disables;
                                    static-entropy searches only thresholds within it
=========== ======================= =========================================================
"""

from __future__ import annotations

from refquant.strategies import MAX_SATURATED_FRACTION, LayerSpec

__all__ = ["grid_option", "percentile_option", "tails_option", "bins_option", "max_saturation_option"]


def _int_option(spec: LayerSpec, key: str, default: int) -> int:
    value = spec.option(key, default)
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"layer {spec.layer!r}: option {key!r} must be an integer, got {value!r}") from None
    return number


def grid_option(spec: LayerSpec) -> int:
    grid = _int_option(spec, "grid", 100)
    if not 1 <= grid <= 10_000:
        raise ValueError(f"layer {spec.layer!r}: option 'grid' must be in 1..10000, got {grid}")
    return grid


def percentile_option(spec: LayerSpec) -> float:
    value = spec.option("percentile", 99.99)
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"layer {spec.layer!r}: option 'percentile' must be a number, "
                         f"got {value!r}") from None
    if not 0 < p <= 100:
        raise ValueError(f"layer {spec.layer!r}: option 'percentile' must be in (0, 100], got {value!r}")
    return p


def tails_option(spec: LayerSpec) -> str:
    tails = spec.option("tails", "abs")
    if tails not in ("abs", "both"):
        raise ValueError(f"layer {spec.layer!r}: option 'tails' must be 'abs' or 'both', got {tails!r}")
    return tails


def bins_option(spec: LayerSpec) -> int:
    bins = _int_option(spec, "bins", 2048)
    if bins < 256 or bins & (bins - 1):
        raise ValueError(f"layer {spec.layer!r}: option 'bins' must be a power of two >= 256, got {bins}")
    return bins


def max_saturation_option(spec: LayerSpec) -> float:
    value = spec.option("max_saturation", MAX_SATURATED_FRACTION)
    try:
        limit = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"layer {spec.layer!r}: option 'max_saturation' must be a number, got {value!r}") from None
    if not 0 < limit <= 1:
        raise ValueError(f"layer {spec.layer!r}: option 'max_saturation' must be in (0, 1], got {value!r}")
    return limit
