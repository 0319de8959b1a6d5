"""static-entropy's KL search on PP-OCRv4's recogniser: the tensors where the unlimited search
collapses, the search within ``max_saturation`` and onnxruntime's ``Entropy`` calibrator on the
same values (spec/strategies/static.md, "Why the limit is part of the search").

    python bench/ocr_entropy.py [--crops halves|full]

Calibration values: ``refquant compare ppocrv4-rec``'s calibration inputs (``halves``, the seven
half-line crops of page.png) or its evaluation inputs (``full``), run one image at a time
through the float model. For each listed tensor and 8/4 bits (unsigned asymmetric, per tensor):
the threshold, KL and saturated share of the unlimited search (``max_saturation=1``) and of the
search within 0.9, and onnxruntime's ``HistogramCollector("entropy", symmetric=False,
num_bins=128, num_quantized_bins=128)`` (``quantize_static``'s defaults) fed the same images.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np

from refquant.compare_ocr import ocr_data
from refquant.executor import run_float
from refquant.zoo import import_ppocr, weight_file
from refquant_static.entropy import first_candidate, kl_divergences
from refquant_static.histogram import SignMagnitudeHistogram

TENSORS = ("p2o.Add.5", "p2o.Clip.1", "p2o.Sqrt.1", "p2o.ReduceMean.19", "p2o.Sigmoid.11")


def search(mags: np.ndarray, levels: int, limit: float) -> tuple[int, float, float]:
    """``(i*, KL, saturated share)`` of the search over candidates within ``limit``."""
    used = int(np.flatnonzero(mags)[-1]) + 1
    i, kl = kl_divergences(mags[:used], levels)
    sat = (mags.sum() - np.cumsum(mags)[i - 1]) / mags.sum()
    keep = (i >= first_candidate(levels, mags.shape[0])) & (sat <= limit)
    i, kl, sat = i[keep], kl[keep], sat[keep]
    j = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return int(i[j]), float(kl[j]), float(sat[j])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", choices=["halves", "full"], default="halves")
    args = ap.parse_args()
    g = import_ppocr(weight_file("ppocrv4-rec"), "rec")
    calib, sets = ocr_data("ppocrv4-rec")
    data = calib if args.crops == "halves" else sets[0][1]
    got: dict = {}
    for k in range(len(data)):
        run_float(g, {"x": data[k:k + 1]},
                  observe=lambda ev: ev.step.output in TENSORS and got.setdefault(ev.step.output, []).append(
                      np.array(ev.y, np.float32)))
    from onnxruntime.quantization.calibrate import HistogramCollector

    for name in TENSORS:
        batches = got[name]
        y = np.concatenate(batches)
        h = SignMagnitudeHistogram(1, 2048)
        h.add(y.reshape(1, -1))
        mags, w = h.magnitudes()[0], h.width[0]
        print(f"{name}: {y.size} values in [{y.min():.4g}, {y.max():.4g}], |y| median {np.median(np.abs(y)):.4g}")
        for bits in (8, 4):
            levels = 2**bits if (y.min() >= 0 or y.max() <= 0) else 2 ** (bits - 1)
            for limit in (1.0, 0.9):
                i, kl, sat = search(mags, levels, limit)
                print(f"  {bits}-bit, within {limit:g}: threshold {i * w:.4g} (bin {i}), KL {kl:.4g}, "
                      f"saturates {100 * sat:.2f} %")
        ort = HistogramCollector("entropy", False, 128, 128, None, None)
        with contextlib.redirect_stdout(io.StringIO()):
            for b in batches:
                ort.collect({name: b})
            lo, hi = ort.compute_collection_result()[name][:2]
        sat = np.mean(((y <= lo) & (y < 0)) | ((y >= hi) & (y > 0)))
        print(f"  onnxruntime Entropy: [{float(lo):.4g}, {float(hi):.4g}] "
              f"({len(ort.histogram_dict[name][0])} bins), saturates {100 * sat:.2f} % of all values")


if __name__ == "__main__":
    main()
