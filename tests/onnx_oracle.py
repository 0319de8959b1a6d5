"""Independent oracles for the float operators: the onnx reference evaluator and onnxruntime.

``run_reference`` / ``run_onnxruntime`` run one ONNX node on NumPy arrays (every present
input is a graph input, so the oracle sees exactly our values); ``graph_to_onnx`` turns a
refquant Graph into an ONNX model (initializers as ONNX initializers) for whole-graph checks.
Tests that use them are marked ``requires_onnx`` and skip, with the reason, without the extras.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
except ImportError:  # pragma: no cover - CI installs the test extra
    onnx = None

requires_onnx = pytest.mark.skipif(onnx is None, reason="needs the 'onnx' and 'onnxruntime' test extras")

OPSET = 13
#: opset per operator where 13 lacks the semantics refquant implements
_OPSET_OF = {"BatchNormalization": 15}


def _elem(dtype) -> int:
    return {
        np.dtype(np.float32): TensorProto.FLOAT,
        np.dtype(np.float64): TensorProto.DOUBLE,
        np.dtype(np.int64): TensorProto.INT64,
    }[np.dtype(dtype)]


def _model(graph, opset: int):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def node_model(op_type: str, inputs, attributes: dict):
    """A one-node ONNX model and its feeds; ``None`` in ``inputs`` is an absent input."""
    names, infos, feeds = [], [], {}
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        feeds[name] = a
        infos.append(helper.make_tensor_value_info(name, _elem(a.dtype), list(a.shape)))
    while names and names[-1] == "":
        names.pop()
    out_dtype = next(a.dtype for a in inputs if a is not None)
    node = helper.make_node(op_type, names, ["y"], **attributes)
    graph = helper.make_graph([node], "g", infos, [helper.make_tensor_value_info("y", _elem(out_dtype), None)])
    return _model(graph, _OPSET_OF.get(op_type, OPSET)), feeds


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_reference(op_type: str, inputs, attributes: dict) -> np.ndarray:
    """One node through ``onnx.reference.ReferenceEvaluator`` (works in float64 too)."""
    model, feeds = node_model(op_type, inputs, attributes)
    return ReferenceEvaluator(model).run(None, feeds)[0]


def run_onnxruntime(op_type: str, inputs, attributes: dict) -> np.ndarray:
    """One node through onnxruntime's CPU provider, one thread, no graph optimizations."""
    model, feeds = node_model(op_type, inputs, attributes)
    return _session(model).run(None, feeds)[0]


def graph_to_onnx(graph):
    """A refquant Graph as an ONNX model (symbolic dims become dim_params)."""
    nodes = [helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **n.attributes) for n in graph.nodes]
    inputs = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in graph.inputs]
    outputs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in graph.outputs]
    inits = [numpy_helper.from_array(a, name) for name, a in graph.initializers.items()]
    opset = max([OPSET] + [_OPSET_OF.get(n.op_type, OPSET) for n in graph.nodes])
    return _model(helper.make_graph(nodes, graph.name, inputs, outputs, inits), opset)


def run_graph_onnxruntime(graph, feeds: dict) -> list[np.ndarray]:
    return _session(graph_to_onnx(graph)).run(None, feeds)


def run_graph_reference(graph, feeds: dict) -> list[np.ndarray]:
    return ReferenceEvaluator(graph_to_onnx(graph)).run(None, feeds)


def onnx_shape_inference_disagrees(graph) -> list[str]:
    """The nodes whose output shape ``onnx.shape_inference`` infers differently from refquant
    (concrete dimensions only).

    Measured (onnx 1.23.2, onnxruntime 1.32.0): for a ``ceil_mode`` pool whose last window would
    start past the input — MaxPool 1×1, stride 2, on a width of 4 — onnx's static inference
    counts it (width 3) while onnxruntime's kernel and the reference evaluator drop it (width 2),
    as refquant does. onnxruntime checks a graph against the inferred shapes when the session
    is built, so a node that depends on the count (a BatchNormalization after a Reshape) makes
    it refuse the model: such a graph tests the oracle, not refquant."""
    from onnx import shape_inference

    from refquant.graph import infer_shapes

    inferred = shape_inference.infer_shapes(graph_to_onnx(graph))
    theirs = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in inferred.graph.value_info}
    ours = infer_shapes(graph)
    differ = []
    for node in graph.nodes:
        t = node.outputs[0]
        if t in theirs and t in ours and len(theirs[t]) == len(ours[t]):
            if any(a is not None and isinstance(b, int) and a != b for a, b in zip(theirs[t], ours[t])):
                differ.append(node.name)
    return differ


# ------------------------------------------------- onnxruntime's u8·s8 products on this host

def ort_u8s8_exact() -> bool:
    """Measured once per session (:func:`refquant.onnx_io.integer_product_probe`): does the
    installed onnxruntime compute uint8 × int8 products exactly on this CPU in QLinearConv and
    QLinearMatMul (which multiplies as MatMulInteger)? False on x86-64 without AVX-VNNI, where
    MLAS saturates each pair sum to int16 (spec/numerics.md)."""
    from refquant.onnx_io import exact_integer_products

    return all(exact_integer_products("uint8", "int8", op) for op in ("QLinearConv", "QLinearMatMul"))


def u8s8_quirk() -> str:
    """The measured quirk, for skip reasons."""
    from refquant.onnx_io import u8s8_saturation_note

    return u8s8_saturation_note()


def has_u8s8_qlinear(model) -> bool:
    """Whether a QLinearConv/QLinearMatMul in ``model`` multiplies uint8 inputs by int8 weights
    (judged by the dtypes of its zero points: initializers or graph inputs)."""
    dtypes = {t.name: t.data_type for t in model.graph.initializer}
    dtypes.update({i.name: i.type.tensor_type.elem_type for i in model.graph.input})
    return any(n.op_type in ("QLinearConv", "QLinearMatMul")
               and dtypes.get(n.input[2]) == TensorProto.UINT8 and dtypes.get(n.input[5]) == TensorProto.INT8
               for n in model.graph.node)


def for_reference_evaluator(model):
    """``model`` with its default-domain opset raised to 21: onnx 1.23's reference evaluator
    implements QuantizeLinear/DequantizeLinear from opset 19 only. Between opset 13 and 21
    nothing changes for what refquant exports (8-bit integers, no ``block_size``; ``saturate``
    concerns float8 only)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < 21:
            op.version = 21
    return m


def saturating_u8s8_matmul(a, b, a_zero_point=None, b_zero_point=None) -> np.ndarray:
    """MatMulInteger as MLAS computes it on x86-64 without AVX-VNNI (``vpmaddubsw``): the raw
    products ``a[k]·b[k]`` summed in pairs ``(2i, 2i+1)`` of the natural K order (an odd K padded
    with a zero), each pair sum saturated to int16, the pair sums added in int32; then the zero
    points as corrections: ``- z_b·Σa - z_a·Σb + K·z_a·z_b`` (per column for a per-column ``z_b``)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    vector = a.ndim == 1
    a = a[None, :] if vector else a
    k = a.shape[-1]
    products = a[..., :, :, None] * b[..., None, :, :]  # [..., M, K, N]
    if k % 2:
        products = np.concatenate([products, np.zeros_like(products[..., :1, :])], axis=-2)
    pairs = np.clip(products[..., 0::2, :] + products[..., 1::2, :], -32768, 32767)
    acc = pairs.sum(axis=-2)
    za = 0 if a_zero_point is None else int(a_zero_point)
    zb = np.zeros(b.shape[-1], np.int64) if b_zero_point is None else np.asarray(b_zero_point, np.int64)
    acc = acc - zb * a.sum(axis=-1)[..., None] - za * b.sum(axis=-2)[..., None, :] + k * za * zb
    return acc[..., 0, :] if vector else acc


def _top_two_exceed_int16(products, axis) -> np.ndarray:
    top = np.sort(np.abs(products), axis=axis)
    return np.take(top, range(max(top.shape[axis] - 2, 0), top.shape[axis]), axis=axis).sum(axis=axis) > 32767


def matmul_pairs_may_saturate(a, b) -> np.ndarray:
    """Per output element of a MatMul: could some int16 pair sum of raw products saturate, in
    whatever order the kernel pairs them (the two largest ``|a·b|`` add up to more than 32767)?"""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    vector = a.ndim == 1
    a = a[None, :] if vector else a
    mask = _top_two_exceed_int16(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    return mask[..., 0, :] if vector else mask


def conv_pairs_may_saturate(x, w, x_zero_point, attrs) -> np.ndarray:
    """Per output element of a Conv: could some int16 pair sum of raw products saturate, in
    whatever order the kernel pairs them? True where the two largest ``|x·w|`` of the window
    (padding is ``x_zero_point``, as onnxruntime pads raw values) add up to more than 32767."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    nd = x.ndim - 2
    ks = w.shape[2:]
    strides = list(attrs.get("strides") or [1] * nd)
    dil = list(attrs.get("dilations") or [1] * nd)
    group = int(attrs.get("group", 1))
    span = [(ks[i] - 1) * dil[i] + 1 for i in range(nd)]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            n_in = x.shape[2 + i]
            total = max((-(-n_in // strides[i]) - 1) * strides[i] + span[i] - n_in, 0)
            begin = total // 2 if auto_pad == "SAME_UPPER" else (total + 1) // 2
            pads[i], pads[i + nd] = begin, total - begin
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(attrs.get("pads") or [0] * (2 * nd))
    zx = 0 if x_zero_point is None else int(x_zero_point)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)], constant_values=zx)
    out = [(xp.shape[2 + i] - span[i]) // strides[i] + 1 for i in range(nd)]
    cols = np.empty(x.shape[:2] + tuple(ks) + tuple(out), np.int64)
    for kidx in np.ndindex(*ks):
        window = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                       for i in range(nd))
        cols[(slice(None), slice(None)) + kidx] = xp[(slice(None), slice(None)) + window]
    n, c = x.shape[:2]
    kg = (c // group) * int(np.prod(ks))
    cols = cols.reshape(n, group, 1, kg, *out)
    wg = w.reshape(group, w.shape[0] // group, kg).reshape((1, group, w.shape[0] // group, kg) + (1,) * nd)
    return _top_two_exceed_int16(cols * wg, axis=3).reshape((n, w.shape[0]) + tuple(out))
