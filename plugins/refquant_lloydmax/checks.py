"""Argument checks shared by the solvers: one rule, one message, wherever an argument is taken."""
from __future__ import annotations

import operator

import numpy as np

__all__ = ["check_bits", "check_count"]


def check_count(value, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``; TypeError for non-integers (bools included)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def check_bits(bits) -> int:
    """A bit width 1 .. 24 (2 .. 16.8 million bins; wider grids are not quantizers)."""
    b = check_count(bits, "bits", 1)
    if b > 24:
        raise ValueError(f"bits must be <= 24, got {b}")
    return b
