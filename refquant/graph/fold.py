"""Folding BatchNormalization into the Conv or Gemm before it.

In inference mode BatchNormalization is an affine map per channel ``c``::

    BN(y)[c] = g[c] * (y[c] - mean[c]) + beta[c],     g[c] = gamma[c] / sqrt(var[c] + epsilon)

and a Conv or Gemm is linear in its weight plus a bias, so ``BN(conv(x; w, b))`` equals
``conv(x; w', b')`` with, per output channel ``c``::

    w'[c, ...] = w[c, ...] * g[c]
    b'[c]      = (b[c] - mean[c]) * g[c] + beta[c]          (b = 0 if the Conv has none)

For Gemm ``Y = alpha * A' @ B' + beta_g * C`` the output channel is the column ``n`` of Y:
the columns of B' are scaled (rows of B when transB = 1), ``alpha`` is kept, and
``C' = (beta_g * C - mean) * g + beta`` with ``beta_g`` set to 1.

Numeric decisions: ``g``, ``w'`` and ``b'`` are computed in float64 from the float32
parameters and rounded once to float32.  The folded graph therefore differs from the
unfolded one only by float32 rounding (one rounding of each folded weight instead of the
BN's own roundings at run time); a test bounds the difference.

A BatchNormalization is folded only when its input is the output of a Conv or Gemm that
feeds nothing else (and is not a graph output), whose weight and bias are initializers, and
whose own parameters are initializers.  Otherwise it stays in the graph and runs as an op.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node


def fold_batchnorm(graph: Graph) -> Graph:
    """A new graph with every foldable BatchNormalization merged into its Conv/Gemm.

    ``graph`` is not changed.  The folded node keeps its name and takes the BN's output
    tensor name; a folded weight or bias keeps its initializer name when nothing else reads
    it, otherwise it gets a fresh name.  Initializers no longer read by any node are dropped.
    """
    g = graph.copy()
    for bn in [n for n in g.nodes if n.op_type == "BatchNormalization"]:
        producer = _foldable_producer(g, bn)
        if producer is not None:
            _fold_one(g, producer, bn)
    used = {t for n in g.nodes for t in n.inputs} | set(g.outputs)
    g.initializers = {k: v for k, v in g.initializers.items() if k in used}
    return g


def _foldable_producer(g: Graph, bn: Node) -> Node | None:
    if bn.attributes.get("training_mode", 0) != 0:
        return None
    x = bn.inputs[0]
    producer = g.producer(x)
    if producer is None or producer.op_type not in ("Conv", "Gemm"):
        return None
    if x in g.outputs or len(g.consumers(x)) != 1:
        return None
    params = bn.inputs[1:5]
    if not all(p in g.initializers for p in params):
        return None
    weight = producer.inputs[1]
    bias = producer.inputs[2] if len(producer.inputs) > 2 else ""
    if weight not in g.initializers or (bias and bias not in g.initializers):
        return None
    return producer


def _fold_one(g: Graph, node: Node, bn: Node) -> None:
    gamma, beta, mean, var = (g.initializers[t].astype(np.float64) for t in bn.inputs[1:5])
    scale = gamma / np.sqrt(var + float(bn.attributes.get("epsilon", 1e-5)))
    w = g.initializers[node.inputs[1]].astype(np.float64)
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""

    if node.op_type == "Conv":
        new_w = w * scale[:, None, None, None]
        b = g.initializers[bias_name].astype(np.float64) if bias_name else np.zeros(w.shape[0])
        new_b = (b - mean) * scale + beta
    else:  # Gemm: output channel = column of B' = row of B if transB else column of B
        new_w = w * (scale[:, None] if node.attributes.get("transB", 0) else scale[None, :])
        beta_g = float(node.attributes.get("beta", 1.0))
        c = g.initializers[bias_name].astype(np.float64) if bias_name else np.zeros(scale.shape)
        new_b = (beta_g * c - mean) * scale + beta
        node.attributes["beta"] = 1.0

    weight_name = _writable_name(g, node.inputs[1], node)
    bias_name = _writable_name(g, bias_name, node) if bias_name else _fresh_name(g, f"{node.name}.bias")
    g.initializers[weight_name] = new_w.astype(np.float32)
    g.initializers[bias_name] = new_b.astype(np.float32)
    node.inputs = [node.inputs[0], weight_name, bias_name]
    node.outputs = list(bn.outputs)
    g.nodes.remove(bn)


def _writable_name(g: Graph, name: str, node: Node) -> str:
    """``name`` itself if only ``node`` reads it (and it is no graph output), else a fresh name."""
    if name in g.outputs or any(n is not node for n in g.consumers(name)):
        return _fresh_name(g, f"{name}.folded")
    return name


def _fresh_name(g: Graph, base: str) -> str:
    taken = set(g.initializers) | set(g.input_names()) | {t for n in g.nodes for t in n.outputs}
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name
