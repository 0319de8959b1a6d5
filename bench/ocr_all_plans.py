"""Every registered weight × activation strategy, per tensor and per channel, 8 and 4 bits, on
both PP-OCRv4 models at small inputs: quantize, run, record what happens.

    python bench/ocr_all_plans.py [--weights ...] [--activations ...] [--out FILE]

Inputs (small, so the grid runs in minutes): the detector imported at 32×96 and run on the
page.png strip of rows 100..131, columns 0..95 (two text lines) — calibrated on the strip
below it (rows 132..163); the recogniser imported at width 160 and run on the crop of the
"histogram of" words (page rows 111..131, columns 4..110), calibrated on the ">>> markers"
crop (rows 160..190, columns 15..120). For each plan: ``ok`` or the error, the float islands
(``kernel == "float"`` records, by operator), the output SQNR against the float model,
seconds. Output: JSON (``bench/ocr_all_plans.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import numpy as np

from refquant.data.text_images import load_text_image
from refquant.executor import quantize_model, run_float
from refquant.metrics import sqnr_db
from refquant.plan import Plan, TensorPlan
from refquant.registry import quantizers
from refquant.zoo import import_ppocr, weight_file
from refquant.zoo.ppocr import det_preprocess, rec_preprocess


def small_inputs():
    """``{model: (graph, calibration, test)}`` at the small sizes of the module docstring."""
    page = load_text_image("page")
    det = import_ppocr(weight_file("ppocrv4-det"), "det", (32, 96))
    rec = import_ppocr(weight_file("ppocrv4-rec"), "rec", 160)
    return {
        "ppocrv4-det": (det, det_preprocess(page[132:164, 0:96]), det_preprocess(page[100:132, 0:96])),
        "ppocrv4-rec": (rec, rec_preprocess([page[160:191, 15:121]], 160), rec_preprocess([page[111:132, 4:111]], 160)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--weights", nargs="+", default=None)
    ap.add_argument("--granularity", nargs="+", default=["per-channel", "per-tensor"])
    ap.add_argument("--activations", nargs="+", default=None)
    ap.add_argument("--models", nargs="+", default=["ppocrv4-det", "ppocrv4-rec"])
    ap.add_argument("--out", default="bench/ocr_all_plans.json")
    args = ap.parse_args()
    data = small_inputs()
    weights = args.weights or sorted(quantizers("weights"))
    acts = args.activations or sorted(quantizers("activations"))
    rows = []
    for model in args.models:
        g, calib, x = data[model]
        ref = run_float(g, {"x": x})[g.outputs[0]]
        for b in args.bits:
            for gran in args.granularity:
                for w in weights:
                    for a in acts:
                        plan = Plan(TensorPlan(w, b, gran, True, True), TensorPlan(a, b, "per-tensor", False, False))
                        t0 = time.perf_counter()
                        row = {"model": model, "bits": b, "granularity": gran, "weights": w, "activations": a}
                        try:
                            res = quantize_model(g, plan, calib).run(x, backend="numba")
                            out = res.outputs[g.outputs[0]]
                            row.update(ok=bool(np.isfinite(out).all()), sqnr_db=round(float(sqnr_db(ref, out)), 2),
                                       float_islands=dict(Counter(r.op for r in res.records if r.kernel == "float")))
                        except Exception as exc:  # recorded, not hidden: the grid reports every failure
                            row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                        row["seconds"] = round(time.perf_counter() - t0, 2)
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} plans ran; failed: {len(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
