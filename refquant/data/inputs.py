"""Digits images shaped for a model's input."""

from __future__ import annotations

import numpy as np

__all__ = ["digits_inputs"]


def digits_inputs(graph, x: np.ndarray) -> np.ndarray:
    """Digits images ``[N, 1, 8, 8]`` shaped for ``graph``'s first input: flattened to
    ``[N, 64]`` when that input has rank 2 (an MLP), else unchanged; C-contiguous."""
    return np.ascontiguousarray(x.reshape(len(x), -1) if len(graph.inputs[0].shape) == 2 else x)
