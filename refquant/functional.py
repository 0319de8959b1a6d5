"""ONNX's quantization operators as NumPy functions, with ONNX's inputs, attributes and dtypes.

============================  =====================  ======================================
function                      ONNX operator          output
============================  =====================  ======================================
``quantize_linear``           QuantizeLinear         quantized tensor
``dequantize_linear``         DequantizeLinear       float32 (or float16) tensor
``dynamic_quantize_linear``   DynamicQuantizeLinear  ``(y uint8, y_scale, y_zero_point)``
``qlinear_matmul``            QLinearMatMul          int8 / uint8 (``y_zero_point``'s type)
``qlinear_conv``              QLinearConv            int8 / uint8 (``y_zero_point``'s type)
``matmul_integer``            MatMulInteger          int32
``conv_integer``              ConvInteger            int32
============================  =====================  ======================================

Inputs come in ONNX's order and attributes under ONNX's names, so a node translates into a
call word for word: ``QLinearConv(x, x_scale, ..., pads=[1,1,1,1])`` is
``qlinear_conv(x, x_scale, ..., pads=[1, 1, 1, 1])``. Layouts are ONNX's: MatMul's ``b`` is
``[K, N]`` (this module hands the kernels its transpose, ``[N, K]``, contiguous), Conv is
NCHW with OIHW weights (1-D convolutions, NCL / OIL, are run as 2-D ones of height 1).

**Types NumPy lacks.** ``int4``/``uint4``/``int2``/``uint2`` tensors are int8/uint8 arrays that
hold the values (one per element, not packed; ``refquant.numerics.pack_nibbles`` packs them).
Float formats (``float8_e4m3fn``, ``float8_e5m2``, ``float6_e2m3fn``, ``float6_e3m2fn``,
``float4_e2m1fn``) are uint8 arrays of bit patterns (:func:`as_ml_dtypes` views them as
``ml_dtypes`` arrays). Where a uint8/int8 array cannot say which of these it holds, the
keyword ``output_dtype`` (QuantizeLinear) or ``x_dtype`` (DequantizeLinear) says it;
``ml_dtypes`` arrays (``int4``, ``float8_e4m3fn``, ...) are also accepted as they are.
Type names are the ``ml_dtypes``/NumPy names, ONNX ``TensorProto`` codes or NumPy dtypes.

**Requantization.** ``qlinear_matmul`` and ``qlinear_conv`` take ``requant=``, one of
``refquant.numerics.REQUANT_MODES``: ``"float32"`` (default; ONNX Runtime's MLAS),
``"float64"`` (the ``onnx`` reference evaluator), ``"fixed-point"`` and ``"fixed-point-single"``
(TFLite). Each is exact in its own convention; see ``refquant.numerics.requant``.

**Backends.** ``backend="reference"`` (NumPy) or ``"numba"``: the same numbers, bit for bit;
or any backend a plugin registers (``register_backends``), looked up in
:mod:`refquant.registry` exactly as the executor does. QuantizeLinear, DequantizeLinear and
DynamicQuantizeLinear have no kernel; they accept the argument for a uniform signature (an
unknown name is an error) and compute the same NumPy formula for every backend.

**Scales.** float32 as ONNX gives them. A float64 array or Python float is rounded to float32
once (ONNX has no float64 scales); float16 scales are accepted where ONNX allows them and
handled as each function's docstring says; bfloat16 and float8e8m0 scales are not supported.
Every scale must be finite and > 0 (``ValueError`` naming the argument otherwise).

**Zero points.** A NumPy array or scalar (``np.uint8(3)``) carries its type, which must be
the type of the tensor it belongs to (ONNX's rule); a Python int takes that type.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .numerics import (
    FLOAT_FORMATS,
    REQUANT_MODES,
    QParams,
    as_ml_dtypes,  # re-exported: views float-format outputs as ml_dtypes arrays
    decode_format,
    dequantize,
    encode_format,
    expand_along_axis,
    float_format,
    int_format,
    make_requantizer,
    qparams_from_range,
    quantize,
    round_half_even,
    tensor_range,
)
from .numerics import saturate as saturate_to_range  # (``saturate`` is QuantizeLinear's attribute)
from .ops.padding import AUTO_PAD_MODES
from .registry import backends, get_backend

__all__ = [
    "quantize_linear",
    "dequantize_linear",
    "dynamic_quantize_linear",
    "qlinear_matmul",
    "qlinear_conv",
    "matmul_integer",
    "conv_integer",
    "as_ml_dtypes",
    "ONNX_TYPE_CODES",
]

#: ONNX ``TensorProto.DataType`` codes of the types these operators use, by refquant name.
ONNX_TYPE_CODES = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "float16": 10,
    "bfloat16": 16, "float8_e4m3fn": 17, "float8_e4m3fnuz": 18, "float8_e5m2": 19,
    "float8_e5m2fnuz": 20, "uint4": 21, "int4": 22, "float4_e2m1fn": 23, "float8_e8m0fnu": 24,
    "uint2": 25, "int2": 26, "float6_e2m3fn": 27, "float6_e3m2fn": 28,
}
_NAME_OF_CODE = {code: name for name, code in ONNX_TYPE_CODES.items()}
_INT_QTYPES = ("uint8", "int8", "uint16", "int16", "uint4", "int4", "uint2", "int2")
_SUB_BYTE = {"int4": np.int8, "int2": np.int8, "uint4": np.uint8, "uint2": np.uint8}
_FLOAT_OUTPUTS = ("float32", "float16")


# --------------------------------------------------------------------------- argument checks

def _native(value) -> np.ndarray:
    """``value`` as an array in the machine's byte order (a big-endian ``>f4`` becomes ``float32``).

    Byte order is storage, not value: every function here accepts either order and computes
    on the same numbers (converted once, exactly).
    """
    a = np.asarray(value)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _int_attr(value, what: str, op: str) -> int:
    """An integer attribute (``axis``, ``group``, one entry of ``strides`` ...) as a Python int.

    ONNX attributes of type INT are integers; a float (``1.9``), a string (``"1"``) or a bool
    is refused with ``TypeError`` instead of being truncated by ``int()``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {what} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _int_list_attr(value, what: str, op: str) -> list[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{op}: {what} must be a list of integers, got {value!r}")
    return [_int_attr(v, f"{what} entry", op) for v in value]


def _type_name(spec, what: str, op: str) -> str:
    """Canonical name of a type given as a name, an ONNX code or a NumPy dtype."""
    if isinstance(spec, (bool, np.bool_)):
        raise TypeError(f"{op}: {what} must name a type, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        if int(spec) not in _NAME_OF_CODE:
            raise ValueError(f"{op}: {what} {int(spec)} is not an ONNX type code refquant knows")
        return _NAME_OF_CODE[int(spec)]
    if isinstance(spec, str):
        name = spec.strip().lower()
        name = {"float": "float32", "half": "float16"}.get(name, name)
        if name in ONNX_TYPE_CODES:
            return name
        raise ValueError(f"{op}: unknown {what} {spec!r}; known: {', '.join(ONNX_TYPE_CODES)}")
    try:
        return np.dtype(spec).name
    except TypeError:
        raise TypeError(f"{op}: {what} must be a type name, ONNX code or dtype, got {spec!r}") from None


def _check_backend(backend: str, op: str) -> None:
    if backend not in backends():
        raise ValueError(f"{op}: unknown backend {backend!r}; expected one of {', '.join(sorted(backends()))}")


def _check_requant(requant: str, op: str) -> None:
    if requant not in REQUANT_MODES:
        raise ValueError(f"{op}: unknown requant mode {requant!r}; expected one of {', '.join(REQUANT_MODES)}")


def _scale(value, what: str, op: str) -> tuple[np.ndarray, str]:
    """``(float32 scale, precision)``; precision is ``"float16"`` for float16 scales, else ``"float32"``.

    float16 widens to float32 exactly; float64 (and Python floats) round to float32 once.
    """
    s = _native(value)
    name = s.dtype.name
    if name == "float16":
        precision = "float16"
    elif name in ("float32", "float64") or s.dtype.kind in "iu":
        precision = "float32"
    else:
        raise TypeError(f"{op}: {what} must be float32 or float16, got dtype {name}")
    with np.errstate(over="ignore", under="ignore"):
        s32 = s.astype(np.float32)
    if s32.size == 0:
        raise ValueError(f"{op}: {what} is empty")
    bad = ~(np.isfinite(s32) & (s32 > 0))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{op}: {what} must be finite and > 0 (as float32), got "
                         f"{s[where]!r} at index {where}")
    return s32, precision


def _quantized(value, what: str, op: str, declared=None, allowed=_INT_QTYPES) -> tuple[np.ndarray, str]:
    """``(values, type name)`` of a quantized tensor.

    Integer types come back as their storage dtype (int4 in int8, ...), float formats as uint8
    bit patterns. ``declared`` names the type a uint8/int8 array holds; ``ml_dtypes`` arrays
    say it themselves. Values outside the type's range raise ``ValueError``.
    """
    a = _native(value)
    own = a.dtype.name
    if own in FLOAT_FORMATS:
        values, tname = a.view(np.uint8), own
    elif own in _SUB_BYTE:
        values, tname = a.astype(_SUB_BYTE[own]), own
    elif a.dtype.kind in "iu":
        values, tname = a, own
    else:
        raise TypeError(f"{op}: {what} must be a quantized (integer or float-format) tensor, got dtype {own}")
    if declared is not None:
        want = _type_name(declared, f"type of {what}", op)
        if want != tname:
            if tname not in ("int8", "uint8") or _storage(want) != values.dtype:
                raise TypeError(f"{op}: {what} has dtype {tname}, which cannot hold {want} values")
            tname = want
    if tname not in allowed:
        raise TypeError(f"{op}: {what} has type {tname}; expected one of {', '.join(allowed)}")
    if tname in FLOAT_FORMATS:
        bits = float_format(tname).total_bits
        if values.size and int(values.max()) >= 2**bits:
            raise ValueError(f"{op}: {what} holds bit patterns wider than the {bits} bits of {tname}")
    elif tname != "int32":
        fmt = int_format(tname)
        if values.size and (values.min() < fmt.qmin or values.max() > fmt.qmax):
            raise ValueError(f"{op}: {what} holds values outside the {tname} range [{fmt.qmin}, {fmt.qmax}]")
    return values, tname


def _storage(tname: str) -> np.dtype | None:
    """The NumPy dtype that holds a quantized tensor of type ``tname`` here (None: not one)."""
    if tname in FLOAT_FORMATS:
        return np.dtype(np.uint8)
    if tname in _SUB_BYTE:
        return np.dtype(_SUB_BYTE[tname])
    return np.dtype(tname) if tname in _INT_QTYPES + ("int32",) else None


def _is_python_int(value) -> bool:
    return type(value) is int


def _zero_point(value, tname: str, what: str, op: str, shape=None) -> np.ndarray:
    """Zero point of a tensor of type ``tname`` as int64 (bit patterns for float formats).

    A typed array must have the tensor's type (or its storage dtype: int8 for int4, uint8 for
    a float format); a Python int takes the type; ``None`` is 0. Values must lie in the type's
    range; a float format's zero point must be ±0. ``shape``, when given, is the scale's shape,
    which a zero point of more than one element must have (ONNX's rule).
    """
    if value is None:
        return np.zeros(() if shape is None else shape, np.int64)
    a = _native(value)
    if not _is_python_int(value) and a.dtype.name != tname and a.dtype != _storage(tname):
        raise TypeError(f"{op}: {what} has dtype {a.dtype.name} but its tensor is {tname} "
                        f"(ONNX requires the same type)")
    if a.dtype.kind not in "iu" and a.dtype.name not in FLOAT_FORMATS and a.dtype.name not in _SUB_BYTE:
        raise TypeError(f"{op}: {what} must be an integer, got dtype {a.dtype.name}")
    zp = (a.view(np.uint8) if a.dtype.name in FLOAT_FORMATS else a).astype(np.int64)
    if tname in FLOAT_FORMATS:
        sign = 1 << (float_format(tname).total_bits - 1)
        nonzero = (zp != 0) & (zp != sign)
        if nonzero.any():
            raise ValueError(f"{op}: {what} of a {tname} tensor must be zero, got bit pattern(s) "
                             f"{np.unique(zp[nonzero])[:4]}")
    elif tname != "int32":
        fmt = int_format(tname)
        if zp.size and (zp.min() < fmt.qmin or zp.max() > fmt.qmax):
            raise ValueError(f"{op}: {what} {zp.reshape(-1)[:4]} outside the {tname} range "
                             f"[{fmt.qmin}, {fmt.qmax}]")
    if shape is not None and zp.shape != tuple(shape) and not (zp.size == 1 and int(np.prod(shape)) == 1):
        raise ValueError(f"{op}: {what} must have the shape of its scale {tuple(shape)}, got {zp.shape}")
    return zp


def _granularity(scale_shape, x_shape, axis: int, block_size: int, op: str, what: str):
    """ONNX's quantization granularity: ``(axis or None, block_size)``.

    A scale of one element is per tensor (whatever ``axis`` and ``block_size`` say, as ONNX's
    reference does); ``block_size > 0`` is blocked along ``axis`` (the scale has ``x``'s rank);
    otherwise a 1-D scale is per axis.
    """
    axis = _int_attr(axis, "axis", op)
    block_size = _int_attr(block_size, "block_size", op)
    if block_size < 0:
        raise ValueError(f"{op}: block_size must be >= 0, got {block_size}")
    if int(np.prod(scale_shape)) == 1:
        return None, 0
    nd = len(x_shape)
    if not -nd <= axis < nd:
        raise ValueError(f"{op}: axis {axis} out of range for x of rank {nd}")
    axis %= nd
    if block_size:
        if len(scale_shape) != nd:
            raise ValueError(f"{op}: blocked {what} must have x's rank {nd}, got shape {tuple(scale_shape)}")
        return axis, block_size
    if len(scale_shape) != 1:
        raise ValueError(f"{op}: {what} must be a scalar, 1-D (per axis) or, with block_size, "
                         f"of x's rank; got shape {tuple(scale_shape)}")
    return axis, 0


def _float_tensor(value, what: str, op: str, *, allow_int32: bool = False) -> np.ndarray:
    """A real input as NumPy float16/float32 (float64 rounded to float32 once; int32 if allowed)."""
    a = _native(value)
    if a.dtype in (np.float32, np.float16):
        return a
    if a.dtype == np.float64:
        return a.astype(np.float32)
    if allow_int32 and a.dtype == np.int32:
        return a
    kinds = "float32 or float16" + (" (or int32)" if allow_int32 else "")
    raise TypeError(f"{op}: {what} must be {kinds}, got dtype {a.dtype.name}")


def _output_type(y_zero_point, output_dtype, op: str) -> str:
    """QuantizeLinear's output type: ``y_zero_point``'s, else ``output_dtype``, else uint8.

    Both given, they must agree — except that an int8/uint8 zero point may hold a value of
    the narrower type ``output_dtype`` names (int4/int2 in int8; uint4/uint2 or a float
    format's bits in uint8), since NumPy has no such dtype.
    """
    zp_type = None
    if y_zero_point is not None and not _is_python_int(y_zero_point):
        zp_type = np.asarray(y_zero_point).dtype.name
    want = None if output_dtype is None else _type_name(output_dtype, "output_dtype", op)
    if zp_type is None:
        tname = want or "uint8"
    elif want is None or want == zp_type:
        tname = zp_type
    elif zp_type in ("int8", "uint8") and _storage(want) == np.dtype(zp_type):
        tname = want
    else:
        raise TypeError(f"{op}: output_dtype {want} does not match y_zero_point's type {zp_type}")
    if tname not in _INT_QTYPES and tname not in FLOAT_FORMATS:
        raise TypeError(f"{op}: output type {tname} is not supported; expected one of "
                        f"{', '.join(_INT_QTYPES + tuple(FLOAT_FORMATS))}")
    return tname


def _quotient(x, scale32, precision: str) -> np.ndarray:
    """``x / scale`` as float32, divided in ``precision``.

    float32: ``float32(x) / scale`` (int32 ``x`` rounds to float32 first, above 2**24).
    float16: ``float16(x) / float16(scale)``, one float16 rounding of the exact quotient
    (NumPy computes it in float32 and rounds; that double rounding is innocuous for
    division since 24 >= 2·11 + 2); ``x`` itself is rounded to float16 first.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if precision == "float16":
            return (x.astype(np.float16) / scale32.astype(np.float16)).astype(np.float32)
        return x.astype(np.float32) / scale32


# --------------------------------------------------------------------- quantize / dequantize

def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                    output_dtype=None, precision=None, backend="reference") -> np.ndarray:
    """ONNX QuantizeLinear: ``y = saturate(round_half_even(x / y_scale) + y_zero_point)``.

    Granularity (from ``y_scale``'s shape): a one-element scale is per tensor; a 1-D scale is
    per index along ``axis``; with ``block_size = B`` the scale has ``x``'s rank and
    ``ceil(D/B)`` entries along ``axis`` (ONNX blocked quantization).

    Output type: ``y_zero_point``'s type, else ``output_dtype``, else uint8 (both given: they
    must agree; an int8/uint8 zero point may hold the int4/int2/uint4/uint2/float-format value
    that ``output_dtype`` names). When the caller passed an ``ml_dtypes`` type — a
    ``y_zero_point`` array of ``ml_dtypes.float8_e4m3fn``/``int4``/..., or ``output_dtype``
    given as that dtype — the output is an array of that ``ml_dtypes`` type, as the onnx
    reference evaluator and onnxruntime's Python API return it (the same bits; comparing the
    two then compares values). Otherwise (a type named by string or ONNX code, a uint8/int8
    zero point) integer types come back in their storage dtype (int4/int2 as int8 values,
    uint4/uint2 as uint8 values) and float formats as uint8 bit patterns: ``ml_dtypes`` stays
    optional, not a dependency of refquant's runtime.

    Numeric decisions:

    * The division is a division (not a multiplication by ``1/y_scale``) in ``precision``:
      by default the type of ``y_scale`` (ONNX: "the type of y_scale determines the precision
      of the division"). float32: ``float32(x) / y_scale`` — float16 ``x`` widens exactly,
      float64 ``x`` (not an ONNX type) rounds to float32 once, int32 ``x`` (an ONNX type)
      rounds to float32 beyond 2**24. float16 (float16 ``y_scale``, or ``precision=10``/
      ``"float16"``): ``float16(x) / y_scale`` rounded to float16 — ``x`` is first rounded to
      float16 (overflowing to ±inf, which saturates). ``precision="float32"`` with float16
      scales widens them exactly and divides in float32.
      Measured: for float16 ``x`` and scale onnxruntime divides in float32 (what
      ``precision="float32"`` gives) and the onnx reference evaluator in float16 (the
      default here); for float32 ``x`` with a float16 scale it is the other way round. The
      two differ on about 0.7% of random float16 inputs.
    * Integer outputs: round half to even, then add the zero point as an integer, then
      saturate to the type's range. NaN or ±Inf in ``x`` raise ``ValueError`` (no integer
      represents them; the onnx reference evaluator returns an arbitrary value there).
      Quotients beyond the int32 range saturate (the onnx reference casts them to int32
      first, which gives an arbitrary value).
    * Float-format outputs: the quotient is rounded to nearest even on the format's grid by
      ``refquant.numerics.encode_format``; ``saturate=1`` clamps to ±max finite (±Inf too),
      ``saturate=0`` gives NaN (E4M3FN) or ±Inf (E5M2) beyond it; FP6/FP4 always saturate.
      NaN stays NaN for FP8 and raises ``ValueError`` for FP6/FP4 (they have no NaN). The zero
      point of a float format must be ±0. For FP6/FP4 it is added to the quotient before
      rounding, as ONNX's formula says — so ``-0.0`` with a ``+0`` zero point gives ``+0``
      (the onnx backend case ``test_quantizelinear_float4e2m1`` expects that); for FP8 it is
      not added, so ``-0.0`` stays ``-0.0`` (onnxruntime and the onnx reference, measured).
      Measured (every float32 in the range): onnxruntime with ``saturate=0`` returns ±448 for
      E4M3FN quotients in [480, 496) where rounding gives NaN, and NaN for E5M2 quotients in
      [61440, 65536) where rounding gives ±inf; the onnx reference agrees with refquant.
    """
    op = "quantize_linear"
    _check_backend(backend, op)
    y, tname = _quantize_linear(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, precision, op)
    if not _ml_dtypes_requested(y_zero_point, output_dtype):
        return y
    import ml_dtypes  # present: the caller passed one of its types

    target = np.dtype(getattr(ml_dtypes, tname))
    return y.view(target) if tname in FLOAT_FORMATS else y.astype(target)


def _ml_dtypes_requested(y_zero_point, output_dtype) -> bool:
    """Did the caller hand QuantizeLinear an ``ml_dtypes`` type (a typed zero point, or the dtype)?"""
    if y_zero_point is not None and not _is_python_int(y_zero_point):
        if np.asarray(y_zero_point).dtype.name in tuple(FLOAT_FORMATS) + tuple(_SUB_BYTE):
            return True
    if output_dtype is None or isinstance(output_dtype, (str, int, np.integer)):
        return False
    try:
        return np.dtype(output_dtype).name in tuple(FLOAT_FORMATS) + tuple(_SUB_BYTE)
    except TypeError:
        return False


def _quantize_linear(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, precision, op):
    x = _float_tensor(x, "x", op, allow_int32=True)
    if isinstance(saturate, (bool, np.bool_)):
        saturate = int(saturate)
    if _int_attr(saturate, "saturate", op) not in (0, 1):
        raise ValueError(f"{op}: saturate must be 0 or 1, got {saturate!r}")
    s32, scale_precision = _scale(y_scale, "y_scale", op)
    prec = scale_precision if precision is None else _type_name(precision, "precision", op)
    if prec not in ("float32", "float16"):
        raise ValueError(f"{op}: precision must be float32 or float16, got {prec}")
    tname = _output_type(y_zero_point, output_dtype, op)
    g_axis, g_block = _granularity(s32.shape, x.shape, axis, block_size, op, "y_scale")
    zp = _zero_point(y_zero_point, tname, "y_zero_point", op, shape=s32.shape)
    if g_axis is None:
        s32, zp = s32.reshape(()), zp.reshape(())

    if tname in FLOAT_FORMATS:
        s_b = s32 if g_axis is None else expand_along_axis(s32, x.shape, g_axis, g_block, f"{op} y_scale")
        r = _quotient(x, s_b, prec)
        if not tname.startswith("float8"):  # FP6/FP4: ONNX's "+ y_zero_point" (±0), -0.0 + 0.0 = +0.0
            z = decode_format(zp, tname)
            r = r + (z if g_axis is None else expand_along_axis(z, x.shape, g_axis, g_block, f"{op} y_zero_point"))
        return encode_format(r, tname, saturate=bool(saturate), name=f"{op} x / y_scale"), tname

    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        n_bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{op}: x has {n_bad} non-finite value(s) (NaN or Inf); a {tname} output cannot hold them")
    fmt = int_format(tname)
    qp = QParams(s32, zp, fmt, axis=g_axis, block_size=g_block, name=f"{op} y_scale/y_zero_point")
    if prec == "float32":
        return quantize(x.astype(np.float32), qp), tname
    s_b, zp_b = qp.broadcast_to(x.shape)
    r = round_half_even(_quotient(x, s_b, prec)).astype(np.float64)
    return saturate_to_range(r + zp_b, fmt.qmin, fmt.qmax).astype(fmt.storage_dtype), tname


def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=None,
                      x_dtype=None, backend="reference") -> np.ndarray:
    """ONNX DequantizeLinear: ``y = (x - x_zero_point) * x_scale``.

    Granularity as in :func:`quantize_linear`. ``x`` is int8/uint8/int16/uint16/int32, an
    int4/uint4/int2/uint2 tensor held in int8/uint8 (say which with ``x_dtype``, or pass an
    ``ml_dtypes`` array), or a float format as uint8 bit patterns (``x_dtype`` names it).

    Numeric decisions (both onnxruntime and the onnx reference evaluator, measured):

    * integers: ``x - x_zero_point`` exactly in int32, converted to float32 (exact: below
      2**17), multiplied by the float32 scale (float16 scales widen exactly): one rounding.
      int32 ``x`` has no zero point (ONNX; a given one must be 0) and rounds to float32 beyond
      2**24 before the product.
    * float formats: the decoded value (exact in float32) times the scale, in float32; the
      zero point must be ±0 (the onnx reference ignores it for FP4).
    * output type: ``output_dtype`` (float32 or float16), else the scale's type. A float16
      result is the float32 product rounded once to float16 (±inf beyond 65504).
    """
    op = "dequantize_linear"
    _check_backend(backend, op)
    q, tname = _quantized(x, "x", op, declared=x_dtype, allowed=_INT_QTYPES + ("int32",) + tuple(FLOAT_FORMATS))
    s32, scale_precision = _scale(x_scale, "x_scale", op)
    out = scale_precision if output_dtype is None else _type_name(output_dtype, "output_dtype", op)
    if out not in _FLOAT_OUTPUTS:
        raise ValueError(f"{op}: output_dtype must be float32 or float16, got {out}")
    g_axis, g_block = _granularity(s32.shape, q.shape, axis, block_size, op, "x_scale")
    zp = _zero_point(x_zero_point, tname, "x_zero_point", op, shape=s32.shape)
    if g_axis is None:
        s32, zp = s32.reshape(()), zp.reshape(())
    if tname in _INT_QTYPES:
        qp = QParams(s32, zp, int_format(tname), axis=g_axis, block_size=g_block,
                     name=f"{op} x_scale/x_zero_point")
        y = dequantize(q, qp)
    else:
        if tname == "int32" and np.any(zp != 0):
            raise ValueError(f"{op}: int32 x has no zero point (ONNX); got {zp.reshape(-1)[:4]}")
        s_b = s32 if g_axis is None else expand_along_axis(s32, q.shape, g_axis, g_block, f"{op} x_scale")
        values = q.astype(np.float32) if tname == "int32" else decode_format(q, tname)
        y = values * s_b
    with np.errstate(over="ignore"):  # beyond float16's range is ±inf, as in both oracles
        return y.astype(np.float32 if out == "float32" else np.float16)


def dynamic_quantize_linear(x, *, backend="reference") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX DynamicQuantizeLinear: uint8 ``y`` with the scale and zero point of ``x``'s range.

    ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)``,
    ``y_scale = float32(hi - lo) / 255`` (float32), ``y_zero_point = round_half_even(
    clamp(0 - lo / y_scale, 0, 255))``, ``y = saturate(round_half_even(x / y_scale) +
    y_zero_point)`` — ``refquant.numerics.qparams_from_range`` and ``quantize``.

    ``x`` is float32 (float64 rounds to float32 once). NaN/±Inf raise ``ValueError``.
    A degenerate range (all-zero or empty ``x``) gives ``y_scale = 1``, ``y_zero_point = 0``,
    as onnxruntime does (measured); the onnx reference evaluator returns ``y_scale = 1/255``
    for an all-zero ``x`` and raises on an empty one.
    Returns ``(y uint8, y_scale float32 0-d, y_zero_point uint8 0-d)``.
    """
    op = "dynamic_quantize_linear"
    _check_backend(backend, op)
    x = _native(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32, got dtype {x.dtype.name}")
    x = x.astype(np.float32)
    lo, hi = tensor_range(x, name=f"{op} x")
    qp = qparams_from_range(lo, hi, "uint8", name=f"{op} x")
    y = quantize(x, qp)
    return y, np.array(qp.scale, np.float32), np.array(qp.zero_point, np.uint8)


# ----------------------------------------------------------------------------- matmul family

def _int8_operand(value, what: str, op: str) -> np.ndarray:
    a = _native(value)
    if a.dtype not in (np.int8, np.uint8):
        raise TypeError(f"{op}: {what} must be int8 or uint8, got dtype {a.dtype.name}")
    return a


def _typed_zero_point(value, tensor: np.ndarray, what: str, op: str) -> np.ndarray:
    """Zero point of an int8/uint8 tensor as int64 (``None`` is 0)."""
    return _zero_point(value, tensor.dtype.name, what, op)


def _rows_zero_point(zp: np.ndarray, a: np.ndarray, what: str, op: str) -> np.ndarray:
    """Per-row zero point of ``a [..., M, K]``: scalar, ``[M]`` or ``[..., M, 1]`` → ``a.shape[:-1]``."""
    if zp.size == 1:
        return zp.reshape(())
    m = a.shape[-2]
    z = zp.reshape(-1, 1) if zp.ndim == 1 else zp
    if z.ndim < 2 or z.shape[-2:] != (m, 1):
        raise ValueError(f"{op}: per-row {what} must have shape [{m}] or [..., {m}, 1], got {zp.shape}")
    try:
        return np.broadcast_to(z[..., 0], a.shape[:-1])
    except ValueError:
        raise ValueError(f"{op}: {what} of shape {zp.shape} does not fit a of shape {a.shape}") from None


def _cols_zero_point(zp: np.ndarray, b: np.ndarray, what: str, op: str) -> np.ndarray:
    """Per-column zero point of ``b [..., K, N]``: scalar, ``[N]`` or ``[..., 1, N]`` → ``b.shape[:-2] + (N,)``."""
    if zp.size == 1:
        return zp.reshape(())
    n = b.shape[-1]
    z = zp.reshape(1, -1) if zp.ndim == 1 else zp
    if z.ndim < 2 or z.shape[-2:] != (1, n):
        raise ValueError(f"{op}: per-column {what} must have shape [{n}] or [..., 1, {n}], got {zp.shape}")
    try:
        return np.broadcast_to(z[..., 0, :], b.shape[:-2] + (n,))
    except ValueError:
        raise ValueError(f"{op}: {what} of shape {zp.shape} does not fit b of shape {b.shape}") from None


def _matmul_2d(kernel_call, a2, w, za_rows, zb_cols, index=None):
    """One ``[M, K] x [N, K]`` product; rows with different zero points go in separate calls.

    ``index`` is the batch index of this product (``None`` for a single 2-D product); it is
    passed on to ``kernel_call`` (per-batch requantization of QLinearMatMul).
    """
    if za_rows.ndim == 0:
        return kernel_call(a2, w, za_rows, zb_cols, index)
    out = None
    for v in np.unique(za_rows):
        rows = za_rows == v
        part = kernel_call(a2[rows], w, v, zb_cols, index)
        if out is None:
            out = np.empty((a2.shape[0], w.shape[0]), part.dtype)
        out[rows] = part
    return out


def _matmul_nd(a, b, za, zb, kernel_call, op: str) -> np.ndarray:
    """ONNX MatMul (numpy.matmul) semantics around a 2-D kernel taking ``w = b.T`` as ``[N, K]``.

    1-D ``a`` gets a leading 1 and 1-D ``b`` a trailing 1, removed from the result; batch
    dimensions broadcast. A 2-D ``b`` (weights) is transposed once and ``a``'s batch folded
    into its rows: one kernel call.
    """
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"{op}: a and b must have at least one dimension, got shapes {a.shape} and {b.shape}")
    A = a[None, :] if a.ndim == 1 else a
    B = b[:, None] if b.ndim == 1 else b
    (m, k), (k2, n) = A.shape[-2:], B.shape[-2:]
    if k != k2:
        raise ValueError(f"{op}: a has {k} columns but b has {k2} rows (shapes {a.shape} and {b.shape})")
    try:
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dimensions of a {a.shape} and b {b.shape} do not broadcast") from None
    za_rows = _rows_zero_point(za, A, "a_zero_point", op)
    zb_cols = _cols_zero_point(zb, B, "b_zero_point", op)
    if k == 0:
        # An empty sum is 0 (numpy.matmul gives zeros). The kernels take K >= 1, so add one
        # term that is exactly 0: a column equal to a's zero point and a row equal to b's.
        A = np.broadcast_to(za_rows, A.shape[:-1])[..., None].astype(A.dtype)
        B = np.broadcast_to(zb_cols, B.shape[:-2] + (n,))[..., None, :].astype(B.dtype)
        k = 1
    if B.ndim == 2:
        w = np.ascontiguousarray(B.T)
        rows = A.reshape(-1, k)
        zr = za_rows if za_rows.ndim == 0 else za_rows.reshape(-1)
        y = _matmul_2d(kernel_call, rows, w, zr, zb_cols).reshape(A.shape[:-2] + (m, n))
    else:
        a_b = np.broadcast_to(A, batch + (m, k))
        b_b = np.broadcast_to(B, batch + (k, n))
        za_b = za_rows if za_rows.ndim == 0 else np.broadcast_to(za_rows, batch + (m,))
        zb_b = zb_cols if zb_cols.ndim == 0 else np.broadcast_to(zb_cols, batch + (n,))
        parts = [
            _matmul_2d(kernel_call, a_b[i], np.ascontiguousarray(b_b[i].T),
                       za_b if za_b.ndim == 0 else za_b[i], zb_b if zb_b.ndim == 0 else zb_b[i], i)
            for i in np.ndindex(*batch)
        ]
        y = np.stack(parts).reshape(batch + (m, n))
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


def _requantizer(x_scale, w_scale, y_scale, y_zero_point, y_type, requant, channels, names, op):
    """The requantizer of a QLinear op, per output channel (``channels`` of them).

    ``names`` are the three scales' argument names. The first and last scale are per tensor,
    the middle one per tensor or 1-D with ``channels`` entries. float16 scales (all three must
    share one type, ONNX's ``TS``) widen exactly to float32 for the ``float32`` (onnxruntime)
    and fixed-point modes; in ``float64`` mode the multiplier is what the onnx reference
    evaluator computes, ``x_scale * w_scale / y_scale`` in the scales' own type — float16
    arithmetic for float16 scales, each operation rounded to float16 — then widened.
    """
    sx, px = _scale(x_scale, names[0], op)
    sw, pw = _scale(w_scale, names[1], op)
    sy, py = _scale(y_scale, names[2], op)
    if len({px, pw, py}) != 1:
        raise TypeError(f"{op}: {', '.join(names)} must share one float type, got {px}, {pw}, {py}")
    if sx.size != 1 or sy.size != 1:
        raise ValueError(f"{op}: {names[0]} and {names[2]} must be scalars (per tensor), got "
                         f"shapes {sx.shape} and {sy.shape}")
    if sw.size != 1 and (sw.ndim != 1 or sw.size != channels):
        raise ValueError(f"{op}: {names[1]} must be a scalar or 1-D with {channels} entries "
                         f"(one per output channel), got shape {sw.shape}")
    sx, sw, sy = sx.reshape(()), sw.reshape(-1), sy.reshape(())
    rq = make_requantizer(sx, sw, sy, y_zero_point.reshape(()), y_type, mode=requant).for_channels(channels)
    if requant == "float64" and px == "float16":
        with np.errstate(over="ignore", under="ignore"):
            m16 = sx.astype(np.float16) * sw.astype(np.float16) / sy.astype(np.float16)
        if not np.all(np.isfinite(m16)):
            raise ValueError(f"{op}: the float16 multiplier {names[0]}·{names[1]}/{names[2]} overflows")
        m = np.ascontiguousarray(np.broadcast_to(m16.astype(np.float32), (channels,)))
        rq = replace(rq, multiplier=m)
    return rq



def _output_zero_point(y_zero_point, x, zx, x_zp_name: str, op: str):
    """``(output type, z_y)`` of a QLinear op: ``y_zero_point``'s type sets the output (int8 or
    uint8; a Python int takes the input's type); input and output zero points are per tensor."""
    y_type = x.dtype.name if _is_python_int(y_zero_point) else np.asarray(y_zero_point).dtype.name
    if y_type not in ("int8", "uint8"):
        raise TypeError(f"{op}: y_zero_point must be int8 or uint8 (it sets the output type), got {y_type}")
    zy = _zero_point(y_zero_point, y_type, "y_zero_point", op)
    if zx.size != 1 or zy.size != 1:
        raise ValueError(f"{op}: {x_zp_name} and y_zero_point must be scalars (per tensor), "
                         f"got shapes {zx.shape} and {zy.shape}")
    return y_type, zy

def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, *,
                   requant="float32", backend="reference") -> np.ndarray:
    """ONNX QLinearMatMul: ``y = saturate(requant(Σ_k (a - z_a)(b - z_b)) + z_y)``.

    ``a [..., M, K]`` and ``b [..., K, N]`` are int8/uint8 with numpy.matmul semantics (batch
    dimensions broadcast; 1-D operands as numpy treats them). ``a_scale``/``a_zero_point`` are
    per tensor; ``b_scale``/``b_zero_point`` per tensor or per column (1-D of length N, the
    zero point also ``[..., 1, N]``), which makes the requantization per column; for a
    batched ``b`` (rank >= 3) ``b_scale`` may also be ``[..., 1, N]``, one scale per batch
    and column, as onnxruntime accepts (measured: onnxruntime takes exactly ``b``'s batch
    dimensions there and refuses ``[1, N]`` or a rank-3 scale with a 2-D ``b``; refquant also
    takes batch dimensions that broadcast to ``b``'s);
    ``y_scale``/``y_zero_point`` per tensor. The output type is ``y_zero_point``'s (int8 or
    uint8; a Python int takes ``a``'s type).

    The accumulator ``Σ_k (a - z_a)(b - z_b)`` is exact int32 (an overflow raises
    ``AccumulatorOverflowError``); ``requant`` names how it becomes ``y`` (default
    ``"float32"``, onnxruntime's: ``round_half_even(float32(acc) · m) + z_y`` with
    ``m = float32(float32(a_scale · b_scale) / y_scale)``; ``"float64"`` is the onnx reference
    evaluator's). For float16 scales see ``_requantizer``: onnxruntime widens them, the onnx
    reference multiplies them in float16. Per-row ``a`` scales and float8 operands are not
    supported (``ValueError``/``TypeError``).
    """
    op = "qlinear_matmul"
    _check_requant(requant, op)
    kern = get_backend(backend)
    a = _int8_operand(a, "a", op)
    b = _int8_operand(b, "b", op)
    za = _typed_zero_point(a_zero_point, a, "a_zero_point", op)
    zb = _typed_zero_point(b_zero_point, b, "b_zero_point", op)
    y_type, zy = _output_zero_point(y_zero_point, a, za, "a_zero_point", op)
    n = b.shape[-1] if b.ndim >= 2 else 1
    names = ("a_scale", "b_scale", "y_scale")
    sb = _native(b_scale)
    if sb.ndim >= 2 and sb.size != 1:  # per batch and column: b_scale [..., 1, N] (onnxruntime's form)
        if b.ndim < 3 or sb.shape[-2:] != (1, n) or sb.ndim > b.ndim:
            raise ValueError(f"{op}: a b_scale of rank >= 2 must have shape [..., 1, {n}] with batch "
                             f"dimensions that broadcast to b's {list(b.shape[:-2])} (b has shape "
                             f"{list(b.shape)}); got {list(sb.shape)}")
        per_batch = sb[..., 0, :]
        try:
            np.broadcast_shapes(per_batch.shape[:-1], b.shape[:-2])
        except ValueError:
            raise ValueError(f"{op}: b_scale of shape {list(sb.shape)} does not fit b of shape {list(b.shape)}") from None
        lb = per_batch.ndim - 1
        cache = {}

        def rq_at(index):
            j = tuple(0 if per_batch.shape[d] == 1 else index[len(index) - lb + d] for d in range(lb))
            if j not in cache:
                cache[j] = _requantizer(a_scale, per_batch[j], y_scale, zy, y_type, requant, n, names, op)
            return cache[j]

        rq_at(tuple(0 for _ in range(lb)))  # check the scales before any product runs
    else:
        rq = _requantizer(a_scale, b_scale, y_scale, zy, y_type, requant, n, names, op)

        def rq_at(index):
            return rq

    def call(a2, w, z_a, z_b, index):
        return kern.matmul_requant(a2, w, z_a, z_b, None, rq_at(index), name=op)

    return _matmul_nd(a, b, za, zb, call, op)


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, backend="reference") -> np.ndarray:
    """ONNX MatMulInteger: ``y = Σ_k (a - z_a)(b - z_b)`` as exact int32.

    numpy.matmul semantics over int8/uint8 ``a [..., M, K]`` and ``b [..., K, N]``. ``a_zero_point``
    is a scalar or per row (``[M]`` or ``[..., M, 1]``), ``b_zero_point`` a scalar or per column
    (``[N]`` or ``[..., 1, N]``); absent means 0. A sum that does not fit int32 raises
    ``AccumulatorOverflowError`` (ONNX: "accumulation may overflow if and only if in 32 bits";
    refquant refuses to wrap).
    """
    op = "matmul_integer"
    kern = get_backend(backend)
    a = _int8_operand(a, "a", op)
    b = _int8_operand(b, "b", op)
    za = _typed_zero_point(a_zero_point, a, "a_zero_point", op)
    zb = _typed_zero_point(b_zero_point, b, "b_zero_point", op)

    def call(a2, w, z_a, z_b, index):
        return kern.matmul_int32(a2, w, z_a, z_b, None, name=op)

    return _matmul_nd(a, b, za, zb, call, op)


# ------------------------------------------------------------------------------- conv family

def _conv_args(x, w, auto_pad, dilations, group, kernel_shape, pads, strides, op):
    """ONNX Conv attributes → the 2-D kernels' arguments; 1-D convolutions get a height of 1.

    Returns ``(x4, w4, kwargs, squeeze)``. ``pads`` is ONNX's ``[begin..., end...]``.
    """
    if isinstance(auto_pad, bytes):  # string attributes read from ONNX protobufs are bytes
        auto_pad = auto_pad.decode("utf-8", "replace")
    if auto_pad is not None and auto_pad not in AUTO_PAD_MODES:
        raise ValueError(f"{op}: auto_pad must be one of {', '.join(AUTO_PAD_MODES)}, got {auto_pad!r}")
    if x.ndim != w.ndim or x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected x and w of rank 4 (NCHW, OIHW) or 3 (NCL, OIL), got "
                         f"shapes {x.shape} and {w.shape}; 3-D convolutions are not supported")
    nd = x.ndim - 2
    spatial = tuple(w.shape[2:])
    if kernel_shape is not None and tuple(_int_list_attr(kernel_shape, "kernel_shape", op)) != spatial:
        raise ValueError(f"{op}: kernel_shape {list(kernel_shape)} differs from w's spatial shape {list(spatial)}")

    def ints(v, default, what, length):
        v = list(default) if v is None else _int_list_attr(v, what, op)
        if len(v) != length:
            raise ValueError(f"{op}: {what} must have {length} entries for a {nd}-D convolution, got {v}")
        return v

    strides = ints(strides, [1] * nd, "strides", nd)
    dilations = ints(dilations, [1] * nd, "dilations", nd)
    pads = None if pads is None else ints(pads, None, "pads", 2 * nd)
    if nd == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
        strides, dilations = [1] + strides, [1] + dilations
        pads = None if pads is None else [0, pads[0], 0, pads[1]]
    kwargs = dict(strides=strides, dilations=dilations, pads=pads, group=_int_attr(group, "group", op),
                  auto_pad=auto_pad or "NOTSET", name=op)
    return x, w, kwargs, nd == 1


def _bias(B, c_out: int, op: str):
    if B is None:
        return None
    b = _native(B)
    if b.dtype != np.int32:
        raise TypeError(f"{op}: B must be int32, got dtype {b.dtype.name}")
    if b.shape != (c_out,):
        raise ValueError(f"{op}: B must have shape ({c_out},) (one per output channel), got {b.shape}")
    return b


def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
                 requant="float32", backend="reference") -> np.ndarray:
    """ONNX QLinearConv: ``y = saturate(requant(conv(x - z_x, w - z_w) + B) + z_y)``.

    ``x`` NCHW (or NCL) and ``w`` OIHW (or OIL), int8/uint8; ``x_scale``, ``x_zero_point``,
    ``y_scale``, ``y_zero_point`` per tensor; ``w_scale``/``w_zero_point`` per tensor or per
    output channel (1-D of length C_out); ``B`` int32 ``[C_out]`` (quantized with scale
    ``x_scale · w_scale`` and zero point 0). Attributes as ONNX Conv: ``pads`` is
    ``[top, left, bottom, right]`` (``[begin, end]`` in 1-D), padding contributes real zero
    (``x = z_x``); ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER``/``VALID``; ``group`` divides
    both channel counts (``group = C_in = C_out`` is depthwise).

    The accumulator is exact int32 (overflow raises ``AccumulatorOverflowError``);
    ``requant`` names how it becomes ``y`` (default ``"float32"``: onnxruntime's
    ``round_half_even(float32(acc) · m[c]) + z_y`` with ``m[c] = float32(float32(x_scale ·
    w_scale[c]) / y_scale)``; ``"float64"``: the onnx reference evaluator's
    ``round_half_even(float64(acc) · m[c] + z_y)``). The output type is ``y_zero_point``'s.
    float16 scales (not ONNX for QLinearConv) are handled as in :func:`qlinear_matmul`.
    """
    op = "qlinear_conv"
    _check_requant(requant, op)
    kern = get_backend(backend)
    x = _int8_operand(x, "x", op)
    w = _int8_operand(w, "w", op)
    zx = _typed_zero_point(x_zero_point, x, "x_zero_point", op)
    zw = _typed_zero_point(w_zero_point, w, "w_zero_point", op)
    y_type, zy = _output_zero_point(y_zero_point, x, zx, "x_zero_point", op)
    x4, w4, kw, squeeze = _conv_args(x, w, auto_pad, dilations, group, kernel_shape, pads, strides, op)
    c_out = w.shape[0]
    if zw.size not in (1, c_out) or zw.ndim > 1:
        raise ValueError(f"{op}: w_zero_point must be a scalar or 1-D with {c_out} entries, got shape {zw.shape}")
    rq = _requantizer(x_scale, w_scale, y_scale, zy, y_type, requant, c_out, ("x_scale", "w_scale", "y_scale"), op)
    y = kern.conv2d_requant(x4, w4, zx.reshape(()), zw.reshape(-1), _bias(B, c_out, op), rq, **kw)
    return y[:, :, 0, :] if squeeze else y


def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None,
                 group=1, kernel_shape=None, pads=None, strides=None, backend="reference") -> np.ndarray:
    """ONNX ConvInteger: ``y = conv(x - z_x, w - z_w)`` as exact int32 ``[N, C_out, OH, OW]``.

    Same layouts and attributes as :func:`qlinear_conv`; ``x_zero_point`` per tensor,
    ``w_zero_point`` per tensor or per output channel; absent zero points are 0. A sum that
    does not fit int32 raises ``AccumulatorOverflowError``.
    """
    op = "conv_integer"
    kern = get_backend(backend)
    x = _int8_operand(x, "x", op)
    w = _int8_operand(w, "w", op)
    zx = _typed_zero_point(x_zero_point, x, "x_zero_point", op)
    zw = _typed_zero_point(w_zero_point, w, "w_zero_point", op)
    if zx.size != 1:
        raise ValueError(f"{op}: x_zero_point must be a scalar (per tensor), got shape {zx.shape}")
    x4, w4, kw, squeeze = _conv_args(x, w, auto_pad, dilations, group, kernel_shape, pads, strides, op)
    c_out = w.shape[0]
    if zw.size not in (1, c_out) or zw.ndim > 1:
        raise ValueError(f"{op}: w_zero_point must be a scalar or 1-D with {c_out} entries, got shape {zw.shape}")
    y = kern.conv2d_int32(x4, w4, zx.reshape(()), zw.reshape(-1), None, **kw)
    return y[:, :, 0, :] if squeeze else y
