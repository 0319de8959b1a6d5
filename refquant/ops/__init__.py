"""Float (NumPy float32) forward functions of the ONNX operators refquant runs.

One small module per operator family.  Every function takes its ONNX inputs positionally, in
ONNX order (an absent optional input is ``None``), and its ONNX attributes as keyword
arguments with the ONNX names and defaults, so that a graph node runs as::

    FLOAT_OPS[node.op_type](*inputs, **node.attributes)

Inputs and outputs are float32 (Reshape's ``shape`` is int64).  An output may share memory
with an input (Reshape, Flatten, Clip without bounds): callers never write into tensors.
"""

from __future__ import annotations

from .batchnorm import batch_normalization
from .conv import conv
from .elementwise import add, clip, relu
from .gemm import gemm, matmul
from .pool import average_pool, global_average_pool, max_pool
from .shape import flatten, reshape
from .softmax import softmax

FLOAT_OPS = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "Relu": relu,
    "Clip": clip,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "Add": add,
    "Flatten": flatten,
    "Reshape": reshape,
    "Softmax": softmax,
    "BatchNormalization": batch_normalization,
}

__all__ = [
    "FLOAT_OPS",
    "add",
    "average_pool",
    "batch_normalization",
    "clip",
    "conv",
    "flatten",
    "gemm",
    "global_average_pool",
    "matmul",
    "max_pool",
    "relu",
    "reshape",
    "softmax",
]
