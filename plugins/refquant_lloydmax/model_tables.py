"""The shipped-model tables quoted in ``spec/strategies/lloydmax.md`` (§10, §11), computed here.

Run ``python -m refquant_lloydmax.model_tables`` to print them as Markdown (about half a
minute: it runs the report on every layer and ``refquant compare`` on the three models). The
spec quotes this output verbatim and the tests recompute it.

* :func:`layer_table` — per layer and bit width, the report's SQNR of every quantizer and the
  int8 representation error (:mod:`refquant_lloydmax.report`), for the default codebook (KS
  prior, refined on the weights) or the paper's (``refine="none"``);
* :func:`claim_table` and :func:`failure_table` — where Lloyd-Max's weight MSE is no larger
  than min-max's and ACIQ's (same 2^b levels, same groups), and where it is not;
* :func:`accuracy_table` — digits accuracy with Lloyd-Max and min-max weights at 4 and 3 bits,
  8-bit ``static-minmax`` activations, from :func:`refquant.compare.compare` (the rows
  ``refquant compare --json`` prints), with three variants of the strategy registered for the
  run: the paper's unrefined codebook, the empirical codebook and float execution.
"""
from __future__ import annotations

import functools

import numpy as np

from refquant.compare import compare
from refquant.hookspecs import hookimpl
from refquant.plugins import register_plugin, unregister_plugin

from .report import DEFAULT_BITS, lloydmax_report
from .strategy import LloydMaxWeights

__all__ = ["MODELS", "ACCURACY_BITS", "VARIANTS", "CODEBOOKS", "reports", "claim_holds", "layer_table", "claim_table",
           "failure_table", "compare_rows", "accuracy_table", "main"]

MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
GRANULARITIES = ("per-tensor", "per-channel")
ACCURACY_BITS = (4, 3)


def _db(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def claim_holds(row: dict) -> tuple[bool, bool]:
    """``(MSE_lloydmax <= MSE_minmax, MSE_lloydmax <= MSE_aciq)`` for one report row."""
    return row["mse_lloydmax"] <= row["mse_minmax"], row["mse_lloydmax"] <= row["mse_aciq"]


@functools.lru_cache(maxsize=16)
def reports(models=MODELS, granularity: str = "per-tensor", prior: str = "auto", refine: str = "weights") -> tuple:
    """``(model, row)`` for every report row of ``models`` (computed once per process)."""
    return tuple((m, r) for m in models for r in lloydmax_report(m, DEFAULT_BITS, granularity=granularity,
                                                                  prior=prior, refine=refine))


def _start(row: dict) -> str:
    """Per tensor: where the codebook came from; per channel: how many channels from each start."""
    groups = row["shape"][0] if row["granularity"] == "per-channel" else 1
    if groups == 1:
        return "prior" if row["from_prior"] else "uniform"
    return f"prior:{row['from_prior']} uniform:{groups - row['from_prior']}"


def layer_table(models=MODELS, granularity: str = "per-tensor", prior: str = "auto", refine: str = "weights") -> str:
    """SQNR (dB) of each quantizer and the representation error, per layer and bit width."""
    lines = ["| model | layer | bits | prior | start | KS gauss | KS laplace | Lloyd-Max | Lloyd-Max int8 | "
             "min-max | ACIQ | minmax strategy | rep. error / LM MSE |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, r in reports(models, granularity, prior, refine):
        lines.append(f"| {m} | {r['layer']} | {r['bits']} | {r['prior']} | {_start(r)} | {r['ks_gaussian']:.4f} | "
                     f"{r['ks_laplace']:.4f} | {_db(r['sqnr_lloydmax'])} | {_db(r['sqnr_lloydmax_int8'])} | "
                     f"{_db(r['sqnr_minmax'])} | {_db(r['sqnr_aciq'])} | {_db(r['sqnr_minmax_int'])} | "
                     f"{r['rep_mse_ratio']:.3g} |")
    return "\n".join(lines)


#: (prior, refine) of the codebooks the claim table compares: the default, the paper's, the empirical one
CODEBOOKS = (("auto", "weights"), ("auto", "none"), ("empirical", "weights"))


def claim_table(models=MODELS, codebooks=CODEBOOKS) -> str:
    """For each granularity and codebook: of the (layer, bits) pairs, how many have MSE_LM <= each."""
    lines = ["| granularity | prior | refine | (layer, bits) pairs | LM <= min-max | LM <= ACIQ | both |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for gran in GRANULARITIES:
        for prior, refine in codebooks:
            holds = [claim_holds(r) for _, r in reports(models, gran, prior, refine)]
            shown = "-" if prior == "empirical" else refine
            lines.append(f"| {gran} | {prior} | {shown} | {len(holds)} | {sum(a for a, _ in holds)} | "
                         f"{sum(b for _, b in holds)} | {sum(a and b for a, b in holds)} |")
    return "\n".join(lines)


def failure_table(models=MODELS, granularity: str = "per-tensor", prior: str = "auto", refine: str = "none") -> str:
    """Every (layer, bits) where Lloyd-Max's MSE exceeds min-max's or ACIQ's, with the SQNRs (by
    default for the paper's unrefined codebook: the refined one has no such layer here)."""
    lines = ["| model | layer | bits | prior | Lloyd-Max | min-max | ACIQ | loses to |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, r in reports(models, granularity, prior, refine):
        mm, aciq = claim_holds(r)
        if mm and aciq:
            continue
        losers = " and ".join(n for n, ok in (("min-max", mm), ("ACIQ", aciq)) if not ok)
        lines.append(f"| {m} | {r['layer']} | {r['bits']} | {r['prior']} | {_db(r['sqnr_lloydmax'])} | "
                     f"{_db(r['sqnr_minmax'])} | {_db(r['sqnr_aciq'])} | {losers} |")
    return "\n".join(lines)


#: the run-time variants of the strategy the accuracy table adds (plan strings carry no options)
VARIANTS = {"lloydmax-paper": {"refine": "none"}, "lloydmax-empirical": {"prior": "empirical"},
            "lloydmax-float": {"execution": "float"}}


class _Variants:
    """A plugin registering :data:`VARIANTS` for the duration of one comparison."""

    def __init__(self):
        @hookimpl
        def register_quantizers(register):
            for name, options in VARIANTS.items():
                register(LloydMaxWeights(name=name, **options))

        self.register_quantizers = register_quantizers


def compare_rows(models=MODELS, bits=ACCURACY_BITS, backend: str = "numba") -> list:
    """``refquant compare`` rows, 8-bit static-minmax activations, weights ``minmax``,
    ``lloydmax`` and its three variants (the paper's unrefined codebook; the empirical
    codebook; float execution), registered for the run only."""
    plugin = _Variants()
    register_plugin(plugin, "lloydmax-variants")
    try:
        return compare(models, bits=bits, weights=["minmax", "lloydmax", *VARIANTS],
                       activations=["static-minmax"], backend=backend, progress=False, activation_bits=8)
    finally:
        unregister_plugin(plugin)


def accuracy_table(rows) -> str:
    """Clean-test accuracy (%) per model, weight bits and granularity, and the shifted-set mean."""
    lines = ["| model | weight bits | granularity | float | min-max | Lloyd-Max | Lloyd-Max − min-max "
             "(points) | Lloyd-Max, unrefined (paper) | Lloyd-Max, float execution | Lloyd-Max, empirical | "
             "shifted: min-max | shifted: Lloyd-Max |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.model, r.bits, r.granularity), {}).setdefault(r.weights, []).append(r)
    for (model, b, gran), by in groups.items():
        clean = {w: next(r for r in rs if r.dataset == "test") for w, rs in by.items()}
        shifted = {w: np.mean([r.accuracy for r in rs if r.dataset != "test"]) for w, rs in by.items()}
        mm, lm = clean["minmax"], clean["lloydmax"]
        lines.append(f"| {model} | {b} | {gran} | {100 * mm.float_accuracy:.2f} | {100 * mm.accuracy:.2f} | "
                     f"{100 * lm.accuracy:.2f} | {100 * (lm.accuracy - mm.accuracy):+.2f} | "
                     f"{100 * clean['lloydmax-paper'].accuracy:.2f} | "
                     f"{100 * clean['lloydmax-float'].accuracy:.2f} | "
                     f"{100 * clean['lloydmax-empirical'].accuracy:.2f} | "
                     f"{100 * shifted['minmax']:.2f} | {100 * shifted['lloydmax']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    print("### Per-layer report, per-tensor, KS prior refined on the weights (SQNR in dB)\n")
    print(layer_table())
    print("\n### Where Lloyd-Max's weight MSE is no larger than min-max's and ACIQ's\n")
    print(claim_table())
    for gran in GRANULARITIES:
        print(f"\n### Where it is larger: {gran}, KS prior, unrefined (the paper's codebook)\n")
        print(failure_table(granularity=gran))
    print("\n### Accuracy: 4- and 3-bit weights, 8-bit static-minmax activations\n")
    print(accuracy_table(compare_rows()))


if __name__ == "__main__":
    main()
