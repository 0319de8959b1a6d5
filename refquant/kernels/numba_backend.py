"""The ``numba`` kernel backend as the registry hands it out: the Numba kernels of
:mod:`refquant.kernels.fast` together with their prepared form, ``prepare_layer`` from
:mod:`refquant.kernels.fast_prepared` (weights packed once per layer).

Two modules, one backend: ``fast_prepared`` is built on ``fast``'s jitted kernels, so neither
may import the other's dependant; this module imports both. The functions are ``fast``'s own
objects — switches such as ``fast.USE_VNNI`` keep working. The integer-operator table's
pooling entries use the backend hooks ``max_pool_integers`` and ``global_average_integers``
(:mod:`refquant.kernels.fast_pool`) when the backend has them; the executor requantizes a
dynamic layer's int32 accumulators with ``requantize`` (:mod:`refquant.kernels.fast_requant`),
float32 tensors with ``quantize``, and the table's fallback adds two quantized tensors with
``dequantized_add`` (:mod:`refquant.kernels.fast_elementwise`).
"""

from .exact_gemm import conv2d_int32, conv2d_requant, matmul_int32, matmul_requant, requant_scratch_bytes
from .fast import AccumulatorOverflowError, TILE_PATHS, check_operands
from .fast_elementwise import dequantized_add, quantize
from .fast_pool import global_average_integers, max_pool_integers
from .fast_prepared import prepare_layer
from .fast_requant import requantize

__all__ = ["AccumulatorOverflowError", "TILE_PATHS", "check_operands", "conv2d_int32", "conv2d_requant",
           "matmul_int32", "matmul_requant", "requant_scratch_bytes", "prepare_layer",
           "max_pool_integers", "global_average_integers", "requantize", "quantize", "dequantized_add"]
