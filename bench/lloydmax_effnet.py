"""Design every Lloyd-Max codebook of EfficientNet-Lite0 (49 Conv + the Gemm, per channel); time it.

    python bench/lloydmax_effnet.py BITS OUT.npz [--same-as OTHER.npz]

Writes each layer's float codebook, int8 codebook, indices and origins to OUT.npz and prints the
wall and CPU (process) time of the designs (the strategy's ``design_codebook``, what
``quantize_model`` spends on ``weights=lloydmax:BITS:per-channel``). ``--same-as`` then checks
every array is bit-identical to OTHER.npz (e.g. one written by an earlier version of the plugin).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from refquant.executor.quantized import weight_matrix
from refquant.registry import resolve_model
from refquant_lloydmax.codebook import design_codebook


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bits", type=int)
    p.add_argument("out")
    p.add_argument("--same-as", default=None)
    args = p.parse_args()
    g = resolve_model("efficientnet-lite0")
    arrays = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for node in g.nodes:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        d = design_codebook(weight_matrix(g, node), args.bits, per_channel=True, layer=node.name)
        arrays.update({f"{node.name}.codebook": d.codebook, f"{node.name}.indices": d.indices,
                       f"{node.name}.q": d.codebook_int8, f"{node.name}.origins": np.array(d.origins)})
    print(f"bits {args.bits}: wall {time.perf_counter() - wall:.1f} s cpu {time.process_time() - cpu:.1f} s")
    np.savez(args.out, **arrays)
    if args.same_as:
        other = np.load(args.same_as)
        differ = sorted(k for k in set(arrays) | set(other.files)
                        if k not in arrays or k not in other.files or not np.array_equal(arrays[k], other[k]))
        print(f"{len(arrays)} arrays, {len(differ)} differ from {args.same_as}" + (f": {differ}" if differ else ""))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
