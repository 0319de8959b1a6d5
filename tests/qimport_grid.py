"""Quantize the shipped digits models with onnxruntime's own tool and compare refquant's import
bit for bit with the oracle that is exact on this host. Used by ``tests/test_onnx_qimport.py``
(a subset of images) and, as a command, for the table in ``spec/onnx-import.md``::

    .venv/bin/python tests/qimport_grid.py [--images 599] [--models digits-cnn ...] [--calibration MinMax ...]

Oracles (``oracle_for``):

* ``integer`` semantics — onnxruntime with graph optimizations on (``ORT_ENABLE_ALL``) and the
  session option ``session.qdqisint8allowed=1`` (without it onnxruntime's
  ``QDQS8ToU8Transformer`` rewrites int8 activations to uint8 on x86, which makes the products
  u8×s8), *if* ``integer_product_probe`` says onnxruntime multiplies every dtype pair the model
  multiplies exactly on this host; otherwise no oracle (reported as ``-``);
* ``qdq-float`` semantics — onnxruntime with optimizations off (every Q/DQ and float op as
  written), exact on any host (no integer products).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.onnx_io import exact_integer_products, export_float
from refquant.onnx_io.qimport import import_quantized
from refquant.registry import resolve_model

MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
#: activation × weight types: uint8 asymmetric × uint8, int8 symmetric × int8, uint8 × int8 (the default)
ACTIVATIONS = {"u8u8": ("QUInt8", "QUInt8", False), "s8s8": ("QInt8", "QInt8", True),
               "u8s8": ("QUInt8", "QInt8", False)}
CALIBRATIONS = ("MinMax", "Entropy", "Percentile")
CALIBRATION_IMAGES = 32

_DIGITS = None
_CACHE = os.path.join(tempfile.gettempdir(), f"refquant-qimport-{os.getuid()}")


def digits():
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    return _DIGITS


def float_model(name: str) -> str:
    os.makedirs(_CACHE, exist_ok=True)
    path = os.path.join(_CACHE, f"{name}.float.onnx")
    if not os.path.exists(path):
        export_float(resolve_model(name)).save(path)
    return path


def quantized_model(name: str, form: str, granularity: str, act: str, calibration: str = "MinMax") -> str:
    """onnxruntime's ``quantize_static`` (``form`` qoperator|qdq, ``granularity`` tensor|channel),
    or ``quantize_dynamic`` for ``form="dynamic"``; cached by configuration."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    path = os.path.join(_CACHE, f"{name}.{form}.{granularity}.{act}.{calibration}.onnx")
    if os.path.exists(path):
        return path
    src = float_model(name)
    a, w, symmetric = ACTIVATIONS[act]
    if form == "dynamic":
        quantize_dynamic(src, path, weight_type=getattr(QuantType, w), per_channel=granularity == "channel")
        return path
    graph = resolve_model(name)
    x = digits_inputs(graph, digits().calibration(CALIBRATION_IMAGES).x).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{graph.inputs[0].name: x[i:i + 8]} for i in range(0, len(x), 8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(src, path, Reader(), quant_format=QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ,
                    per_channel=granularity == "channel", activation_type=getattr(QuantType, a),
                    weight_type=getattr(QuantType, w), calibrate_method=getattr(CalibrationMethod, calibration),
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return path


def product_pairs(model) -> set:
    """The (input dtype, weight dtype) pairs of every integer product in an imported model."""
    pairs = set()
    for s in model.steps:
        if s.op in ("QLinearConv", "QLinearMatMul", "QGemm"):
            w = model.consts.get(s.inputs[3])
            x_zp = model.consts.get(s.inputs[2])
            if w is not None and x_zp is not None:
                pairs.add((np.asarray(x_zp).dtype.name, np.asarray(w).dtype.name,
                          "QLinearConv" if s.op == "QLinearConv" else "MatMulInteger"))
        elif s.op in ("MatMulInteger", "ConvInteger"):
            w = model.consts.get(s.inputs[1])
            pairs.add(("uint8", np.asarray(w).dtype.name if w is not None else "uint8", s.op))
    return pairs


def oracle_for(model, semantics: str):
    """``(session, label)`` of the exact oracle for this imported model, or ``(None, reason)``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if semantics == "qdq-float":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        label = "onnxruntime, optimizations off"
    else:
        bad = [p for p in product_pairs(model) if not exact_integer_products(p[0], p[1], p[2])]
        if bad:
            return None, "onnxruntime inexact here for " + ", ".join(sorted({f"{a}x{b}" for a, b, _ in bad}))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.qdqisint8allowed", "1")
        label = "onnxruntime, optimizations on"
    return ort.InferenceSession(model.source, options, providers=["CPUExecutionProvider"]), label


def compare(path: str, semantics: str, images: int, backends=("reference",), requant: str = "float32") -> dict:
    """Run refquant and the oracle on the first ``images`` digits test images; one row."""
    name = os.path.basename(path).split(".")[0]
    m = import_quantized(path, semantics=semantics)
    graph = resolve_model(name)
    x = digits_inputs(graph, digits().test.x[:images]).astype(np.float32)
    session, label = oracle_for(m, semantics)
    row = {"model": os.path.basename(path)[:-5], "semantics": semantics, "oracle": label, "images": images}
    if session is None:
        row["bit_exact"] = "-"
        return row
    want = session.run(None, {m.inputs[0][0]: x})[0]
    for b in backends:
        got = m.run({m.inputs[0][0]: x}, backend=b, requant=requant).outputs[m.outputs[0]]
        same = np.all(got == want, axis=tuple(range(1, got.ndim)))
        row[f"bit_exact[{b}]"] = int(same.sum())
    row["bit_exact"] = min(v for k, v in row.items() if k.startswith("bit_exact["))
    return row


def grid(models=MODELS, forms=("qoperator", "qdq"), granularities=("tensor", "channel"),
         acts=("u8u8", "s8s8", "u8s8"), calibrations=("MinMax",)):
    for name in models:
        for form in forms:
            for gran in granularities:
                for act in acts:
                    for cal in calibrations:
                        yield name, form, gran, act, cal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=599)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--calibration", nargs="+", default=["MinMax"])
    p.add_argument("--acts", nargs="+", default=list(ACTIVATIONS))
    p.add_argument("--backends", nargs="+", default=["reference", "numba"])
    args = p.parse_args(argv)
    print("| model | form | granularity | activations×weights | calibration | semantics | oracle | bit-exact images |")
    print("|---|---|---|---|---|---|---|---|")
    configs = list(grid(args.models, acts=args.acts, calibrations=args.calibration))
    configs += [(n, "dynamic", g, "u8u8", "-") for n in args.models if n == "digits-mlp" for g in ("tensor",)]
    configs += [(n, "dynamic", g, "u8s8", "-") for n in args.models if n == "digits-mlp" for g in ("tensor",)]
    for name, form, gran, act, cal in configs:
        path = quantized_model(name, form, gran, act, cal)
        for sem in ("integer", "qdq-float") if form == "qdq" else ("integer",):
            try:
                r = compare(path, sem, args.images, tuple(args.backends))
                exact = r["bit_exact"] if r["bit_exact"] == "-" else f"{r['bit_exact']}/{args.images}"
            except Exception as exc:  # noqa: BLE001 - a row says what failed
                r, exact = {"oracle": "-"}, f"error: {exc}"
            print(f"| {name} | {form} | {gran} | {act} | {cal} | {sem} | {r['oracle']} | {exact} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
