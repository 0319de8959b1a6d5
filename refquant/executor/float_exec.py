"""Float execution in NumPy float32: the accuracy baseline, and the calibration pass.

It runs :data:`refquant.ops.FLOAT_OPS`, the float reference path (spec/numerics.md): Conv,
Gemm and MatMul sum exact float64 products in a fixed order and round once to float32, so
every output and every calibrated range is the same on every host, whatever its BLAS.

A fused step runs its layer and then its activation, exactly as the two nodes would; the
pre-activation output is handed to observers too, since a layer's estimate of its own output
(the probabilistic strategy) concerns the pre-activation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..graph import Graph, validate_inputs
from ..ops import FLOAT_OPS
from .traverse import Step, lower, walk

__all__ = ["run_float", "float_step", "FloatEvent"]


def _args(node, env) -> list:
    return [env.get(t) if t else None for t in node.inputs]


def _run_node(node, env, extra=None):
    """Run one node; ``extra`` replaces its first input (a fused activation's pre-activation)."""
    args = _args(node, env)
    if extra is not None:
        args[0] = extra
    try:
        return FLOAT_OPS[node.op_type](*args, **node.attributes)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{node}: {exc}") from exc


class FloatEvent:
    """What observers see after a float step: its input, pre-activation and final outputs."""

    __slots__ = ("step", "x", "pre_activation", "y")

    def __init__(self, step, x, pre_activation, y):
        self.step, self.x, self.pre_activation, self.y = step, x, pre_activation, y


def float_step(step: Step, env: dict, events: list | None = None) -> np.ndarray:
    """Run one step in float32; append a :class:`FloatEvent` to ``events`` if given."""
    pre = _run_node(step.node, env)
    y = pre
    if step.activation is not None:
        y = _run_node(step.activation, env, extra=pre)
    if events is not None:
        x = env[step.node.inputs[0]] if step.node.inputs and step.node.inputs[0] else None
        if step.quantizable and step.node.op_type == "MatMul" and x is not None and x.ndim > 2:
            # observers see a MatMul layer as the quantized executor runs it: rows (…·M, K) → (…·M, N)
            rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
            events.append(FloatEvent(step, rows(x), rows(pre), rows(y)))
        else:
            events.append(FloatEvent(step, x, pre, y))
    return y


def run_float(graph: Graph, feeds: dict, *, steps: list[Step] | None = None,
              observe: Callable[[FloatEvent], None] | None = None) -> dict:
    """Run ``graph`` on ``feeds`` (input name → array) in float32; return output name → array.

    ``observe(event)`` is called after every step (calibration observers, tracing).
    """
    feeds = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
             for k, v in feeds.items()}
    validate_inputs(graph, feeds)
    steps = steps if steps is not None else lower(graph)
    env = {**graph.initializers, **feeds}

    def run(step, env):
        if observe is None:
            return float_step(step, env)
        events: list = []
        y = float_step(step, env, events)
        observe(events[0])
        return y

    walk(steps, env, run)
    return {name: env[name] for name in graph.outputs}
