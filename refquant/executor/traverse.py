"""One traversal of the graph for every mode: lowering into steps, and the walk itself.

Lowering groups each quantizable layer (Conv, Gemm, MatMul with a weight initializer) with a
directly following Relu, or Clip to [0, 6], when the layer's output feeds only that node and
is not a graph output: the pair runs as one fused step ("Relu/Relu6 after a Conv/Gemm fused
into the kernel"). Every other node is a step of its own. Float execution, calibration,
quantized execution and tracing all walk the same step list; they differ only in the function
applied to each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..graph import Graph, Node

__all__ = ["QUANTIZABLE_OPS", "Step", "lower", "walk"]

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Step:
    """A node, possibly with a fused activation node after it."""

    node: Node
    activation: Node | None = None
    fused_activation: str | None = None  # "relu" or "relu6"
    #: a Conv/Gemm/MatMul whose weight (input 1) is an initializer; a product of two run-time
    #: tensors (attention's Q·Kᵀ) is not a layer and runs by the integer-operator table's fallback
    has_weight: bool = False

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def output(self) -> str:
        """The tensor this step produces (the activation's output when one is fused)."""
        return (self.activation or self.node).outputs[0]

    @property
    def quantizable(self) -> bool:
        return self.node.op_type in QUANTIZABLE_OPS and self.has_weight


def _clip_bounds(graph: Graph, node: Node) -> tuple[float | None, float | None]:
    vals = []
    for i in (1, 2):
        t = node.inputs[i] if len(node.inputs) > i else ""
        if not t:
            vals.append(None)
        elif t in graph.initializers:
            vals.append(float(np.asarray(graph.initializers[t]).reshape(())))
        else:
            return (float("nan"), float("nan"))  # run-time bounds: never fused
    return vals[0], vals[1]


def _fusable_activation(graph: Graph, node: Node) -> tuple[Node, str] | None:
    out = node.outputs[0]
    users = graph.consumers(out)
    if out in graph.outputs or len(users) != 1:
        return None
    act = users[0]
    if act.op_type == "Relu":
        return act, "relu"
    if act.op_type == "Clip" and act.inputs[0] == out:
        lo, hi = _clip_bounds(graph, act)
        if lo == 0.0 and hi == 6.0:
            return act, "relu6"
        if lo == 0.0 and hi is None:
            return act, "relu"
    return None


def _has_weight(graph: Graph, node: Node) -> bool:
    return len(node.inputs) > 1 and node.inputs[1] in graph.initializers


def lower(graph: Graph) -> list[Step]:
    """The graph's nodes in topological order, grouped into steps (see module docstring)."""
    steps, fused = [], set()
    for node in graph.topological_order():
        if node.name in fused:
            continue
        if node.op_type in QUANTIZABLE_OPS and _has_weight(graph, node):
            found = _fusable_activation(graph, node)
            if found:
                act, kind = found
                fused.add(act.name)
                steps.append(Step(node, act, kind, has_weight=True))
                continue
            steps.append(Step(node, has_weight=True))
            continue
        steps.append(Step(node))
    return steps


def walk(steps: list[Step], env: dict, run_step: Callable[[Step, dict], object],
         on_step: Callable[[Step, object, float], None] | None = None) -> dict:
    """Run ``run_step(step, env)`` for each step, storing its result under ``step.output``.

    ``on_step(step, result, seconds)`` is called after each step (records, observers, hooks).
    Returns ``env``.
    """
    for step in steps:
        t0 = time.perf_counter()
        result = run_step(step, env)
        dt = time.perf_counter() - t0
        env[step.output] = result
        if on_step is not None:
            on_step(step, result, dt)
    return env
