"""Fake quantization for quantization-aware training: quantize-dequantize in the forward, the
straight-through estimator (STE) in the backward.

**The rule.** For qparams ``(s, z)`` on a grid ``[qmin, qmax]``::

    r    = round_half_even(x / s) + z                 (float32 division, as refquant.numerics)
    y    = (clamp(r, qmin, qmax) - z) * s             = dequantize(quantize(x))   bit for bit
    mask = qmin <= r <= qmax                          (saturation did not act)
    dL/dx = dL/dy  where mask,  0 elsewhere

Rounding has derivative 0 almost everywhere; the STE treats it as the identity inside the clip
range and blocks the gradient where the value was clipped. "Inside" is decided on the rounded
value: an ``x`` slightly beyond the last grid point that still rounds onto it passes.

**Where.** The tensors the quantized executor quantizes, with the plan's specs for them
(:func:`refquant.executor.lower` groups the nodes into the same steps):

* the weight of every Conv/Gemm/MatMul with an initializer weight (``LayerSpec`` of the
  layer's ``weights`` plan, output channels first as weight strategies see them);
* every graph input (spec ``(input name, "input")``);
* the output of every step the executor requantizes: a Conv/Gemm/MatMul step (after its fused
  Relu) and every step it runs as dequantize → float op → quantize (Add, AveragePool,
  GlobalAveragePool, Softmax, BatchNormalization). The operators whose integer rule keeps
  the input's qparams (:data:`refquant.executor.integer_ops.INTEGER_OPS`: Relu, Clip, MaxPool,
  Flatten, Reshape) get no fake-quant after them.

**Quantizers** come from plugins through the ``register_qat_quantizers`` hook
(:class:`refquant.strategies.QATQuantizer`); each point keeps its quantizer's state (a dict of
arrays: checkpointed). A point's state is created by ``init_state`` from the first tensor it
sees; in training the quantizer's new state replaces it after every call, in evaluation
(``training=False``) the state is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..executor.integer_ops import INTEGER_OPS
from ..executor.traverse import lower
from ..graph import Graph, Node
from ..numerics import QParams, dequantize, quantize
from ..plan import Plan, parse_plan
from ..registry import get_qat_quantizer
from ..strategies import LayerSpec

__all__ = ["fake_quantize", "FakeQuant", "QATPoint", "QUANTIZED_INPUT_OPS", "channels_first"]

#: ops the quantized executor runs on integers with their input's qparams (no new quantization)
QUANTIZED_INPUT_OPS = INTEGER_OPS


def fake_quantize(x: np.ndarray, qp: QParams) -> tuple[np.ndarray, np.ndarray]:
    """``(dequantize(quantize(x, qp), qp), mask)`` — see the module docstring for ``mask``.

    ``y`` is computed by :func:`refquant.numerics.quantize` and
    :func:`~refquant.numerics.dequantize` themselves, so a fake-quantized tensor equals what
    the quantized executor's dequantize gives, bit for bit.  ``x`` must be float32.
    """
    if x.dtype != np.float32:
        raise TypeError(f"fake_quantize {qp.name!r}: expected float32, got {x.dtype}")
    q = quantize(x, qp)
    scale, zp = qp.broadcast_to(x.shape)
    r = np.rint(x / scale).astype(np.float64) + zp
    mask = (r >= qp.fmt.qmin) & (r <= qp.fmt.qmax)
    return dequantize(q, qp), mask


def channels_first(node: Node, w: np.ndarray) -> tuple[np.ndarray, bool]:
    """The layer's weight with output channels on axis 0 (as weight strategies receive it), and
    whether it was transposed: Gemm with ``transB = 0`` and MatMul store ``[K, N]``."""
    if node.op_type == "Conv":
        return w, False
    if node.op_type == "Gemm" and node.attributes.get("transB", 0):
        return w, False
    if w.ndim != 2:
        raise ValueError(f"{node}: quantization-aware training needs a 2-D weight, got shape {w.shape}")
    return w.T, True


@dataclass
class QATPoint:
    """One fake-quantized tensor: a layer's weight or an activation tensor."""

    key: str  # node name (weights) or tensor name (activations)
    kind: str
    quantizer: object
    spec: LayerSpec
    state: dict | None = None


class FakeQuant:
    """The fake-quantization points of a graph under a plan, with their quantizers' state."""

    def __init__(self, graph: Graph, plan, *, get_quantizer=None):
        if get_quantizer is None:
            get_quantizer = get_qat_quantizer
        self.plan: Plan = parse_plan(plan) if isinstance(plan, str) else plan
        bn = [n.name for n in graph.nodes if n.op_type == "BatchNormalization"]
        if bn:
            raise ValueError(
                f"quantization-aware training needs BatchNormalization folded into the layer "
                f"before it (nodes {bn}): train the float model first, then fine-tune its saved "
                f"(folded) form, e.g. `refquant train NAME --from NAME --qat ...`")
        self.weights: dict[str, QATPoint] = {}
        self.activations: dict[str, QATPoint] = {}
        for t in graph.inputs:
            _, ap = self.plan.for_layer(t.name)
            self.activations[t.name] = QATPoint(t.name, "activations", get_quantizer(ap.strategy, "activations"),
                                                ap.spec(t.name, "input"))
        for step in lower(graph):
            node = step.node
            wp, ap = self.plan.for_layer(node.name)
            if step.quantizable and len(node.inputs) > 1 and node.inputs[1] in graph.initializers:
                self.weights[node.name] = QATPoint(node.name, "weights", get_quantizer(wp.strategy, "weights"),
                                                   wp.spec(node.name, node.op_type))
            if step.quantizable or node.op_type not in QUANTIZED_INPUT_OPS:
                self.activations[step.output] = QATPoint(
                    step.output, "activations", get_quantizer(ap.strategy, "activations"),
                    ap.spec(node.name, node.op_type))

    # ---- the forward calls these --------------------------------------------------------------
    def has_weight(self, node_name: str) -> bool:
        return node_name in self.weights

    def has_activation(self, tensor: str) -> bool:
        return tensor in self.activations

    def weight(self, node: Node, w: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray]:
        """Fake-quantize the layer's weight ``w`` (stored layout); return ``(w_q, mask)`` in that layout."""
        point = self.weights[node.name]
        wc, transposed = channels_first(node, w)
        y, mask = self._apply(point, np.ascontiguousarray(wc), training)
        return (y.T, mask.T) if transposed else (y, mask)

    def activation(self, tensor: str, x: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray]:
        return self._apply(self.activations[tensor], x, training)

    def _apply(self, point: QATPoint, x: np.ndarray, training: bool):
        q = point.quantizer
        if point.state is None:
            point.state = dict(q.init_state(x, point.spec))
        y, mask, new_state = q.fake_quant(x, point.state, point.spec, training)
        where = f"QAT quantizer {q.name!r} at {point.kind} of {point.spec.layer!r}"
        if not isinstance(y, np.ndarray) or y.shape != x.shape or y.dtype != np.float32:
            raise TypeError(f"{where}: fake_quant must return a float32 array of shape {x.shape}")
        if not isinstance(mask, np.ndarray) or mask.shape != x.shape or mask.dtype != bool:
            raise TypeError(f"{where}: fake_quant must return a bool mask of shape {x.shape}")
        if training:
            point.state = dict(new_state)
        return y, mask

    # ---- checkpointing ------------------------------------------------------------------------
    def points(self) -> list[QATPoint]:
        return list(self.weights.values()) + list(self.activations.values())

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every point's state as ``{"<kind>:<key>:<state key>": array}`` (plus an
        ``"<kind>:<key>:"`` marker for a point whose state exists but is empty)."""
        out = {}
        for p in self.points():
            if p.state is None:
                continue
            out[f"{p.kind}:{p.key}:"] = np.zeros(0, np.float32)
            for k, v in p.state.items():
                out[f"{p.kind}:{p.key}:{k}"] = np.asarray(v)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` gave; points it does not mention stay uninitialised."""
        by_id = {(p.kind, p.key): p for p in self.points()}
        for name, value in arrays.items():
            kind, rest = name.split(":", 1)
            key, _, field_name = rest.rpartition(":")
            point = by_id.get((kind, key))
            if point is None:
                raise ValueError(f"QAT state entry {name!r} names no fake-quantization point of this graph")
            if point.state is None:
                point.state = {}
            if field_name:
                point.state[field_name] = np.array(value)
