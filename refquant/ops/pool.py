"""MaxPool, AveragePool (ONNX, 2-D spatial, NCHW) and GlobalAveragePool, in float32.

With taps ``t(o, j) = o*s - pad_begin + j*d`` per spatial axis (see :mod:`refquant.ops.padding`)::

    MaxPool      y[n,c,oh,ow] = max  over taps inside the input of x[n,c,th,tw]
    AveragePool  y[n,c,oh,ow] = (sum over taps inside the input of x[n,c,th,tw]) / count
                 count = taps inside [-pad_begin, size + pad_end)   if count_include_pad = 1
                         taps inside [0, size)                      if count_include_pad = 0
    GlobalAveragePool  y[n,c,1,1] = mean over all spatial positions of x[n,c]

Taps that ceil_mode pushes past the end padding are never counted.  A window that covers
only padding is rejected with ValueError (its value would be -inf, or 0/0).

Numeric decisions: max is exact.  AveragePool sums in float32, one kernel offset after
another (row-major over the kernel), then divides once by the float32 count (exact integer);
GlobalAveragePool is ``numpy.mean`` in float32 (pairwise float32 sum, one division).  Error
bound of both averages: ``gamma_k * sum|x| / count`` with ``k`` the number of summed taps.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float, require_float32, require_grad_shape, require_ndim
from .padding import positions_counted, check_pool_windows, window_plan


def _windows(xpad: np.ndarray, kernel, plan, strides, dilations):
    """Yield, for each kernel offset (i, j), the (N, C, OH, OW) block of taps it reads."""
    sh, sw = strides if strides is not None else (1, 1)
    dh, dw = dilations if dilations is not None else (1, 1)
    oh, ow = plan.out
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield xpad[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                             j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def _pad(x: np.ndarray, plan, value: float) -> np.ndarray:
    top, left, bottom, right = plan.pads
    return np.pad(
        x,
        ((0, 0), (0, 0), (top, bottom + plan.extra_end[0]), (left, right + plan.extra_end[1])),
        constant_values=value,
    )


def _plan(op, x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode):
    require_float32(op, x=x)
    require_ndim(op, "x", x, 4)
    if kernel_shape is None or len(kernel_shape) != 2:
        raise ValueError(f"{op}: kernel_shape must list 2 integers, got {kernel_shape!r}")
    size = x.shape[2:]
    plan = window_plan(
        op, size, tuple(kernel_shape), auto_pad=auto_pad, pads=pads, strides=strides,
        dilations=dilations, ceil_mode=ceil_mode,
    )
    check_pool_windows(op, size, tuple(kernel_shape), plan, strides, dilations)
    return plan


def max_pool(
    x: np.ndarray,
    *,
    kernel_shape,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations=None,
    pads=None,
    strides=None,
) -> np.ndarray:
    """ONNX MaxPool (output Y only): padding positions hold -inf, so they never win."""
    plan = _plan("MaxPool", x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    xpad = _pad(x, plan, -np.inf)
    y = np.full((*x.shape[:2], *plan.out), -np.inf, dtype=np.float32)
    for block in _windows(xpad, kernel_shape, plan, strides, dilations):
        np.maximum(y, block, out=y)
    return y


def average_pool(
    x: np.ndarray,
    *,
    kernel_shape,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    pads=None,
    strides=None,
) -> np.ndarray:
    """ONNX AveragePool (opset 11: no dilations): window sum / count, see module docstring."""
    plan = _plan("AveragePool", x, kernel_shape, auto_pad, pads, strides, None, ceil_mode)
    xpad = _pad(x, plan, 0.0)
    total = np.zeros((*x.shape[:2], *plan.out), dtype=np.float32)
    for block in _windows(xpad, kernel_shape, plan, strides, None):
        total += block
    counts = []
    for axis in range(2):
        size, begin, end = x.shape[2 + axis], plan.pads[axis], plan.pads[axis + 2]
        lo, hi = (-begin, size + end) if count_include_pad else (0, size)
        s = strides[axis] if strides is not None else 1
        counts.append(positions_counted(plan.out[axis], kernel_shape[axis], s, 1, begin, lo, hi))
    count = (counts[0][:, None] * counts[1][None, :]).astype(np.float32)
    return total / count


def global_average_pool(x: np.ndarray) -> np.ndarray:
    """ONNX GlobalAveragePool: ``mean(x[n, c, ...])`` over every axis after the channel axis,
    kept as size-1 axes: (N, C, H, W) -> (N, C, 1, 1)."""
    require_float32("GlobalAveragePool", x=x)
    if x.ndim < 3:
        raise ValueError(f"GlobalAveragePool: x must be at least 3-D (N, C, spatial...), got shape {x.shape}")
    return np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32)


# ---- backward -------------------------------------------------------------------------------


def _backward_plan(op, dy, x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode):
    require_float(op, dy=dy, x=x)
    require_ndim(op, "x", x, 4)
    if kernel_shape is None or len(kernel_shape) != 2:
        raise ValueError(f"{op}: kernel_shape must list 2 integers, got {kernel_shape!r}")
    plan = window_plan(
        op, x.shape[2:], tuple(kernel_shape), auto_pad=auto_pad, pads=pads, strides=strides,
        dilations=dilations, ceil_mode=ceil_mode,
    )
    check_pool_windows(op, x.shape[2:], tuple(kernel_shape), plan, strides, dilations)
    require_grad_shape(op, dy, (*x.shape[:2], *plan.out))
    return plan


def _tap_slices(kernel, plan, strides, dilations):
    """For each kernel offset (i, j), row-major, the index of the (N, C, OH, OW) block it reads
    in the padded input — the same blocks :func:`_windows` yields."""
    sh, sw = strides if strides is not None else (1, 1)
    dh, dw = dilations if dilations is not None else (1, 1)
    oh, ow = plan.out
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield (slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                   slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _crop(gpad: np.ndarray, x_shape, plan) -> np.ndarray:
    top, left = plan.pads[0], plan.pads[1]
    return gpad[:, :, top : top + x_shape[2], left : left + x_shape[3]]


def max_pool_backward(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    kernel_shape,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations=None,
    pads=None,
    strides=None,
) -> tuple:
    """Gradient of MaxPool: each window's output gradient goes to the one tap that holds the max.

    ``dx[n, c, h, w] = sum of dy[n, c, oh, ow] over the windows whose chosen tap is (h, w)``.
    Ties: the first tap in row-major kernel order whose value equals the maximum takes the
    whole gradient (a padding tap, -inf, never wins).  The maximum is recomputed from ``x``
    exactly as the forward computes it.  Numeric decisions: the gradients of overlapping
    windows are added tap offset by tap offset in row-major order (exact when windows do not
    overlap).
    """
    plan = _backward_plan("MaxPool backward", dy, x, kernel_shape, auto_pad, pads, strides, dilations,
                          ceil_mode)
    xpad = _pad(x, plan, -np.inf)
    taps = list(_tap_slices(kernel_shape, plan, strides, dilations))
    y = np.full(dy.shape, -np.inf, dtype=x.dtype)
    for index in taps:
        np.maximum(y, xpad[index], out=y)
    gpad = np.zeros_like(xpad)
    routed = np.zeros(dy.shape, dtype=bool)
    for index in taps:
        hit = (xpad[index] == y) & ~routed
        gpad[index] += np.where(hit, dy, np.zeros((), dy.dtype))
        routed |= hit
    return (_crop(gpad, x.shape, plan),)


def average_pool_backward(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    kernel_shape,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    pads=None,
    strides=None,
) -> tuple:
    """Gradient of AveragePool: every tap of a window receives ``dy / count`` (the forward's count).

    Taps in the padding receive their share too, which is then dropped (padding is a constant).
    Numeric decisions: one division ``dy / count`` in ``dy``'s dtype, then the shares of
    overlapping windows added tap offset by tap offset in row-major order.
    """
    plan = _backward_plan("AveragePool backward", dy, x, kernel_shape, auto_pad, pads, strides, None,
                          ceil_mode)
    counts = []
    for axis in range(2):
        size, begin, end = x.shape[2 + axis], plan.pads[axis], plan.pads[axis + 2]
        lo, hi = (-begin, size + end) if count_include_pad else (0, size)
        s = strides[axis] if strides is not None else 1
        counts.append(positions_counted(plan.out[axis], kernel_shape[axis], s, 1, begin, lo, hi))
    count = (counts[0][:, None] * counts[1][None, :]).astype(dy.dtype)
    share = dy / count
    gpad = np.zeros_like(_pad(x, plan, 0.0))
    for index in _tap_slices(kernel_shape, plan, strides, None):
        gpad[index] += share
    return (_crop(gpad, x.shape, plan),)


def global_average_pool_backward(dy: np.ndarray, x: np.ndarray) -> tuple:
    """Gradient of GlobalAveragePool: ``dx[n, c, ...] = dy[n, c] / (number of spatial positions)``
    — one division in ``dy``'s dtype, broadcast over the spatial axes."""
    require_float("GlobalAveragePool backward", dy=dy, x=x)
    if x.ndim < 3:
        raise ValueError(f"GlobalAveragePool backward: x must be at least 3-D, got shape {x.shape}")
    require_grad_shape("GlobalAveragePool backward", dy, x.shape[:2] + (1,) * (x.ndim - 2))
    count = int(np.prod(x.shape[2:]))
    return (np.broadcast_to(dy / dy.dtype.type(count), x.shape).copy(),)
