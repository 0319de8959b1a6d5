"""``refquant compare``: every strategy combination on every test set, in one table.

For each model, bit width and weight granularity, every registered weight strategy is paired
with every registered activation strategy; the model is quantized (calibrated on the
documented calibration subset) and run on the clean test set and on every shifted test set.
Each row reports:

* ``accuracy`` and ``float_accuracy`` (the float32 model on the same images);
* ``sqnr_db`` = 10·log10(Σ z² / Σ (ẑ − z)²) of the quantized logits ẑ against the float
  logits z, over the whole set;
* ``peak_working_bytes`` of one inference (``peak_working_bytes`` of the run's records,
  divided by the batch size: every buffer scales with the batch);
* ``latency_ms`` = wall time of the batched quantized run / images (per image, batched).

``bits`` applies to weights and activations alike unless ``activation_bits`` fixes the
activations' width (e.g. 8-bit activations under 4- and 3-bit weights); ``granularity`` is the
weights' (activations are per tensor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .data import digits_inputs, load_digits
from .executor import peak_working_bytes, quantize_model, run_float
from .metrics import accuracy, sqnr_db
from .plan import Plan, TensorPlan
from .presentation import progress_bar
from .registry import quantizers, resolve_model

__all__ = ["CompareRow", "ROW_FIELDS", "compare", "summary_rows"]

ROW_FIELDS = ("model", "weights", "activations", "bits", "activation_bits", "granularity", "dataset",
              "accuracy", "float_accuracy", "sqnr_db", "peak_working_bytes", "latency_ms")


@dataclass
class CompareRow:
    model: str
    weights: str
    activations: str
    bits: int
    activation_bits: int
    granularity: str
    dataset: str
    accuracy: float
    float_accuracy: float
    sqnr_db: float
    peak_working_bytes: int
    latency_ms: float

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in ROW_FIELDS}


def compare(models=("digits-cnn",), bits=(8, 4), weights=None, activations=None,
            granularities=("per-tensor", "per-channel"), backend="numba", calibration=32,
            requant="float32", progress=True, activation_bits=None) -> list[CompareRow]:
    """Run the comparison; one :class:`CompareRow` per (model, plan, dataset).

    ``activation_bits=None`` gives the activations the weights' ``bits``; an integer fixes them.
    """
    weights = list(weights or sorted(quantizers("weights")))
    activations = list(activations or sorted(quantizers("activations")))
    for name in weights:
        quantizers("weights").get(name) or _unknown("weights", name)
    for name in activations:
        quantizers("activations").get(name) or _unknown("activations", name)
    data = load_digits()
    sets = data.test_sets()
    combos = [(m, b, g, w, a) for m in models for b in bits for g in granularities
              for w in weights for a in activations]
    rows: list[CompareRow] = []
    graphs, floats = {}, {}
    for i, (model, b, gran, w, a) in enumerate(combos):
        if model not in graphs:
            graphs[model] = resolve_model(model)
            g = graphs[model]
            floats[model] = {s.name: run_float(g, {g.inputs[0].name: digits_inputs(g, s.x)})[g.outputs[0]]
                             for s in sets}
        g = graphs[model]
        ab = b if activation_bits is None else activation_bits
        if progress:
            progress_bar(i, len(combos), f"{model} {w}:{b} {a}:{ab} {gran}")
        plan = Plan(TensorPlan(w, b, gran, True, True), TensorPlan(a, ab, "per-tensor", False, False))
        qm = quantize_model(g, plan, digits_inputs(g, data.calibration(calibration).x), requant=requant)
        for s in sets:
            x = digits_inputs(g, s.x)
            t0 = time.perf_counter()
            res = qm.run(x, backend=backend)
            dt = time.perf_counter() - t0
            out, ref = res.outputs[g.outputs[0]], floats[model][s.name]
            rows.append(CompareRow(
                model, w, a, b, ab, gran, s.name,
                accuracy=accuracy(out, s.y),
                float_accuracy=accuracy(ref, s.y),
                sqnr_db=float(np.round(sqnr_db(ref, out), 3)),
                peak_working_bytes=int(peak_working_bytes(res.records) // len(x)),
                latency_ms=round(1e3 * dt / len(x), 5)))
    if progress:
        progress_bar(len(combos), len(combos), "done")
    return rows


def _unknown(kind, name):
    raise ValueError(f"unknown {kind} strategy {name!r}; registered: {', '.join(sorted(quantizers(kind)))}")


def summary_rows(rows: list[CompareRow]) -> list[dict]:
    """One row per plan for people: clean-test numbers and the mean over the shifted sets."""
    out, groups = [], {}
    for r in rows:
        groups.setdefault((r.model, r.bits, r.activation_bits, r.granularity, r.weights, r.activations),
                          []).append(r)
    for (model, b, ab, gran, w, a), rs in groups.items():
        clean = next(r for r in rs if r.dataset == "test")
        shifted = [r for r in rs if r.dataset != "test"]
        out.append({
            "model": model, "bits": b, "act_bits": ab, "granularity": gran, "weights": w, "activations": a,
            "test_acc": f"{100 * clean.accuracy:.2f}",
            "Δ_float": f"{100 * (clean.accuracy - clean.float_accuracy):+.2f}",
            "sqnr_db": f"{clean.sqnr_db:.1f}",
            "shifted_acc": f"{100 * np.mean([r.accuracy for r in shifted]):.2f}" if shifted else "-",
            "shifted_Δ": (f"{100 * np.mean([r.accuracy - r.float_accuracy for r in shifted]):+.2f}"
                          if shifted else "-"),
            "peak_bytes": clean.peak_working_bytes,
            "latency_ms": f"{clean.latency_ms:.4f}",
        })
    return out
