"""The training loop: seeded, deterministic, resumable, with optional fake quantization.

One epoch::

    perm = rng.permutation(n_train)                      the run's only random draw per epoch
    for each batch of ``batch_size`` indices of perm (the last one may be smaller):
        tape   = forward(graph, params, x[batch], training=True, fake_quant)
        loss   = softmax_cross_entropy(logits, y[batch])
        grads  = backward(graph, tape, dloss/dlogits)
        params <- BN running statistics from the tape
        params <- optimizer.step(params, grads, lr(step))
    evaluate (inference mode) on the training and the test split; report on stderr

``lr(step)`` is constant or cosine, ``lr * (1 + cos(pi * step / total_steps)) / 2`` with
``step`` counted over the whole run (computed in float64, rounded to float32 by the optimizer).

**Determinism.** One ``numpy.random.Generator(PCG64(seed))`` draws the initial weights (in the
architecture's builder) and then every epoch's permutation; nothing else is random. All
arithmetic is float32 NumPy; matrix products go to BLAS (OpenBLAS here), which is
deterministic for a fixed thread count on one machine. :meth:`Trainer.fit` runs BLAS on one
thread (:func:`refquant.train.blas.single_blas_thread`); the development machine also gave
identical weights with ``OPENBLAS_NUM_THREADS`` = 1 and 2 unpinned. Other BLAS libraries or
CPUs may round differently: bit-reproduction is promised on the machine that trained.

**Checkpoints** (:mod:`refquant.train.checkpoint`) are written after each epoch when asked
for; resuming restores weights, optimizer state, fake-quantizer state, epoch and the
generator's state, so stopping after epoch k and resuming ends bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..data import load_digits
from ..graph import Graph, fold_batchnorm
from ..registry import resolve_model
from .architectures import get_architecture
from .autodiff import backward, forward, trainable_parameters
from .blas import single_blas_thread
from .checkpoint import load_checkpoint, save_checkpoint
from .fakequant import FakeQuant
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .optim import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "config_for", "Trainer", "format_progress", "SCHEDULES"]

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (stored in checkpoints as JSON)."""

    model: str
    epochs: int
    seed: int
    batch_size: int
    optimizer: str
    lr: float
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    qat: str | None = None  # a plan string for the fake-quantizers, e.g. "weights=minmax:4 activations=ema-minmax:4"
    init: str | None = None  # start from this model's weights (a registered name or a .json path)

    def __post_init__(self):
        get_architecture(self.model)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"batch size must be an integer >= 2, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be finite and > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1 or not 0 <= self.weight_decay < 1:
            raise ValueError(f"momentum and weight decay must be in [0, 1), got {self.momentum}, {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"training config has unknown field(s) {unknown}")
        return cls(**d)


def config_for(model: str, **overrides) -> TrainConfig:
    """The shipped recipe of ``model`` with ``overrides`` (None values are ignored)."""
    recipe = get_architecture(model).recipe
    base = dict(model=model, epochs=recipe.epochs, seed=recipe.seed, batch_size=recipe.batch_size,
                optimizer=recipe.optimizer, lr=recipe.lr, schedule=recipe.schedule,
                momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def _xy(arch, split) -> tuple[np.ndarray, np.ndarray]:
    x = split.x_flat if arch.layout == "flat" else split.x
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(split.y)


class Trainer:
    """A training run of ``config`` on the digits' training split."""

    def __init__(self, config: TrainConfig, data=None):
        self.config = config
        self.arch = get_architecture(config.model)
        self.data = load_digits() if data is None else data
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        if config.init is not None:
            graph = resolve_model(config.init)
            graph.name = config.model
        else:
            graph = self.arch.build(self.rng)
        self.graph: Graph = graph
        self.order = graph.topological_order()
        self.input = graph.inputs[0].name
        self.output = graph.outputs[0]
        self.params = {k: np.array(v) for k, v in graph.initializers.items()}
        self.trainable = trainable_parameters(graph)
        decay = {n.inputs[1] for n in graph.nodes if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1}
        self.optimizer = make_optimizer(config.optimizer, {k: self.params[k] for k in self.trainable},
                                        momentum=config.momentum, weight_decay=config.weight_decay,
                                        decay=decay & set(self.trainable))
        self.fake_quant = FakeQuant(graph, config.qat) if config.qat else None
        self.x, self.y = _xy(self.arch, self.data.train)
        self.x_test, self.y_test = _xy(self.arch, self.data.test)
        rank = len(graph.inputs[0].shape)
        if rank != self.x.ndim:
            raise ValueError(f"model {config.model!r}: its input {self.input!r} is {rank}-D, but the "
                             f"architecture feeds {self.x.ndim}-D data ({self.arch.layout})")
        self.epoch = 0
        self.history: list[dict] = []
        self.steps_per_epoch = -(-len(self.x) // config.batch_size)

    # ---- one step, one epoch -------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        if self.config.schedule == "constant":
            return self.config.lr
        total = self.config.epochs * self.steps_per_epoch
        return self.config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))

    def step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> float:
        """One optimizer step on a batch; returns the batch's mean loss (before the step)."""
        tape = forward(self.graph, self.params, {self.input: xb}, training=True,
                       fake_quant=self.fake_quant, order=self.order)
        logits = tape.values[self.output]
        if not np.isfinite(logits).all():
            raise ValueError(f"training {self.config.model!r} diverged at epoch {self.epoch + 1}: the logits hold "
                             f"NaN/Inf (learning rate {self.config.lr} too high?)")
        loss = softmax_cross_entropy(logits, yb)
        grads = backward(self.graph, tape, {self.output: softmax_cross_entropy_backward(logits, yb)},
                         self.trainable)
        self.params.update(tape.running)
        self.optimizer.step(self.params, grads, lr)
        return loss

    def run_epoch(self) -> dict:
        t0 = time.perf_counter()
        n, bs = len(self.x), self.config.batch_size
        perm = self.rng.permutation(n)
        total = 0.0
        for i, start in enumerate(range(0, n, bs)):
            idx = perm[start:start + bs]
            lr = self.lr_at(self.epoch * self.steps_per_epoch + i)
            total += self.step(self.x[idx], self.y[idx], lr) * len(idx)
        self.epoch += 1
        train_loss, train_acc = self.evaluate(self.x, self.y)
        test_loss, test_acc = self.evaluate(self.x_test, self.y_test)
        record = {"epoch": self.epoch, "epochs": self.config.epochs, "loss": total / n,
                  "train_loss": train_loss, "train_accuracy": train_acc,
                  "test_loss": test_loss, "test_accuracy": test_acc, "lr": lr,
                  "seconds": time.perf_counter() - t0}
        self.history.append(record)
        return record

    def predict(self, x: np.ndarray, batch: int = 600) -> np.ndarray:
        """Logits in inference mode (BN running statistics, fake-quantizers not updated)."""
        out = []
        for start in range(0, len(x), batch):
            tape = forward(self.graph, self.params, {self.input: x[start:start + batch]}, training=False,
                           fake_quant=self.fake_quant, order=self.order)
            out.append(tape.values[self.output])
        return np.concatenate(out)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(mean loss, accuracy)`` in inference mode."""
        logits = self.predict(x)
        return softmax_cross_entropy(logits, y), float(np.mean(np.argmax(logits, axis=1) == y))

    def fit(self, *, stop_at: int | None = None, checkpoint=None,
            progress: Callable[[dict], None] | None = None) -> list[dict]:
        """Train until ``config.epochs`` (or ``stop_at``) epochs are done; checkpoint after each."""
        end = self.config.epochs if stop_at is None else min(stop_at, self.config.epochs)
        with single_blas_thread():
            while self.epoch < end:
                record = self.run_epoch()
                if checkpoint is not None:
                    self.save_checkpoint(checkpoint)
                if progress is not None:
                    progress(record)
        return self.history

    # ---- results -------------------------------------------------------------------------------
    def trained_graph(self, *, fold: bool = True) -> Graph:
        """The graph with the current weights; BatchNormalization folded (the exported form)."""
        g = self.graph.copy()
        g.initializers = {k: np.ascontiguousarray(self.params[k]) for k in self.graph.initializers}
        return fold_batchnorm(g) if fold else g

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, path):
        return save_checkpoint(
            path, config=self.config.to_dict(), epoch=self.epoch, history=self.history, rng=self.rng,
            params=self.params, optimizer=self.optimizer.state(),
            qat=self.fake_quant.state_arrays() if self.fake_quant else {})

    @classmethod
    def resume(cls, path, data=None) -> "Trainer":
        """A trainer in exactly the state the checkpoint at ``path`` recorded."""
        ck = load_checkpoint(path)
        trainer = cls(TrainConfig.from_dict(ck.config), data)
        missing = sorted(set(trainer.params) - set(ck.params))
        extra = sorted(set(ck.params) - set(trainer.params))
        if missing or extra:
            raise ValueError(f"{path}: checkpoint weights do not match model {trainer.config.model!r}: "
                             f"missing {missing}, unexpected {extra}")
        for k, v in ck.params.items():
            like = trainer.params[k]
            if v.shape != like.shape or v.dtype != like.dtype:
                raise ValueError(f"{path}: weight {k!r} is {v.dtype}{list(v.shape)}, "
                                 f"the model has {like.dtype}{list(like.shape)}")
            trainer.params[k] = np.array(v)
        trainer.optimizer.load_state(ck.optimizer)
        if trainer.fake_quant is not None:
            trainer.fake_quant.load_state_arrays(ck.qat)
        trainer.rng = ck.rng
        trainer.epoch = ck.epoch
        trainer.history = list(ck.history)
        return trainer


def format_progress(record: dict) -> str:
    """One progress line: ``epoch 3/30  loss 0.1234  train 98.50%  test 97.83%  lr 0.0098  (1.2 s)``."""
    return (f"epoch {record['epoch']:>3}/{record['epochs']}  loss {record['loss']:.4f}  "
            f"train {100 * record['train_accuracy']:.2f}%  test {100 * record['test_accuracy']:.2f}%  "
            f"lr {record['lr']:.4g}  ({record['seconds']:.1f} s)")
