"""Convolution geometry shared by every kernel: padding, auto_pad, output size.

ONNX conventions: activations NCHW, weights OIHW (``O = C_out``, ``I = C_in / group``),
``pads = [top, left, bottom, right]`` (ONNX's ``[x1_begin, x2_begin, x1_end, x2_end]``), and
the output size along a spatial axis::

    out = floor((in + pad_begin + pad_end - dilation·(k - 1) - 1) / stride) + 1
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConvGeometry", "conv_geometry", "resolve_auto_pad", "output_size"]


def output_size(size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


def resolve_auto_pad(auto_pad: str, in_hw, kernel_hw, strides, dilations) -> tuple[int, int, int, int]:
    """Explicit ``[top, left, bottom, right]`` pads for ONNX ``auto_pad``.

    ``SAME_UPPER``/``SAME_LOWER``: output size ``ceil(in / stride)``, total padding
    ``max(0, (out - 1)·stride + dilation·(k - 1) + 1 - in)``; the odd extra pixel goes at the
    end (UPPER) or the beginning (LOWER). ``VALID``: no padding.
    """
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got {auto_pad!r}")
    begins, ends = [], []
    for size, k, s, d in zip(in_hw, kernel_hw, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
    return (begins[0], begins[1], ends[0], ends[1])


@dataclass(frozen=True)
class ConvGeometry:
    """All sizes of one 2-D convolution, validated."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    group: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    oh: int
    ow: int

    @property
    def cin_per_group(self) -> int:
        return self.c_in // self.group

    @property
    def cout_per_group(self) -> int:
        return self.c_out // self.group

    @property
    def k(self) -> int:
        """Reduction length of one output: ``C_in/group · kh · kw``."""
        return self.cin_per_group * self.kh * self.kw


def conv_geometry(x_shape, w_shape, *, strides=None, pads=None, dilations=None, group=1,
                  auto_pad="NOTSET", name="conv") -> ConvGeometry:
    """Validate a 2-D convolution's shapes and attributes and compute its output size."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{name}: expected NCHW input and OIHW weights, got shapes "
                         f"{tuple(x_shape)} and {tuple(w_shape)}")
    n, c_in, h, w = (int(v) for v in x_shape)
    c_out, cpg, kh, kw = (int(v) for v in w_shape)
    group = int(group)
    strides = tuple(int(v) for v in (strides or (1, 1)))
    dilations = tuple(int(v) for v in (dilations or (1, 1)))
    if group < 1 or c_in % group or c_out % group:
        raise ValueError(f"{name}: group={group} must divide C_in={c_in} and C_out={c_out}")
    if cpg != c_in // group:
        raise ValueError(f"{name}: weight has {cpg} input channels per group, input has "
                         f"{c_in} channels in {group} group(s) (expected {c_in // group})")
    if len(strides) != 2 or min(strides) < 1 or len(dilations) != 2 or min(dilations) < 1:
        raise ValueError(f"{name}: strides and dilations must be two integers >= 1, got "
                         f"{strides} and {dilations}")
    if auto_pad in (None, "", "NOTSET"):
        pads = tuple(int(v) for v in (pads if pads is not None else (0, 0, 0, 0)))
        if len(pads) != 4 or min(pads) < 0:
            raise ValueError(f"{name}: pads must be four integers >= 0 [top, left, bottom, right], got {pads}")
    else:
        if pads is not None and any(pads):
            raise ValueError(f"{name}: explicit pads cannot be combined with auto_pad={auto_pad}")
        pads = resolve_auto_pad(auto_pad, (h, w), (kh, kw), strides, dilations)
    oh = output_size(h, kh, strides[0], dilations[0], pads[0], pads[2])
    ow = output_size(w, kw, strides[1], dilations[1], pads[1], pads[3])
    if oh < 1 or ow < 1:
        raise ValueError(f"{name}: kernel {kh}x{kw} (dilations {dilations}) does not fit the "
                         f"padded input {h}x{w} with pads {pads}")
    return ConvGeometry(n, c_in, h, w, c_out, kh, kw, group, strides, pads, dilations, oh, ow)
