"""Model files: ``NAME.json`` (the graph) + ``NAME.npz`` (the weights).  Schema:
``spec/model-format.md``.

The JSON declares every initializer's dtype and shape; the ``.npz`` must hold exactly those
arrays with exactly those dtypes and shapes.  Weights load with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import numpy as np

from .fold import fold_batchnorm
from .ir import Graph, Node, TensorInfo
from .validate import INITIALIZER_DTYPES, validate_graph

FORMAT = "refquant.model"
FORMAT_VERSION = 1

_TOP_KEYS = {"format", "format_version", "name", "inputs", "outputs", "initializers", "nodes"}
_NODE_KEYS = {"name", "op_type", "inputs", "outputs", "attributes"}
_TENSOR_KEYS = {"name", "dtype", "shape"}


def model_paths(path) -> tuple[Path, Path]:
    """``(NAME.json, NAME.npz)`` for ``path`` given as ``NAME``, ``NAME.json`` or ``NAME.npz``."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.parent / (p.name + ".json"), p.parent / (p.name + ".npz")


def save_model(graph: Graph, path, *, validate: bool = True) -> tuple[Path, Path]:
    """Write ``graph`` as ``NAME.json`` + ``NAME.npz``; return both paths.

    The graph is validated first (unless ``validate=False``), so a saved model always loads.
    """
    if validate:
        validate_graph(graph)
    json_path, npz_path = model_paths(path)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": graph.name,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in graph.inputs],
        "outputs": list(graph.outputs),
        "initializers": [
            {"name": k, "dtype": a.dtype.name, "shape": list(a.shape)} for k, a in graph.initializers.items()
        ],
        "nodes": [
            {
                "name": n.name,
                "op_type": n.op_type,
                "inputs": list(n.inputs),
                "outputs": list(n.outputs),
                **({"attributes": {k: _jsonable(v) for k, v in n.attributes.items()}} if n.attributes else {}),
            }
            for n in graph.nodes
        ],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(_dumps(doc))
    with open(npz_path, "wb") as f:
        np.savez(f, **graph.initializers)
    return json_path, npz_path


def _dumps(doc: dict) -> str:
    """JSON with one line per key, and one line per list entry (a node, a tensor), so that a
    model file reads, and diffs, one node at a time."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            entries = ",\n".join("  " + json.dumps(e) for e in value)
            lines.append(f" {json.dumps(key)}: [\n{entries}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _jsonable(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    return v


def load_model(path, *, fold_bn: bool = True, validate: bool = True) -> Graph:
    """Read ``NAME.json`` + ``NAME.npz`` into a :class:`Graph`.

    ``validate``: run :func:`validate_graph` (on the graph as stored, so errors name the
    stored nodes).  ``fold_bn``: then fold BatchNormalization into the Conv/Gemm before it
    (:func:`fold_batchnorm`).  Raises FileNotFoundError for a missing file and ValueError
    naming the file and the entry for anything malformed.
    """
    json_path, npz_path = model_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"model graph file {json_path} not found")
    try:
        doc = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from None
    graph, declared = _graph_from_json(doc, json_path)
    graph.initializers = _load_weights(npz_path, declared, json_path)
    if validate:
        validate_graph(graph)
    return fold_batchnorm(graph) if fold_bn else graph


# ---- JSON -> Graph ----------------------------------------------------------------------------


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {message}")


def _keys(obj, where: str, allowed: set, required: set) -> None:
    _require(isinstance(obj, dict), where, f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    _require(not unknown, where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    _require(not missing, where, f"missing key(s) {missing}")


def _names(value, where: str) -> list[str]:
    _require(isinstance(value, list) and all(isinstance(v, str) for v in value), where,
             f"must be a list of strings, got {value!r}")
    return value


def _tensor(obj, where: str) -> tuple[str, str, list]:
    _keys(obj, where, _TENSOR_KEYS, _TENSOR_KEYS)
    name, dtype, shape = obj["name"], obj["dtype"], obj["shape"]
    _require(isinstance(name, str) and name, where, f"'name' must be a non-empty string, got {name!r}")
    _require(isinstance(shape, list), f"{where} ({name!r})", f"'shape' must be a list, got {shape!r}")
    return name, dtype, shape


def _graph_from_json(doc, json_path: Path) -> tuple[Graph, dict[str, tuple[str, tuple]]]:
    f = str(json_path)
    _keys(doc, f, _TOP_KEYS, _TOP_KEYS)
    _require(doc["format"] == FORMAT, f, f"'format' must be {FORMAT!r}, got {doc['format']!r}")
    _require(doc["format_version"] == FORMAT_VERSION, f,
             f"'format_version' {doc['format_version']!r} is not supported (this refquant reads {FORMAT_VERSION})")
    _require(isinstance(doc["name"], str), f, f"'name' must be a string, got {doc['name']!r}")
    for key in ("inputs", "initializers", "nodes"):
        _require(isinstance(doc[key], list), f, f"'{key}' must be a list")

    inputs = []
    for i, obj in enumerate(doc["inputs"]):
        name, dtype, shape = _tensor(obj, f"{f}: inputs[{i}]")
        inputs.append(TensorInfo(name, tuple(shape), dtype))

    declared: dict[str, tuple[str, tuple]] = {}
    for i, obj in enumerate(doc["initializers"]):
        where = f"{f}: initializers[{i}]"
        name, dtype, shape = _tensor(obj, where)
        _require(dtype in INITIALIZER_DTYPES, f"{where} ({name!r})",
                 f"dtype {dtype!r} is not allowed; expected one of {list(INITIALIZER_DTYPES)}")
        _require(all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape),
                 f"{where} ({name!r})", f"'shape' must list non-negative ints, got {shape!r}")
        _require(name not in declared, where, f"initializer {name!r} is declared twice")
        declared[name] = (dtype, tuple(shape))

    nodes = []
    for i, obj in enumerate(doc["nodes"]):
        where = f"{f}: nodes[{i}]"
        _keys(obj, where, _NODE_KEYS, _NODE_KEYS - {"attributes"})
        where = f"{where} ({obj['name']!r})"
        attributes = obj.get("attributes", {})
        _require(isinstance(attributes, dict), where, f"'attributes' must be an object, got {attributes!r}")
        _require(isinstance(obj["op_type"], str), where, f"'op_type' must be a string, got {obj['op_type']!r}")
        nodes.append(
            Node(obj["name"], obj["op_type"], _names(obj["inputs"], f"{where} 'inputs'"),
                 _names(obj["outputs"], f"{where} 'outputs'"), dict(attributes))
        )
    graph = Graph(doc["name"], inputs, _names(doc["outputs"], f"{f}: 'outputs'"), nodes, {})
    return graph, declared


def _load_weights(npz_path: Path, declared: dict, json_path: Path) -> dict[str, np.ndarray]:
    if not npz_path.is_file():
        raise FileNotFoundError(f"weights file {npz_path} not found (next to {json_path.name})")
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except Exception as e:  # zipfile, format and pickle errors all mean "not an npz we can read"
        raise ValueError(f"{npz_path}: not a readable .npz file ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{npz_path}: not a .npz archive (a single .npy array?)")
    with archive:
        stored = set(archive.files)
        missing = [k for k in declared if k not in stored]
        _require(not missing, str(npz_path), f"initializer(s) {missing} declared in {json_path.name} are missing")
        extra = sorted(stored - set(declared))
        _require(not extra, str(npz_path), f"array(s) {extra} are not declared in {json_path.name}")
        weights = {}
        for name, (dtype, shape) in declared.items():
            try:
                a = archive[name]
            except ValueError as e:  # object arrays need pickle, which is refused
                raise ValueError(f"{npz_path}: initializer {name!r} cannot be read without pickle ({e})") from None
            _require(a.dtype == np.dtype(dtype), str(npz_path),
                     f"initializer {name!r} has dtype {a.dtype.str}, but {json_path.name} declares "
                     f"{dtype} (native byte order)")
            _require(a.shape == shape, str(npz_path),
                     f"initializer {name!r} has shape {a.shape}, but {json_path.name} declares {list(shape)}")
            weights[name] = a
    return weights
