"""Reference integer kernels: the specification of refquant's Conv/MatMul, in plain NumPy.

Layouts: matmul ``a`` is ``[M, K]`` and the weight ``w`` is ``[N, K]`` (output-major, the
layout a Conv's OIHW weight has once flattened, and the one that keeps both operands
contiguous along K); conv activations are NCHW and weights OIHW.

Every kernel computes the exact integer accumulator

    acc[m, n] = Σ_k (a[m, k] - z_a) · (w[n, k] - z_w[n]) + bias[n]

(for conv, ``k`` runs over the input channels of the group and the kernel window, and
padding contributes ``x = z_x``, i.e. real zero). The sum is exact: int8 products are
summed in float64, which is exact while ``K · max|a - z_a| · max|w - z_w| < 2**53`` (always
for 8- and 16-bit operands at practical K), and in int64 otherwise. If the final sum does not
fit in int32 the kernel raises :class:`AccumulatorOverflowError` (ONNX requires that it fits;
an int32 accumulation wrapping silently would be a wrong answer).

``*_int32`` kernels return the int32 accumulators (what dynamic quantization needs);
``*_requant`` kernels return ``requantize(acc)`` in the requantizer's mode and output format,
with any fused ReLU/ReLU6 clamp. Speed is not this module's job: see ``kernels/fast.py``.
"""

from __future__ import annotations

import numpy as np

from ..numerics.requant import Requantizer, requantize
from .geometry import ConvGeometry, conv_geometry

__all__ = [
    "AccumulatorOverflowError",
    "matmul_int32",
    "matmul_requant",
    "conv2d_int32",
    "conv2d_requant",
    "check_operands",
]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class AccumulatorOverflowError(OverflowError):
    """An exact accumulator does not fit in int32."""


def _centred(q, zp, what: str, name: str) -> np.ndarray:
    q = np.asarray(q)
    if q.dtype.kind not in "iu" or q.dtype.itemsize > 2:
        raise TypeError(f"{name}: {what} must be an 8- or 16-bit integer tensor, got dtype {q.dtype}")
    return q.astype(np.int64) - zp


def check_operands(a, w, a_zero_point, w_zero_point, bias, n_out: int, name: str):
    """Validate operand dtypes and zero points; return ``(z_a, z_w[n_out], bias[n_out])`` as int64.

    ``z_a`` is a scalar; ``z_w`` a scalar or one per output channel; ``bias`` int32 per output.
    Zero points must lie in their tensor's dtype range.
    """
    a, w = np.asarray(a), np.asarray(w)
    out = []
    for what, q, zp in (("input", a, a_zero_point), ("weight", w, w_zero_point)):
        z = np.asarray(0 if zp is None else zp)
        if z.dtype.kind not in "iu":
            raise TypeError(f"{name}: {what} zero point must be an integer, got dtype {z.dtype}")
        if q.dtype.kind in "iu":
            info = np.iinfo(q.dtype)
            if z.size and (z.min() < info.min or z.max() > info.max):
                raise ValueError(f"{name}: {what} zero point outside the {q.dtype} range")
        out.append(z.astype(np.int64))
    za, zw = out
    if za.size != 1:
        raise ValueError(f"{name}: input zero point must be a scalar, got shape {za.shape}")
    if zw.size not in (1, n_out):
        raise ValueError(f"{name}: weight zero point must be a scalar or have {n_out} entries, got {zw.size}")
    zw = np.broadcast_to(zw.reshape(-1), (n_out,))
    if bias is None:
        b = np.zeros(n_out, np.int64)
    else:
        b = np.asarray(bias)
        if b.dtype != np.int32:
            raise TypeError(f"{name}: bias must be int32, got dtype {b.dtype}")
        if b.shape != (n_out,):
            raise ValueError(f"{name}: bias must have shape ({n_out},), got {b.shape}")
        b = b.astype(np.int64)
    return za.reshape(()), zw, b


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of int64 matrices, exactly: float64 BLAS while provably exact, else int64."""
    k = a.shape[-1]
    bound = k * (int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)))
    if bound < 2**53:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def _to_int32(acc: np.ndarray, name: str) -> np.ndarray:
    if acc.size and (acc.min() < _INT32_MIN or acc.max() > _INT32_MAX):
        bad = np.unravel_index(np.argmax((acc < _INT32_MIN) | (acc > _INT32_MAX)), acc.shape)
        raise AccumulatorOverflowError(
            f"{name}: int32 accumulator overflow at output index {tuple(int(i) for i in bad)} "
            f"(exact value {int(acc[bad])}); reduce K, the operand ranges or the bias"
        )
    return acc.astype(np.int32)


def matmul_int32(a, w, a_zero_point=0, w_zero_point=0, bias=None, *, name="matmul") -> np.ndarray:
    """``acc[m, n] = Σ_k (a[m,k] - z_a)(w[n,k] - z_w[n]) + bias[n]`` as int32 ``[M, N]``."""
    a, w = np.asarray(a), np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"{name}: expected a [M, K] and w [N, K] with equal K, got {a.shape} and {w.shape}")
    za, zw, b = check_operands(a, w, a_zero_point, w_zero_point, bias, w.shape[0], name)
    acc = _exact_matmul(_centred(a, za, "input", name), _centred(w, zw[:, None], "weight", name).T)
    return _to_int32(acc + b, name)


def matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq: Requantizer, *, name="matmul") -> np.ndarray:
    """``requantize(matmul_int32(...))`` — channels are the N columns."""
    return requantize(matmul_int32(a, w, a_zero_point, w_zero_point, bias, name=name), rq, channel_axis=1)


def _conv_accumulate(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Exact ``Σ`` over (input channel, kh, kw) of centred int64 operands, as int64 NCHW.

    Padding is applied to the *centred* input with 0, which is padding with ``z_x``.
    For each kernel offset (i, j) the strided window of the padded input is contracted
    with ``w[:, :, i, j]`` group by group.
    """
    t, l, b, r = g.pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    xg = xp.reshape(g.n, g.group, g.cin_per_group, xp.shape[2], xp.shape[3])
    wg = w.reshape(g.group, g.cout_per_group, g.cin_per_group, g.kh, g.kw)
    sh, sw = g.strides
    dh, dw = g.dilations
    acc = np.zeros((g.n, g.group, g.cout_per_group, g.oh, g.ow), np.int64)
    for i in range(g.kh):
        for j in range(g.kw):
            win = xg[:, :, :, i * dh : i * dh + sh * (g.oh - 1) + 1 : sh,
                           j * dw : j * dw + sw * (g.ow - 1) + 1 : sw]
            # [group, n·oh·ow, cin_g] @ [group, cin_g, cout_g] → exact per group
            lhs = win.transpose(1, 0, 3, 4, 2).reshape(g.group, g.n * g.oh * g.ow, g.cin_per_group)
            rhs = wg[:, :, :, i, j].transpose(0, 2, 1)
            prod = _exact_matmul(lhs, rhs).reshape(g.group, g.n, g.oh, g.ow, g.cout_per_group)
            acc += prod.transpose(1, 0, 4, 2, 3)
    return acc.reshape(g.n, g.c_out, g.oh, g.ow)


def conv2d_int32(x, w, x_zero_point=0, w_zero_point=0, bias=None, *, strides=None, pads=None,
                 dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """2-D convolution accumulators ``[N, C_out, OH, OW]`` in int32 (ONNX ConvInteger + bias).

    ``acc[n, o, y, x] = Σ_{c, i, j} (X[n, g·C_g + c, y·s_h + i·d_h - t, x·s_w + j·d_w - l] - z_x)
                         · (W[o, c, i, j] - z_w[o]) + bias[o]``, with padded positions
    contributing ``X = z_x``; ``g = o // (C_out/group)``.
    """
    x, w = np.asarray(x), np.asarray(w)
    g = conv_geometry(x.shape, w.shape, strides=strides, pads=pads, dilations=dilations,
                      group=group, auto_pad=auto_pad, name=name)
    zx, zw, b = check_operands(x, w, x_zero_point, w_zero_point, bias, g.c_out, name)
    acc = _conv_accumulate(_centred(x, zx, "input", name),
                           _centred(w, zw[:, None, None, None], "weight", name), g)
    return _to_int32(acc + b[None, :, None, None], name)


def conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq: Requantizer, *, strides=None,
                   pads=None, dilations=None, group=1, auto_pad="NOTSET", name="conv") -> np.ndarray:
    """``requantize(conv2d_int32(...))`` — channels are C_out (axis 1)."""
    acc = conv2d_int32(x, w, x_zero_point, w_zero_point, bias, strides=strides, pads=pads,
                       dilations=dilations, group=group, auto_pad=auto_pad, name=name)
    return requantize(acc, rq, channel_axis=1)
