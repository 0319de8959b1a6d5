"""The real range of a layer's output, read from its int32 accumulators.

A Conv/Gemm output element is ``acc · s_c`` with ``acc`` the exact int32 accumulator (bias
included) and ``s_c = s_x · s_w[c]`` the float32 accumulator scale of its output channel. Its
range, per output channel, is::

    lo_c = float32(min acc_c) · s_c        hi_c = float32(max acc_c) · s_c       (float32 product)

because ``s_c > 0`` and both roundings (int → float32, float32 product) are monotone, the
minimum of the float32 values ``float32(acc) · s_c`` over the channel is exactly the product
for the minimum accumulator: ``lo_c``/``hi_c`` are the extremes of the dequantized output, bit
for bit, without ever forming it. Per tensor the range is ``[min_c lo_c, max_c hi_c]`` (the
scales may differ per channel, so the extreme accumulator alone is not enough).

A fused activation maps the range through itself: Relu ``[max(lo, 0), max(hi, 0)]``, Relu6
``[clip(lo, 0, 6), clip(hi, 0, 6)]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FUSED_ACTIVATIONS", "accumulator_scale", "accumulator_range", "activation_range"]

FUSED_ACTIVATIONS = (None, "relu", "relu6")


def accumulator_scale(acc_scale, channels: int, layer: str) -> np.ndarray:
    """``acc_scale`` as float32 ``[channels]``: length 1 is broadcast; finite and > 0 required."""
    s = np.asarray(acc_scale)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"layer {layer!r}: accumulator scale must be real, got dtype {s.dtype}")
    s = s.astype(np.float32).reshape(-1)
    if s.size not in (1, channels):
        raise ValueError(f"layer {layer!r}: accumulator scale must have 1 or {channels} entries "
                         f"(one per output channel), got {s.size}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"layer {layer!r}: accumulator scale must be finite and > 0, got "
                         f"{s[~(np.isfinite(s) & (s > 0))][0]!r}")
    return np.broadcast_to(s, (channels,))


def accumulator_range(acc, acc_scale, layer: str, *, channel_axis: int = 1,
                      per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of the real output ``float32(acc) · acc_scale[c]``, float32.

    Per channel: arrays ``[C]``; per tensor: 0-d. ``acc`` must be a non-empty integer tensor.
    """
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise TypeError(f"layer {layer!r}: accumulators must be integers (int32), got dtype {acc.dtype}")
    if acc.size == 0:
        raise ValueError(f"layer {layer!r}: the accumulator tensor is empty (shape {acc.shape}); "
                         f"there is no range to quantize")
    if not -acc.ndim <= channel_axis < acc.ndim:
        raise ValueError(f"layer {layer!r}: channel axis {channel_axis} out of range for "
                         f"accumulators of shape {acc.shape}")
    channels = acc.shape[channel_axis]
    scale = accumulator_scale(acc_scale, channels, layer)
    others = tuple(a for a in range(acc.ndim) if a != channel_axis % acc.ndim)
    # reductions in place: no copy of the accumulator buffer is made
    lo = acc.min(axis=others).astype(np.float32) * scale  # float32 · float32 → float32
    hi = acc.max(axis=others).astype(np.float32) * scale
    if per_channel:
        return lo, hi
    return lo.min(), hi.max()


def activation_range(lo, hi, fused_activation: str | None, layer: str):
    """The range after the fused activation: ``None``, ``"relu"`` or ``"relu6"``."""
    if fused_activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"layer {layer!r}: unknown fused activation {fused_activation!r}; "
                         f"expected one of {FUSED_ACTIVATIONS}")
    if fused_activation is None:
        return lo, hi
    top = np.float32(np.inf if fused_activation == "relu" else 6)
    return (np.clip(lo, np.float32(0), top).astype(np.float32),
            np.clip(hi, np.float32(0), top).astype(np.float32))
