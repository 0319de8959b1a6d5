"""Forward and backward over a graph: the forward keeps what the backward needs, the backward
walks the nodes in reverse topological order.

Forward (one pass in :meth:`Graph.topological_order`)::

    env = {**params, **feeds}
    for node in order:
        args = [env[t] for t in node.inputs]          (a fake-quantized weight replaces args[1])
        env[out] = TRAINING_OPS[op](*args, **attrs)   (training-mode BatchNormalization instead
                                                       of the inference op, when training)
        env[out] = fake_quant(env[out])               (if the tensor is a quantization point)

The tape keeps every node's argument list (the values its backward needs) and the STE masks.

Backward (reverse order)::

    grad[out] = dL/d out                              (summed over every node that read it)
    grad[out] *= mask[out]                            (straight-through estimator of its fake-quant)
    for t, d in zip(node.inputs, BACKWARD_OPS[op](grad[out], *args, **attrs)):
        grad[t] += d                                  (a weight's d is masked by its fake-quant)

A tensor read by several nodes (a residual connection) receives the sum of their gradients;
every consumer comes later in topological order, so its sum is complete when its producer is
reached.  Sums are formed in a fixed order (reverse topological), so a run is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import Graph, Node
from ..ops import TRAINING_OPS
from ..ops.batchnorm import batch_normalization_train, batch_normalization_train_backward
from ..ops.conv import conv_backward
from ..ops.elementwise import add_backward, relu_backward
from ..ops.gemm import gemm_backward, matmul_backward
from ..ops.pool import average_pool_backward, global_average_pool_backward, max_pool_backward
from ..ops.shape import flatten_backward, reshape_backward

__all__ = ["BACKWARD_OPS", "Tape", "forward", "backward", "trainable_parameters", "running_statistics"]

#: op type -> ``backward(dy, *inputs, **attributes)`` returning one gradient per ONNX input
#: (None for an absent input or one without a gradient).
BACKWARD_OPS = {
    "Conv": conv_backward,
    "Gemm": gemm_backward,
    "MatMul": matmul_backward,
    "Relu": relu_backward,
    "MaxPool": max_pool_backward,
    "AveragePool": average_pool_backward,
    "GlobalAveragePool": global_average_pool_backward,
    "Add": add_backward,
    "Flatten": flatten_backward,
    "Reshape": reshape_backward,
    "BatchNormalization": batch_normalization_train_backward,
}

_BN_STATS = (3, 4)  # BatchNormalization inputs input_mean, input_var: buffers, not parameters


def running_statistics(graph: Graph) -> set[str]:
    """Initializers that are BatchNormalization running statistics (updated, never trained)."""
    return {n.inputs[i] for n in graph.nodes if n.op_type == "BatchNormalization" for i in _BN_STATS}


def trainable_parameters(graph: Graph) -> list[str]:
    """The float initializers that get gradients: every one read by some node, except the
    running statistics of BatchNormalization; in initializer order."""
    used = {t for n in graph.nodes for t in n.inputs}
    buffers = running_statistics(graph)
    return [k for k, a in graph.initializers.items()
            if k in used and k not in buffers and a.dtype.kind == "f"]


@dataclass
class Tape:
    """What a forward pass keeps for the backward."""

    order: list[Node]
    values: dict[str, np.ndarray]
    args: dict[str, list] = field(default_factory=dict)  # node name -> the arguments it was called with
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> STE mask of its fake-quant
    weight_masks: dict[str, np.ndarray] = field(default_factory=dict)  # node name -> mask of its weight
    running: dict[str, np.ndarray] = field(default_factory=dict)  # BN statistic -> updated value
    training: bool = True


def _bn_attrs(node: Node) -> dict:
    return {"epsilon": node.attributes.get("epsilon", 1e-5), "momentum": node.attributes.get("momentum", 0.9)}


def forward(graph: Graph, params: dict, feeds: dict, *, training: bool, fake_quant=None,
            ops: dict | None = None, order: list[Node] | None = None) -> Tape:
    """Run ``graph`` with weights ``params`` on ``feeds``; return the :class:`Tape`.

    ``training``: BatchNormalization uses batch statistics (and the tape carries the updated
    running statistics) and fake-quantizers update their state. ``fake_quant``: a
    :class:`refquant.train.fakequant.FakeQuant` or None. ``ops``: the forward table (default
    :data:`refquant.ops.TRAINING_OPS` — float32 BLAS Conv/Gemm/MatMul, the numerics the
    shipped models were trained with, not the float64-accumulating inference ops of
    :data:`refquant.ops.FLOAT_OPS`; the gradient checks pass float64 oracles).
    """
    ops = TRAINING_OPS if ops is None else ops
    order = graph.topological_order() if order is None else order
    tape = Tape(order, {**params, **feeds}, training=training)
    env = tape.values
    if fake_quant is not None:
        for name in feeds:
            if fake_quant.has_activation(name):
                env[name], tape.masks[name] = fake_quant.activation(name, env[name], training)
    for node in order:
        args = [env[t] if t else None for t in node.inputs]
        if fake_quant is not None and fake_quant.has_weight(node.name):
            args[1], tape.weight_masks[node.name] = fake_quant.weight(node, args[1], training)
            if len(args) > 2 and args[2] is not None:  # the bias the executor adds (STE: identity gradient)
                args[2] = fake_quant.bias(node, args[2])
        try:
            if node.op_type == "BatchNormalization" and training:
                y, mean, var = batch_normalization_train(*args, **_bn_attrs(node))
                tape.running[node.inputs[3]], tape.running[node.inputs[4]] = mean, var
            else:
                y = ops[node.op_type](*args, **node.attributes)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{node}: {exc}") from exc
        out = node.outputs[0]
        if fake_quant is not None:
            fake_quant.carry(node)
        if fake_quant is not None and fake_quant.has_activation(out):
            y, tape.masks[out] = fake_quant.activation(out, y, training)
        env[out] = y
        tape.args[node.name] = args
    return tape


def _accumulate(grads: dict, name: str, d: np.ndarray) -> None:
    grads[name] = d if name not in grads else grads[name] + d


def backward(graph: Graph, tape: Tape, output_grads: dict[str, np.ndarray],
             wanted: list[str] | None = None) -> dict[str, np.ndarray]:
    """Gradients of the loss with respect to ``wanted`` tensors (default: the trainable
    parameters), given ``output_grads`` (graph output -> dL/d output).

    A wanted tensor the loss does not depend on gets a zero gradient.  Raises ValueError for
    an operator without a backward, and for BatchNormalization run in inference mode.
    """
    wanted = trainable_parameters(graph) if wanted is None else wanted
    grads: dict[str, np.ndarray] = {}
    for name, g in output_grads.items():
        _accumulate(grads, name, g)
    for node in reversed(tape.order):
        out = node.outputs[0]
        dy = grads.get(out)
        if dy is None:
            continue
        if out in tape.masks:
            dy = np.where(tape.masks[out], dy, np.zeros((), dy.dtype))
        backward_fn = BACKWARD_OPS.get(node.op_type)
        if backward_fn is None:
            raise ValueError(f"{node}: training has no backward for {node.op_type!r}; "
                             f"supported: {', '.join(sorted(BACKWARD_OPS))}")
        if node.op_type == "BatchNormalization":
            if not tape.training:
                raise ValueError(f"{node}: backward through BatchNormalization needs a training-mode forward")
            attrs = _bn_attrs(node)
        else:
            attrs = node.attributes
        try:
            dins = backward_fn(dy, *tape.args[node.name], **attrs)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{node}: {exc}") from exc
        for i, (t, d) in enumerate(zip(node.inputs, dins)):
            if not t or d is None:
                continue
            if i == 1 and node.name in tape.weight_masks:
                d = np.where(tape.weight_masks[node.name], d, np.zeros((), d.dtype))
            _accumulate(grads, t, d)
    result = {}
    for name in wanted:
        g = grads.get(name)
        result[name] = np.zeros_like(tape.values[name]) if g is None else g
    return result
