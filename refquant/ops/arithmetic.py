"""Mul, Sub, Div and Pow (ONNX, multidirectional broadcasting) in float32.

Mul, Sub and Div are one IEEE float32 operation per element, so they are exact (correctly
rounded) and equal onnxruntime's and the onnx reference evaluator's results bit for bit.
Pow is ``x * x`` when the exponent is the constant 2 (what exported graphs use for a
variance; onnxruntime special-cases it the same way) and NumPy's float32 ``power`` (the C
library's ``powf``, within an ulp) otherwise.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float32


def _broadcast(op: str, a: np.ndarray, b: np.ndarray) -> None:
    require_float32(op, a=a, b=b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Mul: ``y = a · b``, one float32 rounding per element."""
    _broadcast("Mul", a, b)
    return np.asarray(np.multiply(a, b))


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Sub: ``y = a − b``, one float32 rounding per element."""
    _broadcast("Sub", a, b)
    return np.asarray(np.subtract(a, b))


def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: ``y = a / b``, one float32 rounding per element (IEEE: ``x/0`` is ±inf or NaN,
    as in onnxruntime; NumPy's warning is silenced, the executor's checks report non-finite
    activations)."""
    _broadcast("Div", a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.divide(a, b))


def pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # noqa: A001 - the ONNX name
    """ONNX Pow: ``z = x ** y``.

    A scalar exponent of exactly 2 is computed as ``x · x`` (one rounding, exact); any other
    exponent with NumPy's float32 ``power`` (``powf``: within an ulp, NaN for a negative base
    with a non-integer exponent, as ONNX says).
    """
    _broadcast("Pow", x, y)
    if y.size == 1 and float(y.reshape(())) == 2.0:
        return np.asarray(np.multiply(x, x)).reshape(np.broadcast_shapes(x.shape, y.shape))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return np.asarray(np.power(x, y))
