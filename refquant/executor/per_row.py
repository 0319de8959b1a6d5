"""Per-row (per-token) activation qparams, and the one product that reads them natively.

A tensor ``x`` of shape ``[..., K]`` quantized *per row* has one scale and zero point per
position of its leading axes — per token of a sentence ``[N, S, K]``, per (head, token) of
``[N, H, S, K]`` — held as blocked :class:`~refquant.numerics.QParams`: ``axis = ndim − 1``,
``block_size = K``, scale and zero point of shape ``x.shape[:-1] + (1,)`` (one block covering the
whole row; ONNX ``QuantizeLinear``'s blocked form, opset 21).

A Gemm/MatMul against a constant weight ``w [C, K]`` (zero points ``z_w[c]``, scales ``s_w[c]``)
factors the row's scale out of the dot product::

    acc[r, c] = Σ_k (q[r, k] − z_r)(w[c, k] − z_w[c])
              = Σ_k q[r, k](w[c, k] − z_w[c]) − z_r · Σ_k (w[c, k] − z_w[c])      (exact, int64 → int32)
    y[r, c]   = float32(acc[r, c] + b_q[r, c]) · float32(float32(s_r) · float32(s_w[c]))

The first sum is the backend's ``matmul_int32`` with input zero point 0; the correction is an
exact integer outer product; an accumulator beyond int32 is an error, never a wrap. The int32
bias, when the layer has one, is quantized with each row's scale,
``b_q[r, c] = clamp_int32(round_half_even(b[c] / float32(s_r · s_w[c])))``. This is ONNX
``MatMulInteger`` with a per-row ``a_zero_point`` (an M-element vector), then ``Cast`` and ``Mul``
by the outer product of the scales. Only a layer whose output stays float (a float island
follows — a transformer's linear layers) reads per-row qparams this way; any other kernel reads
the tensor requantized onto one per-tensor grid (:func:`~refquant.executor.integer_ops.per_tensor`).
"""

from __future__ import annotations

import numpy as np

from ..kernels.reference import _to_int32
from ..numerics import QParams

__all__ = ["is_per_row", "per_row_qparams", "per_row_to_float", "row_scales"]


def is_per_row(qp: QParams, shape) -> bool:
    """Whether ``qp`` holds one block per row of a tensor of ``shape`` (module doc)."""
    return (qp.block_size > 0 and len(shape) >= 2 and qp.axis == len(shape) - 1
            and qp.block_size >= shape[-1] and tuple(qp.scale.shape) == tuple(shape[:-1]) + (1,))


def per_row_qparams(scale, zero_point, fmt, shape, name: str) -> QParams:
    """Blocked qparams for per-row scales/zero points given as ``shape[:-1]`` arrays."""
    lead = tuple(shape[:-1]) + (1,)
    return QParams(np.asarray(scale, np.float32).reshape(lead), np.asarray(zero_point).reshape(lead), fmt,
                   axis=len(shape) - 1, block_size=int(shape[-1]), name=name)


def row_scales(qp: QParams) -> tuple[np.ndarray, np.ndarray]:
    """``(s_r, z_r)`` of per-row qparams as flat ``[R]`` arrays (rows in C order)."""
    return qp.scale.reshape(-1), qp.zero_point.reshape(-1).astype(np.int64)


def per_row_to_float(kernels, q: np.ndarray, qp: QParams, w: np.ndarray, w_qp: QParams, bias, name: str):
    """``(y, acc)`` of the module doc: ``q [R, K]`` quantized per row with ``qp`` (R rows, in C
    order of the tensor's leading axes), ``w [C, K]`` integers with ``w_qp``; ``bias`` float32 ``[C]``
    or ``None``. ``y`` float32 ``[R, C]``, ``acc`` the int32 accumulators (bias included)."""
    s_r, z_r = row_scales(qp)
    if s_r.size != q.shape[0]:
        raise ValueError(f"layer {name!r}: {s_r.size} row scales for {q.shape[0]} rows")
    zw = w_qp.zero_point
    acc0 = kernels.matmul_int32(q, w, 0, zw, None, name=name)
    centred = w.astype(np.int64) - np.asarray(zw, np.int64).reshape(-1, 1)
    acc = acc0.astype(np.int64) - np.outer(z_r, centred.sum(axis=1))
    scale = (s_r.reshape(-1, 1) * np.atleast_1d(np.asarray(w_qp.scale, np.float32)).reshape(1, -1)).astype(np.float32)
    if bias is not None:
        with np.errstate(over="ignore", divide="ignore"):
            b_q = np.rint(np.asarray(bias, np.float32).reshape(1, -1) / scale).astype(np.float64)
        acc = acc + np.clip(b_q, -(2**31), 2**31 - 1).astype(np.int64)
    acc = _to_int32(acc, name)
    return acc.astype(np.float32) * scale, acc
