"""Argument checks shared by the float operators.

Every operator takes float32 arrays and returns float32 arrays; an array of another dtype is
a caller's bug, reported here with the operator and argument name instead of being silently
promoted to float64 by NumPy.
"""

from __future__ import annotations

import numpy as np


def require_float32(op: str, **arrays: np.ndarray | None) -> None:
    """Raise TypeError unless every given (non-None) argument is a float32 ndarray."""
    for name, a in arrays.items():
        if a is None:
            continue
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: argument {name!r} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype != np.float32:
            raise TypeError(f"{op}: argument {name!r} must be float32, got {a.dtype}")


def require_ndim(op: str, name: str, a: np.ndarray, ndim: int) -> None:
    """Raise ValueError unless ``a`` has exactly ``ndim`` dimensions."""
    if a.ndim != ndim:
        raise ValueError(f"{op}: argument {name!r} must be {ndim}-D, got shape {tuple(a.shape)}")


def require_float(op: str, **arrays: np.ndarray | None) -> np.dtype:
    """Backward functions: every given array is float32 or float64, all of one dtype; return it.

    Training runs in float32; the gradient checks run the same backward code in float64.
    """
    dtype = None
    for name, a in arrays.items():
        if a is None:
            continue
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: argument {name!r} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{op}: argument {name!r} must be float32 or float64, got {a.dtype}")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise TypeError(f"{op}: argument {name!r} is {a.dtype} but the others are {dtype}")
    return dtype


def require_grad_shape(op: str, dy: np.ndarray, shape) -> None:
    """Raise ValueError unless the output gradient ``dy`` has the forward output's ``shape``."""
    if tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{op}: the output gradient has shape {tuple(dy.shape)}, "
                         f"but the forward output has shape {tuple(shape)}")
