"""Anchor rows: onnxruntime's own post-training quantizer on the same float model and data.

``quantize_static`` (``onnxruntime.quantization``) quantizes :func:`~refquant.onnx_io.export_float`'s
model with the same calibration inputs refquant calibrates on: QDQ format, uint8 activations,
int8 weights (per channel by default), calibration method ``MinMax``, ``Entropy`` or
``Percentile`` (onnxruntime's defaults for each: Percentile 99.999, Entropy 128 bins). No
``quant_pre_process`` (the float export is already BN-folded and shape-complete). The model is
run by onnxruntime with its graph optimizations on (``ORT_ENABLE_ALL``) — how it is deployed:
the QDQ pairs fuse into QLinearConv / QLinearMatMul, whose u8·s8 products saturate on an
x86-64 CPU without AVX-VNNI (:func:`~refquant.onnx_io.u8s8_saturation_note`). The anchor is
what onnxruntime computes *on this host*, not an exact integer reference.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

from .exporter import export_float
from .runtime import ort_session, require_onnxruntime

__all__ = ["ANCHOR_METHODS", "ort_outputs", "ort_quantize_dynamic", "ort_quantize_static", "ort_logits"]

ANCHOR_METHODS = ("MinMax", "Entropy", "Percentile")


def ort_quantize_static(graph, calibration: np.ndarray, method: str = "MinMax", *, per_channel: bool = True):
    """The QDQ model bytes onnxruntime's ``quantize_static`` makes of ``graph`` calibrated on
    ``calibration`` (the first input's values, fed one image at a time; or a list of feeds
    dicts, fed one dict at a time — a transformer's padded batches)."""
    require_onnxruntime()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in ANCHOR_METHODS:
        raise ValueError(f"method must be one of {ANCHOR_METHODS}, got {method!r}")
    name = graph.inputs[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            if isinstance(calibration, (list, tuple)):
                self.items = iter([dict(feeds) for feeds in calibration])
            else:
                self.items = iter([{name: np.ascontiguousarray(calibration[i:i + 1], np.float32)}
                                   for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="refquant-ort-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        export_float(graph).save(src)
        # its calibrators print progress on stdout: keep stdout for our output (compare --json)
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method))
        return dst.read_bytes()


def ort_logits(model: bytes, graph, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """``model``'s first output on ``x`` in batches, onnxruntime with graph optimizations on."""
    sess = ort_session(model, optimize=True)
    name, out = graph.inputs[0].name, sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {name: np.ascontiguousarray(x[i:i + batch], np.float32)})[0]
                           for i in range(0, len(x), batch)])


def ort_quantize_dynamic(graph, *, per_channel: bool = False) -> bytes:
    """The model bytes onnxruntime's ``quantize_dynamic`` makes of ``graph``'s float export: int8
    weights (per tensor by default, as the tool's default), activations quantized per tensor to
    uint8 at run time (``DynamicQuantizeLinear`` → ``MatMulInteger`` → ``Mul``), everything else float."""
    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="refquant-ort-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "dynamic.onnx"
        export_float(graph).save(src)
        with contextlib.redirect_stdout(sys.stderr):
            quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def ort_outputs(model: bytes, batches) -> np.ndarray:
    """``model``'s first output on each feeds dict of ``batches``, concatenated (graph optimizations on)."""
    sess = ort_session(model, optimize=True)
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], dict(feeds))[0] for feeds in batches])
