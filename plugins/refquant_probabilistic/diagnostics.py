"""Diagnostics: how well the surrogate predicts each layer's range, what it costs, what memory a step takes.

* :func:`range_diagnostics` — per probabilistic layer of a quantized run: each image's
  predicted range ``[lo_n, hi_n]`` (after the fused activation) against the actual range of
  the layer's real output ``float32(acc) · s_x·s_w[c]`` (then the activation) on the same
  quantized input; **coverage** (share of images whose actual range lies inside the
  predicted one), **miss rate** (share of output elements outside their image's predicted
  range) and **clipped** (share of output elements the batch's qparams saturated, in the run).
* :func:`estimator_timing` — wall time of ``qparams_before`` (the whole estimate: patch sums,
  surrogate, range, qparams) against the fused kernel call of the same layer on the same
  input, for each γ; median of interleaved repeats. Timing is reported, never asserted.
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
* :func:`per_input_accuracy` — accuracy with every image run alone (batch 1), the per-input
  setting in which dynamic and probabilistic ranges adapt to each image.
* :func:`report` / the command ``refquant probabilistic-report MODEL`` put them together;
  :func:`plot_ranges` draws predicted against actual ranges when matplotlib is installed.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from dataclasses import dataclass, field, replace

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.executor import QuantizedModel, quantize_bias, quantize_model
from refquant.hookspecs import hookimpl
from refquant.kernels import reference
from refquant.numerics import dequantize, make_requantizer, qparams_from_range, quantize, requantize
from refquant.plugins import register_plugin, unregister_plugin
from refquant.presentation import format_table
from refquant.registry import get_backend, resolve_model

from .options import read_options
from .patches import patch_grid, patch_sums_scratch_bytes
from .plans import probabilistic_plan

__all__ = ["LayerDiagnostics", "range_diagnostics", "interleaved_times", "estimator_timing", "traced_step_bytes",
           "tiled_reference_requant", "reference_layer_bytes", "kept_tensors", "per_tensor_input", "layer_call",
           "with_gamma",
           "per_input_accuracy", "report", "plot_ranges", "add_report_command", "GAMMAS"]

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


def per_input_accuracy(qm: QuantizedModel, x: np.ndarray, labels: np.ndarray, *,
                       backend: str = "numba") -> float:
    """Accuracy with each image run alone (batch 1): per-input qparams adapt to each image."""
    name, out = qm.graph.inputs[0].name, qm.graph.outputs[0]
    hits = 0
    for i in range(len(x)):
        logits = qm.run({name: np.asarray(x[i:i + 1], np.float32)}, backend=backend).outputs[out]
        hits += int(np.argmax(logits[0]) == labels[i])
    return hits / max(1, len(x))


def plot_ranges(diagnostics: list[LayerDiagnostics], path: str) -> str | None:
    """Predicted against actual per-image ranges, one panel per layer, saved to ``path``.

    Returns ``path``, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(diagnostics)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, d in zip(axes[0], diagnostics):
        ax.scatter(d.actual_hi, d.predicted_hi, s=4, label="upper: β", color="tab:red")
        if d.fused_activation is None:
            ax.scatter(d.actual_lo, d.predicted_lo, s=4, label="lower: α", color="tab:blue")
        lim = [min(d.actual_lo.min(), d.predicted_lo.min()), max(d.actual_hi.max(), d.predicted_hi.max())]
        ax.plot(lim, lim, color="black", linewidth=0.8)
        ax.set_title(f"{d.layer} (γ={d.gamma})\ncoverage {d.coverage:.2f}, miss {d.miss_rate:.1e}", fontsize=8)
        ax.set_xlabel("actual per-image extreme", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(model: str, *, bits: int = 8, gamma: int = 1, aggregator: str = "max", granularity: str = "per-tensor",
           weights: str = "minmax", weight_bits: int = 8, weight_granularity: str = "per-channel", calibration: int = 32,
           dataset: str = "test", backend: str = "numba", repeats: int = 30, gammas=GAMMAS,
           timing_images: int | None = None, plot: str | None = None) -> dict:
    """Range diagnostics and estimator timing of ``model`` quantized with ``probabilistic``
    (``bits``-bit activations, ``weights`` at ``weight_bits``), calibrated on the documented
    calibration images, run on ``dataset`` as one batch."""
    graph = resolve_model(model)
    data = load_digits()
    split = data.test if dataset == "test" else data.shifted(dataset)
    plan = probabilistic_plan(weights=weights, weight_bits=weight_bits,
                              weight_granularity=weight_granularity, bits=bits, granularity=granularity,
                              gamma=gamma, aggregator=aggregator)
    qm = quantize_model(graph, plan, digits_inputs(graph, data.calibration(calibration).x))
    x = digits_inputs(graph, split.x)
    diags = range_diagnostics(qm, x, backend=backend)
    timing_x = x if timing_images is None else x[:timing_images]
    timing = estimator_timing(qm, timing_x, gammas=gammas, repeats=repeats, backend=backend)
    out = {"model": graph.name, "plan": str(plan), "options": {"gamma": gamma, "aggregator": aggregator},
           "dataset": split.name, "images": int(len(x)), "backend": backend,
           "layers": [d.summary() for d in diags], "timing": timing}
    if plot:
        out["plot"] = plot_ranges(diags, plot)
    return out


def cmd_report(args) -> int:
    """``refquant probabilistic-report MODEL``: ranges, coverage, miss rate, estimator time."""
    gammas = tuple(args.gammas)
    result = report(args.model, bits=args.bits, gamma=args.gamma, aggregator=args.aggregator,
                    granularity=args.granularity, weights=args.weights, weight_bits=args.weight_bits,
                    calibration=args.calibration,
                    dataset=args.dataset, backend=args.backend, repeats=args.repeats, gammas=gammas,
                    timing_images=args.timing_images, plot=args.plot)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"model {result['model']}  plan: {result['plan']}  γ={args.gamma}  aggregator {args.aggregator}  "
          f"{result['dataset']}: {result['images']} images")
    print(format_table(result["layers"]))
    print()
    print(format_table(result["timing"]))
    if args.plot:
        print(f"plot: {result['plot']}" if result.get("plot") else "plot: matplotlib is not installed")
    return 0


def add_report_command(cli) -> None:
    p = cli.command("probabilistic-report",
                    "probabilistic strategy: predicted vs actual ranges, coverage, miss rate, estimator time")
    p.add_argument("model", help="a registered model name or a model .json path")
    p.add_argument("--bits", type=int, default=8, help="activation bits (default 8)")
    p.add_argument("--gamma", type=int, default=1, help="patch-sampling stride γ (default 1)")
    p.add_argument("--aggregator", default="max", choices=("max", "mean", "percentile"))
    p.add_argument("--granularity", default="per-tensor", choices=("per-tensor", "per-channel"))
    p.add_argument("--weights", default="minmax", help="weight strategy (default minmax, per channel)")
    p.add_argument("--weight-bits", type=int, default=8, help="weight bits (default 8)")
    p.add_argument("--calibration", type=int, default=32, choices=(16, 32, 128))
    p.add_argument("--dataset", default="test", help="'test' or a shifted test set's name")
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per layer and γ (default 30)")
    p.add_argument("--gammas", type=int, nargs="+", default=list(GAMMAS), help="γ values timed (default 1 2 4 8)")
    p.add_argument("--timing-images", type=int, default=None, help="images in the timed batch (default: all)")
    p.add_argument("--plot", default=None, help="save a plot of predicted vs actual ranges (PNG path)")
    p.set_defaults(handler=cmd_report)
