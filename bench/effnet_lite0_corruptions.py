"""How much each ImageNet-C-style corruption moves the float EfficientNet-Lite0: top-1 on the
corrupted views equal to top-1 on the clean views, per corruption and severity.

    python bench/effnet_lite0_corruptions.py [--severities 1 3 5] [--out bench/effnet_lite0_corruptions.json]

Needs the extra ``models``.  Float only (the shift sets are for judging quantizers; this
records what the float model itself does on them).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from refquant.data.photos import CORRUPTIONS, corrupt, photo_views
from refquant.executor import run_float
from refquant.zoo import load_real_model
from refquant.zoo.efficientnet_lite import preprocess


def top1(graph, images: np.ndarray, batch: int = 10) -> np.ndarray:
    out = graph.outputs[0]
    return np.concatenate([run_float(graph, {"x": preprocess(images[i:i + batch])})[out].argmax(1)
                           for i in range(0, len(images), batch)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--severities", type=int, nargs="*", default=[1, 3, 5])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    graph = load_real_model("efficientnet-lite0")
    views = photo_views()
    clean = top1(graph, views.images)
    rows = []
    for name in CORRUPTIONS:
        for s in args.severities:
            t = time.perf_counter()
            images = corrupt(views.images, name, s, seed=0)
            make_s = time.perf_counter() - t
            agree = int((top1(graph, images) == clean).sum())
            row = {"corruption": name, "severity": s, "views": len(images), "top1_equal_clean": agree,
                   "make_seconds": round(make_s, 2),
                   "mean_abs_pixel_change": round(float(np.abs(images.astype(int) - views.images).mean()), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
