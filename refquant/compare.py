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

**Sweeps** (``spec/sweeps.md``). A comparison is a sweep of tasks, one per (model, plan):
:func:`plan_grid` lists them, :func:`prepare_model` computes once per model what no plan
changes (data, float logits, the recorded calibration pass), :func:`evaluate_plan` is one task.
An executor (:mod:`refquant.sweep.executors`: serial, the reference, or Dask) runs the tasks;
the rows come back in plan order whatever the executor, and a results file
(:mod:`refquant.sweep.results`) keeps each one as it finishes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numba
import numpy as np

from ._version import __version__
from .compare_ocr import OCR_MODELS, OCR_SETS, ocr_data, ocr_fidelity
from .data import TEST_SETS, digits_inputs, load_digits
from .data.photos import CORRUPTIONS, PHOTOS, VIEW_NAMES, corrupt, photo_views
from .executor import peak_working_bytes, quantize_model, run_float, trace_calibration
from .golden import graph_sha256
from .metrics import accuracy, sqnr_db, topk_agreement
from .onnx_io.anchors import ANCHOR_METHODS, ort_logits, ort_quantize_static
from .plan import Plan, TensorPlan
from .presentation import SweepProgress
from .registry import quantizers, resolve_model
from .sweep import KEY, ResultsFile, SerialExecutor, numba_threads
from .zoo import EMBEDDING_MODELS, REAL_MODELS
from .zoo.efficientnet_lite import preprocess

__all__ = ["CompareRow", "PlanRow", "EvalData", "ModelContext", "PlanTask", "ROW_FIELDS", "REAL_MODEL_DEFAULTS", "compare",
           "digits_data", "evaluate_plan", "photo_data", "plan_grid", "prepare_model", "summary_rows"]

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
class PlanRow:
    """What every ``compare`` row starts with: the model, the plan and the evaluation set (the
    rows of classifiers and OCR models, :class:`CompareRow`, and of sentence embeddings,
    :class:`refquant.compare_embeddings.EmbeddingRow`)."""
    model: str
    weights: str
    activations: str
    bits: int
    activation_bits: int
    granularity: str
    dataset: str


@dataclass
class CompareRow(PlanRow):
    images: int
    accuracy: float | None
    float_accuracy: float | None
    top1_agreement: float
    top5_agreement: float
    sqnr_db: float
    peak_working_bytes: int
    latency_ms: float
    box_f1: float | None = None               # OCR detector (refquant.compare_ocr)
    cer_float: float | None = None            # OCR recogniser
    cer_transcription: float | None = None
    float_cer_transcription: float | None = None

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in ROW_FIELDS}


@dataclass(frozen=True)
class PlanTask:
    """One task of a sweep: a model and one plan (its rows are one per evaluation set)."""

    model: str
    bits: int
    granularity: str
    weights: str
    activations: str
    activation_bits: int

    def plan_text(self, requant: str, calibration: int, threads: int) -> str:
        """The ``plan`` column of the results file: the plan string plus the settings that
        change its numbers (requant mode, calibration images, Numba threads — the numba
        backend's scratch buffers, in ``peak_working_bytes``, scale with them)."""
        if self.weights == "onnxruntime":
            text = f"weights=onnxruntime activations={self.activations}"
        else:
            text = str(Plan(TensorPlan(self.weights, self.bits, self.granularity, True, True),
                            TensorPlan(self.activations, self.activation_bits, "per-tensor", False, False)))
        return f"{text} requant={requant} calibration={calibration} threads={threads}"

    def label(self) -> str:
        return f"{self.model} {self.weights}:{self.bits} {self.activations}:{self.activation_bits} {self.granularity}"


#: the largest recorded calibration pass a sweep keeps (bytes); above it every plan calibrates
#: live. EfficientNet-Lite0 records 27.7 MiB per calibration image (443 MiB for its 16 views).
TRACE_LIMIT = 2 << 30


@dataclass
class ModelContext:
    """What every task of one model shares, computed once in the process that runs the sweep:
    the graph, the data, the float logits of every evaluation set and the recorded calibration
    pass (:func:`refquant.executor.trace_calibration`; ``None`` above :data:`TRACE_LIMIT`), with
    the hashes that key result rows."""

    name: str
    graph: object
    data: EvalData
    floats: dict
    trace: object
    calibration_images: int
    model_sha256: str
    data_sha256: str


def plan_grid(models=("digits-cnn",), bits=None, weights=None, activations=None, granularities=None,
              activation_bits=None, full_grid=False, anchors=()) -> list[PlanTask]:
    """The sweep's tasks in plan order (``compare``'s docstring says what ``None`` means)."""
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
    tasks = []
    for m in models:
        real = m in REAL_MODELS
        pick = {k: tuple(v) if v is not None else (full[k] if full_grid or not real else REAL_MODEL_DEFAULTS[k])
                for k, v in given.items()}
        tasks += [PlanTask(m, b, g, w, a, b if activation_bits is None else activation_bits)
                  for b in pick["bits"] for g in pick["granularities"]
                  for w in pick["weights"] for a in pick["activations"]]
    tasks += [PlanTask(m, 8, "per-channel", "onnxruntime", f"quantize_static-{method}", 8)
              for m in models for method in anchors]
    return tasks


def prepare_model(model: str, calibration=None, views=None, severity=None, corruptions=None,
                  batch=None) -> ModelContext:
    """Load ``model`` and its data, run the float model on every evaluation set and record the
    calibration pass: everything a plan of this model needs that no plan changes."""
    g = resolve_model(model)
    if model in OCR_MODELS:
        calib, sets = ocr_data(model)
        data = EvalData(calib, sets, batch or REAL_MODEL_DEFAULTS["batch"])
    elif model in REAL_MODELS:
        d = REAL_MODEL_DEFAULTS
        data = photo_data(calibration or d["calibration"], views or d["views"], severity or d["severity"],
                          corruptions, batch or d["batch"])
    else:
        data = digits_data(g, calibration or 32)
    floats = {name: _batched(lambda x: (run_float(g, {g.inputs[0].name: x})[g.outputs[0]], None), x, data.batch)[0]
              for name, x, _ in data.sets}
    h = hashlib.sha256(np.ascontiguousarray(data.calibration).tobytes())
    for name, x, y in data.sets:
        h.update(name.encode() + b"\0" + np.ascontiguousarray(x).tobytes())
        if y is not None:
            h.update(np.ascontiguousarray(y).tobytes())
    return ModelContext(model, g, data, floats, trace_calibration(g, data.calibration, max_bytes=TRACE_LIMIT),
                        len(data.calibration), graph_sha256(g), h.hexdigest())


def evaluate_plan(ctx: ModelContext, task: PlanTask, backend: str = "numba", requant: str = "float32",
                  datasets=None) -> list[CompareRow]:
    """Quantize ``ctx``'s model with ``task``'s plan (calibrated from the shared trace) and
    evaluate it on every evaluation set (or those named in ``datasets``), in set order."""
    g, d = ctx.graph, ctx.data
    w, a, b, ab, gran = task.weights, task.activations, task.bits, task.activation_bits, task.granularity
    if w == "onnxruntime":
        ort_model = ort_quantize_static(g, d.calibration, a.split("-", 1)[1])

        def evaluate(xb):
            return ort_logits(ort_model, g, xb, len(xb)), 0
    else:
        plan = Plan(TensorPlan(w, b, gran, True, True), TensorPlan(a, ab, "per-tensor", False, False))
        qm = quantize_model(g, plan, d.calibration if ctx.trace is None else ctx.trace, requant=requant)

        def evaluate(xb):
            return _run(qm, g, xb, backend)
    rows = []
    for name, x, y in d.sets:
        if datasets is not None and name not in datasets:
            continue
        t0 = time.perf_counter()
        out, peak = _batched(evaluate, x, d.batch)
        dt = time.perf_counter() - t0
        ref = ctx.floats[name]
        if task.model in OCR_MODELS:
            fid = ocr_fidelity(task.model, ref, out)
        else:
            fid = {"top1_agreement": topk_agreement(ref, out, 1),
                   "top5_agreement": topk_agreement(ref, out, min(5, out.shape[1]))}
        rows.append(CompareRow(
            task.model, w, a, b, ab, gran, name, images=int(len(x)),
            accuracy=None if y is None else accuracy(out, y),
            float_accuracy=None if y is None else accuracy(ref, y),
            sqnr_db=float(np.round(sqnr_db(ref, out), 3)),
            peak_working_bytes=int(peak),
            latency_ms=round(1e3 * dt / len(x), 5), **fid))
    return rows


def _evaluate_task(ctx: ModelContext, item) -> list[CompareRow]:
    """The function a sweep task runs (a module-level name, so a Dask worker imports it)."""
    task, backend, requant, datasets, threads = item
    with numba_threads(threads):
        return evaluate_plan(ctx, task, backend, requant, datasets)


def compare(models=("digits-cnn",), bits=None, weights=None, activations=None,
            granularities=None, backend="numba", calibration=None, requant="float32", progress=True,
            activation_bits=None, views=None, severity=None, corruptions=None, full_grid=False,
            batch=None, anchors=(), executor=None, results=None, resume=False, threads=None) -> list[CompareRow]:
    """Run the comparison; one :class:`CompareRow` per (model, plan, dataset), in plan order.

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

    **Sweeps** (``spec/sweeps.md``). Each model is prepared once here (:func:`prepare_model`:
    data, float logits, the calibration pass) and shared with the tasks, one per plan, run by
    ``executor`` (default :class:`~refquant.sweep.SerialExecutor`; a
    :class:`~refquant.sweep.DaskExecutor` runs them on a cluster). The rows are the same
    whatever the executor, except ``latency_ms`` (a wall time). ``results`` (a path or a
    :class:`~refquant.sweep.ResultsFile`) receives every row as its plan finishes, one
    transaction per row; ``resume=True`` skips the rows already there and returns them with
    the new ones. ``progress``: ``True`` draws done/total, rate and ETA on stderr, a callable
    ``progress(done, total, label)`` is called after every row instead. ``threads``: Numba
    threads per task (default: this process's ``numba.get_num_threads()``), the same under
    every executor — the numba backend's ``peak_working_bytes`` depends on it.
    """
    embedding = [m for m in models if m in EMBEDDING_MODELS]
    if embedding:
        raise ValueError(f"{', '.join(embedding)}: a sentence-embedding model; compare it with "
                         f"refquant.compare_embeddings.compare_embeddings")
    tasks = plan_grid(models, bits, weights, activations, granularities, activation_bits, full_grid, anchors)
    executor = executor or SerialExecutor()
    threads = numba.get_num_threads() if threads is None else int(threads)
    own_results = results is not None and not isinstance(results, ResultsFile)
    db = ResultsFile(results) if own_results else results
    try:
        return _sweep(tasks, dict(calibration=calibration, views=views, severity=severity, corruptions=corruptions,
                                  batch=batch), backend, requant, progress, executor, db, resume, threads)
    finally:
        if own_results:
            db.close()


def _sweep(tasks, data_options, backend, requant, progress, executor, db, resume, threads) -> list[CompareRow]:
    """Prepare each model once, share it, submit its plans (skipping stored rows), collect."""
    set_names = {m: _set_names(m, data_options["corruptions"], data_options["severity"])
                 for m in dict.fromkeys(t.model for t in tasks)}
    total = sum(len(set_names[t.model]) for t in tasks)
    report = progress if callable(progress) else (SweepProgress(total) if progress else None)
    done_keys = db.done() if db is not None else set()
    rows, meta, done = {}, {}, 0
    contexts, seq = {}, 0
    for task in tasks:
        if task.model not in contexts:
            if report:
                report(done, total, f"{task.model}: float model, calibration pass")
            ctx = prepare_model(task.model, **data_options)
            contexts[task.model] = (ctx, executor.share(ctx))
            if db is not None:  # every key of this model's rows
                db.check_compatible([_key(ctx, t, n, requant, threads) for t in tasks if t.model == task.model
                                     for n in set_names[t.model]], resume=resume)
        ctx, handle = contexts[task.model]
        keys = {n: _key(ctx, task, n, requant, threads) for n in set_names[task.model]}
        seqs = {n: seq + k for k, n in enumerate(set_names[task.model])}
        seq += len(keys)
        todo = [n for n, k in keys.items() if tuple(k[c] for c in KEY) not in done_keys]
        for n, k in keys.items():
            if n not in todo:
                rows[seqs[n]] = _stored_row(db, k)
                done += 1
        if todo:
            index = executor.submit(_evaluate_task, handle, (task, backend, requant,
                                                             None if len(todo) == len(keys) else tuple(todo),
                                                             threads))
            meta[index] = (task, keys, seqs)
    if isinstance(report, SweepProgress):
        report.start(done)
    if report:
        report(done, total, "submitted" if meta else "done (every row already in the results file)")
    try:
        _collect(executor, meta, rows, db, requant, backend, report, done, total)
    finally:  # interrupted (Ctrl-C, an error): what is still queued is cancelled, nothing half-written
        executor.cancel()
    return [rows[k] for k in sorted(rows)]


def _collect(executor, meta, rows, db, requant, backend, report, done, total) -> None:
    """Each finished plan's rows: into the results file (one transaction per row), then ``rows``."""
    for index, result in executor.completed():
        task, keys, seqs = meta.pop(index)
        for row in result:
            if db is not None:
                db.insert({**keys[row.dataset], **row.as_dict(), "seq": seqs[row.dataset], "requant": requant,
                           "backend": backend, "executor": executor.name,
                           "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            rows[seqs[row.dataset]] = row
            done += 1
            if report:
                report(done, total, "done" if done == total else f"{task.label()} {row.dataset}")


def _key(ctx: ModelContext, task: PlanTask, dataset: str, requant: str, threads: int) -> dict:
    return {"model": task.model, "plan": task.plan_text(requant, ctx.calibration_images, threads), "dataset": dataset,
            "data_sha256": ctx.data_sha256, "refquant_version": __version__, "model_sha256": ctx.model_sha256}


def _stored_row(db, key: dict) -> CompareRow:
    stored = db.row(key)
    return CompareRow(**{f: stored[f] for f in ROW_FIELDS})


def _set_names(model, corruptions, severity=None) -> list:
    """The evaluation sets' names, as the data functions name them (``photo_data``: ``NAME-SEVERITY``)."""
    if model in OCR_MODELS:
        return list(OCR_SETS[model])
    if model in REAL_MODELS:
        severity = severity or REAL_MODEL_DEFAULTS["severity"]
        return ["views", *(f"{name}-{severity}" for name in (CORRUPTIONS if corruptions is None else corruptions))]
    return list(TEST_SETS)  # the names DigitsData.test_sets gives its sets, without building them


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
            "top1_agr": f"{100 * clean.top1_agreement:.1f}",
            "top5_agr": f"{100 * clean.top5_agreement:.1f}",
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
