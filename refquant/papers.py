"""The three source papers' comparisons on a real network, EfficientNet-Lite0 (``spec/strategies/*.md``).

::

    python -m refquant.papers shift    [--photos N] [--severity 3] [--calibration 8] [--json]
    python -m refquant.papers lloydmax [--photos N] [--bits 4 3] [--calibration 8] [--json]
    python -m refquant.papers statqat  [--bits 4 8] [--json]

Everything runs on ``efficientnet-lite0`` (``refquant.zoo``), the photo views of
``refquant.data.photos`` and the registered strategies by name. Test views: the ``center`` view
of the first ``photos`` photos (in :data:`~refquant.data.photos.PHOTOS` order; default all 11);
calibration: ``calibration`` non-``center`` views (:func:`refquant.compare.photo_data`, never a
test view). Fidelity is to the float model: ``top1`` = the fraction of views whose quantized
top-1 class is the float model's, ``sqnr_db`` = 10·log10(Σ z² / Σ (ẑ − z)²) over the set's logits.
Every image runs alone (batch 1), so per-input strategies (``dynamic``, ``probabilistic``) see
one image, as the paper's setting, and the Numba backend runs every plan.

* ``shift`` (arXiv 2505.10689): weights ``minmax:8:per-channel``; activations ``static-minmax``,
  ``dynamic``, ``probabilistic`` (its defaults), each at 8 and 4 bits (uint8/uint4 per tensor);
  sets: the clean views and each ImageNet-C corruption of them at ``severity``.
* ``lloydmax`` (arXiv 2412.07391): weights ``lloydmax`` vs ``minmax`` (uniform, the tensor's or
  channel's own range) at ``bits`` (default 4 and 3), per tensor (the paper's per-layer codebook)
  and per channel, activations ``static-minmax:8``; per plan the weight MSE of every Conv/Gemm
  (of the weights the kernels use, ``dequantize()``, against the float weights, float64) summed
  as its median and mean ratio to min-max's and the count of layers where Lloyd-Max is lower,
  and top-1 agreement and SQNR on the clean views.
* ``statqat`` (arXiv 2605.17745): per Conv/Gemm, the weight SNR 10·log10(Σ w² / Σ (w − ŵ)²) of
  ``minmax``, of ``statqat-analytic`` with the prior forced to ``gaussian`` (the paper's κ·σ rule)
  and of ``statqat-analytic`` (prior ``auto``), per tensor and per channel, at ``bits``; no data.

``--json`` prints the rows with the command line, UTC date and machine; otherwise a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .compare import photo_data
from .data.photos import CORRUPTIONS, PHOTOS, corrupt, photo_views
from .executor import quantize_model, run_float
from .executor.quantized import weight_matrix
from .host import cpu_summary
from .metrics import snr_db, sqnr_db, topk_agreement
from .plan import Plan, TensorPlan
from .registry import get_quantizer, resolve_model
from .strategies import LayerSpec
from .zoo.efficientnet_lite import preprocess

__all__ = ["MODEL", "shift_rows", "lloydmax_rows", "statqat_rows", "main"]

MODEL = "efficientnet-lite0"
SHIFT_ACTIVATIONS = ("static-minmax", "dynamic", "probabilistic")


def _views(photos: int) -> np.ndarray:
    if not 1 <= photos <= len(PHOTOS):
        raise ValueError(f"photos must be in 1..{len(PHOTOS)}, got {photos}")
    return photo_views(list(PHOTOS)[:photos], ["center"]).images


def _logits(fn, x) -> np.ndarray:
    return np.concatenate([fn(x[i:i + 1]) for i in range(len(x))])


def _fidelity(ref, out) -> dict:
    return {"top1": topk_agreement(ref, out, 1), "agree": int(np.sum(ref.argmax(1) == out.argmax(1))),
            "images": int(len(ref)), "sqnr_db": round(float(sqnr_db(ref, out)), 3)}


def _plan(w: str, wbits: int, gran: str, a: str, abits: int) -> Plan:
    return Plan(TensorPlan(w, wbits, gran, True, True), TensorPlan(a, abits, "per-tensor", False, False))


def _float_logits(graph, x):
    name, out = graph.inputs[0].name, graph.outputs[0]
    return _logits(lambda xb: run_float(graph, {name: xb})[out], x)


def shift_rows(photos: int = len(PHOTOS), severity: int = 3, calibration: int = 8, bits=(8, 4),
               activations=SHIFT_ACTIVATIONS, corruptions=CORRUPTIONS, backend: str = "numba", log=None) -> list:
    """One row per (activation strategy, bits, set): top-1 agreement and logit SQNR (module doc)."""
    graph = resolve_model(MODEL)
    views = _views(photos)
    sets = {"clean": preprocess(views)}
    sets.update({f"{c}-{severity}": preprocess(corrupt(views, c, severity)) for c in corruptions})
    calib = photo_data(calibration, views=1, corruptions=()).calibration
    ref = {k: _float_logits(graph, x) for k, x in sets.items()}
    rows = []
    for b in bits:
        for a in activations:
            plan = _plan("minmax", 8, "per-channel", a, b)
            qm = quantize_model(graph, plan, calib)
            t0 = time.perf_counter()
            for name, x in sets.items():
                out = _logits(lambda xb: qm.run({graph.inputs[0].name: xb}, backend=backend).outputs[graph.outputs[0]], x)
                rows.append({"activations": a, "bits": b, "set": name, **_fidelity(ref[name], out)})
            if log:
                log(f"{a}:{b} {time.perf_counter() - t0:.0f} s")
    return rows


def _weight_mse(graph, qm) -> dict:
    """Per quantized Conv/Gemm layer: mean (w − dequantize(q))² in float64."""
    out = {}
    for node in graph.nodes:
        if node.name in qm.layers:
            w = weight_matrix(graph, node).astype(np.float64)
            q = qm.layers[node.name].weight.dequantize().astype(np.float64).reshape(w.shape)
            out[node.name] = float(np.mean((w - q) ** 2))
    return out


def lloydmax_rows(photos: int = len(PHOTOS), bits=(4, 3), granularities=("per-tensor", "per-channel"),
                  calibration: int = 8, backend: str = "numba", log=None) -> list:
    """One row per (weights, bits, granularity): weight-MSE summary and clean-view fidelity (module doc)."""
    graph = resolve_model(MODEL)
    x = preprocess(_views(photos))
    calib = photo_data(calibration, views=1, corruptions=()).calibration
    ref = _float_logits(graph, x)
    rows = []
    for b in bits:
        for gran in granularities:
            mses = {}
            for w in ("minmax", "lloydmax"):
                t0 = time.perf_counter()
                qm = quantize_model(graph, _plan(w, b, gran, "static-minmax", 8), calib)
                design = time.perf_counter() - t0
                mses[w] = _weight_mse(graph, qm)
                name, out = graph.inputs[0].name, graph.outputs[0]
                logits = _logits(lambda xb: qm.run({name: xb}, backend=backend).outputs[out], x)
                rows.append({"weights": w, "bits": b, "granularity": gran, "quantize_s": round(design, 1),
                             **_fidelity(ref, logits)})
                if log:
                    log(f"{w}:{b}:{gran} quantize {design:.0f} s")
            ratio = np.array([mses["lloydmax"][k] / mses["minmax"][k] for k in mses["minmax"]
                              if mses["minmax"][k] > 0])
            summary = {"layers": len(mses["minmax"]), "median_mse_ratio": round(float(np.median(ratio)), 4),
                       "mean_mse_ratio": round(float(np.mean(ratio)), 4),
                       "max_mse_ratio": round(float(np.max(ratio)), 4),
                       "layers_lloydmax_lower": int(np.sum(ratio < 1)),
                       "total_mse_minmax": float(np.sum(list(mses["minmax"].values()))),
                       "total_mse_lloydmax": float(np.sum(list(mses["lloydmax"].values())))}
            rows[-1]["mse_vs_minmax"] = summary
    return rows


def statqat_rows(bits: int = 4) -> list:
    """Per Conv/Gemm: weight SNR (dB) of min-max, the Gaussian κ·σ scale and ``statqat-analytic``."""
    graph = resolve_model(MODEL)
    rows = []
    methods = (("minmax", "minmax", ()), ("gaussian", "statqat-analytic", (("prior", "gaussian"),)),
               ("statqat", "statqat-analytic", ()))
    for node in graph.nodes:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w = weight_matrix(graph, node)
        w64 = w.astype(np.float64)
        row = {"layer": node.name, "shape": list(w.shape), "bits": bits}
        for gran in ("per-tensor", "per-channel"):
            for label, strategy, options in methods:
                spec = LayerSpec(node.name, node.op_type, bits, True, gran, True, options)
                q = get_quantizer(strategy, "weights").quantize_weight(w, spec).dequantize().astype(np.float64)
                row[f"{label} {gran}"] = round(snr_db(float(np.sum(w64 * w64)), float(np.sum((w64 - q) ** 2))), 3)
        rows.append(row)
    return rows


def _markdown(rows: list) -> str:
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    extra = [(i, k, v) for i, r in enumerate(rows) for k, v in r.items() if isinstance(v, dict)]
    lines += [f"row {i} {k}: {json.dumps(v)}" for i, k, v in extra]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m refquant.papers", description=__doc__.splitlines()[0])
    p.add_argument("table", choices=("shift", "lloydmax", "statqat"))
    p.add_argument("--photos", type=int, default=len(PHOTOS), help="center views of the first N photos")
    p.add_argument("--severity", type=int, default=3, choices=(1, 2, 3, 4, 5))
    p.add_argument("--calibration", type=int, default=8, help="non-center calibration views")
    p.add_argument("--bits", type=int, nargs="+", default=None)
    p.add_argument("--granularity", nargs="+", default=["per-tensor", "per-channel"],
                   choices=("per-tensor", "per-channel"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if args.table == "shift":
        rows = shift_rows(args.photos, args.severity, args.calibration, tuple(args.bits or (8, 4)), log=log)
    elif args.table == "lloydmax":
        rows = lloydmax_rows(args.photos, tuple(args.bits or (4, 3)), tuple(args.granularity), args.calibration,
                             log=log)
    else:
        rows = [r for b in (args.bits or (4,)) for r in statqat_rows(b)]
    doc = {"command": "python -m refquant.papers " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_summary(),
           "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
           "model": MODEL, "rows": rows}
    print(json.dumps(doc, indent=1) if args.json else _markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
