"""Float execution in NumPy float32: the accuracy baseline, and the calibration pass.

It runs :data:`refquant.ops.FLOAT_OPS`, the float reference path (spec/numerics.md): Conv,
Gemm and MatMul sum exact float64 products in a fixed order and round once to float32, so
every output and every calibrated range is the same on every host, whatever its BLAS.

A fused step runs its layer and then its activation, exactly as the two nodes would. The
activation writes into the layer's output when that is an array of its own (it shares no memory
with the layer's inputs), which saves a fresh activation-sized array per layer; observers see
the step's input ``x`` and final output ``y``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..graph import Graph, validate_inputs
from ..ops import FLOAT_OPS, IN_PLACE_ACTIVATIONS
from .traverse import Step, lower, walk

__all__ = ["run_float", "float_step", "FloatEvent"]


def _args(node, env) -> list:
    return [env.get(t) if t else None for t in node.inputs]


def _run_node(node, env, extra=None, in_place=False):
    """Run one node; ``extra`` replaces its first input (a fused activation's pre-activation),
    overwritten with the result when ``in_place``."""
    args = _args(node, env)
    if extra is not None:
        args[0] = extra
    try:
        if in_place:
            return IN_PLACE_ACTIVATIONS[node.op_type](*args, **node.attributes)
        return FLOAT_OPS[node.op_type](*args, **node.attributes)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{node}: {exc}") from exc


class FloatEvent:
    """What observers see after a float step: its input and final output."""

    __slots__ = ("step", "x", "y")

    def __init__(self, step, x, y):
        self.step, self.x, self.y = step, x, y


def _own_array(y, node, env) -> bool:
    """Whether ``y``, the output of ``node``, is a writeable C-contiguous float32 array sharing
    no memory with the node's inputs (so a fused activation, its only reader, may overwrite it)."""
    return (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.flags.c_contiguous
            and y.flags.writeable
            and not any(isinstance(a, np.ndarray) and np.may_share_memory(y, a) for a in _args(node, env)))


def float_step(step: Step, env: dict, events: list | None = None) -> np.ndarray:
    """Run one step in float32; append a :class:`FloatEvent` to ``events`` if given."""
    y = _run_node(step.node, env)
    if step.activation is not None:
        y = _run_node(step.activation, env, extra=y, in_place=_own_array(y, step.node, env))
    if events is not None:
        x = env[step.node.inputs[0]] if step.node.inputs and step.node.inputs[0] else None
        if step.quantizable and step.node.op_type == "MatMul" and x is not None and x.ndim > 2:
            # observers see a MatMul layer as the quantized executor runs it: rows (…·M, K) → (…·M, N)
            rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
            events.append(FloatEvent(step, rows(x), rows(y)))
        else:
            events.append(FloatEvent(step, x, y))
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
    index = {id(step): i for i, step in enumerate(steps)}
    dead = _dead_after(steps, graph.outputs)

    def run(step, env):
        if observe is None:
            y = float_step(step, env)
        else:
            events: list = []
            y = float_step(step, env, events)
            observe(events[0])
        for name in dead[index[id(step)]]:
            env.pop(name, None)
        return y

    walk(steps, env, run)
    return {name: env[name] for name in graph.outputs}


def _dead_after(steps: list[Step], outputs) -> list[list[str]]:
    """Per step, the tensors no later step reads and the graph does not return: dropped from
    the environment once it has run, so their memory is reused by the next activations
    instead of each activation taking fresh pages from the system."""
    last: dict = {}
    for i, step in enumerate(steps):
        for node in (step.node, step.activation):
            for name in (node.inputs if node is not None else ()):
                if name:
                    last[name] = i
    keep = set(outputs)
    dead: list = [[] for _ in steps]
    for name, i in last.items():
        if name not in keep:
            dead[i].append(name)
    return dead
