"""Weight strategies ``minmax`` and ``mse``: uniform qparams per tensor or per output channel.

The weight arrives output-channel first (OIHW for Conv, ``[N, K]`` for Gemm/MatMul), so
per-channel qparams are along axis 0. Both strategies pick a range ``[lo, hi]`` and hand it to
:func:`refquant.numerics.qparams_from_range` on the plan's grid (``spec.fmt``):

* symmetric (the default for weights): ``scale = max(|lo|, |hi|) / (2^(b-1) - 1)`` on the
  narrow signed grid ``[-127, 127]`` at 8 bits, zero point 0;
* asymmetric: ``scale = (hi' - lo') / (qmax - qmin)`` with ``lo' = min(lo, 0)``,
  ``hi' = max(hi, 0)``, zero point ``round_half_even(qmin - lo'/scale)``.

A range of ``[0, 0]`` (an all-zero tensor or channel) gets ``scale = 1`` (qparams_from_range's
degenerate rule), so its values quantize to the zero point exactly.

Size accounting: ``bits_per_weight = bits + groups · (32 + bits) / numel`` — every group (the
tensor, or each output channel) stores a float32 scale and a zero point in the weight's own
integer type, as an ONNX ``QuantizeLinear`` initializer pair does, spread over the weights.
"""

from __future__ import annotations

import numpy as np

from refquant.numerics import qparams_from_range, quantize
from refquant.strategies import LayerSpec, QuantizedWeight, weight_groups

from .clipsearch import best_candidate, clip_fractions, require_normal_magnitudes, squared_errors
from .options import grid_option

__all__ = ["MinMaxWeights", "MSEWeights", "weight_rows", "mse_weight_range", "bits_per_weight"]


def weight_rows(w, spec: LayerSpec) -> np.ndarray:
    """The weight as float32 rows ``[groups, n]`` (:func:`refquant.strategies.weight_groups`)."""
    return weight_groups(w, per_channel=spec.per_channel, layer=spec.layer)


def bits_per_weight(numel: int, groups: int, bits: int) -> float:
    """``bits + groups · (32 + bits) / numel``: values plus a float32 scale and a zero point per group."""
    return bits + groups * (32 + bits) / numel


def _quantized(w, lo, hi, spec: LayerSpec) -> QuantizedWeight:
    w32 = np.asarray(w, dtype=np.float32)
    name = f"{spec.layer}.weight"
    if spec.per_channel:
        qp = qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=0, name=name)
    else:
        qp = qparams_from_range(lo[0], hi[0], spec.fmt, symmetric=spec.symmetric, name=name)
    return QuantizedWeight(values=quantize(w32, qp), qparams=qp,
                           bits_per_weight=bits_per_weight(w32.size, qp.scale.size, spec.bits))


def mse_weight_range(rows: np.ndarray, spec: LayerSpec, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the range ``[α·min, α·max]``, ``α = k/grid``, minimising ``‖w − Q(w)‖²``.

    A row whose largest magnitude is subnormal in float32 (a dead channel of a real network:
    PP-OCRv4's detector has one at 3e-39) keeps its min-max range (``α = 1``): the candidate
    scales would underflow, and every candidate quantizes such a row the same way.
    """
    lo, hi = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
    amax = np.maximum(-lo, hi)
    dead = (amax > 0) & (amax < float(np.finfo(np.float32).tiny))
    if dead.any():
        if not (~dead).any():
            return lo, hi
        out_lo, out_hi = lo.copy(), hi.copy()
        out_lo[~dead], out_hi[~dead] = mse_weight_range(rows[~dead], spec, grid)
        return out_lo, out_hi
    require_normal_magnitudes(amax, f"layer {spec.layer!r} weight")
    alpha = clip_fractions(grid)[:, None]
    lo_k, hi_k = alpha * lo, alpha * hi
    errors = squared_errors(rows, lo_k, hi_k, spec.fmt, symmetric=spec.symmetric,
                            name=f"{spec.layer}.weight")
    best = best_candidate(errors)
    cols = np.arange(rows.shape[0])
    return lo_k[best, cols], hi_k[best, cols]


class MinMaxWeights:
    """Weights by min-max: the range is the weight's own ``[min, max]`` (per tensor or output channel).

    Symmetric grids use ``scale = max|w| / (2^(b-1) - 1)`` on the narrow signed grid; asymmetric
    grids the full ``[min, max]`` with a zero point. Nothing is clipped.
    """

    name = "minmax"
    options = ()
    kind = "weights"
    doc = __doc__

    def quantize_weight(self, w: np.ndarray, spec: LayerSpec) -> QuantizedWeight:
        rows = weight_rows(w, spec)
        return _quantized(w, rows.min(axis=1), rows.max(axis=1), spec)


class MSEWeights:
    """Weights by MSE-optimal clipping: the clip minimising ``‖w − Q(w)‖²``, per tensor or output channel.

    Dense grid search over ``α = k/G``, ``k = 1…G`` (option ``grid``, default 100): the clip is
    ``α · max|w|`` (symmetric) or the range ``[α·min w, α·max w]`` (asymmetric), scored with the
    exact quantize/dequantize (see :mod:`refquant_static.clipsearch`), vectorised over channels
    and candidates. Never worse than ``minmax`` (``α = 1`` is a candidate).
    """

    name = "mse"
    options = ("grid",)
    kind = "weights"
    doc = __doc__

    def quantize_weight(self, w: np.ndarray, spec: LayerSpec) -> QuantizedWeight:
        rows = weight_rows(w, spec)
        lo, hi = mse_weight_range(rows, spec, grid_option(spec))
        return _quantized(w, lo, hi, spec)
