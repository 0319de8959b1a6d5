"""Gelu (ONNX opset 20, ``approximate="none"``): the Gaussian error linear unit."""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from .checks import require_float32

GELU_APPROXIMATIONS = ("none", "tanh")


def gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    """ONNX Gelu::

        approximate="none":  y = 0.5 * x * (1 + erf(x / sqrt(2)))
        approximate="tanh":  y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))

    Numeric decisions: the whole formula is evaluated in float64 on the float32 input
    (``scipy.special.erf`` / ``numpy.tanh``, within a few float64 ulp) and rounded once to
    float32, so the result is the correctly rounded float32 value except within ~2**-29 relative
    of a rounding boundary.  onnxruntime evaluates it in float32 with MLAS's erf
    polynomial: the two differ by about one float32 ulp (tests measure it).  This is also the
    "Erf form" transformer exporters write (``Div``, ``Erf``, ``Add``, ``Mul``, ``Mul``), as one node.
    """
    require_float32("Gelu", x=x)
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"Gelu: approximate must be one of {list(GELU_APPROXIMATIONS)}, got {approximate!r}")
    x64 = x.astype(np.float64)
    if approximate == "none":
        y = 0.5 * x64 * (1.0 + erf(x64 / np.sqrt(2.0)))
    else:
        y = 0.5 * x64 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    return y.astype(np.float32)
