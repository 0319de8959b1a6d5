"""Import quantized ONNX models (QOperator and QDQ, as onnxruntime's quantization tool writes
them) and run them on refquant's kernels, taking the model's qparams as facts.

    >>> from refquant.onnx_io.qimport import import_quantized
    >>> m = import_quantized("model.qdq.onnx", semantics="integer")   # doctest: +SKIP
    >>> m.run({"x": x}, backend="numba", requant="float32").outputs    # doctest: +SKIP

Nothing is recomputed: scales, zero points, quantized weights and int32 biases are read from
the model. An :class:`ImportedModel` is a list of *steps* in one of three forms:

* **integer** steps — QOperator operators (``QLinearConv``, ``QLinearMatMul``, ``QGemm``,
  ``MatMulInteger``, ``ConvInteger``, ``QLinearAdd``, ``QLinearGlobalAveragePool``,
  ``QLinearAveragePool``, ``QLinearConcat``, and ``MaxPool``/``Relu``/``Flatten``/``Reshape`` on integers): the
  matrix products run on the chosen backend's integer kernels and are requantized in the
  chosen requant mode; the element-wise/pooling operators follow onnxruntime's own kernels
  rule for rule (:data:`KERNEL_RULES`, ``spec/onnx-import.md``);
* ``QuantizeLinear``/``DequantizeLinear``/``DynamicQuantizeLinear`` — the boundaries;
* **float islands** — any other operator, run in float32 on the dequantized values with
  :mod:`refquant.ops` (or a few element-wise NumPy operators).

Two semantics for a QDQ model (a QOperator model means the same under both):

* ``integer`` — every ``DQ → op → Q`` group onnxruntime's QDQ transformer fuses
  (``onnxruntime/core/optimizer/qdq_transformer/selectors_actions/qdq_selector_action_transformer.cc``)
  becomes the integer operator it fuses into: what onnxruntime runs with graph optimizations on;
* ``qdq-float`` — every Q and DQ executed as written with float32 operators between them:
  onnxruntime with optimizations off, and the onnx reference evaluator.

``onnx`` is imported inside the functions (the optional ``onnx`` extra).
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from ..executor.records import LayerRecord
from ..kernels.reference import _exact_matmul, _to_int32
from ..numerics import QParams, make_requantizer
from ..numerics.requant import check_mode
from ..ops import FLOAT_OPS
from ..registry import get_backend
from .runtime import require_onnx

__all__ = ["SEMANTICS", "KERNEL_RULES", "QStep", "ImportedModel", "ImportRunResult", "import_quantized",
           "fuse_qdq"]

SEMANTICS = ("integer", "qdq-float")

#: operators run as integer steps, by domain ("" = ai.onnx, "com.microsoft")
INTEGER_STEP_OPS = {
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "QLinearAdd",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
}
BOUNDARY_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
#: operators that rearrange or select integers (exact on any grid): run on integers as written
PASS_THROUGH_OPS = {"MaxPool", "Relu", "Flatten", "Reshape", "Transpose"}

#: the named numeric rule of each onnxruntime kernel refquant reproduces (spec/onnx-import.md)
KERNEL_RULES = {
    "QuantizeLinear": "quantize-linear: saturate(round_half_even(float32(x) / s) + z)",
    "DequantizeLinear": "dequantize-linear: float32(int32(q) - z) * s",
    "DynamicQuantizeLinear": "dynamic-quantize-u8: lo=min(min x,0), hi=max(max x,0), s=float32(hi-lo)/255 "
                             "(1 if hi==lo), z=round_half_even(clamp(0 - lo/s, 0, 255)), then quantize-linear",
    "QLinearConv": "integer-product: exact int32 accumulators + int32 bias, then the requant mode with "
                   "m = float32(float32(s_x*s_w)/s_y)",
    "QLinearMatMul": "integer-product (as QLinearConv)",
    "QGemm": "integer-product; m = float32(float32(alpha*s_a)*s_b)/s_y; without y_scale float32(acc)*m",
    "MatMulInteger": "exact int32 accumulators (a - z_a)(b - z_b)",
    "ConvInteger": "exact int32 accumulators (x - z_x)(w - z_w)",
    "QLinearAdd": "mlas-qladd-sse: rA=float32(sA/sC), rB=float32(sB/sC), "
                  "f=float32(zC) - (rA*zA + rB*zB); y=sat(round_half_even((f + a*rA) + b*rB)), float32 ops",
    "QLinearGlobalAveragePool": "mlas-qlgavgpool: m=float32(s_x/float32(s_y*float32(n))), "
                                "acc=int32(sum q - z_x*n), y=sat(round_half_even(float32(acc)*m) + z_y)",
    "QLinearAveragePool": "dequantize-average-quantize: float32 average of dequantized values "
                          "(count_include_pad as written), quantize-linear",
    "QLinearConcat": "qlinear-lookup-table: per input y = table[q], table[i] = quantize-linear(dequantize-linear(i; "
                     "s_x, z_x); s_y, z_y) over the 256 codes (float32 (i - z_x)*s_x, divide by s_y, round half even, "
                     "+ z_y, saturate); an input with s_x == s_y and z_x == z_y is copied (the table is the identity "
                     "then); the inputs joined along axis",
    "MaxPool": "integer max (exact, monotone)",
    "Relu": "max(q, z) on integers (exact)",
    "Flatten": "integers rearranged",
    "Reshape": "integers rearranged",
}


def _dtype_name(a) -> str:
    return np.asarray(a).dtype.name


@dataclass
class QStep:
    """One step: an ONNX operator (as written, or the integer operator a QDQ group fused into)."""

    op: str
    inputs: list
    outputs: list
    attrs: dict
    name: str
    domain: str = ""
    #: the names of the model's nodes this step stands for (several for a fused QDQ group)
    origin: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.op in INTEGER_STEP_OPS or self.op in PASS_THROUGH_OPS and self.attrs.get("_integer", True):
            return "integer"  # a pass-through op on a float tensor is reported as a float island by the model
        if self.op in BOUNDARY_OPS:
            return "boundary"
        return "float island"


@dataclass
class ImportRunResult:
    outputs: dict
    records: list
    tensors: dict | None = None


def _load(model):
    onnx = require_onnx()
    if hasattr(model, "graph"):
        return onnx, model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    try:
        return onnx, onnx.load_model(str(path))
    except Exception as exc:  # protobuf decode errors have no common base class
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from None


def _attrs(onnx, node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


# ---- QDQ fusion (onnxruntime's QDQ selectors and actions) ------------------------------------

_DROP_QDQ = {"MaxPool", "Flatten", "Reshape"}       # DropQDQNodesRules: same (s, z) in and out
_UNARY = {"GlobalAveragePool": "QLinearGlobalAveragePool", "AveragePool": "QLinearAveragePool"}
_BINARY = {"Add": "QLinearAdd"}
_VARIADIC = {"Concat": "QLinearConcat"}
_PRODUCTS = {"Conv": "QLinearConv", "MatMul": "QLinearMatMul", "Gemm": "QGemm"}


def _same_qparams(consts, dq, q) -> bool:
    a = [consts.get(t) for t in (dq.inputs[1:3] + [None, None])[:2]]
    b = [consts.get(t) for t in (q.inputs[1:3] + [None, None])[:2]]
    if any(v is None for v in a + b):
        return False
    return (a[0].dtype == b[0].dtype and np.array_equal(a[0], b[0]) and a[1].dtype == b[1].dtype
            and np.array_equal(a[1], b[1]))


def _zp_dtype(consts, step) -> str:
    """The integer type a Q writes / a DQ reads, from its zero point (uint8 without one)."""
    zp = step.inputs[2] if len(step.inputs) > 2 and step.inputs[2] else None
    return _dtype_name(consts[zp]) if zp in consts else ("uint8" if zp is None else "?")


def _int_dtype(steps, producer, consts, t, dq) -> str:
    """The integer type of tensor ``t`` read by ``dq``: a constant's dtype, else the DQ's zero point's."""
    return _dtype_name(consts[t]) if t in consts else _zp_dtype(consts, dq)


def _per_tensor(consts, step) -> bool:
    sc = consts.get(step.inputs[1]) if len(step.inputs) > 1 else None
    return sc is not None and np.asarray(sc).size == 1


def fuse_qdq(steps: list, consts: dict, graph_outputs: set) -> list:
    """Fuse ``DQ → op → Q`` groups into integer steps, as onnxruntime's QDQ transformer does.

    Rules (``qdq_selector_action_transformer.cc``, selectors in ``qdq_selectors.cc``):

    * a DQ shared by several consumers counts as one DQ per consumer (``EnsureUniqueDQForNodeUnit``,
      ``qdq_transformer/ensure_unique_dq_for_node_unit.cc``, which duplicates it); it is dropped
      only when every consumer was fused; the op's output has one consumer, a Q, and is not a
      graph output (``NodeGroupSelector``);
    * ``Conv``/``MatMul``/``Gemm`` with DQ'd input and weight (and an optional int32 bias
      DQ for Conv/Gemm) → ``QLinearConv``/``QLinearMatMul``/``QGemm`` (``ConvNodeGroupSelector``,
      ``MatMulNodeGroupSelector``, ``GemmNodeGroupSelector``); the weight's DQ reads a constant;
    * ``Add`` → ``QLinearAdd`` (``BinaryNodeGroupSelector``: both inputs DQ'd, one dtype);
    * ``Concat`` → ``com.microsoft.QLinearConcat`` (``VariadicOpQDQRules``: ``VariadicNodeGroupSelector``
      — every input DQ'd, all DQ inputs of one integer type, the Q's output of that same type —
      and ``VariadicReplaceWithQLinear``); refquant also requires per-tensor qparams on every DQ
      and the Q, since onnxruntime's kernel refuses others at run time (``QlinearBuildLookupTable``);
    * ``GlobalAveragePool``/``AveragePool`` → ``QLinearGlobalAveragePool``/``QLinearAveragePool``
      (``UnaryNodeGroupSelector``);
    * ``MaxPool``/``Flatten``/``Reshape`` whose DQ and Q carry the same scale and zero point →
      the op on the integers, DQ and Q dropped (``DropQDQNodesSelector``).
    Anything else (the graph's first Q, its last DQ, unmatched groups) stays as written.
    """
    producer = {}
    consumers: dict = {}
    for i, s in enumerate(steps):
        for t in s.outputs:
            producer[t] = i
        for t in s.inputs:
            if t:
                consumers.setdefault(t, []).append(i)

    def dq_of(t, j):
        i = producer.get(t)
        if i is None or steps[i].op != "DequantizeLinear":
            return None
        return i  # EnsureUniqueDQForNodeUnit: each consumer gets its own copy of a shared DQ

    def q_after(j):
        out = steps[j].outputs[0]
        c = consumers.get(out, [])
        if out in graph_outputs or len(c) != 1 or steps[c[0]].op != "QuantizeLinear":
            return None
        return c[0]

    removed, replaced = set(), {}
    for j, s in enumerate(steps):
        if s.op in BOUNDARY_OPS or s.domain not in ("", "ai.onnx"):
            continue
        qi = q_after(j) if s.outputs else None
        if qi is None:
            continue
        q = steps[qi]
        y_int = q.outputs[0]
        y_qp = q.inputs[1:3]
        if s.op in _PRODUCTS:
            dqs = [dq_of(t, j) if t else None for t in s.inputs[:3]]
            if dqs[0] is None or dqs[1] is None or (len(s.inputs) > 2 and s.inputs[2] and dqs[2] is None):
                continue
            x, w = steps[dqs[0]], steps[dqs[1]]
            if w.inputs[0] not in consts:
                continue
            if s.op == "MatMul" and w.attrs.get("axis", 1) not in (1, -1) and np.asarray(consts[w.inputs[1]]).size > 1:
                continue
            bias = steps[dqs[2]].inputs[0] if len(s.inputs) > 2 and s.inputs[2] else ""
            if bias and _dtype_name(consts.get(bias, np.zeros(0, np.float32))) != "int32":
                continue
            ins = [x.inputs[0], x.inputs[1], x.inputs[2], w.inputs[0], w.inputs[1], w.inputs[2]]
            attrs = dict(s.attrs)
            if s.op == "Conv":
                new = QStep("QLinearConv", ins + [y_qp[0], y_qp[1]] + ([bias] if bias else []), [y_int], attrs, s.name)
            elif s.op == "MatMul":
                new = QStep("QLinearMatMul", ins + [y_qp[0], y_qp[1]], [y_int], {}, s.name)
            else:
                attrs["_w_axis"] = w.attrs.get("axis", 1)
                new = QStep("QGemm", ins + [bias, y_qp[0], y_qp[1]], [y_int], attrs, s.name, "com.microsoft")
            used = [d for d in dqs if d is not None]
        elif s.op in _BINARY:
            dqs = [dq_of(t, j) for t in s.inputs[:2]]
            if None in dqs or _dtype_name(consts.get(steps[dqs[0]].inputs[2], 0)) != _dtype_name(
                    consts.get(steps[dqs[1]].inputs[2], 0)):
                continue
            a, b = steps[dqs[0]], steps[dqs[1]]
            new = QStep(_BINARY[s.op], a.inputs[:3] + b.inputs[:3] + [y_qp[0], y_qp[1]], [y_int], {}, s.name,
                        "com.microsoft")
            used = dqs
        elif s.op in _VARIADIC:
            dqs = [dq_of(t, j) if t else None for t in s.inputs]
            if not dqs or None in dqs:
                continue
            ds = [steps[d] for d in dqs]
            types = {_int_dtype(steps, producer, consts, d.inputs[0], d) for d in ds}
            if len(types) != 1 or types != {_zp_dtype(consts, q)}:
                continue
            if not all(_per_tensor(consts, st) for st in ds + [q]):
                continue
            ins = [y_qp[0], y_qp[1]]
            for d in ds:
                ins += [d.inputs[0], d.inputs[1], d.inputs[2] if len(d.inputs) > 2 else ""]
            new = QStep(_VARIADIC[s.op], ins, [y_int], dict(s.attrs), s.name, "com.microsoft")
            used = dqs
        elif s.op in _UNARY:
            d = dq_of(s.inputs[0], j)
            if d is None:
                continue
            new = QStep(_UNARY[s.op], steps[d].inputs[:3] + [y_qp[0], y_qp[1]], [y_int], dict(s.attrs), s.name,
                        "com.microsoft")
            used = [d]
        elif s.op in _DROP_QDQ:
            d = dq_of(s.inputs[0], j)
            if d is None or not _same_qparams(consts, steps[d], q):
                continue
            new = QStep(s.op, [steps[d].inputs[0]] + list(s.inputs[1:]), [y_int], dict(s.attrs), s.name)
            used = [d]
        else:
            continue
        new.origin = [steps[i].name for i in used] + [s.name, q.name]
        removed.update(used)
        removed.add(qi)
        replaced[j] = new
    # a DQ goes when every consumer of its output was fused (and it is not a graph output)
    for i in list(removed):
        st = steps[i]
        if st.op == "DequantizeLinear":
            out = st.outputs[0]
            if out in graph_outputs or any(c not in replaced for c in consumers.get(out, [])):
                removed.discard(i)
    return [replaced.get(i, s) for i, s in enumerate(steps) if i not in removed]


# ---- the numeric rules ------------------------------------------------------------------------

def _f32(x) -> np.float32:
    return np.float32(np.asarray(x, np.float32).reshape(-1)[0])


def _sat(y, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def quantize_linear(x, scale, zero_point, axis=1, out_dtype=None) -> np.ndarray:
    """``saturate(round_half_even(float32(x) / s) + z)`` (per axis when ``s`` is 1-D)."""
    x = np.asarray(x, np.float32)
    zp = np.asarray(zero_point) if zero_point is not None else np.zeros((), out_dtype or np.uint8)
    s = np.asarray(scale, np.float32)
    if s.ndim == 1 and s.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, zpb = s.reshape(shape), zp.reshape(shape)
    else:
        s, zpb = s.reshape(()), zp.reshape(())
    with np.errstate(over="ignore", divide="ignore"):
        r = np.rint(x / s).astype(np.float64)
    return _sat(r + zpb.astype(np.float64), zp.dtype)


def dequantize_linear(q, scale, zero_point=None, axis=1) -> np.ndarray:
    """``float32(int32(q) − z) · s`` (per axis when ``s`` is 1-D)."""
    q = np.asarray(q)
    s = np.asarray(scale, np.float32)
    zp = np.zeros((), np.int64) if zero_point is None else np.asarray(zero_point)
    if s.ndim == 1 and s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    else:
        s, zp = s.reshape(()), zp.reshape(())
    return ((q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * s).astype(np.float32)


def dynamic_quantize_linear(x) -> tuple:
    """onnxruntime's ``DynamicQuantizeLinear`` (uint8): see :data:`KERNEL_RULES`."""
    x = np.asarray(x, np.float32)
    lo = min(np.float32(x.min(initial=0.0)), np.float32(0.0))
    hi = max(np.float32(x.max(initial=0.0)), np.float32(0.0))
    scale = np.float32(1.0) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255.0))
    initial = np.float32(np.float32(0.0) - np.float32(lo / scale))
    zp = np.uint8(np.rint(np.clip(initial, np.float32(0), np.float32(255))))
    return quantize_linear(x, scale, zp), np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


def matmul_integer_nd(a, za, b, zb, name: str) -> np.ndarray:
    """ONNX ``MatMulInteger`` of two activations (attention's ``Q·Kᵀ``, ``P·V``; N-D, batch axes
    broadcast): ``Σ_k (a − z_a)(b − z_b)`` exact in int64, returned as int32 (an error, never a
    wrap, beyond int32). Per-tensor zero points only."""
    zs = []
    for z, what in ((za, "A"), (zb, "B")):
        z = np.zeros((), np.int64) if z is None else np.asarray(z)
        if z.size != 1:
            raise ValueError(f"{name}: MatMulInteger of two activations with a per-row/column zero point of {what} "
                             f"is not supported (per-tensor zero points only)")
        zs.append(np.int64(z.reshape(-1)[0]))
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{name}: MatMulInteger shapes {list(a.shape)} and {list(b.shape)} are not compatible")
    return _to_int32(_exact_matmul(a.astype(np.int64) - zs[0], b.astype(np.int64) - zs[1]), name)


def qlinear_add(a, sa, za, b, sb, zb, sc, zc) -> np.ndarray:
    """MLAS ``MlasQLinearAdd`` (x86 SSE2/AVX2 path), float32 throughout; see :data:`KERNEL_RULES`."""
    ra = np.float32(_f32(sa) / _f32(sc))
    rb = np.float32(_f32(sb) / _f32(sc))
    za_, zb_, zc_ = (int(np.asarray(z).reshape(-1)[0]) for z in (za, zb, zc))
    fixed = np.float32(np.float32(zc_) - np.float32(np.float32(ra * np.float32(za_)) + np.float32(rb * np.float32(zb_))))
    fa = np.asarray(a).astype(np.float32) * ra
    fb = np.asarray(b).astype(np.float32) * rb
    r = np.rint((fixed + fa).astype(np.float32) + fb).astype(np.float32)
    dtype = np.asarray(zc).dtype
    return _sat(np.clip(r, -32768, 32767), dtype)   # cvtps → packs_epi32 (int16) → pack to 8 bits


def qlinear_concat(ys, yz, triples, axis) -> np.ndarray:
    """onnxruntime's ``QLinearConcat`` (``contrib_ops/cpu/quantization/qlinear_concat.cc``): rule
    ``qlinear-lookup-table`` of :data:`KERNEL_RULES`. Each input ``(q, s_x, z_x)`` goes through a
    256-entry table ``table[i] = quantize_linear(dequantize_linear(i, s_x, z_x), s_y, z_y)``
    (``QlinearBuildLookupTable`` with the identity: float32 ``(i − z_x)·s_x``, then MLAS's
    quantize: divide by ``s_y``, round half to even, add ``z_y``, saturate), indexed by the
    input's byte; an input whose scale and zero point equal the output's is copied."""
    yz = np.asarray(yz) if yz is not None else np.zeros((), np.uint8)
    dtype = yz.dtype
    if dtype.itemsize != 1:
        raise ValueError(f"QLinearConcat: {dtype.name} output; onnxruntime's kernel takes 8-bit types only")
    parts = []
    for q, sx, zx in triples:
        q = np.asarray(q)
        zx = np.zeros((), dtype) if zx is None else np.asarray(zx)
        if np.size(sx) != 1 or zx.size != 1 or np.size(ys) != 1 or yz.size != 1:
            raise ValueError("QLinearConcat: per-tensor scales and zero points only (as onnxruntime's kernel)")
        if q.dtype != dtype or zx.dtype != dtype:
            raise ValueError(f"QLinearConcat: input of type {q.dtype.name} (zero point {zx.dtype.name}), "
                             f"output {dtype.name}: one 8-bit type throughout")
        if _f32(sx) == _f32(ys) and int(zx.reshape(-1)[0]) == int(yz.reshape(-1)[0]):
            parts.append(q.copy())
            continue
        codes = np.arange(256, dtype=np.uint8).view(dtype)          # table index = the input's byte
        table = quantize_linear(dequantize_linear(codes, sx, zx), ys, yz)
        parts.append(table[q.view(np.uint8)])
    return np.concatenate(parts, axis=int(axis))


def qlinear_global_average_pool(x, sx, zx, sy, zy, channels_last=0) -> np.ndarray:
    """MLAS ``MlasQLinearGlobalAveragePoolNchw`` (x86): see :data:`KERNEL_RULES`."""
    x = np.asarray(x)
    n = int(np.prod(x.shape[1:-1] if channels_last else x.shape[2:]))
    m = np.float32(_f32(sx) / np.float32(_f32(sy) * np.float32(n)))
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    zx_, zy_ = int(np.asarray(zx).reshape(-1)[0]), int(np.asarray(zy).reshape(-1)[0])
    acc = (x.astype(np.int64).sum(axis=axes, keepdims=True) - zx_ * n).astype(np.int32)
    y = np.rint(acc.astype(np.float32) * m).astype(np.float64) + zy_
    return _sat(y, np.asarray(zy).dtype)


def fma_f32(a, b, c) -> np.ndarray:
    """``float32(a · b + c)`` rounded once (a fused multiply-add) for float32 arrays.

    ``a · b`` is exact in 80-bit extended precision (48 significant bits); ``s = a·b + c`` is
    rounded once there and its error ``e`` recovered exactly (TwoSum), so the one case where
    rounding ``s`` to float32 could differ from rounding the exact sum — ``s`` exactly halfway
    between two float32 values with ``e ≠ 0`` — is decided by the sign of ``e``.
    """
    ld = np.longdouble
    p = np.asarray(a, np.float32).astype(ld) * np.asarray(b, np.float32).astype(ld)
    c = np.asarray(c, np.float32).astype(ld)
    s = p + c
    bp = s - c
    e = (p - bp) + (c - (s - bp))
    f = s.astype(np.float32)
    d = s - f.astype(ld)
    if np.any(e != 0):
        up = np.nextafter(f, np.float32(np.inf))
        down = np.nextafter(f, np.float32(-np.inf))
        half_up = (up.astype(ld) - f.astype(ld)) / 2
        half_down = (f.astype(ld) - down.astype(ld)) / 2
        # s exactly halfway between f and a neighbour (numpy broke the tie to even, towards f):
        # the exact sum lies beyond s when e has the sign of s − f, and then rounds to the neighbour
        tie_up = (d == half_up) & (e > 0)
        tie_down = (-d == half_down) & (e < 0)
        f = np.where(tie_up, up, np.where(tie_down, down, f))
    return f


#: MLAS's SGEMM panel sizes (``MLAS_SGEMM_STRIDEN``, ``MLAS_SGEMM_STRIDEK``)
MLAS_SGEMM_STRIDEN, MLAS_SGEMM_STRIDEK = 128, 128


def mlas_stride_k(n: int, k: int) -> int:
    """The K slice ``MlasSgemmOperation`` steps through for an ``N``-column, ``K``-deep product
    (``TransA = NoTrans``): ``N ≥ K`` keeps 128 (halved while it is at least twice K, which
    never splits K); ``N < K`` doubles it while the N stride (from 128, not below 16) is at least
    twice N."""
    stride_n, stride_k = MLAS_SGEMM_STRIDEN, MLAS_SGEMM_STRIDEK
    if n >= k:
        while stride_k // 2 >= k:
            stride_n, stride_k = stride_n * 2, stride_k // 2
    else:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_n, stride_k = stride_n // 2, stride_k * 2
    return stride_k


def mlas_sgemm(cols: np.ndarray, w: np.ndarray, n: int | None = None, init=None) -> np.ndarray:
    """``y[..., o]`` — rule ``mlas-sgemm-fma``: K in slices of :func:`mlas_stride_k` (``n`` is
    the product's N, the number of output columns MLAS sees; default ``w.shape[0]``); in each
    slice one float32 fused multiply-add per k in the natural order from 0
    (``fma(cols[..., k], w[o, k], acc)``, MLAS's FMA3 kernel: one accumulator per output, k
    innermost), and each slice's sum added to the result so far (``y = slice + y``), which
    starts as ``init`` (``beta = 1``: onnxruntime's Gemm puts the broadcast C there) or as the
    first slice."""
    k_total = w.shape[1]
    stride = mlas_stride_k(w.shape[0] if n is None else int(n), k_total)
    y = None if init is None else np.broadcast_to(np.asarray(init, np.float32),
                                                  cols.shape[:-1] + (w.shape[0],)).astype(np.float32)
    for k0 in range(0, max(k_total, 1), stride):
        acc = np.zeros(cols.shape[:-1] + (w.shape[0],), np.float32)
        for k in range(k0, min(k0 + stride, k_total)):
            acc = fma_f32(cols[..., k:k + 1], w[:, k], acc)
        y = acc if y is None else (acc + y).astype(np.float32)
    return y


def mlas_sgemm_m1(cols: np.ndarray, w: np.ndarray, init=None) -> np.ndarray:
    """One output row (``M = 1``), rule ``mlas-sgemm-m1-avx``: MLAS's ``MlasSgemmKernelM1Avx``
    (x86-64; no FMA). Products ``p_k = float32(cols[..., k] · w[k])``; K in blocks of four,
    ``s = ((p_k + p_k+1) + p_k+2) + p_k+3``, then a block of two, then one, each block sum added
    to the running result (``y = s`` for the first block, ``y = s + y`` after — or, accumulating
    into ``init`` (``beta = 1``), ``y = s + init`` first) in float32."""
    f32 = np.float32
    w = np.asarray(w, f32).reshape(-1)
    p = [(cols[..., k] * w[k]).astype(f32) for k in range(w.size)]
    y = None if init is None else np.broadcast_to(np.asarray(init, f32), cols.shape[:-1]).astype(f32)
    k = 0
    for size in [4] * (w.size // 4) + [2] * ((w.size % 4) // 2) + [1] * (w.size % 2):
        s = p[k]
        for j in range(1, size):
            s = (s + p[k + j]).astype(f32)
        y = s if y is None else (s + y).astype(f32)
        k += size
    return y[..., None]


def mlas_sgemm_m1_transb(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One row times a transposed B (``y[o] = Σ_k a[k]·w[o, k]``), rule
    ``mlas-sgemm-m1-transb-avx``: MLAS's ``MlasSgemmKernelM1TransposeBAvx`` (x86-64; no FMA).
    Eight float32 lanes, lane ``j`` summing ``float32(a[k]·w[o, k])`` over ``k ≡ j (mod 8)`` in
    order; then, for outputs taken four at a time, ``(((l0 + l1) + l2) + l3) + (((l4 + l5) + l6)
    + l7)``; for a remaining pair ``((l0 + l2) + (l4 + l6)) + ((l1 + l3) + (l5 + l7))``; for a
    last single output ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``."""
    f32 = np.float32
    a = np.asarray(a, f32).reshape(-1)
    w = np.asarray(w, f32)
    n, k = w.shape
    lanes = np.zeros((n, 8), f32)
    for k0 in range(0, k, 8):
        blk = min(8, k - k0)
        prod = np.zeros((n, 8), f32)
        prod[:, :blk] = (w[:, k0:k0 + blk] * a[k0:k0 + blk]).astype(f32)
        lanes = (lanes + prod).astype(f32)
    ln = [lanes[:, j] for j in range(8)]

    def add(x, y):
        return (x + y).astype(f32)

    four = add(add(add(add(ln[0], ln[1]), ln[2]), ln[3]), add(add(add(ln[4], ln[5]), ln[6]), ln[7]))
    pair = add(add(add(ln[0], ln[2]), add(ln[4], ln[6])), add(add(ln[1], ln[3]), add(ln[5], ln[7])))
    one = add(add(add(ln[0], ln[1]), add(ln[2], ln[3])), add(add(ln[4], ln[5]), add(ln[6], ln[7])))
    y = four.copy()
    rest = n % 4
    start = n - rest
    if rest & 2:
        y[start:start + 2] = pair[start:start + 2]
        start += 2
    if rest & 1:
        y[start] = one[start]
    return y


def mlas_conv(x, w, b=None, *, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET",
              kernel_shape=None) -> np.ndarray:
    """onnxruntime's float32 Conv (2-d, explicit pads; per group, as ``MlasConv`` does on x86-64):
    im2col of the group's channels in (c, kh, kw) order, :func:`mlas_sgemm` — or, with one filter
    per group (depthwise: ``M = 1``), :func:`mlas_sgemm_m1` — then ``+ bias`` (float32)."""
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides or (1, 1)
    dh, dw = dilations or (1, 1)
    pt, pl, pb, pr = pads or (0, 0, 0, 0)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    og = o // int(group)
    ys = []
    for g in range(int(group)):   # MlasConv: per group, im2col of its channels, then one SGEMM
        cols = np.stack([xp[:, ci, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                         for ci in range(g * cg, (g + 1) * cg) for i in range(kh) for j in range(kw)],
                        axis=-1)   # [N, OH, OW, K]
        wg = w[g * og:(g + 1) * og].reshape(og, -1)
        ys.append(mlas_sgemm_m1(cols, wg[0]) if og == 1 else mlas_sgemm(cols, wg, n=oh * ow))   # M = 1: M1 kernel
    y = np.moveaxis(np.concatenate(ys, axis=-1), -1, 1)
    if b is not None:
        y = (y + np.asarray(b, np.float32).reshape(1, -1, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(y)


def mlas_gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0) -> np.ndarray:
    """onnxruntime's float32 Gemm (``alpha = beta = 1``): ``Y`` starts as the broadcast ``C`` and
    :func:`mlas_sgemm` accumulates into it (``beta = 1``), slice by slice."""
    a = np.asarray(a, np.float32)
    a = a.T if transA else a
    w = np.asarray(b, np.float32)
    w = w if transB else w.T
    if a.shape[0] == 1:   # M = 1: MLAS's M1 kernels accumulate into C (beta = 1) differently
        if not transB:
            init = None if c is None else np.broadcast_to(np.asarray(c, np.float32).reshape(-1), (w.shape[0],))
            return mlas_sgemm_m1(w, a[0], init=init)[..., 0].reshape(1, -1)
        r = mlas_sgemm_m1_transb(a[0], np.ascontiguousarray(w)).reshape(1, -1)
        return r if c is None else (r + np.asarray(c, np.float32)).astype(np.float32)
    return mlas_sgemm(a, np.ascontiguousarray(w), init=c)


def mlas_global_average_pool(x) -> np.ndarray:
    """onnxruntime's float32 GlobalAveragePool (MLAS ``MlasPoolGlobalKernel``) — rule
    ``mlas-global-average``: per channel, four float32 lanes accumulate ``x[4i + j]`` in order,
    are reduced as ``(l0 + l2) + (l1 + l3)``, the remaining ``n mod 4`` values are added one by
    one, and the sum is divided by ``float32(n)``."""
    x = np.asarray(x, np.float32)
    f = x.reshape(x.shape[0], x.shape[1], -1)
    n = f.shape[-1]
    full = n - n % 4
    lanes = np.zeros(f.shape[:2] + (4,), np.float32)
    for i in range(0, full, 4):
        lanes = (lanes + f[..., i:i + 4]).astype(np.float32)
    total = ((lanes[..., 0] + lanes[..., 2]).astype(np.float32)
             + (lanes[..., 1] + lanes[..., 3]).astype(np.float32)).astype(np.float32)
    for i in range(full, n):
        total = (total + f[..., i]).astype(np.float32)
    y = (total / np.float32(n)).astype(np.float32)
    return y.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


# ---- the imported model -----------------------------------------------------------------------

class ImportedModel:
    """A quantized ONNX model as refquant steps; runs on every backend and requant mode."""

    def __init__(self, steps, consts, inputs, outputs, *, form, semantics, source=""):
        self.steps: list[QStep] = steps
        self.consts: dict = consts
        self.inputs: list = inputs      # [(name, dtype name, shape list with None/str for dynamic)]
        self.outputs: list = outputs
        self.form, self.semantics, self.source = form, semantics, source
        self.output_types: dict = {}    # output name → ONNX element type

    # ---- describing ----------------------------------------------------------------------------
    def _qp(self, scale, zp, what) -> dict | None:
        s, z = self.consts.get(scale), self.consts.get(zp) if zp else None
        if s is None:
            return None
        s = np.asarray(s, np.float32)
        d = {"dtype": (np.asarray(z).dtype.name if z is not None else "uint8")}
        if s.size == 1:
            d.update(scale=float(s.reshape(-1)[0]), zero_point=int(np.asarray(z).reshape(-1)[0]) if z is not None else 0)
        else:
            d.update(per_channel=int(s.size))
        return d

    def _integer_tensors(self) -> set:
        """Tensors holding integers: Q outputs, integer-operator outputs, integer constants, and
        what MaxPool/Relu/Flatten/Reshape make of them."""
        ints = {k for k, v in self.consts.items() if np.asarray(v).dtype.kind in "iu"}
        ints |= {n for n, d, _ in self.inputs if np.dtype(d).kind in "iu"}
        for s in self.steps:
            if s.op in ("QuantizeLinear", "DynamicQuantizeLinear") or (
                    s.op in INTEGER_STEP_OPS and not (s.op == "QGemm" and not (s.inputs + [""] * 9)[7])):
                ints.add(s.outputs[0])
            elif s.op in PASS_THROUGH_OPS and s.inputs and s.inputs[0] in ints:
                ints.add(s.outputs[0])
        return ints

    def _kind(self, s, ints) -> str:
        if s.op in PASS_THROUGH_OPS:
            return "integer" if s.inputs and s.inputs[0] in ints else "float island"
        return s.kind

    def describe(self) -> list:
        """One row per step: name, op, format (integer / float island / boundary), qparams."""
        rows = []
        ints = self._integer_tensors()
        for s in self.steps:
            i = s.inputs + [""] * 9
            qp = {}
            if s.op in ("QLinearConv", "QLinearMatMul"):
                qp = {"input": self._qp(i[1], i[2], "x"), "weight": self._qp(i[4], i[5], "w"),
                      "output": self._qp(i[6], i[7], "y")}
            elif s.op == "QGemm":
                qp = {"input": self._qp(i[1], i[2], "a"), "weight": self._qp(i[4], i[5], "b"),
                      "output": self._qp(i[7], i[8], "y") if i[7] else None}
            elif s.op == "QLinearAdd":
                qp = {"input": self._qp(i[1], i[2], "a"), "input_b": self._qp(i[4], i[5], "b"),
                      "output": self._qp(i[6], i[7], "c")}
            elif s.op == "QLinearConcat":
                triples = [s.inputs[k:k + 3] + [""] * 2 for k in range(2, len(s.inputs), 3)]
                qp = {"input": self._qp(triples[0][1], triples[0][2], "x"),
                      "inputs": [self._qp(t[1], t[2], "x") for t in triples], "output": self._qp(i[0], i[1], "y")}
            elif s.op in ("QLinearGlobalAveragePool", "QLinearAveragePool"):
                qp = {"input": self._qp(i[1], i[2], "x"), "output": self._qp(i[3], i[4], "y")}
            elif s.op == "QuantizeLinear":
                qp = {"output": self._qp(i[1], i[2], "y")}
            elif s.op == "DequantizeLinear":
                qp = {"input": self._qp(i[1], i[2], "x")}
            supported = s.op in INTEGER_STEP_OPS | BOUNDARY_OPS | PASS_THROUGH_OPS | set(FLOAT_OPS) | set(_NUMPY_OPS) | {"Cast"}
            rows.append({"name": s.name, "op": s.op, "domain": s.domain or "ai.onnx",
                         "format": self._kind(s, ints) if supported else "unsupported",
                         "rule": KERNEL_RULES.get(s.op, "float32 operator" if supported else "-"),
                         "fused_from": s.origin, **{k: v for k, v in qp.items() if v is not None}})
        return rows

    def unsupported(self) -> list:
        return [r["name"] + " (" + r["op"] + ")" for r in self.describe() if r["format"] == "unsupported"]

    def to_onnx(self):
        """The steps as an ONNX model (the model's own initializers and names): for a fused QDQ
        model, the QOperator model its ``integer`` semantics computes. Opset 13 + com.microsoft 1."""
        onnx = require_onnx()
        h, nh = onnx.helper, onnx.numpy_helper
        used = {t for s in self.steps for t in s.inputs if t}
        inits = [nh.from_array(np.asarray(v), name=k) for k, v in self.consts.items() if k in used]
        nodes = [h.make_node(s.op, s.inputs, s.outputs, name=s.name, domain=s.domain or None,
                             **{k: v for k, v in s.attrs.items() if not k.startswith("_")}) for s in self.steps]
        ins = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(np.dtype(d)), shape)
               for n, d, shape in self.inputs]
        outs = [h.make_tensor_value_info(n, self.output_types.get(n, 1), None) for n in self.outputs]
        model = h.make_model(h.make_graph(nodes, "refquant-import", ins, outs, inits),
                             opset_imports=[h.make_opsetid("", 13), h.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        return model

    # ---- running -------------------------------------------------------------------------------
    def check_feeds(self, feeds: dict) -> dict:
        """Validate ``feeds`` against the model's inputs; one clear ValueError per problem."""
        names = [n for n, _, _ in self.inputs]
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing:
            raise ValueError(f"missing input(s) {', '.join(missing)} (the model takes {', '.join(names)})")
        if extra:
            raise ValueError(f"unknown input(s) {', '.join(extra)} (the model takes {', '.join(names)})")
        out = {}
        for n, dtype, shape in self.inputs:
            a = np.asarray(feeds[n])
            if a.dtype.name != dtype:
                raise ValueError(f"input {n!r}: dtype {a.dtype.name}, the model takes {dtype}")
            if len(shape) != a.ndim or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
                raise ValueError(f"input {n!r}: shape {list(a.shape)}, the model takes "
                                 f"{[d if isinstance(d, int) else '?' for d in shape]}")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"input {n!r}: NaN or Inf values")
            out[n] = a
        return out

    def run(self, feeds, *, backend: str = "reference", requant: str = "float32", keep: bool = False) -> ImportRunResult:
        """Run on ``feeds`` ({name: array}, or one array for a single-input model)."""
        check_mode(requant)
        if isinstance(feeds, np.ndarray):
            feeds = {self.inputs[0][0]: feeds}
        env = dict(self.consts)
        env.update(self.check_feeds(feeds))
        kernels = get_backend(backend)
        records = []
        ints = self._integer_tensors()
        for s in self.steps:
            t0 = time.perf_counter()
            vals = [env[t] if t else None for t in s.inputs]
            rec = LayerRecord(s.name, s.op, self._kind(s, ints), None, None, None, None, None)
            ys = self._step(s, vals, kernels, requant, rec)
            for t, y in zip(s.outputs, ys):
                env[t] = y
            rec.seconds = time.perf_counter() - t0
            rec.buffers["output"] = int(sum(np.asarray(y).nbytes for y in ys))
            if keep:
                rec.q_output = ys[0]
            records.append(rec)
        outs = {n: env[n] for n in self.outputs}
        return ImportRunResult(outs, records, env if keep else None)

    def _qparams(self, scale, zp, name) -> QParams:
        s = np.asarray(scale, np.float32)
        z = np.asarray(zp)
        if s.size == 1:
            return QParams(s.reshape(()), z.reshape(()).astype(np.int32), z.dtype.name, name=name)
        return QParams(s.reshape(-1), np.broadcast_to(z.reshape(-1), s.reshape(-1).shape).astype(np.int32),
                       z.dtype.name, axis=0, name=name)

    def _product(self, s, kernels, requant, rec, x, xs, xz, w, ws, wz, ys, yz, bias, conv, gemm_alpha=1.0):
        """Integer Conv/MatMul on the backend; ``w`` [N, K] (or OIHW); returns int32 or requantized."""
        xz = np.zeros((), x.dtype) if xz is None else np.asarray(xz)
        wz = np.zeros((), w.dtype) if wz is None else np.asarray(wz)
        zw = wz.reshape(-1) if wz.size > 1 else wz.reshape(())
        b = None if bias is None else np.asarray(bias, np.int32).reshape(-1)
        attrs = {k: v for k, v in s.attrs.items() if k in ("strides", "pads", "dilations", "group", "auto_pad")}
        lead = x.shape[:-1]
        xm = x if conv else x.reshape(-1, x.shape[-1])
        if xs is not None:
            rec.input_qparams = self._qparams(xs, xz, s.inputs[0])
            rec.weight_qparams = self._qparams(ws, wz, "weight")
        if ys is None:
            acc = (kernels.conv2d_int32(xm, w, int(xz), zw, b, name=s.name, **attrs) if conv
                   else kernels.matmul_int32(xm, w, int(xz), zw, b, name=s.name))
            rec.kernel = "integer (int32)"
            return acc if conv else acc.reshape(*lead, -1)
        if gemm_alpha != 1.0:
            xs = np.float32(np.float32(gemm_alpha) * _f32(xs))
        rq = make_requantizer(_f32(xs), np.asarray(ws, np.float32).reshape(-1) if np.size(ws) > 1 else _f32(ws),
                              _f32(ys), np.asarray(yz).reshape(()).astype(np.int32), np.asarray(yz).dtype.name,
                              mode=requant)
        rec.output_qparams = self._qparams(ys, yz, s.outputs[0])
        rec.kernel = "fused"
        y = (kernels.conv2d_requant(xm, w, int(xz), zw, b, rq, name=s.name, **attrs) if conv
             else kernels.matmul_requant(xm, w, int(xz), zw, b, rq, name=s.name))
        return y if conv else y.reshape(*lead, -1)

    def _step(self, s, v, kernels, requant, rec) -> list:
        op, a = s.op, s.attrs
        v = v + [None] * (9 - len(v))
        qp_at = {"QuantizeLinear": (None, 1), "DequantizeLinear": (1, None), "QLinearAdd": (1, 6),
                 "QLinearGlobalAveragePool": (1, 3), "QLinearAveragePool": (1, 3),
                 "QLinearConcat": (3, 0)}.get(op)
        if qp_at is not None and np.size(v[1]) == 1 and all(
                v[k + 1] is None or np.asarray(v[k + 1]).dtype.itemsize <= 2 for k in qp_at if k is not None):
            i, o = qp_at
            if i is not None and v[i + 1] is not None:
                rec.input_qparams = self._qparams(v[i], v[i + 1], s.inputs[0])
            if o is not None and v[o + 1] is not None:
                rec.output_qparams = self._qparams(v[o], v[o + 1], s.outputs[0])
        if op == "QuantizeLinear":
            return [quantize_linear(v[0], v[1], v[2], a.get("axis", 1))]
        if op == "DequantizeLinear":
            return [dequantize_linear(v[0], v[1], v[2], a.get("axis", 1))]
        if op == "DynamicQuantizeLinear":
            return list(dynamic_quantize_linear(v[0]))
        if op == "QLinearConv":
            return [self._product(s, kernels, requant, rec, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
                                  conv=True)]
        if op == "ConvInteger":
            return [self._product(s, kernels, requant, rec, v[0], None, v[2], v[1], None, v[3], None, None, None,
                                  conv=True)]
        if op in ("QLinearMatMul", "MatMulInteger"):
            if op == "QLinearMatMul":
                x, xs, xz, w, ws, wz, ys, yz = v[:8]
            else:
                x, xs, xz, w, ws, wz, ys, yz = v[0], None, v[2], v[1], None, v[3], None, None
            if op == "MatMulInteger" and (w.ndim != 2 or s.inputs[1] not in self.consts):
                rec.kernel = "integer (int32)"
                return [matmul_integer_nd(x, xz, w, wz, s.name)]
            if w.ndim != 2:
                raise ValueError(f"{s.name}: {op} with a {w.ndim}-d B is not supported (2-d weights only)")
            return [self._product(s, kernels, requant, rec, x, xs, xz, np.ascontiguousarray(w.T), ws, wz, ys, yz,
                                  None, conv=False)]
        if op == "QGemm":
            x, xs, xz, w, ws, wz, c, ys, yz = v[:9]
            if a.get("transA", 0):
                x = x.T
            wn = w if a.get("transB", 0) else np.ascontiguousarray(w.T)
            alpha = float(a.get("alpha", 1.0))
            if c is not None and np.asarray(c).ndim == 2 and np.asarray(c).shape[0] != 1:
                raise ValueError(f"{s.name}: QGemm with a 2-d [M, N] bias is not supported")
            if ys is None:  # float output: float32(acc) · float32(float32(alpha·s_a)·s_b)
                wsa = np.asarray(ws, np.float32).reshape(-1)
                m = (np.float32(np.float32(alpha) * _f32(xs)) * wsa).astype(np.float32)
                acc = self._product(s, kernels, requant, rec, x, None, xz, np.ascontiguousarray(wn), None, wz,
                                    None, None, c, conv=False)
                return [(acc.astype(np.float32) * m).astype(np.float32)]
            return [self._product(s, kernels, requant, rec, x, xs, xz, np.ascontiguousarray(wn), ws, wz, ys, yz, c,
                                  conv=False, gemm_alpha=alpha)]
        if op == "QLinearAdd":
            rec.kernel = "integer"
            return [qlinear_add(*v[:8])]
        if op == "QLinearConcat":
            rec.kernel = "integer"
            ins = s.inputs[2:] + [""] * (-len(s.inputs[2:]) % 3)
            vals = (v + [None] * len(ins))[2:2 + len(ins)]
            triples = [(vals[k], vals[k + 1], vals[k + 2]) for k in range(0, len(ins), 3)]
            if "axis" not in a:
                raise ValueError(f"{s.name}: QLinearConcat without an axis attribute")
            r = np.ndim(triples[0][0])
            return [qlinear_concat(v[0], v[1], triples, a["axis"] % r if r else 0)]
        if op == "QLinearGlobalAveragePool":
            rec.kernel = "integer"
            return [qlinear_global_average_pool(*v[:5], channels_last=a.get("channels_last", 0))]
        if op == "QLinearAveragePool":
            if a.get("channels_last", 0):
                raise ValueError(f"{s.name}: QLinearAveragePool with channels_last is not supported")
            xf = dequantize_linear(v[0], v[1], v[2])
            attrs = {k: x for k, x in a.items() if k != "channels_last"}
            return [quantize_linear(FLOAT_OPS["AveragePool"](xf, **attrs), v[3], v[4])]
        if op in PASS_THROUGH_OPS and v[0] is not None and np.asarray(v[0]).dtype.kind in "iu":
            x = v[0]
            if op == "MaxPool":
                return [FLOAT_OPS["MaxPool"](x.astype(np.float32), **a).astype(x.dtype)]
            if op == "Relu":
                raise ValueError(f"{s.name}: Relu on integers without qparams is not defined")
            if op == "Flatten":
                return [FLOAT_OPS["Flatten"](x.astype(np.float32), **a).astype(x.dtype)]
            if op == "Transpose":
                return [np.ascontiguousarray(np.transpose(x, a.get("perm")))]
            return [x.reshape(_reshape_target(x.shape, v[1], a.get("allowzero", 0)))]
        return [_float_op(s, v)]


def _reshape_target(shape, target, allowzero=0):
    t = [int(d) for d in np.asarray(target).reshape(-1)]
    if not allowzero:
        t = [shape[i] if d == 0 else d for i, d in enumerate(t)]
    return t


def _np_cast(x, to=1):
    onnx = require_onnx()
    return np.asarray(x).astype(onnx.helper.tensor_dtype_to_np_dtype(int(to)))


_NUMPY_OPS = {
    "Mul": lambda a, b: (np.asarray(a) * np.asarray(b)).astype(np.result_type(a, b)),
    "Sub": lambda a, b: (np.asarray(a) - np.asarray(b)).astype(np.result_type(a, b)),
    "Div": lambda a, b: (np.asarray(a) / np.asarray(b)).astype(np.result_type(a, b)),
    "Identity": lambda a: np.asarray(a),
    "Transpose": lambda a, perm=None: np.transpose(a, perm),
}


def _mlas_conv_applies(args, a) -> bool:
    return np.ndim(args[0]) == 4 and a.get("auto_pad", "NOTSET") == "NOTSET"


def _float_op(s, v):
    op, a = s.op, s.attrs
    args = [x for x in v]
    while args and args[-1] is None:
        args.pop()
    if op == "Cast":
        return _np_cast(args[0], a.get("to", 1))
    if op == "Reshape":
        return np.asarray(args[0]).reshape(_reshape_target(np.shape(args[0]), args[1], a.get("allowzero", 0)))
    if op == "Add" and any(np.asarray(x).dtype.kind != "f" for x in args):
        return np.asarray(args[0]) + np.asarray(args[1])
    if op in _NUMPY_OPS:
        return _NUMPY_OPS[op](*args, **a)
    if op == "Conv" and _mlas_conv_applies(args, a):
        return mlas_conv(*args, **a)
    if op == "Gemm" and float(a.get("alpha", 1.0)) == 1.0 and float(a.get("beta", 1.0)) == 1.0 \
            and np.ndim(args[0]) == 2 and np.ndim(args[1]) == 2:
        return mlas_gemm(*args, **a)
    if op == "GlobalAveragePool" and np.ndim(args[0]) >= 3:
        return mlas_global_average_pool(args[0])
    if op == "MatMul" and np.ndim(args[1]) == 2:
        x = np.asarray(args[0], np.float32)
        b = np.asarray(args[1], np.float32)
        if int(np.prod(x.shape[:-1])) == 1:   # M = 1: MLAS's M1 kernel (B not transposed)
            return mlas_sgemm_m1(b.T, x.reshape(-1))[..., 0].reshape(x.shape[:-1] + (b.shape[1],))
        return mlas_sgemm(x, np.ascontiguousarray(b.T))
    if op in FLOAT_OPS:  # float operands in float32; int64/int32 operands (indices, axes, shapes) as they are
        args = [None if x is None else np.asarray(x) if np.asarray(x).dtype in (np.int64, np.int32)
                else np.asarray(x, np.float32) for x in args]
        return FLOAT_OPS[op](*args, **a)
    raise ValueError(f"{s.name}: operator {op!r} ({s.domain or 'ai.onnx'}) is not supported by refquant's import")


def _form(steps) -> str:
    ops = {s.op for s in steps}
    if ops & INTEGER_STEP_OPS:
        return "qoperator"
    if "DequantizeLinear" in ops:
        return "qdq"
    return "float"


def import_quantized(model, *, semantics: str = "integer") -> ImportedModel:
    """Import a quantized ONNX model (ModelProto or path) as an :class:`ImportedModel`.

    ``semantics``: ``integer`` (QDQ groups fused as onnxruntime fuses them) or ``qdq-float``
    (every Q/DQ as written). A QOperator model runs as written under both.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}: expected one of {', '.join(SEMANTICS)}")
    onnx, m = _load(model)
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    steps = []
    for k, n in enumerate(m.graph.node):
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            continue
        steps.append(QStep(n.op_type, list(n.input), list(n.output), _attrs(onnx, n), n.name or f"{n.op_type}_{k}",
                           n.domain, [n.name or f"{n.op_type}_{k}"]))
    inputs = []
    for i in m.graph.input:
        if i.name in consts:
            continue
        tt = i.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        inputs.append((i.name, dtype, shape))
    outputs = [o.name for o in m.graph.output]
    form = _form(steps)
    if semantics == "integer" and form == "qdq":
        steps = fuse_qdq(steps, consts, set(outputs))
    imported = ImportedModel(steps, consts, inputs, outputs, form=form, semantics=semantics,
                             source="<model>" if hasattr(model, "graph") else str(model))
    imported.output_types = {o.name: o.type.tensor_type.elem_type for o in m.graph.output}
    return imported
