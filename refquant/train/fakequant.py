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

**The bias** of a layer whose weight is fake-quantized is fake-quantized too, as the integer
executor will hold it (:func:`refquant.executor.program.quantize_bias`): ``b_q =
clamp_int32(round_half_even(b / float32(s_x · s_w)))`` and the forward uses ``b_q · float32(s_x ·
s_w)``, with ``s_x`` the scale of the layer's input (the qparams of the last fake-quantization
point before it, carried through Relu/MaxPool/Flatten as the executor carries them) and ``s_w``
the weight's. Its gradient is the straight-through identity. At 2 bits ``s_x · s_w`` is coarse
and a float bias would train a model the executor does not run. The bias stays float where the
executor keeps it float: a weight on a float-format grid, or an input whose qparams are not one
per-tensor scale.

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
from ..executor.program import quantize_bias
from ..executor.traverse import lower
from ..graph import Graph, Node
from ..numerics import QParams, dequantize, quantize
from ..plan import Plan, parse_plan
from ..registry import get_qat_quantizer
from ..strategies import LayerSpec

__all__ = ["fake_quantize", "fake_quantize_bias", "FakeQuant", "QATPoint", "QUANTIZED_INPUT_OPS", "channels_first"]

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
    if _recorded is not None:
        _recorded.append(qp)
    q = quantize(x, qp)
    scale, zp = qp.broadcast_to(x.shape)
    r = np.rint(x / scale).astype(np.float64) + zp
    mask = (r >= qp.fmt.qmin) & (r <= qp.fmt.qmax)
    return dequantize(q, qp), mask


#: while :class:`FakeQuant` calls a quantizer, the qparams :func:`fake_quantize` was given
_recorded: list | None = None


def fake_quantize_bias(b: np.ndarray, x_qp: QParams, w_qp: QParams) -> np.ndarray:
    """The float32 bias the integer executor computes with: ``b_q · float32(s_x · s_w)``.

    ``b_q`` is :func:`refquant.executor.program.quantize_bias` — the same int32 numbers;
    ``x_qp`` is per tensor, ``w_qp`` per tensor or per output channel.
    """
    s = (np.float32(np.asarray(x_qp.scale).reshape(())) * np.asarray(w_qp.scale, np.float32)).astype(np.float32)
    b_q = quantize_bias(np.asarray(b, np.float32), np.asarray(x_qp.scale).reshape(()), w_qp.scale)
    return (b_q.astype(np.float32) * s).astype(np.float32).reshape(np.shape(b))


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
    qparams: QParams | None = None  # of the last call (when the quantizer used fake_quantize)


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
        self._carried: dict[str, QParams | None] = {}  # tensor -> qparams the executor would give it
        #: fake-quantize biases (module docstring); False trains with float biases (for comparisons)
        self.fake_quant_bias = True
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

    def bias(self, node: Node, b: np.ndarray | None) -> np.ndarray | None:
        """The layer's bias as the integer executor will add it (module docstring), or ``b``
        unchanged where the executor keeps a float bias. Call after :meth:`weight`."""
        point = self.weights.get(node.name)
        if b is None or point is None or point.qparams is None or not self.fake_quant_bias:
            return b
        x_qp = self._carried.get(node.inputs[0])
        if x_qp is None or np.asarray(x_qp.scale).size != 1:
            return b
        return fake_quantize_bias(b, x_qp, point.qparams)

    def carry(self, node: Node) -> None:
        """Record the qparams of ``node``'s output where the executor keeps its input's
        (Relu, Clip, MaxPool, Flatten, Reshape); call after the node ran."""
        if node.op_type in QUANTIZED_INPUT_OPS and node.inputs and node.inputs[0] in self._carried:
            self._carried[node.outputs[0]] = self._carried[node.inputs[0]]

    def activation(self, tensor: str, x: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray]:
        point = self.activations[tensor]
        out = self._apply(point, x, training)
        self._carried[tensor] = point.qparams
        return out

    def _apply(self, point: QATPoint, x: np.ndarray, training: bool):
        global _recorded
        q = point.quantizer
        if point.state is None:
            point.state = dict(q.init_state(x, point.spec))
        outer, _recorded = _recorded, []
        try:
            y, mask, new_state = q.fake_quant(x, point.state, point.spec, training)
            point.qparams = _recorded[-1] if _recorded else None
        finally:
            _recorded = outer
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
