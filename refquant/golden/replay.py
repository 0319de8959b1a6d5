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
from ..kernels import reference
from ..numerics import dequantize, make_requantizer, quantize, requantize
from ..ops import FLOAT_OPS

__all__ = ["compute_layer", "layer_accumulators", "layer_requantizer", "kernel_input", "kernel_output", "replay",
           "KERNEL_OPS"]

KERNEL_OPS = ("Conv", "Gemm", "MatMul")


def _conv_attributes(layer: dict) -> dict:
    return {k: v for k, v in layer["attributes"].items() if k != "kernel_shape"}


def kernel_input(gs, layer: dict, x: np.ndarray) -> np.ndarray:
    """The integer input a Conv/Gemm/MatMul kernel reads, given its producer's output ``x``.

    A producer with per-channel qparams is first requantized onto one per-tensor grid, as
    the executor does; a Gemm input is flattened to ``[N, K]``, a MatMul input of rank > 2
    ``[N, L, K]`` is viewed as its rows ``[N·L, K]`` (:func:`kernel_output` puts them back).
    """
    producer = gs.layer(layer["inputs"][0])
    src_qp = gs.qparams(producer, "output")
    if not src_qp.per_tensor:
        x = per_tensor(QTensor(x, src_qp), layer["name"]).q
    if layer["op"] == "Conv":
        return x
    return x.reshape(-1, x.shape[-1]) if layer["op"] == "MatMul" and x.ndim > 2 else x.reshape(x.shape[0], -1)


def kernel_output(layer: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A MatMul layer's rows ``[N·L, M]`` back in its input's leading shape ``[N, L, M]``."""
    return y.reshape(*x.shape[:-1], y.shape[-1]) if layer["op"] == "MatMul" and x.ndim > 2 else y


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


def _kernel_layer(gs, layer, x, kernels, mode):
    x = kernel_input(gs, layer, x)
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
    xf = dequantize(kernel_input(gs, layer, x), x_qp)
    wf, b = gs.layer_tensor(layer, "weight"), gs.layer_tensor(layer, "bias")
    if layer["op"] == "Conv":
        y = FLOAT_OPS["Conv"](xf, wf, b, **_conv_attributes(layer))
    else:
        y = FLOAT_OPS["Gemm"](xf, wf, b, transB=1)
    act = layer["fused_activation"]
    if act is not None:
        y = np.clip(y, 0, 6 if act == "relu6" else None).astype(np.float32)
    return quantize(y, y_qp)


def _operands(gs, layer, inputs):
    """Positional operands of a non-kernel layer: producers' outputs and constants, in node order."""
    producers = iter(zip(layer["inputs"], inputs))
    args = []
    for operand in layer.get("operands") or [{"layer": n} for n in layer["inputs"]]:
        if operand is None:
            args.append(None)
        elif "constant" in operand:
            c = layer["constants"][operand["constant"]]
            args.append(np.asarray(c["values"], c["dtype"]).reshape(c["shape"]))
        else:
            name, x = next(producers)
            args.append(QTensor(x, gs.qparams(gs.layer(name), "output")))
    return args


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
    if kernel == "input":  # QuantizeLinear of the float graph input, or integers given as they are
        return quantize(gs.layer_tensor(layer, "input"), y_qp) if op == "QuantizeLinear" else \
            gs.layer_tensor(layer, "output")
    if op in KERNEL_OPS and kernel in ("fused", "unfused"):
        return kernel_output(layer, inputs[0], _kernel_layer(gs, layer, inputs[0], kernels, mode))
    if op in KERNEL_OPS and "weight" in layer["tensors"]:
        return kernel_output(layer, inputs[0], _float_kernel_layer(gs, layer, inputs[0]))
    args = _operands(gs, layer, inputs)
    rule = rule_for(op, operand_kinds(args))
    if rule.kernel != kernel:
        raise ValueError(f"layer {layer['name']!r} ({op}): recorded kernel {kernel!r}, but its inputs' qparams "
                         f"select the {type(rule).__name__} rule (kernel {rule.kernel!r})")
    y = rule.compute(op, args, layer["attributes"], name=layer["name"])
    return np.ascontiguousarray(y) if rule.keeps_qparams else quantize(y, y_qp)


def replay(gs, kernels=reference, *, mode: str | None = None) -> dict:
    """``{layer name: integer output}`` of every layer, each computed from the golden outputs
    of its input layers (Conv/Gemm/MatMul on ``kernels``)."""
    out = {}
    for layer in gs.layers:
        inputs = [gs.layer_tensor(gs.layer(n), "output") for n in layer["inputs"]]
        out[layer["name"]] = compute_layer(gs, layer, inputs, kernels=kernels, mode=mode)
    return out
