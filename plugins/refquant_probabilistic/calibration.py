"""Calibration of the widths α, β: how many surrogate σ the real outputs reach below and above μ.

For each calibration image ``n`` the observer sees the layer's float input ``x_n`` and float
output ``y_n``, computes the surrogate's ``μ_n, σ_n`` from ``x_n`` (the same estimator, the
same γ as at run time) and records the widths the image needed::

    α_n = (μ_n − min y_n) / σ_n          β_n = (max y_n − μ_n) / σ_n

per tensor, or per output channel (``μ_{n,o}``, ``σ_{n,o}``, the extremes of channel ``o``) in
per-channel mode. Images with ``σ_n = 0`` (an all-zero input) are left out. The widths are then
aggregated over the images (option ``aggregator``): ``max`` (no calibration image is clipped),
``mean``, or the ``percentile``-th percentile (NumPy's linear interpolation); a layer or
channel left without samples gets ``width``.

Option ``search="mse"`` refines the aggregated ``max`` widths: over the grid
``α ∈ {k/G · α_max}``, ``β ∈ {k/G · β_max}`` (``k = 1 … G``, ``G`` = option ``grid``) it picks
the pair minimising ``Σ_n ‖y_n − Q_n(y_n)‖²``, ``Q_n`` the exact quantize-dequantize with the
per-image qparams ``qparams_from_range`` of ``[μ_n − α σ_n, μ_n + β σ_n]`` through the fused
activation (per channel: each channel its own pair; ties go to the wider pair). With a fused
ReLU/ReLU6 the lower end is clamped at 0 whatever α is, so only β is searched. Only the
search keeps the calibration outputs in memory; the plain aggregators keep the widths.

``y`` here is the layer's *output* — after a fused ReLU/ReLU6, as the calibration pass
provides it. That is the tensor the qparams are for: with ReLU its maximum is the
pre-activation's (when positive) and its minimum is 0, which the range's clamp at 0 already
gives; with ReLU6 the maximum is capped at 6, as the range is.

The observer is also a plain min-max observer of its tensor: ``qparams()`` returns the
calibration ``[min, max]`` (the fallback of ``float_tensors="calibrated"``) and, as a side
effect, writes the calibrated ``alpha``, ``beta`` into the layer's ``LayerContext.state``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from refquant.numerics import QParams, dequantize, qparams_from_range, quantize
from refquant.strategies import LayerSpec

from .options import Options
from .surrogate import activation_range, layer_moments

__all__ = ["ProbabilisticObserver", "aggregate", "image_extremes", "mse_widths"]


def _finite(a: np.ndarray, what: str, spec: LayerSpec) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"layer {spec.layer!r}: calibration {what} must be real-valued, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
        raise ValueError(f"layer {spec.layer!r}: calibration {what} has "
                         f"{int(np.count_nonzero(~np.isfinite(a)))} non-finite value(s) (NaN or Inf)")
    return a


def image_extremes(y: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(min, max)`` of ``y`` (``[N]``), or per image and channel of axis 1 (``[N, C]``)."""
    n = y.shape[0]
    rows = y.reshape(n, y.shape[1], -1) if per_channel else y.reshape(n, 1, -1)
    lo, hi = rows.min(axis=2).astype(np.float64), rows.max(axis=2).astype(np.float64)
    return (lo, hi) if per_channel else (lo[:, 0], hi[:, 0])


def aggregate(samples: np.ndarray, options: Options) -> np.ndarray:
    """Widths ``[R]`` from per-image samples ``[N, R]`` (NaN = no sample); ``options.width`` where none."""
    samples = np.asarray(samples, np.float64)
    have = ~np.isnan(samples)
    filled = np.where(have, samples, 0.0)
    out = np.full(samples.shape[1], options.width)
    some = have.any(axis=0)
    if not some.any():
        return out
    cols = samples[:, some]
    with np.errstate(all="ignore"):
        if options.aggregator == "max":
            value = np.nanmax(cols, axis=0)
        elif options.aggregator == "mean":
            value = filled[:, some].sum(axis=0) / have[:, some].sum(axis=0)
        else:
            value = np.nanpercentile(cols, options.percentile, axis=0)
    out[some] = value
    return out


def _images_qparams(lo, hi, spec: LayerSpec) -> QParams:
    """qparams of each row of ``lo``/``hi`` (flattened), as one QParams along axis 0."""
    return qparams_from_range(np.ravel(lo), np.ravel(np.maximum(hi, lo)), spec.fmt, symmetric=spec.symmetric,
                              axis=0, name=spec.layer)


def _errors(rows, mu, sigma, alpha, beta, spec, fused) -> np.ndarray:
    """``Σ (y − Q(y))²`` per range row (column of ``mu``) for one (α, β) pair; rows ``[N, R, M]``."""
    lo, hi = activation_range(mu - alpha * sigma, mu + beta * sigma, fused, spec.layer)
    qp = _images_qparams(lo, hi, spec)
    flat = rows.reshape(-1, rows.shape[2])
    d = dequantize(quantize(flat, qp), qp).astype(np.float64) - flat
    return (d * d).sum(axis=1).reshape(mu.shape).sum(axis=0)


def mse_widths(kept: list, alpha_max, beta_max, spec: LayerSpec, options: Options,
               fused_activation: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The grid search of the module docstring; ``kept`` holds ``(rows [N, R, M], μ [N, R], σ [N, R])``."""
    rows = np.concatenate([k[0] for k in kept])
    mu = np.concatenate([k[1] for k in kept])
    sigma = np.concatenate([k[2] for k in kept])
    fractions = np.arange(1, options.grid + 1) / options.grid

    def candidates(w_max):
        return [np.where(w_max > 0, f * w_max, w_max) for f in fractions]

    alphas = [alpha_max] if fused_activation is not None else candidates(alpha_max)
    best = np.full(alpha_max.shape, np.inf)
    best_a, best_b = alpha_max.copy(), beta_max.copy()
    for a in alphas:
        for b in candidates(beta_max):
            err = _errors(rows, mu, sigma, a, b, spec, fused_activation)
            better = err <= best  # ties: the later (wider) candidate
            best = np.where(better, err, best)
            best_a, best_b = np.where(better, a, best_a), np.where(better, b, best_b)
    return best_a, best_b


class ProbabilisticObserver:
    """Min-max of the tensor, plus the per-image widths α_n, β_n when it observes a layer with its input."""

    def __init__(self, spec: LayerSpec, options: Options):
        self.spec, self.options = spec, options
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.context = None
        self.alphas: list = []
        self.betas: list = []
        self.kept: list = []

    def observe(self, y, *, context=None, x=None) -> None:
        spec = self.spec
        y = _finite(y, "output", spec)
        if spec.per_channel and y.ndim < 2:
            raise ValueError(f"layer {spec.layer!r}: per-channel activations need channels on axis 1, "
                             f"got shape {y.shape}")
        if y.size == 0:
            return
        self._update_range(y)
        if context is None or x is None:
            return
        x = _finite(x, "input", spec)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"layer {spec.layer!r}: calibration input has {x.shape[0]} images, output has {y.shape[0]}")
        self.context = context
        o = self.options
        mu, sigma = layer_moments(x, 0.0, 1.0, context.state, context.bias, context.attributes, gamma=o.gamma,
                                  weight_model=o.weight_model, per_channel=spec.per_channel, layer=spec.layer)
        y_lo, y_hi = image_extremes(y, spec.per_channel)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = sigma > 0
            self.alphas.append(np.where(ok, (mu - y_lo) / np.where(ok, sigma, 1.0), np.nan).reshape(len(y), -1))
            self.betas.append(np.where(ok, (y_hi - mu) / np.where(ok, sigma, 1.0), np.nan).reshape(len(y), -1))
        if o.search == "mse":
            rows = y.reshape(len(y), mu.shape[1] if spec.per_channel else 1, -1)
            self.kept.append((rows, mu.reshape(len(y), -1), sigma.reshape(len(y), -1)))

    def _update_range(self, y: np.ndarray) -> None:
        rows = np.moveaxis(y, 1, 0).reshape(y.shape[1], -1) if self.spec.per_channel else y.reshape(1, -1)
        if self.lo is not None and rows.shape[0] != self.lo.shape[0]:
            raise ValueError(f"layer {self.spec.layer!r}: batch has {rows.shape[0]} channels, "
                             f"earlier batches had {self.lo.shape[0]}")
        lo, hi = rows.min(axis=1), rows.max(axis=1)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def widths(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated ``(α, β)``: ``[1]`` per tensor, ``[C]`` per channel."""
        alpha = aggregate(np.concatenate(self.alphas), self.options)
        beta = aggregate(np.concatenate(self.betas), self.options)
        if self.options.search == "mse":
            top = replace(self.options, aggregator="max")
            a_max = aggregate(np.concatenate(self.alphas), top)
            b_max = aggregate(np.concatenate(self.betas), top)
            alpha, beta = mse_widths(self.kept, a_max, b_max, self.spec, self.options,
                                     self.context.fused_activation)
        return alpha, beta

    def qparams(self) -> QParams:
        spec = self.spec
        if self.lo is None:
            raise ValueError(f"layer {spec.layer!r}: strategy 'probabilistic' has observed no values; "
                             f"run calibration batches through observe() before qparams()")
        if self.context is not None and self.alphas:
            alpha, beta = self.widths()
            self.context.state.update(alpha=alpha, beta=beta, calibrated=True,
                                      calibration_images=int(sum(len(a) for a in self.alphas)),
                                      calibration_gamma=self.options.gamma)
        lo, hi = self.lo.astype(np.float64), self.hi.astype(np.float64)
        if spec.per_channel:
            return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=1, name=spec.layer)
        return qparams_from_range(lo[0], hi[0], spec.fmt, symmetric=spec.symmetric, name=spec.layer)
