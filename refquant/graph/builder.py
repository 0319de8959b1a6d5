"""GraphBuilder: write a model as a few lines of calls instead of nodes and tensor names.

    b = GraphBuilder("tiny")
    x = b.input("x", ["N", 1, 8, 8])
    h = b.relu(b.conv(x, w1, b1, pads=[1, 1, 1, 1]))
    y = b.softmax(b.gemm(b.flatten(b.global_average_pool(h)), w2, b2, transB=1))
    graph = b.build(outputs=[y])

Every method adds one node named ``<op_type lower-case>_<k>`` (or ``name=``), stores array
arguments as initializers named ``<node>.<ONNX input name>``, passes keyword arguments
through as ONNX attributes, and returns the name of the node's output tensor.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node, TensorInfo
from .schema import OP_SCHEMAS


class GraphBuilder:
    def __init__(self, name: str = "model"):
        self.name = name
        self.inputs: list[TensorInfo] = []
        self.nodes: list[Node] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}

    def input(self, name: str, shape, dtype: str = "float32") -> str:
        self.inputs.append(TensorInfo(name, tuple(shape), dtype))
        return name

    def initializer(self, name: str, array) -> str:
        self.initializers[name] = np.asarray(array)
        return name

    def node(self, op_type: str, inputs, name: str | None = None, **attributes) -> str:
        """Add a node; an ndarray in ``inputs`` becomes an initializer, None an absent input."""
        if name is None:
            k = self._count.get(op_type, 0)
            self._count[op_type] = k + 1
            name = f"{op_type.lower()}_{k}"
        specs = OP_SCHEMAS[op_type].inputs if op_type in OP_SCHEMAS else ()
        names = []
        for i, t in enumerate(inputs):
            if t is None:
                names.append("")
            elif isinstance(t, np.ndarray):
                label = specs[i].name if i < len(specs) else str(i)
                names.append(self.initializer(f"{name}.{label}", t))
            else:
                names.append(t)
        while names and names[-1] == "":
            names.pop()
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in attributes.items()}
        self.nodes.append(Node(name, op_type, names, [f"{name}.out"], attrs))
        return f"{name}.out"

    def build(self, outputs) -> Graph:
        if isinstance(outputs, str):
            outputs = [outputs]
        return Graph(self.name, list(self.inputs), list(outputs), list(self.nodes), dict(self.initializers))

    # ---- one method per operator -----------------------------------------------------------
    def conv(self, x, w, b=None, *, name=None, **attrs):
        return self.node("Conv", [x, w, b], name, **attrs)

    def gemm(self, a, b, c=None, *, name=None, **attrs):
        return self.node("Gemm", [a, b, c], name, **attrs)

    def matmul(self, a, b, *, name=None):
        return self.node("MatMul", [a, b], name)

    def relu(self, x, *, name=None):
        return self.node("Relu", [x], name)

    def clip(self, x, min=None, max=None, *, name=None):  # noqa: A002
        """``min``/``max``: a number (stored as a float32 scalar initializer), a tensor name, or None."""
        bounds = [v if v is None or isinstance(v, str) else np.asarray(v, dtype=np.float32).reshape(())
                  for v in (min, max)]
        return self.node("Clip", [x, *bounds], name)

    def max_pool(self, x, *, name=None, **attrs):
        return self.node("MaxPool", [x], name, **attrs)

    def average_pool(self, x, *, name=None, **attrs):
        return self.node("AveragePool", [x], name, **attrs)

    def global_average_pool(self, x, *, name=None):
        return self.node("GlobalAveragePool", [x], name)

    def add(self, a, b, *, name=None):
        return self.node("Add", [a, b], name)

    def flatten(self, x, *, name=None, **attrs):
        return self.node("Flatten", [x], name, **attrs)

    def reshape(self, x, shape, *, name=None):
        return self.node("Reshape", [x, np.asarray(shape, dtype=np.int64)], name)

    def softmax(self, x, *, name=None, **attrs):
        return self.node("Softmax", [x], name, **attrs)

    def batch_normalization(self, x, scale, bias, mean, var, *, name=None, **attrs):
        return self.node("BatchNormalization", [x, scale, bias, mean, var], name, **attrs)
