"""Operator-level golden cases in the ONNX backend test-data layout.

Each case is one ``QLinearConv``, ``QLinearMatMul``, ``QuantizeLinear`` or
``DequantizeLinear`` node (opset 21) whose every input is a graph input, with inputs drawn
from a fixed seed and the expected output computed by :mod:`refquant.functional`. ONNX does
not say how QLinear operators round, and its two main implementations differ (onnxruntime
rounds ``float32(acc)·m`` half to even and adds ``z_y`` after; the onnx reference evaluator
adds ``z_y`` before rounding in float64) — so every QLinear case exists twice:
``NAME`` expects refquant's ``float32`` mode (what onnxruntime computes) and
``NAME_float64`` expects the ``float64`` mode (what the onnx reference evaluator computes).
The ``*_ties`` cases use power-of-two scales and an odd output zero point, where the two
differ on many elements. Each case's ``case.json`` records its mode and every file's SHA-256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import functional as F
from ..onnx_io.runtime import require_onnx
from .onnx_layout import write_onnx_case

__all__ = ["OPERATOR_CASES", "operator_case", "write_operator_cases"]

OPSET = 21


def _u8(rng, shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


def _i8(rng, shape, lo=-127):
    return rng.integers(lo, 128, shape).astype(np.int8)


def _conv_per_channel(rng):
    x, w = _u8(rng, (1, 3, 7, 7)), _i8(rng, (4, 3, 3, 3))
    inputs = [x, np.float32(0.0213), np.uint8(118), w, rng.uniform(0.002, 0.01, 4).astype(np.float32),
              np.zeros(4, np.int8), np.float32(0.173), np.uint8(97), rng.integers(-4000, 4000, 4).astype(np.int32)]
    return "QLinearConv", inputs, {"pads": [1, 1, 1, 1], "strides": [2, 2], "kernel_shape": [3, 3]}


def _conv_depthwise_dilated(rng):
    x, w = _i8(rng, (2, 4, 8, 8), -128), _i8(rng, (4, 1, 3, 3))
    inputs = [x, np.float32(0.05), np.int8(-3), w, np.float32(0.0071), np.int8(0), np.float32(0.21), np.int8(5)]
    return "QLinearConv", inputs, {"group": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2], "kernel_shape": [3, 3]}


def _conv_ties(rng):
    """m = 2**-4 · 2**-5 / 2**-8 = 1/2: every odd accumulator is a tie; small operands keep
    the outputs off the saturation bounds."""
    x = rng.integers(116, 141, (1, 2, 5, 5)).astype(np.uint8)
    w = rng.integers(-3, 4, (3, 2, 2, 2)).astype(np.int8)
    inputs = [x, np.float32(2**-4), np.uint8(128), w, np.float32(2**-5), np.int8(0), np.float32(2**-8),
              np.uint8(51), rng.integers(-64, 64, 3).astype(np.int32)]
    return "QLinearConv", inputs, {"kernel_shape": [2, 2]}


def _matmul_per_column(rng):
    a, b = _u8(rng, (5, 24)), _i8(rng, (24, 6))
    inputs = [a, np.float32(0.0186), np.uint8(121), b, rng.uniform(0.003, 0.02, 6).astype(np.float32),
              np.zeros(6, np.int8), np.float32(0.35), np.uint8(130)]
    return "QLinearMatMul", inputs, {}


def _matmul_ties(rng):
    """m = 2**-3 · 2**-4 / 2**-5 = 1/4: accumulators ≡ 2 (mod 4) are ties."""
    a = rng.integers(-8, 9, (4, 8)).astype(np.int8)
    b = rng.integers(-3, 4, (8, 5)).astype(np.int8)
    inputs = [a, np.float32(2**-3), np.int8(0), b, np.float32(2**-4), np.int8(0), np.float32(2**-5), np.int8(-7)]
    return "QLinearMatMul", inputs, {}


def _quantize_per_axis(rng):
    x = (rng.standard_normal((2, 3, 4)) * 2).astype(np.float32)
    x[0, 0, :2] = [0.25, -0.75]  # exact ties of x / 0.5: rounded half to even
    scale = np.array([0.5, 0.03, 0.011], np.float32)
    return "QuantizeLinear", [x, scale, np.array([3, -9, 0], np.int8)], {"axis": 1}


def _dequantize_per_axis(rng):
    x = _u8(rng, (3, 5))
    return "DequantizeLinear", [x, np.array([0.1, 0.021, 0.0037], np.float32), np.array([128, 7, 250], np.uint8)], {"axis": 0}


#: name → builder ``rng → (op, inputs, attributes)``
OPERATOR_CASES = {
    "qlinearconv_u8s8_per_channel": _conv_per_channel,
    "qlinearconv_s8_depthwise_dilated": _conv_depthwise_dilated,
    "qlinearconv_ties": _conv_ties,
    "qlinearmatmul_u8s8_per_column": _matmul_per_column,
    "qlinearmatmul_ties": _matmul_ties,
    "quantizelinear_per_axis": _quantize_per_axis,
    "dequantizelinear_per_axis": _dequantize_per_axis,
}
_FUNCTIONS = {"QLinearConv": F.qlinear_conv, "QLinearMatMul": F.qlinear_matmul,
              "QuantizeLinear": F.quantize_linear, "DequantizeLinear": F.dequantize_linear}
_INPUT_NAMES = {
    "QLinearConv": ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B"],
    "QLinearMatMul": ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"],
    "QuantizeLinear": ["x", "y_scale", "y_zero_point"],
    "DequantizeLinear": ["x", "x_scale", "x_zero_point"],
}


def operator_case(name: str, requant: str = "float32"):
    """``(model, inputs, outputs)`` of one case: inputs/outputs as ``[(name, array)]``."""
    onnx = require_onnx()
    h = onnx.helper
    base = name.removesuffix("_float64")
    seed = sorted(OPERATOR_CASES).index(base)
    op, args, attrs = OPERATOR_CASES[base](np.random.default_rng(seed))
    names = _INPUT_NAMES[op][:len(args)]
    inputs = [(n, np.asarray(a)) for n, a in zip(names, args)]
    kwargs = {"requant": requant} if op.startswith("QLinear") else {}
    y = np.asarray(_FUNCTIONS[op](*args, **attrs, **kwargs))
    infos = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs]
    out = h.make_tensor_value_info("y", h.np_dtype_to_tensor_dtype(y.dtype), list(y.shape))
    graph = h.make_graph([h.make_node(op, names, ["y"], **attrs)], name, infos, [out])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="refquant")
    model.ir_version = 8
    return model, inputs, [("y", y)]


def write_operator_cases(root) -> list[dict]:
    """Write every case (and its ``_float64`` twin for QLinear ops) under ``root``; return the index rows."""
    rows = []
    for base in sorted(OPERATOR_CASES):
        variants = [(base, "float32")]
        if base.startswith("qlinear"):
            variants.append((f"{base}_float64", "float64"))
        for name, requant in variants:
            model, inputs, outputs = operator_case(name, requant)
            op = model.graph.node[0].op_type
            desc = (f"one {op} node; expected output by refquant's {requant!r} requantization"
                    if op.startswith("QLinear") else f"one {op} node; expected output by refquant.functional")
            write_onnx_case(Path(root) / name, model, inputs, outputs, description=desc,
                            requant=requant if op.startswith("QLinear") else None)
            rows.append({"dir": name, "op": op, "requant": requant if op.startswith("QLinear") else None})
    return rows
