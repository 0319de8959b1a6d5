"""EfficientNet-Lite0 golden sets in onnxruntime: mismatching elements of the QOperator export.

    python bench/effnet_golden.py [--views chelsea/center coffee/flip] [--calibration 4] > bench/effnet_golden.json

For int8 activations (``static-minmax:8:signed``) and uint8 activations (``static-minmax:8``), both
with ``minmax:8:per-channel`` weights: ``refquant golden export efficientnet-lite0 DIR --onnx``,
then the set's ``onnx/model.onnx`` in onnxruntime (CPU, one thread, no graph optimizations) on
its own inputs; counts the elements of every output (each layer's integers and the logits) that
differ from refquant's, and the largest integer difference per layer. Records
``exact_integer_products()`` (whether onnxruntime multiplies u8·s8 exactly on this CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from refquant.cli import main
from refquant.golden.onnx_layout import read_output_dir, read_pb
from refquant.host import cpu_summary
from refquant.onnx_io import ort_session
from refquant.onnx_io.runtime import exact_integer_products


def measure(activations, views, calibration, tmp) -> dict:
    root = Path(tmp) / activations.replace(":", "_")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        code = main(["golden", "export", "efficientnet-lite0", str(root), "--views", *views, "--calibration",
                     str(calibration), "--activations", activations, "--onnx"])
    assert code == 0
    t1 = time.perf_counter()
    ds = root / "onnx" / "test_data_set_0"
    feeds = dict(read_pb(p) for p in sorted(ds.glob("input_*.pb")))
    expected = read_output_dir(ds)
    got = ort_session(str(root / "onnx" / "model.onnx")).run([n for n, _, _ in expected], feeds)
    bad = total = 0
    layers = {}
    for (name, want, _), have in zip(expected, got):
        n = int(np.count_nonzero(want != have))
        if n and want.dtype.kind != "f":
            layers[name] = {"mismatching": n, "elements": int(want.size),
                            "max_abs_lsb": int(np.abs(want.astype(np.int64) - have.astype(np.int64)).max())}
        bad += n
        total += int(want.size)
    return {"activations": activations, "mismatching_elements": bad, "elements": total, "outputs": len(expected),
            "export_s": round(t1 - t0, 1), "layers_differing": layers}


def run(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", nargs="+", default=["chelsea/center", "coffee/flip"])
    p.add_argument("--calibration", type=int, default=4)
    args = p.parse_args(argv)
    import onnxruntime
    with tempfile.TemporaryDirectory() as tmp:
        cases = [measure(a, args.views, args.calibration, tmp) for a in ("static-minmax:8:signed", "static-minmax:8")]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_summary(),
            "onnxruntime": onnxruntime.__version__, "u8s8_exact": exact_integer_products(),
            "weights": "minmax:8:per-channel", "views": args.views, "calibration": args.calibration, "cases": cases}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
