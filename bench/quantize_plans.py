"""Time ``quantize_model`` over the digits compare grid, per weight and activation strategy.

Every plan of ``refquant.compare.plan_grid((model,))`` is quantized as ``refquant compare``
quantizes it (calibrated from the recorded calibration pass, which is made once and not timed).
Prints the total and the time per weight strategy and per activation strategy.

    python bench/quantize_plans.py [--model digits-cnn] [--repeat 1] [--profile out.prof]
    python bench/quantize_plans.py --against /path/to/other/worktree [--rounds 3]

``--against`` measures interleaved: each round runs this tree's code, then the other tree's,
each in a fresh process (``PYTHONPATH`` = that tree and its ``plugins/``; one warm-up pass of
the 140 plans, then one timed pass), and prints every round (wall time, and the process's CPU
time over all its threads) and the ratios of the medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def time_plans(model: str = "digits-cnn", ctx=None) -> tuple[float, dict, dict]:
    """``(total seconds, seconds per weight strategy, seconds per activation strategy)``, wall time."""
    from refquant import quantize_model
    from refquant.compare import plan_grid, prepare_model
    from refquant.plan import Plan, TensorPlan

    ctx = ctx or prepare_model(model)
    per_w, per_a = collections.Counter(), collections.Counter()
    total = 0.0
    for task in plan_grid((model,)):
        plan = Plan(TensorPlan(task.weights, task.bits, task.granularity, True, True),
                    TensorPlan(task.activations, task.activation_bits, "per-tensor", False, False))
        t0 = time.perf_counter()
        quantize_model(ctx.graph, plan, ctx.trace)
        dt = time.perf_counter() - t0
        total += dt
        per_w[task.weights] += dt
        per_a[task.activations] += dt
    return total, dict(per_w), dict(per_a)


def _run_tree(root: Path, model: str) -> dict:
    """One fresh process running the code of the tree ``root``: ``{"total": s, "weights": {...},
    "activations": {...}}`` of one timed pass after a warm-up pass."""
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'plugins'}")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--model", model, "--json"],
                         env=env, cwd="/tmp", check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def interleaved(other: Path, model: str, rounds: int) -> None:
    """``rounds`` × (this tree, ``other``), alternating; prints each pass and the medians."""
    here = Path(__file__).resolve().parents[1]
    runs = {"this": [], "other": []}
    for r in range(rounds):
        for label, root in (("this", here), ("other", other)):
            res = _run_tree(root, model)
            runs[label].append(res)
            load = os.getloadavg()[0]
            print(f"round {r + 1} {label:5s} ({root}): {res['total']:.3f} s wall, {res['cpu']:.3f} s CPU "
                  f"(all threads)  load {load:.2f}", flush=True)
    for key in ("total", "cpu"):
        med = {k: statistics.median(x[key] for x in v) for k, v in runs.items()}
        print(f"median {'wall' if key == 'total' else 'CPU'}: this {med['this']:.3f} s, other {med['other']:.3f} s, "
              f"other/this = {med['other'] / med['this']:.2f}")
    for kind in ("weights", "activations"):
        for name in sorted(runs["this"][0][kind]):
            a = statistics.median(x[kind][name] for x in runs["this"])
            b = statistics.median(x[kind][name] for x in runs["other"])
            print(f"  {kind[:-1]:10s} {name:20s} this {a:.3f} s  other {b:.3f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits-cnn")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--profile")
    p.add_argument("--json", action="store_true", help="one timed pass, one JSON line")
    p.add_argument("--against", type=Path, help="another worktree: measure both, interleaved")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.against:
        interleaved(args.against.resolve(), args.model, args.rounds)
        return
    from refquant.compare import prepare_model

    ctx = prepare_model(args.model)
    time_plans(args.model, ctx)  # warm-up: imports, Numba caches, scipy
    if args.profile:
        import cProfile
        cProfile.runctx("time_plans(args.model, ctx)", globals(), locals(), args.profile)
    if args.json:
        cpu = time.process_time()
        total, per_w, per_a = time_plans(args.model, ctx)
        cpu = time.process_time() - cpu
        print(json.dumps({"total": total, "cpu": cpu, "weights": per_w, "activations": per_a}))
        return
    for _ in range(args.repeat):
        total, per_w, per_a = time_plans(args.model, ctx)
        print(f"quantize_model, {args.model}: {total:.3f} s")
        for k, v in sorted(per_w.items()):
            print(f"  weights {k:<20s} {v:.3f} s")
        for k, v in sorted(per_a.items()):
            print(f"  activations {k:<16s} {v:.3f} s")


if __name__ == "__main__":
    main()
