"""The built-in QAT quantizers: min-max weights and EMA min-max activations (the baseline).

* ``minmax`` (weights): at every step, the range of the current weight, per tensor or per
  output channel (axis 0), mapped onto the plan's grid by
  :func:`refquant.numerics.qparams_from_range` — the rule of the post-training ``minmax``
  weight strategy, so the fake-quantized weight of the last step is exactly what post-training
  ``minmax`` gives for the trained weight. Stateless. Min-max never clips a weight, so its
  STE mask is all True.
* ``ema-minmax`` (activations): an exponential moving average of each training batch's
  range, per tensor or per channel (axis 1)::

      lo <- m * lo + (1 - m) * min(batch),    hi <- m * hi + (1 - m) * max(batch)

  in float32 with ``m`` = option ``momentum`` (default 0.9); the state starts at the first
  batch's range. Training uses the updated range; evaluation uses the stored one. Values
  outside it saturate, and their gradient is blocked (STE). This is TensorFlow's
  ``MovingAverageQuantize`` rule.

Both register through ``register_qat_quantizers`` in :mod:`refquant.builtin`.
"""

from __future__ import annotations

import numpy as np

from ..numerics import qparams_from_range
from ..strategies import LayerSpec
from .fakequant import fake_quantize

__all__ = ["MinMaxQATWeights", "EMAMinMaxQATActivations", "tensor_rows_range"]


def tensor_rows_range(x: np.ndarray, axis: int | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(min, max)`` float32 arrays over everything (shape (1,)) or per index of ``axis``."""
    if x.size == 0:
        raise ValueError(f"{where}: empty tensor, nothing to quantize")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: {int((~np.isfinite(x)).sum())} NaN/Inf value(s); training diverged?")
    if axis is None:
        return np.array([x.min()], np.float32), np.array([x.max()], np.float32)
    rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return rows.min(axis=1).astype(np.float32), rows.max(axis=1).astype(np.float32)


def _qparams(lo: np.ndarray, hi: np.ndarray, spec: LayerSpec, axis: int, name: str):
    if spec.per_channel:
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=axis, name=name)
    return qparams_from_range(lo[0], hi[0], spec.fmt, symmetric=spec.symmetric, name=name)


class MinMaxQATWeights:
    """Weights by min-max at every step: the current weight's range, per tensor or output channel."""

    name = "minmax"
    kind = "weights"
    doc = __doc__

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        return {}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        where = f"layer {spec.layer!r} weight"
        lo, hi = tensor_rows_range(x, 0 if spec.per_channel else None, where)
        y, mask = fake_quantize(x, _qparams(lo, hi, spec, 0, f"{spec.layer}.weight"))
        return y, mask, state


class EMAMinMaxQATActivations:
    """Activations by an exponential moving average of each training batch's min and max."""

    name = "ema-minmax"
    kind = "activations"
    doc = __doc__

    def _momentum(self, spec: LayerSpec) -> np.float32:
        m = float(spec.option("momentum", 0.9))
        if not 0.0 <= m < 1.0:
            raise ValueError(f"layer {spec.layer!r}: ema-minmax momentum must be in [0, 1), got {m}")
        return np.float32(m)

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        lo, hi = tensor_rows_range(x, 1 if spec.per_channel else None, f"layer {spec.layer!r} output")
        return {"lo": lo, "hi": hi}

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec, training: bool):
        lo, hi = state["lo"], state["hi"]
        if training:
            m = self._momentum(spec)
            blo, bhi = tensor_rows_range(x, 1 if spec.per_channel else None, f"layer {spec.layer!r} output")
            if blo.shape != lo.shape:
                raise ValueError(f"layer {spec.layer!r}: batch has {blo.size} channels, the state {lo.size}")
            lo = m * lo + (np.float32(1) - m) * blo
            hi = m * hi + (np.float32(1) - m) * bhi
        y, mask = fake_quantize(x, _qparams(lo, hi, spec, 1, spec.layer))
        return y, mask, {"lo": lo, "hi": hi}
