"""The golden-set manifest: ``manifest.json``, its schema, and reading a golden set back.

The schema is ``spec/golden-format.md``. The JSON is written with sorted keys, one space of
indentation, ASCII only and a final newline, and holds no time stamps or paths outside the
set, so the same golden set always has the same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..graph.io import parse_json_checked
from ..numerics import REQUANT_MODES, QParams
from .files import (GoldenFileError, check_inside, check_sha256_hex, load_npy_checked, read_checked,
                    sha256_hex)

__all__ = ["FORMAT", "FORMAT_VERSION", "FORMAT_VERSIONS", "OUTPUT_KINDS", "MANIFEST", "format_version_of", "MAX_MANIFEST_BYTES", "MAX_MANIFEST_DEPTH", "dumps",
           "GoldenSet", "load_golden", "layout_of"]

#: The largest manifest read (bytes); the checked-in ones are below 100 KiB.
MAX_MANIFEST_BYTES = 64 * 2**20
#: The deepest nesting of the manifest's JSON (the format uses 6).
MAX_MANIFEST_DEPTH = 32

FORMAT = "refquant.golden"
#: the newest format version this refquant writes; a set is written with the lowest version that
#: holds it (:func:`format_version_of`), so every set a version-1 writer made keeps its bytes
FORMAT_VERSION = 2
#: the versions this refquant reads: 1 (integer layers only), 2 (adds ``output_kind`` "float",
#: "index" and "accumulator" layers, the ``float`` tensor role and constants stored in files: transformers)
FORMAT_VERSIONS = (1, 2)
#: what a layer's ``output`` tensor holds (version 2; absent means "quantized")
OUTPUT_KINDS = ("quantized", "float", "index", "accumulator")
#: the dtype of a non-quantized layer output: float-island tensors and integer (index) graph inputs
OUTPUT_DTYPES = {"float": ("float32",), "index": ("int64", "int32"), "accumulator": ("int32",)}
MANIFEST = "manifest.json"

_TOP_REQUIRED = {"format", "format_version", "refquant_version", "model", "plan", "requant", "backend", "seed",
                 "inputs", "layers", "outputs", "files"}
_LAYER_REQUIRED = {"index", "name", "op", "kernel", "inputs", "attributes", "fused_activation", "qparams",
                   "tensors"}
KERNELS = ("input", "fused", "unfused", "integer", "float")


_LINE = 120


def _encode(value, indent: int) -> str:
    """JSON with sorted keys: anything whose one-line form fits in 120 characters on one line
    (a file's entry, a shape, a per-tensor qparams), larger objects and lists one entry per
    line, and lists of numbers or strings always on one line (a per-channel scale vector)."""
    flat = json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)
    nested = isinstance(value, (dict, list)) and any(
        isinstance(v, (dict, list)) for v in (value.values() if isinstance(value, dict) else value))
    if len(flat) <= _LINE or not (isinstance(value, dict) or nested):
        return flat
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_encode(v, indent + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [f"{inner}{_encode(v, indent + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def dumps(doc: dict) -> bytes:
    """The manifest's bytes: sorted keys, one-space indentation, ASCII, a final newline."""
    return (_encode(doc, 0) + "\n").encode("ascii")


def layout_of(role: str, op: str, ndim: int) -> str:
    """The layout name of a golden tensor (``spec/golden-format.md``, "Layouts")."""
    if role == "weight":
        return "OIHW" if op == "Conv" else "OI"
    if role == "bias":
        return "O"
    return {4: "NCHW", 3: "NCL", 2: "NC", 1: "C", 0: "scalar"}.get(ndim, f"rank{ndim}")


def format_version_of(layers: list) -> int:
    """2 if any layer uses a version-2 field (``output_kind`` other than "quantized", a ``float``
    tensor, a constant stored in a file), else 1."""
    for layer in layers:
        if layer.get("output_kind", "quantized") != "quantized" or "float" in layer.get("tensors", {}):
            return 2
        if any("file" in c for c in layer.get("constants", {}).values()):
            return 2
    return 1


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise GoldenFileError(f"{where}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _check_file_entry(name, entry, where: str) -> None:
    _require(isinstance(name, str) and name, where, f"a file name must be a non-empty string, got {name!r}")
    fw = f"{where}: files[{name!r}]"
    p = Path(name)
    _require(not p.is_absolute() and ".." not in p.parts and "\\" not in name, where,
             f"file name {name!r} must stay inside the golden set")
    _require(isinstance(entry, dict), fw, "must be an object with 'bytes' and 'sha256'")
    _require(_is_int(entry.get("bytes")) and entry["bytes"] >= 0, fw,
             f"'bytes' must be a non-negative int, got {entry.get('bytes')!r}")
    try:
        check_sha256_hex(entry.get("sha256"), f"{fw}: 'sha256'")
    except GoldenFileError as exc:
        raise GoldenFileError(str(exc)) from None
    if "dtype" in entry:
        try:
            dt = np.dtype(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        except TypeError:
            dt = None
        _require(dt is not None and dt.kind in "biuf", fw, f"'dtype' must name a numeric dtype, got {entry['dtype']!r}")
    if "shape" in entry:
        shape = entry["shape"]
        _require(isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape), fw,
                 f"'shape' must be a list of non-negative ints, got {shape!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_nested_numbers(v, depth: int) -> bool:
    """A rectangular-or-not nest of lists of numbers at most ``depth`` deep (blocked qparams)."""
    if _is_number(v):
        return True
    return depth > 0 and isinstance(v, list) and all(_is_nested_numbers(x, depth - 1) for x in v)


def _check_qparams(d, lw: str, role) -> None:
    if d is None:
        return
    qw = f"{lw}: qparams[{role!r}]"
    _require(isinstance(d, dict), qw, f"must be an object or null, got {type(d).__name__}")
    for key in ("scale", "zero_point", "format"):
        _require(key in d, qw, f"missing key {key!r}")
    _require(isinstance(d["format"], str), qw, f"'format' must be a string, got {d['format']!r}")
    _require(d.get("axis") is None or _is_int(d["axis"]), qw, f"'axis' must be an int or null, got {d.get('axis')!r}")
    _require(_is_int(d.get("block_size", 0)), qw, f"'block_size' must be an int, got {d.get('block_size')!r}")
    blocked = _is_int(d.get("block_size", 0)) and d.get("block_size", 0) > 0
    for key in ("scale", "zero_point"):
        v = d[key]
        ok = _is_number(v) or (isinstance(v, list) and all(_is_number(x) for x in v)) or (
            blocked and _is_nested_numbers(v, MAX_MANIFEST_DEPTH // 4))
        _require(ok, qw, f"'{key}' must be a number or a list of numbers (nested lists: blocked qparams), "
                         f"got {str(v)[:80]}")
    try:
        QParams.from_dict(d, name=str(role))
    except (ValueError, TypeError, OverflowError) as exc:
        raise GoldenFileError(f"{qw}: {exc}") from None


def _check_tensor_dtype(files: dict, file: str, allowed: tuple, lw: str, what: str) -> None:
    dtype = files[file].get("dtype")
    _require(dtype in allowed, lw, f"{what} file {file!r} must record dtype {' or '.join(allowed)}, got {dtype!r}")


def _check_layer(layer, i: int, where: str, files: dict, names: set, version: int = 1) -> None:
    lw = f"{where}: layers[{i}]"
    _require(isinstance(layer, dict), lw, "must be an object")
    missing = sorted(_LAYER_REQUIRED - set(layer))
    _require(not missing, lw, f"missing key(s) {missing}")
    _require(isinstance(layer["name"], str) and layer["name"], lw, f"'name' must be a non-empty string, got {layer['name']!r}")
    lw = f"{lw} ({layer['name']!r})"
    _require(_is_int(layer["index"]), lw, f"'index' must be an int, got {layer['index']!r}")
    _require(isinstance(layer["op"], str), lw, f"'op' must be a string, got {layer['op']!r}")
    _require(layer["kernel"] in KERNELS, lw, f"'kernel' must be one of {KERNELS}, got {layer['kernel']!r}")
    _require(layer["name"] not in names, lw, f"two layers are named {layer['name']!r}")
    _require(_is_str_list(layer["inputs"]), lw, f"'inputs' must be a list of layer names, got {layer['inputs']!r}")
    _require(isinstance(layer["attributes"], dict), lw, f"'attributes' must be an object, got {layer['attributes']!r}")
    _require(layer["fused_activation"] in (None, "relu", "relu6"), lw,
             f"'fused_activation' must be null, 'relu' or 'relu6', got {layer['fused_activation']!r}")
    _require(isinstance(layer["qparams"], dict), lw, f"'qparams' must be an object, got {layer['qparams']!r}")
    for role, d in layer["qparams"].items():
        _check_qparams(d, lw, role)
    kind = layer.get("output_kind", "quantized")
    _require(version >= 2 or ("output_kind" not in layer
                               and not (isinstance(layer["tensors"], dict) and "float" in layer["tensors"])), lw,
             "'output_kind' and a 'float' tensor need format_version 2")
    _require(kind in OUTPUT_KINDS, lw, f"'output_kind' must be one of {OUTPUT_KINDS}, got {kind!r}")
    if kind == "quantized":
        _require(isinstance(layer["qparams"].get("output"), dict), lw, "needs 'output' qparams")
    else:
        _require(layer["qparams"].get("output") is None, lw, f"a {kind!r} output has no 'output' qparams (null)")
    tensors = layer["tensors"]
    _require(isinstance(tensors, dict), lw, f"'tensors' must be an object, got {tensors!r}")
    for role, file in tensors.items():
        _require(isinstance(file, str), lw, f"tensor {role!r} must name a file (a string), got {file!r}")
        _require(file in files, lw, f"tensor {role!r} names file {file!r}, which 'files' does not list")
    if version >= 2:
        _require(isinstance(tensors.get("output"), str), lw, "needs an 'output' tensor")
        if kind != "quantized":
            _check_tensor_dtype(files, tensors["output"], OUTPUT_DTYPES[kind], lw, f"the {kind} output")
        if "float" in tensors:
            _require(kind == "quantized", lw, "only a quantized output has a 'float' tensor")
            _check_tensor_dtype(files, tensors["float"], ("float32",), lw, "the 'float' tensor")
    for src in layer["inputs"]:
        _require(src in names, lw, f"input {src!r} is not an earlier layer")
    operands = layer.get("operands")
    # an absent optional ONNX input (Clip without a min) is a null entry (spec/golden-format.md)
    _require(operands is None or (isinstance(operands, list)
                                  and all(o is None or isinstance(o, dict) for o in operands)), lw,
             f"'operands' must be null or a list of objects and nulls, got {operands!r}")
    constants = layer.get("constants", {})
    _require(isinstance(constants, dict), lw, f"'constants' must be an object, got {constants!r}")
    for cname, c in constants.items():
        _require(isinstance(c, dict) and {"dtype", "shape"} <= set(c) and ("values" in c) != ("file" in c), lw,
                 f"constant {cname!r} needs 'dtype', 'shape' and one of 'values' or 'file'")
        if "file" in c:
            _require(version >= 2, lw, f"constant {cname!r}: a constant in a file needs format_version 2")
            _require(isinstance(c["file"], str) and c["file"] in files, lw,
                     f"constant {cname!r} names file {c['file']!r}, which 'files' does not list")
            _require(files[c["file"]].get("dtype") == c["dtype"] and files[c["file"]].get("shape") == c["shape"], lw,
                     f"constant {cname!r}: its file {c['file']!r} must record the constant's dtype and shape")
    for o in [o for o in operands or [] if o is not None]:
        _require((isinstance(o.get("layer"), str) and o["layer"] in names)
                 or (isinstance(o.get("constant"), str) and o["constant"] in constants), lw,
                 f"operand {o!r} must name an earlier layer or one of the layer's constants")


def _check_schema(doc, where: str) -> None:
    """Every field refquant reads, with its type: a damaged or hand-edited manifest is refused
    here, with the field named, rather than failing later inside ``verify``."""
    _require(isinstance(doc, dict), where, "the manifest must be a JSON object")
    missing = sorted(_TOP_REQUIRED - set(doc))
    _require(not missing, where, f"missing key(s) {missing}")
    _require(doc["format"] == FORMAT, where, f"'format' must be {FORMAT!r}, got {doc['format']!r}")
    _require(_is_int(doc["format_version"]) and doc["format_version"] in FORMAT_VERSIONS, where,
             f"'format_version' {doc['format_version']!r} is not supported (this refquant reads "
             f"{', '.join(map(str, FORMAT_VERSIONS))})")
    _require(doc["requant"] in REQUANT_MODES, where, f"'requant' must be one of {REQUANT_MODES}, got {doc['requant']!r}")
    _require(isinstance(doc["files"], dict), where, f"'files' must be an object, got {type(doc['files']).__name__}")
    for name, entry in doc["files"].items():
        _check_file_entry(name, entry, where)
    _require(isinstance(doc["layers"], list) and doc["layers"], where, "'layers' must be a non-empty list")
    names: set = set()
    for i, layer in enumerate(doc["layers"]):
        _check_layer(layer, i, where, doc["files"], names, doc["format_version"])
        names.add(layer["name"])
    _require(isinstance(doc["outputs"], list), where, f"'outputs' must be a list, got {type(doc['outputs']).__name__}")
    for k, out in enumerate(doc["outputs"]):
        ow = f"{where}: outputs[{k}]"
        _require(isinstance(out, dict) and all(isinstance(out.get(key), str) for key in ("name", "layer", "file")),
                 ow, f"must be an object with 'name', 'layer' and 'file' strings, got {out!r}")
        _require(out["file"] in doc["files"], where, f"output {out['name']!r} names an unlisted file")
        _require(out["layer"] in names, where, f"output {out['name']!r} names layer {out['layer']!r}, which is not in 'layers'")
    onnx = doc.get("onnx")
    if onnx is not None:
        _require(isinstance(onnx, dict), where, f"'onnx' must be an object or null, got {type(onnx).__name__}")
        _require(isinstance(onnx.get("layer_outputs", {}), dict), where, "'onnx.layer_outputs' must be an object")
        sets = onnx.get("test_data_sets", [])
        _require(isinstance(sets, list) and all(isinstance(t, dict) and isinstance(t.get("outputs", []), list)
                                                 for t in sets), where,
                 "'onnx.test_data_sets' must be a list of objects with an 'outputs' list")


def _refuse_links(root: Path) -> None:
    """Refuse any symbolic link inside the golden set's directory tree (files and directories)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise GoldenFileError(f"{p}: is a symbolic link; a golden set must hold its files itself "
                                      f"(links are refused so that no file outside the set is read)")


@dataclass
class GoldenSet:
    """A golden set on disk: its manifest, and checked access to its tensors."""

    root: Path
    manifest: dict
    manifest_sha256: str
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list:
        return self.manifest["layers"]

    def layer(self, name: str) -> dict:
        for layer in self.layers:
            if layer["name"] == name:
                return layer
        raise KeyError(f"golden set {self.root}: no layer named {name!r}")

    def tensor(self, file: str) -> np.ndarray:
        """The array stored in ``file`` (checksum, then dtype and shape, checked)."""
        if file not in self._cache:
            self._cache[file] = load_npy_checked(check_inside(self.root, file), self.manifest["files"][file])
        return self._cache[file]

    def layer_tensor(self, layer: dict, role: str) -> np.ndarray | None:
        file = layer["tensors"].get(role)
        return None if file is None else self.tensor(file)

    def qparams(self, layer: dict, role: str) -> QParams | None:
        d = layer["qparams"].get(role)
        return None if d is None else QParams.from_dict(d, name=f"{layer['name']}.{role}")

    def check_files(self) -> None:
        """Read every listed file and check its size and SHA-256; raise on the first bad one."""
        for name, entry in sorted(self.manifest["files"].items()):
            if name.endswith(".npy"):
                self.tensor(name)
            else:
                read_checked(check_inside(self.root, name), entry)


def load_golden(path, *, manifest_sha256: str | None = None) -> GoldenSet:
    """Open the golden set in directory ``path`` (or its ``manifest.json``); schema checked.

    ``manifest_sha256``: the SHA-256 the caller pinned for the manifest (from
    ``spec/golden/index.json``, a CI secret, a release note). The manifest is the one file
    nothing else checksums — it holds every other file's digest — so without a pin a damaged
    or edited manifest is caught only when it breaks the schema or a file's digest; with a
    pin, any change to it raises :class:`GoldenFileError`. Symbolic links inside the set,
    a manifest over :data:`MAX_MANIFEST_BYTES` or nested deeper than
    :data:`MAX_MANIFEST_DEPTH` are refused.
    """
    p = Path(path)
    root = p.parent if p.name == MANIFEST else p
    mpath = root / MANIFEST
    pinned = None if manifest_sha256 is None else check_sha256_hex(manifest_sha256, "manifest_sha256")
    if mpath.is_symlink():
        raise GoldenFileError(f"{mpath}: is a symbolic link; a golden set must hold its files itself")
    if not mpath.is_file():
        raise GoldenFileError(f"{mpath}: no golden manifest here (expected a directory written by "
                              f"'refquant golden export')")
    _refuse_links(root)
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise GoldenFileError(f"{mpath}: the manifest is {size} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    data = mpath.read_bytes()
    digest = sha256_hex(data)
    if pinned is not None and digest != pinned:
        raise GoldenFileError(f"{mpath}: manifest SHA-256 {digest} differs from the pinned {pinned} "
                              f"(the manifest was changed or corrupted)")
    doc = parse_json_checked(data, str(mpath), what="golden manifest", max_depth=MAX_MANIFEST_DEPTH,
                             error=GoldenFileError)
    _check_schema(doc, str(mpath))
    return GoldenSet(root, doc, digest)
