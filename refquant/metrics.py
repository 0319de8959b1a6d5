"""How good a quantized result is: classification accuracy and signal-to-noise ratios.

* accuracy: the fraction of arg-max predictions equal to the labels (``numpy.argmax``: the
  first maximum wins a tie);
* ``snr_db(signal_power, noise_power) = 10·log10(signal_power / noise_power)`` dB, +inf when
  the noise is zero;
* ``sqnr_db(reference, approx)``: :func:`snr_db` of ``Σ reference²`` against
  ``Σ (approx − reference)²``, both summed in float64.

``refquant compare``, training reports and the plugins' reports all measure with these.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "accuracy_counts", "snr_db", "sqnr_db"]


def accuracy_counts(logits: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """``(correct, total)``: arg-max predictions (over axis 1) equal to the labels ``y``."""
    return int(np.sum(np.argmax(logits, axis=1) == y)), int(len(y))


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """The fraction of arg-max predictions (over axis 1) equal to the labels ``y``."""
    return float(np.mean(np.argmax(logits, axis=1) == y))


def snr_db(signal_power: float, noise_power: float) -> float:
    """``10·log10(signal_power / noise_power)``; +inf for zero noise."""
    return float("inf") if noise_power == 0 else float(10.0 * np.log10(signal_power / noise_power))


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """``10·log10(Σ ref² / Σ (approx − ref)²)``; +inf when they are equal."""
    noise = float(np.sum((approx.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return snr_db(signal, noise)
