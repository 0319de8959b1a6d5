"""What memory a step takes: traced allocations against the engine's own accounting.

* :func:`traced_step_bytes` — for every step of a run, the peak bytes Python's ``tracemalloc``
  saw allocated during the step (measured from the ``layer_executed`` event hook), next to the
  engine's own accounting (``LayerRecord.working_bytes``).
* :func:`reference_layer_bytes` — the same question on plain NumPy: each quantizable layer of a
  run replayed with the reference kernels under ``tracemalloc`` — a fused layer as a *tiled*
  composition (:func:`tiled_reference_requant`: accumulate a few output channels with
  ``reference.conv2d_int32``, requantize them into the int8 output, next tile), an unfused one
  as the executor runs it (the whole int32 accumulator tensor, then ``requantize``). The
  reference backend's own fused kernel is ``requantize(conv2d_int32(…))`` — it builds the
  whole accumulator tensor (and int64 temporaries) internally, so traced on it every strategy
  peaks alike; the tiled composition computes the same integers (checked against the run)
  with the memory shape of a fused kernel.

``bench/probabilistic.py`` reports these numbers; ``spec/strategies/probabilistic.md`` explains them.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from refquant.executor import QuantizedModel
from refquant.hookspecs import hookimpl
from refquant.kernels import reference
from refquant.numerics import make_requantizer, requantize
from refquant.plugins import register_plugin, unregister_plugin

from .diagnostics import kept_tensors, layer_call, per_tensor_input

__all__ = ["traced_step_bytes", "tiled_reference_requant", "reference_layer_bytes"]


class _StepTracer:
    """A plugin for the ``layer_executed`` event: tracemalloc's peak during each step."""

    def __init__(self):
        self.rows: list[dict] = []
        self.base = 0

    def start(self):
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]

    @hookimpl
    def layer_executed(self, record):
        peak = tracemalloc.get_traced_memory()[1]
        self.rows.append({"step": record.name, "kernel": record.kernel, "timing": record.timing or "-",
                          "traced_bytes": int(peak - self.base), "working_bytes": record.working_bytes,
                          "buffers": dict(record.buffers)})
        self.start()


def traced_step_bytes(qm: QuantizedModel, x: np.ndarray, *, backend: str = "numba") -> list[dict]:
    """Each step's peak ``tracemalloc`` bytes above what was allocated when it started, with
    the engine's ``working_bytes`` for the same step. The run is made once untraced first
    (Numba compilation or cache load allocates)."""
    feeds = {qm.graph.inputs[0].name: np.asarray(x, np.float32)}
    qm.run(feeds, backend=backend)
    tracer = _StepTracer()
    register_plugin(tracer, "probabilistic-step-tracer")
    tracing = tracemalloc.is_tracing()
    try:
        if not tracing:
            tracemalloc.start()
        tracer.start()
        qm.run(feeds, backend=backend)
    finally:
        if not tracing:
            tracemalloc.stop()
        unregister_plugin(tracer)
    return tracer.rows


def tiled_reference_requant(layer, q, qp, y_qp, mode: str, tile: int = 1) -> np.ndarray:
    """The layer's fused output on ``(q, qp)`` with output qparams ``y_qp``, ``tile`` output
    channels at a time: ``reference.conv2d_int32`` (or ``matmul_int32``) of the tile, then
    ``requantize`` into the int8/uint8 output. Same integers as the fused kernels; the largest
    accumulator block alive is one tile's."""
    conv, attrs, (q_in, w, zx, zw, bias_q) = layer_call(layer, q, qp)
    c_out = w.shape[0]
    group = int(attrs.get("group", 1)) if conv else 1
    per_group, cin_g = c_out // group, q_in.shape[1] // group
    w_scale = np.broadcast_to(np.atleast_1d(layer.weight.qparams.scale), (c_out,))
    zw = np.broadcast_to(np.atleast_1d(zw), (c_out,))
    y_scale = np.broadcast_to(np.atleast_1d(y_qp.scale), (c_out,))
    y_zp = np.broadcast_to(np.atleast_1d(y_qp.zero_point), (c_out,))
    out = None
    for g in range(group):
        x_g = q_in[:, g * cin_g:(g + 1) * cin_g] if group > 1 else q_in
        tile_attrs = {**attrs, "group": 1} if conv else {}
        for o0 in range(g * per_group, (g + 1) * per_group, tile):
            sl = slice(o0, min(o0 + tile, (g + 1) * per_group))
            b = None if bias_q is None else bias_q[sl]
            acc = (reference.conv2d_int32(x_g, w[sl], zx, zw[sl], b, name=layer.name, **tile_attrs) if conv
                   else reference.matmul_int32(x_g, w[sl], zx, zw[sl], b, name=layer.name))
            rq = make_requantizer(qp.scale, w_scale[sl], y_scale[sl], y_zp[sl], y_qp.fmt, mode=mode,
                                  activation=layer.step.fused_activation)
            part = requantize(acc, rq, channel_axis=1)
            del acc
            if out is None:
                out = np.empty((part.shape[0], c_out) + part.shape[2:], part.dtype)
            out[:, sl] = part
    return out


def _traced(fn):
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        if not tracing:
            tracemalloc.stop()


def reference_layer_bytes(qm: QuantizedModel, x: np.ndarray, *, tile: int = 1) -> list[dict]:
    """Per quantizable layer: peak ``tracemalloc`` bytes of the layer replayed in plain NumPy on
    the input it had in a run of ``x`` — the activation strategy's estimate (``before``) or
    range (``after``) plus a tiled fused reference (``offline``/``before``) or the unfused
    reference and ``requantize`` (``after``). Each replay's output is checked to equal the
    run's, bit for bit."""
    feeds = {qm.graph.inputs[0].name: np.asarray(x, np.float32)}
    result = qm.run(feeds, backend="numba", keep=True)
    tensors = kept_tensors(qm, feeds, result.records)
    by_name = {r.name: r for r in result.records}
    rows = []
    for layer in qm.layers.values():
        q, qp = per_tensor_input(*tensors[layer.step.node.inputs[0]], layer.step.node.inputs[0])
        strategy, spec = layer.act_strategy, layer.act_spec
        conv, attrs, args = layer_call(layer, q, qp)

        def fused(y_qp):
            return tiled_reference_requant(layer, q, qp, y_qp, qm.requant, tile)

        if strategy.timing == "after":
            def replay():
                acc = (reference.conv2d_int32(*args, name=layer.name, **attrs) if conv
                       else reference.matmul_int32(*args, name=layer.name))
                acc_scale = (np.float32(qp.scale) * np.atleast_1d(layer.weight.qparams.scale)).astype(np.float32)
                y_qp = strategy.qparams_after(acc, acc_scale, spec, channel_axis=1,
                                              fused_activation=layer.step.fused_activation)
                rq = make_requantizer(qp.scale, layer.weight.qparams.scale, y_qp.scale, y_qp.zero_point,
                                      y_qp.fmt, mode=qm.requant, activation=layer.step.fused_activation)
                return requantize(acc, rq, channel_axis=1)
        elif strategy.timing == "before":
            def replay():
                return fused(strategy.qparams_before(q, qp, layer.context, spec))
        else:
            def replay():
                return fused(layer.observed)
        y, peak = _traced(replay)
        expected = by_name[layer.name].q_output
        if not np.array_equal(y, expected):
            raise AssertionError(f"layer {layer.name!r}: the reference replay differs from the run")
        out_elems = int(np.prod(expected.shape))
        rows.append({"layer": layer.name, "timing": strategy.timing, "traced_bytes": peak,
                     "output_bytes": int(expected.nbytes), "int32_accumulator_bytes": 4 * out_elems})
    return rows
