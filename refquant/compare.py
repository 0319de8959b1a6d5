"""``refquant compare``: every strategy combination on every test set, in one table.

For each model, bit width and weight granularity, every registered weight strategy is paired
with every registered activation strategy; the model is quantized (calibrated on the
documented calibration subset) and run on the clean test set and on every shifted test set.
Each row reports:

* ``accuracy`` and ``float_accuracy`` (the float32 model on the same images) — ``None`` for a
  model without labels (the ImageNet models on the photo views);
* fidelity to the float model, for every model: ``top1_agreement`` and ``top5_agreement``
  (:func:`refquant.metrics.topk_agreement`: the float model's top-1 class is the quantized
  model's top-1, or among its top 5) and ``sqnr_db`` = 10·log10(Σ z² / Σ (ẑ − z)²) of the
  quantized logits ẑ against the float logits z, over the whole set;
* ``images`` in the set;
* ``peak_working_bytes`` of one inference (``peak_working_bytes`` of the run's records,
  divided by the batch size: every buffer scales with the batch);
* ``latency_ms`` = wall time of the batched quantized run / images (per image, batched).

``bits`` applies to weights and activations alike unless ``activation_bits`` fixes the
activations' width (e.g. 8-bit activations under 4- and 3-bit weights); ``granularity`` is the
weights' (activations are per tensor).

**Data.** The digits models: the digits calibration subset, the test set and its shifted
sets (``spec/data.md``). A real ImageNet model (``refquant.zoo``, e.g. ``efficientnet-lite0``):
the photo views — the test set ``views`` is the first ``views`` view names of every photo
(default 1: the 11 ``center`` views), the calibration set ``calibration`` other views of the
photos (never a test view; evenly spaced over photo × view), the shifted sets each ImageNet-C
corruption of the test views at ``severity`` (default 3), named ``NAME-SEVERITY``. Because a
real model costs about a second per image on two cores, its defaults are small (8-bit
per-channel ``minmax``/``mse`` weights × ``static-minmax``/``static-percentile`` activations,
16 calibration views, batches of 8): 7 minutes measured on this 2-core machine under load,
with onnxruntime anchors; ``full_grid=True``
(``--full-grid``) runs every registered strategy pair at 8 and 4 bits, per tensor and per channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .compare_ocr import OCR_MODELS, OCR_SETS, ocr_data, ocr_fidelity
from .data import digits_inputs, load_digits
from .data.photos import CORRUPTIONS, PHOTOS, VIEW_NAMES, corrupt, photo_views
from .executor import peak_working_bytes, quantize_model, run_float
from .metrics import accuracy, sqnr_db, topk_agreement
from .onnx_io.anchors import ANCHOR_METHODS, ort_logits, ort_quantize_static
from .plan import Plan, TensorPlan
from .presentation import progress_bar
from .registry import quantizers, resolve_model
from .zoo import REAL_MODELS
from .zoo.efficientnet_lite import preprocess

__all__ = ["CompareRow", "EvalData", "ROW_FIELDS", "REAL_MODEL_DEFAULTS", "compare", "digits_data",
           "photo_data", "summary_rows"]

ROW_FIELDS = ("model", "weights", "activations", "bits", "activation_bits", "granularity", "dataset",
              "images", "accuracy", "float_accuracy", "top1_agreement", "top5_agreement", "sqnr_db",
              "box_f1", "cer_float", "cer_transcription", "float_cer_transcription",
              "peak_working_bytes", "latency_ms")

#: what a real (ImageNet) model compares by default: small enough for minutes, not hours
REAL_MODEL_DEFAULTS = {"bits": (8,), "granularities": ("per-channel",), "weights": ("minmax", "mse"),
                       "activations": ("static-minmax", "static-percentile"), "calibration": 16,
                       "views": 1, "severity": 3, "batch": 8}


@dataclass
class EvalData:
    """A model's calibration inputs and its evaluation sets ``(name, inputs, labels or None)``."""

    calibration: np.ndarray
    sets: list
    batch: int


def digits_data(graph, calibration: int = 32) -> EvalData:
    """The digits calibration subset, test set and shifted test sets, as ``graph``'s inputs."""
    data = load_digits()
    sets = [(s.name, digits_inputs(graph, s.x), s.y) for s in data.test_sets()]
    return EvalData(digits_inputs(graph, data.calibration(calibration).x), sets, 1 << 30)


def photo_data(calibration: int = 16, views: int = 1, severity: int = 3, corruptions=None,
               batch: int = 8) -> EvalData:
    """Photo views for an ImageNet model (module doc): test ``views``, calibration, corruptions."""
    if not 1 <= views < len(VIEW_NAMES):
        raise ValueError(f"views must be in 1..{len(VIEW_NAMES) - 1} (the rest calibrate), got {views}")
    test = photo_views(None, VIEW_NAMES[:views])
    pool = [(p, v) for p in PHOTOS for v in VIEW_NAMES[views:]]
    if not 1 <= calibration <= len(pool):
        raise ValueError(f"calibration must be in 1..{len(pool)} views, got {calibration}")
    picked = [pool[round(i * len(pool) / calibration)] for i in range(calibration)]
    calib = np.concatenate([photo_views([p], [v]).images for p, v in picked])
    sets = [("views", preprocess(test.images), None)]
    for name in (CORRUPTIONS if corruptions is None else corruptions):
        sets.append((f"{name}-{severity}", preprocess(corrupt(test.images, name, severity)), None))
    return EvalData(preprocess(calib), sets, batch)


@dataclass
class CompareRow:
    model: str
    weights: str
    activations: str
    bits: int
    activation_bits: int
    granularity: str
    dataset: str
    images: int
    accuracy: float | None
    float_accuracy: float | None
    top1_agreement: float | None
    top5_agreement: float | None
    sqnr_db: float
    peak_working_bytes: int
    latency_ms: float
    box_f1: float | None = None               # OCR detector (refquant.compare_ocr)
    cer_float: float | None = None            # OCR recogniser
    cer_transcription: float | None = None
    float_cer_transcription: float | None = None

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in ROW_FIELDS}


def compare(models=("digits-cnn",), bits=None, weights=None, activations=None,
            granularities=None, backend="numba", calibration=None, requant="float32", progress=True,
            activation_bits=None, views=None, severity=None, corruptions=None, full_grid=False,
            batch=None, anchors=()) -> list[CompareRow]:
    """Run the comparison; one :class:`CompareRow` per (model, plan, dataset).

    ``None`` means the model's default: for the digits models bits 8 and 4, both
    granularities, every registered strategy, 32 calibration images; for a real model
    :data:`REAL_MODEL_DEFAULTS`. ``full_grid=True`` makes every unset choice the full one
    (every registered strategy, bits 8 and 4, both granularities). ``activation_bits=None``
    gives the activations the weights' ``bits``; an integer fixes them.

    ``anchors`` (e.g. :data:`~refquant.onnx_io.anchors.ANCHOR_METHODS`) adds, per model and
    method, a row set for onnxruntime's ``quantize_static`` on the exported float model with
    the same calibration inputs (:mod:`refquant.onnx_io.anchors`): ``weights`` =
    ``"onnxruntime"``, ``activations`` = ``"quantize_static-METHOD"``, 8 bits, per channel,
    ``peak_working_bytes`` 0 (not measured). What onnxruntime computes on this host (its u8s8
    products saturate without AVX-VNNI).
    """
    for method in anchors:
        if method not in ANCHOR_METHODS:
            raise ValueError(f"unknown anchor {method!r}; known: {', '.join(ANCHOR_METHODS)}")
    for name in weights or ():
        quantizers("weights").get(name) or _unknown("weights", name)
    for name in activations or ():
        quantizers("activations").get(name) or _unknown("activations", name)
    full = {"bits": (8, 4), "granularities": ("per-tensor", "per-channel"),
            "weights": tuple(sorted(quantizers("weights"))), "activations": tuple(sorted(quantizers("activations")))}
    given = {"bits": bits, "granularities": granularities, "weights": weights, "activations": activations}
    combos = []
    for m in models:
        real = m in REAL_MODELS
        pick = {k: tuple(v) if v is not None else (full[k] if full_grid or not real else REAL_MODEL_DEFAULTS[k])
                for k, v in given.items()}
        combos += [(m, b, g, w, a) for b in pick["bits"] for g in pick["granularities"]
                   for w in pick["weights"] for a in pick["activations"]]
    rows: list[CompareRow] = []
    graphs, floats, data = {}, {}, {}
    combos += [(m, 8, "per-channel", "onnxruntime", f"quantize_static-{method}")
               for m in models for method in anchors]
    units = sum(len(_set_names(m, corruptions)) for m, *_ in combos)
    done = 0
    for model, b, gran, w, a in combos:
        if model not in graphs:
            graphs[model] = g = resolve_model(model)
            if model in OCR_MODELS:
                calib, sets = ocr_data(model)
                data[model] = EvalData(calib, sets, batch or REAL_MODEL_DEFAULTS["batch"])
            elif model in REAL_MODELS:
                d = REAL_MODEL_DEFAULTS
                data[model] = photo_data(calibration or d["calibration"], views or d["views"],
                                         severity or d["severity"], corruptions, batch or d["batch"])
            else:
                data[model] = digits_data(g, calibration or 32)
            if progress:
                progress_bar(done, units, f"{model}: float model")
            floats[model] = {name: _batched(lambda x: (run_float(g, {g.inputs[0].name: x})[g.outputs[0]], None),
                                            x, data[model].batch)[0]
                             for name, x, _ in data[model].sets}
        g, d = graphs[model], data[model]
        ab = b if activation_bits is None else activation_bits
        label = f"{model} {w}:{b} {a}:{ab} {gran}"
        if progress:
            progress_bar(done, units, f"{label} calibrating")
        if w == "onnxruntime":
            ort_model = ort_quantize_static(g, d.calibration, a.split("-", 1)[1])

            def evaluate(xb):
                return ort_logits(ort_model, g, xb, len(xb)), 0
        else:
            plan = Plan(TensorPlan(w, b, gran, True, True), TensorPlan(a, ab, "per-tensor", False, False))
            qm = quantize_model(g, plan, d.calibration, requant=requant)

            def evaluate(xb):
                return _run(qm, g, xb, backend)
        for name, x, y in d.sets:
            if progress:
                progress_bar(done, units, f"{label} {name}")
            t0 = time.perf_counter()
            out, peak = _batched(evaluate, x, d.batch)
            dt = time.perf_counter() - t0
            ref = floats[model][name]
            if model in OCR_MODELS:
                fid = ocr_fidelity(model, ref, out)
            else:
                fid = {"top1_agreement": topk_agreement(ref, out, 1),
                       "top5_agreement": topk_agreement(ref, out, min(5, out.shape[1]))}
            rows.append(CompareRow(
                model, w, a, b, ab, gran, name, images=int(len(x)),
                accuracy=None if y is None else accuracy(out, y),
                float_accuracy=None if y is None else accuracy(ref, y),
                sqnr_db=float(np.round(sqnr_db(ref, out), 3)),
                peak_working_bytes=int(peak),
                latency_ms=round(1e3 * dt / len(x), 5), **fid))
            done += 1
    if progress:
        progress_bar(units, units, "done")
    return rows


def _set_names(model, corruptions) -> list:
    if model in OCR_MODELS:
        return list(OCR_SETS[model])
    if model in REAL_MODELS:
        return ["views", *(CORRUPTIONS if corruptions is None else corruptions)]
    return [s.name for s in load_digits().test_sets()]


def _run(qm, graph, x, backend):
    res = qm.run(x, backend=backend)
    return res.outputs[graph.outputs[0]], peak_working_bytes(res.records) // len(x)


def _batched(fn, x, batch):
    """``fn`` over ``x`` in batches: the outputs concatenated, the largest second value."""
    outs, peak = [], 0
    for start in range(0, len(x), batch):
        out, p = fn(x[start:start + batch])
        outs.append(out)
        peak = max(peak, p or 0)
    return np.concatenate(outs), peak


def _unknown(kind, name):
    raise ValueError(f"unknown {kind} strategy {name!r}; registered: {', '.join(sorted(quantizers(kind)))}")


def summary_rows(rows: list[CompareRow]) -> list[dict]:
    """One row per plan for people: clean-set numbers (``test``, or ``views`` for a real model)
    and the mean over the shifted sets; accuracy columns show ``-`` for a model without labels."""
    out, groups = [], {}
    for r in rows:
        groups.setdefault((r.model, r.bits, r.activation_bits, r.granularity, r.weights, r.activations),
                          []).append(r)
    for (model, b, ab, gran, w, a), rs in groups.items():
        clean = next(r for r in rs if r.dataset in ("test", "views", "page", "page-lines"))
        shifted = [r for r in rs if r is not clean]
        labelled = clean.accuracy is not None
        out.append({
            "model": model, "bits": b, "act_bits": ab, "granularity": gran, "weights": w, "activations": a,
            "test_acc": f"{100 * clean.accuracy:.2f}" if labelled else "-",
            "Δ_float": f"{100 * (clean.accuracy - clean.float_accuracy):+.2f}" if labelled else "-",
            "top1_agr": "-" if clean.top1_agreement is None else f"{100 * clean.top1_agreement:.1f}",
            "top5_agr": "-" if clean.top5_agreement is None else f"{100 * clean.top5_agreement:.1f}",
            "sqnr_db": f"{clean.sqnr_db:.1f}",
            "shifted_acc": (f"{100 * np.mean([r.accuracy for r in shifted]):.2f}"
                            if shifted and labelled else "-"),
            "shifted_Δ": (f"{100 * np.mean([r.accuracy - r.float_accuracy for r in shifted]):+.2f}"
                          if shifted and labelled else "-"),
            "shifted_top1_agr": f"{100 * np.mean([r.top1_agreement for r in shifted]):.1f}" if shifted else "-",
            **({"box_f1": "-" if clean.box_f1 is None else f"{clean.box_f1:.3f}",
                "cer_float": "-" if clean.cer_float is None else f"{100 * clean.cer_float:.2f}",
                "cer_truth": "-" if clean.cer_transcription is None else f"{100 * clean.cer_transcription:.2f}"}
               if model in OCR_MODELS else {}),
            "peak_bytes": clean.peak_working_bytes,
            "latency_ms": f"{clean.latency_ms:.4f}",
        })
    return out
