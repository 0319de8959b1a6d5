"""The shipped models' architectures and training recipes: everything ``refquant train NAME`` needs.

Each architecture is a builder ``build(rng) -> Graph`` that draws the initial weights from a
``numpy.random.Generator`` and a :class:`Recipe` (the hyperparameters the shipped weights
were trained with).  Initialisation: He normal for every Conv/Gemm weight,
``w ~ N(0, 2 / fan_in)`` drawn in float64 and rounded to float32 once, biases 0;
BatchNormalization starts at scale 1, bias 0, running mean 0, running variance 1.

* ``digits-mlp`` — Gemm + Relu only, input ``[N, 64]`` (the flattened image).
* ``digits-cnn`` — conv–relu–maxpool, conv–relu, GlobalAveragePool, Gemm.
* ``digits-resnet`` — a stem conv–BN–relu–maxpool and two residual blocks with identity
  shortcuts, GlobalAveragePool, Gemm.
  Convolutions before a BatchNormalization have no bias (BN's own bias replaces it); BN is
  trained in training mode and folded into the convolutions at export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..graph import Graph, GraphBuilder

__all__ = ["Recipe", "QATCheck", "Architecture", "ARCHITECTURES", "get_architecture"]

N_CLASSES = 10


@dataclass(frozen=True)
class Recipe:
    """How the shipped weights were trained (every value can be overridden on the command line)."""

    epochs: int
    batch_size: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    schedule: str = "cosine"  # "cosine" or "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class QATCheck:
    """A short QAT run compared with post-training quantization, reported in the model card."""

    qat_plan: str
    ptq_plan: str
    epochs: int
    lr: float
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    calibration: int = 128
    seed: int = 0


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str  # the first line of the model card
    layout: str  # "flat" ([N, 64]) or "image" ([N, 1, 8, 8])
    build: Callable[[np.random.Generator], Graph]
    recipe: Recipe
    qat_check: QATCheck | None = None


def he_normal(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """``N(0, 2 / fan_in)`` in float64, rounded to float32 once."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def _conv(b: GraphBuilder, rng, x: str, cin: int, cout: int, k: int, *, name: str, bias: bool = True) -> str:
    w = he_normal(rng, (cout, cin, k, k), cin * k * k)
    p = k // 2
    return b.conv(x, w, _zeros(cout) if bias else None, pads=[p, p, p, p], kernel_shape=[k, k],
                  name=name)


def _gemm(b: GraphBuilder, rng, x: str, cin: int, cout: int, *, name: str) -> str:
    return b.gemm(x, he_normal(rng, (cout, cin), cin), _zeros(cout), transB=1, name=name)


def _bn(b: GraphBuilder, x: str, c: int, *, name: str) -> str:
    return b.batch_normalization(x, np.ones(c, np.float32), _zeros(c), _zeros(c), np.ones(c, np.float32),
                                 name=name, epsilon=1e-5, momentum=0.9)


def build_mlp(rng: np.random.Generator) -> Graph:
    """64 → 64 → 10: Gemm, Relu, Gemm."""
    b = GraphBuilder("digits-mlp")
    x = b.input("x", ["N", 64])
    h = b.relu(_gemm(b, rng, x, 64, 64, name="fc1"), name="relu1")
    y = _gemm(b, rng, h, 64, N_CLASSES, name="fc2")
    return b.build(y)


def build_cnn(rng: np.random.Generator) -> Graph:
    """[1,8,8] → conv3×3(16)–relu–maxpool2 → conv3×3(32)–relu → GAP → Gemm(10)."""
    b = GraphBuilder("digits-cnn")
    x = b.input("x", ["N", 1, 8, 8])
    h = b.relu(_conv(b, rng, x, 1, 16, 3, name="conv1"), name="relu1")
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[2, 2], name="pool1")
    h = b.relu(_conv(b, rng, h, 16, 32, 3, name="conv2"), name="relu2")
    h = b.flatten(b.global_average_pool(h, name="gap"), name="flatten")
    y = _gemm(b, rng, h, 32, N_CLASSES, name="fc")
    return b.build(y)


def build_resnet(rng: np.random.Generator) -> Graph:
    """Stem conv–BN–relu (16) and max-pool, two residual blocks of 16 channels, GAP, Gemm(10).

    A block is ``relu(x + BN(conv(relu(BN(conv(x))))))`` with 3×3 convolutions.
    """
    b = GraphBuilder("digits-resnet")
    x = b.input("x", ["N", 1, 8, 8])
    h = b.relu(_bn(b, _conv(b, rng, x, 1, 16, 3, name="stem", bias=False), 16, name="stem_bn"), name="stem_relu")
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[2, 2], name="pool")
    for name in ("block1", "block2"):
        r = _bn(b, _conv(b, rng, h, 16, 16, 3, name=f"{name}_conv1", bias=False), 16, name=f"{name}_bn1")
        r = b.relu(r, name=f"{name}_relu1")
        r = _bn(b, _conv(b, rng, r, 16, 16, 3, name=f"{name}_conv2", bias=False), 16, name=f"{name}_bn2")
        h = b.relu(b.add(h, r, name=f"{name}_add"), name=f"{name}_relu")
    h = b.flatten(b.global_average_pool(h, name="gap"), name="flatten")
    y = _gemm(b, rng, h, 16, N_CLASSES, name="fc")
    return b.build(y)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture(
            "digits-mlp",
            "digits-mlp: a two-layer perceptron (Gemm + Relu) on the flattened 8×8 digits",
            "flat", build_mlp,
            Recipe(epochs=30, batch_size=32, optimizer="sgd", lr=0.05, weight_decay=1e-4),
        ),
        Architecture(
            "digits-cnn",
            "digits-cnn: two 3×3 conv–relu layers (the first max-pooled), global average pool, Gemm",
            "image", build_cnn,
            Recipe(epochs=30, batch_size=32, optimizer="sgd", lr=0.1, weight_decay=1e-3),
            QATCheck(qat_plan="weights=minmax:4:per-channel activations=ema-minmax:4",
                     ptq_plan="weights=minmax:4:per-channel activations=static-minmax:4",
                     epochs=5, lr=1e-3),
        ),
        Architecture(
            "digits-resnet",
            "digits-resnet: a small residual network (two conv–BN blocks with Add; BN folded at export)",
            "image", build_resnet,
            Recipe(epochs=20, batch_size=32, optimizer="adam", lr=0.01),
        ),
    ]
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
