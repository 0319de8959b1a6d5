"""Per-layer records of a quantized run: what ran, with which qparams, using how much memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..numerics import QParams

__all__ = ["LayerRecord", "peak_working_bytes"]


@dataclass
class LayerRecord:
    """One executed step.

    ``buffers`` maps each buffer the step allocated to its size in bytes: ``output`` (the
    integer output), ``accumulators`` (an int32 buffer the size of the output — unfused
    kernels only), ``scratch`` (the kernel's declared O(tile) scratch), ``float`` (float32
    tensors of a dequantize → op → quantize step), ``bias`` (the run-time int32 bias).
    ``working_bytes`` is their sum.
    """

    name: str
    op: str
    kernel: str  # "fused", "unfused", "integer", "float" (dequantize → op → quantize), "input"
    timing: str | None
    fused_activation: str | None
    input_qparams: QParams | None
    output_qparams: QParams | None
    weight_qparams: QParams | None
    buffers: dict = field(default_factory=dict)
    input_bytes: int = 0
    seconds: float = 0.0
    q_output: np.ndarray | None = None
    float_output: np.ndarray | None = None
    accumulators: np.ndarray | None = None
    #: with float islands, the float32 value that float operators read instead of the dequantized
    #: ``q_output`` (the operator's result before it was quantized); kept with ``keep=True``
    float_value: np.ndarray | None = None

    @property
    def working_bytes(self) -> int:
        return int(sum(self.buffers.values()))

    def summary(self) -> dict:
        """A JSON-ready row: name, op, kernel, qparams (short), bytes, time in ms."""
        def short(qp):
            if qp is None:
                return "-"
            if qp.scale.ndim == 0:
                return f"{qp.fmt} s={float(qp.scale):.4g} z={int(qp.zero_point)}"
            return f"{qp.fmt} per-channel({qp.scale.size})"
        return {
            "layer": self.name, "op": self.op, "kernel": self.kernel,
            "activation": self.fused_activation or "-", "timing": self.timing or "-",
            "input": short(self.input_qparams), "weights": short(self.weight_qparams),
            "output": short(self.output_qparams), "working_bytes": self.working_bytes,
            "ms": round(self.seconds * 1e3, 3),
        }


def peak_working_bytes(records: list[LayerRecord]) -> int:
    """max over steps of (bytes of the step's activation inputs + bytes it allocated)."""
    return max((r.input_bytes + r.working_bytes for r in records), default=0)
