"""Validation of a graph and of the arrays fed to it, with errors that name what is wrong.

:func:`validate_graph` checks, in this order, and stops at the first problem:

1. names: graph inputs (float32, positive static dims, only the batch dim symbolic),
   initializers, node names and output tensors are unique; no tensor is defined twice;
2. each node: a supported op type (the error lists them), input and output counts, every
   attribute (unknown name, wrong type, bad value);
3. references and order: every input is defined somewhere, graph outputs exist, no cycle
   (the error names the nodes of the cycle);
4. weights: float32 (int64 only where an operator takes integers, i.e. Reshape's shape),
   no NaN or Inf, BatchNormalization ``input_var + epsilon > 0``;
5. shapes: static shape inference, which checks every operator's shape rule
   (Conv channels vs group, Gemm K, Add broadcasting, ...).
"""

from __future__ import annotations

import numbers

import numpy as np

from .ir import Graph, Shape
from .schema import OP_SCHEMAS, check_node_signature, input_specs
from .shapes import infer_shapes

#: dtypes an initializer may have.
INITIALIZER_DTYPES = ("float32", "int64")


def validate_graph(graph: Graph) -> dict[str, Shape]:
    """Check ``graph`` (see module docstring); return the shape of every tensor."""
    _check_names(graph)
    for node in graph.nodes:
        check_node_signature(node)
    graph.topological_order()
    if not graph.outputs:
        raise ValueError(f"graph {graph.name!r}: has no outputs; a model must name at least one output tensor")
    known = set(graph.input_names()) | set(graph.initializers) | {t for n in graph.nodes for t in n.outputs}
    for out in graph.outputs:
        if out not in known:
            raise ValueError(f"graph {graph.name!r}: output {out!r} is not produced by any node")
    _check_initializers(graph)
    return infer_shapes(graph)


def _check_name(what: str, name) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")


def _check_names(graph: Graph) -> None:
    g = f"graph {graph.name!r}"
    defined: dict[str, str] = {}

    def define(name: str, what: str) -> None:
        _check_name(what, name)
        if name in defined:
            raise ValueError(f"{g}: tensor name {name!r} is used twice: by {defined[name]} and by {what}")
        defined[name] = what

    for t in graph.inputs:
        define(t.name, f"graph input {t.name!r}")
        _check_input_info(g, t)
    for name in graph.initializers:
        define(name, f"initializer {name!r}")
    node_names = set()
    for node in graph.nodes:
        _check_name(f"{g}: a node name", node.name)
        if node.name in node_names:
            raise ValueError(f"{g}: two nodes are named {node.name!r}")
        node_names.add(node.name)
        if not isinstance(node.inputs, (list, tuple)) or not all(isinstance(t, str) for t in node.inputs):
            raise TypeError(f"{node}: inputs must be a list of tensor names, got {node.inputs!r}")
        for t in node.outputs:
            define(t, f"the output of {node}")
    if len(set(graph.outputs)) != len(graph.outputs):
        raise ValueError(f"{g}: outputs {graph.outputs} list a tensor twice")


def _check_input_info(g: str, t) -> None:
    where = f"{g}: input {t.name!r}"
    if t.dtype != "float32":
        raise ValueError(f"{where}: dtype must be 'float32', got {t.dtype!r}")
    if len(t.shape) == 0:
        raise ValueError(f"{where}: shape must have at least one dimension")
    for i, d in enumerate(t.shape):
        if isinstance(d, str):
            if i != 0 or not d.isidentifier():
                raise ValueError(
                    f"{where}: only the first (batch) dimension may be symbolic, and its name must "
                    f"be an identifier; got {d!r} at dimension {i} of {list(t.shape)}"
                )
        elif not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 1:
            raise ValueError(f"{where}: dimension {i} must be a positive int, got {d!r} in {list(t.shape)}")


def _check_initializers(graph: Graph) -> None:
    for name, a in graph.initializers.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"initializer {name!r} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype.name not in INITIALIZER_DTYPES:
            raise ValueError(f"initializer {name!r} has dtype {a.dtype}; expected one of {INITIALIZER_DTYPES}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise ValueError(f"initializer {name!r} holds {bad} NaN/Inf value(s) of {a.size}")
    for node in graph.nodes:
        schema = OP_SCHEMAS[node.op_type]
        for spec, t in zip(input_specs(schema, len(node.inputs)), node.inputs):
            a = graph.initializers.get(t)
            if a is not None and a.dtype.name != spec.dtype:
                raise ValueError(
                    f"{node}: input {spec.name!r} (initializer {t!r}) must be {spec.dtype}, got {a.dtype}"
                )
        if node.op_type == "BatchNormalization":
            var = graph.initializers.get(node.inputs[4])
            eps = node.attributes.get("epsilon", 1e-5)
            if var is not None and not (var.astype(np.float64) + eps > 0).all():
                raise ValueError(f"{node}: input_var + epsilon must be > 0 (epsilon={eps}, min var={var.min()})")


def validate_inputs(graph: Graph, feeds: dict) -> dict[str, int]:
    """Check the arrays fed to ``graph``: every input present and no other, float32, the
    declared rank and static dims, one size per symbolic dim, no empty batch, no NaN/Inf.

    Returns the size bound to each symbolic dimension, e.g. ``{"N": 600}``.
    """
    if not isinstance(feeds, dict):
        raise TypeError(f"inputs must be a dict of name -> numpy.ndarray, got {type(feeds).__name__}")
    expected = graph.input_names()
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        raise ValueError(f"graph {graph.name!r} takes inputs {expected}; missing {missing}, unexpected {extra}")
    bound: dict[str, int] = {}
    for info in graph.inputs:
        a = feeds[info.name]
        where = f"input {info.name!r}"
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"{where} must be a float32 numpy.ndarray, got {got}")
        if a.ndim != len(info.shape):
            raise ValueError(f"{where} must have shape {list(info.shape)}, got {a.shape}")
        for i, (d, n) in enumerate(zip(info.shape, a.shape)):
            if isinstance(d, str):
                if n == 0:
                    raise ValueError(f"{where} is empty (dimension {d!r} = 0)")
                if bound.setdefault(d, n) != n:
                    raise ValueError(f"{where}: dimension {d!r} is {n} here but {bound[d]} in another input")
            elif d != n:
                raise ValueError(f"{where} must have shape {list(info.shape)}, got {a.shape} (dimension {i})")
        if not np.isfinite(a).all():
            raise ValueError(f"{where} holds {int((~np.isfinite(a)).sum())} NaN/Inf value(s)")
    return bound
