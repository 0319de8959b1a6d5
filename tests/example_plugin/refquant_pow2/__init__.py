"""A third-party refquant plugin: symmetric weights whose scales are powers of two.

Fixed-point hardware often restricts scales to ``2**-n`` so requantization is a shift. The
scale is the smallest power of two that keeps ``max|w|`` on the grid::

    scale = 2 ** ceil(log2(max|w| / qmax))        (scale = 1 for an all-zero tensor)
"""

import numpy as np

from refquant.hookspecs import hookimpl
from refquant.numerics import QParams, quantize
from refquant.strategies import QuantizedWeight


class Pow2Weights:
    name = "pow2"
    kind = "weights"
    doc = "symmetric weights with power-of-two scales (shift-only requantization)"

    def quantize_weight(self, w, spec):
        w = np.asarray(w, dtype=np.float32)
        where = f"layer {spec.layer!r} weight"
        if w.size == 0 or not np.all(np.isfinite(w)):
            raise ValueError(f"{where}: expected a non-empty finite tensor")
        rows = w.reshape(w.shape[0], -1) if spec.per_channel else w.reshape(1, -1)
        amax = np.abs(rows).max(axis=1).astype(np.float64)
        exps = np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / spec.fmt.qmax))
        scale = np.where(amax > 0, 2.0**exps, 1.0).astype(np.float32)
        zero = np.zeros(scale.shape, np.int32)
        if spec.per_channel:
            qp = QParams(scale, zero, spec.fmt, axis=0, name=f"{spec.layer}.weight")
        else:
            qp = QParams(scale[0], zero[0], spec.fmt, name=f"{spec.layer}.weight")
        return QuantizedWeight(quantize(w, qp), qp, bits_per_weight=float(spec.bits))


@hookimpl
def register_quantizers(register):
    register(Pow2Weights())
