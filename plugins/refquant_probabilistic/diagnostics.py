"""Diagnostics: how well the surrogate predicts each layer's range, and what the estimate costs.

* :func:`range_diagnostics` — per probabilistic layer of a quantized run: each image's
  predicted range ``[lo_n, hi_n]`` (after the fused activation) against the actual range of
  the layer's real output ``float32(acc) · s_x·s_w[c]`` (then the activation) on the same
  quantized input; **coverage** (share of images whose actual range lies inside the
  predicted one), **miss rate** (share of output elements outside their image's predicted
  range) and **clipped** (share of output elements the batch's qparams saturated, in the run).
* :func:`estimator_timing` — wall time of ``qparams_before`` (the whole estimate: patch sums,
  surrogate, range, qparams) against the fused kernel call of the same layer on the same
  input, for each γ; median of interleaved repeats. Timing is reported, never asserted.
* :func:`per_input_accuracy` — accuracy with every image run alone (batch 1), the per-input
  setting in which dynamic and probabilistic ranges adapt to each image.
* :func:`kept_tensors`, :func:`per_tensor_input`, :func:`layer_call` — a layer's input and
  kernel arguments as the executor built them in a run, for replaying one layer alone
  (:mod:`.memory` uses them too).

The memory measurements are in :mod:`.memory`; the command ``refquant probabilistic-report``,
its printed tables and the plot in :mod:`.report`. Everything here computes and returns
numbers; nothing prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from refquant.executor import QuantizedModel, quantize_bias
from refquant.kernels import reference
from refquant.numerics import dequantize, make_requantizer, qparams_from_range, quantize
from refquant.registry import get_backend

from .options import read_options
from .patches import patch_grid, patch_sums_scratch_bytes

__all__ = ["LayerDiagnostics", "range_diagnostics", "interleaved_times", "estimator_timing", "kept_tensors",
           "per_tensor_input", "layer_call", "with_gamma", "per_input_accuracy", "GAMMAS"]

GAMMAS = (1, 2, 4, 8)


@dataclass
class LayerDiagnostics:
    """Predicted against actual output ranges of one layer, per image (per tensor)."""

    layer: str
    op: str
    fused_activation: str | None
    gamma: int
    alpha: list
    beta: list
    patches: int  # |P_γ| per image
    predicted_lo: np.ndarray
    predicted_hi: np.ndarray
    actual_lo: np.ndarray
    actual_hi: np.ndarray
    coverage: float
    miss_rate: float
    clipped: float
    estimator_scratch_bytes: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (self.predicted_hi - self.predicted_lo) / (self.actual_hi - self.actual_lo)
        ratio = ratio[np.isfinite(ratio)]
        return {
            "layer": self.layer, "op": self.op, "activation": self.fused_activation or "-",
            "gamma": self.gamma, "patches": self.patches,
            "alpha": [round(float(a), 3) for a in self.alpha][:4],
            "beta": [round(float(b), 3) for b in self.beta][:4],
            "coverage": round(self.coverage, 4), "miss_rate": round(self.miss_rate, 6),
            "clipped": round(self.clipped, 6),
            "width_ratio_median": round(float(np.median(ratio)), 3) if ratio.size else None,
            "estimator_scratch_bytes": self.estimator_scratch_bytes,
        }


def kept_tensors(qm: QuantizedModel, feeds: dict, records: list) -> dict:
    """Tensor name → (integers, qparams) of a run made with ``keep=True`` on ``feeds``."""
    out = {}
    n_inputs = len(qm.graph.inputs)
    for rec in records[:n_inputs]:
        out[rec.name] = (quantize(feeds[rec.name], rec.output_qparams), rec.output_qparams)
    for step, rec in zip(qm.steps, records[n_inputs:]):
        out[step.output] = (rec.q_output, rec.output_qparams)
    return out


def per_tensor_input(q, qp, name):
    """The executor's rule for a per-channel input: requantize onto one grid covering every channel."""
    if qp.per_tensor:
        return q, qp
    x = dequantize(q, qp)
    new = qparams_from_range(float(x.min(initial=0.0)), float(x.max(initial=0.0)), qp.fmt, name=name)
    return quantize(x, new), new


def layer_call(layer, q, qp):
    """The kernel arguments the executor builds for ``layer`` on input ``(q, qp)``."""
    conv = layer.step.node.op_type == "Conv"
    attrs = {k: v for k, v in layer.step.node.attributes.items() if k != "kernel_shape"} if conv else {}
    q_in = q if conv else q.reshape(q.shape[0], -1)
    w = layer.weight
    bias_q = quantize_bias(layer.bias, qp.scale, w.qparams.scale)
    return conv, attrs, (q_in, w.values, int(qp.zero_point), w.qparams.zero_point, bias_q)


def _real_output(layer, q, qp) -> np.ndarray:
    """The layer's real output on ``(q, qp)``: ``float32(acc) · float32(s_x·s_w[c])``, then the activation."""
    conv, attrs, args = layer_call(layer, q, qp)
    acc = (reference.conv2d_int32(*args, name=layer.name, **attrs) if conv
           else reference.matmul_int32(*args, name=layer.name))
    s = (np.float32(qp.scale) * np.atleast_1d(layer.weight.qparams.scale).astype(np.float32)).astype(np.float32)
    shape = [1, -1] + [1] * (acc.ndim - 2)
    y = acc.astype(np.float32) * np.broadcast_to(s, (acc.shape[1],)).reshape(shape)
    if layer.step.fused_activation == "relu":
        return np.maximum(y, np.float32(0))
    if layer.step.fused_activation == "relu6":
        return np.clip(y, np.float32(0), np.float32(6))
    return y


def _probabilistic_layers(qm: QuantizedModel) -> list:
    return [layer for layer in qm.layers.values() if layer.act_strategy.name == "probabilistic"]


def range_diagnostics(qm: QuantizedModel, x: np.ndarray, *, backend: str = "numba") -> list[LayerDiagnostics]:
    """Per probabilistic layer: predicted vs actual per-image ranges on a run of ``x`` (see module doc)."""
    feeds = {qm.graph.inputs[0].name: np.asarray(x, np.float32)}
    result = qm.run(feeds, backend=backend, keep=True)
    tensors = kept_tensors(qm, feeds, result.records)
    by_name = {r.name: r for r in result.records}
    out = []
    for layer in _probabilistic_layers(qm):
        spec, strategy, ctx = layer.act_spec, layer.act_strategy, layer.context
        q, qp = per_tensor_input(*tensors[layer.step.node.inputs[0]], layer.step.node.inputs[0])
        lo, hi = strategy.image_ranges(q, qp, ctx, spec)
        y = _real_output(layer, q, qp)
        n = len(y)
        rows = y.reshape(n, y.shape[1], -1) if spec.per_channel else y.reshape(n, 1, -1)
        a_lo, a_hi = rows.min(axis=2), rows.max(axis=2)
        p_lo = lo.reshape(n, -1)
        p_hi = hi.reshape(n, -1)
        covered = (a_lo >= p_lo) & (a_hi <= p_hi)
        outside = (rows < p_lo[:, :, None]) | (rows > p_hi[:, :, None])
        used = by_name[layer.name].output_qparams
        scale, zero_point = used.broadcast_to(y.shape)
        raw = np.rint(y / scale) + zero_point  # quantize() before saturation
        clipped = float(np.mean((raw < used.fmt.qmin) | (raw > used.fmt.qmax)))
        grid = patch_grid(q.shape, ctx.state["weight_shape"], ctx.attributes, _gamma(spec), layer.name)
        out.append(LayerDiagnostics(
            layer.name, layer.step.node.op_type, layer.step.fused_activation, _gamma(spec),
            list(np.atleast_1d(ctx.state["alpha"])), list(np.atleast_1d(ctx.state["beta"])), grid.count,
            p_lo.min(axis=1), p_hi.max(axis=1), a_lo.min(axis=1), a_hi.max(axis=1),
            float(covered.mean()), float(outside.mean()), clipped, patch_sums_scratch_bytes(grid)))
    return out


def _gamma(spec) -> int:
    return read_options(spec).gamma


def with_gamma(spec, gamma: int):
    """``spec`` with its option ``gamma`` replaced."""
    options = tuple((k, v) for k, v in spec.options if k != "gamma") + (("gamma", gamma),)
    return replace(spec, options=options)


def interleaved_times(first, second, repeats: int) -> tuple[list, list]:
    """Seconds of ``repeats`` calls of ``first`` and ``second``, taking turns, after one untimed
    call of each (compilation, caches): on a shared machine both see the same disturbances."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return a, b


def estimator_timing(qm: QuantizedModel, x: np.ndarray, *, gammas=GAMMAS, repeats: int = 30,
                     backend: str = "numba") -> list[dict]:
    """Per probabilistic layer and γ: median ms of ``qparams_before`` and of the fused kernel call.

    The two calls alternate, ``repeats`` times each, after one warm-up call of each (Numba
    compilation or cache load is not timed). ``overhead_pct = 100 · estimator / layer``.
    """
    feeds = {qm.graph.inputs[0].name: np.asarray(x, np.float32)}
    result = qm.run(feeds, backend=backend, keep=True)
    tensors = kept_tensors(qm, feeds, result.records)
    kernels = get_backend(backend)
    rows = []
    for layer in _probabilistic_layers(qm):
        q, qp = per_tensor_input(*tensors[layer.step.node.inputs[0]], layer.step.node.inputs[0])
        conv, attrs, args = layer_call(layer, q, qp)
        y_qp = layer.act_strategy.qparams_before(q, qp, layer.context, layer.act_spec)
        rq = make_requantizer(qp.scale, layer.weight.qparams.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                              mode=qm.requant, activation=layer.step.fused_activation)

        def run_layer():
            return (kernels.conv2d_requant(*args, rq, name=layer.name, **attrs) if conv
                    else kernels.matmul_requant(*args, rq, name=layer.name))

        for gamma in gammas:
            spec = with_gamma(layer.act_spec, gamma)

            def run_estimator():
                return layer.act_strategy.qparams_before(q, qp, layer.context, spec)

            t_layer, t_est = interleaved_times(run_layer, run_estimator, repeats)
            est, lay = float(np.median(t_est)), float(np.median(t_layer))
            grid = patch_grid(q.shape, layer.context.state["weight_shape"], layer.context.attributes, gamma,
                              layer.name)
            rows.append({"layer": layer.name, "op": layer.step.node.op_type, "images": int(q.shape[0]),
                         "gamma": gamma, "patches": grid.count, "estimator_ms": round(1e3 * est, 4),
                         "layer_ms": round(1e3 * lay, 4), "overhead_pct": round(100 * est / lay, 2)})
    return rows


def per_input_accuracy(qm: QuantizedModel, x: np.ndarray, labels: np.ndarray, *,
                       backend: str = "numba") -> float:
    """Accuracy with each image run alone (batch 1): per-input qparams adapt to each image."""
    name, out = qm.graph.inputs[0].name, qm.graph.outputs[0]
    hits = 0
    for i in range(len(x)):
        logits = qm.run({name: np.asarray(x[i:i + 1], np.float32)}, backend=backend).outputs[out]
        hits += int(np.argmax(logits[0]) == labels[i])
    return hits / max(1, len(x))
