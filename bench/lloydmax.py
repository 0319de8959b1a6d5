"""Time the Lloyd-Max solvers.

    python bench/lloydmax.py [--samples 1000000] [--levels 16] [--repeats 7]

Empirical solver on n Gaussian samples, split into its parts:

* prepare  -- check the array, sort it, centre it, build the two prefix sums (once per tensor);
* init     -- the optimal uniform quantizer the iteration starts from (a vectorised scan of
              129 clips plus a Brent refinement, each MSE evaluation O(N log n));
* iterate  -- the Lloyd iterations themselves, O(N log n) each, plus one O(n) exact MSE;
* total    -- ``lloyd_max(x, N)`` from the raw array (prepare + init + iterate).

the analytic solver (Gaussian and Laplace tables, cache cleared, Newton steps on) for a few
level counts, and the weight strategy ``lloydmax`` quantizing every layer of each shipped model
(prior fits, codebooks, int8 grid, indices; the unit tables warm in their cache) at 4 bits, per
tensor and per channel, with the default codebook (KS prior refined on the weights), the
paper's unrefined one (``refine="none"``) and the empirical codebook. Reports the minimum
and the median over the repeats, in milliseconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import refquant_lloydmax as lm
from refquant_lloydmax import solver
from refquant_lloydmax.densities import as_density


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3, statistics.median(times) * 1e3, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    n, levels, repeats = args.samples, args.levels, args.repeats

    x = np.random.default_rng(0).standard_normal(n)
    density = as_density(x)
    lm.lloyd_max(density, levels)  # warm-up (imports, first calls)

    rows = []
    prep = _timed(lambda: as_density(x), repeats)
    init = _timed(lambda: lm.optimal_uniform(density, levels), repeats)
    solve = _timed(lambda: lm.lloyd_max(density, levels), repeats)
    total = _timed(lambda: lm.lloyd_max(x, levels), repeats)
    r = total[2]
    iterate = (solve[0] - init[0], solve[1] - init[1])
    rows.append(("prepare (check, sort, prefix sums)", prep[0], prep[1]))
    rows.append(("init (optimal uniform grid)", init[0], init[1]))
    rows.append(("iterate (Lloyd updates + exact MSE)", iterate[0], iterate[1]))
    rows.append(("solve on prepared samples (init + iterate)", solve[0], solve[1]))
    rows.append(("total lloyd_max(x, N) from the raw array", total[0], total[1]))

    print(f"Empirical Lloyd-Max: n = {n:,} N(0,1) samples, N = {levels} levels, "
          f"{r.iterations} Lloyd updates, converged = {r.converged}, MSE = {r.mse:.6g}")
    print(f"{'part':45s} {'min ms':>9s} {'median ms':>10s}")
    for name, best, med in rows:
        print(f"{name:45s} {best:9.1f} {med:10.1f}")

    print("\nAnalytic Lloyd-Max (table cache cleared, Newton steps on)")
    print(f"{'density':10s} {'N':>5s} {'updates':>8s} {'min ms':>9s} {'median ms':>10s}")
    for name in ("gaussian", "laplace"):
        for n_levels in (16, 32, 256):
            def run():
                solver._named_table.cache_clear()
                return lm.lloyd_max(name, n_levels)

            best, med, res = _timed(run, repeats)
            print(f"{name:10s} {n_levels:5d} {res.iterations:8d} {best:9.1f} {med:10.1f}")

    _strategy_timings(repeats)


def _strategy_timings(repeats: int) -> None:
    from refquant.executor.quantized import weight_matrix
    from refquant.executor import lower
    from refquant.registry import models
    from refquant.strategies import LayerSpec
    from refquant_lloydmax import LloydMaxWeights

    print("\nWeight strategy lloydmax, 4 bits, all layers of a shipped model")
    print(f"{'model':14s} {'weights':>8s} {'granularity':12s} {'codebook':18s} {'min ms':>9s} {'median ms':>10s}")
    for name, entry in sorted(models().items()):
        graph = entry.obj()
        layers = [(s.node, weight_matrix(graph, s.node)) for s in lower(graph) if s.quantizable]
        numel = sum(w.size for _, w in layers)
        for gran in ("per-tensor", "per-channel"):
            for prior, refine in (("auto", "weights"), ("auto", "none"), ("empirical", "weights")):
                strategy = LloydMaxWeights(prior=prior, refine=refine)
                label = "empirical" if prior == "empirical" else f"auto, refine={refine}"
                specs = [LayerSpec(n.name, n.op_type, 4, True, gran, True) for n, _ in layers]

                def run():
                    return [strategy.quantize_weight(w, sp) for (_, w), sp in zip(layers, specs)]

                best, med, _ = _timed(run, repeats)
                print(f"{name:14s} {numel:8d} {gran:12s} {label:18s} {best:9.1f} {med:10.1f}")


if __name__ == "__main__":
    main()
