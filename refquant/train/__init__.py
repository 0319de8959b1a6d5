"""Training: forward and backward over a graph, optimizers, fake quantization, the shipped models.

    >>> from refquant.train import Trainer, config_for
    >>> trainer = Trainer(config_for("digits-mlp"))
    >>> history = trainer.fit()                       # progress records, one per epoch
    >>> graph = trainer.trained_graph()               # BN folded: ready for save_model

The formulas (each op's backward, the optimizers, the straight-through estimator, where fake
quantization goes, determinism and the checkpoint format) are in ``spec/training.md``.
"""

from .architectures import ARCHITECTURES, Architecture, QATCheck, Recipe, get_architecture
from .autodiff import BACKWARD_OPS, Tape, backward, forward, trainable_parameters
from .blas import single_blas_thread
from .checkpoint import load_checkpoint, save_checkpoint
from .fakequant import FakeQuant, fake_quantize
from .loss import log_softmax, softmax_cross_entropy, softmax_cross_entropy_backward
from .minmax_qat import EMAMinMaxQATActivations, MinMaxQATWeights
from .optim import SGD, Adam
from .report import float_accuracies, integer_accuracy, qat_versus_ptq
from .trainer import TrainConfig, Trainer, config_for

__all__ = [
    "ARCHITECTURES", "Architecture", "QATCheck", "Recipe", "get_architecture",
    "BACKWARD_OPS", "Tape", "backward", "forward", "trainable_parameters",
    "single_blas_thread",
    "load_checkpoint", "save_checkpoint",
    "FakeQuant", "fake_quantize",
    "log_softmax", "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "EMAMinMaxQATActivations", "MinMaxQATWeights",
    "SGD", "Adam",
    "float_accuracies", "integer_accuracy", "qat_versus_ptq",
    "TrainConfig", "Trainer", "config_for",
]
