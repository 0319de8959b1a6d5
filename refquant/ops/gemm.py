"""Gemm and MatMul (ONNX): float32 in and out.

Gemm::

    Y = alpha * A' @ B' + beta * C        A' = A.T if transA else A   (M, K)
                                          B' = B.T if transB else B   (K, N)

``C`` is optional and broadcast one way to (M, N).  MatMul is ``numpy.matmul`` (ONNX MatMul is
defined as NumPy's matmul, including 1-D promotion and batch broadcasting).

Numeric decisions (the *float reference path*, spec/numerics.md): :func:`gemm` and
:func:`matmul` are the inference forward (float executor, calibration, golden replay).  Their
K-term sums are :func:`refquant.ops.dot.batched_dot_f64` — exact float64 products summed in
float64 in increasing ``k`` — and for Gemm ``alpha`` and ``beta`` are float64 multiplies by
the float32-rounded attribute, in the order of the formula, each skipped when it is exactly 1;
the result is rounded to float32 once, at the end.  So the output does not depend on the
host's BLAS, SIMD width or thread count.  With ``beta = 0`` the C term is left out, as the
onnx reference evaluator does.  Error versus the exact value: one float32 rounding plus
``gamma64_(K+3) * (|alpha| * sum|a*b| + |beta*C|)``, ``gamma64_n ~ n*2**-53`` — inside the
float32 bound ``gamma_(K+3) * (...)`` the tests check.

:func:`gemm_float32_blas` and :func:`matmul_float32_blas` are the training forward
(:data:`refquant.ops.TRAINING_OPS`): float32 products and sums in BLAS order (host-dependent),
``alpha`` and ``beta`` as float32 multiplies — the numerics the shipped models were trained
with.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float, require_float32, require_grad_shape, require_ndim
from .dot import batched_dot_f64, dot_f64
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
    """ONNX Gemm: ``alpha * op(A) @ op(B) + beta * C`` with A, B 2-D; float64 accumulation in a
    fixed order, one rounding to float32 (machine-independent)."""
    return _gemm(a, b, c, reference=True, alpha=alpha, beta=beta, transA=transA, transB=transB)


def gemm_float32_blas(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, **attributes) -> np.ndarray:
    """ONNX Gemm as the training forward computes it: float32 BLAS sums (host-dependent).  The
    attributes are :func:`gemm`'s."""
    return _gemm(a, b, c, reference=False, **attributes)


def _gemm(a, b, c, *, reference, alpha=1.0, beta=1.0, transA=0, transB=0):  # noqa: N803
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
    if c is not None and beta != 0.0 and not broadcasts_to(c.shape, (a2.shape[0], b2.shape[1])):
        raise ValueError(f"Gemm: C of shape {c.shape} does not broadcast to {(a2.shape[0], b2.shape[1])}")
    if not reference:
        y = a2 @ b2
        if alpha != 1.0:
            y *= np.float32(alpha)
        if c is not None and beta != 0.0:
            y += c if beta == 1.0 else c * np.float32(beta)
        return y
    y = dot_f64(a2, b2)
    if alpha != 1.0:
        y *= np.float64(np.float32(alpha))
    if c is not None and beta != 0.0:
        c64 = c.astype(np.float64)
        y += c64 if beta == 1.0 else c64 * np.float64(np.float32(beta))
    return y.astype(np.float32)


def broadcasts_to(shape, target) -> bool:
    """True if an array of ``shape`` broadcasts one way (unidirectionally) to ``target``."""
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul = ``numpy.matmul(a, b)`` semantics (1-D promotion, batch broadcasting), each
    sum in float64 in increasing k, rounded once to float32 (machine-independent)."""
    require_float32("MatMul", a=a, b=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"MatMul: shapes {a.shape} and {b.shape} are not compatible")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"MatMul: shapes {a.shape} and {b.shape} are not compatible") from None
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"MatMul: shapes {a.shape} and {b.shape} are not compatible")
    na = int(np.prod(a2.shape[:-2], dtype=np.int64))
    nb = int(np.prod(b2.shape[:-2], dtype=np.int64))
    ia = np.broadcast_to(np.arange(na, dtype=np.int64).reshape(a2.shape[:-2]), batch).ravel()
    ib = np.broadcast_to(np.arange(nb, dtype=np.int64).reshape(b2.shape[:-2]), batch).ravel()
    y = batched_dot_f64(a2.reshape((na,) + a2.shape[-2:]), b2.reshape((nb,) + b2.shape[-2:]), ia, ib)
    y = y.reshape(batch + (a2.shape[-2], b2.shape[-1])).astype(np.float32)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


def matmul_float32_blas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul as the training forward computes it: ``numpy.matmul`` in float32 (BLAS order)."""
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
