"""validate_graph and validate_inputs: each kind of bad model or bad input gets a clear error
that names the node, tensor or initializer and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from refquant.graph import SUPPORTED_OPS, Graph, GraphBuilder, Node, TensorInfo, validate_graph, validate_inputs

F32 = np.float32


def small_cnn(**conv_attrs):
    """x (N,2,6,6) -> Conv(3 out) -> BN -> Relu -> MaxPool -> Flatten -> Gemm(4) -> Softmax."""
    b = GraphBuilder("cnn")
    x = b.input("x", ["N", 2, 6, 6])
    h = b.conv(x, np.ones((3, 2, 3, 3), F32), np.zeros(3, F32), name="conv", **conv_attrs)
    h = b.batch_normalization(h, *[np.ones(3, F32)] * 4, name="bn")
    h = b.max_pool(b.relu(h, name="relu"), kernel_shape=[2, 2], strides=[2, 2], name="pool")
    h = b.gemm(b.flatten(h, name="flat"), np.ones((4, 27), F32), np.zeros(4, F32), transB=1, name="fc")
    return b.build(b.softmax(h, name="softmax"))


def test_a_valid_graph_returns_every_shape():
    shapes = validate_graph(small_cnn(pads=[1, 1, 1, 1]))
    assert shapes["conv.out"] == ("N", 3, 6, 6)
    assert shapes["pool.out"] == ("N", 3, 3, 3)
    assert shapes["flat.out"] == ("N", 27)
    assert shapes["softmax.out"] == ("N", 4)
    assert shapes["conv.W"] == (3, 2, 3, 3)


def test_unknown_op_lists_the_supported_ones():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").op_type = "LeakyRelu"
    with pytest.raises(ValueError, match=r"node 'relu' \(LeakyRelu\): unknown operator 'LeakyRelu'") as info:
        validate_graph(g)
    assert all(op in str(info.value) for op in SUPPORTED_OPS)


def test_missing_tensor_names_node_and_tensor():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").inputs = ["conv.output"]
    with pytest.raises(ValueError, match=r"node 'relu' \(Relu\): input tensor 'conv.output' is not"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.outputs = ["logits"]
    with pytest.raises(ValueError, match=r"output 'logits' is not produced by any node"):
        validate_graph(g)


@pytest.mark.parametrize(
    "attrs, error, pattern",
    [
        ({"padding": [1, 1]}, ValueError, r"unknown attribute 'padding' \(attributes of Conv: auto_pad, dilations"),
        ({"pads": [1, 1]}, ValueError, r"'pads' must have 4 values"),
        ({"pads": [1, 1, -1, 1]}, ValueError, r"'pads' must be >= 0"),
        ({"pads": [1.0, 1, 1, 1]}, TypeError, r"'pads' must be a list of ints"),
        ({"strides": [0, 1]}, ValueError, r"'strides' must be >= 1"),
        ({"group": True}, TypeError, r"'group' must be an int"),
        ({"group": "1"}, TypeError, r"'group' must be an int"),
        ({"auto_pad": "SAME"}, ValueError, r"'auto_pad' must be one of \['NOTSET', 'SAME_UPPER'"),
        ({"auto_pad": "VALID", "pads": [1, 1, 1, 1]}, ValueError, r"cannot be combined with auto_pad"),
        ({"kernel_shape": [5, 5]}, ValueError, r"kernel_shape \[5, 5\] does not match weight shape"),
    ],
)
def test_bad_conv_attributes(attrs, error, pattern):
    with pytest.raises(error, match=r"node 'conv' \(Conv\)") as info:
        validate_graph(small_cnn(**attrs))
    assert info.match(pattern)


def test_other_bad_attributes():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("fc").attributes["transB"] = 2
    with pytest.raises(ValueError, match=r"node 'fc' \(Gemm\): attribute 'transB' must be one of \[0, 1\]"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("fc").attributes["alpha"] = float("nan")
    with pytest.raises(ValueError, match=r"'alpha' must be finite"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    del g.node("pool").attributes["kernel_shape"]
    with pytest.raises(ValueError, match=r"node 'pool' \(MaxPool\): required attribute 'kernel_shape' is missing"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("bn").attributes["training_mode"] = 1
    with pytest.raises(ValueError, match=r"'training_mode' must be one of \[0\]"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("pool").attributes.update(ceil_mode=1, auto_pad="SAME_UPPER")
    with pytest.raises(ValueError, match=r"node 'pool' \(MaxPool\): ceil_mode=1 is only defined with explicit pads"):
        validate_graph(g)


def test_input_and_output_counts():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").inputs.append("x")
    with pytest.raises(ValueError, match=r"node 'relu' \(Relu\): takes 1..1 inputs \(X\), got 2"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("conv").inputs[1] = ""
    with pytest.raises(ValueError, match=r"required input 'W' is empty"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").outputs.append("extra")
    with pytest.raises(ValueError, match=r"must have exactly one named output"):
        validate_graph(g)


@pytest.mark.parametrize(
    "build, pattern",
    [
        # Conv: weight in-channels vs input channels / group
        (lambda b, x: b.conv(x, np.ones((4, 4, 3, 3), F32), group=2),
         r"weight expects 4 input channels per group but the input has 4 channels and group=2"),
        (lambda b, x: b.conv(x, np.ones((3, 2, 3, 3), F32), group=2), r"output channels 3 .* not divisible by group=2"),
        (lambda b, x: b.conv(x, np.ones((4, 4, 3, 3), F32), np.ones(3, F32)), r"bias must have shape \(4,\)"),
        (lambda b, x: b.conv(x, np.ones((4, 4, 9, 9), F32)), r"window extent 9 .* larger than the padded input length 5"),
        (lambda b, x: b.gemm(b.flatten(x), np.ones((99, 2), F32)), r"inner dimensions differ: A gives K=100, B gives K=99"),
        (lambda b, x: b.gemm(b.flatten(x), np.ones((100, 2), F32), np.ones(3, F32)),
         r"C of shape \(3,\) does not broadcast to the output \(N, 2\)"),
        (lambda b, x: b.add(x, np.ones((3, 1, 1), F32)), r"shapes \(N, 4, 5, 5\) and \(3, 1, 1\) do not broadcast"),
        (lambda b, x: b.add(x, np.ones((2, 4, 5, 5), F32)), r"dimension N against 2"),
        (lambda b, x: b.matmul(x, np.ones((4, 3), F32)), r"inner dimensions differ: \(N, 4, 5, 5\) @ \(4, 3\)"),
        (lambda b, x: b.reshape(x, [0, 99]), r"cannot reshape \(N, 4, 5, 5\) \(100\*N elements\) into \[0, 99\]"),
        (lambda b, x: b.reshape(x, [3, -1]), r"the -1 would be 100\*N/3"),
        (lambda b, x: b.reshape(x, [10, 10]), r"cannot reshape"),  # would fix the batch size
        (lambda b, x: b.batch_normalization(x, *[np.ones(3, F32)] * 4), r"'scale' must have shape \(4,\)"),
        (lambda b, x: b.softmax(x, axis=4), r"axis 4 is outside \[-4, 3\]"),
        (lambda b, x: b.flatten(x, axis=-5), r"axis -5 is outside \[-4, 4\]"),
        (lambda b, x: b.clip(x, "cmin"), r"'min' must be a scalar"),
        (lambda b, x: b.max_pool(x, kernel_shape=[2, 2], pads=[2, 0, 0, 0]), r"must be smaller than kernel_shape"),
        (lambda b, x: b.average_pool(x, kernel_shape=[7, 1]), r"window extent 7"),
        (lambda b, x: b.gemm(x, np.ones((5, 2), F32)), r"input A must be 2-D"),
    ],
)
def test_shape_mismatches_name_the_node(build, pattern):
    b = GraphBuilder("g")
    x = b.input("x", ["N", 4, 5, 5])
    b.initializer("cmin", np.ones(2, F32))
    y = build(b, x)
    g = b.build(y)
    with pytest.raises(ValueError, match=r"node '\w+' \(\w+\): ") as info:
        validate_graph(g)
    assert info.match(pattern)


def test_duplicate_tensor_names():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.initializers["x"] = np.ones(1, F32)
    with pytest.raises(ValueError, match=r"tensor name 'x' is used twice: by graph input 'x' and by initializer 'x'"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").outputs = ["conv.W"]
    with pytest.raises(ValueError, match=r"'conv.W' is used twice: by initializer 'conv.W' and by the output of node 'relu'"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.inputs.append(TensorInfo("x", ("N", 1)))
    with pytest.raises(ValueError, match=r"'x' is used twice"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("relu").name = "conv"
    with pytest.raises(ValueError, match=r"two nodes are named 'conv'"):
        validate_graph(g)


def test_cycle_is_reported():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.node("conv").inputs[0] = "relu.out"
    g.inputs[0].shape = ("N", 3, 6, 6)
    with pytest.raises(ValueError, match=r"cycle through nodes 'bn' -> 'conv' -> 'relu' -> 'bn'"):
        validate_graph(g)


def test_bad_weights():
    g = small_cnn(pads=[1, 1, 1, 1])
    g.initializers["conv.W"] = g.initializers["conv.W"].astype(np.float64)
    with pytest.raises(ValueError, match=r"initializer 'conv.W' has dtype float64; expected one of \('float32', 'int64'\)"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.initializers["conv.W"] = g.initializers["conv.W"].astype(np.int64)
    with pytest.raises(ValueError, match=r"node 'conv' \(Conv\): input 'W' \(initializer 'conv.W'\) must be float32"):
        validate_graph(g)
    for bad in (np.nan, np.inf, -np.inf):
        g = small_cnn(pads=[1, 1, 1, 1])
        g.initializers["fc.B"] = g.initializers["fc.B"].copy()
        g.initializers["fc.B"][3, 5] = bad
        with pytest.raises(ValueError, match=r"initializer 'fc.B' holds 1 NaN/Inf value\(s\) of 108"):
            validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.initializers["bn.input_var"] = np.array([1, 0, 1], F32)
    g.node("bn").attributes["epsilon"] = 0.0
    with pytest.raises(ValueError, match=r"node 'bn' \(BatchNormalization\): input_var \+ epsilon must be > 0"):
        validate_graph(g)
    g = small_cnn(pads=[1, 1, 1, 1])
    g.initializers["conv.W"] = [[1.0]]
    with pytest.raises(TypeError, match=r"initializer 'conv.W' must be a numpy.ndarray"):
        validate_graph(g)


def test_reshape_shape_must_be_a_constant_int64():
    b = GraphBuilder("g")
    x = b.input("x", ["N", 4])
    s = b.input("s", [2])
    g = b.build(b.node("Reshape", [x, s]))
    with pytest.raises(ValueError, match=r"the 'shape' input must be an initializer"):
        validate_graph(g)


def test_graph_input_declarations():
    for shape, pattern in [
        (("N", 0), r"dimension 1 must be a positive int"),
        (("2N", 3), r"name must be an identifier"),
        ((), r"at least one dimension"),
    ]:
        g = Graph("g", [TensorInfo("x", shape)], ["r"], [Node("r", "Relu", ["x"], ["r"])])
        with pytest.raises(ValueError, match=r"input 'x'") as info:
            validate_graph(g)
        assert info.match(pattern)
    g = Graph("g", [TensorInfo("x", ("N", 2), "float64")], ["r"], [Node("r", "Relu", ["x"], ["r"])])
    with pytest.raises(ValueError, match=r"input 'x': dtype must be one of \('float32', 'int64'\)"):
        validate_graph(g)


def test_validate_inputs():
    b = GraphBuilder("two")
    x, z = b.input("x", ["N", 3]), b.input("z", ["N", 1])
    g = b.build(b.add(x, z))
    ok = {"x": np.zeros((5, 3), F32), "z": np.zeros((5, 1), F32)}
    assert validate_inputs(g, ok) == {"N": 5}
    with pytest.raises(ValueError, match=r"missing \['z'\], unexpected \['y'\]"):
        validate_inputs(g, {"x": ok["x"], "y": ok["z"]})
    with pytest.raises(TypeError, match=r"input 'x' must be a float32 numpy.ndarray, got float64"):
        validate_inputs(g, {**ok, "x": np.zeros((5, 3))})
    with pytest.raises(ValueError, match=r"input 'x' must have shape \['N', 3\], got \(5, 4\)"):
        validate_inputs(g, {**ok, "x": np.zeros((5, 4), F32)})
    with pytest.raises(ValueError, match=r"input 'z': dimension 'N' is 4 here but 5 in another input"):
        validate_inputs(g, {**ok, "z": np.zeros((4, 1), F32)})
    with pytest.raises(ValueError, match=r"input 'x' is empty"):
        validate_inputs(g, {"x": np.zeros((0, 3), F32), "z": np.zeros((0, 1), F32)})
    bad = ok["x"].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"input 'x' holds 1 NaN/Inf value"):
        validate_inputs(g, {**ok, "x": bad})
