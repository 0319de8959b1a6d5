"""The graph: IR, model files, validation, shape inference and BatchNormalization folding.

An executor runs a graph as::

    env = {**graph.initializers, **feeds}
    for node in graph.topological_order():
        args = [env[t] if t else None for t in node.inputs]
        env[node.outputs[0]] = FLOAT_OPS[node.op_type](*args, **node.attributes)
"""

from .builder import GraphBuilder
from .fold import fold_batchnorm
from .io import FORMAT, FORMAT_VERSION, load_model, model_paths, save_model
from .ir import Dim, Graph, Node, Shape, TensorInfo
from .schema import OP_SCHEMAS, SUPPORTED_OPS, AttrSpec, InputSpec, OpSchema
from .shapes import broadcast_shapes, infer_node_shape, infer_shapes
from .validate import INITIALIZER_DTYPES, validate_graph, validate_inputs

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INITIALIZER_DTYPES",
    "OP_SCHEMAS",
    "SUPPORTED_OPS",
    "AttrSpec",
    "Dim",
    "Graph",
    "GraphBuilder",
    "InputSpec",
    "Node",
    "OpSchema",
    "Shape",
    "TensorInfo",
    "broadcast_shapes",
    "fold_batchnorm",
    "infer_node_shape",
    "infer_shapes",
    "load_model",
    "model_paths",
    "save_model",
    "validate_graph",
    "validate_inputs",
]
