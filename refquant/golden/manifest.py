"""The golden-set manifest: ``manifest.json``, its schema, and reading a golden set back.

The schema is ``spec/golden-format.md``. The JSON is written with sorted keys, one space of
indentation, ASCII only and a final newline, and holds no time stamps or paths outside the
set, so the same golden set always has the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..numerics import QParams
from .files import GoldenFileError, load_npy_checked, read_checked, sha256_hex

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "dumps", "GoldenSet", "load_golden", "layout_of"]

FORMAT = "refquant.golden"
FORMAT_VERSION = 1
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


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise GoldenFileError(f"{where}: {message}")


def _check_schema(doc, where: str) -> None:
    _require(isinstance(doc, dict), where, "the manifest must be a JSON object")
    missing = sorted(_TOP_REQUIRED - set(doc))
    _require(not missing, where, f"missing key(s) {missing}")
    _require(doc["format"] == FORMAT, where, f"'format' must be {FORMAT!r}, got {doc['format']!r}")
    _require(doc["format_version"] == FORMAT_VERSION, where,
             f"'format_version' {doc['format_version']!r} is not supported (this refquant reads {FORMAT_VERSION})")
    _require(isinstance(doc["files"], dict), where, "'files' must be an object")
    for name, entry in doc["files"].items():
        _require(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                 and isinstance(entry.get("bytes"), int), where,
                 f"files[{name!r}] needs 'bytes' (int) and 'sha256' (hex string)")
        _require(not Path(name).is_absolute() and ".." not in Path(name).parts, where,
                 f"file name {name!r} must stay inside the golden set")
    _require(isinstance(doc["layers"], list) and doc["layers"], where, "'layers' must be a non-empty list")
    names = set()
    for i, layer in enumerate(doc["layers"]):
        lw = f"{where}: layers[{i}]"
        _require(isinstance(layer, dict), lw, "must be an object")
        missing = sorted(_LAYER_REQUIRED - set(layer))
        _require(not missing, lw, f"missing key(s) {missing}")
        _require(layer["kernel"] in KERNELS, lw, f"'kernel' must be one of {KERNELS}, got {layer['kernel']!r}")
        _require(layer["name"] not in names, lw, f"two layers are named {layer['name']!r}")
        names.add(layer["name"])
        for role, file in layer["tensors"].items():
            _require(file in doc["files"], lw, f"tensor {role!r} names file {file!r}, which 'files' does not list")
        for src in layer["inputs"]:
            _require(src in names, lw, f"input {src!r} is not an earlier layer")
    for out in doc["outputs"]:
        _require(out.get("file") in doc["files"], where, f"output {out.get('name')!r} names an unlisted file")


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
            self._cache[file] = load_npy_checked(self.root / file, self.manifest["files"][file])
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
                read_checked(self.root / name, entry)


def load_golden(path) -> GoldenSet:
    """Open the golden set in directory ``path`` (or its ``manifest.json``); schema checked."""
    p = Path(path)
    root = p.parent if p.name == MANIFEST else p
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise GoldenFileError(f"{mpath}: no golden manifest here (expected a directory written by "
                              f"'refquant golden export')")
    data = mpath.read_bytes()
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoldenFileError(f"{mpath}: not valid JSON ({exc}); the manifest is damaged") from None
    _check_schema(doc, str(mpath))
    return GoldenSet(root, doc, sha256_hex(data))
