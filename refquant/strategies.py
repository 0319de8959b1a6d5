"""The two strategy protocols — weight quantizers and activation quantizers — and what they exchange.

A **weight quantizer** turns a float weight tensor into a :class:`QuantizedWeight`: integer
values the int8 kernels consume, their (per-tensor or per-output-channel) qparams, and how the
weight is represented (a uniform grid, a codebook with indices, …) for saving and size
accounting.

An **activation quantizer** chooses the qparams of a layer's output. When it does so is its
``timing``, and the executor calls the method that timing names:

========== =================================================== ========== ======================
timing     qparams decided …                                   kernel     method
========== =================================================== ========== ======================
offline    once, from calibration data (observers)             fused      ``make_observer``
after      per input, from the layer's own int32 accumulators  unfused    ``qparams_after``
before     per input, from the layer's input, before it runs   fused      ``qparams_before``
========== =================================================== ========== ======================

Every activation quantizer also implements ``make_observer`` (calibration on float data) and
``qparams_for_float`` (qparams of a float tensor computed on the fly): the executor uses them for
the graph input and for operators that run as dequantize → float op → quantize (Add, pools,
Softmax), where there are no accumulators and no patch statistics.

A **QAT quantizer** (:class:`QATQuantizer`) is the training-time form: it fake-quantizes a
weight or an activation inside quantization-aware training (:mod:`refquant.train.fakequant`),
choosing qparams from the tensor and a small state it carries from step to step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .numerics import IntFormat, QParams, dequantize

__all__ = [
    "TIMINGS",
    "GRANULARITIES",
    "REQUIRED_METHODS",
    "TIMING_METHODS",
    "QAT_METHODS",
    "LayerSpec",
    "QuantizedWeight",
    "LayerContext",
    "Observer",
    "WeightQuantizer",
    "ActivationQuantizer",
    "AfterLayerQuantizer",
    "BeforeLayerQuantizer",
    "QATQuantizer",
    "weight_groups",
    "MAX_SATURATED_FRACTION",
    "CollapsedRangeError",
    "check_saturation",
    "check_options",
]

TIMINGS = ("offline", "after", "before")
GRANULARITIES = ("per-tensor", "per-channel")

#: the methods every strategy of a kind implements (checked when it registers)
REQUIRED_METHODS = {"weights": ("quantize_weight",), "activations": ("make_observer", "qparams_for_float")}
#: what an activation strategy's timing adds: the methods the executor calls for it
TIMING_METHODS = {"offline": (), "after": ("qparams_after",), "before": ("prepare", "qparams_before")}
#: the methods every QAT quantizer implements
QAT_METHODS = ("init_state", "fake_quant")


#: The default share of a tensor's non-zero calibration values that a calibrated range may
#: saturate (values at or beyond its ends) before :func:`check_saturation` refuses it.
MAX_SATURATED_FRACTION = 0.9


class CollapsedRangeError(ValueError):
    """Calibrated qparams that would saturate (almost) the whole tensor: its values would collapse
    onto the grid's end points and carry no information."""


def check_saturation(layer: str, strategy: str, saturated, nonzero, chosen, seen,
                     limit: float = MAX_SATURATED_FRACTION) -> None:
    """Refuse a calibrated range that saturates more than ``limit`` of the values it was chosen on.

    ``saturated`` and ``nonzero`` are per-channel counts (or scalars): the calibration values at
    or beyond the chosen range's ends, and all non-zero values (exact zeros are on every grid,
    they never saturate). ``chosen`` and ``seen`` are ``(lo, hi)`` pairs, the range the
    strategy chose and the one the data spans, for the message. A channel with
    ``saturated / nonzero > limit`` raises :class:`CollapsedRangeError` naming the layer, the
    strategy, both ranges and the share. The default limit 0.9 sits far above what a sound
    clipping rule does — on the shipped models, at 2 to 8 bits, the built-in rules saturate
    at most 60 % (static-mse at 2 bits, the MSE optimum) — and below what a degenerate one
    does (static-entropy before its fix: 97-99 % at 4 bits, chance accuracy).
    """
    saturated = np.atleast_1d(np.asarray(saturated, np.float64))
    nonzero = np.atleast_1d(np.asarray(nonzero, np.float64))
    share = np.where(nonzero > 0, saturated / np.maximum(nonzero, 1), 0.0)
    worst = int(np.argmax(share))
    if share[worst] > limit:
        lo, hi = (np.atleast_1d(np.asarray(v, np.float64))[worst if np.size(v) > 1 else 0] for v in chosen)
        slo, shi = (np.atleast_1d(np.asarray(v, np.float64))[worst if np.size(v) > 1 else 0] for v in seen)
        where = f"layer {layer!r}" + (f" channel {worst}" if share.size > 1 else "")
        raise CollapsedRangeError(
            f"{where}: activation strategy {strategy!r} chose the range [{lo:.6g}, {hi:.6g}] for data "
            f"spanning [{slo:.6g}, {shi:.6g}]; it saturates {100 * share[worst]:.1f}% of the "
            f"{int(nonzero[worst])} non-zero calibration values (limit {100 * limit:g}%), which "
            f"collapses the tensor onto the grid's ends. Use another strategy or more bits, or raise "
            f"the limit with the option max_saturation=FRACTION")


@dataclass(frozen=True)
class LayerSpec:
    """What the plan asks of one strategy for one tensor of one layer."""

    layer: str
    op: str
    bits: int = 8
    signed: bool = True
    granularity: str = "per-tensor"
    symmetric: bool = True
    options: tuple = ()

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"layer {self.layer!r}: granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"layer {self.layer!r}: bits must be in 2..8 for the int8 kernels, got {self.bits}")

    @property
    def fmt(self) -> IntFormat:
        """The integer grid: narrow range for signed symmetric tensors (``[-127, 127]`` at 8 bits)."""
        return IntFormat(self.bits, self.signed, narrow=self.signed and self.symmetric)

    @property
    def per_channel(self) -> bool:
        return self.granularity == "per-channel"

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


def weight_groups(w, *, per_channel: bool, layer: str) -> np.ndarray:
    """The weight as float32 rows ``[G, n]``: one per output channel (axis 0), or one for the tensor.

    The shared input check of weight quantizers: a non-float, empty or non-finite weight raises
    an error naming ``layer`` (NaN/Inf counted), never a NumPy warning or a silent NaN.
    """
    where = f"layer {layer!r} weight"
    arr = np.asarray(w)
    if arr.dtype.kind != "f":
        raise TypeError(f"{where}: expected a float tensor, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{where}: the weight is empty (shape {arr.shape}); nothing to quantize")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} non-finite value(s) (NaN or Inf); cannot choose a range")
    if per_channel:
        if arr.ndim < 1:
            raise ValueError(f"{where}: per-channel quantization needs output channels on axis 0, got a scalar")
        return arr.reshape(arr.shape[0], -1)
    return arr.reshape(1, -1)


def check_options(strategy, options, where: str) -> None:
    """Raise ``ValueError`` if ``options`` (``(key, value)`` pairs from a plan) name an option
    the strategy does not declare.

    A strategy declares the ``KEY=VALUE`` options it reads as ``options``: a tuple of names
    (``()`` for none). A misspelled option is an error naming it and listing the valid ones,
    not silently ignored. A strategy without the attribute is not checked (it reads whatever
    it reads; declare ``options`` to have plans checked).
    """
    declared = getattr(strategy, "options", None)
    if declared is None or not options:
        return
    unknown = [k for k, _ in options if k not in declared]
    if unknown:
        name = getattr(strategy, "name", "?")
        valid = ", ".join(declared) if declared else "none"
        raise ValueError(f"{where}: unknown option(s) {', '.join(repr(k) for k in unknown)} for strategy "
                         f"{name!r}; valid options: {valid}")


@dataclass(eq=False)
class QuantizedWeight:
    """A quantized weight as the int8 kernels consume it.

    ``values`` are integers in ``qparams.fmt``'s storage dtype with the float weight's layout
    (OIHW for Conv, ``[N, K]`` for Gemm/MatMul — output channels first); ``qparams`` is per
    tensor or per output channel (``axis=0``). ``representation`` names how the weight is
    stored (``"uniform"``; a codebook strategy says ``"codebook"`` and keeps its indices and
    levels in ``arrays``). ``bits_per_weight`` counts everything stored, codebooks included.

    ``execution`` says how the executor runs the layer: ``"integer"`` (the int8 kernels on
    ``values``) or ``"float"`` — fake-quantization for grids the integer kernels cannot hold
    (float formats): the layer computes in float32 with the weight ``float_values`` (already
    on the grid) and the dequantized input, and its output is quantized as usual.
    """

    values: np.ndarray
    qparams: QParams
    representation: str = "uniform"
    arrays: dict = field(default_factory=dict)
    bits_per_weight: float = 8.0
    execution: str = "integer"
    float_values: np.ndarray | None = None

    def dequantize(self) -> np.ndarray:
        """The weight the layer computes with: ``float_values`` for float execution, else
        ``(values - z) · s`` per output channel, float32."""
        if self.execution == "float":
            return np.asarray(self.float_values, np.float32)
        return dequantize(self.values, self.qparams)

    def to_state(self) -> tuple[dict, dict]:
        """``(meta, arrays)``: JSON-ready metadata and the arrays to store (npz) — for saving."""
        meta = {"qparams": self.qparams.to_dict(), "representation": self.representation,
                "bits_per_weight": float(self.bits_per_weight), "arrays": sorted(self.arrays),
                "execution": self.execution}
        arrays = {"values": self.values, **{f"arrays.{k}": np.asarray(v) for k, v in self.arrays.items()}}
        if self.float_values is not None:
            arrays["float_values"] = np.asarray(self.float_values, np.float32)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, name: str = "weight") -> "QuantizedWeight":
        """Inverse of :meth:`to_state`."""
        return cls(np.asarray(arrays["values"]), QParams.from_dict(meta["qparams"], name),
                   meta["representation"], {k: np.asarray(arrays[f"arrays.{k}"]) for k in meta["arrays"]},
                   meta["bits_per_weight"], meta.get("execution", "integer"),
                   np.asarray(arrays["float_values"]) if "float_values" in arrays else None)


@dataclass
class LayerContext:
    """What a before-layer activation quantizer may read about the layer it precedes."""

    node: Any
    weight: QuantizedWeight
    bias: np.ndarray | None
    attributes: dict
    fused_activation: str | None
    state: dict = field(default_factory=dict)
    # run-time memos of a strategy (e.g. a compiled estimator's per-shape plan): never saved,
    # rebuilt on demand, so they must hold only what the saved fields determine
    cache: dict = field(default_factory=dict, repr=False, compare=False)


@runtime_checkable
class Observer(Protocol):
    """Collects statistics of one tensor during calibration, then proposes its qparams."""

    def observe(self, y: np.ndarray, *, context: LayerContext | None = None,
                x: np.ndarray | None = None) -> None:
        """See one calibration batch of the float tensor ``y`` (and the layer's float input ``x``)."""

    def qparams(self) -> QParams:
        """The qparams chosen from everything observed."""


@runtime_checkable
class WeightQuantizer(Protocol):
    name: str
    kind: str  # "weights"
    doc: str

    def quantize_weight(self, w: np.ndarray, spec: LayerSpec) -> QuantizedWeight:
        """Quantize the float weight ``w`` (output channels on axis 0)."""


@runtime_checkable
class ActivationQuantizer(Protocol):
    name: str
    kind: str  # "activations"
    timing: str  # one of TIMINGS
    doc: str

    def make_observer(self, spec: LayerSpec) -> Observer:
        """A fresh observer for calibration of one tensor."""

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        """qparams for a float tensor at run time (graph input, dequantize→op→quantize nodes).

        ``observed`` is what calibration chose for this tensor (None if not calibrated). An
        offline strategy returns it; a per-input strategy may compute from ``y``.
        """


class AfterLayerQuantizer(ActivationQuantizer, Protocol):
    """timing ``"after"``: qparams from the layer's own int32 accumulators."""

    def qparams_after(self, acc: np.ndarray, acc_scale: np.ndarray, spec: LayerSpec, *,
                      channel_axis: int = 1, fused_activation: str | None = None) -> QParams:
        """qparams of the output whose real value is ``acc · acc_scale[c]``.

        ``acc`` is int32 with output channels on ``channel_axis``; ``acc_scale`` is the float32
        ``s_x · s_w[c]`` (length 1 or C). With ``fused_activation`` ("relu"/"relu6") the range
        is that of the activation's output.
        """


class BeforeLayerQuantizer(ActivationQuantizer, Protocol):
    """timing ``"before"``: qparams from the layer's input, before the layer runs."""

    def prepare(self, context: LayerContext, spec: LayerSpec) -> None:
        """Offline, once per layer: cache what the estimate needs (e.g. weight statistics)
        in ``context.state`` (plain arrays and numbers: it is saved with the model)."""

    def qparams_before(self, x_q: np.ndarray, x_qparams: QParams, context: LayerContext,
                       spec: LayerSpec) -> QParams:
        """qparams of the layer's output, estimated from its quantized input ``x_q``."""


@runtime_checkable
class QATQuantizer(Protocol):
    """A quantizer inside quantization-aware training: quantize-dequantize, straight-through gradient.

    One object serves every layer; the per-layer state lives in the training loop, which
    passes it in and keeps what comes back. Examples of the two shapes this allows:

    * stateless weights — min-max: qparams from the current weight's range at every step;
      an analytic rule such as ``scale = κ·σ(w)``, recomputed each step, is the same shape;
    * stateful activations — an exponential moving average (EMA) of each batch's min/max, or
      of a per-batch fixed point warm-started from the last one: the state holds the EMA
      (and the warm start); in evaluation the state's value is used as it is.
    """

    name: str
    kind: str  # "weights" or "activations"
    doc: str

    def init_state(self, x: np.ndarray, spec: LayerSpec) -> dict:
        """The state before the first step, from the first tensor this point sees: the layer's
        weight (output channels on axis 0) or the first batch of the activation (channels on
        axis 1). A dict of NumPy arrays or numbers (checkpointed in an ``.npz``); may be empty."""

    def fake_quant(self, x: np.ndarray, state: dict, spec: LayerSpec,
                   training: bool) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(y, mask, new_state)`` for the float32 tensor ``x``.

        ``y = dequantize(quantize(x, qp), qp)`` on ``spec``'s grid, with qparams ``qp`` chosen
        from ``x`` and ``state`` (:func:`refquant.train.fakequant.fake_quantize` computes ``y``
        and ``mask`` from ``qp``). ``mask`` (bool, ``x``'s shape) is True where saturation did
        not act: the straight-through estimator passes the gradient there, and only there.
        ``new_state`` replaces ``state`` after a training call (``training=True``); after an
        evaluation call it is ignored. ``state`` must not be modified in place.
        """
