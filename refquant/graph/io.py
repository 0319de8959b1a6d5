"""Model files: ``NAME.json`` (the graph) + ``NAME.npz`` (the weights).  Schema:
``spec/model-format.md``.

The JSON declares every initializer's dtype and shape; the ``.npz`` must hold exactly those
arrays with exactly those dtypes and shapes.  Weights load with ``allow_pickle=False``.

Reading never trusts a file before checking it against a limit (``spec/limits.md``): the
JSON's size (:data:`MAX_JSON_BYTES`) and nesting depth (:data:`MAX_JSON_DEPTH`) are checked
before it is parsed, and every ``.npy`` member's header is read and its declared size
compared with the JSON's declaration, :data:`MAX_TENSOR_BYTES` and the zip member's own size
before any array is allocated.  A damaged archive (bad CRC, truncated member, a header that
lies) raises ``ValueError`` naming the file and the member.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .fold import fold_batchnorm
from .ir import Graph, Node, TensorInfo
from .validate import INITIALIZER_DTYPES, validate_graph

FORMAT = "refquant.model"
FORMAT_VERSION = 1

#: The largest model JSON read (bytes); the shipped models' are below 50 KiB.
MAX_JSON_BYTES = 64 * 2**20
#: The deepest nesting of arrays/objects a model JSON may have (the format itself uses 4).
MAX_JSON_DEPTH = 32
#: The largest initializer (decoded bytes) a model ``.npz`` may hold.
MAX_TENSOR_BYTES = 2**30
#: The largest sum of initializer bytes of one model.
MAX_WEIGHTS_BYTES = 2**31
#: The largest ``.npy`` header read (NumPy's own default cap).
MAX_NPY_HEADER_BYTES = 10_000

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
    write_npz(npz_path, graph.initializers)
    return json_path, npz_path


def write_npz(path, arrays: dict) -> None:
    """Write ``{name: array}`` as an uncompressed ``.npz``: member ``NAME.npy`` per array.

    The zip is written here rather than by ``np.savez(f, **arrays)``, whose own keyword
    arguments would swallow or collide with an array named ``file`` or ``allow_pickle``. Each
    member is ``.npy`` format 1.0 (2.0 if the header needs it), ``allow_pickle=False``, with a
    fixed time stamp (1980-01-01), so the same arrays always give the same bytes; NumPy's
    ``np.load`` reads it as any ``.npz``.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            a = np.asarray(array)
            a = a if a.flags.c_contiguous else a.copy(order="C")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


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
    doc = read_json_checked(json_path, what="model graph")
    graph, declared = _graph_from_json(doc, json_path)
    graph.initializers = _load_weights(npz_path, declared, json_path)
    if validate:
        validate_graph(graph)
    return fold_batchnorm(graph) if fold_bn else graph


# ---- checked reading ---------------------------------------------------------------------------


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (brackets inside strings ignored).

    A linear scan, so that depth is known before the recursive parser sees the text.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_json_checked(path: Path, *, what: str, max_bytes: int = MAX_JSON_BYTES,
                      max_depth: int = MAX_JSON_DEPTH, error: type = ValueError):
    """Parse the JSON file ``path`` after checking its size, encoding and nesting depth.

    Every failure is an ``error`` (a ``ValueError`` subclass) naming the file (``what`` says
    which kind it is): over ``max_bytes``, not UTF-8, nested deeper than ``max_depth``, not
    valid JSON, or holding ``NaN``/``Infinity`` (not JSON).
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {what} file is {size} bytes, over the limit of {max_bytes}")
    return parse_json_checked(path.read_bytes(), str(path), what=what, max_depth=max_depth, error=error)


def parse_json_checked(data: bytes, where: str, *, what: str, max_depth: int = MAX_JSON_DEPTH,
                       error: type = ValueError):
    """:func:`read_json_checked` on bytes already read (``where`` names them in errors)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: {what} file is not UTF-8 text ({e})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{where}: {what} JSON nests {depth} levels deep, over the limit of {max_depth}")

    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise error(f"{where}: not valid JSON ({e}; a {what} file)") from None


def read_npy_header(f, where: str) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header_bytes)`` of the ``.npy`` stream ``f`` at its start.

    Only the header is read (NumPy's own ``read_magic``/``read_array_header_*``, capped at
    :data:`MAX_NPY_HEADER_BYTES`); object dtypes are refused (they would need pickle).
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as e:  # noqa: BLE001 - untrusted bytes: NumPy's header parser raises many kinds
        raise ValueError(f"{where}: not a readable .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: dtype {dtype} holds Python objects, which refquant never reads (no pickle)")
    header_bytes = 6 + 2 + (2 if version == (1, 0) else 4)
    return tuple(shape), bool(fortran), dtype, header_bytes


def npy_data_bytes(shape, dtype: np.dtype) -> int:
    """Bytes of the data an ``.npy`` header declares: ``prod(shape) · itemsize`` (exact int)."""
    return math.prod(int(d) for d in shape) * int(dtype.itemsize)


def parse_npy_bytes(data: bytes, where: str, *, max_bytes: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """The array in the ``.npy`` bytes ``data``, header checked before anything is allocated.

    The declared size must be at most ``max_bytes`` and equal exactly what follows the
    header; then the array is a C-ordered copy of those bytes. ``ValueError`` naming ``where``
    otherwise.
    """
    f = io.BytesIO(data)
    shape, fortran, dtype, _ = read_npy_header(f, where)
    nbytes = npy_data_bytes(shape, dtype)
    if nbytes > max_bytes:
        raise ValueError(f"{where}: header declares {nbytes} bytes (shape {list(shape)}, {dtype}), "
                         f"over the limit of {max_bytes}")
    start = f.tell()
    if len(data) - start != nbytes:
        raise ValueError(f"{where}: header declares {nbytes} data bytes (shape {list(shape)}, {dtype}) "
                         f"but the file holds {len(data) - start}")
    if dtype.kind not in "biufc":
        raise ValueError(f"{where}: dtype {dtype} is not a numeric type")
    a = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)
    a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return np.array(a, order="C", copy=True)


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
    _require(isinstance(doc["outputs"], list) and doc["outputs"], f,
             f"'outputs' must be a non-empty list of tensor names, got {doc['outputs']!r}")
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
    """The initializers in ``npz_path``, each checked against its declaration before it is read.

    For every member: its header (dtype, shape) must equal the JSON's declaration, its
    declared size must be within :data:`MAX_TENSOR_BYTES` (and all of them within
    :data:`MAX_WEIGHTS_BYTES`) and equal the member's size in the zip; only then is the data
    read (the zip reader checks its CRC-32) and copied into an array.
    """
    f = str(npz_path)
    if not npz_path.is_file():
        raise FileNotFoundError(f"weights file {npz_path} not found (next to {json_path.name})")
    total = 0
    for name, (dtype, shape) in declared.items():
        nbytes = npy_data_bytes(shape, np.dtype(dtype))
        _require(nbytes <= MAX_TENSOR_BYTES, f"{json_path}", f"initializer {name!r} declares {nbytes} bytes "
                 f"(shape {list(shape)}), over the limit of {MAX_TENSOR_BYTES}")
        total += nbytes
    _require(total <= MAX_WEIGHTS_BYTES, f"{json_path}",
             f"the initializers declare {total} bytes, over the limit of {MAX_WEIGHTS_BYTES}")
    with open(npz_path, "rb") as fh:
        _require(fh.read(6) != b"\x93NUMPY", f, "not a .npz archive (a single .npy array?)")
    try:
        zf = zipfile.ZipFile(npz_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{npz_path}: not a readable .npz file (a zip archive of .npy arrays: {e})") from None
    with zf:
        members = {}
        for info in zf.infolist():
            _require(info.filename.endswith(".npy"), f, f"member {info.filename!r} is not an .npy array")
            key = info.filename[:-4]
            _require(key not in members, f, f"array {key!r} is stored twice")
            members[key] = info
        missing = [k for k in declared if k not in members]
        _require(not missing, f, f"initializer(s) {missing} declared in {json_path.name} are missing")
        extra = sorted(set(members) - set(declared))
        _require(not extra, f, f"array(s) {extra} are not declared in {json_path.name}")
        return {name: _read_member(zf, members[name], dtype, shape, npz_path, json_path)
                for name, (dtype, shape) in declared.items()}


def read_npz_checked(path, *, what: str = "arrays") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, each read as :func:`_load_weights` reads one.

    No declarations to compare with: each member's header is checked against
    :data:`MAX_TENSOR_BYTES`, the sum against :data:`MAX_WEIGHTS_BYTES`, and the declared size
    against the member's size before the data is read (CRC-checked). ``ValueError`` naming the
    file and the member otherwise; object arrays are refused (no pickle).
    """
    path = Path(path)
    f = str(path)
    with open(path, "rb") as fh:
        _require(fh.read(6) != b"\x93NUMPY", f, f"a single array, not an .npz archive of {what}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file (a zip archive of .npy arrays: {e})") from None
    out: dict[str, np.ndarray] = {}
    total = 0
    with zf:
        for info in zf.infolist():
            _require(info.filename.endswith(".npy"), f, f"member {info.filename!r} is not an .npy array")
            key = info.filename[:-4]
            _require(key not in out, f, f"array {key!r} is stored twice")
            _require(total + info.file_size <= MAX_WEIGHTS_BYTES + 1024 * (len(out) + 1), f,
                     f"the arrays hold more than {MAX_WEIGHTS_BYTES} bytes")
            out[key] = _read_member(zf, info, None, None, path, None)
            total += out[key].nbytes
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dtype, shape, npz_path: Path,
                 json_path) -> np.ndarray:
    name = info.filename[:-4]
    where = f"{npz_path}: {'initializer' if json_path is not None else 'array'} {name!r}"
    try:
        with zf.open(info) as m:
            try:
                got_shape, fortran, got_dtype, _ = read_npy_header(m, where)
            except ValueError as e:
                if "objects" in str(e):
                    raise ValueError(f"{where} cannot be read without pickle, which refquant never uses") from None
                raise
            if dtype is not None:
                _require(got_dtype == np.dtype(dtype), str(npz_path),
                         f"initializer {name!r} has dtype {got_dtype.str}, but {json_path.name} declares {dtype} "
                         f"(native byte order)")
            if shape is not None:
                _require(got_shape == tuple(shape), str(npz_path),
                         f"initializer {name!r} has shape {got_shape}, but {json_path.name} declares {list(shape)}")
            start = m.tell()
            nbytes = npy_data_bytes(got_shape, got_dtype)
            _require(nbytes <= MAX_TENSOR_BYTES, where,
                     f"header declares {nbytes} bytes (shape {list(got_shape)}), over the limit of {MAX_TENSOR_BYTES}")
            _require(info.file_size - start == nbytes, where,
                     f"header declares {nbytes} data bytes but the zip member holds {info.file_size - start}")
            data = m.read(nbytes + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
        raise ValueError(f"{where}: the archive member is damaged ({e})") from None
    _require(len(data) == nbytes, where, f"holds {len(data)} data bytes, its header declares {nbytes}")
    a = np.frombuffer(data, dtype=got_dtype)
    a = a.reshape(got_shape[::-1]).T if fortran else a.reshape(got_shape)
    return np.array(a, order="C", copy=True)
