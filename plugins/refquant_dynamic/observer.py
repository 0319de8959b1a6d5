"""The min-max observer behind ``dynamic.make_observer``.

Dynamic quantization needs no calibration: qparams come from each input's own accumulators.
The observer exists for the places where the executor asks for calibrated qparams anyway —
a tensor it quantizes once for the whole run, or a fallback it records next to the dynamic
ones for comparison. It keeps the running ``[min, max]`` (per tensor, or per channel on axis 1)
and maps it with the same ``qparams_from_range`` rule as the per-input path, so a calibration
set of one batch gives exactly the qparams dynamic quantization computes for that batch.
"""

from __future__ import annotations

import numpy as np

from refquant.numerics import QParams, qparams_from_range, tensor_range
from refquant.strategies import LayerSpec

__all__ = ["float_range", "RangeObserver"]


def float_range(y, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(min, max)`` of the float tensor ``y`` as float32 (per channel on axis 1 if asked).

    NaN/Inf, an empty tensor, or a per-channel tensor of rank < 2 raise ``ValueError`` naming
    the layer; float64 is rounded to float32 first.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "fiu":
        raise TypeError(f"layer {spec.layer!r}: expected a real-valued tensor, got dtype {y.dtype}")
    if y.size == 0:
        raise ValueError(f"layer {spec.layer!r}: the tensor is empty (shape {y.shape}); "
                         f"there is no range to quantize")
    if spec.per_channel and y.ndim < 2:
        raise ValueError(f"layer {spec.layer!r}: per-channel activations need channels on axis 1, "
                         f"got shape {y.shape}")
    return tensor_range(y.astype(np.float32), axis=1 if spec.per_channel else None,
                        name=f"layer {spec.layer!r}")


class RangeObserver:
    """Running ``[min, max]`` over calibration batches; ``qparams()`` as the per-input rule."""

    def __init__(self, spec: LayerSpec):
        self.spec = spec
        self.lo = None
        self.hi = None

    def observe(self, y, *, context=None, x=None) -> None:
        if np.asarray(y).size == 0:
            return  # an empty batch observes nothing
        lo, hi = float_range(y, self.spec)
        if self.lo is not None and np.shape(lo) != np.shape(self.lo):
            raise ValueError(f"layer {self.spec.layer!r}: batch has {np.size(lo)} channels, "
                             f"earlier batches had {np.size(self.lo)}")
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def qparams(self) -> QParams:
        if self.lo is None:
            raise ValueError(f"layer {self.spec.layer!r}: strategy 'dynamic' observer has seen no "
                             f"values; run calibration batches through observe() before qparams()")
        return qparams_from_range(self.lo, self.hi, self.spec.fmt, symmetric=self.spec.symmetric,
                                  axis=1 if self.spec.per_channel else None, name=self.spec.layer)
