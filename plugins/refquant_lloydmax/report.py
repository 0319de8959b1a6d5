"""Layer-by-layer report: Lloyd-Max against uniform min-max and ACIQ quantizers of the same weights.

For every quantizable layer (Conv, Gemm, MatMul) of a model and every bit width b, with one
granularity for all quantizers (the tensor, or each output channel — groups as in
:mod:`refquant_lloydmax.codebook`), the report gives:

* the prior chosen by KS and both KS statistics (per-channel: how many channels chose each
  prior, and the mean of each statistic over the channels); ``refine`` and ``from_prior``,
  the number of groups whose (refined) codebook came from the prior's start;
* the weight MSE = mean over all weights of ``(w − Q(w))²`` (float64, from the float32 weight)
  and SQNR = ``10·log10(mean(w²) / MSE)`` dB of

  - ``lloydmax``: the 2^b float levels of the codebook (the Lloyd-Max quantizer itself,
    refined on the weights unless ``refine="none"``);
  - ``lloydmax_int8``: the same indices with the levels on the int8 grid, ``s·q`` — the
    weight the int8 kernels actually multiply by;
  - ``minmax``: the 2^b-level mid-rise uniform grid on ``[m − c, m + c]`` with
    ``c = max|x − m|``, m the group mean (:func:`~refquant_lloydmax.uniform.minmax_uniform`);
  - ``aciq``: the same grid with ACIQ's clip for the KS-chosen prior (or the forced one)
    (:func:`~refquant_lloydmax.aciq.aciq_uniform`);
  - ``minmax_int``: the engine's ``minmax`` weight strategy (2^b − 1 levels, the narrow
    symmetric b-bit integer grid, scale max|w|/(2^(b−1) − 1)) — the baseline the model-level
    comparisons (``refquant compare``) run; present when the ``static`` plugin is loaded;

  Lloyd-Max, min-max and ACIQ all have 2^b levels and unbounded outer cells, so they differ
  only in where the levels are;
* the int8 representation error: ``rep_lsb_max`` = max over levels of ``|y − s·q| / s``
  (≤ 0.5 by construction) and ``rep_mse_ratio`` = mean over weights of
  ``(codebook[idx] − s·q[idx])²`` divided by the Lloyd-Max MSE;
* ``bits_per_weight`` of the int8-executed codebook weight.

:func:`weight_only_accuracy` runs the float model with only the weights replaced (float
activations): the float codebook (the float fake-quant path), its int8-grid form and the
engine's min-max weights, on the digits test set. :func:`plot_report` draws each layer's
weight histogram with the levels and thresholds (matplotlib, optional).
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.executor import lower, run_float, weight_matrix
from refquant.metrics import accuracy, snr_db
from refquant.presentation import format_table
from refquant.registry import quantizers, resolve_model
from refquant.strategies import LayerSpec

from .aciq import aciq_uniform
from .codebook import REFINE_CHOICES, design_codebook, fit_groups, weight_groups
from .fit import PRIOR_CHOICES
from .strategy import codebook_bits_per_weight
from .uniform import minmax_uniform

__all__ = ["DEFAULT_BITS", "QUANTIZERS", "model_layers", "layer_report", "lloydmax_report",
           "weight_only_accuracy", "plot_report", "add_report_command"]

DEFAULT_BITS = (2, 3, 4, 8)
#: the quantizers whose MSE and SQNR the report gives, in column order
QUANTIZERS = ("lloydmax", "lloydmax_int8", "minmax", "aciq", "minmax_int")


def model_layers(graph) -> list[tuple[str, str, np.ndarray]]:
    """``(layer, op, weight)`` for every quantizable layer, weight output-channel first (float32)."""
    return [(s.name, s.node.op_type, weight_matrix(graph, s.node)) for s in lower(graph) if s.quantizable]


def _uniform_mses(rows: np.ndarray, bits: int, fits: tuple) -> tuple[float, float]:
    """Layer MSE of the mid-rise min-max and ACIQ grids, each fitted per row (equal-size rows).

    ACIQ's prior is the group's Gaussian or Laplace prior; for an empirical codebook, the one
    the KS statistics choose (the smaller; the Gaussian on a tie).
    """
    minmax, aciq = [], []
    for x, fit in zip(rows.astype(np.float64), fits):
        if fit is None:  # a constant group: every quantizer here represents it exactly
            minmax.append(0.0)
            aciq.append(0.0)
            continue
        prior = fit.prior
        if prior not in ("gaussian", "laplace"):
            prior = "gaussian" if fit.ks_gaussian <= fit.ks_laplace else "laplace"
        minmax.append(minmax_uniform(x, 2**bits).mse)
        aciq.append(aciq_uniform(x, bits, prior=prior).mse)
    return float(np.mean(minmax)), float(np.mean(aciq))


def _engine_minmax_mse(w: np.ndarray, spec: LayerSpec) -> float | None:
    entry = quantizers("weights").get("minmax")
    if entry is None:
        return None
    deq = entry.obj.quantize_weight(w, spec).dequantize()
    return float(np.mean((deq.astype(np.float64) - w) ** 2))


def _prior_summary(fits) -> tuple[str, float, float]:
    fitted = [f for f in fits if f is not None]
    if not fitted:
        return "constant", math.nan, math.nan
    ks_g = float(np.mean([f.ks_gaussian for f in fitted]))
    ks_l = float(np.mean([f.ks_laplace for f in fitted]))
    if len(fits) == 1:
        return fitted[0].prior, ks_g, ks_l
    counts = Counter(f.prior if f is not None else "constant" for f in fits)
    return " ".join(f"{p}:{n}" for p, n in sorted(counts.items())), ks_g, ks_l


def layer_report(w, bits: int, *, granularity: str = "per-tensor", prior: str = "auto", refine: str = "weights",
                 layer: str = "tensor", op: str = "Conv", fits: tuple | None = None) -> dict:
    """One report row for the weight ``w`` (output channels on axis 0) at ``bits`` bits.

    ``fits`` may pass the groups' prior fits (:func:`~refquant_lloydmax.codebook.fit_groups`).
    """
    spec = LayerSpec(layer, op, bits, True, granularity, True)
    w32 = np.asarray(w, dtype=np.float32)
    rows = weight_groups(w32, per_channel=spec.per_channel, layer=layer)
    if fits is None:
        fits = fit_groups(rows, prior, per_channel=spec.per_channel, layer=layer)
    design = design_codebook(w32, bits, per_channel=spec.per_channel, prior=prior, refine=refine, layer=layer,
                             fits=fits)
    w64 = w32.astype(np.float64)
    float_w = design.float_weight().astype(np.float64)
    int8_w = (design.int8_values().astype(np.float32)
              * np.reshape(design.scales, (-1,) + (1,) * (w32.ndim - 1))).astype(np.float64)
    mse = {"lloydmax": float(np.mean((float_w - w64) ** 2)),
           "lloydmax_int8": float(np.mean((int8_w - w64) ** 2))}
    mse["minmax"], mse["aciq"] = _uniform_mses(rows, bits, fits)
    mse["minmax_int"] = _engine_minmax_mse(w32, spec)
    power = float(np.mean(w64**2))
    lsb = np.abs(design.codebook.astype(np.float64) - design.int8_levels()) / design.scales[:, None]
    rep_mse = float(np.mean((float_w - int8_w) ** 2))
    chosen, ks_g, ks_l = _prior_summary(design.fits)
    row = {"layer": layer, "op": op, "shape": list(w32.shape), "granularity": granularity,
           "bits": int(bits), "levels": 2**bits, "prior": chosen, "refine": refine,
           "from_prior": sum(o == "prior" for o in design.origins), "ks_gaussian": ks_g, "ks_laplace": ks_l}
    for q in QUANTIZERS:
        row[f"mse_{q}"] = mse[q]
    for q in QUANTIZERS:
        row[f"sqnr_{q}"] = None if mse[q] is None else snr_db(power, mse[q])
    row["rep_lsb_max"] = float(lsb.max())
    row["rep_mse_ratio"] = rep_mse / mse["lloydmax"] if mse["lloydmax"] > 0 else math.nan
    row["bits_per_weight"] = codebook_bits_per_weight(w32.size, design.groups, bits)
    return row


def _resolve(model):
    if isinstance(model, str):
        return resolve_model(model)
    return model


def lloydmax_report(model, bits=DEFAULT_BITS, *, granularity: str = "per-tensor",
                    prior: str = "auto", refine: str = "weights") -> list[dict]:
    """:func:`layer_report` for every quantizable layer of ``model`` (a name, path or Graph) and bit width."""
    if prior not in PRIOR_CHOICES:
        raise ValueError(f"lloydmax-report: prior must be one of {PRIOR_CHOICES}, got {prior!r}")
    graph = _resolve(model)
    out = []
    for name, op, w in model_layers(graph):
        rows = weight_groups(w, per_channel=granularity == "per-channel", layer=name)
        fits = fit_groups(rows, prior, per_channel=granularity == "per-channel", layer=name)
        out += [layer_report(w, b, granularity=granularity, prior=prior, refine=refine, layer=name, op=op,
                             fits=fits)
                for b in bits]
    return out


def _graph_layout(node, w: np.ndarray) -> np.ndarray:
    """Inverse of ``weight_matrix``: the output-channel-first weight in the graph's own layout."""
    if node.op_type == "Conv" or (node.op_type == "Gemm" and node.attributes.get("transB", 0)):
        return w
    return np.ascontiguousarray(w.T)


def weight_only_accuracy(model, bits=DEFAULT_BITS, *, granularity: str = "per-tensor",
                         prior: str = "auto", refine: str = "weights") -> list[dict]:
    """Digits test accuracy of the float model with only its weights quantized (float activations).

    One row per bit width: ``float`` (no quantization), ``lloydmax`` (float codebook values),
    ``lloydmax_int8`` (the levels on the int8 grid) and ``minmax_int`` (the engine's
    ``minmax`` strategy, dequantized; when the static plugin is loaded).
    """
    graph = _resolve(model)
    test = load_digits().test
    x = {graph.inputs[0].name: digits_inputs(graph, test.x)}

    def acc(g) -> float:
        return accuracy(run_float(g, x)[g.outputs[0]], test.y)

    minmax = quantizers("weights").get("minmax")
    layers = [s.node for s in lower(graph) if s.quantizable]
    rows = []
    for b in bits:
        row = {"bits": int(b), "granularity": granularity, "float": acc(graph)}
        variants = {"lloydmax": [], "lloydmax_int8": [], "minmax_int": []}
        for node in layers:
            w = weight_matrix(graph, node)
            spec = LayerSpec(node.name, node.op_type, b, True, granularity, True)
            d = design_codebook(w, b, per_channel=spec.per_channel, prior=prior, refine=refine, layer=node.name)
            scales = np.reshape(d.scales, (-1,) + (1,) * (w.ndim - 1))
            variants["lloydmax"].append(d.float_weight())
            variants["lloydmax_int8"].append((d.int8_values().astype(np.float32) * scales).astype(np.float32))
            if minmax is not None:
                variants["minmax_int"].append(minmax.obj.quantize_weight(w, spec).dequantize())
        for name, weights in variants.items():
            if not weights:
                continue
            g = graph.copy()
            for node, wq in zip(layers, weights):
                g.initializers[node.inputs[1]] = _graph_layout(node, wq).astype(np.float32)
            row[name] = acc(g)
        rows.append(row)
    return rows


def plot_report(model, bits, path, *, granularity: str = "per-tensor", prior: str = "auto",
                refine: str = "weights") -> None:
    """Save a grid of histograms (one row per layer, one column per bit width) to ``path``.

    Each panel is the histogram of the layer's weights (per-channel: of output channel 0) with
    the codebook levels as solid lines and the thresholds as dashed lines. Needs matplotlib
    (``pip install 'refquant[plot]'``); raises ``ImportError`` naming it otherwise.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the plot needs matplotlib (pip install 'refquant[plot]')") from exc
    graph = _resolve(model)
    layers = model_layers(graph)
    bits = list(bits)
    fig, axes = plt.subplots(len(layers), len(bits), figsize=(3.2 * len(bits), 2.4 * len(layers)),
                             squeeze=False)
    per_channel = granularity == "per-channel"
    for i, (name, _op, w) in enumerate(layers):
        x = weight_groups(w, per_channel=per_channel, layer=name)[0]
        for j, b in enumerate(bits):
            d = design_codebook(w, b, per_channel=per_channel, prior=prior, refine=refine, layer=name)
            levels = d.codebook[0].astype(np.float64)
            ax = axes[i][j]
            ax.hist(x, bins=60, color="0.6")
            width = 0.4 if b > 5 else 1.0
            for y in levels:
                ax.axvline(y, color="C0", lw=width)
            for t in 0.5 * (levels[:-1] + levels[1:]):
                ax.axvline(t, color="C3", lw=width, ls="--")
            fit = d.fits[0]
            label = "constant" if fit is None else fit.prior
            where = f"{name} ch 0" if per_channel else name
            ax.set_title(f"{where}, {b} bits, {label}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_TABLE_COLUMNS = ["layer", "bits", "prior", "ks_gaussian", "ks_laplace", "sqnr_lloydmax",
                  "sqnr_lloydmax_int8", "sqnr_minmax", "sqnr_aciq", "sqnr_minmax_int",
                  "rep_lsb_max", "rep_mse_ratio", "bits_per_weight"]


def cmd_report(args) -> int:
    """``refquant lloydmax-report MODEL``: the layer table (and accuracy, plot) on stdout.

    ``--json`` prints ``{"model", "granularity", "prior", "layers": [rows],
    "weight_only_accuracy": [rows] or null}``.
    """
    choice = {"granularity": args.granularity, "prior": args.prior, "refine": args.refine}
    rows = lloydmax_report(args.model, args.bits, **choice)
    acc = weight_only_accuracy(args.model, args.bits, **choice) if args.accuracy else None
    if args.json:
        print(json.dumps({"model": args.model, **choice, "layers": rows, "weight_only_accuracy": acc}, indent=1))
    else:
        print(f"Lloyd-Max vs uniform weights, {args.granularity}, prior {args.prior}, refine {args.refine}: "
              f"SQNR in dB")
        print(format_table(rows, _TABLE_COLUMNS))
        if acc is not None:
            print("\nDigits test accuracy, float model with only the weights quantized")
            print(format_table(acc))
    if args.plot:
        try:
            plot_report(args.model, args.bits, args.plot, **choice)
        except ImportError as exc:
            print(f"refquant: no plot: {exc}", file=sys.stderr)
        else:
            print(f"refquant: plot written to {args.plot}", file=sys.stderr)
    return 0


def add_report_command(cli) -> None:
    p = cli.command("lloydmax-report",
                    "per-layer Lloyd-Max vs min-max and ACIQ uniform weight quantization (MSE, SQNR)")
    p.add_argument("model", help="a registered model name or a model .json path")
    p.add_argument("--bits", type=int, nargs="+", default=list(DEFAULT_BITS), choices=range(2, 9),
                   metavar="B", help="bit widths 2..8 (default 2 3 4 8)")
    p.add_argument("--granularity", default="per-tensor", choices=("per-tensor", "per-channel"),
                   help="groups for every quantizer (default per-tensor)")
    p.add_argument("--prior", default="auto", choices=PRIOR_CHOICES,
                   help="prior for the codebook (default auto: smaller KS statistic)")
    p.add_argument("--refine", default="weights", choices=REFINE_CHOICES,
                   help="weights (default): refine the prior's codebook on the weights; none: the prior's as it is")
    p.add_argument("--accuracy", action="store_true",
                   help="also the digits test accuracy with only the weights quantized")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="save weight histograms with levels and thresholds (needs matplotlib)")
    p.set_defaults(handler=cmd_report)
