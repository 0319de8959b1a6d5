"""Graph IR: topological order (computed, never assumed), cycles, lookups, copies, builder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refquant.graph import Graph, GraphBuilder, Node, TensorInfo


def relu_node(name, src, dst=None):
    return Node(name, "Relu", [src], [dst or f"{name}.out"])


@st.composite
def random_dags(draw):
    """Nodes reading graph inputs or earlier nodes' outputs, then listed in a shuffled order."""
    n = draw(st.integers(1, 12))
    nodes = []
    for i in range(n):
        sources = ["x"] + [f"n{j}.out" for j in range(i)]
        a, b = draw(st.sampled_from(sources)), draw(st.sampled_from(sources))
        nodes.append(Node(f"n{i}", "Add", [a, b], [f"n{i}.out"]))
    order = draw(st.permutations(nodes))
    return Graph("dag", [TensorInfo("x", ("N", 3))], [f"n{n - 1}.out"], list(order))


@given(random_dags())
def test_topological_order_puts_producers_first(graph):
    order = graph.topological_order()
    assert sorted(n.name for n in order) == sorted(n.name for n in graph.nodes)
    seen = {"x"}
    for node in order:
        assert all(t in seen for t in node.inputs), f"{node} runs before one of its inputs"
        seen.update(node.outputs)


@given(random_dags())
def test_topological_order_keeps_a_sorted_list_and_is_deterministic(graph):
    order = graph.topological_order()
    again = Graph(graph.name, graph.inputs, graph.outputs, order)
    assert [n.name for n in again.topological_order()] == [n.name for n in order]
    assert [n.name for n in graph.topological_order()] == [n.name for n in order]


def test_cycle_error_names_exactly_the_nodes_of_the_cycle():
    nodes = [
        Node("a", "Add", ["x", "c.out"], ["a.out"]),
        Node("b", "Relu", ["a.out"], ["b.out"]),
        Node("c", "Relu", ["b.out"], ["c.out"]),
        Node("after", "Relu", ["c.out"], ["after.out"]),  # downstream of the cycle, not in it
        Node("ok", "Relu", ["x"], ["ok.out"]),
    ]
    g = Graph("g", [TensorInfo("x", ("N", 2))], ["after.out"], nodes)
    with pytest.raises(ValueError, match="cycle") as info:
        g.topological_order()
    msg = str(info.value)
    for name in ("'a'", "'b'", "'c'"):
        assert name in msg
    assert "'after'" not in msg and "'ok'" not in msg
    assert "'a' -> 'c' -> 'b' -> 'a'" in msg  # a reads c, c reads b, b reads a


def test_self_loop_is_a_cycle():
    g = Graph("g", [TensorInfo("x", ("N", 2))], ["s.out"], [Node("s", "Add", ["x", "s.out"], ["s.out"])])
    with pytest.raises(ValueError, match=r"cycle through nodes 's' -> 's'"):
        g.topological_order()


def test_missing_tensor_names_node_and_tensor():
    g = Graph("g", [TensorInfo("x", ("N", 2))], ["r.out"], [relu_node("r", "nowhere")])
    with pytest.raises(ValueError, match=r"node 'r' \(Relu\): input tensor 'nowhere' is not a graph input"):
        g.topological_order()


def test_duplicate_node_names_and_producers_are_refused():
    g = Graph("g", [TensorInfo("x", ("N", 2))], [], [relu_node("r", "x", "y1"), relu_node("r", "x", "y2")])
    with pytest.raises(ValueError, match="two nodes are named 'r'"):
        g.topological_order()
    g = Graph("g", [TensorInfo("x", ("N", 2))], [], [relu_node("r1", "x", "y"), relu_node("r2", "x", "y")])
    with pytest.raises(ValueError, match=r"output tensor 'y' is already produced by node 'r1'"):
        g.topological_order()


def test_lookups_and_copy_independence():
    nodes = [relu_node("r1", "x"), relu_node("r2", "r1.out"), relu_node("r3", "r1.out")]
    g = Graph("g", [TensorInfo("x", (None, 2))], ["r2.out", "r3.out"], nodes, {"w": np.ones(2, np.float32)})
    assert g.inputs[0].shape == ("N", 2)  # None reads as the batch symbol
    assert g.producer("r1.out").name == "r1" and g.producer("x") is None
    assert [n.name for n in g.consumers("r1.out")] == ["r2", "r3"]
    assert g.node("r3").op_type == "Relu"
    with pytest.raises(KeyError, match="no node named 'zz'"):
        g.node("zz")
    c = g.copy()
    c.nodes[0].attributes["x"] = 1
    c.nodes[0].inputs[0] = "changed"
    c.nodes.pop()
    c.initializers["new"] = np.zeros(1, np.float32)
    assert g.nodes[0].attributes == {} and g.nodes[0].inputs == ["x"]
    assert len(g.nodes) == 3 and "new" not in g.initializers


def test_builder_names_nodes_and_initializers():
    b = GraphBuilder("m")
    x = b.input("x", ["N", 1, 4, 4])
    h = b.conv(x, np.ones((2, 1, 3, 3), np.float32), pads=(1, 1, 1, 1))
    h = b.clip(h, 0.0, 6.0)
    y = b.reshape(h, [0, -1])
    g = b.build(y)
    assert [n.name for n in g.nodes] == ["conv_0", "clip_0", "reshape_0"]
    assert g.nodes[0].inputs == ["x", "conv_0.W"]  # absent trailing bias dropped
    assert g.nodes[0].attributes == {"pads": [1, 1, 1, 1]}
    assert g.initializers["clip_0.min"].shape == () and g.initializers["clip_0.min"].dtype == np.float32
    assert g.initializers["reshape_0.shape"].dtype == np.int64
    assert g.outputs == ["reshape_0.out"]
