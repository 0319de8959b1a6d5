"""ONNX export: QOperator models run in onnxruntime bit-exactly equal to refquant (``float32``
requant), QDQ models run, float models agree within float32 rounding, and what cannot be
expressed is refused by name.

Where the installed onnxruntime does not multiply uint8 by int8 exactly on this CPU (x86-64
without AVX-VNNI: int16 pair saturation, measured once per session by
``refquant.onnx_io.integer_product_probe``), a uint8 × int8 export is checked bit for bit
against the onnx reference evaluator with refquant in its ``float64`` mode instead, and
``test_onnxruntime_multiplies_u8s8_exactly_on_this_host`` is the one skip that says so."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from refquant.data import load_digits  # noqa: E402
from refquant.data import digits_inputs  # noqa: E402
from refquant.executor import quantize_model, run_float  # noqa: E402
from refquant.executor.integer_ops import average_integers  # noqa: E402
from refquant.golden.shipped import CALIBRATION, plan_text, shipped_models, shipped_plans  # noqa: E402
from refquant.numerics import QParams, quantize  # noqa: E402
from refquant.onnx_io import (  # noqa: E402
    ExportError, export_float, export_qdq, export_qoperator, run_onnxruntime, static_tensor_qparams,
)
from refquant.ops import FLOAT_OPS  # noqa: E402
from refquant.registry import get_model, quantizers  # noqa: E402
from onnx_oracle import for_reference_evaluator, has_u8s8_qlinear, ort_u8s8_exact, u8s8_quirk  # noqa: E402
from tests_support import small_cnn, small_mlp  # noqa: E402

DIGITS = load_digits()


def _exportable(weights: str, activations: str) -> bool:
    return all(getattr(quantizers()[a].obj, "timing", "offline") == "offline" for a in (activations,))


def _integers_of(qm, x, backend="numba"):
    """``{layer: integer output}`` of a refquant run, the quantized graph input included."""
    result = qm.run(x, backend=backend, keep=True)
    out = {}
    for rec in result.records:
        out[rec.name] = rec.q_output if rec.q_output is not None else quantize(x, rec.output_qparams)
    return out, result.outputs


#: images (or rows) run through the onnx reference evaluator where onnxruntime cannot be the oracle
REFERENCE_ROWS = 64


def _assert_bit_exact(qm, x, where):
    """Every integer of every layer and the float outputs, in onnxruntime (``float32`` mode) —
    or, for a uint8 × int8 export on a host where onnxruntime saturates u8·s8 pair sums, in the
    onnx reference evaluator (``float64`` mode) on the first ``REFERENCE_ROWS`` inputs."""
    exported = export_qoperator(qm, layer_outputs=True)
    onnx.checker.check_model(exported.model, full_check=True)
    if has_u8s8_qlinear(exported.model) and not ort_u8s8_exact():
        from onnx.reference import ReferenceEvaluator

        x = x[:REFERENCE_ROWS]
        model = for_reference_evaluator(exported.model)
        names = [o.name for o in model.graph.output]
        got = dict(zip(names, ReferenceEvaluator(model).run(None, {qm.graph.inputs[0].name: x})))
        qm, where = copy.copy(qm), f"{where} (onnx reference evaluator, requant=float64)"
        qm.requant = "float64"  # the same qparams and export; the reference evaluator's requantization
    else:
        got = run_onnxruntime(exported.model, {qm.graph.inputs[0].name: x})
    ints, floats = _integers_of(qm, x)
    for layer, q in ints.items():
        have = got[exported.layer_outputs[layer]]
        assert have.dtype == q.dtype and np.array_equal(have, q), (
            f"{where}: layer {layer!r}: {int(np.sum(have != q))} of {q.size} integers differ")
    for name, y in floats.items():
        assert got[name].tobytes() == y.tobytes(), f"{where}: float output {name!r} differs"


SHIPPED = [(m, w, a) for m in shipped_models() for w, a in shipped_plans() if _exportable(w, a)]


@pytest.mark.parametrize("model, weights, activations", SHIPPED, ids=lambda v: str(v))
def test_qoperator_export_of_every_shipped_model_is_bit_exact_in_onnxruntime(model, weights, activations):
    """Every integer of every layer, on the whole digits test set (599 images)."""
    graph = get_model(model)
    qm = quantize_model(graph, plan_text(weights, activations),
                        digits_inputs(graph, DIGITS.calibration(CALIBRATION).x), requant="float32")
    _assert_bit_exact(qm, digits_inputs(graph, DIGITS.test.x), f"{model} {weights}+{activations}")


def test_onnxruntime_multiplies_u8s8_exactly_on_this_host():
    """The part of the export tests this host cannot answer: on a CPU where onnxruntime
    saturates u8·s8 pair sums to int16, uint8 × int8 exports above are checked in the onnx
    reference evaluator, not in onnxruntime. Measured, not assumed: where the probe says exact,
    this passes and the tests above use onnxruntime."""
    if not ort_u8s8_exact():
        pytest.skip(f"{u8s8_quirk()}; uint8 x int8 exports checked in the onnx reference evaluator instead")


SMALL_PLANS = [
    "weights=minmax:8 activations=static-minmax:8",
    "weights=minmax:8:per-channel activations=static-minmax:8:signed:sym",  # ReLU clamps inside int8: Clip nodes
    "weights=mse:8:per-channel activations=static-mse:8:signed",
    "weights=minmax:4:per-channel activations=static-minmax:4",  # uint4 in uint8: Clip to [0, 15]
    "weights=minmax:8:unsigned:asym activations=static-percentile:8",  # uint8 weights
]


@pytest.mark.parametrize("plan", SMALL_PLANS)
@pytest.mark.parametrize("make", [small_cnn, small_mlp], ids=lambda f: f.__name__)
def test_qoperator_export_is_bit_exact_across_formats_and_operators(make, plan):
    """small_cnn: Relu6 fused as Clip(0, 6), MaxPool, a residual Add, GlobalAveragePool, Flatten,
    Gemm; small_mlp: Gemm, MatMul (QLinearMatMul), Gemm without bias."""
    graph, x = make(seed=2, n=64)
    qm = quantize_model(graph, plan, x[:32])
    _assert_bit_exact(qm, x, f"{graph.name} {plan}")


def test_gemm_becomes_a_1x1_qlinearconv_and_matmul_a_qlinearmatmul():
    graph, x = small_mlp(seed=0)
    qm = quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x)
    ops = [n.op_type for n in export_qoperator(qm).model.graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("QLinearMatMul") == 1
    assert ops[0] == "QuantizeLinear" and ops[-1] == "DequantizeLinear"
    assert "QLinearAdd" not in ops and not any(n.domain for n in export_qoperator(qm).model.graph.node)


def test_biases_are_the_executors_run_time_biases():
    from refquant.executor.quantized import quantize_bias

    graph, x = small_cnn(seed=4)
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", x)
    qps = static_tensor_qparams(qm)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in export_qoperator(qm).model.graph.initializer}
    for name, layer in qm.layers.items():
        if layer.bias is None:
            continue
        want = quantize_bias(layer.bias, qps[layer.step.node.inputs[0]].scale, layer.weight.qparams.scale)
        assert np.array_equal(inits[f"{name}.B_quantized"], want)


def test_what_onnx_cannot_express_is_refused_by_name():
    graph, x = small_cnn(seed=0)
    with pytest.raises(ExportError, match="'dynamic' .*timing 'after'"):
        export_qoperator(quantize_model(graph, "weights=minmax:8 activations=dynamic:8", x))
    if "probabilistic" in quantizers():
        with pytest.raises(ExportError, match="'probabilistic' .*timing 'before'"):
            export_qdq(quantize_model(graph, "weights=minmax:8 activations=probabilistic:8", x))
    with pytest.raises(ExportError, match="requant='fixed-point'"):
        export_qoperator(quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x,
                                        requant="fixed-point"))
    with pytest.raises(ExportError, match="per-channel activation"):
        export_qoperator(quantize_model(graph, "weights=minmax:8 activations=static-minmax:8:per-channel", x))
    qm = quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x)
    qm.layers["conv2"].weight.execution = "float"
    with pytest.raises(ExportError, match="layer 'conv2' .*executes the layer in float"):
        export_qoperator(qm)
    with pytest.raises(ExportError, match="no calibrated qparams"):
        export_qoperator(quantize_model(graph, "weights=minmax:8 activations=static-minmax:8"))


def test_qdq_export_runs_and_stays_within_a_few_lsb():
    """QDQ computes in float32 between the Q/DQ pairs (no fusion with optimizations disabled):
    not bit-exact; on small_cnn the integers stay within 2 LSB of refquant's."""
    graph, x = small_cnn(seed=6, n=64)
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", x[:32])
    exported = export_qdq(qm, layer_outputs=True)
    onnx.checker.check_model(exported.model, full_check=True)
    ops = {n.op_type for n in exported.model.graph.node}
    assert {"Conv", "Gemm", "QuantizeLinear", "DequantizeLinear"} <= ops and "QLinearConv" not in ops
    got = run_onnxruntime(exported.model, {"x": x})
    ints, _ = _integers_of(qm, x)
    worst = max(int(np.max(np.abs(got[exported.layer_outputs[k]].astype(int) - q.astype(int)))) for k, q in ints.items())
    assert worst <= 2
    qps = static_tensor_qparams(qm)
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in exported.model.graph.initializer}
    assert scales["x.scale"] == qps["x"].scale


def _per_node_outputs(graph, x):
    model = export_float(graph).model
    known = set(graph.outputs)
    for n in graph.nodes:
        if n.outputs[0] not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(n.outputs[0], onnx.TensorProto.FLOAT, None))
    return run_onnxruntime(model, {graph.inputs[0].name: x})


@pytest.mark.parametrize("model", shipped_models())
def test_float_export_agrees_within_float32_rounding(model):
    """Per node, on onnxruntime's own inputs to the node: Conv/Gemm within
    ``γ_(K+1) · (Σ|w·x| + |b|)`` (``γ_n = n·u/(1 - n·u)``, ``u = 2**-24``), GlobalAveragePool within
    ``γ_n · mean|x|`` over its n positions, every other node exactly; end to end the logits
    agree to 1e-6 of their largest magnitude."""
    graph = get_model(model)
    x = digits_inputs(graph, DIGITS.test.x)
    got = _per_node_outputs(graph, x)
    env = {**graph.initializers, **got, graph.inputs[0].name: x}
    u = 2.0**-24
    for n in graph.nodes:
        args = [env[t] if t else None for t in n.inputs]
        mine = FLOAT_OPS[n.op_type](*args, **n.attributes).astype(np.float64)
        diff = np.abs(mine - got[n.outputs[0]])
        if n.op_type in ("Conv", "Gemm"):
            k = int(np.prod(graph.initializers[n.inputs[1]].shape[1:]))
            mag = FLOAT_OPS[n.op_type](*[np.abs(a) if a is not None and a.dtype.kind == "f" else a for a in args],
                                       **n.attributes).astype(np.float64)
            bound = (k + 1) * u / (1 - (k + 1) * u) * mag
        elif n.op_type == "GlobalAveragePool":
            count = int(np.prod(args[0].shape[2:]))
            bound = count * u / (1 - count * u) * np.mean(np.abs(args[0]), axis=(2, 3), keepdims=True)
        else:
            bound = 0.0
        assert np.all(diff <= bound), f"{model}: node {n.name!r} ({n.op_type}) exceeds its bound"
    ref = run_float(graph, {graph.inputs[0].name: x})[graph.outputs[0]]
    assert np.max(np.abs(ref - got[graph.outputs[0]])) <= 1e-6 * np.max(np.abs(ref))


@given(st.integers(0, 2**32 - 1), st.sampled_from([(8, 8), (4, 4), (7, 7), (3, 5)]),
       st.floats(2.0**-10, 1.0, width=32), st.sampled_from(["uint8", "int8"]))
def test_average_of_integers_is_exact_then_scaled_once(seed, hw, scale, fmt):
    """The executor's GlobalAveragePool on a quantized tensor: the integer sum is exact, the
    mean one correctly rounded float32 division, the scale one float32 product."""
    rng = np.random.default_rng(seed)
    lo, hi = (0, 255) if fmt == "uint8" else (-128, 127)
    q = rng.integers(lo, hi + 1, (2, 3) + hw).astype(fmt)
    zp = int(rng.integers(lo, hi + 1))
    qp = QParams(np.float32(scale), zp, fmt)
    got = average_integers("GlobalAveragePool", q, qp, {})
    sums = (q.astype(np.int64) - zp).sum(axis=(2, 3), keepdims=True)
    want = (np.float32(sums / np.prod(hw)) * np.float32(scale)).astype(np.float32)  # float64 quotient: exact to 53 bits
    assert got.tobytes() == want.tobytes()


def test_a_float_sum_of_dequantized_values_depends_on_order_a_sum_of_integers_does_not():
    """Why the averaging pools average the integers: on these 640 pooled outputs NumPy and
    onnxruntime disagree in the last bit on 461 when summing dequantized floats, and on none
    when summing the integers ``q - z`` (the exact path the executor and the export use)."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    q = np.random.default_rng(0).integers(0, 256, (20, 32, 8, 8))
    dequantized = ((q - 131).astype(np.float32) * np.float32(0.0173)).astype(np.float32)
    centred = (q - 131).astype(np.float32)
    differ = [int(np.count_nonzero(FLOAT_OPS["GlobalAveragePool"](v) != run_onnxruntime(model, {"x": v})["y"]))
              for v in (dequantized, centred)]
    assert differ == [461, 0]
