"""Throughput of refquant's integer kernels next to NumPy float32 and ONNX Runtime.

    python bench/kernels.py [--repeats 15] [--threads N] [--json]

Shapes: an int8 GEMM ``M=512, K=1024, N=1024`` and the 3×3 convolutions of ResNet-18
(``1×64×56×56 → 64``, ``1×128×28×28 → 128``, ``1×256×14×14 → 256``; stride 1, pad 1).
Throughput is ``2·M·N·K`` (GEMM) or ``2·N·C_out·OH·OW·C_in·9`` (conv) operations per second.

Every kernel runs on the same inputs in the same process: refquant's Numba kernels (int32
accumulators, and fused requantization to 8 bits; the default tile path and, on a VNNI
host, the portable one), the NumPy reference kernels, NumPy float32 on the same shapes
(``a @ w.T``; the conv as im2col + matmul, im2col included), and ONNX Runtime's
MatMulInteger / ConvInteger (weights as initializers, so ORT may prepack them; refquant's
kernels take their weights per call and repack the conv weights each time). Two warm-up
calls are not timed; then the kernels take turns in blocks of consecutive calls (see
:func:`time_case`); the table gives the median per kernel and its ratio to ONNX Runtime
(uint8 × int8) and to NumPy float32 (ratios of medians), and the fastest call. The integer
kernels' int32 results are checked to be identical before timing.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import json
import os
import statistics
import time

import numba
import numpy as np

from refquant.host import cpu_model
from refquant.kernels import fast, reference
from refquant.numerics.requant import make_requantizer

GEMM = (512, 1024, 1024)
CONVS = ((64, 56), (128, 28), (256, 14))


# --- environment -------------------------------------------------------------------------

def _openblas():
    """NumPy's bundled OpenBLAS through ctypes (threadpoolctl, when installed, is preferred)."""
    pattern = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")
    libs = glob.glob(pattern)
    return ctypes.CDLL(libs[0]) if libs else None


def blas_info(threads=None) -> dict:
    """Which BLAS kernel NumPy uses (and set its thread count when ``threads`` is given)."""
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        if threads:
            threadpoolctl.threadpool_limits(threads, user_api="blas")
        info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        if info:
            return {"source": "threadpoolctl", "internal_api": info[0].get("internal_api"),
                    "core": info[0].get("architecture"), "threads": info[0].get("num_threads")}
    lib = _openblas()
    if lib is None:
        return {"source": "unknown"}
    out = {"source": "ctypes (threadpoolctl not installed)", "internal_api": "openblas"}
    for suffix in ("64_", ""):
        name = getattr(lib, f"scipy_openblas_get_corename{suffix}", None)
        if name is not None:
            name.restype = ctypes.c_char_p
            if threads:
                getattr(lib, f"scipy_openblas_set_num_threads{suffix}")(threads)
            out["core"] = name().decode()
            out["threads"] = getattr(lib, f"scipy_openblas_get_num_threads{suffix}")()
            break
    return out


def environment(threads) -> dict:
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "onnxruntime": ort_version,
        "blas": blas_info(threads),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "numba_vnni": fast.HOST_HAS_VNNI and fast.USE_VNNI,
        "load_average": os.getloadavg(),
    }


# --- ONNX Runtime sessions ----------------------------------------------------------------

def ort_session(op, x, w, x_zero_point, w_zero_point, threads, **attrs):
    """One-node ONNX Runtime session: ``x`` is the input, ``w`` and the zero points initializers."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def elem(dtype):
        return TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8

    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(x_zero_point, x.dtype), "x_zp"),
             numpy_helper.from_array(np.array(w_zero_point, w.dtype), "w_zp")]
    node = helper.make_node(op, ["x", "w", "x_zp", "w_zp"], ["y"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", elem(x.dtype), list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})[0]


# --- the cases --------------------------------------------------------------------------------

def operands(rng, a_shape, w_shape, a_dtype):
    a = rng.integers(0, 256, a_shape).astype(np.uint8) if a_dtype == np.uint8 else \
        rng.integers(-128, 128, a_shape).astype(np.int8)
    return a, rng.integers(-127, 128, w_shape).astype(np.int8)


def without_vnni(fn):
    def run():
        saved, fast.USE_VNNI = fast.USE_VNNI, False
        try:
            return fn()
        finally:
            fast.USE_VNNI = saved
    return run


def gemm_kernels(rng, threads, with_ort):
    m, k, n = GEMM
    kernels = {}
    for a_dtype, za in ((np.uint8, 128), (np.int8, 0)):
        a, w = operands(rng, (m, k), (n, k), a_dtype)
        tag = "u8×s8" if a_dtype == np.uint8 else "s8×s8"
        out_fmt = "uint8" if a_dtype == np.uint8 else "int8"
        rq = make_requantizer(0.02, rng.uniform(5e-4, 2e-3, n), 0.5, za, out_fmt, activation="relu")
        kernels[f"numba int32 {tag}"] = lambda a=a, w=w, za=za: fast.matmul_int32(a, w, za, 0)
        kernels[f"numba fused {tag}→{out_fmt}"] = lambda a=a, w=w, za=za, rq=rq: fast.matmul_requant(a, w, za, 0, None, rq)
        if a_dtype == np.uint8:
            if fast.HOST_HAS_VNNI:
                kernels[f"numba int32 {tag}, portable (no VNNI)"] = without_vnni(kernels[f"numba int32 {tag}"])
            kernels[f"numpy reference int32 {tag}"] = lambda a=a, w=w, za=za: reference.matmul_int32(a, w, za, 0)
            af, wt = a.astype(np.float32), np.ascontiguousarray(w.T.astype(np.float32))
            kernels["numpy float32 matmul"] = lambda af=af, wt=wt: af @ wt
        if with_ort:
            kernels[f"onnxruntime MatMulInteger {tag}"] = ort_session(
                "MatMulInteger", a, np.ascontiguousarray(w.T), za, 0, threads)
    return f"GEMM {m}×{k}×{n}", 2 * m * n * k, kernels


def im2col_float32(x, w):
    """NumPy float32 conv, 3×3 stride 1 pad 1: patches [C·9, H·W] then one matmul."""
    c, h, wd = x.shape[1:]
    xp = np.pad(x[0].astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # C, H, W, 3, 3
    cols = windows.transpose(0, 3, 4, 1, 2).reshape(c * 9, h * wd)
    return (w @ cols).reshape(1, w.shape[0], h, wd)


def conv_kernels(rng, c, hw, threads, with_ort):
    kernels = {}
    pads = (1, 1, 1, 1)
    for a_dtype, za in ((np.uint8, 128), (np.int8, 0)):
        x, w = operands(rng, (1, c, hw, hw), (c, c, 3, 3), a_dtype)
        tag = "u8×s8" if a_dtype == np.uint8 else "s8×s8"
        out_fmt = "uint8" if a_dtype == np.uint8 else "int8"
        rq = make_requantizer(0.02, rng.uniform(5e-4, 2e-3, c), 0.5, za, out_fmt, activation="relu")
        kernels[f"numba int32 {tag}"] = lambda x=x, w=w, za=za: fast.conv2d_int32(x, w, za, 0, pads=pads)
        kernels[f"numba fused {tag}→{out_fmt}"] = lambda x=x, w=w, za=za, rq=rq: fast.conv2d_requant(
            x, w, za, 0, None, rq, pads=pads)
        if a_dtype == np.uint8:
            if fast.HOST_HAS_VNNI:
                kernels[f"numba int32 {tag}, portable (no VNNI)"] = without_vnni(kernels[f"numba int32 {tag}"])
            kernels[f"numpy reference int32 {tag}"] = lambda x=x, w=w, za=za: reference.conv2d_int32(x, w, za, 0, pads=pads)
            wf = w.reshape(c, -1).astype(np.float32)
            kernels["numpy float32 im2col+matmul"] = lambda x=x, wf=wf: im2col_float32(x, wf)
        if with_ort:
            kernels[f"onnxruntime ConvInteger {tag}"] = ort_session(
                "ConvInteger", x, w, za, 0, threads, pads=list(pads))
    return f"Conv 1×{c}×{hw}×{hw} → {c}, 3×3", 2 * c * hw * hw * c * 9, kernels


def check_agreement(kernels):
    """The integer kernels of one case must give the same int32 accumulators."""
    results = {name: fn() for name, fn in kernels.items() if "int32" in name or "Integer" in name}
    for tag in ("u8×s8", "s8×s8"):
        arrays = [np.asarray(v).reshape(-1) for name, v in results.items() if tag in name]
        for other in arrays[1:]:
            if not np.array_equal(arrays[0], other):
                raise AssertionError(f"integer kernels disagree on {tag}")


def time_case(kernels, repeats, rounds=3, pause=0.1):
    """Median seconds per call. Each kernel runs in blocks of ``repeats // rounds``
    consecutive calls, the kernels taking turns ``rounds`` times: a change in machine load
    then touches all of them, and no kernel is timed while another library's worker
    threads are still spinning (ONNX Runtime and OpenBLAS spin after a call; ``pause``
    lets them go to sleep)."""
    for fn in kernels.values():  # warm-up: compilation, caches, ORT's first run
        fn()
        fn()
    times = {name: [] for name in kernels}
    block = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, fn in kernels.items():
            time.sleep(pause)
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def run(repeats, threads, with_ort=True):
    numba.set_num_threads(threads)
    env = environment(threads)
    rng = np.random.default_rng(0)
    cases = [gemm_kernels(rng, threads, with_ort)] + [conv_kernels(rng, c, hw, threads, with_ort)
                                                      for c, hw in CONVS]
    rows = []
    for label, ops, kernels in cases:
        check_agreement(kernels)
        timings = time_case(kernels, repeats)
        ort = next((t for name, (t, _) in timings.items() if "onnxruntime" in name and "u8×s8" in name), None)
        f32 = next(t for name, (t, _) in timings.items() if "float32" in name)
        for name, (t, best) in timings.items():
            rows.append({"case": label, "kernel": name, "ms": 1e3 * t, "ms_min": 1e3 * best,
                         "gop_s": ops / t / 1e9, "vs_onnxruntime_u8s8": ort / t if ort else None,
                         "vs_numpy_float32": f32 / t})
    return env, rows


def table(rows) -> str:
    lines = ["| case | kernel | ms (median) | ms (min) | GOP/s (median) | × ORT u8×s8 | × NumPy f32 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ort = f"{r['vs_onnxruntime_u8s8']:.2f}" if r["vs_onnxruntime_u8s8"] else "—"
        lines.append(f"| {r['case']} | {r['kernel']} | {r['ms']:.2f} | {r['ms_min']:.2f} | "
                     f"{r['gop_s']:.1f} | {ort} | {r['vs_numpy_float32']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per kernel (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every library")
    parser.add_argument("--no-onnxruntime", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    env, rows = run(args.repeats, args.threads, with_ort=not args.no_onnxruntime)
    if args.json:
        print(json.dumps({"environment": env, "results": rows}, indent=1))
    else:
        for key, value in env.items():
            print(f"{key}: {value}")
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
