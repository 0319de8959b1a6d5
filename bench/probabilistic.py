"""The probabilistic strategy measured: estimator time, working memory, per-input accuracy.

    python bench/probabilistic.py [--repeats 30] [--threads 1] [--markdown] [--summary] [--memory] [--accuracy]

**Timing** (always):
For every quantizable layer of the shipped models (on one test image and on the whole test
set as one batch, as ``refquant compare`` runs it) and for a few larger, ResNet-like layers
on one random image, and for each sampling stride γ ∈ {1, 2, 4, 8}:

* ``estimator`` — ``qparams_before`` as the engine calls it: the Numba patch sums, then the
  compiled moments → range → qparams (:mod:`refquant_probabilistic.estimate`), and the
  ``QParams``;
* ``reference`` — ``qparams_before_reference``: the same numbers through the NumPy reference
  (``image_ranges``, the union, ``qparams_from_range``), for comparison: its fixed cost is
  that of thirty-odd NumPy calls on ``[N]``-sized arrays;
* ``patch sums`` — the Numba pass alone (the part that grows with the input);
* ``layer`` — the fused Numba kernel call (``conv2d_requant`` / ``matmul_requant``) of the
  same layer on the same input, which the estimate precedes.

The minimum over ``--repeats`` interleaved calls, after one warm-up call each (on a shared
machine the minimum is the measurement least disturbed by other work; medians swing with
the load). Numba runs on
``--threads`` threads (default 1: the machine these numbers come from is shared, and one
thread keeps kernel and estimator on equal footing). Timings are reported, never asserted.

**Memory** (``--memory``): for the test set as one batch (bytes divided by the number of
images, as ``refquant compare`` reports them: every buffer scales with the batch, and the
batch makes Python's own small objects negligible in ``tracemalloc``'s counts), per quantizable layer
and for static-minmax, probabilistic and dynamic activations (8 bits, min-max weights per
channel): the engine's ``working_bytes``; ``tracemalloc``'s peak during the step on the Numba
backend (:func:`~refquant_probabilistic.memory.traced_step_bytes`); and ``tracemalloc``'s
peak of the layer replayed with the reference kernels, tiled
(:func:`~refquant_probabilistic.memory.reference_layer_bytes`); plus each model's
``peak_working_bytes``.

**Accuracy per input** (``--accuracy``, minutes): every test image run alone (batch 1) — the
setting in which per-input strategies adapt to each image — for 8-, 6- and 4-bit activations
(8-bit min-max weights per channel), on the clean and every shifted test set.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.executor import quantize_model
from refquant.graph import Node
from refquant.kernels import fast
from refquant.numerics import make_requantizer, qparams_from_range, quantize
from refquant.registry import models, resolve_model
from refquant.strategies import LayerContext, LayerSpec, QuantizedWeight
from refquant_probabilistic import ProbabilisticActivations
from refquant.executor import peak_working_bytes
from refquant_probabilistic.diagnostics import (GAMMAS, interleaved_times, kept_tensors, layer_call, per_input_accuracy,
                                               per_tensor_input, with_gamma)
from refquant_probabilistic.memory import reference_layer_bytes, traced_step_bytes
from refquant_probabilistic.patches import patch_grid, patch_sums
from refquant_probabilistic.plans import probabilistic_plan

STRATEGY = ProbabilisticActivations()

# (name, input NCHW, weight OIHW, attributes): the shapes of a few ResNet-50 layers
LARGE = [
    ("conv 64→64 3×3 @56²", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("conv 128→128 3×3 @28²", (1, 128, 28, 28), (128, 128, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("conv 256→256 3×3 @14²", (1, 256, 14, 14), (256, 256, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("conv 256→64 1×1 @56²", (1, 256, 56, 56), (64, 256, 1, 1), {}),
    ("conv 3→64 7×7/2 @224²", (1, 3, 224, 224), (64, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
]


def _min_pair(first, second, repeats: int) -> tuple[float, float]:
    a, b = interleaved_times(first, second, repeats)
    return min(a), min(b)


def time_layer(name, layer_call, ctx, spec, q, qp, repeats: int) -> list[dict]:
    """Rows for one layer: γ, patches per image, estimator / patch-sums / layer ms, overhead %."""
    rows = []
    for gamma in GAMMAS:
        sp = with_gamma(spec, gamma)
        grid = patch_grid(q.shape, ctx.state["weight_shape"], ctx.attributes, gamma, name)
        zp = int(qp.zero_point)
        t_layer, t_est = _min_pair(layer_call, lambda: STRATEGY.qparams_before(q, qp, ctx, sp), repeats)
        _, t_ref = _min_pair(layer_call, lambda: STRATEGY.qparams_before_reference(q, qp, ctx, sp), repeats)
        _, t_sums = _min_pair(layer_call, lambda: patch_sums(q, zp, grid, name), repeats)
        rows.append({"layer": name, "images": int(q.shape[0]), "gamma": gamma, "patches": grid.count,
                     "layer_ms": 1e3 * t_layer, "estimator_ms": 1e3 * t_est, "reference_ms": 1e3 * t_ref,
                     "patch_sums_ms": 1e3 * t_sums, "estimator_pct": 100 * t_est / t_layer,
                     "reference_pct": 100 * t_ref / t_layer, "patch_sums_pct": 100 * t_sums / t_layer})
    return rows


def shipped_rows(repeats: int) -> list[dict]:
    data = load_digits()
    rows = []
    for model in sorted(models()):
        graph = resolve_model(model)
        qm = quantize_model(graph, probabilistic_plan(), digits_inputs(graph, data.calibration(32).x))
        for images in (1, len(data.test)):
            x = digits_inputs(graph, data.test.x[:images])
            feeds = {graph.inputs[0].name: x}
            tensors = kept_tensors(qm, feeds, qm.run(feeds, backend="numba", keep=True).records)
            for layer in qm.layers.values():
                q, qp = per_tensor_input(*tensors[layer.step.node.inputs[0]], layer.step.node.inputs[0])
                conv, attrs, args = layer_call(layer, q, qp)
                y_qp = STRATEGY.qparams_before(q, qp, layer.context, layer.act_spec)
                rq = make_requantizer(qp.scale, layer.weight.qparams.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                                      activation=layer.step.fused_activation)
                call = ((lambda a=args, r=rq, k=attrs: fast.conv2d_requant(*a, r, **k)) if conv
                        else (lambda a=args, r=rq: fast.matmul_requant(*a, r)))
                rows += time_layer(f"{model}/{layer.name}", call, layer.context, layer.act_spec, q, qp, repeats)
    return rows


def large_rows(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for name, x_shape, w_shape, attrs in LARGE:
        w = rng.normal(0, 0.05, w_shape).astype(np.float32)
        wqp = qparams_from_range(-np.abs(w).max(), np.abs(w).max(), "int8", symmetric=True, name=name)
        node = Node(name, "Conv", ["x", "w", "b"], ["y"], attrs)
        ctx = LayerContext(node, QuantizedWeight(quantize(w, wqp), wqp), rng.normal(0, 0.1, w_shape[0]).astype(np.float32),
                           dict(attrs), "relu")
        spec = LayerSpec(name, "Conv", 8, False, "per-tensor", False)
        STRATEGY.prepare(ctx, spec)
        q = rng.integers(0, 256, x_shape, dtype=np.uint8)
        qp = qparams_from_range(0.0, 4.0, "uint8")
        y_qp = STRATEGY.qparams_before(q, qp, ctx, spec)
        rq = make_requantizer(qp.scale, wqp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, activation="relu")
        args = (q, ctx.weight.values, int(qp.zero_point), wqp.zero_point, None)
        rows += time_layer(name, lambda a=args, r=rq, k=attrs: fast.conv2d_requant(*a, r, **k), ctx, spec, q, qp,
                           repeats)
    return rows


STRATEGIES = ("static-minmax", "probabilistic", "dynamic")


def memory_rows() -> list[dict]:
    data = load_digits()
    rows = []
    for model in sorted(models()):
        graph = resolve_model(model)
        cal = digits_inputs(graph, data.calibration(32).x)
        x = digits_inputs(graph, data.test.x)
        n = len(x)
        per = {}
        for a in STRATEGIES:
            qm = quantize_model(graph, probabilistic_plan(activations=a), cal)
            records = {r.name: r for r in qm.run(x, backend="numba").records}
            traced = {r["step"]: r["traced_bytes"] for r in traced_step_bytes(qm, x)}
            replay = {r["layer"]: r["traced_bytes"] for r in reference_layer_bytes(qm, x)}
            per[a] = (qm, records, traced, replay, peak_working_bytes(list(records.values())))
        for name in per["static-minmax"][0].layers:
            row = {"layer": f"{model}/{name}", "output": per["dynamic"][1][name].buffers["output"] / n}
            for a in STRATEGIES:
                short = a.split("-")[0][:4]
                row[f"engine_{short}"] = per[a][1][name].working_bytes / n
                row[f"numba_{short}"] = per[a][2][name] / n
                row[f"ref_tiled_{short}"] = per[a][3][name] / n
            rows.append(row)
        rows.append({"layer": f"{model} peak_working_bytes", "output": "",
                     **{f"engine_{a.split('-')[0][:4]}": per[a][4] / n for a in STRATEGIES}})
    return rows


def accuracy_rows() -> list[dict]:
    data = load_digits()
    sets = data.test_sets()
    rows = []
    for model in sorted(models()):
        graph = resolve_model(model)
        cal = digits_inputs(graph, data.calibration(32).x)
        for bits in (8, 6, 4):
            for label, a, options in (("static-minmax", "static-minmax", {}), ("dynamic", "dynamic", {}),
                                      ("probabilistic γ=1", "probabilistic", {"gamma": 1}),
                                      ("probabilistic γ=4", "probabilistic", {"gamma": 4})):
                qm = quantize_model(graph, probabilistic_plan(activations=a, bits=bits, **options), cal)
                acc = {s.name: 100 * per_input_accuracy(qm, digits_inputs(graph, s.x), s.y) for s in sets}
                shifted = [v for k, v in acc.items() if k != "test"]
                rows.append({"model": model, "act_bits": bits, "activations": label, "test": round(acc["test"], 2),
                             "shifted_mean": round(float(np.mean(shifted)), 2),
                             **{k: round(v, 2) for k, v in acc.items() if k != "test"}})
                print(rows[-1], flush=True)
    return rows


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _fmt_bytes(v) -> str:
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def _table(title: str, rows: list[dict], markdown: bool, fmt=_fmt) -> None:
    print(f"\n{title}\n")
    columns = list(rows[0])
    if markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            print("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    else:
        print("  ".join(f"{c:>14}" for c in columns))
        for r in rows:
            print("  ".join(f"{fmt(r.get(c, '')):>14}" for c in columns))


#: the condensed table of ``bench/RESULTS.md`` and the spec: these layers at 599 images, then at one
SUMMARY_LAYERS = (("digits-cnn/conv1", 599), ("digits-cnn/conv2", 599), ("digits-resnet/stem", 599),
                  ("digits-resnet/block1_conv1", 599), ("digits-resnet/block2_conv2", 599),
                  ("digits-mlp/fc1", 599), ("digits-resnet/fc", 599), ("digits-cnn/conv1", 1), ("digits-mlp/fc1", 1))


def summary_table(rows: list[dict]) -> str:
    """One Markdown line per layer (the :data:`SUMMARY_LAYERS` and every ResNet-like layer): the
    γ = 1 layer time and, for γ = 1 / 2 / 4 / 8, the patch sums, the whole compiled estimate and
    the NumPy reference as % of the layer."""
    by = {}
    for r in rows:
        by.setdefault((r["layer"], r["images"]), {})[r["gamma"]] = r
    keys = [k for k in SUMMARY_LAYERS if k in by] + [k for k in by if k[0].startswith("conv ")]
    lines = ["| layer | images | layer ms (γ=1 row) | patch sums % (γ = 1 / 2 / 4 / 8) | "
             "whole estimate % (compiled) | NumPy reference % |", "|---|---|---|---|---|---|"]
    for layer, images in keys:
        g = by[(layer, images)]
        cell = lambda col: " / ".join(f"{g[k][col]:.1f}" for k in GAMMAS)  # noqa: E731
        lines.append(f"| {layer} | {images} | {g[1]['layer_ms']:.3f} | {cell('patch_sums_pct')} | "
                     f"{cell('estimator_pct')} | {cell('reference_pct')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--memory", action="store_true", help="also the working-memory tables")
    parser.add_argument("--accuracy", action="store_true", help="also per-input accuracy (slow)")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing tables")
    parser.add_argument("--summary", action="store_true",
                        help="also the condensed timing table recorded in bench/RESULTS.md")
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    what = f"Numba, {args.threads} thread(s), minimum of {args.repeats}"
    if not args.no_timing:
        shipped, large = shipped_rows(args.repeats), large_rows(args.repeats)
        _table(f"estimator vs layer, shipped models ({what})", shipped, args.markdown)
        _table(f"estimator vs layer, ResNet-like layers ({what})", large, args.markdown)
        if args.summary:
            print(f"\nsummary ({what})\n")
            print(summary_table(shipped + large))
    if args.memory:
        _table("working bytes per image and layer, test set as one batch (engine accounting; tracemalloc on "
               "the Numba backend; tracemalloc on the reference kernels, tiled)", memory_rows(), args.markdown,
               _fmt_bytes)
    if args.accuracy:
        _table("accuracy per input (batch 1), % — 8-bit min-max weights per channel", accuracy_rows(), args.markdown)


if __name__ == "__main__":
    main()
