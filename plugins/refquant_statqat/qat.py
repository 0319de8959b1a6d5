"""StatQAT inside quantization-aware training: the two quantizers as :class:`~refquant.strategies.QATQuantizer`.

Registered through ``register_qat_quantizers`` (names may repeat the post-training ones):

* ``statqat-analytic`` (weights): at every step the scale of
  :func:`.strategies.analytic_row_scales` — ``min(κ·rms(w), max|w|/top)`` per tensor or per
  output channel, with the Gaussian or the Laplace κ, whichever errs less on the current
  weight — recomputed from the current weight. Stateless.
* ``statqat-iterative`` (activations): the state holds a scale per tensor (or channel, axis 1)
  and the zero point. ``init_state`` runs the full fixed point (:func:`.strategies.iterative_qparams`,
  which also chooses the zero point, once) on the first batch. Each training step runs the
  fixed point on the batch, warm-started from the stored scale and limited to ``iterations``
  updates per stage (option, default 5), and keeps an exponential moving average::

      s <- m · s + (1 - m) · s_batch         (float32; m = option ``momentum``, default 0.9)

  Training fake-quantizes with the updated scale, evaluation with the stored one.

**Grids.** Integer grids come from the spec (bits, signedness, symmetry) and fake-quantize with
:func:`refquant.train.fakequant.fake_quantize` — bit for bit what the quantized executor
computes. The LayerSpec option ``format`` names a float format instead; then the tensor is
fake-quantized on the float path by :func:`.grids.fake_quantize_float` (``round_to_format(x/s)·s``)
on the symmetric float grid (no zero point). In a plan the option is a ``KEY=VALUE`` part:
``weights=statqat-analytic:4:per-channel:format=float4_e2m1fn``.

**Min-max on float grids.** The engine's min-max QAT quantizers know integer grids only; for the
comparison on float formats this module adds ``minmax-float`` (weights: ``s = max|w| / max_finite``
per tensor or channel, every step) and ``ema-minmax-float`` (activations: an EMA, with the same
momentum rule, of each batch's ``max|x| / max_finite``). They need the ``format`` option.
"""

from __future__ import annotations

import numpy as np

from refquant.numerics import QParams
from refquant.strategies import LayerSpec
from refquant.train import fake_quantize

from .grids import fake_quantize_float, grid, uniform_grid
from .iterative import iterative_scale
from .strategies import (activation_rows, analytic_row_scales, float_format_option, iterative_qparams, prior_option,
                         weight_rows)

__all__ = ["StatQATWeights", "StatQATActivations", "MinMaxFloatQATWeights", "EMAMinMaxFloatQATActivations",
           "QAT_QUANTIZERS"]


def _momentum(spec: LayerSpec, who: str) -> np.float32:
    value = spec.option("momentum", 0.9)
    try:
        m = float(value)
    except (TypeError, ValueError):
        m = float("nan")
    if not 0.0 <= m < 1.0:
        raise ValueError(f"layer {spec.layer!r}: {who} option 'momentum' must be a number in [0, 1), got {value!r}")
    return np.float32(m)


def _iterations(spec: LayerSpec) -> int:
    value = spec.option("iterations", 5)  # plan options arrive as strings
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(k) != str(value).strip():
        raise ValueError(f"layer {spec.layer!r}: statqat-iterative option 'iterations' must be an integer >= 1, "
                         f"got {value!r}")
    return k


def _fake_quant(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, spec: LayerSpec, axis: int, name: str):
    """Integer grid: the engine's fake quantization; float format: the float path."""
    fmt = float_format_option(spec)
    scale = np.asarray(scale, dtype=np.float32)
    if fmt is not None:
        return fake_quantize_float(x, fmt, scale if spec.per_channel else scale.reshape(-1)[0],
                                   axis=axis if spec.per_channel else None, name=name)
    if spec.per_channel:
        qp = QParams(scale, np.asarray(zero_point, np.int32), spec.fmt, axis=axis, name=name)
    else:
        qp = QParams(scale.reshape(-1)[0], int(np.asarray(zero_point).reshape(-1)[0]), spec.fmt, name=name)
    return fake_quantize(x, qp)


def _weight_grid(spec: LayerSpec):
    fmt = float_format_option(spec)
    return grid(fmt) if fmt is not None else grid(f"int{spec.bits}")


def _weight_zero_points(spec: LayerSpec, n: int) -> np.ndarray:
    return np.full(n, 0 if spec.signed else 2 ** (spec.bits - 1), np.int32)


class StatQATWeights:
    """Weights by StatQAT's analytic rule at every step: scale ``min(κ·rms(w), max|w|/top)`` (Gaussian or Laplace κ)."""

    name = "statqat-analytic"
    kind = "weights"
    doc = __doc__

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        return {}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        rows = weight_rows(x, spec)
        scale, _ = analytic_row_scales(rows, _weight_grid(spec), prior_option(spec))
        y, mask = _fake_quant(x, scale, _weight_zero_points(spec, scale.size), spec, 0, f"{spec.layer}.weight")
        return y, mask, state


def _activation_grid(spec: LayerSpec, zero_point: int):
    fmt = float_format_option(spec)
    if fmt is not None:
        return grid(fmt)
    return uniform_grid(spec.fmt.qmin - zero_point, spec.fmt.qmax - zero_point)


def _batch_scales(rows: np.ndarray, spec: LayerSpec, state: dict) -> np.ndarray:
    """Per row, the fixed point on this batch warm-started from the stored scale (the stored
    scale where a row is all zero)."""
    out = np.array(state["scale"], dtype=np.float64)
    k = _iterations(spec)
    for i, row in enumerate(rows):
        if np.any(row != 0):
            g = _activation_grid(spec, int(state["zero_point"][i]))
            out[i] = iterative_scale(row.astype(np.float64), g, init=out[i], max_iter=k).scale
    return out


class StatQATActivations:
    """Activations by an EMA of StatQAT's per-batch iterative fixed point (zero point chosen on the first batch)."""

    name = "statqat-iterative"
    kind = "activations"
    doc = __doc__

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        rows = activation_rows(x, spec).astype(np.float64)
        fmt = float_format_option(spec)
        if fmt is None:
            scales, zps = iterative_qparams(list(rows), spec)
        else:
            g = grid(fmt)
            scales = np.array([iterative_scale(r, g).scale if np.any(r != 0) else 1.0 for r in rows])
            zps = np.zeros(len(rows), np.int32)
        return {"scale": scales.astype(np.float32), "zero_point": zps.astype(np.int32)}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        scale = np.asarray(state["scale"], np.float32)
        if training:
            rows = activation_rows(x, spec)
            if rows.shape[0] != scale.size:
                raise ValueError(f"layer {spec.layer!r}: batch has {rows.shape[0]} channels, the state {scale.size}")
            m = _momentum(spec, self.name)
            batch = _batch_scales(rows, spec, state).astype(np.float32)
            scale = (m * scale + (np.float32(1) - m) * batch).astype(np.float32)
        y, mask = _fake_quant(x, scale, state["zero_point"], spec, 1, spec.layer)
        return y, mask, {"scale": scale, "zero_point": np.array(state["zero_point"], np.int32)}


def _require_float(spec: LayerSpec, who: str) -> str:
    fmt = float_format_option(spec)
    if fmt is None:
        raise ValueError(f"layer {spec.layer!r}: {who} quantizes onto a float format; set the LayerSpec option "
                         f"'format' (a plan part such as format=float4_e2m1fn), or use the integer min-max quantizers")
    return fmt


def _abs_max_rows(rows: np.ndarray) -> np.ndarray:
    return np.max(np.abs(rows), axis=1).astype(np.float64)


class MinMaxFloatQATWeights:
    """Weights by min-max on a float format: ``s = max|w| / max_finite`` (per tensor or channel), every step."""

    name = "minmax-float"
    kind = "weights"
    doc = __doc__

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        _require_float(spec, self.name)
        return {}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        fmt = _require_float(spec, self.name)
        amax = _abs_max_rows(weight_rows(x, spec))
        scale = np.where(amax > 0, amax / grid(fmt).top, 1.0)
        y, mask = _fake_quant(x, scale, np.zeros(scale.size, np.int32), spec, 0, f"{spec.layer}.weight")
        return y, mask, state


class EMAMinMaxFloatQATActivations:
    """Activations by an EMA of each batch's ``max|x| / max_finite`` on a float format."""

    name = "ema-minmax-float"
    kind = "activations"
    doc = __doc__

    def _scales(self, x: np.ndarray, spec: LayerSpec) -> np.ndarray:
        fmt = _require_float(spec, self.name)
        amax = _abs_max_rows(activation_rows(x, spec))
        return np.where(amax > 0, amax / grid(fmt).top, 1.0).astype(np.float32)

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        return {"scale": self._scales(x, spec)}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        scale = np.asarray(state["scale"], np.float32)
        if training:
            m = _momentum(spec, self.name)
            scale = (m * scale + (np.float32(1) - m) * self._scales(x, spec)).astype(np.float32)
        y, mask = _fake_quant(x, scale, np.zeros(scale.size, np.int32), spec, 1, spec.layer)
        return y, mask, {"scale": scale}


QAT_QUANTIZERS = (StatQATWeights, StatQATActivations, MinMaxFloatQATWeights, EMAMinMaxFloatQATActivations)

