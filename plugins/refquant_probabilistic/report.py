"""The command ``refquant probabilistic-report MODEL``: diagnostics put together, printed, plotted.

:func:`report` quantizes a model with the ``probabilistic`` strategy and returns the range
diagnostics and estimator timings of :mod:`.diagnostics` as one dict (what ``--json``
prints); :func:`cmd_report` prints it as tables; :func:`plot_ranges` draws predicted against
actual ranges when matplotlib is installed; :func:`add_report_command` declares the command
(the plugin's ``register_commands`` hook calls it).
"""

from __future__ import annotations

import json

from refquant.data import digits_inputs, load_digits
from refquant.executor import quantize_model
from refquant.presentation import format_table
from refquant.registry import resolve_model

from .diagnostics import GAMMAS, LayerDiagnostics, estimator_timing, range_diagnostics
from .plans import probabilistic_plan

__all__ = ["report", "plot_ranges", "cmd_report", "add_report_command"]


def plot_ranges(diagnostics: list[LayerDiagnostics], path: str) -> str | None:
    """Predicted against actual per-image ranges, one panel per layer, saved to ``path``.

    Returns ``path``, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(diagnostics)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, d in zip(axes[0], diagnostics):
        ax.scatter(d.actual_hi, d.predicted_hi, s=4, label="upper: β", color="tab:red")
        if d.fused_activation is None:
            ax.scatter(d.actual_lo, d.predicted_lo, s=4, label="lower: α", color="tab:blue")
        lim = [min(d.actual_lo.min(), d.predicted_lo.min()), max(d.actual_hi.max(), d.predicted_hi.max())]
        ax.plot(lim, lim, color="black", linewidth=0.8)
        ax.set_title(f"{d.layer} (γ={d.gamma})\ncoverage {d.coverage:.2f}, miss {d.miss_rate:.1e}", fontsize=8)
        ax.set_xlabel("actual per-image extreme", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(model: str, *, bits: int = 8, gamma: int = 1, aggregator: str = "max", granularity: str = "per-tensor",
           weights: str = "minmax", weight_bits: int = 8, weight_granularity: str = "per-channel", calibration: int = 32,
           dataset: str = "test", backend: str = "numba", repeats: int = 30, gammas=GAMMAS,
           timing_images: int | None = None, plot: str | None = None) -> dict:
    """Range diagnostics and estimator timing of ``model`` quantized with ``probabilistic``
    (``bits``-bit activations, ``weights`` at ``weight_bits``), calibrated on the documented
    calibration images, run on ``dataset`` as one batch."""
    graph = resolve_model(model)
    data = load_digits()
    split = data.test if dataset == "test" else data.shifted(dataset)
    plan = probabilistic_plan(weights=weights, weight_bits=weight_bits,
                              weight_granularity=weight_granularity, bits=bits, granularity=granularity,
                              gamma=gamma, aggregator=aggregator)
    qm = quantize_model(graph, plan, digits_inputs(graph, data.calibration(calibration).x))
    x = digits_inputs(graph, split.x)
    diags = range_diagnostics(qm, x, backend=backend)
    timing_x = x if timing_images is None else x[:timing_images]
    timing = estimator_timing(qm, timing_x, gammas=gammas, repeats=repeats, backend=backend)
    out = {"model": graph.name, "plan": str(plan), "options": {"gamma": gamma, "aggregator": aggregator},
           "dataset": split.name, "images": int(len(x)), "backend": backend,
           "layers": [d.summary() for d in diags], "timing": timing}
    if plot:
        out["plot"] = plot_ranges(diags, plot)
    return out


def cmd_report(args) -> int:
    """``refquant probabilistic-report MODEL``: ranges, coverage, miss rate, estimator time."""
    gammas = tuple(args.gammas)
    result = report(args.model, bits=args.bits, gamma=args.gamma, aggregator=args.aggregator,
                    granularity=args.granularity, weights=args.weights, weight_bits=args.weight_bits,
                    calibration=args.calibration,
                    dataset=args.dataset, backend=args.backend, repeats=args.repeats, gammas=gammas,
                    timing_images=args.timing_images, plot=args.plot)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"model {result['model']}  plan: {result['plan']}  γ={args.gamma}  aggregator {args.aggregator}  "
          f"{result['dataset']}: {result['images']} images")
    print(format_table(result["layers"]))
    print()
    print(format_table(result["timing"]))
    if args.plot:
        print(f"plot: {result['plot']}" if result.get("plot") else "plot: matplotlib is not installed")
    return 0


def add_report_command(cli) -> None:
    p = cli.command("probabilistic-report",
                    "probabilistic strategy: predicted vs actual ranges, coverage, miss rate, estimator time")
    p.add_argument("model", help="a registered model name or a model .json path")
    p.add_argument("--bits", type=int, default=8, help="activation bits (default 8)")
    p.add_argument("--gamma", type=int, default=1, help="patch-sampling stride γ (default 1)")
    p.add_argument("--aggregator", default="max", choices=("max", "mean", "percentile"))
    p.add_argument("--granularity", default="per-tensor", choices=("per-tensor", "per-channel"))
    p.add_argument("--weights", default="minmax", help="weight strategy (default minmax, per channel)")
    p.add_argument("--weight-bits", type=int, default=8, help="weight bits (default 8)")
    p.add_argument("--calibration", type=int, default=32, choices=(16, 32, 128))
    p.add_argument("--dataset", default="test", help="'test' or a shifted test set's name")
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per layer and γ (default 30)")
    p.add_argument("--gammas", type=int, nargs="+", default=list(GAMMAS), help="γ values timed (default 1 2 4 8)")
    p.add_argument("--timing-images", type=int, default=None, help="images in the timed batch (default: all)")
    p.add_argument("--plot", default=None, help="save a plot of predicted vs actual ranges (PNG path)")
    p.set_defaults(handler=cmd_report)
