"""The graph intermediate representation: named tensors and ONNX-named nodes.

A :class:`Graph` is a list of :class:`Node` objects over named tensors.  A tensor is either
a graph input (declared by a :class:`TensorInfo`), an initializer (a weight array held in
``Graph.initializers``) or the single output of exactly one node.  Nodes carry ONNX operator
names, ONNX input order (``""`` marks an absent optional input) and ONNX attribute names;
an attribute left out takes its ONNX default.

The node list is kept in the order it was given; :meth:`Graph.topological_order` computes an
execution order from the data dependencies and never assumes the list is already sorted.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Union

import numpy as np

#: A dimension: a positive int, or a symbolic name (str) such as "N" for the batch.
Dim = Union[int, str]
Shape = tuple  # tuple[Dim, ...]


@dataclass
class TensorInfo:
    """A graph input: name, dtype ("float32") and shape.

    Only the first (batch) dimension may be symbolic: a string such as ``"N"``; ``None`` is
    read as ``"N"``.  Every other dimension is a positive int.
    """

    name: str
    shape: tuple
    dtype: str = "float32"

    def __post_init__(self):
        self.shape = tuple("N" if d is None else d for d in self.shape)


@dataclass
class Node:
    """One operator application: ``outputs = op_type(inputs; attributes)``."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"node {self.name!r} ({self.op_type})"


@dataclass
class Graph:
    """A model: inputs, outputs (tensor names), nodes and initializers (name -> ndarray)."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[str]
    nodes: list[Node]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)

    # ---- lookups ---------------------------------------------------------------------------
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError naming it if there is none)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph {self.name!r} has no node named {name!r}")

    def producer(self, tensor: str) -> Node | None:
        """The node whose outputs include ``tensor`` (None for inputs and initializers)."""
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes that read ``tensor``, in node-list order."""
        return [n for n in self.nodes if tensor in n.inputs]

    def copy(self) -> Graph:
        """A copy whose node list, nodes, attributes and initializer dict can be changed
        without touching this graph (the weight arrays themselves are shared, not copied)."""
        return Graph(
            name=self.name,
            inputs=[TensorInfo(t.name, t.shape, t.dtype) for t in self.inputs],
            outputs=list(self.outputs),
            nodes=[
                Node(n.name, n.op_type, list(n.inputs), list(n.outputs), copy.deepcopy(n.attributes))
                for n in self.nodes
            ],
            initializers=dict(self.initializers),
        )

    # ---- execution order -------------------------------------------------------------------
    def topological_order(self) -> list[Node]:
        """The nodes in an order where every node comes after the producers of its inputs.

        Kahn's algorithm; among ready nodes the earliest in the node list goes first, so an
        already sorted list comes back unchanged.  Raises ValueError naming the node and
        tensor if an input is produced by no node and is neither a graph input nor an
        initializer, if two nodes share a name or an output tensor, and naming the nodes of a
        cycle if there is one.
        """
        available = set(self.input_names()) | set(self.initializers)
        producer_of: dict[str, int] = {}
        names: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.name in names:
                raise ValueError(f"graph {self.name!r}: two nodes are named {n.name!r}")
            names.add(n.name)
            for t in n.outputs:
                if t in producer_of:
                    raise ValueError(
                        f"{n}: output tensor {t!r} is already produced by {self.nodes[producer_of[t]]}"
                    )
                producer_of[t] = i

        waiting_on: list[set[int]] = []
        users: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            deps = set()
            for t in n.inputs:
                if t == "" or t in available:
                    continue
                if t not in producer_of:
                    raise ValueError(
                        f"{n}: input tensor {t!r} is not a graph input, an initializer, or the "
                        f"output of any node"
                    )
                deps.add(producer_of[t])
            waiting_on.append(deps)
            for d in deps:
                users[d].append(i)

        ready = [i for i, deps in enumerate(waiting_on) if not deps]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(self.nodes[i])
            for u in users[i]:
                waiting_on[u].discard(i)
                if not waiting_on[u]:
                    heapq.heappush(ready, u)
        if len(order) < len(self.nodes):
            stuck = {self.nodes[i].name: {self.nodes[d].name for d in deps}
                     for i, deps in enumerate(waiting_on) if deps}
            cycle = _find_cycle(stuck)
            raise ValueError(
                f"graph {self.name!r} has a cycle through nodes "
                + " -> ".join(repr(c) for c in cycle)
                + " (each node reads an output of the next)"
            )
        return order


def _find_cycle(waiting_on: dict[str, set[str]]) -> list[str]:
    """One cycle, as node names ``[a, b, ..., a]``, in the dependency graph of unsorted nodes.

    Every unsorted node waits on at least one other unsorted node, so walking "waits on"
    edges from any node must eventually revisit a node: the walk from there is the cycle.
    """
    start = min(waiting_on)
    path, seen = [start], {start: 0}
    while True:
        nxt = min(waiting_on[path[-1]])
        if nxt in seen:
            cycle = path[seen[nxt]:]
            return cycle + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)
