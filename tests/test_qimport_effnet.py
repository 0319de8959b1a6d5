"""EfficientNet-Lite0 quantized by onnxruntime's own tool (QDQ, per-channel int8 symmetric
activations and weights — a pair onnxruntime multiplies exactly on this host — calibrated on
the centre views of the photos) is imported and run bit-exactly equal to onnxruntime with its
optimizations on, on views the calibration did not see. The grid over the other configurations
is the command ``tests/qimport_effnet.py`` (table in ``spec/onnx-import.md``)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from refquant.onnx_io import exact_integer_products  # noqa: E402
from refquant.zoo import weight_file  # noqa: E402

try:
    weight_file("efficientnet-lite0")
except ImportError:  # pragma: no cover - the extra `models` is part of `test`
    pytest.skip("pip install 'refquant[models]'", allow_module_level=True)

from qimport_effnet import compare, quantized_model  # noqa: E402


def test_efficientnet_lite0_qdq_int8_is_bit_exact_with_onnxruntime():
    if not exact_integer_products("int8", "int8"):
        pytest.skip("onnxruntime does not multiply int8xint8 exactly on this host")
    path = quantized_model("qdq", "channel", "s8s8", "MinMax", calibration_views=("center",))
    from refquant.onnx_io.qimport import import_quantized

    ops = [s.op for s in import_quantized(path).steps]
    assert ops.count("QLinearConv") >= 40 and "QLinearAdd" in ops, sorted(set(ops))
    row = compare(path, "integer", ("flip",), backends=("numba",), photos=["chelsea", "coffee", "astronaut"])
    assert row["oracle"] == "onnxruntime, optimizations on" and row["images"] == 3
    assert row["bit_exact"] == 3 and row["differing"] == 0, row
