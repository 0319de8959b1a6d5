"""Slice and Resize (nearest) on the integers (the table's MoveOp): the executor, the golden
replay and the QOperator export agree on every integer, and the exported model's integers
equal the onnx reference evaluator's and onnxruntime's."""

from __future__ import annotations

import numpy as np
import pytest

from refquant.executor import quantize_model
from refquant.executor.integer_ops import FALLBACK, MoveOp, rule_for
from refquant.golden import export_golden, replay
from refquant.graph import GraphBuilder
from refquant.numerics import QParams, int_format

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from refquant.onnx_io import export_qoperator, run_onnxruntime  # noqa: E402


def _graph(mode_ctm="asymmetric", nearest="floor"):
    b = GraphBuilder("moves")
    x = b.input("x", ["N", 2, 4, 6])
    h = b.relu(x)
    h = b.node("Resize", [h, b.initializer("roi", np.zeros(0, np.float32)),
                          b.initializer("scales", np.array([1, 1, 2, 1.5], np.float32))],
               mode="nearest", coordinate_transformation_mode=mode_ctm, nearest_mode=nearest)
    h = b.node("Slice", [h, b.initializer("starts", np.array([1, -1], np.int64)),
                         b.initializer("ends", np.array([7, 0], np.int64)),
                         b.initializer("axes", np.array([2, 3], np.int64)),
                         b.initializer("steps", np.array([2, -2], np.int64))])
    h = b.node("Resize", [h, b.initializer("roi2", np.zeros(0, np.float32)),
                          b.initializer("scales2", np.array([1, 1, 0.5, 2], np.float32))], mode="nearest")
    return b.build(b.clip(h, None, 1.0)), np.random.default_rng(0).normal(0.3, 1, (6, 2, 4, 6)).astype(np.float32)


def test_the_rule_applies_per_tensor_with_constant_inputs():
    pt = QParams(np.float32(0.1), np.int64(3), int_format("uint8"))
    pc = QParams(np.array([0.1, 0.2], np.float32), np.array([0, 0]), int_format("int8"), axis=1)
    const = np.array([0], np.int64)
    assert isinstance(rule_for("Slice", [pt, const, const]), MoveOp)
    assert isinstance(rule_for("Resize", [pt, None, np.ones(4, np.float32)]), MoveOp)
    assert rule_for("Slice", [pc, const, const]) is FALLBACK
    assert rule_for("Slice", [pt, "runtime_starts", const]) is FALLBACK


@pytest.mark.parametrize("ctm, nearest", [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor")])
def test_executor_replay_export_and_both_oracles_agree(ctm, nearest, tmp_path):
    graph, x = _graph(ctm, nearest)
    qm = quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x)
    result = qm.run(x[:3], keep=True)
    ints = {r.name: r.q_output for r in result.records if r.q_output is not None}
    kernels = {r.name: r.kernel for r in result.records}
    assert kernels["resize_0"] == kernels["slice_0"] == kernels["resize_1"] == "integer"
    relu = next(r for r in result.records if r.name == "relu_0")
    assert all(r.output_qparams == relu.output_qparams for r in result.records if r.name != "relu_0")
    replayed = replay(export_golden(qm, x[:3], tmp_path / "set"))
    for name, q in ints.items():
        assert np.array_equal(replayed[name], q), f"replay differs on {name}"
    exported = export_qoperator(qm, layer_outputs=True)
    got = run_onnxruntime(exported.model, {"x": x[:3]})
    for name, q in ints.items():
        t = exported.layer_outputs[name]
        assert got[t].dtype == q.dtype and np.array_equal(got[t], q), f"onnxruntime differs on {name}"
    # each move on the integers, one node through the onnx reference evaluator
    producer = {n.outputs[0]: n.name for n in graph.nodes}
    for node in graph.nodes:
        if node.op_type in ("Slice", "Resize"):
            q_in = ints[producer[node.inputs[0]]]
            assert np.array_equal(_reference_node(node, q_in, graph.initializers), ints[node.name]), node.name


def _reference_node(node, q, inits):
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.UINT8 if q.dtype == np.uint8 else TensorProto.INT8
    consts = [numpy_helper.from_array(inits[t], t) for t in node.inputs[1:] if t]
    g = helper.make_graph([helper.make_node(node.op_type, ["q", *node.inputs[1:]], ["y"], **node.attributes)], "one",
                          [helper.make_tensor_value_info("q", elem, list(q.shape))],
                          [helper.make_tensor_value_info("y", elem, None)], consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return ReferenceEvaluator(m).run(None, {"q": q})[0]
