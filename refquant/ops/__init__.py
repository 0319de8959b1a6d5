"""Float (NumPy float32) forward functions of the ONNX operators refquant runs.

One small module per operator family.  Every function takes its ONNX inputs positionally, in
ONNX order (an absent optional input is ``None``), and its ONNX attributes as keyword
arguments with the ONNX names and defaults, so that a graph node runs as::

    FLOAT_OPS[node.op_type](*inputs, **node.attributes)

Inputs and outputs are float32 (Reshape's ``shape`` is int64).

Two tables (spec/numerics.md, "float reference path"): :data:`FLOAT_OPS` is the inference
forward — Conv, Gemm and MatMul accumulate in float64 in a fixed order and round once to
float32, so every result is the same on every IEEE-754 host; :data:`TRAINING_OPS` is the
training forward — the same except that Conv, Gemm and MatMul are float32 BLAS products
(``np.matmul``), whose summation order is the host BLAS kernel's.  The shipped models were
trained with the latter; the float executor, calibration and golden replay use the former.  An output may share memory
with an input (Reshape, Flatten): callers never write into tensors, except that the float
executor runs a fused Relu/Clip over its layer's own fresh output through
:data:`IN_PLACE_ACTIVATIONS`.
"""

from __future__ import annotations

from .arithmetic import div, mul, pow, sub
from .batchnorm import batch_normalization
from .conv import conv, conv_float32_blas
from .convtranspose import conv_transpose
from .elementwise import add, clip, clip_in_place, relu, relu_in_place
from .gather import gather
from .gelu import gelu
from .gemm import gemm, gemm_float32_blas, matmul, matmul_float32_blas
from .normalization import layer_normalization
from .layout import concat, squeeze, transpose, unsqueeze
from .pool import average_pool, global_average_pool, max_pool
from .reduce import reduce_mean, reduce_sum
from .resize import resize
from .shape import flatten, reshape
from .slice import slice_
from .softmax import softmax
from .unary import erf, hard_sigmoid, sigmoid, sqrt

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
    "Gather": gather,
    "LayerNormalization": layer_normalization,
    "Gelu": gelu,
    "Mul": mul,
    "Sub": sub,
    "Div": div,
    "Pow": pow,
    "Sqrt": sqrt,
    "Erf": erf,
    "Sigmoid": sigmoid,
    "HardSigmoid": hard_sigmoid,
    "Transpose": transpose,
    "Concat": concat,
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "ReduceMean": reduce_mean,
    "ReduceSum": reduce_sum,
    "ConvTranspose": conv_transpose,
    "Resize": resize,
    "Slice": slice_,
}

#: The activations a fused step may run in place over its layer's own output (same inputs and
#: results as their FLOAT_OPS forms, written into the first input, which is returned).
IN_PLACE_ACTIVATIONS = {"Relu": relu_in_place, "Clip": clip_in_place}

#: The training forward: FLOAT_OPS with float32 BLAS Conv, Gemm and MatMul.
TRAINING_OPS = {
    **FLOAT_OPS,
    "Conv": conv_float32_blas,
    "Gemm": gemm_float32_blas,
    "MatMul": matmul_float32_blas,
}

__all__ = [
    "FLOAT_OPS",
    "IN_PLACE_ACTIVATIONS",
    "TRAINING_OPS",
    "add",
    "concat",
    "div",
    "erf",
    "hard_sigmoid",
    "mul",
    "pow",
    "reduce_mean",
    "reduce_sum",
    "sigmoid",
    "sqrt",
    "squeeze",
    "sub",
    "transpose",
    "unsqueeze",
    "average_pool",
    "batch_normalization",
    "clip",
    "clip_in_place",
    "conv",
    "conv_float32_blas",
    "conv_transpose",
    "flatten",
    "gather",
    "gelu",
    "gemm",
    "gemm_float32_blas",
    "global_average_pool",
    "layer_normalization",
    "matmul",
    "matmul_float32_blas",
    "max_pool",
    "relu",
    "relu_in_place",
    "reshape",
    "resize",
    "slice_",
    "softmax",
]
