"""StatQAT against min-max quantization-aware training on the shipped digits models.

    python bench/statqat_qat.py [--models digits-cnn digits-resnet] [--grids int4 int3 int2 fp4 fp8]
                                [--seeds 0 1 2] [--epochs 8] [--out bench/statqat_qat.json] [--json]

Every (model, grid, method, seed) fine-tunes the shipped float model with fake quantization
(:mod:`refquant_statqat.experiment` has the plans, the recipe and what is measured); both
methods get the same seeds, schedule and data. Progress goes to stderr, the table (or
``--json``) to stdout; the raw runs (histories, batch losses) are written to ``--out``. With
matplotlib installed, ``--plots DIR`` also draws the training-loss curves (log scale), one
figure per model and grid. The table in ``spec/strategies/statqat.md`` is this script's output
with the defaults (about 7 minutes on one core of the machine that made it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from refquant_statqat import experiment


def plot_curves(results, directory) -> list[str]:
    """Training loss per epoch (mean over seeds, log scale) for both methods; one PNG per model and grid."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    groups = {}
    for r in results:
        groups.setdefault((r.model, r.grid), {}).setdefault(r.method, []).append([h["loss"] for h in r.history])
    written = []
    for (model, grid_key), methods in groups.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for method, curves in methods.items():
            c = np.asarray(curves)
            epochs = np.arange(1, c.shape[1] + 1)
            ax.plot(epochs, c.mean(axis=0), label=method)
            ax.fill_between(epochs, c.min(axis=0), c.max(axis=0), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title(f"{model}, {grid_key}")
        ax.legend()
        path = directory / f"statqat-qat-{model}-{grid_key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits-cnn", "digits-resnet"])
    p.add_argument("--grids", nargs="+", default=list(experiment.GRIDS), choices=list(experiment.GRIDS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default="bench/statqat_qat.json", help="raw runs (JSON)")
    p.add_argument("--plots", default=None, metavar="DIR", help="draw loss curves here (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    results = experiment.run_experiment(args.models, args.grids, args.seeds, args.epochs,
                                        log=lambda line: print(line, file=sys.stderr, flush=True))
    experiment.save_results(results, args.out)
    rows = experiment.summarize(results)
    if args.plots:
        for path in plot_curves(results, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(experiment.summary_table(rows))
    print(f"{len(results)} runs, {args.epochs} epochs each, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
