"""Relu, Clip and Add (ONNX) in float32.  All three are exact: ``max``/``min`` select a value
and Add is one IEEE float32 addition per element (NumPy broadcasting, as ONNX specifies)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..kernels.fast import _chunk_bounds
from ..kernels.grain import run_chunked
from .checks import require_float, require_float32, require_grad_shape


def relu(x: np.ndarray) -> np.ndarray:
    """ONNX Relu: ``y = max(x, 0)``."""
    require_float32("Relu", x=x)
    return np.maximum(x, np.float32(0))


def _require_in_place(op: str, x: np.ndarray) -> None:
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable):
        raise ValueError(f"{op} in place: x must be a writeable C-contiguous float32 array, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")


def relu_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`relu` written into ``x`` itself; returns ``x``."""
    _require_in_place("Relu", x)
    return np.maximum(x, np.float32(0), out=x)


@njit(cache=True, inline="always")
def _clip_one(v, lo, hi):  # pragma: no cover - compiled
    """Clip's select: ``lo`` if ``v < lo``, then ``hi`` if that is ``> hi``, else ``v``."""
    if v < lo:
        v = lo
    if v > hi:
        v = hi
    return v


@njit(cache=True)
def _clip_run(x, lo, hi, out):  # pragma: no cover - compiled
    """``out[i] = _clip_one(x[i])`` over flat float32 arrays that do not overlap."""
    for i in range(x.size):
        out[i] = _clip_one(x[i], lo, hi)


@njit(cache=True)
def _clip_run_in_place(a, lo, hi):  # pragma: no cover - compiled
    """``a[i] = _clip_one(a[i])``: the in-place form, one array (LLVM vectorises it; the
    two-array loop over the same memory would run its scalar overlap fallback)."""
    for i in range(a.size):
        a[i] = _clip_one(a[i], lo, hi)


@njit(cache=True, parallel=True)
def _clip_kernel(x, lo, hi, out, chunks):  # pragma: no cover - compiled
    """:func:`_clip_run` over ``chunks`` contiguous pieces in parallel (each element is one
    select: any split gives the same bits)."""
    n = x.size
    for c in prange(chunks):
        start, stop = _chunk_bounds(n, chunks, c)
        _clip_run(x[start:stop], lo, hi, out[start:stop])


@njit(cache=True, parallel=True)
def _clip_in_place(a, lo, hi, chunks):  # pragma: no cover - compiled
    """:func:`_clip_run_in_place` over ``chunks`` contiguous pieces in parallel."""
    n = a.size
    for c in prange(chunks):
        start, stop = _chunk_bounds(n, chunks, c)
        _clip_run_in_place(a[start:stop], lo, hi)


def _clip_bounds(x, min, max):  # noqa: A002
    require_float32("Clip", x=x, min=min, max=max)
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and bound.shape != ():
            raise ValueError(f"Clip: {name!r} must be a scalar (shape ()), got shape {bound.shape}")
    lo = np.float32(-np.inf) if min is None else np.float32(min)
    hi = np.float32(np.inf) if max is None else np.float32(max)
    return lo, hi


def _clip_into(x: np.ndarray, lo, hi, out: np.ndarray) -> np.ndarray:
    """Clip ``x`` into ``out`` (a new array, or ``x`` itself), threads above the pooling grain."""
    if np.isnan(lo) or np.isnan(hi):
        out[...] = np.nan
        return out
    if out is x:
        run_chunked(out.size, _clip_run_in_place, _clip_in_place, out.reshape(-1), lo, hi)
    else:
        run_chunked(out.size, _clip_run, _clip_kernel, np.ascontiguousarray(x).reshape(-1), lo, hi, out.reshape(-1))
    return out


def clip(x: np.ndarray, min: np.ndarray | None = None, max: np.ndarray | None = None) -> np.ndarray:  # noqa: A002
    """ONNX Clip (opset >= 11; bounds are optional scalar inputs, not attributes)::

        y = min(max(x, lo), hi)      lo = min or -inf, hi = max or +inf

    so when ``min > max`` every element becomes ``max``, as ONNX specifies. Each element is
    selected in one pass (a compiled kernel, threads above the pooling grain): ``lo`` if
    ``x < lo``, then ``hi`` if that is ``> hi``, else ``x`` itself — a value equal to a bound
    is kept as it is (``-0.0`` stays ``-0.0`` under a bound of ``+0.0``) and a NaN input stays
    that NaN. A NaN bound makes every element NaN, as NumPy's ``maximum``/``minimum`` (the
    onnx reference evaluator) give.
    """
    lo, hi = _clip_bounds(x, min, max)
    return _clip_into(x, lo, hi, np.empty(x.shape, np.float32))


def clip_in_place(x: np.ndarray, min: np.ndarray | None = None, max: np.ndarray | None = None) -> np.ndarray:  # noqa: A002
    """:func:`clip` written into ``x`` itself (each element is read once, then written);
    returns ``x``."""
    lo, hi = _clip_bounds(x, min, max)
    _require_in_place("Clip", x)
    return _clip_into(x, lo, hi, x)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Add: ``y = a + b`` with multidirectional (NumPy) broadcasting."""
    require_float32("Add", a=a, b=b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"Add: shapes {a.shape} and {b.shape} do not broadcast") from None
    return np.add(a, b)


# ---- backward -------------------------------------------------------------------------------


def unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """The adjoint of broadcasting ``shape`` to ``g.shape``: sum ``g`` over the broadcast axes.

    Axes that broadcasting prepended are summed away; axes where ``shape`` has 1 and ``g`` has
    more are summed with ``keepdims``.  NumPy pairwise sums in ``g``'s dtype.
    """
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (s, d) in enumerate(zip(shape, g.shape)) if s == 1 and d != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def relu_backward(dy: np.ndarray, x: np.ndarray) -> tuple:
    """Gradient of Relu: ``dx = dy * (x > 0)`` — at ``x = 0`` the gradient is 0 (the subgradient
    PyTorch and TensorFlow also choose).  Exact: a selection."""
    require_float("Relu backward", dy=dy, x=x)
    require_grad_shape("Relu backward", dy, x.shape)
    return (np.where(x > 0, dy, np.zeros((), dy.dtype)),)


def add_backward(dy: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    """Gradients of Add with broadcasting: ``(unbroadcast(dy, a.shape), unbroadcast(dy, b.shape))``.

    Exact when no axis was broadcast; otherwise pairwise sums in ``dy``'s dtype.
    """
    require_float("Add backward", dy=dy, a=a, b=b)
    try:
        out = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"Add backward: shapes {a.shape} and {b.shape} do not broadcast") from None
    require_grad_shape("Add backward", dy, out)
    return unbroadcast(dy, a.shape), unbroadcast(dy, b.shape)
