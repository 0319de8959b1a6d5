"""EfficientNet-Lite0 on the real photo views: float fidelity against onnxruntime, float time
per image, and what quantization does today (per-channel and per-tensor weights).

A third plan is an experiment, not a refquant strategy: ``minmax-floor`` (registered here at
run time) is per-channel symmetric min-max whose channel range is floored at ``2^-12`` times
the layer's largest channel range, ``absmax[c] <- max(absmax[c], 2^-12 max_c absmax)``, so a
"dead" channel left by BN folding (max |w| ~ 1e-9) no longer gets a scale that pushes its
int32 bias out of range.  It shows what per-channel weights could reach once the bias
overflow is handled (spec/models/efficientnet-lite0.md, proposal).

    python bench/effnet_lite0.py [--out bench/effnet_lite0.json] [--views N]

Needs the extras ``models`` and ``onnx``.  Prints a JSON summary (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import numpy as np

from refquant.data.imagenet import imagenet_class_names
from refquant.data.photos import photo_views
from refquant.executor import quantize_model, run_float
from refquant.hookspecs import hookimpl
from refquant.onnx_io import export_float, run_onnxruntime
from refquant.zoo import load_real_model, weight_file
from refquant.zoo.efficientnet_lite import preprocess

FLOOR_REL = 2.0 ** -12


class MinMaxFloorWeights:
    """Per-channel symmetric min-max with each channel's range floored at 2^-12 of the layer's largest."""

    name = "minmax-floor"
    kind = "weights"
    doc = __doc__

    def quantize_weight(self, w, spec):
        from refquant.numerics import qparams_from_range, quantize
        from refquant.strategies import QuantizedWeight, weight_groups

        rows = weight_groups(w, per_channel=spec.per_channel, layer=spec.layer)
        absmax = np.abs(rows).max(axis=1).astype(np.float64)
        absmax = np.maximum(absmax, FLOOR_REL * absmax.max())
        w32 = np.asarray(w, dtype=np.float32)
        if spec.per_channel:
            qp = qparams_from_range(-absmax, absmax, spec.fmt, symmetric=True, axis=0, name=f"{spec.layer}.weight")
        else:
            qp = qparams_from_range(-absmax[0], absmax[0], spec.fmt, symmetric=True, name=f"{spec.layer}.weight")
        return QuantizedWeight(values=quantize(w32, qp), qparams=qp,
                               bits_per_weight=spec.bits + qp.scale.size * (32 + spec.bits) / w32.size)


class _ExperimentPlugin:
    @staticmethod
    @hookimpl
    def register_quantizers(register):
        register(MinMaxFloorWeights())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--views", type=int, default=None, help="only the first N views")
    ap.add_argument("--calibration", type=int, default=16)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--plans", nargs="*", default=None, help="only these plan labels")
    args = ap.parse_args()

    names = imagenet_class_names()
    t0 = time.perf_counter()
    graph = load_real_model("efficientnet-lite0")
    load_s = time.perf_counter() - t0
    views = photo_views()
    x = preprocess(views.images)
    if args.views:
        x, vnames = x[: args.views], views.names[: args.views]
    else:
        vnames = views.names
    out = graph.outputs[0]

    # float: refquant, one image at a time for the per-image time, then onnxruntime
    times, ref = [], []
    for i in range(len(x)):
        t = time.perf_counter()
        ref.append(run_float(graph, {"x": x[i:i + 1]})[out][0])
        times.append(time.perf_counter() - t)
    ref = np.stack(ref)
    model = export_float(graph).model
    ort = np.concatenate([run_onnxruntime(model, {"x": x[i:i + 8]})[out] for i in range(0, len(x), 8)])
    top_ref, top_ort = ref.argmax(1), ort.argmax(1)
    summary = {
        "weights": str(weight_file("efficientnet-lite0")),
        "load_seconds": round(load_s, 3),
        "views": len(x),
        "float": {
            "top1_agree_onnxruntime": int((top_ref == top_ort).sum()),
            "max_abs_logit_diff": float(np.abs(ref - ort).max()),
            "max_logit_abs": float(np.abs(ref).max()),
            "per_image_seconds_median": round(float(np.median(times)), 4),
            "per_image_seconds_min": round(float(np.min(times)), 4),
        },
        "top1": {n: names[k] for n, k in zip(vnames, top_ref)},
    }

    calib = x[:: max(1, len(x) // args.calibration)][: args.calibration]
    from refquant.plugins import register_plugin

    register_plugin(_ExperimentPlugin, "bench-effnet-experiment")
    plans = {"per-channel": "weights=minmax:8:per-channel activations=static-minmax:8",
             "per-tensor": "weights=minmax:8 activations=static-minmax:8",
             "per-channel-floored (experiment)": "weights=minmax-floor:8:per-channel activations=static-minmax:8"}
    summary["quantized"] = {}
    for label, plan in plans.items():
        if args.plans and label.split(" ")[0] not in args.plans:
            continue
        rec = {"plan": plan, "calibration": len(calib), "backend": args.backend}
        try:
            t = time.perf_counter()
            qm = quantize_model(graph, plan, calib)
            rec["quantize_seconds"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            q = np.concatenate([qm.run({"x": x[i:i + 8]}, backend=args.backend).outputs[out]
                                for i in range(0, len(x), 8)])
            rec["run_seconds_per_image"] = round((time.perf_counter() - t) / len(x), 4)
            rec["top1_agree_float"] = int((q.argmax(1) == top_ref).sum())
            rec["max_abs_logit_diff_vs_float"] = float(np.abs(q - ref).max())
        except Exception as exc:  # noqa: BLE001 - the failure is what is measured
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
        summary["quantized"][label] = rec
        print(label, json.dumps(rec), flush=True)

    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
