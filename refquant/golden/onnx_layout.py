"""The ONNX backend test-data layout: ``model.onnx`` + ``test_data_set_N/input_K.pb`` / ``output_K.pb``.

This is the layout of the ``onnx`` package's own backend tests (``onnx/backend/test/data``),
which ONNX backends' test runners already read: each ``.pb`` file is one serialized
``onnx.TensorProto`` (``onnx.numpy_helper.from_array``), named after the graph input or output
it holds, ``input_K`` in the order of ``graph.input`` and ``output_K`` in the order of
``graph.output``.

refquant writes it for model-level golden sets (the QOperator export, whose extra outputs are
every layer's integer tensor) and for operator-level cases (one QLinearConv, QLinearMatMul,
QuantizeLinear or DequantizeLinear node with every input a graph input). Reading ``.pb``
files back is strict: a file that does not parse, or whose data does not fill its declared
shape, raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..onnx_io import OPSET, export_qoperator
from ..onnx_io.runtime import require_onnx
from .files import GoldenFileError, write_bytes
from .writer import GoldenWriter, prepare_directory

__all__ = ["tensor_pb_bytes", "read_pb", "read_output_dir", "add_model_layout", "write_onnx_case"]


def tensor_pb_bytes(array: np.ndarray, name: str) -> bytes:
    """A serialized ``TensorProto`` of ``array`` named ``name`` (``numpy_helper.from_array``)."""
    onnx = require_onnx()
    a = np.asarray(array)
    return onnx.numpy_helper.from_array(a if a.flags.c_contiguous else a.copy(order="C"), name).SerializeToString()


def read_pb(path) -> tuple[str, np.ndarray]:
    """``(name, array)`` of one ``.pb`` tensor file; ValueError naming the file if it is damaged."""
    onnx = require_onnx()
    path = Path(path)
    data = path.read_bytes()
    t = onnx.TensorProto()
    try:
        t.ParseFromString(data)
        a = onnx.numpy_helper.to_array(t)
    except Exception as exc:  # protobuf's DecodeError, or numpy's reshape of short data
        raise ValueError(f"{path}: not a readable ONNX TensorProto ({type(exc).__name__}: {exc})") from None
    if list(a.shape) != list(t.dims) or (len(data) and not t.dims and a.size != 1):
        raise ValueError(f"{path}: tensor data does not fill its declared shape {list(t.dims)}")
    return t.name, a


def read_output_dir(path) -> list[tuple[str, np.ndarray, str]]:
    """Every ``output_K.pb`` in ``path`` (a ``test_data_set_N`` directory, or a directory
    holding ``test_data_set_0``) as ``(name, array, file)``, in K order."""
    path = Path(path)
    if not list(path.glob("output_*.pb")) and (path / "test_data_set_0").is_dir():
        path = path / "test_data_set_0"
    files = sorted(path.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise ValueError(f"{path}: no output_K.pb files (expected an ONNX test_data_set_N directory)")
    return [(*read_pb(f), f.name) for f in files]


def _case_files(w, prefix: str, model_bytes: bytes, inputs, outputs) -> dict:
    """Add ``model.onnx`` and ``test_data_set_0/*.pb`` under ``prefix`` to the writer ``w``."""
    w.raw(f"{prefix}model.onnx", model_bytes)
    entry = {"model": f"{prefix}model.onnx", "test_data_sets": []}
    ds = {"dir": f"{prefix}test_data_set_0", "inputs": [], "outputs": []}
    for kind, items in (("input", inputs), ("output", outputs)):
        for k, (name, array, layer) in enumerate(items):
            file = f"{prefix}test_data_set_0/{kind}_{k}.pb"
            w.raw(file, tensor_pb_bytes(array, name), dtype=np.asarray(array).dtype.name, shape=list(np.shape(array)))
            ds[f"{kind}s"].append({"file": file, "name": name, "layer": layer})
    entry["test_data_sets"].append(ds)
    return entry


def add_model_layout(w, qm, feeds, result, layers, produced) -> dict:
    """Write the QOperator export of ``qm`` and its test data into the golden writer ``w``.

    Outputs, in ``graph.output`` order: the float graph outputs, then every layer's integer
    output (the QOperator model's extra outputs). Returns the manifest's ``onnx`` entry.
    """
    exported = export_qoperator(qm, layer_outputs=True)
    by_onnx_name = {v: k for k, v in exported.layer_outputs.items()}
    golden = {entry["name"]: entry for entry in layers}
    arrays = {name: qt.q for name, qt in produced.values()}
    outputs = []
    for out in exported.model.graph.output:
        if out.name in result.outputs:
            outputs.append((out.name, np.asarray(result.outputs[out.name], np.float32), None))
        else:
            layer = by_onnx_name[out.name]
            if layer not in golden:
                raise GoldenFileError(f"ONNX output {out.name!r} belongs to no golden layer")
            outputs.append((out.name, arrays[layer], layer))
    inputs = [(t.name, feeds[t.name], None) for t in qm.graph.inputs]
    entry = _case_files(w, "onnx/", exported.to_bytes(), inputs, outputs)
    entry.update({"form": "qoperator", "opset": OPSET, "requant": "float32",
                  "layer_outputs": dict(sorted(exported.layer_outputs.items()))})
    return entry


def write_onnx_case(directory, model, inputs, outputs, *, description: str = "", requant: str | None = None):
    """One ONNX test case in ``directory``: ``model.onnx``, ``test_data_set_0/{input,output}_K.pb``
    and ``case.json`` (the SHA-256 of every file, the requant mode the expected outputs follow).

    ``inputs``/``outputs``: lists of ``(name, array)``. Returns the path of ``case.json``.
    """
    root = Path(directory)
    w = GoldenWriter()
    entry = _case_files(w, "", model.SerializeToString(), [(n, a, None) for n, a in inputs],
                        [(n, a, None) for n, a in outputs])
    prepare_directory(root, "case.json")
    for name, data in w.blobs.items():
        write_bytes(root / name, data)
    doc = {"format": "refquant.onnx-case", "format_version": 1, "description": description,
           "requant": requant, "ops": sorted({n.op_type for n in model.graph.node}),
           "test_data_sets": entry["test_data_sets"], "files": w.files}
    path = root / "case.json"
    path.write_bytes((json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii"))
    return path
