"""Static activation strategies: qparams fixed offline from calibration data.

``static-minmax``, ``static-percentile``, ``static-mse``, ``static-entropy`` differ only in the
range rule applied to what their observer collected in one pass over the calibration batches
(:mod:`.observers`); the range then goes to ``qparams_from_range`` on the plan's grid —
asymmetric unless the plan says symmetric, per tensor or per channel (axis 1). At run time
the calibrated qparams are used as they are: ``qparams_for_float`` returns them, and a tensor
that was never calibrated is an error naming the layer.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from refquant.numerics import QParams
from refquant.strategies import LayerSpec

from .entropy import entropy_range
from .mse import mse_range
from .observers import HistogramObserver, MinMaxObserver
from .options import bins_option, grid_option, max_saturation_option, percentile_option, tails_option
from .percentile import percentile_range

__all__ = ["StaticMinMax", "StaticPercentile", "StaticMSE", "StaticEntropy"]


class _Offline:
    kind = "activations"
    timing = "offline"

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        """The calibrated qparams; ``ValueError`` naming the layer if there are none."""
        if observed is None:
            raise ValueError(f"layer {spec.layer!r}: activation strategy {self.name!r} fixes qparams "
                             f"offline, but this tensor was never calibrated; run calibration data "
                             f"through the model first")
        if not isinstance(observed, QParams):
            raise TypeError(f"layer {spec.layer!r}: calibrated qparams must be QParams, "
                            f"got {type(observed).__name__}")
        return observed


class StaticMinMax(_Offline):
    """Activations by min-max: the range is the observed ``[min, max]`` over all calibration data."""

    name = "static-minmax"
    options = ()
    doc = __doc__

    def make_observer(self, spec: LayerSpec) -> MinMaxObserver:
        return MinMaxObserver(spec, self.name)


class StaticPercentile(_Offline):
    """Activations by percentile: clip the top ``(100 - p)%`` (option ``percentile``, default 99.99).

    Option ``tails``: ``"abs"`` (default, as TensorRT) one threshold on ``|y|``; ``"both"`` a
    threshold per tail, each clipping half the share (as onnxruntime's asymmetric mode).
    Thresholds are bin upper edges of a 2048-bin-per-sign histogram (option ``bins``); see
    :mod:`refquant_static.percentile` for the exact guarantee.
    """

    name = "static-percentile"
    options = ("percentile", "tails", "bins", "max_saturation")
    doc = __doc__

    def make_observer(self, spec: LayerSpec) -> HistogramObserver:
        rule = partial(percentile_range, percentile=percentile_option(spec), tails=tails_option(spec))
        return HistogramObserver(spec, self.name, rule, bins_option(spec))


class StaticMSE(_Offline):
    """Activations by MSE: the range minimising the quantization MSE of the observed histogram.

    Grid over clip fractions ``k/G`` (option ``grid``, default 100) of the observed range; for an
    asymmetric grid on data of both signs, pairs of fractions for the two ends, coarse to fine.
    See :mod:`refquant_static.mse`.
    """

    name = "static-mse"
    options = ("grid", "bins", "max_saturation")
    doc = __doc__

    def make_observer(self, spec: LayerSpec) -> HistogramObserver:
        rule = partial(mse_range, fmt=spec.fmt, symmetric=spec.symmetric, grid=grid_option(spec),
                       name=spec.layer)
        return HistogramObserver(spec, self.name, rule, bins_option(spec))


class StaticEntropy(_Offline):
    """Activations by entropy: TensorRT's KL-divergence threshold on a 2048-bin histogram of ``|y|``.

    Option ``tails="both"`` runs the search on each tail separately. Only thresholds that
    saturate at most ``max_saturation`` (default 0.9) of the non-zero values are searched. See
    :mod:`refquant_static.entropy` for the algorithm and where it differs from TensorRT and
    onnxruntime.
    """

    name = "static-entropy"
    options = ("tails", "bins", "max_saturation")
    doc = __doc__

    def make_observer(self, spec: LayerSpec) -> HistogramObserver:
        rule = partial(entropy_range, bits=spec.bits, symmetric=spec.symmetric, tails=tails_option(spec),
                       max_saturation=max_saturation_option(spec))
        return HistogramObserver(spec, self.name, rule, bins_option(spec))
