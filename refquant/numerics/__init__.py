"""refquant's numerics: integer and float formats, qparams, quantize/dequantize, requantization.

The authority for every rule here is ``spec/numerics.md``.
"""

from .floatformats import (
    FLOAT_FORMATS,
    FloatFormat,
    as_ml_dtypes,
    decode_format,
    encode_format,
    float_format,
    format_values,
    round_to_format,
)
from .intformats import INT_FORMAT_NAMES, IntFormat, int_format, pack_nibbles, unpack_nibbles
from .qparams import QParams, expand_along_axis, qparams_from_range, tensor_range
from .quantize import dequantize, quantize, round_half_even, saturate
from .summation import pairwise_sum
from .requant import (
    MAX_POT_EXPONENT,
    REQUANT_MODES,
    Requantizer,
    float32_multiplier,
    make_requantizer,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
