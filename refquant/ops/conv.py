"""Conv (ONNX, 2-D spatial, NCHW): float32 in and out.

::

    y[n, m, oh, ow] = b[m] + sum_{c, i, j} w[m, c, i, j]
                             * xpad[n, g*C/group + c, oh*sh + i*dh, ow*sw + j*dw]

where ``g = m // (M/group)`` is the group of output channel ``m``, ``c`` runs over the
``C/group`` input channels of that group and ``xpad`` is ``x`` zero-padded by the effective
pads (see :mod:`refquant.ops.padding`).

Numeric decisions (the *float reference path*, spec/numerics.md): each output is a sum of
``K = C/group * kH * kW`` terms; :func:`conv` (the inference forward: float executor,
calibration, golden replay) computes it with :mod:`refquant.ops.dot`'s kernels — exact
float64 products summed in float64 in increasing ``k`` (order: input channel, kernel row,
kernel column: an im2col column's order), the bias added in float64, one rounding to
float32, the last two done by the kernel that summed (no float64 output array).  The result does not depend on the host's BLAS, SIMD
width or thread count, and is within ``gamma64_(K+1) * (sum|w*x| + |b|) + u*|y|`` of the
exact value (``u = 2**-24``, ``gamma64_n ~ n*2**-53``) — well inside the float32 bound
``gamma_(K+1) * sum|w*x| + |b|`` the tests check against the onnx reference evaluator and
onnxruntime.

:func:`conv_float32_blas` is the training forward (:data:`refquant.ops.TRAINING_OPS`): the
input unrolled (im2col), ``np.matmul`` in float32 (BLAS order, which depends on the host's BLAS
kernel) and the bias added in float32 — the numerics the shipped models were trained with.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float, require_float32, require_grad_shape, require_ndim
from .dot import batched_dot_rounded, conv_direct_rounded
from .padding import window_plan


def im2col(x: np.ndarray, kernel, plan, strides=None, dilations=None) -> np.ndarray:
    """Unroll 2-D windows: ``cols[n, c, i, j, oh, ow] = xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]``.

    ``xpad`` is ``x`` padded with zeros by ``plan.pads`` (and ``plan.extra_end``).  One strided
    slice per kernel offset ``(i, j)``: kH*kW copies of the output-sized block.
    """
    sh, sw = strides if strides is not None else (1, 1)
    dh, dw = dilations if dilations is not None else (1, 1)
    top, left, bottom, right = plan.pads
    xpad = np.pad(
        x,
        ((0, 0), (0, 0), (top, bottom + plan.extra_end[0]), (left, right + plan.extra_end[1])),
    )
    oh, ow = plan.out
    kh, kw = kernel
    cols = np.empty((x.shape[0], x.shape[1], kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xpad[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                                          j * dw : j * dw + sw * (ow - 1) + 1 : sw]
    return cols


def conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    pads=None,
    strides=None,
) -> np.ndarray:
    """ONNX Conv: ``x`` (N, C, H, W), ``w`` (M, C/group, kH, kW), ``b`` (M,) -> (N, M, OH, OW).

    Attributes keep their ONNX names and defaults (strides, dilations 1; pads 0; group 1;
    kernel_shape taken from ``w``).  The inference forward: float64 accumulation in a fixed
    order, one rounding to float32 (see the module docstring) — machine-independent.
    """
    return _conv(x, w, b, "float64-fixed-order", auto_pad=auto_pad, dilations=dilations, group=group,
                 kernel_shape=kernel_shape, pads=pads, strides=strides)


def conv_float32_blas(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, **attributes) -> np.ndarray:
    """ONNX Conv as the training forward computes it: float32 ``np.matmul`` (BLAS order, not
    machine-independent) and the bias added in float32.  The attributes are :func:`conv`'s."""
    return _conv(x, w, b, "float32-blas", **attributes)


def _conv(x, w, b, accumulate, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
          strides=None):
    require_float32("Conv", x=x, w=w, b=b)
    require_ndim("Conv", "x", x, 4)
    require_ndim("Conv", "w", w, 4)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    if kernel_shape is not None and tuple(kernel_shape) != (kh, kw):
        raise ValueError(f"Conv: kernel_shape {list(kernel_shape)} does not match weight shape {w.shape}")
    if c % group or m % group or cg != c // group:
        raise ValueError(
            f"Conv: input has {c} channels and group={group}, so the weight must be "
            f"({m}, {c // group if group else '?'}, kH, kW) with {m} divisible by {group}; got {w.shape}"
        )
    if b is not None and b.shape != (m,):
        raise ValueError(f"Conv: bias must have shape ({m},), got {b.shape}")
    plan = window_plan(
        "Conv", (h, wd), (kh, kw), auto_pad=auto_pad, pads=pads, strides=strides, dilations=dilations
    )
    oh, ow = plan.out
    if accumulate == "float32-blas":
        cols = im2col(x, (kh, kw), plan, strides, dilations)
        cols = cols.reshape(n, group, cg * kh * kw, oh * ow)
        wmat = w.reshape(group, m // group, cg * kh * kw)
        y = np.matmul(wmat, cols).reshape(n, m, oh, ow)
        if b is not None:
            y += b[None, :, None, None]
        return y
    return _conv_rounded(x, w, b, group, plan, strides or (1, 1), dilations or (1, 1))


def _conv_rounded(x, w, b, group, plan, strides, dilations) -> np.ndarray:
    """``fl32(S_K + float64(b[m]))``, the float64 sums ``S_K`` (``refquant.ops.dot``) in the
    order of an im2col column, the bias added and the result rounded by the kernel that
    summed them (no float64 array of the outputs).

    Three ways to the same bits, chosen for speed only: grouped convolutions (depthwise:
    ``K = kH·kW`` terms, where unrolling would copy the input ``K`` times for little work)
    sum directly (:func:`~refquant.ops.dot.conv_direct_rounded`); an unpadded 1×1 stride-1
    convolution multiplies the input itself (its columns *are* the input, no copy); every
    other convolution unrolls and multiplies (:func:`~refquant.ops.dot.batched_dot_rounded`).
    """
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = plan.out
    if group > 1:
        return conv_direct_rounded(x, w, group, plan.pads, plan.out, strides, dilations, b)
    if (kh, kw) == (1, 1) and tuple(strides) == (1, 1) and not any(plan.pads) and plan.out == (h, wd):
        cols = x.reshape(n, c, h * wd)
    else:
        cols = im2col(x, (kh, kw), plan, strides, dilations).reshape(n, cg * kh * kw, oh * ow)
    zero = np.zeros(n, dtype=np.int64)
    return batched_dot_rounded(w.reshape(1, m, cg * kh * kw), cols, zero, np.arange(n, dtype=np.int64),
                               b).reshape(n, m, oh, ow)


# ---- backward -------------------------------------------------------------------------------


def col2im(cols: np.ndarray, x_shape, kernel, plan, strides=None, dilations=None) -> np.ndarray:
    """The adjoint of :func:`im2col`: add each column entry back onto the input position it came from::

        dx[n, c, h, w] = sum of cols[n, c, i, j, oh, ow] over all (i, j, oh, ow) with
                         oh*sh + i*dh - top = h  and  ow*sw + j*dw - left = w

    Entries that came from padding are dropped.  Numeric decisions: the kernel offsets are
    added one after another in row-major order ``(i, j)``, into a zero-initialised padded
    array of ``cols``' dtype; a fixed order, so the result is the same on every run.
    """
    sh, sw = strides if strides is not None else (1, 1)
    dh, dw = dilations if dilations is not None else (1, 1)
    top, left, bottom, right = plan.pads
    n, c, h, w = x_shape
    oh, ow = plan.out
    kh, kw = kernel
    xpad = np.zeros((n, c, h + top + bottom + plan.extra_end[0], w + left + right + plan.extra_end[1]),
                    dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xpad[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                       j * dw : j * dw + sw * (ow - 1) + 1 : sw] += cols[:, :, i, j]
    return xpad[:, :, top : top + h, left : left + w]


def conv_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    pads=None,
    strides=None,
) -> tuple:
    """Gradients of Conv: ``(dx, dw, db)`` from the output gradient ``dy`` (N, M, OH, OW).

    With ``cols`` the unrolled input of group ``g`` (``K = C/group*kH*kW`` rows, one column
    per ``(n, oh, ow)``) and ``W_g`` its weight matrix (M/group, K), the forward is
    ``Y_g = W_g @ cols_g + b``, so::

        dW_g   = sum_n dY_g[n] @ cols_g[n]^T        one matmul over all (n, oh, ow)
        dcols_g = W_g^T @ dY_g                      one matmul over all (n, oh, ow); dx = col2im(dcols)
        db[m]  = sum_{n, oh, ow} dy[n, m, oh, ow]

    Numeric decisions: everything in ``dy``'s dtype (float32 in training, float64 in the
    gradient checks); the sums are BLAS sums (fixed for a fixed thread count) and NumPy
    pairwise sums; ``db`` is None when the Conv has no bias.
    """
    require_float("Conv backward", dy=dy, x=x, w=w, b=b)
    require_ndim("Conv backward", "x", x, 4)
    require_ndim("Conv backward", "w", w, 4)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    if c % group or m % group or cg != c // group:
        raise ValueError(f"Conv backward: input has {c} channels and group={group}, weight shape {w.shape}")
    plan = window_plan(
        "Conv", (h, wd), (kh, kw), auto_pad=auto_pad, pads=pads, strides=strides, dilations=dilations
    )
    oh, ow = plan.out
    require_grad_shape("Conv backward", dy, (n, m, oh, ow))
    k = cg * kh * kw
    cols = im2col(x, (kh, kw), plan, strides, dilations).reshape(n, group, k, oh * ow)
    dyg = dy.reshape(n, group, m // group, oh * ow)
    # (group, M/g, N*OH*OW) @ (group, N*OH*OW, K): one matmul per group over every position
    dy_rows = dyg.transpose(1, 2, 0, 3).reshape(group, m // group, n * oh * ow)
    col_rows = cols.transpose(1, 0, 3, 2).reshape(group, n * oh * ow, k)
    dw = np.matmul(dy_rows, col_rows).reshape(w.shape)
    wmat_t = np.ascontiguousarray(w.reshape(group, m // group, k).transpose(0, 2, 1))
    dcols = np.matmul(wmat_t, dy_rows)  # (group, K, N*OH*OW): one matmul per group
    dcols = dcols.reshape(group, cg, kh, kw, n, oh, ow).transpose(4, 0, 1, 2, 3, 5, 6)
    dx = col2im(dcols.reshape(n, c, kh, kw, oh, ow), x.shape, (kh, kw), plan, strides, dilations)
    db = dy.sum(axis=(0, 2, 3)) if b is not None else None
    return dx, dw, db
