"""Golden sets of an imported quantized ONNX model (``refquant.onnx_io.qimport``).

``export_imported_golden(model, feeds, "out/")`` runs the :class:`ImportedModel` once with
``keep=True`` and writes a golden set (``spec/golden-format.md``) whose layers are the
imported model's integer steps, in the layer schema refquant's own models use:

* ``QuantizeLinear`` (of a graph input, or of a float tensor inside the graph) — kernel
  ``input``: its float input and its integers (``replay`` quantizes the stored float input);
* ``QLinearConv`` / ``QLinearMatMul`` / ``QGemm`` with an integer output — op ``Conv`` /
  ``MatMul`` / ``Gemm``, kernel ``fused``: the imported input/weight/output qparams, the
  integer weight output channels first (``OIHW`` / ``OI``), the int32 bias as written in the
  model, and the requantizer's constants — exactly what ``golden run`` / ``replay`` recompute;
* ``MaxPool`` / ``Flatten`` / ``Reshape`` on integers — kernel ``integer``, as written;
* ``QLinearAdd``, ``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearConcat`` — kernel ``integer``
  with the layer's ``imported.replayable`` false: their integers follow onnxruntime's MLAS
  rules (``KERNEL_RULES``), which refquant's own-model rules do not reproduce bit for bit;
  ``verify`` compares them like every layer but does not explain a difference, and
  ``replay`` refuses them.

Every layer carries ``imported``: ``{"onnx_op", "tensor", "rule", "replayable", "fused_from"}``
(``tensor``: the ONNX tensor holding the layer's integers — the name to add as a graph
output to read a runtime's value). Steps that are not integer layers (float islands,
``DequantizeLinear``) are listed in the manifest's ``imported.excluded`` with the reason.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .._version import __version__
from ..onnx_io.qimport import KERNEL_RULES, import_quantized
from .export import requantization_constants, safe_name
from .manifest import FORMAT, format_version_of
from .writer import GoldenWriter, write_golden_files

__all__ = ["export_imported_golden", "layer_tensors"]

_PRODUCT_OPS = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm"}
_MLAS_OPS = ("QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat")
_REARRANGE = ("MaxPool", "Flatten", "Reshape", "Transpose")


def _qp(qp):
    return None if qp is None else qp.to_dict()


def layer_tensors(gs) -> dict:
    """``{layer name: ONNX tensor name}`` of a golden set written by :func:`export_imported_golden`."""
    return {layer["name"]: layer["imported"]["tensor"] for layer in gs.layers if "imported" in layer}


def _layer_output_qparams(layers, name):
    return next(layer for layer in layers if layer["name"] == name)["qparams"]["output"]


def _matmul_integer_entry(m, step, entry, produced, layers, w, base) -> None:
    """ONNX ``MatMulInteger`` → a layer whose output is its int32 accumulators (format version 2,
    ``output_kind`` "accumulator"): op ``MatMul``, kernel ``unfused`` with a constant 2-D B (the
    weight, written ``[N, K]``), kernel ``integer`` with two activations (attention's ``Q·Kᵀ``).
    ``MatMulInteger`` has zero points but no scales: the input qparams are its producer's; a
    weight's are its zero point with the placeholder scale 1 (its scale is in the ``Mul`` after)."""
    i = step.inputs + [""] * 4
    entry["output_kind"] = "accumulator"
    entry["qparams"]["output"] = None
    a_name = produced[i[0]]
    entry["inputs"] = [a_name]
    entry["qparams"]["input"] = _layer_output_qparams(layers, a_name)
    if i[1] in m.consts and np.ndim(m.consts[i[1]]) == 2:
        wq = np.asarray(m.consts[i[1]])
        wz = np.zeros((), wq.dtype) if not i[3] else np.asarray(m.consts[i[3]])
        entry.update(op="MatMul", kernel="unfused", attributes={})
        entry["qparams"]["weight"] = _qp(m._qparams(np.ones(np.shape(wz) or (), np.float32), wz, "weight"))
        entry["weight"] = {"representation": "uniform", "execution": "integer", "bits_per_weight": 8.0}
        entry["tensors"]["weight"] = w.tensor(f"{base}.weight.npy", np.ascontiguousarray(wq.T), "weight", "MatMul")
    else:
        b_name = produced[i[1]]
        entry.update(op="MatMul", kernel="integer", attributes={})
        entry["inputs"].append(b_name)
        entry["operands"] = [{"layer": a_name}, {"layer": b_name}]
        entry["qparams"]["input_b"] = _layer_output_qparams(layers, b_name)


def export_imported_golden(model, feeds: dict, directory, *, semantics: str = "integer", requant: str = "float32",
                           backend: str = "reference", input_description: str = "", model_name: str | None = None):
    """Write the golden set of the quantized ONNX ``model`` (path or ModelProto) on ``feeds``
    (``{input name: float32 array}``); return it loaded."""
    m = import_quantized(model, semantics=semantics)
    if hasattr(model, "SerializeToString"):
        digest, source = hashlib.sha256(model.SerializeToString()).hexdigest(), model_name or model.graph.name
    else:
        with open(model, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        source = model_name or str(model)
    result = m.run(feeds, backend=backend, requant=requant, keep=True)
    env = result.tensors
    ints = m._integer_tensors()
    w = GoldenWriter()
    layers, excluded = [], []
    produced: dict = {}  # ONNX tensor → layer name

    def const_operand(t, label, constants):
        a = np.asarray(m.consts[t])
        constants[label] = {"dtype": a.dtype.name, "shape": list(a.shape), "values": a.reshape(-1).tolist()}
        return {"constant": label}

    for step, rec in zip(m.steps, result.records):
        out = step.outputs[0] if step.outputs else ""
        y = env.get(out)
        integer = out in ints and y is not None and np.asarray(y).dtype.kind in "iu"
        if step.op == "QGemm" and not (step.inputs + [""] * 9)[7]:
            integer = False
        if not integer:
            excluded.append({"name": step.name, "op": step.op,
                             "reason": "dequantizes to float" if step.op == "DequantizeLinear"
                             else "float output (a float island of the imported model), not an integer layer"})
            continue
        index = len(layers)
        base = f"{index:02d}.{safe_name(step.name)}"
        entry = {"index": index, "name": step.name, "op": step.op, "kernel": "integer", "inputs": [],
                 "attributes": {k: v for k, v in sorted(step.attrs.items()) if not k.startswith("_")},
                 "operands": None, "constants": {}, "fused_activation": None, "timing": None,
                 "qparams": {"input": _qp(rec.input_qparams), "weight": _qp(rec.weight_qparams),
                             "output": _qp(rec.output_qparams)},
                 "tensors": {},
                 "imported": {"onnx_op": step.op, "tensor": out, "rule": KERNEL_RULES.get(step.op, ""),
                              "replayable": True, "fused_from": list(step.origin)}}
        tensors = entry["tensors"]
        src = step.inputs[0]
        if step.op == "DynamicQuantizeLinear":  # quantize with the qparams it computed (recorded)
            entry["kernel"] = "input"
            s_, z_ = env[step.outputs[1]], env[step.outputs[2]]
            entry["qparams"]["output"] = _qp(m._qparams(s_, z_, out))
            tensors["input"] = w.tensor(f"{base}.input.npy", np.asarray(env[src], np.float32), "input")
        elif step.op == "MatMulInteger":
            _matmul_integer_entry(m, step, entry, produced, layers, w, base)
        elif step.op == "QuantizeLinear":
            entry["kernel"] = "input"
            tensors["input"] = w.tensor(f"{base}.input.npy", np.asarray(env[src], np.float32), "input")
        elif step.op in _PRODUCT_OPS:
            i = step.inputs + [""] * 9
            entry["op"] = _PRODUCT_OPS[step.op]
            entry["kernel"] = "fused"
            entry["inputs"] = [produced[src]]
            wq = np.asarray(m.consts[i[3]])
            if step.op == "QLinearMatMul" or (step.op == "QGemm" and not step.attrs.get("transB", 0)):
                wq = wq.T
            if step.op == "QGemm" and (step.attrs.get("transA", 0) or float(step.attrs.get("alpha", 1.0)) != 1.0):
                raise ValueError(f"{step.name}: QGemm with transA or alpha != 1 has no golden layer form")
            tensors["weight"] = w.tensor(f"{base}.weight.npy", np.ascontiguousarray(wq), "weight", entry["op"])
            bias = i[8] if step.op == "QLinearConv" else i[6]
            if bias:
                tensors["bias"] = w.tensor(f"{base}.bias.npy", np.asarray(m.consts[bias], np.int32).reshape(-1), "bias")
            if entry["op"] == "Gemm":
                entry["attributes"] = {"transB": 1}
            elif entry["op"] == "MatMul":
                entry["attributes"] = {}
            entry["requantization"] = requantization_constants(rec.input_qparams, rec.weight_qparams,
                                                               rec.output_qparams, requant, None)
        elif step.op in _MLAS_OPS:
            entry["imported"]["replayable"] = False
            srcs = ([step.inputs[0]] + ([step.inputs[3]] if step.op == "QLinearAdd" else [])
                    if step.op != "QLinearConcat" else step.inputs[2::3])
            operands = []
            for k, t in enumerate(srcs):
                if t in produced:
                    entry["inputs"].append(produced[t])
                    operands.append({"layer": produced[t]})
                else:
                    operands.append(const_operand(t, f"input{k}" if step.op == "QLinearConcat" else "AB"[k],
                                                  entry["constants"]))
            entry["operands"] = operands
            if step.op == "QLinearAdd":
                i = step.inputs
                entry["qparams"]["input_b"] = _qp(m._qparams(m.consts[i[4]], m.consts[i[5]], i[3]))
        elif step.op in _REARRANGE:
            entry["inputs"] = [produced[src]]
            operands = [{"layer": produced[src]}]
            if step.op == "Reshape":
                operands.append(const_operand(step.inputs[1], "shape", entry["constants"]))
            entry["operands"] = operands
            if entry["qparams"]["output"] is None:  # rearranging keeps the producer's grid
                entry["qparams"]["output"] = layers[[lay["name"] for lay in layers].index(produced[src])]["qparams"]["output"]
        else:
            raise ValueError(f"{step.name}: imported integer step {step.op} has no golden layer form")
        if entry["qparams"]["output"] is None and entry.get("output_kind") != "accumulator":
            raise ValueError(f"{step.name}: {step.op} without output qparams has no golden layer form")
        tensors["output"] = w.tensor(f"{base}.output.npy", np.ascontiguousarray(y), "output")
        layers.append(entry)
        produced[out] = step.name

    outputs, float_outputs = [], []
    for name in m.outputs:
        step = next(s for s in m.steps if name in s.outputs)
        src = name if name in produced else (step.inputs[0] if step.op == "DequantizeLinear" else None)
        if src not in produced:  # a float-island output (a transformer's embedding): not an integer layer
            float_outputs.append(name)
            continue
        outputs.append({"name": name, "layer": produced[src],
                        "file": w.tensor(f"output.{safe_name(name)}.npy", np.asarray(result.outputs[name]), "output")})

    manifest = {
        "format": FORMAT, "format_version": format_version_of(layers), "refquant_version": __version__,
        "model": {"name": source, "graph_sha256": None, "onnx_sha256": digest},
        "plan": None, "requant": requant, "backend": backend, "seed": None,
        "inputs": {"description": input_description,
                   "graph_inputs": [{"name": n, "layer": produced.get(next((s.outputs[0] for s in m.steps
                                                                            if s.inputs[:1] == [n]), n), n)}
                                    for n, _, _ in m.inputs]},
        "layers": layers, "outputs": outputs, "onnx": None,
        "imported": {"form": m.form, "semantics": semantics, "excluded": excluded,
                     **({"float_outputs": float_outputs} if float_outputs else {})},
    }
    return write_golden_files(directory, manifest, w)
