"""Export refquant graphs and quantized models as ONNX models.

Three forms (opset 15 — 17 for a graph with LayerNormalization, 20 with Gelu — IR version 8):

**float** (:func:`export_float`) — the graph as it is: every node keeps its ONNX name,
inputs and attributes; initializers become ONNX initializers.

**QOperator** (:func:`export_qoperator`) — the integer graph refquant runs, step for step:

==========================  ==============================================================
refquant step               ONNX nodes
==========================  ==============================================================
graph input                 ``QuantizeLinear(x, s, z)``
Conv (+ fused Relu/Relu6)   ``QLinearConv`` (int32 bias ``B``) [+ ``Clip`` to the fused range]
Gemm                        ``Reshape [N, K, 1, 1]`` → 1×1 ``QLinearConv`` → ``Flatten``
MatMul                      ``Reshape [N, K]`` → ``QLinearMatMul``
Relu / Clip                 ``Max(q, z)`` / ``Clip(q, q(min), q(max))`` on the integers
MaxPool, Flatten, Reshape   the same operator on the integers
AveragePool,                ``DequantizeLinear(q, 1, z)`` → pool → ``Mul(s)`` →
GlobalAveragePool           ``QuantizeLinear`` (the mean of the integers, as the executor)
Add, Softmax, …             ``DequantizeLinear`` → float op → ``QuantizeLinear``
graph output                ``DequantizeLinear``
==========================  ==============================================================

Every row but the first four and the last is the ``emit`` of the step's entry in the
integer-operator table (:mod:`refquant.executor.integer_ops`), chosen by the executor's rule.

ONNX's ``QLinearMatMul`` has no bias, so a Gemm runs as a 1×1 ``QLinearConv``: the same
accumulator ``Σ_k (x - z_x)(w - z_w) + B`` and the same requantization. ``QLinearConv`` has
no fused activation: the output grid already saturates at ``[qmin, qmax]``, and where a fused
Relu/Relu6 clamps further (``z_y > qmin``, or Relu6's upper bound) a ``Clip`` on the integers
follows — ``clip(saturate(v), lo, hi) = clip(v, lo, hi)``. A format narrower than its
storage (``uint4`` in uint8) gets the same ``Clip`` after every node that produces it.
onnxruntime's contrib operators (``QLinearAdd``, ``QLinearGlobalAveragePool``) round in their
own way and are not used.

The bias is quantized once, with the input scale the layer will see —
``B = clamp_int32(round_half_even(b / float32(s_x · s_w)))``, the executor's rule — which is
only possible because every qparam is known offline. An activation strategy that chooses
qparams per input (timing ``after`` or ``before``), per-channel activation qparams (which
the executor requantizes per input), weights executed in float (float-format grids), and a
requant mode other than ``float32`` cannot be expressed: :class:`ExportError` says which
layer and why.

With ``requant="float32"`` onnxruntime (CPU, graph optimizations disabled) runs the
QOperator model bit-exactly like refquant — tests check every shipped model — where it
multiplies uint8 by int8 exactly: not on x86-64 without AVX-VNNI, where it saturates each pair
sum to int16 (:func:`~refquant.onnx_io.integer_product_probe` measures it).

**QDQ** (:func:`export_qdq`) — the float graph with ``QuantizeLinear → DequantizeLinear`` on
every quantized tensor and ``DequantizeLinear`` on the integer weights and int32 biases: the
form quantization tools exchange. Run as written it computes in float32 (not bit-exact);
onnxruntime with graph optimizations fuses it back into integer operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._version import __version__
from ..executor.integer_ops import rule_for
from ..executor.quantized import quantize_bias
from ..graph import validate_graph
from ..numerics import QParams, make_requantizer, quantize
from .runtime import require_onnx

__all__ = ["OPSET", "IR_VERSION", "ExportError", "ExportedModel", "export_float", "export_qoperator",
           "export_qdq", "static_tensor_qparams"]

OPSET = 15
IR_VERSION = 8
#: operators newer than :data:`OPSET`: a graph holding one is exported at the opset that defines it
MIN_OPSET = {"LayerNormalization": 17, "Gelu": 20}
#: operators whose refquant form (an attribute) changed into an input at this opset
ATTRIBUTE_UNTIL = {"ReduceMean": 18}


def opset_for(graph) -> int:
    """The opset a graph exports at: :data:`OPSET`, or higher when it holds an operator of
    :data:`MIN_OPSET`; ExportError when that opset no longer has an operator in refquant's form."""
    ops = {n.op_type for n in graph.nodes}
    opset = max([OPSET] + [MIN_OPSET[o] for o in ops if o in MIN_OPSET])
    for op, until in ATTRIBUTE_UNTIL.items():
        if op in ops and opset >= until:
            raise ExportError(f"graph {graph.name!r}: {op} takes 'axes' as an attribute, which opset {opset} "
                              f"(needed by {sorted(o for o in ops if o in MIN_OPSET)}) no longer allows")
    return opset


class ExportError(ValueError):
    """The model cannot be expressed in the requested ONNX form."""


@dataclass
class ExportedModel:
    """An exported ONNX model and where each refquant layer's integer output lives in it."""

    model: object  # onnx.ModelProto
    form: str  # "float", "qoperator" or "qdq"
    layer_outputs: dict = field(default_factory=dict)  # layer name → ONNX integer tensor name
    layer_output_types: dict = field(default_factory=dict)  # layer name → NumPy dtype name

    def save(self, path) -> None:
        require_onnx().save_model(self.model, str(path))

    def to_bytes(self) -> bytes:
        return self.model.SerializeToString()


class _Emitter:
    """Collects nodes and initializers with unique names."""

    def __init__(self, onnx):
        self.onnx, self.helper, self.numpy_helper = onnx, onnx.helper, onnx.numpy_helper
        self.nodes: list = []
        self.inits: dict = {}
        self.taken: set = set()

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def const(self, base: str, array) -> str:
        name = self.fresh(base)
        self.inits[name] = self.numpy_helper.from_array(np.asarray(array), name)
        return name

    def node(self, op: str, inputs: list, outputs: list, name: str, **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.fresh(name), **attrs))

    def model(self, graph, inputs, outputs, doc: str):
        h = self.helper
        g = h.make_graph(self.nodes, graph.name, inputs, outputs, initializer=list(self.inits.values()))
        m = h.make_model(g, opset_imports=[h.make_opsetid("", opset_for(graph))], producer_name="refquant",
                         producer_version=__version__, doc_string=doc)
        m.ir_version = IR_VERSION
        return m


def _elem(onnx, dtype) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _graph_inputs(onnx, graph) -> list:
    return [onnx.helper.make_tensor_value_info(t.name, _elem(onnx, t.dtype), list(t.shape)) for t in graph.inputs]


def _attributes(node) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in node.attributes.items()}


def export_float(graph) -> ExportedModel:
    """The float graph as an ONNX model (its nodes, names, attributes and initializers as they are)."""
    onnx = require_onnx()
    e = _Emitter(onnx)
    e.taken |= set(graph.input_names()) | set(graph.initializers) | {t for n in graph.nodes for t in n.outputs}
    for name, a in graph.initializers.items():
        e.inits[name] = onnx.numpy_helper.from_array(np.asarray(a), name)
    for n in graph.nodes:
        e.nodes.append(onnx.helper.make_node(n.op_type, list(n.inputs), list(n.outputs), name=n.name,
                                             **_attributes(n)))
    shapes = validate_graph(graph)
    outputs = [_value_info(onnx, t, np.float32, shapes[t]) for t in graph.outputs]
    doc = f"refquant {__version__} float export of {graph.name}"
    return ExportedModel(e.model(graph, _graph_inputs(onnx, graph), outputs, doc), "float")


# ------------------------------------------------------------------------ what can be exported

def _offline(strategy, where: str) -> None:
    timing = getattr(strategy, "timing", None)
    if timing != "offline":
        when = {"after": "after the layer, from each input's own accumulators",
                "before": "before the layer, from each input's statistics"}.get(timing, f"at run time ({timing})")
        raise ExportError(f"{where}: activation strategy {strategy.name!r} (timing {timing!r}) chooses its "
                          f"qparams {when}; an ONNX model has constant qparams, so it cannot be exported "
                          f"(use an offline strategy such as static-minmax)")


def _check_activation(qp: QParams | None, where: str) -> QParams:
    if qp is None:
        raise ExportError(f"{where}: no calibrated qparams (quantize the model with calibration data)")
    if not qp.per_tensor:
        raise ExportError(f"{where}: per-channel activation qparams are requantized onto one grid per "
                          f"input at run time; ONNX QOperator layers take a per-tensor input")
    if qp.fmt.storage_dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise ExportError(f"{where}: activation format {qp.fmt} is not 8-bit; ONNX QLinear operators take int8/uint8")
    return qp


def static_tensor_qparams(qm) -> dict:
    """The qparams of every quantized tensor (graph inputs and step outputs), known offline.

    Raises :class:`ExportError` naming the layer when a tensor's qparams are decided per input,
    are per channel, or are not 8-bit, when the model's requant mode is not ``float32``, or when a
    layer's weights execute in float.
    """
    if qm.requant != "float32":
        raise ExportError(f"model quantized with requant={qm.requant!r}: ONNX QLinear operators requantize "
                          f"as onnxruntime does, which is refquant's 'float32' mode; quantize with "
                          f"requant='float32' to export")
    qps: dict = {}
    floats = _float_tensors(qm)
    for t in qm.graph.inputs:
        if t.name in floats:
            continue
        strategy, _ = qm.tensor_specs[t.name]
        _offline(strategy, f"graph input {t.name!r}")
        qps[t.name] = _check_activation(qm.tensor_qparams.get(t.name), f"graph input {t.name!r}")
    for step in qm.steps:
        node, where = step.node, f"layer {step.name!r} ({step.node.op_type})"
        if step.quantizable:
            layer = qm.layers[step.name]
            if step.output not in floats:
                _offline(layer.act_strategy, where)
            w = layer.weight
            if w.execution != "integer":
                raise ExportError(f"{where}: weight strategy {layer.weight_strategy.name!r} executes the layer "
                                  f"in float (a {w.representation} grid the integer operators cannot hold)")
            wqp = w.qparams
            if wqp.block_size or wqp.axis not in (None, 0):
                raise ExportError(f"{where}: weight qparams must be per tensor or per output channel")
            if wqp.fmt.storage_dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
                raise ExportError(f"{where}: weight format {wqp.fmt} is not 8-bit")
            x = node.inputs[0]
            if x not in qps:
                raise ExportError(f"{where}: input {x!r} is not a quantized tensor")
            if step.output not in floats:
                qps[step.output] = _check_activation(layer.observed, where)
        elif _rule(qm, node, qps).keeps_qparams:
            qps[step.output] = qps[node.inputs[0]]
        elif step.output in floats:
            continue
        else:
            strategy, _ = qm.tensor_specs[step.output]
            _offline(strategy, where)
            qps[step.output] = _check_activation(qm.tensor_qparams.get(step.output), where)
    return qps


def _float_tensors(qm) -> set:
    """Tensors that stay float32 in the export: integer graph inputs (token ids) and the float
    islands (:func:`refquant.executor.quantized.float_island_tensors`)."""
    return set(getattr(qm, "float_tensors", ())) | {t.name for t in qm.graph.inputs if t.dtype != "float32"}


def _rule(qm, node, qps):
    """The node's entry in the integer-operator table, as the executor picks it: operands are the
    qparams of quantized tensors, the values of initializers, ``None`` for absent inputs."""
    inits = qm.graph.initializers
    operands = [None if not t else qps[t] if t in qps else inits[t] if t in inits else t for t in node.inputs]
    return rule_for(node.op_type, operands)


# ------------------------------------------------------------------------------------ QOperator

class _QGraph:
    """Shared state of a quantized export: emitter, qparams, integer and float tensor names."""

    def __init__(self, onnx, qm, qps):
        self.onnx, self.qm, self.qps = onnx, qm, qps
        self.e = _Emitter(onnx)
        g = qm.graph
        self.e.taken |= set(g.input_names()) | set(g.outputs)
        self.int_name: dict = {}  # refquant tensor → ONNX integer tensor
        self.dq_name: dict = {}  # refquant tensor → ONNX float (dequantized) tensor
        self.pending: list = []  # Clip nodes to emit once their input's producer is emitted
        self._shapes = None  # tensor → shape, computed when an operator asks for a rank
        self.floats = _float_tensors(qm)  # tensors computed and kept in float (or int64 inputs)
        self.shadow: dict = {}  # quantized tensor → the float32 tensor it was quantized from
        for t in g.inputs:
            if t.name in self.floats:
                self.dq_name[t.name] = t.name

    # ---- the graph protocol of the integer-operator table (refquant.executor.integer_ops) ----
    def const(self, base: str, array) -> str:
        return self.e.const(base, array)

    def node(self, op: str, inputs: list, outputs: list, name: str, **attrs) -> None:
        self.e.node(op, inputs, outputs, name, **attrs)

    def fresh(self, base: str) -> str:
        return self.e.fresh(base)

    def integer_input(self, tensor: str) -> str:
        return self.int_name[tensor]

    def integer_output(self, tensor: str) -> str:
        return self.integer_tensor(tensor)

    def qparams(self, tensor: str) -> QParams:
        return self.qps[tensor]

    def initializer(self, tensor: str) -> np.ndarray:
        return np.asarray(self.qm.graph.initializers[tensor])

    def rank(self, tensor: str) -> int:
        if self._shapes is None:
            self._shapes = validate_graph(self.qm.graph)
        return len(self._shapes[tensor])

    def attributes(self, node) -> dict:
        return _attributes(node)

    def quantize_output(self, y_float: str, tensor: str, name: str) -> str:
        return self.quantize_into(y_float, self.qps.get(tensor), tensor, name)

    # ---- shared helpers ------------------------------------------------------------------------
    def scale(self, base, qp: QParams) -> str:
        return self.e.const(f"{base}.scale", np.asarray(qp.scale, np.float32))

    def zero_point(self, base, qp: QParams) -> str:
        return self.e.const(f"{base}.zero_point", np.asarray(qp.zero_point).astype(qp.fmt.storage_dtype))

    def produce(self, tensor: str, lo: int, hi: int, dtype, name: str) -> str:
        """The name a node should write ``tensor``'s integers to: the integer tensor itself, or,
        when ``[lo, hi]`` is narrower than ``dtype``'s range, a temporary that a ``Clip`` then
        narrows into it."""
        out = self.integer_tensor(tensor)
        info = np.iinfo(dtype)
        if lo <= info.min and hi >= info.max:
            return out
        pre = self.e.fresh(f"{tensor}_unclipped")
        self.pending.append((pre, out, lo, hi, dtype, name))
        return pre

    def flush(self) -> None:
        """Emit the Clip nodes :meth:`produce` promised, after the nodes that feed them."""
        for pre, out, lo, hi, dtype, name in self.pending:
            self.e.node("Clip", [pre, self.e.const(f"{name}.clip_min", np.asarray(lo, dtype)),
                                 self.e.const(f"{name}.clip_max", np.asarray(hi, dtype))], [out], name=f"{name}.clip")
        self.pending.clear()

    def quantize_into(self, y_float: str, qp: QParams | None, tensor: str, name: str) -> str:
        """``QuantizeLinear(y, s, z)`` (+ Clip to a narrow format) as the integer tensor of ``tensor``;
        for a float-island tensor nothing: ``y`` is the tensor."""
        if tensor in self.floats and tensor not in self.qps:
            self.dq_name[tensor] = y_float
            return y_float
        if getattr(self.qm, "float_islands", False) and y_float != tensor:
            self.shadow[tensor] = y_float  # float operators keep reading the unquantized value
        out = self.produce(tensor, qp.fmt.qmin, qp.fmt.qmax, qp.fmt.storage_dtype, name)
        self.e.node("QuantizeLinear", [y_float, self.scale(name, qp), self.zero_point(name, qp)], [out],
                    name=f"{name}.quantize")
        self.flush()
        return self.int_name[tensor]

    def integer_tensor(self, tensor: str) -> str:
        if tensor not in self.int_name:
            self.int_name[tensor] = self.e.fresh(f"{tensor}_q")
        return self.int_name[tensor]

    def dequantized(self, tensor: str) -> str:
        if tensor not in self.dq_name:
            qp = self.qps[tensor]
            out = self.e.fresh(f"{tensor}_dq")
            self.e.node("DequantizeLinear", [self.int_name[tensor], self.scale(tensor, qp),
                                             self.zero_point(tensor, qp)], [out], name=f"{tensor}.dequantize")
            self.dq_name[tensor] = out
        return self.dq_name[tensor]

    def float_input(self, tensor: str) -> str:
        """A float node's input: dequantized when quantized, else the float initializer / ""."""
        if tensor == "":
            return ""
        if tensor in self.shadow:
            return self.shadow[tensor]
        if tensor in self.qps or tensor in self.dq_name:
            return self.dequantized(tensor)
        return self.e.const(tensor, np.asarray(self.qm.graph.initializers[tensor]))


def _layer_tensors(qm, step, qps):
    layer = qm.layers[step.name]
    x_qp, y_qp, w = qps[step.node.inputs[0]], qps.get(step.output), layer.weight
    bias = quantize_bias(layer.bias, x_qp.scale, w.qparams.scale)
    rq = None if y_qp is None else make_requantizer(x_qp.scale, w.qparams.scale, y_qp.scale, y_qp.zero_point,
                                                     y_qp.fmt, mode="float32", activation=step.fused_activation)
    return layer, x_qp, y_qp, w, bias, rq


def _emit_qlinear(q: _QGraph, step) -> None:
    """QLinearConv / QLinearMatMul for a Conv, Gemm or MatMul step (+ Clip for a fused clamp)."""
    e, node, name = q.e, step.node, step.name
    layer, x_qp, y_qp, w, bias, rq = _layer_tensors(q.qm, step, q.qps)
    wqp = w.qparams
    x = q.int_name[node.inputs[0]]
    sx, zx = q.scale(f"{name}.x", x_qp), q.zero_point(f"{name}.x", x_qp)
    sw = e.const(f"{name}.w.scale", np.asarray(wqp.scale, np.float32))
    zw = e.const(f"{name}.w.zero_point", np.asarray(wqp.zero_point).astype(wqp.fmt.storage_dtype))
    sy, zy = q.scale(f"{name}.y", y_qp), q.zero_point(f"{name}.y", y_qp)
    k = int(np.prod(w.values.shape[1:]))
    lo, hi = np.unique(rq.lo), np.unique(rq.hi)  # one value each: the output zero point is per tensor
    pre = q.produce(step.output, int(lo[0]), int(hi[0]), y_qp.fmt.storage_dtype, name)
    if node.op_type == "Conv":
        ins = [x, sx, zx, e.const(f"{name}.W_quantized", w.values), sw, zw, sy, zy]
        if bias is not None:
            ins.append(e.const(f"{name}.B_quantized", bias))
        e.node("QLinearConv", ins, [pre], name=name, **_attributes(node))
    elif node.op_type == "Gemm":
        x4 = e.fresh(f"{name}.input_nchw")
        e.node("Reshape", [x, e.const(f"{name}.shape_nk11", np.array([0, k, 1, 1], np.int64))], [x4],
               name=f"{name}.to_nchw")
        ins = [x4, sx, zx, e.const(f"{name}.W_quantized", w.values.reshape(w.values.shape[0], k, 1, 1)),
               sw, zw, sy, zy]
        if bias is not None:
            ins.append(e.const(f"{name}.B_quantized", bias))
        y4 = e.fresh(f"{name}.output_nchw")
        e.node("QLinearConv", ins, [y4], name=name, kernel_shape=[1, 1])
        e.node("Flatten", [y4], [pre], name=f"{name}.to_nc", axis=1)
    else:  # MatMul
        x2 = x
        if q.rank(node.inputs[0]) <= 2:
            x2 = e.fresh(f"{name}.input_nk")
            e.node("Reshape", [x, e.const(f"{name}.shape_nk", np.array([0, k], np.int64))], [x2],
                   name=f"{name}.to_nk")
        b = e.const(f"{name}.B_quantized", np.ascontiguousarray(w.values.T))
        e.node("QLinearMatMul", [x2, sx, zx, b, sw, zw, sy, zy], [pre], name=name)
    q.flush()


def _emit_integer_to_float(q: _QGraph, step) -> None:
    """A MatMul layer whose output stays float: ``MatMulInteger`` → ``Cast`` → ``Mul(s_x · s_w)``
    (the executor's ``float32(acc) · float32(s_x · s_w[c])``)."""
    e, node, name = q.e, step.node, step.name
    if node.op_type != "MatMul" or step.fused_activation is not None:
        raise ExportError(f"layer {name!r} ({node.op_type}): only a MatMul layer can have a float output here")
    layer = q.qm.layers[name]
    x_qp, w = q.qps[node.inputs[0]], layer.weight
    wqp = w.qparams
    acc = e.fresh(f"{name}.accumulators")
    zw = np.broadcast_to(np.asarray(wqp.zero_point), (w.values.shape[0],)) if not wqp.per_tensor else np.asarray(wqp.zero_point)
    e.node("MatMulInteger", [q.int_name[node.inputs[0]], e.const(f"{name}.B_quantized", np.ascontiguousarray(w.values.T)),
                             q.zero_point(f"{name}.x", x_qp),
                             e.const(f"{name}.w.zero_point", np.asarray(zw).astype(wqp.fmt.storage_dtype))],
           [acc], name=name)
    accf = e.fresh(f"{name}.accumulators_float")
    e.node("Cast", [acc], [accf], name=f"{name}.cast", to=1)
    scale = (np.float32(x_qp.scale) * np.asarray(wqp.scale, np.float32)).astype(np.float32)
    y = e.fresh(f"{step.output}_float")
    e.node("Mul", [accf, e.const(f"{name}.scale", scale)], [y], name=f"{name}.scale")
    q.dq_name[step.output] = y


def _value_info(onnx, name, dtype, shape):
    return onnx.helper.make_tensor_value_info(name, _elem(onnx, dtype), list(shape))


def _finish(q: _QGraph, form: str, layer_outputs: bool, doc: str) -> ExportedModel:
    onnx, qm, e = q.onnx, q.qm, q.e
    shapes = validate_graph(qm.graph)
    outputs = []
    for t in qm.graph.outputs:
        if t not in q.qps:  # computed in float
            e.node("Identity", [q.dq_name[t]], [t], name=f"{t}.output")
            outputs.append(_value_info(onnx, t, np.float32, shapes[t]))
            continue
        qp = q.qps[t]
        e.node("DequantizeLinear", [q.int_name[t], q.scale(t, qp), q.zero_point(t, qp)], [t], name=f"{t}.output")
        outputs.append(_value_info(onnx, t, np.float32, shapes[t]))
    names = {t.name: t.name for t in qm.graph.inputs} | {s.output: s.name for s in qm.steps}
    layer_map = {names[t]: q.int_name[t] for t in q.int_name}
    types = {names[t]: q.qps[t].fmt.storage_dtype.name for t in q.int_name}
    if layer_outputs:
        outputs += [_value_info(onnx, q.int_name[t], q.qps[t].fmt.storage_dtype, shapes[t]) for t in q.int_name]
    return ExportedModel(e.model(qm.graph, _graph_inputs(onnx, qm.graph), outputs, doc), form, layer_map, types)


def export_qoperator(qm, *, layer_outputs: bool = False) -> ExportedModel:
    """``qm`` (a :class:`~refquant.executor.QuantizedModel`) in ONNX QOperator form (module doc).

    ``layer_outputs=True`` also makes every integer tensor (the quantized graph input and each
    step's output) a graph output, so a backend's per-layer results can be verified.
    Raises :class:`ExportError` when a layer cannot be expressed.
    """
    onnx = require_onnx()
    qps = static_tensor_qparams(qm)
    q = _QGraph(onnx, qm, qps)
    for t in qm.graph.inputs:
        if t.name in qps:
            q.quantize_into(t.name, qps[t.name], t.name, t.name)
    for step in qm.steps:
        if step.quantizable and step.output in q.floats:
            _emit_integer_to_float(q, step)
        elif step.quantizable:
            _emit_qlinear(q, step)
        else:
            _rule(qm, step.node, qps).emit(q, step.node)
    doc = (f"refquant {__version__} QOperator export of {qm.graph.name}; plan: {qm.plan}; "
           f"requant float32 (onnxruntime's)")
    return _finish(q, "qoperator", layer_outputs, doc)


# ------------------------------------------------------------------------------------------ QDQ

def _qdq_weight(q: _QGraph, step, w, bias_q, x_qp):
    """``DequantizeLinear`` of the integer weight (in the float node's layout) and of the int32 bias."""
    e, node, name = q.e, step.node, step.name
    wqp = w.qparams
    values, axis = w.values, 0
    if node.op_type == "MatMul" or (node.op_type == "Gemm" and not node.attributes.get("transB", 0)):
        values, axis = np.ascontiguousarray(w.values.T), 1
    per_channel = not wqp.per_tensor
    attrs = {"axis": axis} if per_channel else {}
    w_f = e.fresh(f"{name}.W_dequantized")
    e.node("DequantizeLinear", [e.const(f"{name}.W_quantized", values),
                                e.const(f"{name}.w.scale", np.asarray(wqp.scale, np.float32)),
                                e.const(f"{name}.w.zero_point", np.asarray(wqp.zero_point).astype(wqp.fmt.storage_dtype))],
           [w_f], name=f"{name}.weight", **attrs)
    if bias_q is None:
        return w_f, ""
    b_scale = (np.float32(x_qp.scale) * np.asarray(wqp.scale, np.float32)).astype(np.float32)
    b_f = e.fresh(f"{name}.B_dequantized")
    e.node("DequantizeLinear", [e.const(f"{name}.B_quantized", bias_q), e.const(f"{name}.b.scale", b_scale),
                                e.const(f"{name}.b.zero_point", np.zeros(b_scale.shape, np.int32))],
           [b_f], name=f"{name}.bias", **({"axis": 0} if per_channel else {}))
    return w_f, b_f


def export_qdq(qm, *, layer_outputs: bool = False) -> ExportedModel:
    """``qm`` in ONNX QDQ form: float operators between ``QuantizeLinear → DequantizeLinear`` pairs.

    Every tensor the executor quantizes is quantized with the same qparams; weights and the
    int32 biases are initializers behind ``DequantizeLinear``. Same restrictions as
    :func:`export_qoperator`.
    """
    onnx = require_onnx()
    qps = static_tensor_qparams(qm)
    q = _QGraph(onnx, qm, qps)
    e = q.e
    for t in qm.graph.inputs:
        if t.name in qps:
            q.quantize_into(t.name, qps[t.name], t.name, t.name)
    for step in qm.steps:
        node, name = step.node, step.name
        if step.quantizable:
            layer, x_qp, y_qp, w, bias, _ = _layer_tensors(qm, step, qps)
            w_f, b_f = _qdq_weight(q, step, w, bias, x_qp)
            ins = [q.dequantized(node.inputs[0]), w_f] + ([b_f] if b_f else [])
            y = e.fresh(f"{node.outputs[0]}_float")
            e.node(node.op_type, ins, [y], name=name, **_attributes(node))
            if step.activation is not None:
                act = step.activation
                ins = [y] + [e.const(t, np.asarray(qm.graph.initializers[t])) if t else "" for t in act.inputs[1:]]
                y2 = e.fresh(f"{act.outputs[0]}_float")
                e.node(act.op_type, ins, [y2], name=act.name, **_attributes(act))
                y = y2
        else:
            if _rule(qm, node, qps).kernel == "float":  # a float operator: float-island values as they are
                ins = [q.float_input(t) for t in node.inputs]
            else:  # an integer rule reads the quantized tensors
                ins = [q.dequantized(t) if t in qps else q.float_input(t) for t in node.inputs]
            y = e.fresh(f"{step.output}_float")
            e.node(node.op_type, ins, [y], name=name, **_attributes(node))
        q.quantize_into(y, qps.get(step.output), step.output, name)  # a float-island tensor: y itself
    doc = f"refquant {__version__} QDQ export of {qm.graph.name}; plan: {qm.plan}"
    return _finish(q, "qdq", layer_outputs, doc)
