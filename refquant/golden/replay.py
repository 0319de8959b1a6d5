"""Recomputing a golden set's layers from their inputs: with refquant's rules, or on a backend.

A golden set is self-contained: every layer names its inputs (earlier layers' outputs), its
integer weight and bias, its qparams and its requant mode, so each layer can be recomputed
from the integers it read — without the float model. :func:`compute_layer` does one layer;
:func:`replay` does them all, each from the *golden* outputs of the layers before it (so a
mistake in one layer never hides or causes a difference in the next), and returns what a
backend would write to an outputs file for :func:`refquant.golden.verify`.

Only Conv/Gemm/MatMul layers run on the given kernel module (``kernels``: a module with the
signatures of :mod:`refquant.kernels.reference`, e.g. one registered through the
``register_backends`` hook); every other layer follows its entry in the integer-operator
table (:mod:`refquant.executor.integer_ops`, ``spec/integer-ops.md``) — the executor's rule:
Relu, Clip, MaxPool, Flatten and Reshape on the integers with the input's qparams;
AveragePool and GlobalAveragePool as the exact mean of ``q - z`` times the scale; Add,
Softmax and the rest as dequantize → float32 op → quantize.
"""

from __future__ import annotations

import numpy as np

from ..executor.integer_ops import QTensor, operand_kinds, per_tensor, rule_for
from ..executor.per_row import is_per_row, per_row_to_float
from ..kernels import reference
from ..kernels.reference import _exact_matmul, _to_int32
from ..numerics import dequantize, make_requantizer, quantize, requantize
from ..ops import FLOAT_OPS

__all__ = ["compute_layer", "layer_accumulators", "layer_requantizer", "kernel_input", "output_kind", "replay",
           "KERNEL_OPS"]

KERNEL_OPS = ("Conv", "Gemm", "MatMul")


def _conv_attributes(layer: dict) -> dict:
    return {k: v for k, v in layer["attributes"].items() if k != "kernel_shape"}


def kernel_input(gs, layer: dict, x: np.ndarray) -> np.ndarray:
    """The integer input a Conv/Gemm/MatMul kernel reads, given its producer's output ``x``.

    A producer with per-channel qparams is first requantized onto one per-tensor grid, as
    the executor does; a Gemm input is flattened to ``[N, K]``, a MatMul input of rank > 2
    ``[N, L, K]`` is viewed as its rows ``[N·L, K]`` (the callers put them back).
    """
    producer = gs.layer(layer["inputs"][0])
    src_qp = gs.qparams(producer, "output")
    if not src_qp.per_tensor:
        x = per_tensor(QTensor(x, src_qp), layer["name"]).q
    if layer["op"] == "MatMul" and x.ndim > 2:  # every leading (batch, token) position is one row
        return x.reshape(-1, x.shape[-1])
    return x if layer["op"] == "Conv" else x.reshape(x.shape[0], -1)


def output_kind(layer: dict) -> str:
    """``"quantized"`` (integers on the output qparams' grid), ``"float"`` (a float-island float32
    tensor) or ``"index"`` (integers given as they are, e.g. token ids) — format version 2."""
    return layer.get("output_kind", "quantized")


def _leading(gs, layer, x):
    """The leading shape an N-D MatMul's 2-D result is viewed back into (``None`` otherwise)."""
    return x.shape[:-1] if layer["op"] == "MatMul" and x.ndim > 2 else None


def layer_requantizer(gs, layer: dict, mode: str | None = None):
    """The layer's :class:`~refquant.numerics.Requantizer` in ``mode`` (default: the set's)."""
    return make_requantizer(gs.qparams(layer, "input").scale, gs.qparams(layer, "weight").scale,
                            gs.qparams(layer, "output").scale, gs.qparams(layer, "output").zero_point,
                            gs.qparams(layer, "output").fmt, mode=mode or gs.manifest["requant"],
                            activation=layer["fused_activation"])


def _kernel_args(gs, layer, x):
    x_qp, w_qp = gs.qparams(layer, "input"), gs.qparams(layer, "weight")
    return (x, gs.layer_tensor(layer, "weight"), int(x_qp.zero_point), w_qp.zero_point,
            gs.layer_tensor(layer, "bias"))


def layer_accumulators(gs, layer: dict, x: np.ndarray, kernels=reference) -> np.ndarray:
    """``Σ (x - z_x)(w - z_w) + bias`` (int32) of a Conv/Gemm/MatMul layer on the kernel input ``x``."""
    args = _kernel_args(gs, layer, x)
    if layer["op"] == "Conv":
        return kernels.conv2d_int32(*args, name=layer["name"], **_conv_attributes(layer))
    return kernels.matmul_int32(*args, name=layer["name"])


def _per_row_layer(gs, layer, x, kernels):
    """A MatMul reading per-row (per-token) integers, its output a float island
    (:func:`refquant.executor.per_row.per_row_to_float`)."""
    qp = gs.qparams(gs.layer(layer["inputs"][0]), "output")
    y, _ = per_row_to_float(kernels, x.reshape(-1, x.shape[-1]), qp, gs.layer_tensor(layer, "weight"),
                            gs.qparams(layer, "weight"), None, layer["name"])
    return y.reshape(x.shape[:-1] + y.shape[-1:])


def _kernel_layer(gs, layer, x, kernels, mode):
    if (output_kind(layer) == "float" and layer["op"] == "MatMul"
            and is_per_row(gs.qparams(gs.layer(layer["inputs"][0]), "output"), x.shape)):
        return _per_row_layer(gs, layer, x, kernels)
    lead = _leading(gs, layer, x)
    y = _kernel_layer_2d(gs, layer, kernel_input(gs, layer, x), kernels, mode)
    return y if lead is None else y.reshape(lead + y.shape[-1:])


def _kernel_layer_2d(gs, layer, x, kernels, mode):
    if output_kind(layer) == "accumulator":  # an imported MatMulInteger: the int32 accumulators themselves
        return layer_accumulators(gs, layer, x, kernels)
    if output_kind(layer) == "float":  # a float island follows: float32(acc) · float32(s_x · s_w[c])
        acc = layer_accumulators(gs, layer, x, kernels)
        x_qp, w_qp = gs.qparams(layer, "input"), gs.qparams(layer, "weight")
        scale = (np.float32(x_qp.scale) * np.atleast_1d(np.asarray(w_qp.scale, np.float32))).astype(np.float32)
        return acc.astype(np.float32) * (scale.reshape(-1, 1, 1) if layer["op"] == "Conv" and scale.size > 1 else scale)
    rq = layer_requantizer(gs, layer, mode)
    if layer["kernel"] == "unfused":
        acc = layer_accumulators(gs, layer, x, kernels)
        return getattr(kernels, "requantize", requantize)(acc, rq, channel_axis=1)
    args = _kernel_args(gs, layer, x)
    if layer["op"] == "Conv":
        return kernels.conv2d_requant(*args, rq, name=layer["name"], **_conv_attributes(layer))
    return kernels.matmul_requant(*args, rq, name=layer["name"])


def _float_kernel_layer(gs, layer, x):
    """A layer whose weights execute in float (fake-quantized): the executor's float path."""
    x_qp, y_qp = gs.qparams(layer, "input"), gs.qparams(layer, "output")
    lead = _leading(gs, layer, x)
    xf = dequantize(kernel_input(gs, layer, x), x_qp)
    wf, b = gs.layer_tensor(layer, "weight"), gs.layer_tensor(layer, "bias")
    if layer["op"] == "Conv":
        y = FLOAT_OPS["Conv"](xf, wf, b, **_conv_attributes(layer))
    else:
        y = FLOAT_OPS["Gemm"](xf, wf, b, transB=1)
    act = layer["fused_activation"]
    if act is not None:
        y = np.clip(y, 0, 6 if act == "relu6" else None).astype(np.float32)
    y = y if lead is None else y.reshape(lead + y.shape[-1:])
    return y if output_kind(layer) == "float" else quantize(y, y_qp)


def _constant(gs, c: dict) -> np.ndarray:
    if "file" in c:  # a large constant (an embedding table), format version 2
        return gs.tensor(c["file"])
    return np.asarray(c["values"], c["dtype"]).reshape(c["shape"])


def _operands(gs, layer, inputs):
    """Positional operands of a non-kernel layer: producers' outputs (a :class:`QTensor` for a
    quantized one, the array of a float or index one) and constants, in node order."""
    producers = iter(zip(layer["inputs"], inputs))
    args = []
    for operand in layer.get("operands") or [{"layer": n} for n in layer["inputs"]]:
        if operand is None:
            args.append(None)
        elif "constant" in operand:
            args.append(_constant(gs, layer["constants"][operand["constant"]]))
        else:
            name, x = next(producers)
            producer = gs.layer(name)
            args.append(QTensor(x, gs.qparams(producer, "output")) if output_kind(producer) == "quantized" else x)
    return args


def _float_values(gs, layer, args):
    """Float islands: a float operator reads a quantized operand's recorded ``float`` tensor (the
    value before it was quantized), where its producer has one, instead of its dequantized integers."""
    names = iter(layer["inputs"])
    out = []
    for operand, a in zip(layer.get("operands") or [{"layer": n} for n in layer["inputs"]], args):
        if operand is not None and "layer" in operand:
            f = gs.layer_tensor(gs.layer(next(names)), "float")
            out.append(a if f is None else f)
        else:
            out.append(a)
    return out


def compute_layer(gs, layer: dict, inputs: list, *, kernels=reference, mode: str | None = None) -> np.ndarray:
    """The integer output of ``layer`` from the integer outputs ``inputs`` of its input layers.

    ``kernels`` runs Conv/Gemm/MatMul (integer execution); ``mode`` overrides the set's
    requant mode. Every other layer follows refquant's rules (module docstring).
    """
    op, kernel = layer["op"], layer["kernel"]
    if (layer.get("imported") or {}).get("replayable") is False:
        raise ValueError(f"layer {layer['name']!r}: an imported {layer['imported'].get('onnx_op')} layer follows "
                         f"onnxruntime's rule ({layer['imported'].get('rule', '?')}), which replay does not run")
    y_qp = gs.qparams(layer, "output")
    if kernel == "input" and output_kind(layer) != "quantized":  # token ids, a float input: given
        return gs.layer_tensor(layer, "output")
    if kernel == "input":  # QuantizeLinear of the float graph input, or integers given as they are
        return quantize(gs.layer_tensor(layer, "input"), y_qp) if op in ("QuantizeLinear", "DynamicQuantizeLinear") else \
            gs.layer_tensor(layer, "output")
    if op in KERNEL_OPS and kernel in ("fused", "unfused"):
        return _kernel_layer(gs, layer, inputs[0], kernels, mode)
    if op in KERNEL_OPS and "weight" in layer["tensors"]:
        return _float_kernel_layer(gs, layer, inputs[0])
    if output_kind(layer) == "accumulator":  # MatMulInteger of two activations: Σ (a − z_a)(b − z_b), int32
        a_qp, b_qp = (gs.qparams(gs.layer(n), "output") for n in layer["inputs"][:2])
        ca = inputs[0].astype(np.int64) - np.int64(a_qp.zero_point)
        cb = inputs[1].astype(np.int64) - np.int64(b_qp.zero_point)
        return _to_int32(_exact_matmul(ca, cb), layer["name"])
    args = _operands(gs, layer, inputs)
    rule = rule_for(op, operand_kinds(args))
    if rule.kernel != kernel:
        raise ValueError(f"layer {layer['name']!r} ({op}): recorded kernel {kernel!r}, but its inputs' qparams "
                         f"select the {type(rule).__name__} rule (kernel {rule.kernel!r})")
    if not rule.keeps_qparams and rule.kernel == "float":
        args = _float_values(gs, layer, args)
    y = rule.compute(op, args, layer["attributes"], name=layer["name"])
    if output_kind(layer) == "float":
        return np.asarray(y, np.float32)
    return np.ascontiguousarray(y) if rule.keeps_qparams else quantize(y, y_qp)


def replay(gs, kernels=reference, *, mode: str | None = None) -> dict:
    """``{layer name: integer output}`` of every layer, each computed from the golden outputs
    of its input layers (Conv/Gemm/MatMul on ``kernels``)."""
    out = {}
    for layer in gs.layers:
        inputs = [gs.layer_tensor(gs.layer(n), "output") for n in layer["inputs"]]
        out[layer["name"]] = compute_layer(gs, layer, inputs, kernels=kernels, mode=mode)
    return out
