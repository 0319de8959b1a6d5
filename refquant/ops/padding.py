"""Window arithmetic of Conv, MaxPool and AveragePool over two spatial axes (ONNX rules).

A window slides over one spatial axis of length ``size`` with kernel length ``k``, stride
``s`` and dilation ``d``; it covers ``extent = d*(k-1) + 1`` input positions.  ONNX ``pads``
are ``[x1_begin, x2_begin, x1_end, x2_end]`` (x1 = H, x2 = W).  Output length per axis:

* ``auto_pad="NOTSET"`` (explicit pads ``b``, ``e``)::

      out = floor((size + b + e - extent) / s) + 1          ceil_mode = 0
      out = ceil ((size + b + e - extent) / s) + 1          ceil_mode = 1,
            minus 1 if the last window would start at or after size + b
            (it would start in the end padding; the ONNX/PyTorch rule)

* ``"VALID"``: no padding, ``out = floor((size - extent) / s) + 1``.
* ``"SAME_UPPER"`` / ``"SAME_LOWER"``: ``out = ceil(size / s)`` and the padding needed,
  ``total = max(0, (out - 1)*s + extent - size)``, is split ``b = total // 2`` (UPPER: the odd
  element goes at the end) or ``b = total - total // 2`` (LOWER: at the beginning).

With ceil_mode the last window may run past ``size + e``; :func:`window_plan` reports how many
positions beyond the declared padding the operator must add (``extra_end``) so slices stay
in bounds.  Those positions are never counted by AveragePool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AUTO_PAD_MODES = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of a 2-D sliding operator go.

    ``pads`` are the effective ONNX pads ``[top, left, bottom, right]`` after ``auto_pad``;
    ``out`` the output (height, width); ``extra_end`` the positions added after the end
    padding, per axis, so that the last (ceil_mode) window is inside the padded array.
    """

    pads: tuple[int, int, int, int]
    out: tuple[int, int]
    extra_end: tuple[int, int]


def window_plan(
    op: str,
    size: tuple[int, int],
    kernel: tuple[int, int],
    *,
    auto_pad: str = "NOTSET",
    pads=None,
    strides=None,
    dilations=None,
    ceil_mode: int = 0,
) -> WindowPlan:
    """Effective pads and output size of a 2-D window operator; ValueError if none fits."""
    strides = tuple(strides) if strides is not None else (1, 1)
    dilations = tuple(dilations) if dilations is not None else (1, 1)
    for name, values, length, low in (("kernel_shape", kernel, 2, 1), ("strides", strides, 2, 1),
                                      ("dilations", dilations, 2, 1), ("pads", pads, 4, 0)):
        if values is not None and (len(values) != length or any(int(v) != v or v < low for v in values)):
            raise ValueError(f"{op}: {name} must be {length} integers >= {low} (2-D spatial), got {list(values)}")
    if auto_pad not in AUTO_PAD_MODES:
        raise ValueError(f"{op}: auto_pad must be one of {AUTO_PAD_MODES}, got {auto_pad!r}")
    if auto_pad != "NOTSET" and pads is not None and any(pads):
        raise ValueError(f"{op}: explicit pads {list(pads)} cannot be combined with auto_pad={auto_pad!r}")
    if auto_pad != "NOTSET" and ceil_mode:
        raise ValueError(f"{op}: ceil_mode=1 is only defined with explicit pads (auto_pad='NOTSET')")
    explicit = tuple(pads) if pads is not None else (0, 0, 0, 0)

    begin, end, out, extra = [0, 0], [0, 0], [0, 0], [0, 0]
    for axis in range(2):
        n, k, s, d = size[axis], kernel[axis], strides[axis], dilations[axis]
        extent = d * (k - 1) + 1
        if auto_pad == "NOTSET":
            b, e = explicit[axis], explicit[axis + 2]
            span = n + b + e - extent
            if span < 0:
                raise ValueError(
                    f"{op}: window extent {extent} (kernel {k}, dilation {d}) is larger than the "
                    f"padded input length {n + b + e} on spatial axis {axis}"
                )
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + b:
                    o -= 1
            else:
                o = span // s + 1
        elif auto_pad == "VALID":
            b = e = 0
            if n < extent:
                raise ValueError(
                    f"{op}: window extent {extent} is larger than the input length {n} on spatial "
                    f"axis {axis} (auto_pad='VALID')"
                )
            o = (n - extent) // s + 1
        else:
            o = math.ceil(n / s)
            total = max(0, (o - 1) * s + extent - n)
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
        begin[axis], end[axis], out[axis] = b, e, o
        extra[axis] = max(0, (o - 1) * s + extent - (n + b + e))
    return WindowPlan(
        pads=(begin[0], begin[1], end[0], end[1]), out=(out[0], out[1]), extra_end=(extra[0], extra[1])
    )


def positions_counted(
    out: int, kernel: int, stride: int, dilation: int, begin: int, lo: int, hi: int
) -> np.ndarray:
    """How many taps of each output window fall inside ``[lo, hi)`` in input coordinates.

    Window ``o`` has taps at ``o*stride - begin + j*dilation`` for ``j < kernel``.  Used for
    the AveragePool divisor and to reject pooling windows that cover no input element.
    """
    taps = np.arange(out)[:, None] * stride - begin + np.arange(kernel)[None, :] * dilation
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


def check_pool_windows(op: str, size, kernel, plan: WindowPlan, strides=None, dilations=None) -> None:
    """The two extra rules of MaxPool/AveragePool windows; ValueError if either is broken.

    1. Every effective pad is smaller than the kernel length on its axis (ONNX Runtime
       refuses other pools; refquant adopts its rule so both accept the same models).
    2. Every window reads at least one input element (else its value would be -inf for
       MaxPool or 0/0 for AveragePool without count_include_pad).
    """
    strides = tuple(strides) if strides is not None else (1, 1)
    dilations = tuple(dilations) if dilations is not None else (1, 1)
    for axis in range(2):
        b, e = plan.pads[axis], plan.pads[axis + 2]
        if b >= kernel[axis] or e >= kernel[axis]:
            raise ValueError(
                f"{op}: pads {list(plan.pads)} must be smaller than kernel_shape {list(kernel)} "
                f"(spatial axis {axis})"
            )
        inside = positions_counted(plan.out[axis], kernel[axis], strides[axis], dilations[axis], b, 0, size[axis])
        if (inside == 0).any():
            o = int(np.argmin(inside))
            raise ValueError(
                f"{op}: output position {o} on spatial axis {axis} has a window that covers only "
                f"padding (pads {list(plan.pads)}, kernel {list(kernel)}, strides {list(strides)}, "
                f"dilations {list(dilations)})"
            )
