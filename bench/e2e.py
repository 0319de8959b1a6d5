"""End to end: a ResNet-18-shaped network and EfficientNet-Lite0 on refquant's numba backend,
ONNX Runtime and the ONNX reference evaluator, in one process.

    python bench/e2e.py [--models resnet18 efficientnet-lite0] [--sizes 64 224]
                        [--granularities per-tensor per-channel per-channel-w7-u8]
                        [--batches 1 8] [--threads 1 2] [--rounds 5] [--reference-rounds 1]
                        [--reference-batches 1 8] [--no-tile] [--json]

``--models`` defaults to ``resnet18`` alone (``--sizes`` applies to it).
``efficientnet-lite0`` is the real network of ``refquant.zoo`` (``resolve_model``; extra
``models``), 224×224, calibrated on ``refquant compare``'s 16 calibration photo views
(``refquant.compare.photo_data``, never a test view), its inputs the first ``batch`` of the 11
``center`` photo views; one run per entry of ``--granularities`` (:data:`EFFNET_PLANS`, all
with the int32 bias rule, ``quantize_model``'s default):

* ``per-tensor`` — ``weights=minmax:8 activations=static-minmax:8:signed``,
* ``per-channel`` — ``weights=minmax:8:per-channel activations=static-minmax:8:signed``:
  full 8-bit weights and **int8** activations, because ONNX Runtime's s8×s8 products are exact
  on every host (``tests/test_zoo_golden.py``'s bit-exact QOperator check uses them) — but on an
  AVX2 host they run on its slower s8×s8 kernels;
* ``per-channel-w7-u8`` — ``weights=minmax:7:per-channel activations=static-minmax:8``: the
  ResNet rows' kind of plan, uint8 activations on ONNX Runtime's fast u8×s8 kernels, exact
  with 7-bit weights (pair sums at most 2·255·63 < 2¹⁵).

``--reference-rounds 0`` times the reference evaluator by its one call in the check (before
the rounds, not interleaved); ``--reference-batches`` restricts the batches it runs at (its
``ref ≠`` is then ``–``).

The ResNet model is ``bench/prepared.py``'s ResNet-18-shaped graph (random He-initialised weights,
torchvision's layer structure) quantized with ``weights=minmax:7:per-channel
activations=static-minmax:8`` (requant ``float32``): 7-bit weights, because ONNX Runtime's
u8×s8 kernels on x86 hosts without VNNI add pairs of products in saturating int16, and with
full 8-bit weights its results are then not the exact ones.

Three engines run the same quantized model:

* ``refquant`` — ``qm.run(x, backend="numba")`` (the prepared program) with
  ``numba.set_num_threads(t)`` and NumPy's BLAS at ``t`` threads too (``threadpoolctl``; the
  exact float32 GEMM of ``refquant.kernels.exact_gemm`` runs BLAS with Numba's count anyway,
  this also covers the NumPy work outside the kernels), Numba's OpenMP threading layer with
  ``GOMP_SPINCOUNT=100000`` unless ``NUMBA_THREADING_LAYER`` / ``GOMP_SPINCOUNT`` /
  ``OMP_WAIT_POLICY`` say otherwise: an idle pool thread spins (2–4 ms), then sleeps, and
  every timed call follows a pause of ``PAUSE_S`` (5 ms) in which the engine timed before stops
  spinning. Waking a sleeping thread costs 53 µs per parallel region on this machine
  (``OMP_WAIT_POLICY=PASSIVE``, the earlier default: the two-thread 224×224 ResNet-18 call 15.7
  ms) against 1.9 µs while it spins (11.3 ms), and the pause keeps the spin off ONNX Runtime's
  cores (a spin of 0.2–0.5 ms, 10000, was the default until refquant's serial stretches between
  parallel regions were measured longer than it: code comment); the active policy's endless
  spinning made ONNX Runtime's two-thread call 13 → 19 ms, and the ``workqueue`` layer costs
  48–126 µs per parallel region (figures at the top of the code and in bench/RESULTS.md);
* ``onnxruntime`` — ``session.run`` on the model's QOperator export
  (``refquant.onnx_io.export_qoperator``), ``intra_op_num_threads=t``, all graph
  optimizations except the QDQ fusions (``session.disable_quant_qdq``: fused,
  DequantizeLinear → Add → QuantizeLinear becomes ``QLinearAdd``, which rounds differently
  from the float Add in a few outputs per thousand — 680 of the 8000 logits at 64×64 batch 8),
  and no spinning of idle pool threads (``session.intra_op.allow_spinning = 0``: with two
  threads on two shared cores, spinning threads starve the engine measured next — with its
  spinning on, refquant's two-thread ResNet-18 call took 30.9 ms instead of 11.3, and ONNX
  Runtime's own 6.1 ms instead of 6.3; ``--ort-spinning`` turns it on);
* ``refquant-tile`` — the same, with the exact float32 GEMM switched off
  (``refquant.kernels.exact_gemm.USE_SGEMM = False`` while its program is prepared): every
  conv on ``fast``'s int8 tile kernels, i.e. refquant before that path (``--no-tile`` drops it);
* ``onnx-reference`` — ``onnx.reference.ReferenceEvaluator`` on the same exported model
  (NumPy, single-threaded; listed under every thread count), its opset raised to 19
  (:func:`reference_evaluator`).

Before anything is timed, for every (size, batch) ONNX Runtime's output is required to be
bit-identical to refquant's (float32 bits of the dequantized logits); the reference
evaluator's is compared and the number of differing logits reported (column ``ref ≠``): its
QLinearConv requantizes a few accumulators differently (on the 64×64 batch-8 input the first
is one output of the stem: 121 where refquant's numba and reference backends and ONNX Runtime
give 122), and each difference propagates to the logits. Then, per thread count, ``--rounds``
rounds each time one call of every engine in turn (the reference evaluator only in the first
``--reference-rounds`` rounds of the first thread count: it takes seconds per call and runs
on one thread whatever the count); the table gives medians and the ratio
refquant / onnxruntime. The per-operator shares come from the refquant records of the
timed one-thread calls (``LayerRecord.seconds``) and from ONNX Runtime's own profiler on a
separate session (``enable_profiling``), both batch 1, one thread; convolutions are split
by shape class (stem 7×7/2, 3×3/1, 3×3/2, 1×1/2; EfficientNet's depthwise 3×3/5×5, stride 1/2)
with the milliseconds of each engine; for EfficientNet also summed by group (:data:`GROUPS`:
depthwise conv, 1×1 conv, stem, Add, pooling, classifier, others).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import statistics
import sys
import time

# Numba's OpenMP layer (its default where libgomp is present) leaves its pool threads spinning
# after every parallel region; on two shared cores they take the CPU from the calling thread
# and from the engines timed next. Measured on the 64×64 batch-1 model, one call per thread
# count in turn, load average 6.8: omp 150 ms (1 thread) / 337 ms (2 threads);
# omp with OMP_WAIT_POLICY=PASSIVE 83 / 89 ms; workqueue 36 / 28 ms. On an idle machine
# (load 0.9, 2026-12-07) the 224×224 ResNet-18, batch 1: workqueue 36 / 37 ms (one / two
# threads), omp active 32 / 31 ms (ONNX Runtime's two-thread call then 19 ms instead of 13: the
# spinning threads take its cores), omp passive 32 / 21 ms (ONNX Runtime 13 ms). So the passive
# OpenMP layer was the default: a loaded machine is no place for these figures (the load
# average is recorded with every row). Later, 2026-12-07, AMD EPYC Zen 4, idle: an empty
# parallel region after 20–40 µs of serial work costs 53 µs with OMP_WAIT_POLICY=PASSIVE (a
# futex wake-up), 1.9 µs with GOMP_SPINCOUNT=10000, 23 µs with 2000 (the spin ends before the
# next region); ResNet-18 224×224, batch 1, two threads: passive 15.7 ms, spin count 2000
# 14.4 ms, 10000 11.3 ms, 30000 11.5 ms, and ONNX Runtime's two-thread call 6.3–6.5 ms beside
# either. A short spin, which ends before the other engine's turn, was the default then.
# 2026-12-08, same machine: EfficientNet-Lite0 (w7-u8), batch 1, two threads, refquant alone in
# its process: spin count 10000 6.6 ms (minimum) / 8.4 ms (median), 100000 5.7 / 5.9 ms — its
# serial stretches (small layers below the parallel threshold, the table operators) outlast the
# short spin, and each wake-up costs ~50 µs. How long a spin lasts, measured as the cost of an
# empty two-thread region after a stretch of serial work: with 10000, 1.8 µs after 0.2 ms and
# 37.9 µs after 0.5 ms; with 100000, 3.8 µs after 2 ms and 38.5 µs after 4 ms. So the spin is
# 100000 now, and every timed call is preceded by a pause of PAUSE_S (5 ms, longer than that
# spin), so that no engine's idle threads spin into another engine's call.
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "100000")
PAUSE_S = 0.005

import numba  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepared import PLAN, cpu_info, resnet18, versions  # noqa: E402

from refquant.executor import quantize_model  # noqa: E402
from refquant.onnx_io import export_qoperator  # noqa: E402

#: EfficientNet-Lite0's plans: 8-bit weights, int8 activations (module doc)
EFFNET_PLANS = {"per-tensor": "weights=minmax:8 activations=static-minmax:8:signed",
                "per-channel": "weights=minmax:8:per-channel activations=static-minmax:8:signed",
                # ResNet's kind of plan: uint8 activations, ONNX Runtime's fast u8×s8 kernels, exact
                # with 7-bit weights (2·255·63 < 2^15)
                "per-channel-w7-u8": "weights=minmax:7:per-channel activations=static-minmax:8"}


ORT_SPINNING = False  # --ort-spinning


def session(model, threads: int, profile: bool = False):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.log_severity_level = 3
    o.enable_profiling = profile
    # no QDQ fusion: fused, DequantizeLinear → Add → QuantizeLinear becomes QLinearAdd, whose
    # own rounding differs from the float Add in a few outputs per thousand (batch 8 here)
    o.add_session_config_entry("session.disable_quant_qdq", "1")
    # idle pool threads must not spin on the two shared cores while the other engines run
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_SPINNING else "0")
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def conv_classes(qm) -> dict:
    """step name → its class: the operator, convolutions by shape (``Conv stem 7x7/2`` — the
    layer reading the 3-channel image —, ``Conv depthwise 5x5/2`` — groups = channels —,
    ``Conv 3x3/1``, ``Conv 1x1/2``)."""
    out = {}
    for s in qm.steps:
        out[s.name] = s.node.op_type
        if s.node.op_type == "Conv":
            w = qm.layers[s.name].weight.values
            stride = s.node.attributes.get("strides", [1, 1])[0]
            group = s.node.attributes.get("group", 1)
            shape = f"{w.shape[2]}x{w.shape[3]}/{stride}"
            if w.shape[1] * group == 3:
                out[s.name] = f"Conv stem {shape}"
            elif group > 1 and group == w.shape[0] and w.shape[1] == 1:
                out[s.name] = f"Conv depthwise {shape}"
            else:
                out[s.name] = f"Conv {shape}"
    return out


#: the coarse groups of the EfficientNet summary: (group, test on the class name)
GROUPS = (("depthwise conv", lambda c: c.startswith("Conv depthwise")),
          ("1×1 conv", lambda c: c.startswith("Conv 1x1")),
          ("stem conv", lambda c: c.startswith("Conv stem")),
          ("other conv", lambda c: c.startswith("Conv")),
          ("Add (float fallback)", lambda c: c == "Add"),
          ("pooling", lambda c: "Pool" in c),
          ("Gemm (classifier)", lambda c: c == "Gemm"))


def group_of(cls: str) -> str:
    return next((g for g, test in GROUPS if test(cls)), "others")


def classify(op: str, name: str, classes: dict) -> str:
    """The class of a refquant step or of an ONNX Runtime node (named after the step it
    computes, e.g. ``conv_3_token_12``, ``add_0``; the rest — layout transposes, the input's
    QuantizeLinear — under their own operator)."""
    base = name
    for cut in ("_token", "_kernel_time", "."):
        base = base.split(cut)[0]
    return classes.get(base, op)


def ort_profile(model, feeds, classes, calls=7) -> dict:
    """{class: median ms per call} from ONNX Runtime's profiler (one thread)."""
    s = session(model, 1, profile=True)
    for _ in range(calls):
        s.run(None, feeds)
    path = s.end_profiling()
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(path)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["name"], e["args"].get("op_name", "?"))].append(e["dur"] / 1e3)
    shares = collections.defaultdict(float)
    for (name, op), v in per_node.items():
        shares[classify(op, name, classes)] += statistics.median(v[1:] if len(v) > 1 else v)
    return dict(shares)


def reference_evaluator(model):
    """``onnx.reference.ReferenceEvaluator`` on ``model`` with its default-domain opset raised
    to 19: the evaluator implements DequantizeLinear/QuantizeLinear from opset 19 on, whose
    integer semantics are those of the exported opset (19 only adds float8 types)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, 19)
    return ReferenceEvaluator(m)


def check(qm, model, x, reference=True) -> dict:
    """Bit-compare ONNX Runtime's and the reference evaluator's outputs with refquant's (ORT's
    must be identical); ``reference_ms``: the evaluator's call, timed."""
    feeds = {qm.graph.inputs[0].name: x}
    name = qm.graph.outputs[0]
    ours = qm.run(feeds, backend="numba").outputs[name]
    ort_out = session(model, 1).run(None, feeds)[0]
    out = {"outputs": int(ours.size)}
    others = [("onnxruntime", ort_out)]
    if reference:
        evaluator = reference_evaluator(model)
        t0 = time.perf_counter()
        others.append(("onnx-reference", evaluator.run(None, feeds)[0]))
        out["reference_ms"] = (time.perf_counter() - t0) * 1e3
    for who, theirs in others:
        differ = int(np.count_nonzero(np.asarray(theirs, np.float32).view(np.uint32) != ours.view(np.uint32)))
        if who == "onnxruntime" and (differ or theirs.shape != ours.shape):
            raise AssertionError(f"{qm.graph.name}: {differ} of {ours.size} {who} outputs differ from refquant's")
        out[f"{who}_differing"] = differ
        if who == "onnx-reference":
            out["onnx-reference_max_abs_diff"] = float(np.max(np.abs(np.asarray(theirs, np.float64) - ours)))
    return out


def tile_model(graph, plan, calibration, feeds):
    """The model quantized again, its program prepared with the exact float32 GEMM off."""
    from refquant.kernels import exact_gemm

    qm = quantize_model(graph, plan, calibration)
    exact_gemm.USE_SGEMM = False
    try:
        qm.run(feeds, backend="numba")
    finally:
        exact_gemm.USE_SGEMM = True
    return qm


def resnet18_case(hw):
    """ResNet-18-shaped, random weights, random N(0, 1) inputs (one draw per batch, in order)."""
    graph, calibration, _ = resnet18(hw)
    rng = np.random.default_rng(1)
    return {"model": "resnet18", "label": f"{hw}×{hw}", "size": hw, "plan": PLAN, "graph": graph,
            "calibration": calibration,
            "inputs": lambda batch: rng.standard_normal((batch, 3, hw, hw)).astype(np.float32)}


def effnet_cases(granularities, calibration_views=16):
    """EfficientNet-Lite0 (real weights, ``refquant.zoo``), one case per weight granularity: the
    calibration views of ``refquant compare`` (16 non-test photo views), inputs the first
    ``batch`` of the 11 ``center`` views (preprocessed, 224×224)."""
    from refquant.compare import photo_data
    from refquant.registry import resolve_model

    graph = resolve_model("efficientnet-lite0")
    data = photo_data(calibration_views, views=1, corruptions=())
    views = data.sets[0][1]
    return [{"model": "efficientnet-lite0", "label": f"EfficientNet-Lite0 {g} 224×224", "size": 224,
             "plan": EFFNET_PLANS[g], "graph": graph, "calibration": data.calibration,
             "inputs": lambda batch: np.ascontiguousarray(views[:batch], np.float32)} for g in granularities]


def measure(case, batches, thread_counts, rounds, reference_rounds, tile=True, reference_batches=None) -> dict:
    """One model and plan: check, then time every engine interleaved (module doc).
    ``reference_rounds=0``: the reference evaluator is timed once, in the check (before the
    rounds, not interleaved); ``reference_batches``: the batches it runs at (default all)."""
    graph, calibration, plan = case["graph"], case["calibration"], case["plan"]
    qm = quantize_model(graph, plan, calibration)
    model = export_qoperator(qm).model
    classes = conv_classes(qm)
    out = {"model": case["model"], "label": case["label"], "size": case["size"], "plan": plan,
           "runs": [], "shares": {}, "classes": classes}
    for batch in batches:
        x = case["inputs"](batch)
        feeds = {qm.graph.inputs[0].name: x}
        with_reference = reference_batches is None or batch in reference_batches
        checked = check(qm, model, x, reference=with_reference)
        reference = reference_evaluator(model) if with_reference and reference_rounds else None
        qm_tile = tile_model(graph, plan, calibration, feeds) if tile else None
        if tile:
            name = qm.graph.outputs[0]
            a, b = qm.run(feeds, backend="numba").outputs[name], qm_tile.run(feeds, backend="numba").outputs[name]
            if not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
                raise AssertionError("the tile kernels and the exact float32 GEMM disagree")
        for t in thread_counts:
            numba.set_num_threads(t)
            threadpool_limits(t, user_api="blas")
            sess = session(model, t)
            engines = {"refquant": lambda: qm.run(feeds, backend="numba"),
                       "onnxruntime": lambda: sess.run(None, feeds)}
            if tile:
                engines["refquant-tile"] = lambda: qm_tile.run(feeds, backend="numba")
            if reference is not None:
                engines["onnx-reference"] = lambda: reference.run(None, feeds)
            for k, f in engines.items():  # warm-up
                if k != "onnx-reference":
                    f()
            times = {k: [] for k in engines}
            per_op = collections.defaultdict(list)
            loads = [os.getloadavg()[0]]
            for r in range(rounds):
                for k, f in engines.items():
                    if k == "onnx-reference" and (r >= reference_rounds or t != thread_counts[0]):
                        continue  # seconds per call, and single-threaded: timed once
                    time.sleep(PAUSE_S)  # the engine timed before has stopped spinning (module doc)
                    t0 = time.perf_counter()
                    res = f()
                    times[k].append(time.perf_counter() - t0)
                    if k == "refquant" and t == 1 and batch == 1:
                        ops = collections.defaultdict(float)
                        for rec in res.records:
                            ops[classify(rec.op, rec.name, classes)] += rec.seconds
                        for op, sec in ops.items():
                            per_op[op].append(sec)
                loads.append(os.getloadavg()[0])
            med = {k: statistics.median(v) * 1e3 for k, v in times.items() if v}
            if not reference_rounds and "reference_ms" in checked and t == thread_counts[0]:
                med["onnx-reference"] = checked["reference_ms"]  # the check's one call
            out["runs"].append({"batch": batch, "threads": t, "ms": med, "calls": {k: len(v) for k, v in times.items()},
                                "refquant_over_onnxruntime": med["refquant"] / med["onnxruntime"],
                                "tile_over_onnxruntime": med["refquant-tile"] / med["onnxruntime"] if tile else None,
                                "load_average": [min(loads), max(loads)], "check": checked})
            print(json.dumps(out["runs"][-1]), flush=True)
            if per_op:
                out["shares"]["refquant"] = {op: statistics.median(v) * 1e3 for op, v in per_op.items()}
        if batch == 1:
            out["shares"]["onnxruntime"] = ort_profile(model, feeds, classes)
    numba.set_num_threads(thread_counts[0])
    threadpool_limits(thread_counts[0], user_api="blas")
    return out


def label(res) -> str:
    return res.get("label") or f"{res['size']}×{res['size']}"


def table(results) -> str:
    lines = ["| input | batch | threads | refquant ms | tile kernels ms | onnxruntime ms | onnx reference ms | "
             "refquant / ORT | tile / ORT | ORT ≠ | ref ≠ | load (min–max) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        for r in res["runs"]:
            ms = r["ms"]
            ref = f"{ms['onnx-reference']:.0f}" if "onnx-reference" in ms else "–"
            tile = f"{ms['refquant-tile']:.1f}" if "refquant-tile" in ms else "–"
            tile_ratio = f"{r['tile_over_onnxruntime']:.1f}×" if r.get("tile_over_onnxruntime") else "–"
            lines.append(f"| {label(res)} | {r['batch']} | {r['threads']} | {ms['refquant']:.1f} | "
                         f"{tile} | {ms['onnxruntime']:.1f} | {ref} | {r['refquant_over_onnxruntime']:.1f}× | {tile_ratio} | "
                         f"{r['check']['onnxruntime_differing']} of {r['check']['outputs']} | "
                         f"{r['check'].get('onnx-reference_differing', '–')} | "
                         f"{r['load_average'][0]:.1f}–{r['load_average'][1]:.1f} |")
    lines.append("")
    for res in results:
        rq, ort = res["shares"].get("refquant", {}), res["shares"].get("onnxruntime", {})
        lines += [f"Per operator, {label(res)}, batch 1, one thread (ms and share of the "
                  f"operators' sum):", ""] + share_table("operator", rq, ort)
        if res.get("model") == "efficientnet-lite0":
            grq, gort = collections.defaultdict(float), collections.defaultdict(float)
            for op, v in rq.items():
                grq[group_of(op)] += v
            for op, v in ort.items():
                gort[group_of(op)] += v
            lines += ["By group:", ""] + share_table("group", grq, gort)
    return "\n".join(lines)


def share_table(what: str, rq: dict, ort: dict) -> list:
    """Markdown rows of ms per key for both engines, each key's share of its engine's total and
    the ratio, largest refquant time first (followed by a blank line)."""
    total_rq, total_ort = sum(rq.values()) or 1.0, sum(ort.values()) or 1.0
    lines = [f"| {what} | refquant ms | share | onnxruntime ms | share | refquant / ORT |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key in sorted(set(rq) | set(ort), key=lambda o: -rq.get(o, 0.0)):
        a, b = rq.get(key), ort.get(key)
        ratio = f"{a / b:.1f}×" if a and b else "–"
        lines.append(f"| {key} | {a or 0:.2f} | {100 * (a or 0) / total_rq:.0f} % | {b or 0:.2f} | "
                     f"{100 * (b or 0) / total_ort:.0f} % | {ratio} |")
    return lines + [""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet18"], choices=["resnet18", "efficientnet-lite0"])
    p.add_argument("--sizes", nargs="*", type=int, default=[64, 224], help="ResNet-18-shaped input sizes")
    p.add_argument("--granularities", nargs="*", default=list(EFFNET_PLANS), choices=list(EFFNET_PLANS),
                   help="EfficientNet-Lite0's weight plans")
    p.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reference-rounds", type=int, default=1,
                   help="rounds that time the reference evaluator; 0: its one call in the check")
    p.add_argument("--reference-batches", nargs="*", type=int, default=None,
                   help="batches the reference evaluator runs at (default all)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-tile", action="store_true", help="do not time refquant with the exact float32 GEMM off")
    p.add_argument("--ort-spinning", action="store_true", help="let ONNX Runtime's idle pool threads spin")
    args = p.parse_args(argv)
    global ORT_SPINNING
    ORT_SPINNING = args.ort_spinning
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "cpu": cpu_info(), "versions": versions(), "plan": PLAN, "rounds": args.rounds,
           "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER"),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
           "onnxruntime_spinning": args.ort_spinning}
    if "efficientnet-lite0" in args.models:
        env["effnet_plans"] = {g: EFFNET_PLANS[g] for g in args.granularities}
    cases = []
    for m in args.models:
        if m == "resnet18":
            cases += [resnet18_case(hw) for hw in args.sizes]
        else:
            cases += effnet_cases(args.granularities)
    results = []
    for case in cases:
        results.append(measure(case, args.batches, args.threads, args.rounds, args.reference_rounds,
                               not args.no_tile, args.reference_batches))
        del results[-1]["classes"]
    env["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
    else:
        print(json.dumps(env))
        print(table(results))


if __name__ == "__main__":
    main()
