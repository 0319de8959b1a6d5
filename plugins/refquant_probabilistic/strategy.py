"""The ``probabilistic`` activation strategy: each input's output qparams, estimated before the layer runs."""

from __future__ import annotations

import numpy as np

from refquant.numerics import QParams, qparams_from_range, tensor_range
from refquant.strategies import LayerContext, LayerSpec

from .calibration import ProbabilisticObserver
from .estimate import estimated_qparams
from .options import _KNOWN, read_options
from .surrogate import activation_range, layer_moments
from .weightstats import mixture_statistics, weight_statistics

__all__ = ["ProbabilisticActivations"]


class ProbabilisticActivations:
    """Activations by a probabilistic surrogate: qparams from the input's patch moments, before the layer.

    ``prepare`` (offline, once per layer) stores the weight statistics in ``context.state``
    (:mod:`refquant_probabilistic.weightstats`): ``m_o, v_o`` per output channel and ``m, v``
    per tensor. Calibration (:mod:`refquant_probabilistic.calibration`) stores the widths
    ``α, β`` there too.

    ``qparams_before(x_q, x_qparams, context, spec)``, for each image ``n`` of the batch:

    1. patch sums of the centred input integers over every γ-th output position
       (:mod:`refquant_probabilistic.patches`; option ``gamma``);
    2. the surrogate moments ``μ_n, σ_n`` per tensor, or ``μ_{n,o}, σ_{n,o}`` per channel
       (:mod:`refquant_probabilistic.surrogate`);
    3. the range ``[μ_n − α σ_n, μ_n + β σ_n]`` through the fused activation (ReLU: clamped at
       0; ReLU6: to ``[0, 6]``);

    then the batch's range is the union ``[min_n lo_n, max_n hi_n]`` (so the calibrated widths,
    which are per image, mean the same at any batch size — as dynamic quantization's range of
    a batch is the union of its images' ranges), and ``qparams_from_range(lo, hi, spec.fmt,
    symmetric=spec.symmetric)``, per tensor or per channel (axis 1). The layer then runs with
    the fused kernel: no int32 or float32 output buffer ever exists.

    ``qparams_for_float`` (graph input, Add, pools — tensors the executor already holds in
    float32, with no patch surrogate): option ``float_tensors="range"`` (default) the tensor's
    own ``[min, max]``, as dynamic quantization does; ``"calibrated"`` the calibration min-max.

    The math, the calibration rule, the memory argument and where it breaks:
    ``spec/strategies/probabilistic.md``.
    """

    name = "probabilistic"
    options = _KNOWN
    kind = "activations"
    timing = "before"
    doc = __doc__

    def prepare(self, context: LayerContext, spec: LayerSpec) -> None:
        options = read_options(spec)
        context.cache.clear()  # plans of the compiled estimate (estimate.py) were made for the old statistics
        stats = weight_statistics(context.weight, spec.layer)
        channels = context.weight.values.shape[0]
        if context.bias is not None and np.shape(context.bias) != (channels,):
            raise ValueError(f"layer {spec.layer!r}: bias must have {channels} entries (one per output "
                             f"channel), got shape {np.shape(context.bias)}")
        rows = channels if spec.per_channel else 1
        mean, var = stats["weight_mean"], stats["weight_var"]
        if options.weight_model == "per-tensor":
            mean, var = np.full(channels, stats["weight_mean_tensor"]), np.full(channels, stats["weight_var_tensor"])
        groups = int(context.attributes.get("group", 1)) if context.weight.values.ndim == 4 else 1
        if groups < 1 or channels % groups:
            raise ValueError(f"layer {spec.layer!r}: group={groups} must divide the {channels} output channels")
        context.state.update(stats, **mixture_statistics(mean, var, context.bias, groups), weight_shape=np.asarray(context.weight.values.shape, np.int64),
                             alpha=np.full(rows, options.width), beta=np.full(rows, options.width),
                             calibrated=False, calibration_images=0, calibration_gamma=options.gamma)

    def image_ranges(self, x_q: np.ndarray, x_qparams: QParams, context: LayerContext,
                     spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        """Each image's predicted output range ``(lo, hi)``: ``[N]`` per tensor, ``[N, C]`` per channel.

        ``lo = min(clamp(μ − α σ), 0)``, ``hi = max(clamp(μ + β σ), 0)`` with ``clamp`` the fused
        activation's (ReLU: at 0 below; ReLU6: into ``[0, 6]``).
        """
        x_q = np.asarray(x_q)
        if x_q.dtype.kind not in "iu":
            raise TypeError(f"layer {spec.layer!r}: the probabilistic estimate needs the quantized "
                            f"(integer) input, got dtype {x_q.dtype}")
        if not isinstance(x_qparams, QParams) or not x_qparams.per_tensor:
            raise ValueError(f"layer {spec.layer!r}: the input's qparams must be per tensor, got {x_qparams!r}")
        if x_q.ndim < 2 or x_q.shape[0] == 0:
            raise ValueError(f"layer {spec.layer!r}: input must be a non-empty batch [N, ...], got shape {x_q.shape}")
        options = read_options(spec)
        state = context.state
        mu, sigma = layer_moments(x_q, int(x_qparams.zero_point), x_qparams.scale, state, context.bias,
                                  context.attributes, gamma=options.gamma, weight_model=options.weight_model,
                                  per_channel=spec.per_channel, layer=spec.layer)
        alpha, beta = (np.asarray(state[k], np.float64) for k in ("alpha", "beta"))
        if not spec.per_channel:
            alpha, beta = alpha[0], beta[0]
        lo, hi = activation_range(mu - alpha * sigma, mu + beta * sigma, context.fused_activation, spec.layer)
        # the grid's range always holds 0 (qparams_from_range's rule); applied here so these are
        # the ranges that are quantized, and hi ≥ lo even for widths whose sum is negative
        lo = np.minimum(lo, 0.0)
        return lo, np.maximum(hi, 0.0)

    def qparams_before(self, x_q: np.ndarray, x_qparams: QParams, context: LayerContext,
                       spec: LayerSpec) -> QParams:
        """The batch's output qparams: :func:`~.estimate.estimated_qparams` (one Numba call after
        the patch sums), bit-identical to :meth:`qparams_before_reference`, which decides
        whenever the compiled path declines (and raises every error)."""
        x_q = np.asarray(x_q)
        if isinstance(x_qparams, QParams) and x_qparams.per_tensor and x_q.ndim >= 2 and x_q.shape[0] > 0:
            qparams = estimated_qparams(x_q, x_qparams, context, spec)
            if qparams is not None:
                return qparams
        return self.qparams_before_reference(x_q, x_qparams, context, spec)

    def qparams_before_reference(self, x_q: np.ndarray, x_qparams: QParams, context: LayerContext,
                                 spec: LayerSpec) -> QParams:
        """:meth:`image_ranges`, their union over the batch, then ``qparams_from_range`` — in NumPy."""
        lo, hi = self.image_ranges(x_q, x_qparams, context, spec)
        lo, hi = lo.min(axis=0), hi.max(axis=0)
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric,
                                  axis=1 if spec.per_channel else None, name=spec.layer)

    def make_observer(self, spec: LayerSpec) -> ProbabilisticObserver:
        return ProbabilisticObserver(spec, read_options(spec))

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        options = read_options(spec)
        if options.float_tensors == "calibrated":
            if observed is None:
                raise ValueError(f"layer {spec.layer!r}: option float_tensors='calibrated' needs calibration "
                                 f"data; this tensor was never calibrated")
            return observed
        y = np.asarray(y)
        if y.dtype.kind not in "fiu":
            raise TypeError(f"layer {spec.layer!r}: expected a real-valued tensor, got dtype {y.dtype}")
        if y.size == 0:
            raise ValueError(f"layer {spec.layer!r}: the tensor is empty (shape {y.shape}); no range to quantize")
        if spec.per_channel and y.ndim < 2:
            raise ValueError(f"layer {spec.layer!r}: per-channel activations need channels on axis 1, "
                             f"got shape {y.shape}")
        lo, hi = tensor_range(y.astype(np.float32), axis=1 if spec.per_channel else None,
                              name=f"layer {spec.layer!r}")
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric,
                                  axis=1 if spec.per_channel else None, name=spec.layer)
