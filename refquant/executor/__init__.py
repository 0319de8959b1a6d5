"""Executors: one traversal of the graph for float execution, calibration and quantized execution."""

from .calibration import CalibrationTrace, trace_calibration
from .float_exec import FloatEvent, run_float
from .quantized import QTensor, QuantizedLayer, QuantizedModel, RunResult, quantize_bias, quantize_model, weight_matrix
from .records import LayerRecord, peak_working_bytes
from .traverse import QUANTIZABLE_OPS, Step, lower, walk

__all__ = ["CalibrationTrace", "FloatEvent", "LayerRecord", "QTensor", "QUANTIZABLE_OPS", "QuantizedLayer",
           "QuantizedModel", "RunResult", "Step", "lower", "peak_working_bytes",
           "quantize_bias", "quantize_model", "run_float", "trace_calibration", "walk", "weight_matrix"]
