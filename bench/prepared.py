"""Per-layer fixed cost of a quantized ``run``, plain and prepared, next to ONNX Runtime.

    python bench/prepared.py [--rounds 7] [--calls 5] [--models NAME ...] [--json]

Plan: ``weights=minmax:7:per-channel activations=static-minmax:8`` — 7-bit weights (int8
storage, ``[-63, 63]``), ONNX Runtime's "reduce range" for x86 hosts without VNNI, where its
u8×s8 kernels add pairs of products in saturating int16 (``vpmaddubsw``): with full 8-bit
weights ONNX Runtime's results then differ from the exact ones (``--plan`` to change it).

Models: the three shipped ones (``digits-mlp``, ``digits-cnn``, ``digits-resnet``; one test
image) and a ResNet-18-shaped graph built here with the graph builder (random weights, the
torchvision layer structure: 7×7/2 stem, max-pool, four stages of two basic blocks, 1×1/2
projection shortcuts, global average pool, a 1000-way Gemm) on a 64×64 and a 224×224 input,
batch 1. Every model is quantized with the plan (requant ``float32``) and run on the Numba backend with one
thread (``numba.set_num_threads(1)``); ONNX Runtime runs the model's QOperator export
(``refquant.onnx_io.export_qoperator``) with ``intra_op_num_threads=1`` and graph
optimizations on.

What is measured, in the same process, interleaved (each round runs a block of ``--calls``
consecutive calls of every variant in turn; medians over all calls):

* ``plain`` — ``qm.run(x, backend="numba", prepared=False)``: every layer recomputes its
  int32 bias and requantizer and the kernel repacks its weights, per call;
* ``prepared`` — ``qm.run(x, backend="numba")``: the prepared program;
* ``onnxruntime`` — ``session.run`` on the QOperator model;
* ``kernels`` — the bare jitted kernels of the quantized layers only, each call timed alone
  with fresh arguments built (untimed) just before it: the arithmetic, plus Numba's dispatch
  and parallel-region launch, which no preparation removes.

**Per-layer fixed cost** of a quantized layer (Conv/Gemm/MatMul): the wall time of its step
inside ``run`` (``LayerRecord.seconds``: from before ``_run_layer`` to its result) without the
arithmetic, measured two ways:

* *stubbed* (the headline figure) — the median step time in a separate phase in which every
  jitted conv/matmul kernel is replaced by a Python no-op (outputs are then garbage and not
  used): a direct measurement, with no subtraction of two noisy numbers. It excludes Numba's
  dispatch of the kernel (type checks of its arguments, the parallel-region launch — some
  tens of µs per call on this machine, see ``kernels ms`` on the digits models), which is
  the same prepared or not;
* *subtracted* — the median step time in the timed runs minus the median time of the bare
  jitted kernel on the same input; and the minimum step time minus the minimum kernel time.
  On large layers this is a difference of two ±10 % numbers of several ms: only the digits
  and 64×64 rows mean much. It is everything but the
arithmetic: input checks, bias and requantizer, weight packing, planning and allocating the
scratch and output, the record. The table gives the median and maximum of each over the model's
layers, and the whole model's ``run`` time next to ONNX Runtime's (ratios of medians).

Before timing, the plain and prepared outputs are checked to be bit-identical to each other
and to the per-layer integers of a reference-backend run, and ONNX Runtime's output is
required to be bit-identical to refquant's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the float steps (Add) run on one thread too

import numba  # noqa: E402
import numpy as np  # noqa: E402

from refquant.executor import quantize_model  # noqa: E402
from refquant.graph import GraphBuilder  # noqa: E402
from refquant.host import INT8_FLAGS, cpu_flags, cpu_model  # noqa: E402
from refquant.numerics import quantize  # noqa: E402
from refquant.registry import get_model  # noqa: E402

PLAN = "weights=minmax:7:per-channel activations=static-minmax:8"
SHIPPED = ("digits-mlp", "digits-cnn", "digits-resnet")


# --- environment ---------------------------------------------------------------------------

def cpu_info() -> dict:
    """The CPU model, the int8-relevant ISA flags of this host, its cores and load."""
    flags = cpu_flags()
    return {"model": cpu_model(), "int8_flags": {f: f in flags for f in INT8_FLAGS}, "cores": os.cpu_count(),
            "load_average": os.getloadavg()}


def versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        out["onnxruntime"] = None
    return out


# --- models --------------------------------------------------------------------------------

def resnet18(hw: int, seed: int = 0):
    """A ResNet-18-shaped graph (He-initialised random weights) on ``[N, 3, hw, hw]``."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"resnet18-{hw}")
    x = b.input("x", ["N", 3, hw, hw])

    def conv(h, c_in, c_out, k, stride, pad):
        w = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))).astype(np.float32)
        bias = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        return b.conv(h, w, bias, strides=[stride, stride], pads=[pad] * 4, kernel_shape=[k, k])

    h = b.relu(conv(x, 3, 64, 7, 2, 3))
    h = b.max_pool(h, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            y = conv(b.relu(conv(h, c_in, c_out, 3, s, 1)), c_out, c_out, 3, 1, 1)
            shortcut = conv(h, c_in, c_out, 1, s, 0) if (s != 1 or c_in != c_out) else h
            h = b.relu(b.add(y, shortcut))
            c_in = c_out
    h = b.flatten(b.global_average_pool(h))
    w = (rng.standard_normal((1000, 512)) * np.sqrt(1.0 / 512)).astype(np.float32)
    y = b.gemm(h, w, np.zeros(1000, np.float32), transB=1)
    calibration = rng.standard_normal((4, 3, hw, hw)).astype(np.float32)
    return b.build(outputs=[y]), calibration, calibration[:1]


def shipped(name: str):
    from refquant.data import load_digits
    from refquant.data import digits_inputs as model_inputs

    graph = get_model(name)
    data = load_digits()
    calibration = model_inputs(graph, data.calibration(128).x)
    x = model_inputs(graph, data.test.x[:1])
    return graph, calibration, x


# --- measuring -----------------------------------------------------------------------------

def bare_kernels(qm, x) -> dict:
    """``{layer: (kernel, make_arguments)}``: each layer's jitted kernel and a function
    returning fresh arguments for it (output and scratch as a call allocates them: the conv's
    ring of input rows must start empty, or the kernel skips loading them) on the integers
    that layer sees in ``run``."""
    feeds = {qm.graph.inputs[0].name: x}
    res = qm.run(feeds, backend="numba", keep=True)
    tensors = {}
    outputs = {s.name: s.output for s in qm.steps}
    for rec in res.records:
        q = rec.q_output
        if rec.kernel == "input":  # the quantized graph input is not kept in its record
            q = quantize(x, rec.output_qparams)
        tensors[outputs.get(rec.name, rec.name)] = (q, rec.output_qparams)
    program = qm.prepare("numba")
    calls = {}
    for name, prep in program.steps.items():
        layer = qm.layers[name]
        q, qp = tensors[layer.step.node.inputs[0]]
        q_in = q if prep.conv else q.reshape(q.shape[0], -1)
        b_q = prep.bias(qp)
        packed, binding = prep._backend_layer(q_in, qp, b_q)
        rq = prep.requantizer(qp, layer.observed)
        rq_args = packed.requant_args(rq)
        calls[name] = (packed.kernel, lambda p=packed, q=q_in, b=binding, r=rq_args, d=rq.out_dtype:
                       p.arguments(q, b, r, d)[2])
    return calls


def check_outputs(qm, x, session) -> dict:
    """Plain == prepared (outputs and every layer's integers), and refquant vs ONNX Runtime."""
    feeds = {qm.graph.inputs[0].name: x}
    plain = qm.run(feeds, backend="numba", keep=True, prepared=False)
    prepared = qm.run(feeds, backend="numba", keep=True)
    reference = qm.run(feeds, backend="reference", keep=True)
    for a, b, c in zip(plain.records, prepared.records, reference.records):
        if a.q_output is not None and not (np.array_equal(a.q_output, b.q_output)
                                           and np.array_equal(a.q_output, c.q_output)):
            raise AssertionError(f"{qm.graph.name}: layer {a.name}: plain, prepared and reference differ")
    name = qm.graph.outputs[0]
    ours = prepared.outputs[name]
    if not np.array_equal(ours.view(np.uint32), plain.outputs[name].view(np.uint32)):
        raise AssertionError(f"{qm.graph.name}: plain and prepared outputs differ")
    if session is None:
        return {"onnxruntime": "not run"}
    theirs = session.run(None, feeds)[0]
    differ = int(np.count_nonzero(theirs.view(np.uint32) != ours.view(np.uint32)))
    if differ:
        raise AssertionError(f"{qm.graph.name}: {differ} of {ours.size} onnxruntime outputs differ from "
                             f"refquant's (u8 x s8 with 8-bit weights saturates int16 pair sums in "
                             f"onnxruntime's AVX2 kernels: use 7-bit weights or signed activations)")
    return {"onnxruntime": "bit-identical", "outputs": int(ours.size)}


def _no_kernel(*args):
    """Stands in for a jitted kernel: the arithmetic removed, everything around it kept."""


def stubbed_step_times(qm, runs, rounds, calls) -> dict:
    """``{variant: {layer: median step seconds}}`` with every jitted kernel replaced by a
    no-op: the step's fixed cost measured directly (Numba's dispatch excluded)."""
    from refquant.kernels import fast

    saved = dict(fast._CONV_KERNELS), dict(fast._MATMUL_KERNELS)
    program = qm.prepare("numba")
    packed = [p for step in program.steps.values() for p in step._packed.values() if p is not None]
    kernels = [p.kernel for p in packed]
    steps = {"plain": {}, "prepared": {}}
    try:
        for table_ in (fast._CONV_KERNELS, fast._MATMUL_KERNELS):
            for path in table_:
                table_[path] = _no_kernel
        for p in packed:
            p.kernel = _no_kernel
        for variant, f in runs.items():
            f()
        for _ in range(rounds):
            for variant, f in runs.items():
                for _ in range(calls):
                    for rec in f().records:
                        if rec.name in qm.layers:
                            steps[variant].setdefault(rec.name, []).append(rec.seconds)
    finally:
        fast._CONV_KERNELS.update(saved[0])
        fast._MATMUL_KERNELS.update(saved[1])
        for p, k in zip(packed, kernels):
            p.kernel = k
    return {variant: {n: statistics.median(v) for n, v in s.items()} for variant, s in steps.items()}


def measure(name, graph, calibration, x, rounds, calls, with_ort, plan=PLAN) -> dict:
    qm = quantize_model(graph, plan, calibration)
    session = None
    if with_ort:
        from refquant.onnx_io import export_qoperator
        from refquant.onnx_io.runtime import ort_session

        session = ort_session(export_qoperator(qm).model, optimize=True, threads=1)
    check = check_outputs(qm, x, session)
    kernels = bare_kernels(qm, x)
    feeds = {qm.graph.inputs[0].name: x}
    runs = {"plain": lambda: qm.run(feeds, backend="numba", prepared=False),
            "prepared": lambda: qm.run(feeds, backend="numba")}
    times = {k: [] for k in ("plain", "prepared", "onnxruntime", "kernels")}
    steps = {"plain": {}, "prepared": {}}
    kernel_times = {n: [] for n in kernels}
    for f in runs.values():  # warm-up
        f()
    for kernel, make in kernels.values():
        kernel(*make())
    if session is not None:
        session.run(None, feeds)
    for _ in range(rounds):
        for variant, f in runs.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                res = f()
                times[variant].append(time.perf_counter() - t0)
                for rec in res.records:
                    if rec.name in qm.layers:
                        steps[variant].setdefault(rec.name, []).append(rec.seconds)
        if session is not None:
            for _ in range(calls):
                t0 = time.perf_counter()
                session.run(None, feeds)
                times["onnxruntime"].append(time.perf_counter() - t0)
        for _ in range(calls):
            total = 0.0
            for n, (kernel, make) in kernels.items():
                args = make()
                t1 = time.perf_counter()
                kernel(*args)
                dt = time.perf_counter() - t1
                kernel_times[n].append(dt)
                total += dt
            times["kernels"].append(total)
    stubbed = stubbed_step_times(qm, runs, rounds, calls)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    kernel_med = {n: statistics.median(v) for n, v in kernel_times.items()}
    kernel_min = {n: min(v) for n, v in kernel_times.items()}
    fixed = {variant: {n: statistics.median(v) - kernel_med[n] for n, v in steps[variant].items()}
             for variant in steps}
    fixed_min = {variant: {n: min(v) - kernel_min[n] for n, v in steps[variant].items()} for variant in steps}
    return {
        "model": name, "layers": len(qm.layers), "steps": len(qm.steps), "check": check,
        "ms": {k: (v * 1e3 if v is not None else None) for k, v in med.items()},
        "fixed_us": {variant: {"median": statistics.median(f.values()) * 1e6, "max": max(f.values()) * 1e6,
                               "sum_ms": sum(f.values()) * 1e3,
                               "median_of_minima": statistics.median(fixed_min[variant].values()) * 1e6,
                               "max_of_minima": max(fixed_min[variant].values()) * 1e6}
                     for variant, f in fixed.items()},
        "stubbed_us": {variant: {"median": statistics.median(v.values()) * 1e6, "max": max(v.values()) * 1e6}
                       for variant, v in stubbed.items()},
        "per_layer_us": {n: {"plain": fixed["plain"][n] * 1e6, "prepared": fixed["prepared"][n] * 1e6,
                             "kernel": kernel_med[n] * 1e6, "plain_min": fixed_min["plain"][n] * 1e6,
                             "prepared_min": fixed_min["prepared"][n] * 1e6, "kernel_min": kernel_min[n] * 1e6}
                         for n in kernel_med},
    }


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _pair(f) -> str:
    return f"{f['median']:.0f}, {f['max']:.0f} · {f['median_of_minima']:.0f}, {f['max_of_minima']:.0f}"


def table(rows) -> str:
    lines = ["| model | layers / steps | stubbed: fixed µs/layer plain (median, max) | stubbed: prepared "
             "| subtracted: plain, medians (median, max) · minima (median, max) | subtracted: prepared "
             "| run ms plain | run ms prepared | kernels ms | onnxruntime ms | prepared × ORT | plain / prepared |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms, fx = r["ms"], r["fixed_us"]
        ort = ms["onnxruntime"]
        lines.append(
            f"| {r['model']} | {r['layers']} / {r['steps']} "
            f"| {r['stubbed_us']['plain']['median']:.0f}, {r['stubbed_us']['plain']['max']:.0f} "
            f"| {r['stubbed_us']['prepared']['median']:.0f}, {r['stubbed_us']['prepared']['max']:.0f} "
            f"| {_pair(fx['plain'])} | {_pair(fx['prepared'])} "
            f"| {_fmt(ms['plain'])} "
            f"| {_fmt(ms['prepared'])} | {_fmt(ms['kernels'])} | {_fmt(ort)} "
            f"| {_fmt(ms['prepared'] / ort if ort else None)} | {_fmt(ms['plain'] / ms['prepared'])} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--models", nargs="*",
                   default=[*SHIPPED, "resnet18-64", "resnet18-224"])
    p.add_argument("--plan", default=PLAN)
    p.add_argument("--no-ort", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    numba.set_num_threads(1)
    try:
        import onnxruntime  # noqa: F401
        with_ort = not args.no_ort
    except ImportError:
        with_ort = False
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "cpu": cpu_info(), "versions": versions(), "numba_threads": numba.get_num_threads(),
           "rounds": args.rounds, "calls": args.calls, "plan": args.plan}
    rows = []
    for name in args.models:
        if name.startswith("resnet18-"):
            graph, calibration, x = resnet18(int(name.split("-")[1]))
        else:
            graph, calibration, x = shipped(name)
        rows.append(measure(name, graph, calibration, x, args.rounds, args.calls, with_ort, args.plan))
        if not args.json:
            print(f"{name}: {rows[-1]['check']}", flush=True)
    env["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps({"environment": env, "results": rows}, indent=1))
    else:
        print(json.dumps(env))
        print(table(rows))


if __name__ == "__main__":
    main()
