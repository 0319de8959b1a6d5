"""The prepared program: each quantized layer's run-independent work done once, not per ``run``.

A quantized Conv/Gemm/MatMul step needs, besides its input, three things that ``run`` used to
recompute every call (``QuantizedModel._run_layer`` with ``prepared=False`` still does, and is
the readable specification):

* the int32 bias ``b_q[c] = clamp_int32(round_half_even(b[c] / float32(s_x · s_w[c])))`` — a
  function of the input qparams ``(s_x, z_x)``;
* the requantizer (float32 multipliers, Q31 multipliers and shifts, clamp bounds; see
  :func:`refquant.numerics.make_requantizer`) — a function of the input and output qparams;
* the kernel's form of the weights — a backend may offer ``prepare_layer(kind, w, w_zero_point,
  *, x_dtype, name, **conv_attrs)`` returning an object with ``bind(x_zero_point, bias_q)``,
  ``requant_args(rq)`` and ``run(x, binding, rq_args, out_dtype)`` (the Numba backend:
  :mod:`refquant.kernels.fast_prepared`, which packs weights and precomputes the zero-point
  constants). A backend without it (the NumPy reference, onnxruntime, a plugin's) is called
  the unprepared way, with the prepared bias and requantizer.

:class:`PreparedStep` memoises each of these on the *identity* of what it is computed from:
the input :class:`~refquant.numerics.QParams` object, the output one, the weight and the
float bias. ``QParams`` are immutable, and an offline (static) tensor carries the same object
on every run — the calibrated one, passed unchanged through Relu/MaxPool/Flatten — so for
static layers everything is computed once, when the program is built (:func:`prepare_program`
predicts those objects) or at the first run. When a strategy decides qparams per input
(timing ``before``: probabilistic; ``after``: dynamic) the new object misses the memo and only
what depends on it is recomputed: the requantizer (and, for a per-input *input* scale, the
bias and the constants bound to it). A memo miss therefore only costs time; it never gives
other numbers, because every memoised value is the pure function it replaces applied to the
same arguments.
"""

from __future__ import annotations

import numpy as np

from ..numerics import QParams, make_requantizer
from .integer_ops import INTEGER_OPS

__all__ = ["PreparedStep", "Program", "prepare_program"]



def quantize_bias(bias, x_scale, w_scale) -> np.ndarray | None:
    """``clamp_int32(round_half_even(b / float32(s_x · s_w)))`` with float32 arithmetic."""
    if bias is None:
        return None
    s = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    with np.errstate(over="ignore"):
        q = np.rint(bias / s).astype(np.float64)
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


class PreparedStep:
    """One quantized layer's memoised bias, requantizer and backend-prepared weights.

    Built for one backend (``kernels``, the backend module) and one requant mode. The
    unprepared path calls ``kernels.conv2d_requant(x, w, z_x, z_w, b_q, rq, **attrs)``; the
    methods here return exactly what those calls return.
    """

    def __init__(self, layer, kernels, requant: str):
        self.layer, self.kernels, self.requant = layer, kernels, requant
        step = layer.step
        self.name, self.activation = step.name, step.fused_activation
        self.conv = step.node.op_type == "Conv"
        self.attrs = ({k: v for k, v in step.node.attributes.items() if k != "kernel_shape"}
                      if self.conv else {})
        self._prepare = getattr(kernels, "prepare_layer", None)
        self._weight = layer.weight
        self._packed: dict = {}         # input dtype → backend PreparedLayer (or None)
        self._bias = (None, None, None)  # (x_qp, float bias, b_q)
        self._bound: dict = {}          # input dtype → (x_qp, float bias, binding)
        self._rq = (None, None, None, None)  # (x_qp, y_qp, requantizer, its kernel arguments)

    def stale(self) -> bool:
        """The layer's weight was replaced since this step was prepared."""
        return self.layer.weight is not self._weight

    # ---- run-independent values, memoised ---------------------------------------------------
    def bias(self, x_qp: QParams) -> np.ndarray | None:
        """The int32 bias for input qparams ``x_qp`` (:func:`quantize_bias`)."""
        key_qp, key_b, b_q = self._bias
        if key_qp is x_qp and key_b is self.layer.bias:
            return b_q
        b_q = quantize_bias(self.layer.bias, x_qp.scale, self._weight.qparams.scale)
        self._bias = (x_qp, self.layer.bias, b_q)
        return b_q

    def requantizer(self, x_qp: QParams, y_qp: QParams):
        """``make_requantizer(s_x, s_w, s_y, z_y, fmt, mode, activation)``, memoised."""
        kx, ky, rq, _ = self._rq
        if kx is x_qp and ky is y_qp:
            return rq
        w_qp = self._weight.qparams
        rq = make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                              mode=self.requant, activation=self.activation)
        self._rq = (x_qp, y_qp, rq, None)
        return rq

    def _rq_args(self, packed, x_qp, y_qp, rq):
        kx, ky, krq, args = self._rq
        if krq is rq and args is not None:
            return args
        args = (packed.requant_args(rq), rq.out_dtype)
        if kx is x_qp and ky is y_qp and krq is rq:
            self._rq = (kx, ky, krq, args)
        return args

    def _backend_layer(self, q_in: np.ndarray, x_qp: QParams, b_q):
        """The backend's prepared layer for this input dtype and its binding, or ``(None, None)``."""
        if self._prepare is None:
            return None, None
        dtype = q_in.dtype
        if dtype not in self._packed:
            w = self._weight
            self._packed[dtype] = self._prepare("conv2d" if self.conv else "matmul", w.values,
                                                w.qparams.zero_point, x_dtype=dtype, name=self.name,
                                                **self.attrs)
        packed = self._packed[dtype]
        if packed is None:
            return None, None
        kx, kb, binding = self._bound.get(dtype, (None, None, None))
        if kx is not x_qp or kb is not b_q:
            binding = packed.bind(int(x_qp.zero_point), b_q)
            self._bound[dtype] = (x_qp, b_q, binding)
        return packed, binding

    def scratch_bytes(self, q_in: np.ndarray) -> int | None:
        """``kernels.requant_scratch_bytes`` for this input (``None`` if the backend declares
        none); a prepared backend layer memoises it with the input shape's plan."""
        packed = self._packed.get(q_in.dtype)
        if packed is not None:
            return packed.scratch_bytes(q_in.shape)
        scratch = getattr(self.kernels, "requant_scratch_bytes", None)
        if scratch is None:
            return None
        w = self._weight.values
        return int(scratch("conv2d" if self.conv else "matmul", q_in.shape, w.shape,
                           a_dtype=q_in.dtype, w_dtype=w.dtype, **self.attrs))

    # ---- the kernel calls ---------------------------------------------------------------------
    def accumulators(self, q_in: np.ndarray, x_qp: QParams, b_q) -> tuple[np.ndarray, int | None]:
        """``kernels.*_int32(q_in, w, z_x, z_w, b_q)`` — the int32 accumulators — and the
        call's scratch bytes (:meth:`scratch_bytes`)."""
        packed, binding = self._backend_layer(q_in, x_qp, b_q)
        if packed is not None:
            return packed.call(q_in, binding, packed.requant_args(None), np.int32)
        w = self._weight
        args = (q_in, w.values, int(x_qp.zero_point), w.qparams.zero_point, b_q)
        if self.conv:
            acc = self.kernels.conv2d_int32(*args, name=self.name, **self.attrs)
        else:
            acc = self.kernels.matmul_int32(*args, name=self.name)
        return acc, self.scratch_bytes(q_in)

    def requantized(self, q_in: np.ndarray, x_qp: QParams, b_q, y_qp: QParams, rq) -> tuple[np.ndarray, int | None]:
        """``kernels.*_requant(q_in, w, z_x, z_w, b_q, rq)`` — the fused kernel's output — and
        the call's scratch bytes (:meth:`scratch_bytes`)."""
        packed, binding = self._backend_layer(q_in, x_qp, b_q)
        if packed is not None:
            try:
                rq_args, out_dtype = self._rq_args(packed, x_qp, y_qp, rq)
            except ValueError:
                rq_args = None  # a requantizer of the wrong width: the unprepared call raises
            if rq_args is not None:
                return packed.call(q_in, binding, rq_args, out_dtype)
        w = self._weight
        args = (q_in, w.values, int(x_qp.zero_point), w.qparams.zero_point, b_q, rq)
        if self.conv:
            y = self.kernels.conv2d_requant(*args, name=self.name, **self.attrs)
        else:
            y = self.kernels.matmul_requant(*args, name=self.name)
        return y, self.scratch_bytes(q_in)


class Program:
    """A quantized model's prepared steps for one backend: ``steps[layer name]``."""

    def __init__(self, backend: str, steps: dict):
        self.backend, self.steps = backend, steps

    def step(self, layer) -> PreparedStep:
        prepared = self.steps[layer.name]
        if prepared.layer is not layer or prepared.stale():
            prepared = PreparedStep(layer, prepared.kernels, prepared.requant)
            self.steps[layer.name] = prepared
        return prepared


def static_qparams(model, offline_only: bool = True) -> dict:
    """The qparams object each tensor will carry on every run when it is decided offline.

    ``offline_only=False`` predicts every tensor from its calibrated qparams, whatever its
    strategy's timing (for a per-input strategy: the calibrated estimate of its scale; the int32
    bias rule, :mod:`refquant.executor.biasrule`, sizes weight scales with it).

    Graph inputs and outputs of offline strategies carry their calibrated object; the
    integer-operator table's entries that keep their input's qparams (``INTEGER_OPS``: Relu,
    Clip, MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze) pass their input's on. Only a prediction: the prepared steps
    check the object they are given, so a wrong or missing entry costs time, never bits.
    """
    known: dict = {}
    for t in model.graph.inputs:
        strategy, _ = model.tensor_specs[t.name]
        if not offline_only or getattr(strategy, "timing", None) == "offline":
            known[t.name] = model.tensor_qparams.get(t.name)
    for step in model.steps:
        node = step.node
        if step.quantizable:
            layer = model.layers[step.name]
            if not offline_only or layer.act_strategy.timing == "offline":
                known[step.output] = layer.observed
        elif node.op_type in INTEGER_OPS:
            known[step.output] = known.get(node.inputs[0])
        else:
            strategy, _ = model.tensor_specs[step.output]
            if not offline_only or getattr(strategy, "timing", None) == "offline":
                known[step.output] = model.tensor_qparams.get(step.output)
    return {k: v for k, v in known.items() if isinstance(v, QParams)}


def prepare_program(model, backend: str, kernels) -> Program:
    """Prepare every quantized layer of ``model`` for ``kernels`` (the module of ``backend``).

    For each layer whose input qparams are known offline (:func:`static_qparams`): the int32
    bias, the backend's packed weights and their constants, and — when the layer's own
    activation strategy is offline too — the requantizer. The rest is prepared at the first
    run that needs it.
    """
    known = static_qparams(model)
    steps = {}
    for name, layer in model.layers.items():
        prepared = PreparedStep(layer, kernels, model.requant)
        steps[name] = prepared
        x_qp = known.get(layer.step.node.inputs[0])
        if x_qp is None or not x_qp.per_tensor or layer.weight.execution != "integer":
            continue
        b_q = prepared.bias(x_qp)
        dtype = x_qp.fmt.storage_dtype
        prepared._backend_layer(np.zeros(0, dtype), x_qp, b_q)
        if layer.act_strategy.timing == "offline" and layer.observed is not None:
            rq = prepared.requantizer(x_qp, layer.observed)
            packed = prepared._packed.get(np.dtype(dtype))
            if packed is not None:
                prepared._rq_args(packed, x_qp, layer.observed, rq)
    return Program(backend, steps)
