"""Calibration time: refquant's static calibrators against onnxruntime's ``quantize_static``.

EfficientNet-Lite0 (real weights, extra ``models``), per-tensor weights, the same calibration
views for both (``refquant.compare.photo_data``: 16 non-center views by default). Each
configuration is timed ``--repeats`` times, interleaved (refquant minmax, onnxruntime MinMax,
refquant percentile, … in one round, then the next round), in one process, both at the
machine's thread count (Numba's default; onnxruntime's calibration session's default):

* refquant: ``quantize_model(graph, "weights=minmax:8 activations=static-X:8", views)`` —
  the float calibration pass, the observers, the weights, the int32 bias rule;
* onnxruntime: ``quantize_static`` (QDQ, uint8 activations, int8 weights, per tensor) of the
  exported float model, calibrating with ``MinMax``, ``Percentile`` or ``Entropy`` and writing
  the quantized model (``refquant.onnx_io.anchors.ort_quantize_static``).

Prints one JSON document: medians of wall and process CPU seconds, and refquant ÷ onnxruntime
for the matching calibrator (minmax–MinMax, percentile–Percentile, entropy–Entropy; mse has no
onnxruntime counterpart), and the 1/5/15-minute load averages before and after (the machine
may be shared: the interleaving keeps the ratios meaningful). Record the result in
bench/RESULTS.md with the date and the CPU.

    python bench/calibration.py [--views 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

from refquant.compare import photo_data
from refquant.executor import quantize_model
from refquant.host import cpu_summary
from refquant.onnx_io.anchors import ort_quantize_static
from refquant.registry import resolve_model

PAIRS = {"static-minmax": "MinMax", "static-percentile": "Percentile", "static-entropy": "Entropy",
         "static-mse": None}


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--views", type=int, default=16, help="calibration views (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    args = p.parse_args(argv)

    graph = resolve_model("efficientnet-lite0")
    calib = photo_data(args.views, views=1, corruptions=()).calibration
    jobs = []
    for act, method in PAIRS.items():
        jobs.append((f"refquant {act}", lambda a=act: quantize_model(graph, f"weights=minmax:8 activations={a}:8", calib)))
        if method:
            jobs.append((f"onnxruntime {method}",
                         lambda m=method: ort_quantize_static(graph, calib, m, per_channel=False)))
    load_before = os.getloadavg()
    jobs[0][1]()  # warm-up: Numba's compilation and caches, onnxruntime's first session
    jobs[1][1]()
    times: dict = {name: [] for name, _ in jobs}
    for _ in range(args.repeats):
        for name, fn in jobs:
            gc.collect()  # the previous job's garbage (onnxruntime sessions, arrays) freed untimed
            times[name].append(timed(fn))
    rows = {name: {"wall_s": round(statistics.median(t[0] for t in ts), 2),
                   "cpu_s": round(statistics.median(t[1] for t in ts), 2)} for name, ts in times.items()}
    ratios = {act: round(rows[f"refquant {act}"]["wall_s"] / rows[f"onnxruntime {m}"]["wall_s"], 2)
              for act, m in PAIRS.items() if m}
    given = sys.argv[1:] if argv is None else list(argv)
    print(json.dumps({"command": " ".join(["python bench/calibration.py", *given]),
                      "date": time.strftime("%Y-%m-%d"), "cpu": cpu_summary(), "views": args.views,
                      "repeats": args.repeats, "load_average_before_after": [list(load_before), list(os.getloadavg())],
                      "median": rows, "refquant_over_onnxruntime_wall": ratios,
                      "wall_s_per_round": {name: [round(t[0], 2) for t in ts] for name, ts in times.items()}},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
