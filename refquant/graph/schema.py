"""The operators refquant supports: ONNX inputs and attributes, with defaults and allowed values.

This table is what validation checks a node against; the keyword defaults of the float
operator functions in :mod:`refquant.ops` are the same (a test checks that).  Semantics are
ONNX opset 13's.  Conv, MaxPool and AveragePool are 2-D only (NCHW input), so their list
attributes have fixed lengths: 2 per spatial list, 4 for ``pads``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from ..ops.gelu import GELU_APPROXIMATIONS
from ..ops.padding import AUTO_PAD_MODES


@dataclass(frozen=True)
class AttrSpec:
    """One attribute: ``kind`` is "int", "float", "string" or "ints"."""

    kind: str
    default: object = None
    required: bool = False
    choices: tuple = ()
    length: int | None = None  # "ints": exact length
    minimum: float | None = None  # "int"/"ints": every value >= minimum; "float": value >= minimum


@dataclass(frozen=True)
class InputSpec:
    """One input, in ONNX order.  ``constant``: must be an initializer (Reshape's shape).
    ``variadic``: the last input of a variadic operator (Concat), repeated one or more times."""

    name: str
    optional: bool = False
    dtype: str = "float32"
    constant: bool = False
    variadic: bool = False


@dataclass(frozen=True)
class OpSchema:
    op_type: str
    inputs: tuple[InputSpec, ...]
    attributes: dict[str, AttrSpec] = field(default_factory=dict)


_SPATIAL = dict(kind="ints", length=2, minimum=1)
_PADS = AttrSpec("ints", length=4, minimum=0)
_AUTO_PAD = AttrSpec("string", "NOTSET", choices=AUTO_PAD_MODES)
_BOOL = dict(kind="int", choices=(0, 1))

OP_SCHEMAS: dict[str, OpSchema] = {
    s.op_type: s
    for s in [
        OpSchema(
            "Conv",
            (InputSpec("X"), InputSpec("W"), InputSpec("B", optional=True)),
            {
                "auto_pad": _AUTO_PAD,
                "dilations": AttrSpec(**_SPATIAL),
                "group": AttrSpec("int", 1, minimum=1),
                "kernel_shape": AttrSpec(**_SPATIAL),
                "pads": _PADS,
                "strides": AttrSpec(**_SPATIAL),
            },
        ),
        OpSchema(
            "Gemm",
            (InputSpec("A"), InputSpec("B"), InputSpec("C", optional=True)),
            {
                "alpha": AttrSpec("float", 1.0),
                "beta": AttrSpec("float", 1.0),
                "transA": AttrSpec(default=0, **_BOOL),
                "transB": AttrSpec(default=0, **_BOOL),
            },
        ),
        OpSchema("MatMul", (InputSpec("A"), InputSpec("B"))),
        OpSchema("Relu", (InputSpec("X"),)),
        OpSchema(
            "Clip", (InputSpec("input"), InputSpec("min", optional=True), InputSpec("max", optional=True))
        ),
        OpSchema(
            "MaxPool",
            (InputSpec("X"),),
            {
                "auto_pad": _AUTO_PAD,
                "ceil_mode": AttrSpec(default=0, **_BOOL),
                "dilations": AttrSpec(**_SPATIAL),
                "kernel_shape": AttrSpec(required=True, **_SPATIAL),
                "pads": _PADS,
                "strides": AttrSpec(**_SPATIAL),
            },
        ),
        OpSchema(
            "AveragePool",
            (InputSpec("X"),),
            {
                "auto_pad": _AUTO_PAD,
                "ceil_mode": AttrSpec(default=0, **_BOOL),
                "count_include_pad": AttrSpec(default=0, **_BOOL),
                "kernel_shape": AttrSpec(required=True, **_SPATIAL),
                "pads": _PADS,
                "strides": AttrSpec(**_SPATIAL),
            },
        ),
        OpSchema("GlobalAveragePool", (InputSpec("X"),)),
        OpSchema("Add", (InputSpec("A"), InputSpec("B"))),
        OpSchema("Flatten", (InputSpec("input"),), {"axis": AttrSpec("int", 1)}),
        OpSchema("Reshape", (InputSpec("data"), InputSpec("shape", dtype="int64", constant=True))),
        OpSchema("Softmax", (InputSpec("input"),), {"axis": AttrSpec("int", -1)}),
        *(OpSchema(op, (InputSpec("A"), InputSpec("B"))) for op in ("Mul", "Sub", "Div")),
        OpSchema("Pow", (InputSpec("X"), InputSpec("Y"))),
        *(OpSchema(op, (InputSpec("X"),)) for op in ("Sqrt", "Erf", "Sigmoid")),
        OpSchema("HardSigmoid", (InputSpec("X"),), {"alpha": AttrSpec("float", 0.2), "beta": AttrSpec("float", 0.5)}),
        OpSchema("Transpose", (InputSpec("data"),), {"perm": AttrSpec("ints", None, minimum=0)}),
        OpSchema("Concat", (InputSpec("inputs", variadic=True),), {"axis": AttrSpec("int", required=True)}),
        OpSchema("Unsqueeze", (InputSpec("data"), InputSpec("axes", dtype="int64", constant=True))),
        OpSchema("Squeeze", (InputSpec("data"), InputSpec("axes", optional=True, dtype="int64", constant=True))),
        OpSchema("ReduceMean", (InputSpec("data"),), {"axes": AttrSpec("ints", None), "keepdims": AttrSpec(default=1, **_BOOL)}),
        OpSchema(
            "ReduceSum",
            (InputSpec("data"), InputSpec("axes", optional=True, dtype="int64", constant=True)),
            {"keepdims": AttrSpec(default=1, **_BOOL), "noop_with_empty_axes": AttrSpec(default=0, **_BOOL)},
        ),
        OpSchema(
            "BatchNormalization",
            (InputSpec("X"), InputSpec("scale"), InputSpec("B"), InputSpec("input_mean"), InputSpec("input_var")),
            {
                "epsilon": AttrSpec("float", 1e-5, minimum=0.0),
                "momentum": AttrSpec("float", 0.9),
                "training_mode": AttrSpec("int", 0, choices=(0,)),
            },
        ),
        OpSchema("Gather", (InputSpec("data"), InputSpec("indices", dtype="int64")), {"axis": AttrSpec("int", 0)}),
        OpSchema(
            "LayerNormalization",
            (InputSpec("X"), InputSpec("Scale"), InputSpec("B", optional=True)),
            {
                "axis": AttrSpec("int", -1),
                "epsilon": AttrSpec("float", 1e-5, minimum=0.0),
                "stash_type": AttrSpec("int", 1, choices=(1,)),
            },
        ),
        OpSchema("Gelu", (InputSpec("X"),), {"approximate": AttrSpec("string", "none", choices=GELU_APPROXIMATIONS)}),
        OpSchema(
            "ConvTranspose",
            (InputSpec("X"), InputSpec("W"), InputSpec("B", optional=True)),
            {
                "auto_pad": AttrSpec("string", "NOTSET", choices=("NOTSET",)),
                "dilations": AttrSpec(**_SPATIAL),
                "group": AttrSpec("int", 1, minimum=1),
                "kernel_shape": AttrSpec(**_SPATIAL),
                "output_padding": AttrSpec("ints", length=2, minimum=0),
                "pads": _PADS,
                "strides": AttrSpec(**_SPATIAL),
            },
        ),
        OpSchema(
            "Resize",
            (InputSpec("X"), InputSpec("roi", optional=True, constant=True),
             InputSpec("scales", optional=True, constant=True),
             InputSpec("sizes", optional=True, dtype="int64", constant=True)),
            {
                "coordinate_transformation_mode": AttrSpec(
                    "string", "half_pixel", choices=("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")),
                "cubic_coeff_a": AttrSpec("float", -0.75),
                "exclude_outside": AttrSpec(default=0, **_BOOL),
                "extrapolation_value": AttrSpec("float", 0.0),
                "mode": AttrSpec("string", "nearest", choices=("nearest",)),
                "nearest_mode": AttrSpec("string", "round_prefer_floor",
                                         choices=("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")),
            },
        ),
        OpSchema(
            "Slice",
            (InputSpec("data"), InputSpec("starts", dtype="int64", constant=True),
             InputSpec("ends", dtype="int64", constant=True),
             InputSpec("axes", optional=True, dtype="int64", constant=True),
             InputSpec("steps", optional=True, dtype="int64", constant=True)),
        ),
    ]
}

SUPPORTED_OPS: tuple[str, ...] = tuple(OP_SCHEMAS)


def schema_of(node) -> OpSchema:
    """The schema of ``node.op_type``; ValueError listing the supported ops if unknown."""
    try:
        return OP_SCHEMAS[node.op_type]
    except KeyError:
        raise ValueError(
            f"{node}: unknown operator {node.op_type!r}; supported operators are "
            + ", ".join(SUPPORTED_OPS)
        ) from None


def input_specs(schema: OpSchema, n: int) -> tuple[InputSpec, ...]:
    """The specs of a node's ``n`` inputs: a variadic last spec repeated to cover them."""
    specs = schema.inputs
    if specs and specs[-1].variadic and n > len(specs):
        specs = specs + (specs[-1],) * (n - len(specs))
    return specs


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_attribute(node, name: str, value) -> None:
    """Raise TypeError (wrong kind) or ValueError (unknown name, bad value) naming the node."""
    schema = schema_of(node)
    spec = schema.attributes.get(name)
    if spec is None:
        known = ", ".join(schema.attributes) or "none"
        raise ValueError(f"{node}: unknown attribute {name!r} (attributes of {node.op_type}: {known})")
    where = f"{node}: attribute {name!r}"
    if spec.kind == "int":
        if not _is_int(value):
            raise TypeError(f"{where} must be an int, got {value!r}")
        values = [value]
    elif spec.kind == "float":
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{where} must be a float, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
        values = [value]
    elif spec.kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r}")
        values = [value]
    else:  # "ints"
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
            raise TypeError(f"{where} must be a list of ints, got {value!r}")
        if spec.length is not None and len(value) != spec.length:
            raise ValueError(f"{where} must have {spec.length} values (2-D spatial), got {list(value)}")
        values = list(value)
    if spec.choices and values[0] not in spec.choices:
        raise ValueError(f"{where} must be one of {list(spec.choices)}, got {value!r}")
    if spec.minimum is not None and any(v < spec.minimum for v in values):
        raise ValueError(f"{where} must be >= {spec.minimum}, got {value!r}")


def check_node_signature(node) -> None:
    """Check op type, input/output counts and every attribute of one node."""
    schema = schema_of(node)
    n_in, n_max = len(node.inputs), len(schema.inputs)
    n_min = sum(not s.optional for s in schema.inputs)
    if schema.inputs and schema.inputs[-1].variadic:
        n_max = max(n_in, n_min)
    if not n_min <= n_in <= n_max:
        expected = ", ".join(s.name + (" (optional)" if s.optional else "") for s in schema.inputs)
        raise ValueError(f"{node}: takes {n_min}..{n_max} inputs ({expected}), got {n_in}: {node.inputs}")
    for spec, tensor in zip(input_specs(schema, len(node.inputs)), node.inputs):
        if tensor == "" and not spec.optional:
            raise ValueError(f"{node}: required input {spec.name!r} is empty")
    if len(node.outputs) != 1 or not node.outputs[0]:
        raise ValueError(f"{node}: must have exactly one named output, got {node.outputs}")
    if not isinstance(node.attributes, dict):
        raise TypeError(f"{node}: attributes must be a dict, got {type(node.attributes).__name__}")
    for name, value in node.attributes.items():
        check_attribute(node, name, value)
    for name, spec in schema.attributes.items():
        if spec.required and name not in node.attributes:
            raise ValueError(f"{node}: required attribute {name!r} is missing")
