"""The integer-operator table: how every non-kernel step runs on quantized tensors.

Conv, Gemm and MatMul run on the integer kernels (:mod:`refquant.kernels`). Every other
operator is an entry of :data:`TABLE` (or, when no entry applies, :data:`FALLBACK`), and the
executor, the golden replay, the ONNX exporter and quantization-aware training all read it —
so an operator's rule exists once. ``spec/integer-ops.md`` has a paragraph per entry.

An entry (an :class:`IntegerOp`) says

* which operators it covers (``op_types``) and whether its output keeps the input's qparams
  (``keeps_qparams``: the result is already an integer tensor on the input's grid) or is a
  float32 tensor that the caller quantizes with the output qparams (the activation strategy's
  in the executor, the recorded ones in a golden replay);
* when it applies — :meth:`IntegerOp.supports`, given the *operands*: in ONNX input order,
  a :class:`~refquant.numerics.QParams` for a quantized tensor, an array for a constant
  (an initializer), ``None`` for an absent optional input (anything else, e.g. the name of a
  tensor known only at run time, is neither quantized nor constant);
* how it computes — :meth:`IntegerOp.compute`, given the operands as values
  (:class:`QTensor` for quantized tensors) and the node's attributes;
* which ONNX nodes it exports to — :meth:`IntegerOp.emit`, given the exporter's
  QOperator graph (:class:`QOperatorGraph`).

:func:`rule_for` picks the entry for a node; :data:`INTEGER_OPS` lists the operators whose
rule keeps the input's qparams (no new quantization follows them — what QAT reads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..kernels.reference import _exact_matmul, _to_int32
from ..numerics import QParams, dequantize, qparams_from_range, quantize
from ..ops import FLOAT_OPS

__all__ = ["QTensor", "IntegerOp", "QOperatorGraph", "Relu", "Clip", "MaxPool", "ShapeOp", "MoveOp", "AveragePools",
           "MatMulIntegers",
           "DequantizeOpQuantize", "TABLE", "FALLBACK", "INTEGER_OPS", "rule_for", "operand_kinds",
           "per_tensor", "average_integers", "channel_shape"]


@dataclass
class QTensor:
    """An integer tensor with its qparams."""

    q: np.ndarray
    qp: QParams


def per_tensor(t: QTensor, name: str) -> QTensor:
    """Requantize a per-channel tensor onto one per-tensor grid covering every channel's range.

    ``x̂ = dequantize(q)`` (float32, per channel), then ``q' = quantize(x̂, qp')`` with
    ``qp' = qparams_from_range(min(x̂, 0), max(x̂, 0))`` in the same integer format — what a
    kernel taking one input scale reads. A per-tensor ``t`` is returned as it is.
    """
    if t.qp.per_tensor:
        return t
    x = dequantize(t.q, t.qp)
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    qp = qparams_from_range(lo, hi, t.qp.fmt, name=name)
    return QTensor(quantize(x, qp), qp)


def channel_shape(qp: QParams, ndim: int) -> tuple:
    """The shape ``(1, …, C, …, 1)`` (rank ``ndim``) a per-channel scale/zero point broadcasts in."""
    return tuple(qp.scale.shape[0] if i == qp.axis else 1 for i in range(ndim))


def average_integers(op_type: str, q: np.ndarray, qp: QParams, attributes: dict) -> np.ndarray:
    """``float32(float32(Σ_window (q - z)) / count) · s`` for AveragePool / GlobalAveragePool.

    For 8-bit (and narrower) formats ``|q - z| <= 255``, so every float32 partial sum of a
    window of fewer than 65 793 elements is an integer below 2**24 — exact, in any order. The
    float32 pool then divides once, correctly rounded, by the integer count (padding counts
    as ``q = z``, real zero), and the mean is multiplied once by the float32 scale.
    ``qp`` is per tensor.
    """
    centred = (q.astype(np.int32) - np.int32(qp.zero_point)).astype(np.float32)
    mean = FLOAT_OPS[op_type](centred, **attributes)
    return (mean * np.float32(qp.scale)).astype(np.float32)


def operand_kinds(values) -> list:
    """Values (QTensor / array / None) → operands as :meth:`IntegerOp.supports` takes them."""
    return [v.qp if isinstance(v, QTensor) else v for v in values]


class QOperatorGraph(Protocol):
    """What an entry's :meth:`IntegerOp.emit` may ask of the ONNX exporter's graph under construction."""

    def const(self, base: str, array) -> str:
        """A new initializer holding ``array``; returns its (unique) name."""

    def node(self, op: str, inputs: list, outputs: list, name: str, **attrs) -> None:
        """Append an ONNX node (its name made unique)."""

    def fresh(self, base: str) -> str:
        """A new unique tensor name."""

    def integer_input(self, tensor: str) -> str:
        """The ONNX integer tensor holding the refquant tensor ``tensor``."""

    def integer_output(self, tensor: str) -> str:
        """The ONNX integer tensor a node must write the refquant tensor ``tensor`` to."""

    def float_input(self, tensor: str) -> str:
        """A float node's input: the dequantized tensor, a float initializer, or ``""``."""

    def qparams(self, tensor: str) -> QParams:
        """The (offline) qparams of a quantized tensor."""

    def initializer(self, tensor: str) -> np.ndarray:
        """The value of a constant input."""

    def rank(self, tensor: str) -> int:
        """The rank of a tensor."""

    def scale(self, base: str, qp: QParams) -> str:
        """An initializer with ``qp``'s float32 scale."""

    def zero_point(self, base: str, qp: QParams) -> str:
        """An initializer with ``qp``'s zero point in its storage dtype."""

    def quantize_output(self, y_float: str, tensor: str, name: str) -> str:
        """``QuantizeLinear`` of the float tensor ``y_float`` with ``tensor``'s qparams into its integer tensor."""

    def attributes(self, node) -> dict:
        """The node's attributes as ONNX takes them."""


class IntegerOp(ABC):
    """One table entry: subclasses set ``op_types`` (and ``keeps_qparams``/``kernel`` for a rule
    with a float result) and implement ``compute`` and ``emit``; the default ``supports`` asks
    for a quantized first input."""

    op_types: tuple = ()
    keeps_qparams = True
    #: the record's kernel kind: ``integer`` (qparams kept) or ``float`` (a float32 result, quantized)
    kernel = "integer"

    def supports(self, op_type: str, operands: list) -> bool:
        """Whether the rule applies to a node with these operands (module docstring)."""
        return isinstance(operands[0], QParams)

    @abstractmethod
    def compute(self, op_type: str, values: list, attributes: dict, *, name: str, backend=None) -> np.ndarray:
        """Integers on the input's grid (``keeps_qparams``) or the float32 result to quantize;
        ``name`` (the layer) is named in every error. ``backend`` (the kernel backend's module,
        or ``None``) may offer a faster form of the rule as a hook (see the pooling entries);
        the rule written here is the specification and runs whenever the hook is absent."""

    @abstractmethod
    def emit(self, g: QOperatorGraph, node) -> None:
        """Append the ONNX nodes computing ``node``'s integer output to ``g``."""

    def float_bytes(self, values: list) -> int:
        """Bytes of the float32 copies of the inputs this rule makes (0 for integer rules)."""
        return 0


def _first(values: list, name: str) -> QTensor:
    x = values[0]
    if not isinstance(x, QTensor):
        raise ValueError(f"{name}: input 0 is not a quantized tensor")
    return x


class Relu(IntegerOp):
    """``q(relu(x̂)) = max(q, z)``: exact, ``z = q(0)`` and the quantizer is monotone.

    A per-channel zero point is broadcast along its axis (``z[c]`` for channel ``c``); the
    output keeps the input's qparams. Exports to ``Max(q, z)`` (``z`` shaped
    ``[C, 1, …]`` when per channel).
    """

    op_types = ("Relu",)

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        _, zp = x.qp.broadcast_to(x.q.shape)
        return np.maximum(x.q, np.asarray(zp).astype(x.q.dtype))

    def emit(self, g, node):
        x_t = node.inputs[0]
        qp = g.qparams(x_t)
        out = g.integer_output(node.outputs[0])
        z = np.asarray(qp.zero_point).astype(qp.fmt.storage_dtype)
        if not qp.per_tensor:
            z = z.reshape(channel_shape(qp, g.rank(x_t))[1:])
        g.node("Max", [g.integer_input(x_t), g.const(f"{node.name}.zero_point", z)], [out], name=node.name)


def _clip_bound(bound, qp: QParams, ndim: int) -> np.ndarray:
    """``q(bound)`` with the input's qparams: 0-d per tensor, ``channel_shape`` per channel."""
    b = np.asarray(bound, np.float32)
    if qp.per_tensor:
        return quantize(b, qp)
    return quantize(np.broadcast_to(b.reshape(()), channel_shape(qp, ndim)), qp)


class Clip(IntegerOp):
    """``q(clip(x̂, a, b)) = clip(q, q(a), q(b))``: exact, the quantizer is monotone.

    Applies when the bounds are constants (or absent). Each bound is quantized with the
    input's qparams — ``saturate(round_half_even(float32(a) / s) + z)``, per channel when
    the qparams are (one bound per channel ``c``: ``q_c(a)``); the clamp takes ``max`` with
    the lower bound first, then ``min`` with the upper one (so ``a > b`` gives ``q(b)``, as
    ONNX Clip gives ``b``). The output keeps the input's qparams. Exports to
    ``Clip(q, q(a), q(b))``; per channel (ONNX Clip bounds are scalars) to
    ``Min(Max(q, q(a)), q(b))`` with ``[C, 1, …]`` bounds.
    """

    op_types = ("Clip",)

    def supports(self, op_type, operands):
        return isinstance(operands[0], QParams) and all(
            o is None or (isinstance(o, np.ndarray) and o.size == 1) for o in operands[1:3])

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        bounds = [None if b is None else _clip_bound(b, x.qp, x.q.ndim) for b in (values + [None, None])[1:3]]
        y = x.q
        if bounds[0] is not None:
            y = np.maximum(y, bounds[0])
        if bounds[1] is not None:
            y = np.minimum(y, bounds[1])
        return y.copy() if y is x.q else y

    def emit(self, g, node):
        x_t, name = node.inputs[0], node.name
        qp = g.qparams(x_t)
        out, x = g.integer_output(node.outputs[0]), g.integer_input(x_t)
        names = [node.inputs[i] if len(node.inputs) > i else "" for i in (1, 2)]
        if qp.per_tensor:
            bounds = [g.const(f"{name}.{t}_quantized", quantize(g.initializer(t), qp)) if t else "" for t in names]
            while bounds and bounds[-1] == "":
                bounds.pop()
            g.node("Clip", [x] + bounds, [out], name=name)
            return
        rank = g.rank(x_t)
        steps = [(op, t) for op, t in (("Max", names[0]), ("Min", names[1])) if t]
        if not steps:
            g.node("Identity", [x], [out], name=name)
        for k, (op, t) in enumerate(steps):
            bound = _clip_bound(g.initializer(t), qp, rank).reshape(channel_shape(qp, rank)[1:])
            y = out if k == len(steps) - 1 else g.fresh(f"{name}.lower_clipped")
            g.node(op, [x, g.const(f"{name}.{t}_quantized", bound)], [y], name=name)
            x = y


class MaxPool(IntegerOp):
    """``q(maxpool(x̂)) = maxpool(q)``: exact, the quantizer is monotone (per-channel qparams too —
    a window never mixes channels).

    Computed as the float32 MaxPool of the integers (exact float32 images; padding is ``-inf``
    and never wins), cast back to the storage dtype — or by the backend's hook
    ``max_pool_integers(q, **attributes)`` when it has one (the ``numba`` backend:
    :mod:`refquant.kernels.fast_pool`; ``None`` from the hook means "run this rule"). The output keeps the input's qparams.
    Exports to ``MaxPool`` on the integers with the node's attributes.
    """

    op_types = ("MaxPool",)

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        hook = getattr(backend, "max_pool_integers", None)
        if hook is not None:
            y = hook(x.q, **attributes)
            if y is not None:
                return y
        return FLOAT_OPS["MaxPool"](x.q.astype(np.float32), **attributes).astype(x.q.dtype)

    def emit(self, g, node):
        out = g.integer_output(node.outputs[0])
        g.node(node.op_type, [g.integer_input(node.inputs[0])], [out], name=node.name, **g.attributes(node))


class ShapeOp(IntegerOp):
    """Flatten, Reshape, Transpose, Squeeze, Unsqueeze: the integers rearranged, the qparams
    kept — exact, a quantized tensor's values only move. For per-tensor qparams only (a
    per-channel axis would lose its meaning); the int64 inputs (Reshape's target shape,
    Squeeze's and Unsqueeze's axes) must be constants. Exports to the same operator on the
    integers (onnxruntime's quantizer leaves these operators on the integers the same way).
    """

    op_types = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")

    def supports(self, op_type, operands):
        x = operands[0]
        if not (isinstance(x, QParams) and x.per_tensor):
            return False
        return all(o is None or isinstance(o, np.ndarray) for o in operands[1:])

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        rest = [None if v is None else np.asarray(v, np.int64) for v in values[1:]]
        return FLOAT_OPS[op_type](x.q.astype(np.float32), *rest, **attributes).astype(x.q.dtype)

    def emit(self, g, node):
        out, x = g.integer_output(node.outputs[0]), g.integer_input(node.inputs[0])
        rest = [g.const(t, np.asarray(g.initializer(t), np.int64)) if t else "" for t in node.inputs[1:]]
        g.node(node.op_type, [x, *rest], [out], name=node.name, **g.attributes(node))


class MoveOp(ShapeOp):
    """Slice, Resize (``mode="nearest"``): each output integer is a copy of one input integer,
    the qparams kept — exact, ``q(slice(x̂)) = slice(q)`` and ``q(resize_nearest(x̂)) =
    resize_nearest(q)`` since the values only move. For per-tensor qparams only; every input
    but the data (Slice's starts/ends/axes/steps, Resize's roi/scales/sizes) must be a
    constant. Computed as the float32 operator on the integers (exact float32 images, values
    copied) cast back to the storage dtype. Exports to the same operator on the integers, its
    constant inputs in their own dtypes (ONNX Slice and Resize accept int8 and uint8 data).
    """

    op_types = ("Slice", "Resize")

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        return FLOAT_OPS[op_type](x.q.astype(np.float32), *values[1:], **attributes).astype(x.q.dtype)

    def emit(self, g, node):
        out, x = g.integer_output(node.outputs[0]), g.integer_input(node.inputs[0])
        rest = [g.const(t, np.asarray(g.initializer(t))) if t else "" for t in node.inputs[1:]]
        while rest and rest[-1] == "":
            rest.pop()
        g.node(node.op_type, [x, *rest], [out], name=node.name, **g.attributes(node))


class AveragePools(IntegerOp):
    """AveragePool, GlobalAveragePool of a per-tensor input: the exact mean of the integers, then
    the scale — ``y = float32(float32(Σ (q − z)) / count) · s`` (:func:`average_integers`):
    exact sums, so independent of the summation order; one rounding for the mean, one for the
    product. ``y`` (float32) is then quantized with the output qparams. GlobalAveragePool uses
    the backend's hook ``global_average_integers(q, z, s)`` when it has one (the ``numba``
    backend's sums the integers exactly in int64; ``None`` means "run this rule"). Exports to
    ``DequantizeLinear(q, 1, z)`` → the pool → ``Mul(s)`` → ``QuantizeLinear``.
    """

    op_types = ("AveragePool", "GlobalAveragePool")
    keeps_qparams = False
    kernel = "float"

    def supports(self, op_type, operands):
        return isinstance(operands[0], QParams) and operands[0].per_tensor

    def compute(self, op_type, values, attributes, *, name, backend=None):
        x = _first(values, name)
        hook = getattr(backend, "global_average_integers", None)
        if op_type == "GlobalAveragePool" and hook is not None:
            y = hook(x.q, x.qp.zero_point, x.qp.scale)
            if y is not None:
                return y
        return average_integers(op_type, x.q, x.qp, attributes)

    def float_bytes(self, values):
        return 4 * values[0].q.size

    def emit(self, g, node):
        name, x_t = node.name, node.inputs[0]
        x_qp = g.qparams(x_t)
        centred = g.fresh(f"{x_t}_centred")
        g.node("DequantizeLinear", [g.integer_input(x_t), g.const(f"{name}.unit_scale", np.float32(1.0)),
                                    g.zero_point(f"{name}.x", x_qp)], [centred], name=f"{name}.centre")
        mean = g.fresh(f"{name}.mean")
        g.node(node.op_type, [centred], [mean], name=name, **g.attributes(node))
        y = g.fresh(f"{node.outputs[0]}_float")
        g.node("Mul", [mean, g.scale(f"{name}.x", x_qp)], [y], name=f"{name}.scale")
        g.quantize_output(y, node.outputs[0], name)


def _per_row(qp: QParams) -> bool:
    """Blocked qparams with one block per row along the last axis (:mod:`refquant.executor.per_row`)."""
    return qp.block_size > 0 and qp.axis == qp.scale.ndim - 1 and qp.scale.shape[-1] == 1


class MatMulIntegers(IntegerOp):
    """MatMul of two quantized activations (attention's ``Q·Kᵀ`` and ``P·V``), both per tensor::

        acc = Σ_k (a[..., m, k] − z_a)(b[..., k, n] − z_b)      exact, int32 (batch axes broadcast)
        y   = float32(acc) · float32(s_a · s_b)

    The accumulator is exact (products summed in int64, an error — never a wrap — beyond int32,
    :class:`~refquant.kernels.reference.AccumulatorOverflowError`); ``float32(acc)`` rounds to
    nearest even (exact below 2**24); one float32 multiply by the float32 product of the scales.
    ``y`` (float32) is then quantized with the output qparams — or stays float inside a float
    island. This is onnxruntime's ``MatMulInteger`` followed by ``Cast`` and ``Mul`` (what its
    dynamic quantization emits), and exports to exactly those nodes, then ``QuantizeLinear``.

    Per-row (per-token) qparams (:mod:`refquant.executor.per_row`): a per-row ``A`` keeps its
    rows' scales and zero points, ``z_a[..., m]`` and ``y = float32(acc) · float32(s_a[..., m] · s_b)``
    (each row's scale factors out of its dot products); a per-row ``B`` — whose rows run along
    the summed axis, where a scale cannot factor out — is first requantized onto one per-tensor
    grid (:func:`per_tensor`). Not exported (per-tensor only).
    """

    op_types = ("MatMul",)
    keeps_qparams = False
    kernel = "integer"

    def supports(self, op_type, operands):
        return len(operands) == 2 and all(
            isinstance(o, QParams) and (o.per_tensor or _per_row(o)) and o.fmt.storage_dtype.itemsize == 1
            for o in operands)

    def compute(self, op_type, values, attributes, *, name, backend=None):
        a, b = values
        if not b.qp.per_tensor:  # B's rows run along the summed axis: one per-tensor grid (per_tensor)
            b = per_tensor(b, name)
        if a.q.ndim < 2 or b.q.ndim < 2 or a.q.shape[-1] != b.q.shape[-2]:
            raise ValueError(f"{name}: MatMul shapes {a.q.shape} and {b.q.shape} are not compatible")
        if not a.qp.per_tensor and a.qp.scale.shape != a.q.shape[:-1] + (1,):
            raise ValueError(f"{name}: blocked qparams of A must hold one block per row (scale shape "
                             f"{a.q.shape[:-1] + (1,)}), got {a.qp.scale.shape}")
        # a per-row zero point / scale of A ([..., M, 1]) broadcasts along each row
        ca = a.q.astype(np.int64) - a.qp.zero_point.astype(np.int64)
        cb = b.q.astype(np.int64) - np.int64(b.qp.zero_point)
        acc = _to_int32(_exact_matmul(ca, cb), name)
        return acc.astype(np.float32) * (a.qp.scale.astype(np.float32) * np.float32(b.qp.scale)).astype(np.float32)

    def emit(self, g, node):
        name = node.name
        qa, qb = (g.qparams(t) for t in node.inputs[:2])
        if not (qa.per_tensor and qb.per_tensor):
            raise ValueError(f"{name}: a MatMul of per-row (per-token) activations has no QOperator form here")
        acc = g.fresh(f"{name}.accumulators")
        g.node("MatMulInteger", [g.integer_input(node.inputs[0]), g.integer_input(node.inputs[1]),
                                 g.zero_point(f"{name}.a", qa), g.zero_point(f"{name}.b", qb)], [acc], name=name)
        accf = g.fresh(f"{name}.accumulators_float")
        g.node("Cast", [acc], [accf], name=f"{name}.cast", to=1)
        y = g.fresh(f"{node.outputs[0]}_float")
        scale = np.float32(np.float32(qa.scale) * np.float32(qb.scale))
        g.node("Mul", [accf, g.const(f"{name}.scale", scale)], [y], name=f"{name}.scale")
        g.quantize_output(y, node.outputs[0], name)


class DequantizeOpQuantize(IntegerOp):
    """The fallback (Add, Mul, Concat, Softmax, Sigmoid, an unfolded BatchNormalization, and any
    operator whose entry does not apply): every quantized input dequantized — ``(q − z) · s`` in float32 — the
    float32 operator of :mod:`refquant.ops` on them and the constants, and the float32 result
    quantized with the output qparams (ONNX Runtime's QDQ semantics). Exports to
    ``DequantizeLinear`` → the operator → ``QuantizeLinear``. An ``Add`` of two quantized
    tensors is computed by the backend's hook ``dequantized_add(a, qa, b, qb)`` when it has one
    (the ``numba`` backend's: the same float32 operations in one pass; ``None`` means "run
    this rule").
    """

    keeps_qparams = False
    kernel = "float"

    def supports(self, op_type, operands):
        return True

    def compute(self, op_type, values, attributes, *, name, backend=None):
        hook = getattr(backend, "dequantized_add", None)
        if hook is not None and op_type == "Add" and len(values) == 2 and all(isinstance(v, QTensor) for v in values):
            y = hook(values[0].q, values[0].qp, values[1].q, values[1].qp)
            if y is not None:
                return y
        args = [dequantize(v.q, v.qp) if isinstance(v, QTensor) else v for v in values]
        try:
            return FLOAT_OPS[op_type](*args, **attributes)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{name} ({op_type}): {exc}") from exc

    def float_bytes(self, values):
        return sum(4 * v.q.size for v in values if isinstance(v, QTensor))

    def emit(self, g, node):
        ins = [g.float_input(t) for t in node.inputs]
        y = g.fresh(f"{node.outputs[0]}_float")
        g.node(node.op_type, ins, [y], name=node.name, **g.attributes(node))
        g.quantize_output(y, node.outputs[0], node.name)


#: operator → its entry (operators without one always take :data:`FALLBACK`)
TABLE: dict = {op: entry for entry in (Relu(), Clip(), MaxPool(), ShapeOp(), MoveOp(), AveragePools(), MatMulIntegers())
               for op in entry.op_types}
FALLBACK = DequantizeOpQuantize()
#: operators whose rule keeps the input's qparams (no new quantization follows them)
INTEGER_OPS = tuple(op for op, entry in TABLE.items() if entry.keeps_qparams)


def rule_for(op_type: str, operands: list) -> IntegerOp:
    """The entry that runs a node of ``op_type`` with these operands (:meth:`IntegerOp.supports`)."""
    entry = TABLE.get(op_type)
    return entry if entry is not None and entry.supports(op_type, operands) else FALLBACK
