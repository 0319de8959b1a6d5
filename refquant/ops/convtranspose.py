"""ConvTranspose (ONNX, 2-D spatial, NCHW): float32 in and out.

``x`` (N, C, H, W), ``w`` (C, M/group, kH, kW), ``b`` (M,)::

    y[n, g·M/group + m, h·sh + i·dh − top, v·sw + j·dw − left]
        += Σ_{c in group g} x[n, c, h, v] · w[c, m, i, j]

The output is ``OH = sh·(H − 1) + output_padding_h + (kH − 1)·dh + 1 − top − bottom`` (and
likewise for the width); positions that fall into the pads are dropped.  Only explicit
``pads`` (``auto_pad`` ``NOTSET``) are supported, and no ``output_shape`` attribute.

Numeric decisions (the float reference path, as :mod:`refquant.ops.conv`): for each kernel
offset ``(i, j)`` the sum over the group's input channels is
:func:`refquant.ops.dot.batched_dot_f64` — exact float64 products summed in increasing
``c``; these per-offset sums are added into a zero float64 output in row-major ``(i, j)``
order; the bias is added in float64 and the result rounded once to float32.  A fixed order:
the same bits on every host.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float32, require_ndim
from .dot import batched_dot_f64


def convtranspose_output_size(in_hw, kernel, strides, dilations, pads, output_padding) -> tuple:
    """``(OH, OW)`` by the formula of the module docstring."""
    return tuple(s * (n - 1) + op + (k - 1) * d + 1 - pb - pe
                 for n, k, s, d, pb, pe, op in zip(in_hw, kernel, strides, dilations, pads[:2], pads[2:],
                                                    output_padding))


def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, auto_pad: str = "NOTSET",
                   dilations=None, group: int = 1, kernel_shape=None, output_padding=None, pads=None,
                   strides=None) -> np.ndarray:
    """ONNX ConvTranspose (module docstring)."""
    require_float32("ConvTranspose", x=x, w=w, b=b)
    require_ndim("ConvTranspose", "x", x, 4)
    require_ndim("ConvTranspose", "w", w, 4)
    if auto_pad != "NOTSET":
        raise ValueError("ConvTranspose: only explicit pads are supported (auto_pad NOTSET, no output_shape)")
    n, c, h, wd = x.shape
    cw, mg, kh, kw = w.shape
    if cw != c or c % group:
        raise ValueError(f"ConvTranspose: the weight must be ({c}, M/group, kH, kW) for an input of {c} channels "
                         f"and group={group}; got {w.shape}")
    if kernel_shape is not None and tuple(kernel_shape) != (kh, kw):
        raise ValueError(f"ConvTranspose: kernel_shape {list(kernel_shape)} does not match weight shape {w.shape}")
    m = mg * group
    if b is not None and b.shape != (m,):
        raise ValueError(f"ConvTranspose: bias must have shape ({m},), got {b.shape}")
    sh, sw = strides or (1, 1)
    dh, dw = dilations or (1, 1)
    pads = list(pads or (0, 0, 0, 0))
    oph, opw = output_padding or (0, 0)
    full_h = sh * (h - 1) + oph + (kh - 1) * dh + 1
    full_w = sw * (wd - 1) + opw + (kw - 1) * dw + 1
    oh, ow = full_h - pads[0] - pads[2], full_w - pads[1] - pads[3]
    if oh <= 0 or ow <= 0:
        raise ValueError(f"ConvTranspose: the output would be {oh}x{ow} (pads {pads} too large)")
    cg = c // group
    # per group: a = w^T (kH*kW*M/g, C/g), b = x (C/g, H*W)  ->  (kH*kW*M/g, H*W) float64
    wt = w.reshape(group, cg, mg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(group, kh * kw * mg, cg)
    xs = x.reshape(n * group, cg, h * wd)
    ia = np.tile(np.arange(group, dtype=np.int64), n)
    ib = np.arange(n * group, dtype=np.int64)
    acc = batched_dot_f64(np.ascontiguousarray(wt), xs, ia, ib).reshape(n, group, kh, kw, mg, h, wd)
    full = np.zeros((n, group, mg, full_h, full_w), np.float64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, :, i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (wd - 1) + 1: sw] += acc[:, :, i, j]
    y = full.reshape(n, m, full_h, full_w)[:, :, pads[0]: pads[0] + oh, pads[1]: pads[1] + ow]
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None, None]
    return np.ascontiguousarray(y.astype(np.float32))
