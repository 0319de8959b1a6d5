"""The QAT comparison: StatQAT against min-max quantization-aware training, same seeds, schedule and data.

For each model, grid, method and seed, one fine-tune of the shipped float model (BN folded)
with fake quantization of every weight and activation the quantized executor quantizes:

========= ================================================= ================================================
grid      StatQAT plan                                      min-max plan
========= ================================================= ================================================
int<b>    ``weights=statqat-analytic:b:per-channel``        ``weights=minmax:b:per-channel``
          ``activations=statqat-iterative:b``               ``activations=ema-minmax:b``
fp4, fp8  the same names with ``:format=<E2M1 / E4M3>``    ``minmax-float`` / ``ema-minmax-float``, same option
========= ================================================= ================================================

Activations are uint``b`` with a zero point for integer grids (refquant's default activation
plan), the symmetric float grid for float formats. Everything else is fixed and identical for
both methods: :data:`RECIPE` (Adam, cosine schedule, batch 32, no weight decay, the QAT recipe
of refquant's model cards), the data (the digits' training split; test accuracy on the test
split) and the seed (the data order). Nothing was tuned on the test set.

Recorded per run: the per-epoch history (training loss, test accuracy of the fake-quantized
forward), every batch loss, and — for integer grids — the test accuracy of the trained weights
saved, loaded and run by the quantized executor with the method's post-training plan (StatQAT:
``statqat-analytic`` / ``statqat-iterative``; min-max: ``minmax`` / ``static-minmax``),
twice: activations re-calibrated on ``calibration(128)``, and activations with the qparams
the QAT run ended with (:func:`executor_accuracy_with_qat_qparams`; the weight rules of the
two plans are those the QAT runs used, so the weights are the last step's). For ``fp4`` the executor runs the weights on the FP4 grid
exactly (a codebook on the int8 grid, :func:`.strategies.float_codebook_weight`) with int8
``statqat-iterative`` activations — both methods' weights alike; FP8 has no executor path.

Stability: the variance of the training loss over the last ``STABILITY_EPOCHS`` epochs (the
epoch means), and the variance of the batch losses in the last epoch.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.executor import quantize_model
from refquant.graph import load_model, save_model
from refquant.metrics import accuracy_counts
from refquant.numerics import QParams, qparams_from_range
from refquant.train import Trainer, config_for, integer_accuracy, single_blas_thread

__all__ = ["RECIPE", "GRIDS", "METHODS", "STABILITY_EPOCHS", "qat_plan", "run_one", "run_experiment",
           "summarize", "summary_table", "RunResult",
           "qat_activation_qparams", "executor_accuracy_with_qat_qparams"]

#: the fine-tuning recipe shared by every run (refquant's model-card QAT check)
RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "weight_decay": 0.0, "schedule": "cosine"}
#: grid key -> (plan bits, float format or None)
GRIDS = {"int4": (4, None), "int3": (3, None), "int2": (2, None),
         "fp4": (4, "float4_e2m1fn"), "fp8": (8, "float8_e4m3fn")}
METHODS = ("statqat", "minmax")
STABILITY_EPOCHS = 3
CALIBRATION = 128


def qat_plan(method: str, grid_key: str) -> str:
    """The QAT plan string of ``method`` on ``grid_key`` (float formats as the option ``format=``)."""
    bits, fmt = GRIDS[grid_key]
    if method == "statqat":
        names = ("statqat-analytic", "statqat-iterative")
    elif method == "minmax":
        names = ("minmax-float", "ema-minmax-float") if fmt else ("minmax", "ema-minmax")
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    option = f":format={fmt}" if fmt else ""
    return f"weights={names[0]}:{bits}:per-channel{option} activations={names[1]}:{bits}{option}"


def ptq_plan(method: str, grid_key: str) -> str | None:
    """The post-training plan that runs a QAT result in the quantized executor (None: no path)."""
    bits, fmt = GRIDS[grid_key]
    if fmt is None:
        if method == "statqat":
            return f"weights=statqat-analytic:{bits}:per-channel activations=statqat-iterative:{bits}"
        return f"weights=minmax:{bits}:per-channel activations=static-minmax:{bits}"
    if fmt == "float4_e2m1fn":
        return f"weights=statqat-analytic:4:per-channel:format={fmt} activations=statqat-iterative:8"
    return None


@dataclass
class RunResult:
    model: str
    grid: str
    method: str
    seed: int
    history: list
    step_losses: list
    fake_quant_accuracy: float
    executor_accuracy: float | None
    executor_plan: str | None
    executor_qat_accuracy: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class RecordingTrainer(Trainer):
    """A Trainer that keeps every batch loss."""

    def step(self, xb, yb, lr):
        loss = super().step(xb, yb, lr)
        self.step_losses.append(float(loss))
        return loss


def run_one(model: str, grid_key: str, method: str, seed: int, epochs: int, data=None, *,
            executor: bool = True, progress=None) -> RunResult:
    """One QAT fine-tune (module docstring) and its measurements."""
    data = load_digits() if data is None else data
    plan, fmt = qat_plan(method, grid_key), GRIDS[grid_key][1]
    config = config_for(model, epochs=epochs, seed=seed, qat=plan, init=model, **RECIPE)
    trainer = RecordingTrainer(config, data)
    trainer.step_losses = []
    trainer.fit(progress=progress)
    _, fake_acc = trainer.evaluate(trainer.x_test, trainer.y_test)
    executor_acc, executor_qat_acc, executor_plan = None, None, None
    ptq = ptq_plan(method, grid_key)
    if executor and ptq is not None:
        with tempfile.TemporaryDirectory() as tmp:
            json_path, _ = save_model(trainer.trained_graph(), Path(tmp) / f"{model}-qat")
            saved = load_model(json_path)
        executor_acc = integer_accuracy(saved, ptq, data, calibration=CALIBRATION)["accuracy"]
        executor_plan = ptq
        if fmt is None:
            executor_qat_acc = executor_accuracy_with_qat_qparams(saved, ptq, trainer.fake_quant, data)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in trainer.history]
    return RunResult(model, grid_key, method, seed, history, trainer.step_losses, float(fake_acc),
                     executor_acc, executor_plan, executor_qat_acc)


def qat_activation_qparams(fake_quant) -> dict:
    """The activation qparams a QAT run ended with, per tensor: ``statqat-iterative``'s stored
    scale and zero point, or ``ema-minmax``'s stored range through ``qparams_from_range`` (the
    rule its forward uses)."""
    out = {}
    for name, p in fake_quant.activations.items():
        st, spec = p.state, p.spec
        axis = 1 if spec.per_channel else None
        if "zero_point" in st:
            scale, zp = np.asarray(st["scale"], np.float32), np.asarray(st["zero_point"], np.int32)
            out[name] = (QParams(scale, zp, spec.fmt, axis=1, name=spec.layer) if spec.per_channel
                         else QParams(scale[0], zp[0], spec.fmt, name=spec.layer))
        else:
            lo, hi = np.asarray(st["lo"]), np.asarray(st["hi"])
            out[name] = qparams_from_range(lo if axis else lo[0], hi if axis else hi[0], spec.fmt,
                                           symmetric=spec.symmetric, axis=axis, name=spec.layer)
    return out


def executor_accuracy_with_qat_qparams(graph, plan, fake_quant, data) -> float:
    """Test accuracy of the quantized executor with the weights of ``plan`` and, for every
    activation, the qparams the QAT run ended with instead of re-calibrated ones."""
    with single_blas_thread():
        qm = quantize_model(graph, plan, digits_inputs(graph, data.calibration(CALIBRATION).x))
        qat = qat_activation_qparams(fake_quant)
        # tensors without a QAT point are outputs of Relu/MaxPool/Flatten…, which keep their
        # input's qparams in the executor: their calibrated entry is never used
        qm.tensor_qparams.update({k: v for k, v in qat.items() if k in qm.tensor_specs})
        for layer in qm.layers.values():
            layer.observed = qm.tensor_qparams[layer.step.output]
        logits = qm.run(digits_inputs(graph, data.test.x)).outputs[graph.outputs[0]]
    correct, total = accuracy_counts(logits, data.test.y)
    return correct / total


def run_experiment(models, grids, seeds, epochs: int, *, executor: bool = True, log=None) -> list[RunResult]:
    """Every (model, grid, method, seed) run, in that order."""
    data = load_digits()
    results = []
    for model in models:
        for grid_key in grids:
            for method in METHODS:
                for seed in seeds:
                    r = run_one(model, grid_key, method, seed, epochs, data, executor=executor)
                    if log is not None:
                        log(f"{model} {grid_key} {method} seed {seed}: fake-quant {100 * r.fake_quant_accuracy:.2f}%"
                            + (f", executor {100 * r.executor_accuracy:.2f}%" if r.executor_accuracy is not None else ""))
                    results.append(r)
    return results


def _stats(values) -> tuple[float, float]:
    """``(mean, spread)`` with spread = (max − min) / 2."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float((v.max() - v.min()) / 2)


def summarize(results) -> list[dict]:
    """One row per (model, grid, method): accuracy mean ± spread over the seeds, and stability."""
    rows = {}
    for r in results:
        r = r if isinstance(r, dict) else r.to_dict()
        key = (r["model"], r["grid"], r["method"])
        rows.setdefault(key, []).append(r)
    out = []
    for (model, grid_key, method), runs in rows.items():
        epoch_var = [float(np.var([h["loss"] for h in r["history"][-STABILITY_EPOCHS:]])) for r in runs]
        steps_per_epoch = len(runs[0]["step_losses"]) // len(runs[0]["history"])
        step_var = [float(np.var(r["step_losses"][-steps_per_epoch:])) for r in runs]
        row = {"model": model, "grid": grid_key, "method": method, "seeds": len(runs),
               "accuracy": _stats([r["fake_quant_accuracy"] for r in runs]),
               "final_loss": _stats([r["history"][-1]["loss"] for r in runs]),
               "epoch_loss_var": float(np.mean(epoch_var)), "step_loss_var": float(np.mean(step_var))}
        for key in ("executor_accuracy", "executor_qat_accuracy"):
            ex = [r.get(key) for r in runs if r.get(key) is not None]
            row[key] = _stats(ex) if ex else None
        out.append(row)
    return out


def _pct(stat) -> str:
    return "—" if stat is None else f"{100 * stat[0]:.2f} ± {100 * stat[1]:.2f}"


def summary_table(rows: list[dict]) -> str:
    """Markdown: StatQAT and min-max side by side per (model, grid)."""
    lines = ["| model | grid | StatQAT fake-quant acc. (%) | min-max fake-quant acc. (%) | StatQAT loss var. "
             "(last epochs / last-epoch steps) | min-max loss var. | StatQAT executor, re-calibrated / QAT qparams (%) | "
             "min-max executor, re-calibrated / QAT qparams (%) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    by = {(r["model"], r["grid"], r["method"]): r for r in rows}
    seen = []
    for r in rows:
        if (r["model"], r["grid"]) not in seen:
            seen.append((r["model"], r["grid"]))
    for model, grid_key in seen:
        s, m = by.get((model, grid_key, "statqat")), by.get((model, grid_key, "minmax"))
        if s is None or m is None:
            continue
        ex = lambda r: f"{_pct(r['executor_accuracy'])} / {_pct(r.get('executor_qat_accuracy'))}"
        lines.append(f"| {model} | {grid_key} | {_pct(s['accuracy'])} | {_pct(m['accuracy'])} | "
                     f"{s['epoch_loss_var']:.2e} / {s['step_loss_var']:.2e} | "
                     f"{m['epoch_loss_var']:.2e} / {m['step_loss_var']:.2e} | {ex(s)} | {ex(m)} |")
    return "\n".join(lines)


def save_results(results, path) -> None:
    Path(path).write_text(json.dumps([r.to_dict() if not isinstance(r, dict) else r for r in results], indent=1),
                          encoding="utf-8")
