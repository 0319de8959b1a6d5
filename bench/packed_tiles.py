"""Conv layers on the packed integer tiles (``refquant.kernels.pair_gemm``) against the exact
float32 ``sgemm`` path they replace, on the shapes of ResNet-18 (224×224) and EfficientNet-Lite0.

Every layer is prepared once (``refquant.kernels.fast_prepared``, uint8 activations, 7-bit
per-channel weights, requant ``float32`` with a fused ReLU) and called, interleaved in rounds,
three or four ways: ``sgemm`` (``exact_gemm.USE_PAIRS = False``), ``pairs`` (the int16 tile:
``exact_gemm.USE_QUADS = False``), ``quads`` (the u8·s8 byte tile through ``vpmaddubsw``, which
7-bit weights always admit: ``exact_gemm.USE_VNNI = False``) and, on a host with AVX-512 VNNI,
``vnni`` (the byte tile through ``vpdpbusd``). The outputs are required to be bit-identical
first, and equal to the NumPy reference kernel on the first layer. Printed: the minimum of ``--rounds`` calls each, the
multiply-adds per second (the whole call: packing, tiles, requantization, Python), and the
ratios against ``sgemm`` and against one NumPy float32 ``matmul`` of the same ``[C_out, K] @ [K,
pixels]`` product (an anchor measured in the same run; im2col not included). Then the tile loops
alone (:func:`tile_loops`: every tile of a stride-1 layer over packed random operands, no
packing, no requantization, one thread), each tile, in multiply-adds per second.

    python bench/packed_tiles.py [--threads 1] [--rounds 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepared import cpu_info, versions  # noqa: E402

from refquant.kernels import exact_gemm, fast_prepared, pair_gemm  # noqa: E402
from refquant.kernels import reference as ref  # noqa: E402
from refquant.numerics.requant import make_requantizer  # noqa: E402

#: (network, C_in, C_out, H = W, kernel, stride)
LAYERS = [
    ("resnet18", 3, 64, 224, 7, 2), ("resnet18", 64, 64, 56, 3, 1), ("resnet18", 64, 128, 56, 3, 2),
    ("resnet18", 128, 128, 28, 3, 1), ("resnet18", 256, 256, 14, 3, 1), ("resnet18", 512, 512, 7, 3, 1),
    ("resnet18", 256, 512, 14, 1, 2),
    ("efficientnet-lite0", 16, 96, 112, 1, 1), ("efficientnet-lite0", 144, 24, 56, 1, 1),
    ("efficientnet-lite0", 40, 240, 28, 1, 1), ("efficientnet-lite0", 112, 672, 14, 1, 1),
    ("efficientnet-lite0", 672, 112, 14, 1, 1), ("efficientnet-lite0", 1152, 320, 7, 1, 1),
    ("efficientnet-lite0", 320, 1280, 7, 1, 1),
]
WAYS = ("sgemm", "pairs", "quads") + (("vnni",) if pair_gemm.HOST_HAS_VNNI else ())
BEST = WAYS[-1]  # the way this host runs
KINDS = {"pairs": pair_gemm.PAIRS, "quads": pair_gemm.QUADS, "vnni": pair_gemm.VNNI}


def settings(way: str):
    exact_gemm.USE_PAIRS = way != "sgemm"
    exact_gemm.USE_QUADS = way in ("quads", "vnni")
    exact_gemm.USE_VNNI = way == "vnni"


def layer_case(rng, c_in, c_out, hw, k, stride):
    w = rng.integers(-64, 64, (c_out, c_in, k, k)).astype(np.int8)
    x = rng.integers(0, 256, (1, c_in, hw, hw)).astype(np.uint8)
    pads = (k // 2,) * 4
    bias = rng.integers(-2000, 2000, c_out).astype(np.int32)
    rq = make_requantizer(0.02, rng.uniform(0.001, 0.01, c_out), 0.05, 0, "uint8", activation="relu")
    layer = fast_prepared.prepare_layer("conv2d", w, 0, x_dtype=np.uint8, name="conv", strides=(stride, stride),
                                        pads=pads)
    return x, w, pads, bias, rq, layer


def measure(rounds: int, check_reference: bool = True) -> list:
    rng = np.random.default_rng(0)
    rows = []
    for i, (net, c_in, c_out, hw, k, stride) in enumerate(LAYERS):
        x, w, pads, bias, rq, layer = layer_case(rng, c_in, c_out, hw, k, stride)
        binding, rq_args = layer.bind(0, bias), layer.requant_args(rq)
        outs = {}
        for way in WAYS:
            settings(way)
            outs[way] = layer.run(x, binding, rq_args, np.uint8)
        for way in WAYS[1:]:
            if not np.array_equal(outs[way], outs["sgemm"]):
                raise AssertionError(f"{net} {c_in}->{c_out}: {way} differs from sgemm")
        if check_reference and i == 0:
            expected = ref.conv2d_requant(x, w, 0, 0, bias, rq, strides=(stride, stride), pads=pads)
            if not np.array_equal(expected, outs["sgemm"]):
                raise AssertionError("the sgemm path differs from the reference kernel")
        oh = (hw + 2 * (k // 2) - k) // stride + 1
        wk = rng.standard_normal((c_out, c_in * k * k)).astype(np.float32)
        cols = rng.standard_normal((c_in * k * k, oh * oh)).astype(np.float32)
        times = {way: [] for way in WAYS + ("numpy-f32",)}
        for _ in range(rounds):
            for way in WAYS:
                settings(way)
                t0 = time.perf_counter()
                layer.run(x, binding, rq_args, np.uint8)
                times[way].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            np.matmul(wk, cols)
            times["numpy-f32"].append(time.perf_counter() - t0)
        settings(BEST)
        macs = c_in * c_out * k * k * oh * oh
        best = {way: min(v) for way, v in times.items()}
        rows.append({"network": net, "layer": f"{c_in}→{c_out} {hw}×{hw} {k}×{k}/{stride}", "macs": macs,
                     "ms": {way: v * 1e3 for way, v in best.items()},
                     "gmac_per_s": {way: macs / v / 1e9 for way, v in best.items()}})
    return rows


@numba.njit(cache=True)
def _all_tiles(kind, xk, width, wk, offs, cp, rows, cols, y):
    tile_rows = pair_gemm.TILE_ROWS[kind]
    for tile in range(rows // tile_rows):
        for col in range(0, cols, pair_gemm.TILE_COLUMNS):
            c = col % (y.shape[1] - pair_gemm.TILE_COLUMNS + 1)
            if kind == pair_gemm.VNNI:
                pair_gemm.vnni_tile(xk, col, width, wk, tile * tile_rows, offs.size * cp, offs, cp, y, c, 0, cp, False)
            elif kind == pair_gemm.QUADS:
                pair_gemm.quad_tile(xk, col, width, wk, tile * tile_rows, offs.size * cp, offs, cp, y, c, 0, cp, False)
            else:
                pair_gemm.pair_tile(xk, col, width, wk, tile * tile_rows, offs.size * cp, offs, cp, y, c, 0, cp, False)


def tile_loops(rounds: int) -> list:
    """The tiles of the stride-1 layers of :data:`LAYERS` over random packed operands."""
    rng = np.random.default_rng(1)
    rows = []
    for net, c_in, c_out, hw, k, stride in LAYERS:
        if stride != 1:
            continue
        wp = hw + 2 * (k // 2)
        cols = hw * wp
        offs = np.array([i * wp + j for i in range(k) for j in range(k)], np.int64)
        width = -(-cols // pair_gemm.TILE_COLUMNS) * pair_gemm.TILE_COLUMNS + int(offs[-1])
        w = rng.integers(-64, 64, (c_out, c_in, k, k)).astype(np.int8)
        packed = pair_gemm.PackedWeights(w, np.zeros(c_out, np.int32))
        y = np.empty((max(pair_gemm.TILE_ROWS), 256), np.int32)
        result = {"network": net, "layer": f"{c_in}→{c_out} {hw}×{hw} {k}×{k}/1"}
        for way in WAYS[1:]:
            kind = KINDS[way]
            quads = kind != pair_gemm.PAIRS
            cp, wk = (packed.cq, packed.w4) if quads else (packed.cp, packed.w2)
            xk = rng.integers(-2**31, 2**31, (cp, width), dtype=np.int64).astype(np.int32)
            if not quads:  # centred activations within ±255 in both int16 halves
                xk = rng.integers(-255, 256, (cp, width, 2)).astype(np.int16).view(np.int32).reshape(cp, width)
            args = (kind, xk.reshape(-1), width, wk.reshape(-1), offs, cp, wk.shape[0], cols, y)
            _all_tiles(*args)
            best = min(_timed(_all_tiles, args) for _ in range(rounds))
            rows_run = wk.shape[0] // pair_gemm.TILE_ROWS[kind] * pair_gemm.TILE_ROWS[kind]
            macs = rows_run * c_in * k * k * -(-cols // pair_gemm.TILE_COLUMNS) * pair_gemm.TILE_COLUMNS
            result[way] = macs / best / 1e9
        rows.append(result)
    return rows


def _timed(f, args) -> float:
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0


def table(rows) -> str:
    lines = ["| network | layer | " + " | ".join(f"{w} ms" for w in WAYS) + f" | {BEST} GMAC/s | sgemm / {BEST} | "
             f"NumPy f32 matmul ms | {BEST} / NumPy |", "|" + " --- |" * (len(WAYS) + 6)]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['network']} | {r['layer']} | " + " | ".join(f"{ms[w]:.3f}" for w in WAYS)
                     + f" | {r['gmac_per_s'][BEST]:.0f} | {ms['sgemm'] / ms[BEST]:.2f}× | {ms['numpy-f32']:.3f} | "
                     f"{ms[BEST] / ms['numpy-f32']:.2f}× |")
    totals = {way: sum(r["ms"][way] for r in rows) for way in WAYS}
    lines.append(f"| all | {len(rows)} layers | " + " | ".join(f"{totals[w]:.2f}" for w in WAYS)
                 + f" | – | {totals['sgemm'] / totals[BEST]:.2f}× | – | – |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rows = measure(args.rounds)
    numba.set_num_threads(1)
    loops = tile_loops(args.rounds)
    env = {"cpu": cpu_info(), "versions": versions(), "threads": args.threads, "rounds": args.rounds,
           "load_average": os.getloadavg()}
    if args.json:
        print(json.dumps({"env": env, "rows": rows, "tile_loops": loops}))
        return
    print(json.dumps(env) + "\n" + table(rows) + "\n\nThe tile loops alone, one thread (GMAC/s, padded rows and "
          "columns counted):\n\n| network | layer | " + " | ".join(WAYS[1:]) + " |\n|" + " --- |" * (len(WAYS) + 1))
    for r in loops:
        print(f"| {r['network']} | {r['layer']} | " + " | ".join(f"{r[w]:.0f}" for w in WAYS[1:]) + " |")


if __name__ == "__main__":
    main()
