"""Verifying a backend against a golden set, layer by layer, in LSBs.

``verify(golden_dir, outputs)`` reads the backend's outputs — an ``.npz`` whose arrays are
named after the golden set's layers (and, optionally, its float graph outputs), or a
directory of ONNX ``output_K.pb`` files — checks every golden file's SHA-256 first, then for
each layer reports:

* how many integers are exact, off by exactly one step (±1 LSB), or worse;
* the largest ``|backend - golden|`` in LSBs, and the first differing element (C order) with
  both values (for Conv/Gemm/MatMul also its accumulator and ``acc · m``);
* an explanation: the backend's integers are recomputed from the layer's inputs (the
  backend's own outputs of the layers before, where it gave them) under every requant mode
  and the known wrong rules of :mod:`refquant.golden.explain`; the ones that reproduce them
  exactly are named. A layer that is right given its (already different) inputs is marked
  as inheriting the difference.

and a verdict under a policy: ``exact`` (every integer equal) or ``lsb1`` (every integer
within one step). Layers missing from the outputs are listed and not judged; at least one
layer must be present. Float graph outputs (dequantized) are compared in LSBs of their
layer's output scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..graph.io import read_npz_checked
from ..presentation import format_table
from .explain import MODE_DESCRIPTIONS, explain_requantization
from .files import GoldenFileError, check_sha256_hex
from .manifest import GoldenSet, load_golden
from .onnx_layout import read_output_dir
from .replay import KERNEL_OPS, compute_layer, kernel_input, layer_accumulators, layer_requantizer, output_kind

__all__ = ["POLICIES", "LayerResult", "VerifyReport", "layer_rule", "mismatch_map", "read_outputs", "verify"]

POLICIES = {
    "exact": "every integer equal to the golden one",
    "lsb1": "every integer within one quantization step (±1 LSB) of the golden one",
}


@dataclass
class LayerResult:
    """The comparison of one layer (or one float graph output)."""

    name: str
    op: str
    kernel: str
    status: str = "missing"  # "exact", "differs", "missing", "error", "given" (an Input layer)
    passed: bool | None = None  # None: not judged (missing)
    elements: int = 0
    exact: int = 0
    within_1: int = 0
    worse: int = 0
    max_abs_lsb: float = 0.0
    first_mismatch: dict | None = None
    explanation: str = ""
    matching_modes: list = field(default_factory=list)
    matching_rules: list = field(default_factory=list)
    inherited_from: str | None = None
    message: str = ""
    #: the layer's integer rule: its requant mode and multiplier form, or its operator's rule
    rule: str = ""
    #: ``[[signed difference in LSBs (backend − golden), count], …]`` over the differing elements
    lsb_histogram: list = field(default_factory=list)
    #: where the differing elements sit (:func:`mismatch_map`); ``None`` when none differs
    mismatch_map: dict | None = None
    #: float-island layers (format version 2): ``max |backend − golden| / max |golden|`` over the layer
    max_rel_diff: float | None = None

    def row(self) -> dict:
        fm = self.first_mismatch
        first = "-" if fm is None else f"{tuple(fm['index'])}: golden {fm['golden']}, backend {fm['backend']}"
        return {"layer": self.name, "op": self.op, "kernel": self.kernel, "elements": self.elements,
                "exact": self.exact, "±1": self.within_1, "worse": self.worse,
                "max_lsb": _num(self.max_abs_lsb), "verdict": _verdict(self), "first mismatch": first}


def _num(v: float):
    return int(v) if float(v).is_integer() else round(float(v), 4)


def _verdict(r: LayerResult) -> str:
    if r.passed is None:
        return "given" if r.status == "given" else "missing"
    return ("ok" if r.status == "exact" else "ok (±1)") if r.passed else ("ERROR" if r.status == "error" else "FAIL")


@dataclass
class VerifyReport:
    golden: str
    manifest_sha256: str
    policy: str
    outputs: str
    layers: list
    graph_outputs: list
    unknown: list
    passed: bool
    summary: str
    model: str = ""
    requant: str = ""
    #: who produced the outputs (``verify(…, backend=…)``; default: the outputs' description)
    backend: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def format_text(self) -> str:
        lines = [f"golden set {self.golden} (manifest sha256 {self.manifest_sha256[:16]}…)",
                 f"outputs    {self.outputs}", ""]
        lines.append(format_table([r.row() for r in self.layers + self.graph_outputs]))
        notes = [r for r in self.layers + self.graph_outputs if r.explanation or r.message]
        if notes:
            lines.append("")
            for r in notes:
                text = "; ".join(t for t in (r.message, r.explanation) if t)
                lines.append(f"  {r.name}: {text}")
        if self.unknown:
            lines.append(f"  not in the golden set (ignored): {', '.join(self.unknown)}")
        lines += ["", self.summary]
        return "\n".join(lines)


def _integers(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise ValueError(f"{what}: expected integers, got dtype {a.dtype.name} with non-integer values")


def read_outputs(path, gs: GoldenSet) -> tuple[dict, list, str]:
    """A backend's outputs as ``({layer or graph-output name: array}, unknown names, description)``.

    ``path`` is an ``.npz`` (arrays named after layers / graph outputs; read with
    ``allow_pickle=False``, every member CRC-checked by the zip reader) or a directory of ONNX
    ``output_K.pb`` files (named after the ONNX tensors; the golden set's ``onnx`` section maps
    them to layers, and an unnamed file is taken by its position K).
    """
    path = Path(path)
    layer_names = {layer["name"] for layer in gs.layers}
    out_names = {o["name"] for o in gs.manifest["outputs"]}
    found, unknown = {}, []
    if path.is_dir():
        onnx = gs.manifest.get("onnx") or {}
        by_onnx = {v: k for k, v in onnx.get("layer_outputs", {}).items()}
        listed = (onnx.get("test_data_sets") or [{}])[0].get("outputs", [])
        items = read_output_dir(path)
        for k, (name, a, file) in enumerate(items):
            if not name and k < len(listed):
                name = listed[k]["name"]
            key = by_onnx.get(name, name)
            (found.__setitem__(key, a) if key in layer_names | out_names else unknown.append(f"{file} ({name})"))
        return found, unknown, f"{path} ({len(items)} ONNX .pb tensors)"
    if not path.is_file():
        raise FileNotFoundError(f"backend outputs {path} not found (expected an .npz file or a directory of .pb files)")
    # headers checked against the members' sizes and refquant's limits before anything is
    # allocated; a damaged member (bad CRC, truncated, object dtype) is a ValueError naming it
    for key, a in read_npz_checked(path, what="named outputs").items():
        (found.__setitem__(key, a) if key in layer_names | out_names else unknown.append(key))
    return found, sorted(unknown), f"{path} ({len(found) + len(unknown)} arrays)"


def _compare(r: LayerResult, golden: np.ndarray, got: np.ndarray, scale: float | None = None) -> np.ndarray | None:
    """Fill the counts of ``r``; return the integer differences (``None`` on a shape error)."""
    if tuple(got.shape) != tuple(golden.shape):
        r.status, r.passed = "error", False
        r.message = f"shape {list(got.shape)}, the golden output has {list(golden.shape)}"
        return None
    if scale is None:
        d = _integers(got, f"layer {r.name!r}") - golden.astype(np.int64)
        lsb = np.abs(d).astype(np.float64)
        equal = d == 0
    else:  # float graph output: bit equality, differences in LSBs of the output scale
        g32, b32 = golden.astype(np.float32), np.asarray(got).astype(np.float32)
        equal = g32.view(np.uint32) == b32.view(np.uint32)
        lsb = np.abs(b32.astype(np.float64) - g32.astype(np.float64)) / scale
        d = np.where(equal, 0.0, lsb)
    r.elements = int(golden.size)
    r.exact = int(np.count_nonzero(equal))
    r.within_1 = int(np.count_nonzero(~equal & (lsb <= 1)))
    r.worse = int(np.count_nonzero(lsb > 1))
    r.max_abs_lsb = float(lsb.max(initial=0.0))
    r.status = "exact" if r.exact == r.elements else "differs"
    if r.status == "differs":
        i = np.unravel_index(int(np.argmax(~equal)), golden.shape)
        r.first_mismatch = {"index": [int(v) for v in i], "golden": golden[i].item(), "backend": np.asarray(got)[i].item()}
        signed = (d if scale is None else
                  np.round((np.asarray(got).astype(np.float64) - golden.astype(np.float64)) / scale, 2))[~equal]
        values, counts = np.unique(signed, return_counts=True)
        r.lsb_histogram = [[_num(v), int(c)] for v, c in zip(values, counts)]
        r.mismatch_map = mismatch_map(~equal)
    return d


def _compare_float(r: LayerResult, golden: np.ndarray, got, tolerance: float) -> None:
    """A float-island tensor: equal means the same float32 bits; with ``tolerance > 0`` an element
    whose ``|backend − golden| <= tolerance · max|golden|`` (over the layer) counts as ``within_1``.
    ``max_rel_diff`` is ``max |backend − golden| / max |golden|``."""
    got = np.asarray(got)
    if got.dtype.kind != "f":
        r.status, r.passed = "error", False
        r.message = f"dtype {got.dtype.name}: a float-island layer's output is float32"
        return
    if tuple(got.shape) != tuple(golden.shape):
        r.status, r.passed = "error", False
        r.message = f"shape {list(got.shape)}, the golden output has {list(golden.shape)}"
        return
    g32, b32 = golden.astype(np.float32), got.astype(np.float32)
    equal = g32.view(np.uint32) == b32.view(np.uint32)
    diff = np.abs(b32.astype(np.float64) - g32.astype(np.float64))
    diff = np.where(equal, 0.0, np.where(np.isnan(diff), np.inf, diff))
    top = float(np.abs(g32.astype(np.float64)).max(initial=0.0)) or 1.0
    close = ~equal & (diff <= tolerance * top)
    r.elements = int(golden.size)
    r.exact = int(np.count_nonzero(equal))
    r.within_1 = int(np.count_nonzero(close))
    r.worse = r.elements - r.exact - r.within_1
    r.max_rel_diff = float(diff.max(initial=0.0) / top)
    r.max_abs_lsb = 0.0
    r.status = "exact" if r.exact == r.elements else "differs"
    r.passed = r.worse == 0
    if r.status == "differs":
        i = np.unravel_index(int(np.argmax(~equal)), golden.shape)
        r.first_mismatch = {"index": [int(v) for v in i], "golden": float(g32[i]), "backend": float(b32[i])}
        r.mismatch_map = mismatch_map(~equal)
        r.explanation = (f"float-island tensor: max |difference| {r.max_rel_diff:.3g} of the layer's largest "
                         f"magnitude" + (f" (tolerance {tolerance:g})" if tolerance else " (compared bit for bit)"))


#: the largest heat map kept per layer (rows × columns); larger tensors are summed in bins
MAP_MAX_ROWS, MAP_MAX_COLS = 64, 256


def mismatch_map(differs: np.ndarray) -> dict:
    """Where the differing elements of a layer sit: counts over channels × positions.

    Rows are the channels (axis 1); columns are the positions within a channel (axes 2…, in C
    order, ``h·W + w`` for NCHW), summed over the batch (axis 0). A 2-d ``[N, F]`` output has
    its features as rows and its samples as columns; a 1-d or 0-d output is one row. Rows and
    columns are summed in bins of ``row_bin`` / ``col_bin`` consecutive indices so that the map
    stays within :data:`MAP_MAX_ROWS` × :data:`MAP_MAX_COLS`; every count is kept (the map sums
    to the number of differing elements).
    """
    m = np.asarray(differs, bool)
    if m.ndim >= 3:
        grid = m.reshape(m.shape[0], m.shape[1], -1).sum(axis=0)
        rows, cols = "channel (axis 1)", "position in the channel (axes 2…, C order)"
    elif m.ndim == 2:
        grid = m.T.astype(np.int64)
        rows, cols = "feature (axis 1)", "sample (axis 0)"
    else:
        grid = m.reshape(1, -1).astype(np.int64)
        rows, cols = "-", "element"
    row_bin = -(-grid.shape[0] // MAP_MAX_ROWS)
    col_bin = -(-grid.shape[1] // MAP_MAX_COLS)
    pr, pc = -grid.shape[0] % row_bin, -grid.shape[1] % col_bin
    g = np.pad(grid, ((0, pr), (0, pc)))
    g = g.reshape(g.shape[0] // row_bin, row_bin, g.shape[1] // col_bin, col_bin).sum(axis=(1, 3))
    return {"rows": rows, "cols": cols, "shape": [int(v) for v in grid.shape], "row_bin": int(row_bin),
            "col_bin": int(col_bin), "counts": g.astype(int).tolist()}


_INTEGER_RULES = {
    "MaxPool": "integer max over the window (exact: max commutes with the monotone grid)",
    "Relu": "max(q, z_y) on the integers (exact)",
    "Flatten": "the integers rearranged (exact)",
    "Reshape": "the integers rearranged (exact)",
}


def layer_rule(gs: GoldenSet, layer: dict) -> str:
    """The rule that defines a golden layer's integers, in one line: for Conv/Gemm/MatMul the
    requant mode with the multiplier's form and the fused clamp; for an imported layer its
    onnxruntime rule (``KERNEL_RULES``); otherwise the operator's integer rule."""
    imported = (layer.get("imported") or {}).get("rule")
    kernel, op = layer["kernel"], layer["op"]
    if kernel == "input" and output_kind(layer) != "quantized":
        return f"given as it is ({output_kind(layer)} graph input, not quantized)"
    if kernel == "input":
        return "quantize-linear: saturate(round_half_even(float32(x) / s) + z) of the float input"
    if output_kind(layer) == "accumulator":
        return ("int32 accumulators Σ(x − z_x)(w − z_w), exact (MatMulInteger: zero points, no scales, "
                "not requantized)")
    if output_kind(layer) == "float":
        if op in KERNEL_OPS and kernel == "unfused":
            return ("float island: exact int32 accumulator Σ(x − z_x)(w − z_w) + bias, then "
                    "float32(acc) · float32(s_x · s_w[c]) — not requantized")
        if kernel == "integer":
            return ("float island: exact int32 Σ(a − z_a)(b − z_b) of two quantized activations, then "
                    "float32(acc) · float32(s_a · s_b)")
        return (f"float island: float32 {op} (refquant/ops) on its float inputs (a quantized input: its recorded "
                f"'float' tensor if it has one, else its dequantized integers); float32 output, not quantized")
    if op in KERNEL_OPS and kernel in ("fused", "unfused"):
        mode = (layer.get("requantization") or {}).get("mode", gs.manifest["requant"])
        when = ("each output as it is accumulated (fused)" if kernel == "fused"
                else "from the stored int32 accumulators (unfused)")
        clamp = f", then the fused {layer['fused_activation']} clamp" if layer.get("fused_activation") else ""
        text = (f"exact int32 accumulator Σ(x − z_x)(w − z_w) + bias, requantized {when} with "
                f"m = float32(float32(s_x·s_w)/s_y) in mode {mode!r}: {MODE_DESCRIPTIONS.get(mode, mode)}{clamp}")
        return f"{text} [imported: {imported}]" if imported else text
    if imported:
        return imported
    if op in _INTEGER_RULES:
        return _INTEGER_RULES[op]
    if kernel == "float":
        return (f"dequantize every input, float32 {op} (refquant/ops), quantize-linear with the recorded "
                "output qparams")
    return f"refquant's {op} rule ({kernel})"


def _explain_from(gs, layer, r: LayerResult, got: np.ndarray, inputs: list) -> tuple[bool, bool, str, dict]:
    """``(correct, explained, text, details)`` for ``got`` recomputed from the integer ``inputs``."""
    imported = layer.get("imported") or {}
    if imported.get("replayable") is False:  # an imported onnxruntime rule refquant's replay does not run
        return False, True, (f"not recomputed: an imported {imported.get('onnx_op')} layer "
                             f"(rule {imported.get('rule', '?')})"), {}
    if layer["op"] in KERNEL_OPS and layer["kernel"] in ("fused", "unfused") and output_kind(layer) == "quantized":
        x = kernel_input(gs, layer, inputs[0])
        acc = layer_accumulators(gs, layer, x)
        if layer["op"] == "MatMul" and inputs[0].ndim > 2:  # rows back in the input's leading shape
            acc = acc.reshape(inputs[0].shape[:-1] + acc.shape[-1:])
        e = explain_requantization(acc, got, gs.qparams(layer, "input"), gs.qparams(layer, "weight"),
                                   gs.qparams(layer, "output"), layer["fused_activation"],
                                   gs.layer_tensor(layer, "bias"), gs.manifest["requant"])
        correct = gs.manifest["requant"] in e["matching_modes"]
        explained = correct or bool(e["matching_modes"] or e["matching_rules"])
        return correct, explained, e["text"], {"acc": acc, **e}
    expected = compute_layer(gs, layer, inputs)
    correct = np.array_equal(expected.astype(np.int64), got)
    text = (f"equals refquant's {layer['op']} rule on these inputs" if correct else
            f"differs from refquant's {layer['op']} rule ({layer['kernel']}) on the same inputs")
    return correct, correct, text, {}


def _explain(gs, layer, r: LayerResult, got, given: dict, results: dict) -> None:
    """Recompute the layer from its inputs and explain the difference.

    A backend that runs the whole model computes each layer from its *own* earlier outputs;
    one that replays layers computes each from the *golden* ones. Both are tried (the
    backend's first, when they differ from the golden inputs); the first that explains the
    layer's integers is reported.
    """
    golden_inputs = [gs.layer_tensor(gs.layer(n), "output") for n in layer["inputs"]]
    own_inputs, upstream = [], None
    for name, g in zip(layer["inputs"], golden_inputs):
        if name in given and output_kind(gs.layer(name)) != "quantized":  # float / index values as given
            own_inputs.append(np.asarray(given[name]).astype(g.dtype))
            if results[name].status != "exact" and upstream is None:
                upstream = name
        elif name in given:
            own_inputs.append(_integers(given[name], f"layer {name!r}").astype(g.dtype))
            if results[name].status != "exact" and upstream is None:
                upstream = name
        else:
            own_inputs.append(g)
    got = _integers(got, f"layer {r.name!r}")
    tries = ([("backend", own_inputs)] if upstream is not None else []) + [("golden", golden_inputs)]
    for which, inputs in tries:
        correct, explained, text, details = _explain_from(gs, layer, r, got, inputs)
        if explained:
            break
    if details:
        r.matching_modes, r.matching_rules = details["matching_modes"], details["matching_rules"]
        if r.first_mismatch is not None:
            i = tuple(r.first_mismatch["index"])
            rq = layer_requantizer(gs, layer)
            acc = details["acc"]
            r.first_mismatch["accumulator"] = int(acc[i])
            r.first_mismatch["acc_times_multiplier"] = float(np.float32(acc[i]) * rq.multiplier[i[1] % rq.multiplier.size])
    if correct and which == "backend":
        r.inherited_from = upstream
        text = f"correct given its inputs: the difference is inherited from layer {upstream!r}"
    elif which == "golden" and upstream is not None and explained:
        text += " (recomputed from the golden inputs)"
    r.explanation = text


def verify(golden, outputs, *, policy: str = "exact", explain: bool = True,
           manifest_sha256: str | None = None, backend: str | None = None,
           float_tolerance: float = 0.0) -> VerifyReport:
    """Compare a backend's ``outputs`` (path, or ``{name: array}``) with the golden set ``golden``.

    Float-island tensors (format version 2: layers with ``output_kind`` "float", and float graph
    outputs of such layers) are compared bit for bit; ``float_tolerance`` (``t >= 0``) accepts an
    element within ``t · max|golden|`` of its layer — for a backend whose float operators sum in
    another order than refquant's fixed-order float path.

    The report carries the SHA-256 of the set's manifest (``VerifyReport.manifest_sha256``);
    ``manifest_sha256``, when given, pins it: a set whose manifest has another digest raises
    :class:`GoldenFileError` before anything is compared (the manifest holds every other file's
    digest, so the pin covers the whole set).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if not (isinstance(float_tolerance, (int, float)) and np.isfinite(float_tolerance) and float_tolerance >= 0):
        raise ValueError(f"float_tolerance must be a finite number >= 0, got {float_tolerance!r}")
    if isinstance(golden, GoldenSet):
        gs = golden
        if manifest_sha256 is not None:
            pinned = check_sha256_hex(manifest_sha256, "manifest_sha256")
            if gs.manifest_sha256 != pinned:
                raise GoldenFileError(f"{gs.root}: manifest SHA-256 {gs.manifest_sha256} differs from the "
                                      f"pinned {pinned} (the manifest was changed or corrupted)")
    else:
        gs = load_golden(golden, manifest_sha256=manifest_sha256)
    gs.check_files()  # every golden file whole and unchanged before anything is compared
    if isinstance(outputs, dict):
        names = {layer["name"] for layer in gs.layers} | {o["name"] for o in gs.manifest["outputs"]}
        given = {k: np.asarray(v) for k, v in outputs.items() if k in names}
        unknown, source = sorted(set(outputs) - names), f"{len(outputs)} arrays in memory"
    else:
        given, unknown, source = read_outputs(outputs, gs)
    results: dict = {}
    for layer in gs.layers:
        r = LayerResult(layer["name"], layer["op"], layer["kernel"], rule=layer_rule(gs, layer))
        if layer["op"] == "Input" and r.name not in given:
            r.status, r.passed = "given", None  # integers handed to the backend, nothing to compute
        results[r.name] = r
        if r.name not in given:
            continue
        if output_kind(layer) == "float":
            _compare_float(r, gs.layer_tensor(layer, "output"), given[r.name], float_tolerance)
            continue
        d = _compare(r, gs.layer_tensor(layer, "output"), given[r.name])
        if d is None:
            continue
        r.passed = r.status == "exact" or (policy == "lsb1" and r.worse == 0)
        if r.status == "differs" and explain:
            _explain(gs, layer, r, given[r.name], given, results)
    graph_outputs = []
    for out in gs.manifest["outputs"]:
        layer = gs.layer(out["layer"])
        r = LayerResult(out["name"], "output", "float",
                        rule=f"dequantize-linear of layer {layer['name']!r}: float32(q − z)·s; compared bit for bit, "
                             "differences in LSBs of its output scale")
        graph_outputs.append(r)
        if r.name in given and output_kind(layer) == "float":
            r.rule = "the float-island layer's float32 output; compared bit for bit (or within the float tolerance)"
            _compare_float(r, gs.tensor(out["file"]), given[r.name], float_tolerance)
        elif r.name in given:
            scale = float(gs.qparams(layer, "output").scale.reshape(-1)[0])
            if _compare(r, gs.tensor(out["file"]), given[r.name], scale) is not None:
                r.passed = r.status == "exact" or (policy == "lsb1" and r.worse == 0)
    judged = [r for r in list(results.values()) + graph_outputs if r.passed is not None]
    failed = [r for r in judged if not r.passed]
    missing = [r.name for r in results.values() if r.passed is None and r.status != "given"]
    passed = bool(judged) and not failed
    if not judged:
        summary = (f"FAIL: none of the golden set's {len(results)} layers or graph outputs is in the outputs "
                   f"(arrays must be named after layers: {', '.join(list(results)[:4])}, …)")
    elif failed:
        first = next((r for r in failed if r.inherited_from is None), failed[0])
        fm = first.first_mismatch
        where = (f" at {tuple(fm['index'])}: golden {fm['golden']}, backend {fm['backend']}" if fm else
                 f": {first.message}")
        summary = (f"FAIL under policy {policy!r} ({POLICIES[policy]}): {len(failed)} of {len(judged)} compared "
                   f"layers/outputs fail; first {first.name!r}{where}"
                   + (f" — {first.explanation}" if first.explanation else ""))
    else:
        worst = max(r.max_abs_lsb for r in judged)
        summary = (f"PASS under policy {policy!r}: {len(judged)} layers/outputs compared, "
                   f"max |difference| {_num(worst)} LSB")
    if missing and judged:
        summary += f"; {len(missing)} layer(s) not in the outputs: {', '.join(missing[:6])}{', …' if len(missing) > 6 else ''}"
    model = gs.manifest.get("model") or {}
    return VerifyReport(str(gs.root), gs.manifest_sha256, policy, source, list(results.values()), graph_outputs,
                        unknown, passed, summary, model=str(model.get("name", "")), requant=gs.manifest["requant"],
                        backend=backend or source)

