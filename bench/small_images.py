"""Small-image convolutions: the tile kernels against the exact float32 GEMM, per call.

    python bench/small_images.py [--rounds 15] [--threads 1] [--json]

Where :data:`refquant.kernels.exact_gemm.MIN_MACS` comes from. Each case is one prepared
int8 conv layer (``refquant.kernels.fast_prepared``; 3×3 pad 1 unless stated, a fused ReLU,
per-channel float32 requantization) on a batch of random int8 images, run once on the tile
kernels (``fast``, the GEMM switched off by raising its thresholds) and once on the exact
GEMM (thresholds 1), outputs checked bit-identical first. The cases: the two convs of
``digits-cnn`` at the batch sizes ``refquant compare`` and the tests use (1 to 599 images of
8×8 and 4×4), and ResNet-shaped layers at 16×16 to 4×4 and a 64×64 stem.

Timed with ``time.process_time`` (the process's CPU time, median of ``--rounds`` calls after
one warm-up), so that other jobs on a shared machine change the figures less than wall time
would; with ``--threads 2`` CPU time sums both threads — the columns then compare work, not
latency.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

from refquant.host import cpu_summary
from refquant.kernels import exact_gemm, fast_prepared
from refquant.kernels.geometry import conv_geometry
from refquant.numerics.requant import make_requantizer

CASES = [  # (input shape, weight shape, pads, stride)
    *(((n, 1, 8, 8), (16, 1, 3, 3), 1, 1) for n in (1, 8, 32, 128, 599)),
    *(((n, 16, 4, 4), (32, 16, 3, 3), 1, 1) for n in (1, 8, 32, 128, 599)),
    *(case for n in (1, 8) for case in (
        ((n, 64, 16, 16), (64, 64, 3, 3), 1, 1),
        ((n, 128, 8, 8), (128, 128, 3, 3), 1, 1),
        ((n, 256, 4, 4), (256, 256, 3, 3), 1, 1),
        ((n, 64, 16, 16), (128, 64, 3, 3), 1, 2),
        ((n, 3, 64, 64), (64, 3, 7, 7), 3, 2))),
]


def _median_cpu_ms(call, rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        call()
        times.append(time.process_time() - t0)
    return 1e3 * float(np.median(times))


def _time_case(x_shape, w_shape, pad, stride, rounds, rng) -> dict:
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, w_shape[0]).astype(np.int32)
    rq = make_requantizer(0.02, np.full(w_shape[0], 0.01), 0.5, 3, "int8", activation="relu")
    attrs = dict(strides=(stride, stride), pads=(pad,) * 4, dilations=(1, 1), group=1)
    ms, outputs = {}, {}
    saved = exact_gemm.MIN_MACS, exact_gemm.MIN_POINTWISE_MACS
    try:
        for path, least in (("tile", 1 << 62), ("gemm", 1)):
            exact_gemm.MIN_MACS = exact_gemm.MIN_POINTWISE_MACS = least
            layer = fast_prepared.prepare_layer("conv2d", w, 0, x_dtype=np.int8, name="bench", **attrs)
            binding, rq_args = layer.bind(1, bias), layer.requant_args(rq)
            outputs[path] = layer.run(x, binding, rq_args, np.int8)
            ms[path] = _median_cpu_ms(lambda: layer.run(x, binding, rq_args, np.int8), rounds)
    finally:
        exact_gemm.MIN_MACS, exact_gemm.MIN_POINTWISE_MACS = saved
    if not np.array_equal(outputs["tile"], outputs["gemm"]):
        raise AssertionError(f"{x_shape} {w_shape}: the tile kernels and the GEMM differ")
    g = conv_geometry(x_shape, w_shape, name="bench", **attrs)
    return {"input": list(x_shape), "weight": list(w_shape), "pad": pad, "stride": stride,
            "macs": int(g.n * exact_gemm._conv_macs(g)), "tile_ms": ms["tile"], "gemm_ms": ms["gemm"],
            "tile_over_gemm": ms["tile"] / ms["gemm"],
            "chosen": "gemm" if g.n * exact_gemm._conv_macs(g) >= exact_gemm.MIN_MACS else "tile"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = [_time_case(*case, args.rounds, rng) for case in CASES]
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_summary(),
            "threads": args.threads, "rounds": args.rounds, "min_macs": exact_gemm.MIN_MACS}
    if args.json:
        print(json.dumps({**meta, "rows": rows}, indent=1))
        return 0
    print(json.dumps(meta))
    print("| input | weight | stride | M mult-adds | tile ms | GEMM ms | tile / GEMM | refquant runs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {'×'.join(map(str, r['input']))} | {'×'.join(map(str, r['weight']))} | {r['stride']} | "
              f"{r['macs'] / 1e6:.2f} | {r['tile_ms']:.3f} | {r['gemm_ms']:.3f} | {r['tile_over_gemm']:.2f} | "
              f"{r['chosen']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
