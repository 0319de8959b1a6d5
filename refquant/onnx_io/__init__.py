"""ONNX interoperability (the optional extra ``onnx``): import float models, export float,
QOperator and QDQ models, and run them in onnxruntime exactly one way.

    >>> from refquant.onnx_io import import_onnx, export_qoperator, run_onnxruntime
    >>> graph = import_onnx("model.onnx")                        # doctest: +SKIP
    >>> exported = export_qoperator(quantized_model)             # doctest: +SKIP
    >>> run_onnxruntime(exported.model, {"x": x})                # doctest: +SKIP

``onnx`` and ``onnxruntime`` are imported inside the functions; without them each function
raises an ImportError naming the extra (``pip install 'refquant[onnx]'``).
"""

from .exporter import (
    IR_VERSION,
    OPSET,
    ExportedModel,
    ExportError,
    export_float,
    export_qdq,
    export_qoperator,
    static_tensor_qparams,
)
from .importer import TRANSLATED_OPS, import_onnx
from .qimport import ImportedModel, import_quantized
from .runtime import (
    exact_integer_products, integer_product_probe, ort_session, require_onnx, require_onnxruntime, run_onnxruntime,
    u8s8_saturation_note,
)

__all__ = [
    "IR_VERSION",
    "ImportedModel",
    "import_quantized",
    "OPSET",
    "TRANSLATED_OPS",
    "ExportError",
    "ExportedModel",
    "export_float",
    "export_qdq",
    "exact_integer_products",
    "export_qoperator",
    "import_onnx",
    "integer_product_probe",
    "ort_session",
    "require_onnx",
    "require_onnxruntime",
    "run_onnxruntime",
    "static_tensor_qparams",
    "u8s8_saturation_note",
]
