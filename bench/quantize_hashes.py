"""Hash every quantized model of the digits compare grid: the bit-for-bit check of quantize_model.

For each digits model and each plan of ``refquant.compare.plan_grid`` (140 per model), the plan is
quantized exactly as ``refquant compare`` does (calibrated from the recorded calibration pass) and
one SHA-256 covers everything the quantization decided: every layer's quantized weight (integers,
qparams, codebook arrays, float values, representation, bits per weight), its float bias, the
int32 bias rule's widening, the before-layer strategy's prepared state, every calibrated tensor's
qparams, and the dequantized outputs of the model on the first ``--images`` test images (numba
backend, as compare runs it). Floats are hashed by their bytes, so one changed bit changes the hash.

    python bench/quantize_hashes.py --out /tmp/after.json
    python bench/quantize_hashes.py --out /tmp/after.json --check bench/quantize_hashes.json

With ``--check`` it exits 1 and lists every (model, plan) whose hash differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys

import numpy as np


def feed(h, obj) -> None:
    """Update ``h`` with an exact, type-tagged encoding of ``obj``."""
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        a = np.asarray(obj)
        h.update(f"nd{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif isinstance(obj, dict):
        h.update(f"dict{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            feed(h, k)
            feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)}".encode())
        for v in obj:
            feed(h, v)
    elif isinstance(obj, float):
        h.update(b"f" + np.float64(obj).tobytes())
    elif obj is None or isinstance(obj, (bool, int, str)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    elif dataclasses.is_dataclass(obj):
        h.update(type(obj).__name__.encode())
        feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                 if f.name not in ("cache", "node")})
    elif hasattr(obj, "name") and hasattr(obj, "qmin"):  # IntFormat and the like
        h.update(repr(obj).encode())
    else:
        raise TypeError(f"cannot hash {type(obj).__name__}: {obj!r}")


def model_hash(qm, outputs) -> str:
    h = hashlib.sha256()
    for name, layer in qm.layers.items():
        meta, arrays = layer.weight.to_state()
        feed(h, (name, json.dumps(meta, sort_keys=True), arrays, layer.bias,
                 None if layer.widening is None else layer.widening.as_dict(), layer.context.state))
        feed(h, None if layer.observed is None else layer.observed.to_dict())
    for t in sorted(qm.tensor_qparams):
        feed(h, (t, qm.tensor_qparams[t].to_dict()))
    feed(h, outputs)
    return h.hexdigest()


def main(argv=None) -> int:
    from refquant import quantize_model
    from refquant.compare import plan_grid, prepare_model, _run
    from refquant.plan import Plan, TensorPlan

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits-cnn", "digits-mlp", "digits-resnet"])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--out", required=True)
    p.add_argument("--check")
    args = p.parse_args(argv)
    hashes = {}
    for m in args.models:
        ctx = prepare_model(m)
        g = ctx.graph
        x = ctx.data.sets[0][1][:args.images]
        for task in plan_grid((m,)):
            plan = Plan(TensorPlan(task.weights, task.bits, task.granularity, True, True),
                        TensorPlan(task.activations, task.activation_bits, "per-tensor", False, False))
            qm = quantize_model(g, plan, ctx.trace)
            out, _ = _run(qm, g, x, "numba")
            hashes[task.label()] = model_hash(qm, out)
        print(f"{m}: {len(plan_grid((m,)))} plans", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(hashes, f, indent=1, sort_keys=True)
    if args.check:
        with open(args.check) as f:
            ref = json.load(f)
        bad = [k for k in sorted(set(ref) | set(hashes)) if ref.get(k) != hashes.get(k)]
        for k in bad:
            print(f"DIFFERS: {k}")
        print(f"{len(hashes)} plans hashed, {len(bad)} differ from {args.check}")
        return 1 if bad else 0
    print(f"{len(hashes)} plans hashed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
