"""Model cards: ``NAME.md`` beside ``NAME.json`` / ``NAME.npz``, written by ``refquant train``.

Every number in a card is measured by the command that writes it; the first line is the
description ``refquant models`` shows.
"""

from __future__ import annotations

from ..graph import Graph, validate_graph
from .architectures import Architecture
from .blas import blas_configuration
from .trainer import TrainConfig

__all__ = ["parameter_count", "train_command", "render_card", "card_blas"]


def parameter_count(graph: Graph, exclude=()) -> int:
    """Number of float32 values in the initializers (minus the names in ``exclude``)."""
    return int(sum(a.size for k, a in graph.initializers.items() if a.dtype.kind == "f" and k not in exclude))


def train_command(config: TrainConfig, arch: Architecture, out: str) -> str:
    """The ``refquant train`` command line that reproduces ``config`` (options that differ from the recipe)."""
    parts = ["refquant train", config.model, "--out", out]
    r = arch.recipe
    for flag, value, default in (("--epochs", config.epochs, r.epochs), ("--seed", config.seed, r.seed),
                                 ("--batch-size", config.batch_size, r.batch_size),
                                 ("--optimizer", config.optimizer, r.optimizer), ("--lr", config.lr, r.lr),
                                 ("--weight-decay", config.weight_decay, r.weight_decay)):
        if value != default:
            parts += [flag, str(value)]
    if config.init:
        parts += ["--from", config.init]
    if config.qat:
        parts += ["--qat", config.qat]
    return " ".join(parts)


def card_blas(card: str) -> str | None:
    """The BLAS configuration a card records (its Training table's ``BLAS`` row), or None."""
    for line in card.splitlines():
        if line.startswith("| BLAS | ") and line.endswith(" |"):
            return line[len("| BLAS | "):-2]
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _architecture_table(graph: Graph) -> list[str]:
    shapes = validate_graph(graph)
    lines = ["| node | op | output shape | parameters |", "|---|---|---|---:|"]
    for node in graph.topological_order():
        params = sum(graph.initializers[t].size for t in node.inputs
                     if t in graph.initializers and graph.initializers[t].dtype.kind == "f")
        shape = "[" + ", ".join(str(d) for d in shapes[node.outputs[0]]) + "]"
        lines.append(f"| `{node.name}` | {node.op_type} | {shape} | {params or ''} |")
    return lines


def render_card(*, arch: Architecture, config: TrainConfig, graph: Graph, trained: Graph, out: str,
                history: list[dict], accuracies: list[dict], qat: dict | None = None) -> str:
    """The model card text. ``graph``: the exported (BN-folded) model; ``trained``: the graph as
    trained (with BatchNormalization), for the training-time parameter count."""
    inp = graph.inputs[0]
    last = history[-1]
    exported = parameter_count(graph)
    lines = [
        f"# {arch.summary}",
        "",
        f"`{config.model}.json` (graph) and `{config.model}.npz` (weights) in refquant's model format "
        f"(`spec/model-format.md`). This card, both files and every number below are the output of",
        "",
        "```",
        train_command(config, arch, out),
        "```",
        "",
        "which reproduces the weights bit for bit on a host with the BLAS configuration recorded "
        "under *Training* (`spec/training.md`, *Determinism*).",
        "",
        "## Architecture",
        "",
        f"Input `{inp.name}` [{', '.join(str(d) for d in inp.shape)}]: digits normalised as `spec/data.md` says"
        + (" and flattened row by row (pixel (r, c) is feature 8r + c)." if len(inp.shape) == 2 else "."),
        f"Output `{graph.outputs[0]}`: 10 logits (no Softmax).",
        "",
        *_architecture_table(graph),
        "",
        f"Parameters: **{exported}** float32 values.",
    ]
    bn = [n for n in trained.nodes if n.op_type == "BatchNormalization"]
    if bn:
        stats = {n.inputs[i] for n in bn for i in (3, 4)}
        lines += [
            "",
            f"Trained with {len(bn)} BatchNormalization nodes in training mode "
            f"({parameter_count(trained, stats)} trainable values plus {sum(trained.initializers[s].size for s in stats)} "
            f"running statistics); exported with every BatchNormalization folded into the convolution "
            f"before it (`refquant.graph.fold_batchnorm`), so the shipped graph has none.",
        ]
    r = config
    lines += [
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        "| data | the 1198 training images of `spec/data.md` (test images never seen) |",
        f"| epochs | {r.epochs} |",
        f"| batch size | {r.batch_size} (the last batch of an epoch has {1198 % r.batch_size or r.batch_size}) |",
        f"| optimizer | {'SGD, momentum ' + str(r.momentum) if r.optimizer == 'sgd' else 'Adam (0.9, 0.999, eps 1e-8)'} |",
        f"| learning rate | {r.lr}, {r.schedule} schedule over all steps |",
        f"| weight decay | {f'{r.weight_decay} (Conv/Gemm weights only)' if r.weight_decay else 'none'} |",
        "| augmentation | none |",
        f"| seed | {r.seed} (`numpy.random.Generator(PCG64({r.seed}))`: initial weights, then each epoch's order) |",
        f"| loss | softmax cross-entropy, mean over the batch |",
        f"| BLAS | {blas_configuration()} |",
        "",
        f"After the last epoch: training loss {last['train_loss']:.4f}, training accuracy "
        f"{_pct(last['train_accuracy'])} (inference mode).",
        "",
        "## Float accuracy",
        "",
        "The saved model, loaded with `load_model` and run by the float executor (`run_float`):",
        "",
        "| dataset | images | correct | accuracy |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| `{a['dataset']}` | {a['images']} | {a['correct']} | {_pct(a['accuracy'])} |" for a in accuracies]
    if qat is not None:
        q = qat["config"]
        lines += [
            "",
            "## 4-bit: quantization-aware training versus post-training quantization",
            "",
            f"Post-training quantization of this model with the plan `{qat['ptq_plan']}` "
            f"(activations calibrated on `calibration({qat['calibration']})`), run by the quantized "
            f"executor on the reference kernels, against a short min-max QAT fine-tune of the same "
            f"model, quantized and run the same way:",
            "",
            "```",
            qat["command"],
            "```",
            "",
            "| model | test accuracy (quantized executor, 4-bit) |",
            "|---|---:|",
            f"| this model, post-training quantized | {_pct(qat['ptq']['accuracy'])} "
            f"({qat['ptq']['correct']}/{qat['ptq']['images']}) |",
            f"| after {q['epochs']} epochs of QAT (`{q['qat']}`) | {_pct(qat['qat']['accuracy'])} "
            f"({qat['qat']['correct']}/{qat['qat']['images']}) |",
            "",
            f"The QAT model's own fake-quantized forward (EMA activation ranges) scores "
            f"{_pct(qat['qat_fake_quant_accuracy'])} on the test set, and its float weights "
            f"{_pct(qat['qat_float_accuracy'])} without quantization.",
        ]
    return "\n".join(lines) + "\n"
