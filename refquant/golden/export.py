"""Writing a golden set: a quantized model run once on fixed inputs, every integer recorded.

``export_golden(qm, x, "out/")`` runs ``qm`` with ``keep=True`` and writes
``out/manifest.json`` plus one ``.npy`` file per tensor (``spec/golden-format.md``):

* the graph input (float32) and its quantization (layer kind ``input``);
* for every step, its integer output; for Conv/Gemm/MatMul also the integer weight
  (output channels first), the int32 bias the executor used, and — on request — the int32
  accumulators ``Σ (x - z_x)(w - z_w) + bias`` before requantization;
* the final float outputs (the dequantized graph outputs).

The manifest records what a backend needs to recompute each layer from the layer's inputs:
op, attributes, kernel kind, input/weight/output qparams, fused activation and the
requantizer's constants in every mode. With ``onnx=True`` the set also holds the ONNX
backend test-data layout of the model (``onnx/model.onnx`` in QOperator form, with every
layer's integer output as an extra graph output, and ``onnx/test_data_set_0/*.pb``).
Everything written is a deterministic function of the model, plan, inputs, requant mode and
refquant version: no time stamps, sorted JSON keys.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from .._version import __version__
from ..executor.integer_ops import QTensor, per_tensor
from ..executor.per_row import is_per_row
from ..executor.quantized import quantize_bias
from ..graph import OP_SCHEMAS
from ..graph.io import _jsonable
from ..kernels import reference
from ..numerics import make_requantizer, quantize
from .manifest import FORMAT, format_version_of
from .onnx_layout import add_model_layout
from .writer import GoldenWriter, write_golden_files

__all__ = ["export_golden", "graph_sha256", "requantization_constants", "safe_name"]


def safe_name(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def graph_sha256(graph) -> str:
    """SHA-256 of a graph's structure and weights, independent of file formatting.

    The hash covers the inputs (name, dtype, shape), outputs, every node (name, op, inputs,
    outputs, attributes with sorted keys) in list order, and every initializer's name, dtype,
    shape and SHA-256 of its C-order bytes.
    """
    doc = {
        "name": graph.name,
        "inputs": [[t.name, t.dtype, list(t.shape)] for t in graph.inputs],
        "outputs": list(graph.outputs),
        "nodes": [[n.name, n.op_type, list(n.inputs), list(n.outputs),
                   {k: _jsonable(v) for k, v in sorted(n.attributes.items())}] for n in graph.nodes],
        "initializers": {k: [a.dtype.name, list(a.shape), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()]
                         for k, a in sorted(graph.initializers.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def requantization_constants(x_qp, w_qp, y_qp, mode: str, activation) -> dict:
    """The requantizer of a layer as JSON: per output channel float32 multiplier, Q31 multiplier
    and shift, output zero point and the clamp ``[lo, hi]`` (``refquant.numerics.requant``); a
    value shared by every channel is written once, as a number."""
    rq = make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, mode=mode,
                          activation=activation)
    def compact(a):  # one value for all channels is written once
        values = np.asarray(a).tolist()
        return values[0] if len(set(values)) == 1 else values

    return {"mode": mode, "multiplier": compact(rq.multiplier.astype(np.float64)),
            "q_multiplier": compact(rq.q_multiplier), "shift": compact(rq.shift),
            "zero_point": compact(rq.zero_point), "lo": compact(rq.lo), "hi": compact(rq.hi)}


def _qp(qp):
    return None if qp is None else qp.to_dict()


#: the executor's record kinds of float-island steps → the golden kernel (the output kind says "float")
_KERNEL = {"unfused → float": "unfused", "integer → float": "integer", "float island": "float"}
#: constants with more elements than this are written to a file (format version 2), not into the JSON
MAX_INLINE_CONSTANT = 4096


def _operands(graph, node, produced, w=None, base: str = "") -> tuple[list, dict]:
    """A non-kernel node's operands in ONNX input order — ``{"layer": name}`` for a layer's
    output, ``{"constant": label}`` for an initializer (its values in ``constants[label]``,
    labelled by the ONNX input name; one of more than :data:`MAX_INLINE_CONSTANT` elements — an
    embedding table — in a file ``constants[label]["file"]`` instead), ``None`` for an absent
    optional input."""
    specs = OP_SCHEMAS[node.op_type].inputs if node.op_type in OP_SCHEMAS else ()
    operands, constants = [], {}
    for i, t in enumerate(node.inputs):
        if not t:
            operands.append(None)
        elif t in produced:
            operands.append({"layer": produced[t][0]})
        else:
            a = np.asarray(graph.initializers[t])
            label = specs[i].name if i < len(specs) else str(i)
            constants[label] = {"dtype": a.dtype.name, "shape": list(a.shape)}
            if w is not None and a.size > MAX_INLINE_CONSTANT:
                constants[label]["file"] = w.tensor(f"{base}.{safe_name(label)}.npy", a, "constant")
            else:
                constants[label]["values"] = a.reshape(-1).tolist()
            operands.append({"constant": label})
    return operands, constants


def export_golden(qm, inputs, directory, *, model_name: str | None = None, backend: str = "reference",
                  seed: int | None = None, input_description: str = "", accumulators: bool = False,
                  onnx: bool = False):
    """Run ``qm`` on ``inputs`` and write the golden set into ``directory``; return it loaded.

    ``inputs``: an array (the first graph input) or ``{name: array}``. ``seed`` and
    ``input_description`` are recorded as given (how the inputs were chosen). A directory
    holding an earlier golden set is rewritten; any other non-empty directory is refused.
    """
    graph = qm.graph
    float_tensors = getattr(qm, "float_tensors", frozenset())
    if onnx and (float_tensors or any(t.dtype != "float32" for t in graph.inputs)):
        raise ValueError(f"golden export: the ONNX test-data layout (--onnx) is written for models without float "
                         f"islands or integer inputs; model {graph.name!r} has them — export its QOperator form "
                         f"with refquant.onnx_io.export_qoperator instead")
    feeds = inputs if isinstance(inputs, dict) else {graph.inputs[0].name: inputs}
    given = {t.name for t in graph.inputs if t.dtype != "float32" or t.name in float_tensors}
    feeds = {k: (np.asarray(v) if k in given else np.asarray(v, np.float32)) for k, v in feeds.items()}
    for t in graph.inputs:
        if t.name in given and t.name in feeds and t.dtype != "float32" and feeds[t.name].dtype.kind not in "iu":
            raise ValueError(f"golden export: input {t.name!r} must hold integers (indices, {t.dtype}), "
                             f"got dtype {feeds[t.name].dtype}")
    result = qm.run(feeds, backend=backend, keep=True)
    w = GoldenWriter()
    layers: list = []
    produced: dict = {}  # refquant tensor → (layer name, QTensor, or the array of a float/index output)
    records = iter(result.records)

    for k, t in enumerate(graph.inputs):
        base = f"{k:02d}.{safe_name(t.name)}"
        strategy, _ = qm.tensor_specs[t.name]
        if t.name in given:  # token ids, a float-island input: given as they are (format version 2)
            x = np.ascontiguousarray(feeds[t.name])
            kind = "float" if x.dtype.kind == "f" else "index"
            layers.append({
                "index": k, "name": t.name, "op": "Input", "kernel": "input", "output_kind": kind, "inputs": [],
                "attributes": {}, "operands": None, "constants": {}, "fused_activation": None, "timing": None,
                "activation_strategy": None, "qparams": {"input": None, "weight": None, "output": None},
                "tensors": {"output": w.tensor(f"{base}.output.npy", x, "output")},
            })
            produced[t.name] = (t.name, x)
            continue
        rec = next(records)
        q = quantize(feeds[t.name], rec.output_qparams)
        layers.append({
            "index": k, "name": t.name, "op": "QuantizeLinear", "kernel": "input", "inputs": [],
            "attributes": {}, "operands": None, "constants": {}, "fused_activation": None, "timing": rec.timing,
            "activation_strategy": strategy.name,
            "qparams": {"input": None, "weight": None, "output": _qp(rec.output_qparams)},
            "tensors": {"input": w.tensor(f"{base}.input.npy", feeds[t.name], "input"),
                        "output": w.tensor(f"{base}.output.npy", q, "output")},
        })
        produced[t.name] = (t.name, QTensor(q, rec.output_qparams))

    n_in = len(graph.inputs)
    for j, step in enumerate(qm.steps):
        rec = next(records)
        node, index = step.node, n_in + j
        base = f"{index:02d}.{safe_name(step.name)}"
        sources = [t for t in node.inputs if t and t in produced]
        strategy, _ = qm.tensor_specs[step.output]
        to_float = step.output in float_tensors
        entry = {
            "index": index, "name": step.name, "op": node.op_type, "kernel": _KERNEL.get(rec.kernel, rec.kernel),
            "inputs": [produced[t][0] for t in sources],
            "attributes": {k: _jsonable(v) for k, v in sorted(node.attributes.items())},
            "operands": None, "constants": {},
            "fused_activation": step.fused_activation, "timing": rec.timing,
            "activation_strategy": None if to_float else strategy.name,
            "qparams": {"input": _qp(rec.input_qparams), "weight": _qp(rec.weight_qparams),
                        "output": _qp(rec.output_qparams)},
            "tensors": {},
        }
        if to_float:
            entry["output_kind"] = "float"
        tensors = entry["tensors"]
        if not step.quantizable:
            entry["operands"], entry["constants"] = _operands(graph, node, produced, w, base)
        if step.quantizable:
            layer = qm.layers[step.name]
            qw = layer.weight
            entry["weight_strategy"] = layer.weight_strategy.name
            entry["weight"] = {"representation": qw.representation, "execution": qw.execution,
                               "bits_per_weight": float(qw.bits_per_weight)}
            src_name, src = produced[node.inputs[0]]
            per_row = to_float and is_per_row(src.qp, src.q.shape) and node.op_type == "MatMul"
            if per_row and layer.bias is not None:
                raise ValueError(f"golden export: layer {step.name!r} reads per-token activations and has a bias; "
                                 f"its per-row int32 bias has no golden form (a transformer's bias is an Add)")
            x_t = src if per_row else per_tensor(src, node.inputs[0])
            if x_t is not src:
                tensors["input"] = w.tensor(f"{base}.input.npy", x_t.q, "input")
            if qw.execution == "integer":
                tensors["weight"] = w.tensor(f"{base}.weight.npy", qw.values, "weight", node.op_type)
                bias_q = quantize_bias(layer.bias, x_t.qp.scale, qw.qparams.scale)
                if bias_q is not None:
                    tensors["bias"] = w.tensor(f"{base}.bias.npy", bias_q, "bias")
                if not to_float:
                    entry["requantization"] = requantization_constants(
                        x_t.qp, qw.qparams, rec.output_qparams, qm.requant, step.fused_activation)
                if accumulators:
                    acc = rec.accumulators
                    if acc is None:
                        acc = _accumulators(node, x_t.q, qw.values, x_t.qp, qw.qparams, bias_q)
                    tensors["accumulators"] = w.tensor(f"{base}.accumulators.npy", acc, "accumulators")
            else:
                tensors["weight"] = w.tensor(f"{base}.weight.npy", qw.dequantize(), "weight", node.op_type)
                if layer.bias is not None:
                    tensors["bias"] = w.tensor(f"{base}.bias.npy", np.asarray(layer.bias, np.float32), "bias")
        if to_float:
            y = np.ascontiguousarray(rec.float_output, dtype=np.float32)
            tensors["output"] = w.tensor(f"{base}.output.npy", y, "output")
            produced[step.output] = (step.name, y)
        else:
            tensors["output"] = w.tensor(f"{base}.output.npy", np.ascontiguousarray(rec.q_output), "output")
            if rec.float_value is not None:  # what float consumers read instead of the dequantized integers
                tensors["float"] = w.tensor(f"{base}.float.npy", np.ascontiguousarray(rec.float_value, np.float32),
                                            "output")
            produced[step.output] = (step.name, QTensor(rec.q_output, rec.output_qparams))
        layers.append(entry)

    outputs = []
    for name in graph.outputs:
        y = np.asarray(result.outputs[name], np.float32)
        outputs.append({"name": name, "layer": produced[name][0],
                        "file": w.tensor(f"output.{safe_name(name)}.npy", y, "output")})

    manifest = {
        "format": FORMAT, "format_version": format_version_of(layers), "refquant_version": __version__,
        "model": {"name": model_name or graph.name, "graph_sha256": graph_sha256(graph)},
        "plan": str(qm.plan), "requant": qm.requant, "backend": backend, "seed": seed,
        "inputs": {"description": input_description,
                   "graph_inputs": [{"name": t.name, "layer": t.name} for t in graph.inputs]},
        "layers": layers, "outputs": outputs, "onnx": None,
    }
    if onnx:
        manifest["onnx"] = add_model_layout(w, qm, feeds, result, layers, produced)
    return write_golden_files(directory, manifest, w)


def _accumulators(node, x_q, w_q, x_qp, w_qp, bias_q):
    """The layer's int32 accumulators, from the reference kernel."""
    zx, zw = int(x_qp.zero_point), w_qp.zero_point
    if node.op_type == "Conv":
        attrs = {k: v for k, v in node.attributes.items() if k != "kernel_shape"}
        return reference.conv2d_int32(x_q, w_q, zx, zw, bias_q, name=node.name, **attrs)
    return reference.matmul_int32(x_q.reshape(x_q.shape[0], -1), w_q, zx, zw, bias_q, name=node.name)
