"""Static shape inference with a symbolic batch: on random graphs it predicts exactly the
shapes a run produces, for any batch size; onnxruntime running the same graph agrees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx_oracle import onnx_shape_inference_disagrees, requires_onnx, run_graph_onnxruntime, run_reference

from refquant.graph import GraphBuilder, broadcast_shapes, infer_shapes, validate_graph
from refquant.graph.shapes import dim_product, dim_quotient
from refquant.ops import FLOAT_OPS

F32 = np.float32


def run_loop(graph, feeds):
    """The executor's loop, in miniature: every tensor of the run, by name."""
    env = {**graph.initializers, **feeds}
    for node in graph.topological_order():
        env[node.outputs[0]] = FLOAT_OPS[node.op_type](*[env[t] if t else None for t in node.inputs], **node.attributes)
    return env


def concrete(shape, batch: int) -> tuple[int, ...]:
    """A symbolic shape with every symbol set to ``batch``: ("N", "4*N") -> (b, 4b)."""
    out = []
    for d in shape:
        if isinstance(d, str):
            v = 1
            for part in d.split("*"):
                v *= int(part) if part.isdigit() else batch
            d = v
        out.append(d)
    return tuple(out)


def _try(b: GraphBuilder, add) -> str | None:
    """Add a node with ``add(b)``; keep it if the graph still validates, else roll back."""
    n_nodes, inits = len(b.nodes), set(b.initializers)
    out = add(b)
    try:
        validate_graph(b.build(out))
        return out
    except ValueError:
        del b.nodes[n_nodes:]
        for k in set(b.initializers) - inits:
            del b.initializers[k]
        return None


@st.composite
def random_graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = lambda *s: rng.standard_normal(s).astype(F32)  # noqa: E731
    b = GraphBuilder("random")
    c = draw(st.integers(1, 3))
    cur = b.input("x", ["N", c, draw(st.integers(3, 9)), draw(st.integers(3, 9))])
    for _ in range(draw(st.integers(1, 7))):
        shape = infer_shapes(b.build(cur))[cur]
        last = shape[-1] if isinstance(shape[-1], int) else 1
        anywhere = ["Relu", "Clip", "Add", "Flatten", "Reshape", "MatMul", "Softmax"]
        op = draw(st.sampled_from({
            4: ["Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization"] + anywhere,
            2: ["Gemm", "BatchNormalization"] + anywhere,
        }.get(len(shape), anywhere)))
        ch = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else 1
        pads = lambda k: draw(st.lists(st.integers(0, k - 1), min_size=4, max_size=4))  # noqa: E731
        k = draw(st.integers(1, 3))
        if op == "Conv":
            g = draw(st.sampled_from([d for d in (1, 2, 3) if ch % d == 0]))
            m = g * draw(st.integers(1, 2))
            attrs = dict(group=g, strides=[draw(st.integers(1, 2))] * 2, dilations=[draw(st.integers(1, 2))] * 2)
            attrs.update({"pads": pads(k)} if draw(st.booleans()) else {"auto_pad": draw(st.sampled_from(
                ["SAME_UPPER", "SAME_LOWER", "VALID"]))})
            add = lambda b: b.conv(cur, w(m, ch // g, k, k), w(m) if draw(st.booleans()) else None, **attrs)  # noqa: E731,B023
        elif op in ("MaxPool", "AveragePool"):
            attrs = dict(kernel_shape=[k, k], strides=[draw(st.integers(1, 2))] * 2, pads=pads(k),
                         ceil_mode=draw(st.integers(0, 1)))
            add = lambda b: b.node(op, [cur], **attrs)  # noqa: E731,B023
        elif op in ("Relu", "GlobalAveragePool"):
            add = lambda b: b.node(op, [cur])  # noqa: E731,B023
        elif op == "Clip":
            add = lambda b: b.clip(cur, -0.5, draw(st.sampled_from([None, 0.5])))  # noqa: E731,B023
        elif op == "BatchNormalization":
            add = lambda b: b.batch_normalization(  # noqa: E731,B023
                cur, w(ch), w(ch), w(ch), np.abs(w(ch)) + F32(0.1))
        elif op == "Add":
            other = draw(st.sampled_from(["self", "last", "channel"]))
            arr = {"self": None, "last": w(last), "channel": w(ch, *[1] * max(0, len(shape) - 2))}[other]
            add = lambda b: b.add(cur, cur if arr is None else arr)  # noqa: E731,B023
        elif op == "Flatten":
            add = lambda b: b.flatten(cur, axis=draw(st.integers(-len(shape), len(shape))))  # noqa: E731,B023
        elif op == "Reshape":
            target = draw(st.sampled_from([[0, -1], [-1], [-1, last], [0, -1, 1, 1], [0, 1, -1]]))
            add = lambda b: b.reshape(cur, target)  # noqa: E731,B023
        elif op == "Gemm":
            n, trans = draw(st.integers(1, 5)), draw(st.integers(0, 1))
            add = lambda b: b.gemm(cur, w(n, last) if trans else w(last, n), w(n), transB=trans)  # noqa: E731,B023
        elif op == "MatMul":
            add = lambda b: b.matmul(cur, w(last, draw(st.integers(1, 4))))  # noqa: E731,B023
        else:
            add = lambda b: b.softmax(cur, axis=draw(st.integers(-len(shape), len(shape) - 1)))  # noqa: E731,B023
        cur = _try(b, add) or cur
    return b.build(cur), draw(st.sampled_from([1, 3]))


@given(random_graphs())
def test_inferred_shapes_equal_run_shapes(case):
    graph, batch = case
    shapes = validate_graph(graph)
    x = np.random.default_rng(0).standard_normal(concrete(graph.inputs[0].shape, batch)).astype(F32)
    env = run_loop(graph, {"x": x})
    assert set(env) == set(shapes)
    for name, value in env.items():
        assert value.dtype == (np.int64 if name.endswith(".shape") else np.float32), name
        assert value.shape == concrete(shapes[name], batch), (name, shapes[name])


@requires_onnx
@settings(max_examples=30)  # each example builds an onnxruntime session for a whole graph
@given(random_graphs())
def test_random_graphs_run_like_onnxruntime(case):
    graph, batch = case
    # onnxruntime refuses Conv with SAME_* padding and dilations (measured, 1.32)
    assume(not any(n.op_type == "Conv" and n.attributes.get("auto_pad", "").startswith("SAME")
                   and n.attributes.get("dilations", [1, 1]) != [1, 1] for n in graph.nodes))
    # onnx's static shape inference counts a ceil_mode window past the input, which its own
    # kernels drop (onnx_shape_inference_disagrees); onnxruntime may then refuse the graph
    assume(not onnx_shape_inference_disagrees(graph))
    x = np.random.default_rng(1).standard_normal(concrete(graph.inputs[0].shape, batch)).astype(F32)
    ours = run_loop(graph, {"x": x})[graph.outputs[0]]
    (theirs,) = run_graph_onnxruntime(graph, {"x": x})
    assert ours.shape == theirs.shape
    # A wiring check (a wrong input, attribute or default changes values at the 1e-1 level);
    # each operator's rounding is bounded separately in test_ops_float.
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max() + 1e-6))


@requires_onnx
def test_a_ceil_mode_window_past_the_input_is_dropped_as_the_reference_evaluator_drops_it():
    """MaxPool 1×1, stride 2, ceil_mode on 3×4: the last column window would start at 4, past the
    input, and is dropped — 2×2, refquant's inferred and run shapes equal the onnx reference
    evaluator's (whatever onnx's static shape inference says: see onnx_shape_inference_disagrees)."""
    attrs = dict(kernel_shape=[1, 1], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=1)
    x = np.arange(12, dtype=F32).reshape(1, 1, 3, 4)
    b = GraphBuilder("ceil")
    g = b.build(b.max_pool(b.input("x", [1, 1, 3, 4]), **attrs))
    assert infer_shapes(g)[g.outputs[0]] == (1, 1, 2, 2)
    ours = FLOAT_OPS["MaxPool"](x, **attrs)
    np.testing.assert_array_equal(ours, [[[[0, 2], [8, 10]]]])
    np.testing.assert_array_equal(ours, run_reference("MaxPool", [x], attrs))


def test_symbolic_dimension_arithmetic():
    assert dim_product(["N", 4, 5]) == "20*N"
    assert dim_product([2, 3]) == 6
    assert dim_product(["N", "M"]) == "M*N"
    assert dim_quotient("20*N", 5) == "4*N"
    assert dim_quotient("20*N", "4*N") == 5
    assert dim_quotient("20*N", 3) is None
    assert dim_quotient(20, "N") is None
    assert broadcast_shapes(("N", 3), (3,), "here") == ("N", 3)
    assert broadcast_shapes(("N", 1), (1, 7), "here") == ("N", 7)
    with pytest.raises(ValueError, match=r"here: shapes \(N, 3\) and \(5, 3\) do not broadcast"):
        broadcast_shapes(("N", 3), (5, 3), "here")


def test_symbolic_shapes_through_flatten_and_reshape():
    b = GraphBuilder("sym")
    x = b.input("x", [None, 4, 2, 2])
    f0 = b.flatten(x, axis=0)
    back = b.reshape(f0, [-1, 16])
    r = b.reshape(x, [2, -1])  # legal whatever N is: (2, 8N)
    g = b.build([back, r])
    shapes = infer_shapes(g)
    assert shapes[f0] == (1, "16*N")
    assert shapes[back] == ("N", 16)
    assert shapes[r] == (2, "8*N")
