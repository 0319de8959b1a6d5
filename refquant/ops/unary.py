"""Sqrt, Erf, Sigmoid and HardSigmoid (ONNX) in float32.

Numeric decisions, per operator:

* Sqrt — IEEE float32 square root: correctly rounded, equal to every conforming backend.
* Erf and Sigmoid — evaluated in float64 and rounded once to float32, so the result is the
  correctly rounded value except in rare double-rounding cases (at most 1 ulp). Backends use
  float32 polynomial approximations (onnxruntime's MLAS ``Erf`` and ``Logistic``), which
  differ from it by a few ulps; those are measured in the tests, not reproduced.
* HardSigmoid — ``max(0, min(1, α·x + β))`` with two float32 roundings (the product, then the
  sum), no fused multiply-add.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .checks import require_float32


def sqrt(x: np.ndarray) -> np.ndarray:
    """ONNX Sqrt: ``y = √x`` (NaN for ``x < 0``, as IEEE and ONNX say)."""
    require_float32("Sqrt", x=x)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.sqrt(x))


def erf(x: np.ndarray) -> np.ndarray:
    """ONNX Erf: ``y = erf(x)``, computed in float64 (``scipy.special.erf``) and rounded once."""
    require_float32("Erf", x=x)
    return special.erf(x.astype(np.float64)).astype(np.float32).reshape(x.shape)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """ONNX Sigmoid: ``y = 1 / (1 + exp(−x))``, computed in float64 (``scipy.special.expit``,
    which does not overflow) and rounded once."""
    require_float32("Sigmoid", x=x)
    return special.expit(x.astype(np.float64)).astype(np.float32).reshape(x.shape)


def hard_sigmoid(x: np.ndarray, *, alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:
    """ONNX HardSigmoid: ``y = max(0, min(1, α·x + β))`` with ``α``, ``β`` as float32, the
    product and the sum each rounded to float32."""
    require_float32("HardSigmoid", x=x)
    y = np.multiply(x, np.float32(alpha)) + np.float32(beta)
    return np.asarray(np.clip(y, np.float32(0), np.float32(1)))
