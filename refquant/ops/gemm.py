"""Gemm and MatMul (ONNX) in float32.

Gemm::

    Y = alpha * A' @ B' + beta * C        A' = A.T if transA else A   (M, K)
                                          B' = B.T if transB else B   (K, N)

``C`` is optional and broadcast one way to (M, N).  MatMul is ``numpy.matmul`` (ONNX MatMul is
defined as NumPy's matmul, including 1-D promotion and batch broadcasting).

Numeric decisions: the K-term sums are float32 in BLAS order; ``alpha`` and ``beta`` are
applied as float32 multiplies, in the order of the formula, each skipped when it is exactly 1
(multiplying by 1 is exact, so this changes no value); with ``beta = 0`` the C term is left
out, as the onnx reference evaluator does.  Error bound versus the exact value:
``gamma_(K+3) * (|alpha| * sum|a*b| + |beta*C|)``.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float, require_float32, require_grad_shape, require_ndim
from .elementwise import unbroadcast


def gemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,  # noqa: N803 - ONNX attribute name
    transB: int = 0,  # noqa: N803 - ONNX attribute name
) -> np.ndarray:
    """ONNX Gemm: ``alpha * op(A) @ op(B) + beta * C`` with A, B 2-D."""
    require_float32("Gemm", a=a, b=b, c=c)
    require_ndim("Gemm", "A", a, 2)
    require_ndim("Gemm", "B", b, 2)
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(
            f"Gemm: inner dimensions differ: A' is {a2.shape} and B' is {b2.shape} "
            f"(transA={transA}, transB={transB})"
        )
    y = a2 @ b2
    if alpha != 1.0:
        y *= np.float32(alpha)
    if c is not None and beta != 0.0:
        if not broadcasts_to(c.shape, y.shape):
            raise ValueError(f"Gemm: C of shape {c.shape} does not broadcast to {y.shape}")
        y += c if beta == 1.0 else c * np.float32(beta)
    return y


def broadcasts_to(shape, target) -> bool:
    """True if an array of ``shape`` broadcasts one way (unidirectionally) to ``target``."""
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul = ``numpy.matmul(a, b)`` (float32 sums in BLAS order)."""
    require_float32("MatMul", a=a, b=b)
    try:
        return np.matmul(a, b)
    except ValueError:
        raise ValueError(f"MatMul: shapes {a.shape} and {b.shape} are not compatible") from None


# ---- backward -------------------------------------------------------------------------------


def gemm_backward(
    dy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,  # noqa: N803 - ONNX attribute name
    transB: int = 0,  # noqa: N803 - ONNX attribute name
) -> tuple:
    """Gradients of Gemm: ``(dA, dB, dC)`` from ``dY`` (M, N).

    With ``A' = op(A)`` and ``B' = op(B)``::

        dA' = alpha * dY @ B'^T        dA = dA'^T if transA else dA'
        dB' = alpha * A'^T @ dY        dB = dB'^T if transB else dB'
        dC  = unbroadcast(beta * dY, C.shape)      (zero when beta = 0: the forward skips C)

    The transposed gradients are computed directly (``dA = alpha * B' @ dY^T`` when transA = 1,
    ``dB = alpha * dY^T @ A'`` when transB = 1) rather than by transposing a product.  Numeric decisions: BLAS sums in ``dy``'s dtype;
    ``alpha`` and ``beta`` are multiplies in that dtype, skipped when exactly 1.
    """
    require_float("Gemm backward", dy=dy, a=a, b=b, c=c)
    require_ndim("Gemm backward", "A", a, 2)
    require_ndim("Gemm backward", "B", b, 2)
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(f"Gemm backward: inner dimensions differ: A' is {a2.shape} and B' is {b2.shape}")
    require_grad_shape("Gemm backward", dy, (a2.shape[0], b2.shape[1]))
    g = dy if alpha == 1.0 else dy * dy.dtype.type(alpha)
    da = b2 @ g.T if transA else g @ b2.T
    db = g.T @ a2 if transB else a2.T @ g
    dc = None
    if c is not None:
        if beta == 0.0:
            dc = np.zeros_like(c)
        else:
            dc = unbroadcast(dy if beta == 1.0 else dy * dy.dtype.type(beta), c.shape)
    return da, db, dc


def matmul_backward(dy: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    """Gradients of MatMul (``numpy.matmul`` semantics): ``(dA, dB)``.

    1-D operands are promoted as the forward promotes them (``a`` to a row, ``b`` to a
    column); then ``dA = dY @ B^T`` and ``dB = A^T @ dY`` over the last two axes, summed over
    the batch axes each operand was broadcast along, and reshaped back.
    """
    require_float("MatMul backward", dy=dy, a=a, b=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"MatMul backward: inputs must be at least 1-D, got {a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    try:
        out = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
    except ValueError:
        raise ValueError(f"MatMul backward: shapes {a.shape} and {b.shape} are not compatible") from None
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"MatMul backward: shapes {a.shape} and {b.shape} are not compatible")
    expected = out[:-2] + ((out[-2],) if a.ndim > 1 else ()) + ((out[-1],) if b.ndim > 1 else ())
    require_grad_shape("MatMul backward", dy, expected)
    dy2 = dy.reshape(out)
    da = unbroadcast(np.matmul(dy2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    db = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), dy2), b2.shape).reshape(b.shape)
    return da, db
