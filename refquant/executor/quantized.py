"""Quantized execution: build a :class:`QuantizedModel` from a float graph and a plan, then run it.

How each step runs (``spec/architecture.md`` tells the whole story):

* **Conv / Gemm / MatMul** go through the integer kernels. The activation strategy's timing
  picks the kernel: ``offline`` and ``before`` use the fused kernel (int32 accumulators never
  exist as a buffer); ``after`` runs the unfused kernel, hands the int32 accumulators to the
  strategy, then requantizes them. A Relu / Clip(0, 6) that follows is fused into the clamp.
* **Every other step** runs by its entry in the integer-operator table
  (:mod:`refquant.executor.integer_ops`, ``spec/integer-ops.md``): Relu, Clip, MaxPool,
  Flatten and Reshape on the integers with their input's qparams (exact: each commutes with a
  monotone quantizer); AveragePool and GlobalAveragePool as the exact mean of ``q - z`` times
  the scale; everything else (Add, Softmax, an unfolded BatchNormalization) as dequantize →
  float32 op → quantize. A result that is not on the input's grid is quantized with the
  output qparams the activation strategy gives for a float tensor.

The bias is kept in float32 and quantized with the input scale actually used:
``b_q[c] = clamp_int32(round_half_even(b[c] / float32(s_x · s_w[c])))`` (float32 division) —
for offline qparams this is the same number every run; for per-input qparams it must be.

``run`` executes the model's prepared program (:mod:`refquant.executor.program`): the int32
bias, the requantizer and the backend's packed weights of each layer are computed once for
the qparams fixed offline and reused; ``run(..., prepared=False)`` computes them on every
call, as written in ``_run_layer`` — the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Graph, validate_inputs
from ..numerics import QParams, dequantize, make_requantizer, quantize
from ..numerics import requantize as reference_requantize
from ..numerics.requant import check_mode
from ..ops import FLOAT_OPS
from ..plan import Plan, parse_plan
from ..plugins import call_hook
from ..registry import get_backend, get_quantizer
from ..strategies import LayerContext, LayerSpec, QuantizedWeight, check_options
from .contract import call, check_qparams, check_weight
from .calibration import CalibrationTrace, calibration_batches
from .float_exec import _dead_after, run_float
from .integer_ops import QTensor, operand_kinds, rule_for
from .integer_ops import per_tensor as _per_tensor
from .biasrule import BIAS_RULES, widen_for_bias
from .program import Program, prepare_program, quantize_bias, static_qparams
from .per_row import is_per_row, per_row_to_float
from .records import LayerRecord
from .traverse import Step, lower, walk

__all__ = ["QTensor", "QuantizedLayer", "QuantizedModel", "quantize_model", "RunResult"]


@dataclass
class QuantizedLayer:
    """A Conv/Gemm/MatMul prepared for integer execution."""

    step: Step
    weight: QuantizedWeight
    bias: np.ndarray | None
    weight_spec: LayerSpec
    act_spec: LayerSpec
    weight_strategy: object
    act_strategy: object
    context: LayerContext
    observed: QParams | None = None
    widening: object = None  # the int32 bias rule's Widening of this layer (biasrule), or None

    @property
    def name(self) -> str:
        return self.step.name


@dataclass
class RunResult:
    outputs: dict
    records: list


def weight_matrix(graph: Graph, node) -> np.ndarray:
    """The layer's float weight with output channels on axis 0 (OIHW, or ``[N, K]``)."""
    w = np.asarray(graph.initializers[node.inputs[1]], np.float32)
    if node.op_type == "Conv":
        return w
    if node.op_type == "MatMul":
        if w.ndim != 2:
            raise ValueError(f"{node}: quantized MatMul needs a 2-D weight, got shape {w.shape}")
        return np.ascontiguousarray(w.T)
    a = node.attributes
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise ValueError(f"{node}: quantized Gemm supports transA=0, alpha=1, beta=1 only")
    return np.ascontiguousarray(w if a.get("transB", 0) else w.T)


def layer_bias(graph: Graph, node) -> np.ndarray | None:
    idx = 2
    if len(node.inputs) <= idx or not node.inputs[idx]:
        return None
    if node.inputs[idx] not in graph.initializers:
        raise ValueError(f"{node}: the bias must be an initializer to be quantized")
    b = np.asarray(graph.initializers[node.inputs[idx]], np.float32).reshape(-1)
    return b




class QuantizedModel:
    """A float graph, its plan, quantized weights and calibrated qparams; runs on any backend."""

    def __init__(self, graph: Graph, plan: Plan, steps: list[Step], layers: dict,
                 tensor_specs: dict, tensor_qparams: dict, requant: str, float_tensors=frozenset()):
        self.graph, self.plan, self.steps = graph, plan, steps
        #: tensors kept in float32 between float operators (:func:`float_island_tensors`)
        self.float_tensors: frozenset = frozenset(float_tensors)
        #: with float islands on, a tensor computed in float32 that an integer consumer reads is
        #: quantized for it, while float consumers keep reading the float32 value (as onnxruntime's
        #: dynamic quantization does): the residual stream is never rounded to the grid
        self.float_islands = bool(float_tensors)
        self.layers: dict[str, QuantizedLayer] = layers
        self.tensor_specs: dict[str, tuple] = tensor_specs  # tensor → (strategy, spec)
        self.tensor_qparams: dict[str, QParams] = tensor_qparams  # calibrated (may be empty)
        self.requant = requant
        self._programs: dict[str, Program] = {}

    # ---- preparing ---------------------------------------------------------------------------
    def prepare(self, backend: str = "reference") -> Program:
        """The prepared program for ``backend`` (built once, then reused by every ``run``).

        See :mod:`refquant.executor.program`: int32 biases, requantizers and the backend's
        packed weights, computed once for the layers whose qparams are fixed offline.
        """
        program = self._programs.get(backend)
        if program is None:
            program = prepare_program(self, backend, get_backend(backend))
            self._programs[backend] = program
        return program

    # ---- running ---------------------------------------------------------------------------
    def run(self, feeds, *, backend: str = "reference", keep: bool = False,
            prepared: bool = True) -> RunResult:
        """Run on ``feeds`` (dict, or one array for a single-input graph).

        Returns dequantized float32 outputs and one :class:`LayerRecord` per step (plus one
        per quantized graph input). ``keep=True`` stores integer and float outputs (and int32
        accumulators) in the records. ``prepared=False`` recomputes every layer's bias,
        requantizer and kernel constants on this call (the plain form, which the prepared
        program reproduces bit for bit).
        """
        if isinstance(feeds, np.ndarray):
            feeds = {self.graph.inputs[0].name: feeds}
        feeds = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype != np.float32
                     else v) for k, v in feeds.items()}  # float32 inputs are only read: not copied
        validate_inputs(self.graph, feeds)
        kernels = get_backend(backend)
        program = self.prepare(backend) if prepared else None
        records: list[LayerRecord] = []
        env: dict = dict(self.graph.initializers)
        for name, x in feeds.items():
            if x.dtype.kind != "f" or name in self.float_tensors:
                env[name] = x  # indices (token ids) and float-island inputs are never quantized
                continue
            strategy, spec = self.tensor_specs[name]
            qp = check_qparams(call(strategy, "qparams_for_float", name, x, spec, self.tensor_qparams.get(name)),
                               strategy, "qparams_for_float", name)
            q = _quantize(kernels, x, qp)
            env[name] = QTensor(q, qp)
            rec = LayerRecord(name, "QuantizeLinear", "input", getattr(strategy, "timing", None), None,
                              None, qp, None, {"output": q.nbytes}, x.nbytes)
            records.append(rec)
            call_hook("layer_executed", record=rec)

        shadows: dict = {}  # tensor → its float32 value, for tensors quantized out of a float island

        def run_step(step: Step, env: dict):
            rec = LayerRecord(step.name, step.node.op_type, "", None, step.fused_activation,
                              None, None, None)
            if step.quantizable:
                out = self._run_layer(step, env, kernels, rec, keep, program)
            else:
                out = self._run_table_op(step, env, rec, kernels, shadows)
            if not isinstance(out, QTensor):  # a float island's float32 tensor
                if keep:
                    rec.float_output = out
                records.append(rec)
                return out
            if keep:
                rec.q_output = out.q
                rec.float_output = dequantize(out.q, out.qp)
                rec.float_value = shadows.get(step.output)
            rec.output_qparams = out.qp
            records.append(rec)
            return out

        releases = self._releases()

        def on_step(step, out, seconds):
            records[-1].seconds = seconds
            call_hook("layer_executed", record=records[-1])
            for tensor in releases.get(id(step), ()):
                env.pop(tensor, None)  # its last reader has run: its memory goes back for the next outputs
                shadows.pop(tensor, None)

        walk(self.steps, env, run_step, on_step)
        outputs = {}
        for name in self.graph.outputs:
            v = env[name]
            outputs[name] = dequantize(v.q, v.qp) if isinstance(v, QTensor) else v
        return RunResult(outputs, records)

    def _releases(self) -> dict:
        """``{id(step): tensors}``: the float pass's rule (:func:`float_exec._dead_after`) — the
        tensors no later step reads and the graph does not return — dropped from the run's
        environment once the step has run, so that the allocator hands their memory, still in
        cache, to the next outputs (every intermediate kept to the end of the run made each
        output fresh memory: EfficientNet-Lite0, batch 1, 9.9 → 9.0–9.3 ms, bench/RESULTS.md).
        Memoised per step list."""
        cached = getattr(self, "_release_cache", None)
        if cached is None or cached[0] is not self.steps:
            dead = _dead_after(self.steps, self.graph.outputs)
            cached = self._release_cache = (self.steps, {id(s): d for s, d in zip(self.steps, dead) if d})
        return cached[1]

    def _input(self, step: Step, env: dict) -> QTensor:
        x = env[step.node.inputs[0]]
        if not isinstance(x, QTensor):
            raise ValueError(f"{step.node}: input {step.node.inputs[0]!r} is not a quantized tensor")
        return x

    def _run_layer(self, step: Step, env: dict, kernels, rec: LayerRecord, keep: bool,
                      program: Program | None = None) -> QTensor:
        """A Conv/Gemm/MatMul step on the integer kernels (module doc). A MatMul input of more than
        two dimensions ``(..., M, K)`` against the 2-D weight is, as ONNX broadcasts it, one
        product of its rows: viewed as ``(prod(...)·M, K)``, multiplied, the result viewed back.

        With a ``program`` the int32 bias, the requantizer and the kernel call come from the
        layer's :class:`~refquant.executor.program.PreparedStep` (memoised, bit-identical);
        without one each is computed here, on this call — the plain form.
        """
        layer = self.layers[step.name]
        prep = program.step(layer) if program is not None else None
        x_in = self._input(step, env)
        if (step.output in self.float_tensors and step.node.op_type == "MatMul" and layer.weight.execution == "integer"
                and is_per_row(x_in.qp, x_in.q.shape)):  # per-token activations (refquant.executor.per_row)
            return self._run_layer_per_row(step, layer, x_in, kernels, rec, keep)
        x = _per_tensor(x_in, step.node.inputs[0])
        strategy, spec = layer.act_strategy, layer.act_spec
        w = layer.weight
        w_scale = w.qparams.scale
        bias_q = prep.bias(x.qp) if prep is not None else quantize_bias(layer.bias, x.qp.scale, w_scale)
        rec.input_qparams, rec.weight_qparams, rec.timing = x.qp, w.qparams, strategy.timing
        rec.input_bytes = x.q.nbytes
        if bias_q is not None:
            rec.buffers["bias"] = bias_q.nbytes
        conv = step.node.op_type == "Conv"
        if prep is not None:
            attrs = prep.attrs
        else:
            attrs = {k: v for k, v in step.node.attributes.items() if k != "kernel_shape"} if conv else {}
        if w.execution == "float":
            return self._run_layer_in_float(step, layer, x, rec, attrs)
        # an N-D MatMul input: every leading (batch, token) position is one row of a 2-D product
        lead = x.q.shape[:-1] if step.node.op_type == "MatMul" and x.q.ndim > 2 else None
        q_in = x.q if conv else x.q.reshape(-1, x.q.shape[-1]) if lead is not None else x.q.reshape(x.q.shape[0], -1)
        if step.output in self.float_tensors:
            return self._run_layer_to_float(step, layer, x, q_in, lead, bias_q, kernels, rec, attrs, keep)
        if prep is None:
            args = (q_in, w.values, int(x.qp.zero_point), w.qparams.zero_point, bias_q)
        if strategy.timing == "after":
            if prep is not None:
                acc, scratch_bytes = prep.accumulators(q_in, x.qp, bias_q)
            else:
                acc = (kernels.conv2d_int32(*args, name=step.name, **attrs) if conv
                       else kernels.matmul_int32(*args, name=step.name))
            acc_scale = (np.float32(x.qp.scale) * np.atleast_1d(w_scale)).astype(np.float32)
            qp = check_qparams(call(strategy, "qparams_after", step.name, acc, acc_scale, spec, channel_axis=1,
                                    fused_activation=step.fused_activation),
                               strategy, "qparams_after", step.name, channels=acc.shape[1])
            rq = prep.requantizer(x.qp, qp) if prep is not None else self._requantizer(x.qp, w.qparams, qp, step)
            requantize = getattr(kernels, "requantize", None)
            if requantize is None:
                requantize = reference_requantize
            y = requantize(acc, rq, channel_axis=1)
            rec.kernel = "unfused"
            rec.buffers["accumulators"] = acc.nbytes
            if keep:
                rec.accumulators = acc
        else:
            if strategy.timing == "before":
                qp = check_qparams(call(strategy, "qparams_before", step.name, x.q if conv else q_in, x.qp,
                                        layer.context, spec),
                                   strategy, "qparams_before", step.name, channels=w.values.shape[0])
            else:
                qp = layer.observed
                if qp is None:
                    raise ValueError(f"layer {step.name!r}: activation strategy {strategy.name!r} "
                                     f"has no calibrated qparams (calibrate with data first)")
            if prep is not None:
                rq = prep.requantizer(x.qp, qp)
                y, scratch_bytes = prep.requantized(q_in, x.qp, bias_q, qp, rq)
            else:
                rq = self._requantizer(x.qp, w.qparams, qp, step)
                y = (kernels.conv2d_requant(*args, rq, name=step.name, **attrs) if conv
                     else kernels.matmul_requant(*args, rq, name=step.name))
            rec.kernel = "fused"
        if prep is not None:
            if scratch_bytes is not None:
                rec.buffers["scratch"] = scratch_bytes
        else:
            scratch = getattr(kernels, "requant_scratch_bytes", None)
            if scratch is not None:
                rec.buffers["scratch"] = int(scratch("conv2d" if conv else "matmul", q_in.shape, w.values.shape,
                                                     a_dtype=q_in.dtype, w_dtype=w.values.dtype, **attrs))
        rec.buffers["output"] = y.nbytes
        if lead is not None:
            y = y.reshape(lead + y.shape[-1:])
            if keep and rec.accumulators is not None:
                rec.accumulators = rec.accumulators.reshape(lead + rec.accumulators.shape[-1:])
        return QTensor(y, qp)

    def _run_layer_to_float(self, step, layer, x, q_in, lead, bias_q, kernels, rec, attrs, keep) -> np.ndarray:
        """A layer whose output only float operators read (a float island follows):
        ``y = float32(acc) · float32(s_x · s_w[c])`` from the exact int32 accumulators (unfused
        kernel, int32 bias included) — onnxruntime's ``MatMulInteger`` → ``Cast`` → ``Mul``. No
        output qparams: the activation strategy is not asked."""
        w = layer.weight
        args = (q_in, w.values, int(x.qp.zero_point), w.qparams.zero_point, bias_q)
        conv = step.node.op_type == "Conv"
        acc = kernels.conv2d_int32(*args, name=step.name, **attrs) if conv else kernels.matmul_int32(*args, name=step.name)
        scale = (np.float32(x.qp.scale) * np.atleast_1d(np.asarray(w.qparams.scale, np.float32))).astype(np.float32)
        y = acc.astype(np.float32) * (scale.reshape(-1, 1, 1) if conv and scale.size > 1 else scale)
        rec.kernel = "unfused → float"
        rec.buffers.update({"accumulators": acc.nbytes, "float": y.nbytes})
        if keep:
            rec.accumulators = acc
        return y.reshape(lead + y.shape[-1:]) if lead is not None else y

    def _run_layer_per_row(self, step, layer, x, kernels, rec, keep) -> np.ndarray:
        """A MatMul reading a per-row (per-token) quantized input, its output a float island:
        :func:`~refquant.executor.per_row.per_row_to_float`."""
        w = layer.weight
        q = x.q.reshape(-1, x.q.shape[-1])
        y, acc = per_row_to_float(kernels, q, x.qp, w.values, w.qparams, layer.bias, step.name)
        rec.input_qparams, rec.weight_qparams, rec.timing = x.qp, w.qparams, layer.act_strategy.timing
        rec.input_bytes = x.q.nbytes
        rec.kernel = "unfused → float"
        rec.buffers.update({"accumulators": acc.nbytes, "float": y.nbytes})
        if keep:
            rec.accumulators = acc.reshape(x.q.shape[:-1] + acc.shape[-1:])
        return y.reshape(x.q.shape[:-1] + y.shape[-1:])

    def _run_layer_in_float(self, step: Step, layer: QuantizedLayer, x: QTensor, rec: LayerRecord,
                            attrs: dict) -> QTensor:
        """Fake-quantized layer: float32 op on the dequantized input and the on-grid weight.

        For weights the integer kernels cannot hold (float formats). The output is quantized
        with the activation strategy's qparams: calibrated (offline), estimated before the
        layer (before), or computed from the float output (after — there are no integer
        accumulators here).
        """
        strategy, spec = layer.act_strategy, layer.act_spec
        xf = dequantize(x.q, x.qp)
        wf = layer.weight.dequantize()
        lead = xf.shape[:-1] if step.node.op_type == "MatMul" and xf.ndim > 2 else None
        if step.node.op_type == "Conv":
            y = FLOAT_OPS["Conv"](xf, wf, layer.bias, **attrs)
        elif lead is not None:  # N-D MatMul: every leading (token) axis is a row
            y = FLOAT_OPS["Gemm"](xf.reshape(-1, xf.shape[-1]), wf, layer.bias, transB=1)
        else:
            y = FLOAT_OPS["Gemm"](xf.reshape(len(xf), -1), wf, layer.bias, transB=1)
        if step.fused_activation is not None:
            y = np.clip(y, 0, 6 if step.fused_activation == "relu6" else None).astype(np.float32)
        if step.output in self.float_tensors:
            rec.kernel = "float island"
            return y.reshape(lead + y.shape[-1:]) if lead is not None else y
        if strategy.timing == "before":
            x_in = x.q.reshape(-1, x.q.shape[-1]) if lead is not None else x.q
            qp = check_qparams(call(strategy, "qparams_before", step.name, x_in, x.qp, layer.context, spec),
                               strategy, "qparams_before", step.name, channels=y.shape[1])
        elif strategy.timing == "after":
            qp = check_qparams(call(strategy, "qparams_for_float", step.name, y, spec, layer.observed),
                               strategy, "qparams_for_float", step.name, channels=y.shape[1])
        else:
            qp = layer.observed
            if qp is None:
                raise ValueError(f"layer {step.name!r}: activation strategy {strategy.name!r} "
                                 f"has no calibrated qparams (calibrate with data first)")
        q = quantize(y, qp)
        rec.kernel = "float"
        rec.buffers.update({"float": xf.nbytes + y.nbytes, "output": q.nbytes})
        if lead is not None:
            q = q.reshape(lead + q.shape[-1:])
        return QTensor(q, qp)

    def _requantizer(self, x_qp: QParams, w_qp: QParams, y_qp: QParams, step: Step):
        return make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                                mode=self.requant, activation=step.fused_activation)

    def _run_table_op(self, step: Step, env: dict, rec: LayerRecord, kernels=None, shadows=None) -> QTensor:
        """A non-kernel step, by its entry in the integer-operator table (:func:`rule_for`),
        offered the backend's hooks (``kernels``). ``shadows``: float32 values of quantized
        tensors that a float operator reads instead of their dequantized integers (float islands)."""
        node = step.node
        values = [env[t] if t else None for t in node.inputs]
        rule = rule_for(node.op_type, operand_kinds(values))
        if shadows and not rule.keeps_qparams and rule.kernel == "float":
            values = [shadows.get(t, v) if t else v for t, v in zip(node.inputs, values)]
        y = rule.compute(node.op_type, values, node.attributes, name=step.name, backend=kernels)
        quantized = [v for v in values if isinstance(v, QTensor)]
        rec.kernel = rule.kernel
        rec.input_qparams = quantized[0].qp if quantized else None
        rec.input_bytes = sum(v.q.nbytes for v in quantized)
        if rule.keeps_qparams:
            rec.buffers["output"] = y.nbytes
            return QTensor(np.ascontiguousarray(y), values[0].qp)
        if step.output in self.float_tensors:
            rec.kernel = "integer → float" if rule.kernel == "integer" else "float island"
            rec.buffers.update({"float": rule.float_bytes(values) + y.nbytes})
            return y
        strategy, spec = self.tensor_specs[step.output]
        qp = check_qparams(call(strategy, "qparams_for_float", step.name, y, spec, self.tensor_qparams.get(step.output)),
                           strategy, "qparams_for_float", step.name)
        q = _quantize(kernels, y, qp)
        if shadows is not None and self.float_islands:
            shadows[step.output] = y
        rec.timing = getattr(strategy, "timing", None)
        rec.buffers.update({"float": rule.float_bytes(values) + y.nbytes, "output": q.nbytes})
        return QTensor(q, qp)


def _quantize(kernels, x, qp: QParams) -> np.ndarray:
    """:func:`refquant.numerics.quantize` — by the backend's hook ``quantize(x, qp)`` when it
    has one (the ``numba`` backend's, per tensor; ``None`` means "run the NumPy rule", which
    also raises the errors)."""
    hook = getattr(kernels, "quantize", None)
    q = hook(x, qp) if hook is not None else None
    return quantize(x, qp) if q is None else q


def _strategy(tp, kind: str, layer: str):
    """The registered strategy for ``tp``, with the plan's options checked against the ones it
    declares (:func:`refquant.strategies.check_options`)."""
    strategy = get_quantizer(tp.strategy, kind)
    check_options(strategy, tp.options, f"layer {layer!r}: {kind} {tp.strategy!r}")
    return strategy


def _layer_specs(plan: Plan, node) -> tuple:
    wp, ap = plan.for_layer(node.name)
    return wp, ap, wp.spec(node.name, node.op_type), ap.spec(node.name, node.op_type)


#: operators whose presence makes :func:`quantize_model` keep float islands by default (transformers)
FLOAT_ISLAND_OPS = ("LayerNormalization", "Gelu")


def float_island_tensors(graph: Graph, steps: list[Step]) -> frozenset:
    """The tensors a quantized model keeps in float32: every float graph input and every output of
    a non-layer step that no integer consumer reads.

    Integer consumers are the quantized layers (their input 0) and activation × activation
    MatMuls (both inputs, :class:`~refquant.executor.integer_ops.MatMulIntegers`); every other
    step runs its float32 operator on a float tensor as well as on a dequantized one. So a chain
    such as ``MatMul(q, k) → Div → Add(mask) → Softmax`` is quantized once, where the integer
    ``MatMul(·, v)`` reads it, instead of after each operator — the "float islands" between
    integer layers. A layer whose output only float operators read (its bias ``Add``) returns
    ``float32(acc) · s_x · s_w`` unquantized. Graph outputs produced in float stay float.
    """
    needs = set()
    for step in steps:
        node = step.node
        if step.quantizable:
            needs.add(node.inputs[0])
        elif node.op_type == "MatMul":
            needs.update(node.inputs[:2])
    produced = [t.name for t in graph.inputs if t.dtype == "float32"]
    produced += [step.output for step in steps]
    return frozenset(t for t in produced if t not in needs)


def quantize_model(graph: Graph, plan, calibration=None, *, requant: str = "float32",
                   batch_size: int = 256, bias_rule: str = "widen", float_islands: bool | None = None) -> QuantizedModel:
    """Quantize ``graph`` with ``plan`` (a :class:`Plan` or plan string).

    1. lower the graph into steps (fusing Relu/Relu6 into the layer before);
    2. quantize every Conv/Gemm/MatMul weight with its weight strategy;
    3. let before-layer activation strategies ``prepare`` (cache weight statistics);
    4. calibrate: one float pass over ``calibration`` (an array for the first input, or a
       dict) in batches, every activation observer seeing its tensor, then ``qparams()``;
       ``calibration`` may also be a :class:`~refquant.executor.calibration.CalibrationTrace`,
       that pass recorded once and replayed (a sweep of many plans over one model);
    5. the int32 bias rule (``bias_rule="widen"``, :mod:`refquant.executor.biasrule`): with the
       calibrated input scale known, widen each weight channel whose int32 bias plus accumulator
       could leave int32, and requantize it (``layer.widening`` records it). ``"off"`` skips it.

    ``calibration`` may also be a list of feeds dicts, one per batch (sentences of different
    lengths). ``float_islands`` (default: on for graphs with an operator of
    :data:`FLOAT_ISLAND_OPS`, off otherwise) keeps the tensors of :func:`float_island_tensors`
    in float32.
    """
    check_mode(requant)
    if bias_rule not in BIAS_RULES:
        raise ValueError(f"bias_rule must be one of {BIAS_RULES}, got {bias_rule!r}")
    plan = parse_plan(plan) if isinstance(plan, str) else plan
    steps = lower(graph)
    if float_islands is None:
        float_islands = any(n.op_type in FLOAT_ISLAND_OPS for n in graph.nodes)
    float_tensors = float_island_tensors(graph, steps) if float_islands else frozenset()
    layers: dict[str, QuantizedLayer] = {}
    tensor_specs: dict[str, tuple] = {}
    for t in graph.inputs:
        _, ap = plan.for_layer(t.name)
        tensor_specs[t.name] = (_strategy(ap, "activations", t.name), ap.spec(t.name, "input"))
    for step in steps:
        node = step.node
        wp, ap, wspec, aspec = _layer_specs(plan, node)
        astrat = _strategy(ap, "activations", node.name)
        if step.quantizable:
            wstrat = _strategy(wp, "weights", node.name)
            w = weight_matrix(graph, node)
            qw = check_weight(call(wstrat, "quantize_weight", node.name, w, wspec), w, wstrat, node.name)
            ctx = LayerContext(node, qw, layer_bias(graph, node), dict(node.attributes), step.fused_activation)
            if astrat.timing == "before":
                call(astrat, "prepare", node.name, ctx, aspec)
            layers[node.name] = QuantizedLayer(step, qw, ctx.bias, wspec, aspec, wstrat, astrat, ctx)
        tensor_specs[step.output] = (astrat, aspec)

    tensor_qparams: dict[str, QParams] = {}
    if calibration is not None:
        trace = calibration if isinstance(calibration, CalibrationTrace) else None
        if trace is not None and (trace.graph_name != graph.name or trace.batch_size != batch_size):
            raise ValueError(f"calibration trace of graph {trace.graph_name!r} in batches of {trace.batch_size} "
                             f"cannot calibrate graph {graph.name!r} in batches of {batch_size}")
        batches = trace.batches if trace else calibration_batches(calibration, graph, batch_size)[0]
        integer_inputs = {t.name for t in graph.inputs if t.dtype != "float32"}
        observers = {t: call(strat, "make_observer", spec.layer, spec) for t, (strat, spec) in tensor_specs.items()
                     if t not in float_tensors and t not in integer_inputs}
        strategies = {t: strat for t, (strat, _) in tensor_specs.items()}
        contexts = {layer.step.output: layer.context for layer in layers.values()}
        names = {step.output: step.name for step in steps}
        for i, item in enumerate(batches):
            batch = item[0] if trace else item
            for name, x in batch.items():
                if name in observers:
                    call(strategies[name], "observe", name, x, target=observers[name])

            def observe(output, x, y):
                obs = observers.get(output)
                if obs is not None:
                    call(strategies[output], "observe", names[output], y, context=contexts.get(output), x=x,
                         target=obs)

            if trace:  # the recorded float pass (refquant.executor.calibration), same arrays, same order
                for output, x, y in item[1]:
                    observe(output, x, y)
            else:
                run_float(graph, batch, steps=steps, observe=lambda ev: observe(ev.step.output, ev.x, ev.y))
            call_hook("calibration_progress", stage="calibration", done=i + 1, total=len(batches))
        tensor_qparams = {t: check_qparams(call(strategies[t], "qparams", tensor_specs[t][1].layer, target=obs),
                                           strategies[t], "observer qparams", tensor_specs[t][1].layer)
                          for t, obs in observers.items()}
        for layer in layers.values():
            layer.observed = tensor_qparams.get(layer.step.output)
    model = QuantizedModel(graph, plan, steps, layers, tensor_specs, tensor_qparams, requant, float_tensors)
    if bias_rule == "widen" and tensor_qparams:
        _apply_bias_rule(model)
    return model


#: state keys a before-layer strategy's observer writes at calibration (kept when re-preparing)
_CALIBRATION_KEYS = ("alpha", "beta", "calibrated", "calibration_images", "calibration_gamma")


def _apply_bias_rule(model: QuantizedModel) -> None:
    """Step 5 of :func:`quantize_model`: the int32 bias rule on every layer with a calibrated input."""
    fixed = static_qparams(model)
    known = static_qparams(model, offline_only=False)
    for layer in model.layers.values():
        x_name = layer.step.node.inputs[0]
        x_qp = known.get(x_name)
        if x_qp is None:
            continue
        node = layer.step.node
        qw, widening = widen_for_bias(layer.weight, weight_matrix(model.graph, node), layer.bias, x_qp,
                                      layer.name, per_input=x_name not in fixed)
        if widening is None:
            continue
        layer.weight, layer.widening = qw, widening
        layer.context.weight = qw
        if layer.act_strategy.timing == "before":
            kept = {k: v for k, v in layer.context.state.items() if k in _CALIBRATION_KEYS}
            layer.context.state.clear()
            layer.context.cache.clear()
            layer.act_strategy.prepare(layer.context, layer.act_spec)
            layer.context.state.update(kept)
