"""Every registered weight × activation strategy, per tensor and per channel, 8 and 4 bits, on
EfficientNet-Lite0: quantize on a few calibration views, run a few test views, record what happens.

    python bench/effnet_all_plans.py [--calibration 2] [--test 1] [--backend numba] [--out FILE]

For each plan: ``ok`` or the error (type and message), the int32 bias rule's widened channels
(:mod:`refquant.executor.biasrule`), the layers that ran as float islands (``kernel ==
"float"`` in the per-layer records: float-execution weights, and the table's dequantize →
float → quantize operators such as Add), top-1 agreement with the float model on the test
views, logit SQNR, seconds. Views: calibration from ``photo_data``'s calibration pool, test
the first photos' ``center`` views. Output: JSON (``bench/effnet_all_plans.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import numpy as np

from refquant.compare import photo_data
from refquant.executor import quantize_model, run_float
from refquant.metrics import sqnr_db, topk_agreement
from refquant.plan import Plan, TensorPlan
from refquant.registry import quantizers, resolve_model


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=int, default=1)
    ap.add_argument("--test", type=int, default=1)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--weights", nargs="+", default=None)
    ap.add_argument("--granularity", nargs="+", default=["per-channel", "per-tensor"])
    ap.add_argument("--activations", nargs="+", default=None)
    ap.add_argument("--out", default="bench/effnet_all_plans.json")
    args = ap.parse_args()
    g = resolve_model("efficientnet-lite0")
    d = photo_data(calibration=args.calibration, views=1, corruptions=[])
    x = d.sets[0][1][: args.test]
    ref = run_float(g, {g.inputs[0].name: x})[g.outputs[0]]
    # lloydmax designs a codebook per channel (minutes on EfficientNet): last
    weights = args.weights or sorted(quantizers("weights"), key=lambda n: (n == "lloydmax", n))
    acts = args.activations or sorted(quantizers("activations"))
    rows = []
    plans = [(b, gran, w, a) for b in args.bits for gran in args.granularity for w in weights for a in acts]
    _cache_weights()
    t_all = time.perf_counter()
    for i, (b, gran, w, a) in enumerate(plans):
        plan = Plan(TensorPlan(w, b, gran, True, True), TensorPlan(a, b, "per-tensor", False, False))
        row = {"bits": b, "granularity": gran, "weights": w, "activations": a}
        t0 = time.perf_counter()
        try:
            qm = quantize_model(g, plan, d.calibration)
            res = qm.run(x, backend=args.backend)
            out = res.outputs[g.outputs[0]]
            widened = {l.name: len(l.widening.channels) for l in qm.layers.values() if l.widening is not None}
            islands = Counter(r.op for r in res.records if r.kernel == "float")
            row.update(ok=True, widened_layers=len(widened), widened_channels=sum(widened.values()),
                       float_islands=dict(islands), top1_agreement=topk_agreement(ref, out, 1),
                       sqnr_db=round(float(sqnr_db(ref, out)), 2))
        except Exception as exc:  # noqa: BLE001 - recorded, that is the point
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _write(args, rows, len(x), t_all)
        print(f"{i + 1}/{len(plans)} {w}:{b}:{gran} {a}: "
              + (f"ok top1 {row['top1_agreement']:.2f} sqnr {row['sqnr_db']} widened {row['widened_channels']} "
                 f"islands {row['float_islands']}" if row["ok"] else row["error"][:160])
              + f" ({row['seconds']} s)", file=sys.stderr, flush=True)
    summary = _write(args, rows, len(x), t_all)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0 if summary["ok"] == len(rows) else 1


def _write(args, rows, n_test, t_all) -> dict:
    """Write the JSON after every plan (a partial run keeps what it measured)."""
    summary = {"model": "efficientnet-lite0", "calibration_views": args.calibration, "test_views": int(n_test),
               "backend": args.backend, "plans": len(rows), "ok": sum(r["ok"] for r in rows),
               "seconds": round(time.perf_counter() - t_all, 1), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _cache_weights() -> None:
    """Quantize each layer's weight once per (strategy, spec): the activation strategies of one
    weight plan share it (weight quantization does not depend on them; the bias rule copies)."""
    import refquant.executor.quantized as qmod

    cache: dict = {}
    original = qmod.get_quantizer

    class Cached:
        def __init__(self, strategy):
            self.strategy, self.name = strategy, strategy.name

        def quantize_weight(self, w, spec):
            key = (self.name, spec)
            if key not in cache:
                cache.clear() if len(cache) > 200 else None
                cache[key] = self.strategy.quantize_weight(w, spec)
            return cache[key]

    def get_quantizer(name, kind):
        strategy = original(name, kind)
        return Cached(strategy) if kind == "weights" else strategy

    qmod.get_quantizer = get_quantizer


if __name__ == "__main__":
    sys.exit(main())
