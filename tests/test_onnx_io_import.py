"""ONNX import: float models into the graph IR, BatchNormalization folded, translated nodes,
and clear errors for what refquant cannot run."""

from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refquant.executor import run_float  # noqa: E402
from refquant.onnx_io import export_float, import_onnx, run_onnxruntime  # noqa: E402
from refquant.onnx_io.runtime import require_onnx  # noqa: E402
from tests_support import small_cnn, small_mlp  # noqa: E402


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _same_graph(a, b):
    assert [(n.name, n.op_type, n.inputs, n.outputs, n.attributes) for n in a.nodes] == \
           [(n.name, n.op_type, n.inputs, n.outputs, n.attributes) for n in b.nodes]
    assert a.input_names() == b.input_names() and a.outputs == b.outputs
    assert sorted(a.initializers) == sorted(b.initializers)
    for k in a.initializers:
        assert a.initializers[k].tobytes() == b.initializers[k].tobytes() and a.initializers[k].dtype == b.initializers[k].dtype


@pytest.mark.parametrize("make", [small_cnn, small_mlp], ids=lambda f: f.__name__)
def test_export_then_import_gives_back_the_same_graph(make, tmp_path):
    graph, x = make(seed=3)
    path = tmp_path / "m.onnx"
    export_float(graph).save(path)
    back = import_onnx(path)
    _same_graph(graph, back)
    assert run_float(back, {"x": x})[back.outputs[0]].tobytes() == run_float(graph, {"x": x})[graph.outputs[0]].tobytes()


def _conv_bn_graph():
    from refquant.graph import GraphBuilder

    rng = np.random.default_rng(0)
    b = GraphBuilder("conv-bn")
    x = b.input("x", ["N", 2, 6, 6])
    h = b.conv(x, rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), None, pads=[1, 1, 1, 1], name="conv")
    h = b.batch_normalization(h, rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32),
                              rng.normal(0, 0.1, 4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32),
                              name="bn", epsilon=1e-5)
    return b.build(b.relu(h, name="relu"))


def test_batchnorm_is_folded_on_import_and_kept_on_request():
    raw = _conv_bn_graph()
    model = export_float(raw).model
    folded = import_onnx(model)
    assert [n.op_type for n in folded.nodes] == ["Conv", "Relu"]
    kept = import_onnx(model, fold_bn=False)
    assert [n.op_type for n in kept.nodes] == ["Conv", "BatchNormalization", "Relu"]
    x = np.random.default_rng(0).normal(size=(8, 2, 6, 6)).astype(np.float32)
    y_onnx = run_onnxruntime(model, {"x": x})[raw.outputs[0]]
    y = run_float(folded, {"x": x})[folded.outputs[0]]
    assert np.max(np.abs(y - y_onnx)) <= 1e-5 * np.max(np.abs(y_onnx))


def test_unsupported_operators_are_listed_together():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="s1"), helper.make_node("Tanh", ["a"], ["b"], name="t1"),
             helper.make_node("Sin", ["b"], ["y"], name="s2")]
    with pytest.raises(ValueError, match=r"unsupported operator\(s\) Sin \(2 nodes: s1, s2\); Tanh \(1 node: t1\)"
                                         r".*refquant imports Conv, Gemm"):
        import_onnx(_model(nodes, [x], [y]))


def test_constant_identity_dropout_and_old_clip_are_translated():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("Gemm", ["x1", "w"], ["h"], transB=1, name="fc"),
        helper.make_node("Dropout", ["h"], ["h1"], ratio=0.5),
        helper.make_node("Clip", ["h1"], ["y"], min=0.0, max=6.0, name="clip"),
    ]
    m = _model(nodes, [x], [y], opset=10)
    g = import_onnx(m)
    assert [n.op_type for n in g.nodes] == ["Gemm", "Clip"]
    assert g.inputs[0].shape == ("batch", 4)
    xs = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32) * 10
    assert np.array_equal(run_float(g, {"x": xs})["y"], np.clip(xs @ w.T, 0, 6))


def test_inputs_and_weights_refquant_cannot_hold_are_named():
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])
    with pytest.raises(ValueError, match="graph input 'x' has type INT8"):
        import_onnx(_model([helper.make_node("Relu", ["x"], ["y"])], [x],
                           [helper.make_tensor_value_info("y", TensorProto.INT8, None)]))
    xf = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((4, 4), np.float16), "w")
    with pytest.raises(ValueError, match="tensor 'w' has dtype float16"):
        import_onnx(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [xf],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w]))
    x3 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])
    with pytest.raises(ValueError, match="Softmax before opset 13"):
        import_onnx(_model([helper.make_node("Softmax", ["x"], ["y"])], [x3],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=11))


def test_a_missing_file_and_a_broken_file_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_onnx(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match="bad.onnx"):
        import_onnx(tmp_path / "bad.onnx")


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"optional 'onnx' extra .*refquant\[onnx\]"):
        require_onnx()
