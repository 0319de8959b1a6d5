"""Import float ONNX models into refquant's graph IR.

Every node must be one of the operators refquant runs (``refquant.graph.SUPPORTED_OPS``:
Conv, Gemm, MatMul, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add, Flatten,
Reshape, Softmax, BatchNormalization), with ONNX semantics; anything else is refused with
one error listing every unsupported operator and the nodes that use it. Three kinds of
node are translated rather than refused, because exporters emit them freely:

* ``Constant`` becomes an initializer;
* ``Identity`` and ``Dropout`` (inference: the identity) are removed, their output renamed
  to their input;
* attributes older opsets used for what are inputs now (``Clip`` ``min``/``max`` before
  opset 11, ``Reshape`` ``shape`` before opset 5, ``Unsqueeze``/``Squeeze``/``ReduceSum``
  ``axes`` before opset 13) become initializers, ``ReduceMean``'s constant ``axes`` input
  (opset 18) becomes opset 13's attribute, and attributes that
  only ever had one value in inference (``BatchNormalization`` ``spatial=1``/``is_test``,
  ``MaxPool`` ``storage_order=0``) are dropped.

``Softmax`` before opset 13 flattened its input to 2-D around ``axis`` (default 1); it is
imported only when that is the same as opset 13's rule (a 2-D input), else refused.

Constant subgraphs are folded (:mod:`refquant.onnx_io.constfold`): a node of
:data:`~refquant.onnx_io.constfold.FOLDABLE_OPS` whose inputs are all constants — or a
``Shape`` of a tensor whose shape is known at import — is evaluated in NumPy and its output
becomes an initializer.  ``input_shapes`` pins the dimensions the file leaves dynamic (a
convolutional network needs static heights and widths), so that the shape subgraphs that
depend on them fold; a symbolic batch ``N`` may stay.

The imported graph is validated (shapes included) and, by default, every BatchNormalization
that follows a Conv or Gemm is folded into it (:func:`refquant.graph.fold_batchnorm`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..graph import SUPPORTED_OPS, Graph, Node, TensorInfo, fold_batchnorm, validate_graph
from ..graph.schema import check_node_signature
from ..graph.shapes import infer_node_shape
from ..graph.validate import INITIALIZER_DTYPES
from .constfold import FOLDABLE_OPS, fold_node, has_marker, reshape_target_with_markers
from .runtime import require_onnx

__all__ = ["import_onnx", "TRANSLATED_OPS"]

TRANSLATED_OPS = ("Constant", "Identity", "Dropout")
#: The largest ``.onnx`` file read (bytes): protobuf's own 2 GiB message limit.
MAX_ONNX_BYTES = 2**31 - 1
_DROPPED_ATTRIBUTES = {
    "BatchNormalization": {"spatial": 1, "is_test": None, "consumed_inputs": None},
    "MaxPool": {"storage_order": 0},
}


def _load(onnx, model):
    if hasattr(model, "graph"):
        return model, "<model>"
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes), not an ONNX model")
    if size > MAX_ONNX_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the limit of {MAX_ONNX_BYTES} for an ONNX model "
                         f"(protobuf's own limit for one message)")
    try:
        m = onnx.load_model(str(path))
    except Exception as exc:  # protobuf decode errors have no common base class
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from None
    # protobuf parses many byte strings (an empty one, a text file) into a message with
    # default fields: a real model has an IR version and a graph with at least one output
    if m.ir_version <= 0 or not m.HasField("graph") or not m.graph.output:
        raise ValueError(f"{path}: not an ONNX model (ir_version {m.ir_version}, "
                         f"{'a graph' if m.HasField('graph') else 'no graph'} with {len(m.graph.output)} outputs)")
    return m, str(path)


def _opset(m) -> int:
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _array(onnx, tensor, where: str) -> np.ndarray:
    a = onnx.numpy_helper.to_array(tensor)
    if a.dtype.name == "float64":
        a = a.astype(np.float32)
    elif a.dtype.kind in "iu" and a.dtype.name != "int64":
        a = a.astype(np.int64)
    if a.dtype.name not in INITIALIZER_DTYPES:
        raise ValueError(f"{where}: tensor {tensor.name!r} has dtype {a.dtype.name}; refquant weights are "
                         f"{' or '.join(INITIALIZER_DTYPES)}")
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)


def _attr_value(onnx, attr):
    v = onnx.helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _unsupported_error(where: str, unsupported: dict) -> ValueError:
    parts = [f"{op} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {', '.join(nodes[:5])}"
             f"{', …' if len(nodes) > 5 else ''})" for op, nodes in sorted(unsupported.items())]
    return ValueError(f"{where}: unsupported operator(s) {'; '.join(parts)}. refquant imports "
                      f"{', '.join(SUPPORTED_OPS)} (and translates {', '.join(TRANSLATED_OPS)})")


def _pin(where: str, name: str, dims: list, pinned) -> tuple:
    pinned = tuple(pinned)
    if len(pinned) != len(dims):
        raise ValueError(f"{where}: input_shapes gives {name!r} {len(pinned)} dimensions; the model's input has "
                         f"{len(dims)} ({dims})")
    for i, (d, p) in enumerate(zip(dims, pinned)):
        if isinstance(d, int) and d > 0 and d != p:
            raise ValueError(f"{where}: input_shapes gives {name!r} dimension {i} = {p!r}; the model fixes it at {d}")
        if not (isinstance(p, str) or (isinstance(p, int) and p > 0)):
            raise ValueError(f"{where}: input_shapes[{name!r}][{i}] must be a positive int or a symbol, got {p!r}")
    return pinned


def _foldable(n, ins: list, initializers: dict, shapes: dict) -> bool:
    if n.domain not in ("", "ai.onnx") or n.op_type not in FOLDABLE_OPS:
        return False
    if n.op_type == "Shape":
        return ins[0] in shapes or ins[0] in initializers
    return all(t == "" or t in initializers for t in ins)


def import_onnx(model, *, fold_bn: bool = True, name: str | None = None,
                input_shapes: dict | None = None) -> Graph:
    """A refquant :class:`~refquant.graph.Graph` from an ONNX model (a ModelProto or a path).

    ``input_shapes`` (input name → dims, ints or symbols) replaces the dynamic dimensions of
    graph inputs; a dimension the file fixes must be given unchanged.

    Raises ``ValueError`` listing every unsupported operator, or naming the node, tensor or
    attribute that refquant cannot represent (non-float32 inputs, initializers of other
    dtypes, nodes with more than one used output, …).
    """
    onnx = require_onnx()
    m, where = _load(onnx, model)
    opset = _opset(m)
    g = m.graph
    initializers = {t.name: _array(onnx, t, where) for t in g.initializer}
    unsupported: dict = {}
    consts = set(initializers) | {n.output[0] for n in g.node if n.op_type == "Constant"}
    for i, n in enumerate(g.node):
        if n.domain not in ("", "ai.onnx"):
            unsupported.setdefault(f"{n.domain}.{n.op_type}", []).append(n.name or f"#{i}")
        elif n.op_type in FOLDABLE_OPS and (n.op_type == "Shape" or all(t == "" or t in consts for t in n.input)):
            consts.update(n.output)  # folded at import (a Shape whose input shape stays unknown is named below)
        elif n.op_type not in SUPPORTED_OPS and n.op_type not in TRANSLATED_OPS:
            unsupported.setdefault(n.op_type, []).append(n.name or f"#{i}")
    if unsupported:
        raise _unsupported_error(where, unsupported)
    input_shapes = dict(input_shapes or {})
    unknown = sorted(set(input_shapes) - {vi.name for vi in g.input})
    if unknown:
        raise ValueError(f"{where}: input_shapes names {unknown}, which are not inputs of the model "
                         f"({[vi.name for vi in g.input if vi.name not in initializers]})")
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    inputs = []
    for vi in g.input:
        if vi.name in initializers:
            continue  # old exporters list initializers among the inputs
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise ValueError(f"{where}: graph input {vi.name!r} has type "
                             f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; refquant models take float32 inputs")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in tt.shape.dim]
        if vi.name in input_shapes:
            dims = _pin(where, vi.name, dims, input_shapes[vi.name])
        inputs.append(TensorInfo(vi.name, tuple(dims)))
    # shapes known so far (for Shape nodes to fold): only when the model has Shape nodes
    track = any(n.op_type == "Shape" for n in g.node)
    shapes: dict = {t.name: tuple(t.shape) for t in inputs} if track else {}
    symbols: dict = {}

    def shape_of(t):
        return tuple(initializers[t].shape) if t in initializers else shapes.get(t)

    rename: dict = {}
    nodes: list = []
    names: set = set()
    for i, n in enumerate(g.node):
        ins = [rename.get(t, t) for t in n.input]
        label = n.name or f"{n.op_type.lower()}_{i}"
        nwhere = f"{where}: node {label!r} ({n.op_type})"
        attrs = {a.name: _attr_value(onnx, a) for a in n.attribute}
        extra = [o for o in n.output[1:] if o and o in used]
        if extra:
            raise ValueError(f"{nwhere}: output(s) {extra} are used, but refquant nodes have one output")
        out = n.output[0]
        if n.op_type == "Constant":
            if "value" not in attrs:
                raise ValueError(f"{nwhere}: only Constant nodes with a 'value' tensor are supported")
            initializers[out] = _array(onnx, next(a.t for a in n.attribute if a.name == "value"), nwhere)
            continue
        if _foldable(n, ins, initializers, shapes) and not (n.op_type == "Identity" and ins[0] not in initializers):
            values = [initializers.get(t) if t else None for t in ins]
            try:
                initializers[out] = fold_node(onnx, n.op_type, values, attrs, symbols, nwhere,
                                              shape_of(ins[0]) if n.op_type == "Shape" else None)
            except ValueError as exc:
                raise ValueError(str(exc) if str(exc).startswith(nwhere) else f"{nwhere}: {exc}") from None
            continue
        if n.op_type == "Shape":
            raise ValueError(f"{nwhere}: the shape of {ins[0]!r} is not known at import, so this Shape cannot be "
                             f"folded (refquant runs no Shape node)")
        if n.op_type in ("Identity", "Dropout"):
            if n.op_type == "Dropout" and attrs.get("training_mode") or (len(ins) > 2 and ins[2]):
                raise ValueError(f"{nwhere}: Dropout in training mode is not inference")
            rename[out] = ins[0]
            continue
        for attr, only in _DROPPED_ATTRIBUTES.get(n.op_type, {}).items():
            if attr in attrs:
                if only is not None and attrs[attr] != only:
                    raise ValueError(f"{nwhere}: attribute {attr}={attrs[attr]!r} is not supported")
                del attrs[attr]
        if n.op_type == "Clip" and ("min" in attrs or "max" in attrs):  # opset < 11
            ins = [ins[0]]
            for bound in ("min", "max"):
                if bound in attrs:
                    t = f"{label}.{bound}"
                    initializers[t] = np.asarray(attrs.pop(bound), np.float32).reshape(())
                    ins.append(t)
                else:
                    ins.append("")
            while ins[-1] == "":
                ins.pop()
        if n.op_type == "Reshape" and "shape" in attrs:  # opset < 5
            t = f"{label}.shape"
            initializers[t] = np.asarray(attrs.pop("shape"), np.int64)
            ins = [ins[0], t]
        if n.op_type == "Softmax" and opset < 13:
            attrs.setdefault("axis", 1)
        if n.op_type in ("Unsqueeze", "Squeeze", "ReduceSum") and "axes" in attrs:  # opset < 13
            t = f"{label}.axes"
            initializers[t] = np.asarray(attrs.pop("axes"), np.int64).reshape(-1)
            ins = [ins[0], t]
        if n.op_type == "ReduceMean" and len(ins) > 1:  # opset >= 18: axes is an input
            if ins[1] and ins[1] not in initializers:
                raise ValueError(f"{nwhere}: the 'axes' input must be a constant")
            if ins[1]:
                attrs["axes"] = [int(a) for a in initializers[ins[1]].reshape(-1)]
            if attrs.pop("noop_with_empty_axes", 0) and not attrs.get("axes"):
                raise ValueError(f"{nwhere}: noop_with_empty_axes=1 with empty axes is not supported")
            ins = ins[:1]
        if n.op_type == "Reshape" and len(ins) > 1 and ins[1] in initializers and has_marker(initializers[ins[1]]):
            t = f"{label}.shape"
            initializers[t] = reshape_target_with_markers(initializers[ins[1]], shape_of(ins[0]) or (), symbols, nwhere)
            ins = [ins[0], t]
        for t in ins:
            if t in initializers and has_marker(initializers[t]):
                raise ValueError(f"{nwhere}: input {t!r} holds a symbolic dimension ({', '.join(symbols)}) "
                                 f"folded at import; refquant can use it only as a Reshape target")
        if label in names:
            raise ValueError(f"{where}: two nodes are named {label!r}")
        names.add(label)
        node = Node(label, n.op_type, ins, [out], attrs)
        nodes.append(node)
        if track:
            check_node_signature(node)
            shapes[out] = infer_node_shape(node, [shape_of(t) if t else None for t in ins],
                                           [initializers.get(t) if t else None for t in ins])
    outputs = [rename.get(o.name, o.name) for o in g.output]
    graph = Graph(name or g.name or "onnx-model", inputs, outputs, nodes,
                  {k: v for k, v in initializers.items() if k in {t for n in nodes for t in n.inputs}})
    shapes = validate_graph(graph)
    if opset < 13:
        for node in graph.nodes:
            rank = len(shapes[node.inputs[0]]) if node.op_type == "Softmax" else 0
            if node.op_type == "Softmax" and rank != 2 and node.attributes["axis"] not in (-1, rank - 1):
                raise ValueError(f"{where}: node {node.name!r}: Softmax before opset 13 flattens its "
                                 f"{len(shapes[node.inputs[0]])}-D input to 2-D; refquant implements "
                                 f"opset 13's Softmax (re-export the model at opset >= 13)")
    return fold_batchnorm(graph) if fold_bn else graph
