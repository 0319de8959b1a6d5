"""Constant folding at import (refquant.onnx_io.constfold): shape subgraphs become
initializers; a symbolic batch survives only where its meaning is certain; input_shapes pins
dynamic dimensions, and every misuse is named."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_oracle import requires_onnx

pytestmark = requires_onnx


def _model(nodes, inits=(), in_shape=("N", 2, 3, 4), opset=13):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "fold", [x], [y], [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_shape_chain_with_a_symbolic_batch_folds_to_a_reshape_target():
    """Shape → Cast(int32) → Slice[0:2] → Cast(int64) → Concat(-1) → Reshape: the paddle2onnx
    pattern of the PP-OCRv4 recogniser. The batch entry becomes 0 (copy), the rest constants."""
    from onnx import TensorProto, helper

    from refquant.executor import run_float
    from refquant.onnx_io import import_onnx

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
             helper.make_node("Slice", ["s32", "zero", "two"], ["head"]),
             helper.make_node("Cast", ["head"], ["head64"], to=TensorProto.INT64),
             helper.make_node("Concat", ["head64", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    inits = [("zero", np.array([0], np.int32)), ("two", np.array([2], np.int32)), ("minus1", np.array([-1]))]
    m = _model(nodes, inits)
    g = import_onnx(m)
    assert [n.op_type for n in g.nodes] == ["Reshape", "Relu"]
    assert g.initializers[g.nodes[0].inputs[1]].tolist() == [0, 2, -1]
    x = np.random.default_rng(0).normal(size=(3, 2, 3, 4)).astype(np.float32)
    assert np.array_equal(run_float(g, {"x": x})["y"], _ort(m, x))


def test_static_dims_fold_to_plain_values_and_input_shapes_pins_them():
    from onnx import helper

    from refquant.onnx_io import import_onnx

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "three"], ["w"], axis=0),
             helper.make_node("Mul", ["w", "two"], ["w2"]),
             helper.make_node("Unsqueeze", ["w2", "ax0"], ["w2v"]),
             helper.make_node("Concat", ["first", "w2v"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [("three", np.array(3)), ("two", np.array(2)), ("ax0", np.array([0])), ("first", np.array([-1]))]
    m = _model(nodes, inits, in_shape=("N", 2, "H", "W"))
    with pytest.raises(ValueError, match="Shape.*not known at import|symbolic dimension"):
        import_onnx(m)
    g = import_onnx(m, input_shapes={"x": ("N", 2, 3, 4)})
    assert g.initializers[g.nodes[0].inputs[1]].tolist() == [-1, 8]
    x = np.ones((2, 2, 3, 4), np.float32)
    from refquant.executor import run_float

    assert np.array_equal(run_float(g, {"x": x})["y"], _ort(m, x))


def test_arithmetic_on_a_symbolic_dimension_is_refused_not_guessed():
    from onnx import helper

    from refquant.onnx_io import import_onnx

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Mul", ["s", "two"], ["t"], name="doubling"),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    with pytest.raises(ValueError, match="'doubling'.*symbolic dimension"):
        import_onnx(_model(nodes, [("two", np.array([1, 1, 1, 1]))]))


def test_a_symbolic_dimension_moved_elsewhere_in_a_target_is_refused():
    from onnx import helper

    from refquant.onnx_io import import_onnx

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["minus1", "n"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"], name="moving")]
    inits = [("zero", np.array([0])), ("one", np.array([1])), ("minus1", np.array([-1]))]
    with pytest.raises(ValueError, match="'moving'.*symbolic dimension N at position 1"):
        import_onnx(_model(nodes, inits))


@pytest.mark.parametrize("pin, message", [
    ({"x": ("N", 2, 3)}, "3 dimensions"),
    ({"x": ("N", 5, 3, 4)}, "fixes it at 2"),
    ({"z": ("N", 2, 3, 4)}, "not inputs of the model"),
    ({"x": (0, 2, 3, 4)}, "positive int"),
])
def test_input_shapes_misuse_is_named(pin, message):
    from onnx import helper

    from refquant.onnx_io import import_onnx

    with pytest.raises(ValueError, match=message):
        import_onnx(_model([helper.make_node("Relu", ["x"], ["y"])]), input_shapes=pin)
