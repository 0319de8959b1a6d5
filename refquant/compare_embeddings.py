"""``refquant compare`` for sentence-embedding models (``minilm-l6``): fidelity to the float model.

Data: the shipped sentence set (:mod:`refquant.data.sentences`): 21 calibration sentences, 189
test sentences, tokenized by the model's own ``tokenizer.json``, in padded batches of
``batch`` sentences (sorted by length, so that a batch pads little; the embeddings are put back
in the set's order). Each row — one plan on the test set — reports, against the float model's
embeddings (:mod:`refquant.metrics`):

* ``mean_cosine`` and ``min_cosine``: the cosine similarity of each quantized embedding to its
  float embedding, averaged and at its worst;
* ``nn_agreement``: the fraction of sentences whose nearest other sentence is the same;
* ``spearman``: Spearman's rho of the cosine similarities of all 17 766 sentence pairs;
* ``peak_working_bytes`` (largest over the batches, per sentence) and ``latency_ms`` (per sentence).

Anchor rows (``anchors``, needs onnxruntime): onnxruntime's ``quantize_dynamic`` (weights int8
per tensor, its default) and ``quantize_static`` (QDQ, uint8 activations, int8 per-channel
weights, MinMax calibration on the same 21 sentences) of the exported float model, run by
onnxruntime with graph optimizations on, evaluated the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .compare import PlanRow
from .data.sentences import load_sentences
from .executor import peak_working_bytes, quantize_model, run_float
from .onnx_io.anchors import ort_outputs, ort_quantize_dynamic, ort_quantize_static
from .metrics import cosine_similarities, nearest_neighbour_agreement, pairwise_spearman
from .plan import Plan, TensorPlan
from .presentation import progress_bar
from .registry import resolve_model
from .zoo import load_minilm_tokenizer
from .zoo.minilm import encode_sentences

__all__ = ["EMBEDDING_DEFAULTS", "EMBEDDING_FIELDS", "EMBEDDING_ANCHORS", "EmbeddingRow", "compare_embeddings",
           "embedding_summary_rows", "sentence_batches"]

EMBEDDING_FIELDS = ("model", "weights", "activations", "bits", "activation_bits", "granularity", "dataset",
                    "sentences", "mean_cosine", "min_cosine", "nn_agreement", "spearman", "peak_working_bytes",
                    "latency_ms")
#: what ``refquant compare minilm-l6`` runs by default (minutes on two cores)
EMBEDDING_DEFAULTS = {"bits": (8,), "granularities": ("per-channel",), "weights": ("minmax",),
                      "activations": ("dynamic", "static-minmax", "static-percentile"), "batch": 32}
EMBEDDING_ANCHORS = ("quantize_dynamic", "quantize_static-MinMax")


@dataclass
class EmbeddingRow(PlanRow):
    sentences: int
    mean_cosine: float
    min_cosine: float
    nn_agreement: float
    spearman: float
    peak_working_bytes: int
    latency_ms: float

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in EMBEDDING_FIELDS}


def sentence_batches(tokenizer, sentences, batch: int) -> tuple[list, np.ndarray]:
    """Feeds dicts of at most ``batch`` sentences, sorted by token count, and the order that puts
    the concatenated outputs back in ``sentences``' order."""
    lengths = [len(e.ids) for e in tokenizer.encode_batch(list(sentences))]
    order = np.argsort(lengths, kind="stable")
    batches = [encode_sentences(tokenizer, [sentences[i] for i in order[k:k + batch]])
               for k in range(0, len(order), batch)]
    return batches, np.argsort(order, kind="stable")


def _run_all(fn, batches, restore):
    outs, peak = [], 0
    for feeds in batches:
        y, p = fn(feeds)
        outs.append(y)
        peak = max(peak, p)
    return np.concatenate(outs)[restore], peak


def compare_embeddings(model: str = "minilm-l6", *, bits=None, weights=None, activations=None,
                       granularities=None, activation_bits=None, backend: str = "numba", requant: str = "float32",
                       batch=None, anchors=(), progress: bool = True) -> list[EmbeddingRow]:
    """One :class:`EmbeddingRow` per plan (and per anchor); ``None`` means :data:`EMBEDDING_DEFAULTS`."""
    for a in anchors:
        if a not in EMBEDDING_ANCHORS:
            raise ValueError(f"unknown anchor {a!r} for {model}; known: {', '.join(EMBEDDING_ANCHORS)}")
    d = EMBEDDING_DEFAULTS
    bits, weights = tuple(bits or d["bits"]), tuple(weights or d["weights"])
    activations, granularities = tuple(activations or d["activations"]), tuple(granularities or d["granularities"])
    batch = batch or d["batch"]
    graph = resolve_model(model)
    tok = load_minilm_tokenizer()
    data = load_sentences()
    test = [s for _, s in data.test]
    batches, restore = sentence_batches(tok, test, batch)
    calib, _ = sentence_batches(tok, [s for _, s in data.calibration], batch)
    combos = [(w, b, g, a) for b in bits for g in granularities for w in weights for a in activations]
    combos += [("onnxruntime", 8, "per-tensor" if a == "quantize_dynamic" else "per-channel", a) for a in anchors]
    units = len(combos) + 1
    if progress:
        progress_bar(0, units, f"{model}: float model on {len(test)} sentences")
    out = graph.outputs[0]
    ref, _ = _run_all(lambda f: (run_float(graph, f)[out], 0), batches, restore)
    rows = []
    for i, (w, b, g, a) in enumerate(combos):
        ab = b if activation_bits is None else activation_bits
        label = f"{model} {w}:{b} {a}:{ab} {g}"
        if progress:
            progress_bar(i + 1, units, label)
        if w == "onnxruntime":
            ab = 8
            blob = (ort_quantize_dynamic(graph) if a == "quantize_dynamic"
                    else ort_quantize_static(graph, calib, a.split("-", 1)[1]))
            t0 = time.perf_counter()
            y = ort_outputs(blob, batches)[restore]
            peak = 0
        else:
            name, *opts = a.split(":")  # an activation strategy may carry its options: dynamic:per=token
            options = tuple(tuple(o.split("=", 1)) for o in opts)
            if any(len(o) != 2 for o in options):
                raise ValueError(f"activations {a!r}: expected STRATEGY[:KEY=VALUE...]")
            plan = Plan(TensorPlan(w, b, g, True, True), TensorPlan(name, ab, "per-tensor", False, False, options))
            qm = quantize_model(graph, plan, calib, requant=requant)

            def run(feeds):
                res = qm.run(feeds, backend=backend)
                return res.outputs[out], peak_working_bytes(res.records) // len(feeds["input_ids"])

            t0 = time.perf_counter()
            y, peak = _run_all(run, batches, restore)
        dt = time.perf_counter() - t0
        cos = cosine_similarities(ref, y)
        rows.append(EmbeddingRow(model, w, a, b, ab, g, "sentences", len(test),
                                 mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6),
                                 nn_agreement=round(nearest_neighbour_agreement(ref, y), 6),
                                 spearman=round(pairwise_spearman(ref, y), 6), peak_working_bytes=int(peak),
                                 latency_ms=round(1e3 * dt / len(test), 3)))
    if progress:
        progress_bar(units, units, "done")
    return rows


def embedding_summary_rows(rows: list[EmbeddingRow]) -> list[dict]:
    """The rows for people: the fidelity columns formatted."""
    return [{"model": r.model, "bits": r.bits, "act_bits": r.activation_bits, "granularity": r.granularity,
             "weights": r.weights, "activations": r.activations, "mean_cos": f"{r.mean_cosine:.5f}",
             "min_cos": f"{r.min_cosine:.5f}", "nn_agr": f"{100 * r.nn_agreement:.1f}",
             "spearman": f"{r.spearman:.4f}", "peak_bytes": r.peak_working_bytes, "latency_ms": f"{r.latency_ms:.2f}"}
            for r in rows]
