"""Measuring a trained model: float accuracy on every test set, integer (quantized-executor)
accuracy under a plan, and the short QAT-versus-PTQ comparison reported in model cards.

Every number here is measured on the model as saved and loaded (``load_model``, which folds
BatchNormalization), so a card's numbers are what a user of the shipped files gets.
"""

from __future__ import annotations

from typing import Callable

from ..data import digits_inputs
from ..executor import quantize_model, run_float
from ..graph import Graph, load_model
from ..metrics import accuracy_counts
from .architectures import Architecture
from .blas import single_blas_thread
from .card import train_command
from .trainer import Trainer, config_for

__all__ = ["float_accuracies", "integer_accuracy", "qat_versus_ptq"]


def float_accuracies(graph: Graph, data) -> list[dict]:
    """Float-executor accuracy of ``graph`` on ``test`` and every shifted set."""
    rows = []
    with single_blas_thread():
        for split in data.test_sets():
            logits = run_float(graph, {graph.inputs[0].name: digits_inputs(graph, split.x)})[graph.outputs[0]]
            correct, total = accuracy_counts(logits, split.y)
            rows.append({"dataset": split.name, "images": total, "correct": correct, "accuracy": correct / total})
    return rows


def integer_accuracy(graph: Graph, plan: str, data, *, calibration: int = 128, backend: str = "reference",
                     dataset: str = "test") -> dict:
    """Accuracy of ``graph`` quantized with ``plan`` (calibrated on ``data.calibration(n)``) and
    run by the quantized executor."""
    split = data.test if dataset == "test" else data.shifted(dataset)
    with single_blas_thread():
        qm = quantize_model(graph, plan, digits_inputs(graph, data.calibration(calibration).x))
        logits = qm.run(digits_inputs(graph, split.x), backend=backend).outputs[graph.outputs[0]]
    correct, total = accuracy_counts(logits, split.y)
    return {"plan": plan, "dataset": split.name, "calibration": calibration, "images": total,
            "correct": correct, "accuracy": correct / total}


def qat_versus_ptq(arch: Architecture, model_path, data, *,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """The architecture's :class:`~refquant.train.architectures.QATCheck` on the saved model at
    ``model_path``: post-training quantization of it, then a short QAT fine-tune from it,
    quantized with the same post-training plan. Returns every number the card reports."""
    check = arch.qat_check
    if check is None:
        raise ValueError(f"architecture {arch.name!r} declares no QAT check")
    start = load_model(model_path)
    ptq = integer_accuracy(start, check.ptq_plan, data, calibration=check.calibration)
    config = config_for(arch.name, epochs=check.epochs, seed=check.seed, batch_size=check.batch_size,
                        optimizer=check.optimizer, lr=check.lr, weight_decay=check.weight_decay,
                        qat=check.qat_plan, init=str(model_path))
    trainer = Trainer(config, data)
    trainer.fit(progress=progress)
    _, fake_quant_acc = trainer.evaluate(trainer.x_test, trainer.y_test)
    qat_graph = trainer.trained_graph()
    qat = integer_accuracy(qat_graph, check.ptq_plan, data, calibration=check.calibration)
    float_after = float_accuracies(qat_graph, data)[0]
    command = f"{train_command(config, arch, '.')} --ptq {check.ptq_plan}"
    return {"config": config.to_dict(), "command": command, "ptq_plan": check.ptq_plan, "calibration": check.calibration,
            "ptq": ptq, "qat": qat, "qat_fake_quant_accuracy": fake_quant_acc,
            "qat_float_accuracy": float_after["accuracy"], "history": trainer.history}
