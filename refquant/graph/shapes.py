"""Static shape inference with a symbolic batch dimension.

A dimension is a positive int or a symbolic product written as a string: ``"N"`` (a graph
input's batch), ``"4*N"`` (what Flatten(axis=0) or Reshape(-1) make of it).  Symbols are
never given values: two dimensions are known equal only if they are the same int or the same
product, and a rule that needs to know more (a broadcast of ``N`` against 5, a Reshape that
would fix the batch size) raises ValueError instead of guessing.

Every rule checks what its operator needs (ranks, channel counts, inner dimensions,
broadcastability, windows that fit) and raises ValueError naming the node.
"""

from __future__ import annotations

import numpy as np

from ..ops.convtranspose import convtranspose_output_size
from ..ops.layout import normalise_axes
from ..ops.padding import check_pool_windows, window_plan
from ..ops.resize import resize_output_shape
from ..ops.slice import slice_index
from .ir import Dim, Graph, Node, Shape

# ---- symbolic dimensions ------------------------------------------------------------------


def _factors(d: Dim) -> tuple[int, tuple[str, ...]]:
    """``d`` as (integer coefficient, sorted symbol names): 6 -> (6, ()), "2*N" -> (2, ("N",))."""
    if isinstance(d, int):
        return d, ()
    coef, syms = 1, []
    for part in d.split("*"):
        if part.isdigit():
            coef *= int(part)
        else:
            syms.append(part)
    return coef, tuple(sorted(syms))


def _make_dim(coef: int, syms: tuple[str, ...]) -> Dim:
    if not syms or coef == 0:
        return coef
    return "*".join(([str(coef)] if coef != 1 else []) + sorted(syms))


def dim_product(dims) -> Dim:
    """The product of dimensions, symbolic if any of them is."""
    coef, syms = 1, []
    for d in dims:
        c, s = _factors(d)
        coef *= c
        syms.extend(s)
    return _make_dim(coef, tuple(syms))


def dim_quotient(total: Dim, part: Dim) -> Dim | None:
    """``total / part`` if it is a whole dimension whatever the symbols are, else None."""
    (ct, st), (cp, sp) = _factors(total), _factors(part)
    rest = list(st)
    for s in sp:
        if s not in rest:
            return None
        rest.remove(s)
    if cp == 0 or ct % cp:
        return None
    return _make_dim(ct // cp, tuple(rest))


def broadcast_shapes(a: Shape, b: Shape, where: str) -> Shape:
    """NumPy (multidirectional) broadcasting of two possibly symbolic shapes."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ValueError(
                f"{where}: shapes {_fmt(a)} and {_fmt(b)} do not broadcast "
                f"(dimension {da} against {db})"
            )
    return tuple(reversed(out))


def _fmt(shape: Shape) -> str:
    """A shape as Python prints a tuple, but with symbols unquoted: (N, 3), (3,), ()."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _require_ndim(where: str, what: str, shape: Shape, ndim: int) -> None:
    if len(shape) != ndim:
        raise ValueError(f"{where}: {what} must be {ndim}-D, got shape {_fmt(shape)}")


def _require_int(where: str, what: str, dims) -> None:
    for d in dims:
        if not isinstance(d, int):
            raise ValueError(f"{where}: {what} must have static (integer) dimensions, got {d!r}")


# ---- one rule per operator ----------------------------------------------------------------
# rule(where, shapes, consts, attributes) -> output shape
#   shapes: the input shapes in ONNX order (None for an absent optional input)
#   consts: the input arrays that are initializers (None otherwise)


def _conv_operands(where, shapes):
    """Conv's and ConvTranspose's ``(X, W, B)`` shapes: 4-D, static channels and kernel."""
    x, w, b = (shapes + [None])[:3]
    _require_ndim(where, "input X", x, 4)
    _require_ndim(where, "weight W", w, 4)
    _require_int(where, "input X (channels, height, width)", x[1:])
    _require_int(where, "weight W", w)
    return x, w, b


def _conv(where, shapes, consts, attrs):
    x, w, b = _conv_operands(where, shapes)
    c, (m, cg, kh, kw) = x[1], w
    group = attrs.get("group", 1)
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != (kh, kw):
        raise ValueError(f"{where}: kernel_shape {attrs['kernel_shape']} does not match weight shape {_fmt(w)}")
    if c % group:
        raise ValueError(f"{where}: input channels {c} are not divisible by group={group}")
    if m % group:
        raise ValueError(f"{where}: output channels {m} (weight dim 0) are not divisible by group={group}")
    if cg != c // group:
        raise ValueError(
            f"{where}: weight expects {cg} input channels per group but the input has {c} channels "
            f"and group={group} ({c // group} per group); weight shape {_fmt(w)}"
        )
    if b is not None and tuple(b) != (m,):
        raise ValueError(f"{where}: bias must have shape ({m},), got {_fmt(b)}")
    plan = window_plan(
        where, x[2:], (kh, kw), auto_pad=attrs.get("auto_pad", "NOTSET"), pads=attrs.get("pads"),
        strides=attrs.get("strides"), dilations=attrs.get("dilations"),
    )
    return (x[0], m, *plan.out)


def _pool(where, shapes, consts, attrs):
    x = shapes[0]
    _require_ndim(where, "input X", x, 4)
    _require_int(where, "input X (channels, height, width)", x[1:])
    kernel = tuple(attrs["kernel_shape"])
    plan = window_plan(
        where, x[2:], kernel, auto_pad=attrs.get("auto_pad", "NOTSET"), pads=attrs.get("pads"),
        strides=attrs.get("strides"), dilations=attrs.get("dilations"), ceil_mode=attrs.get("ceil_mode", 0),
    )
    check_pool_windows(where, x[2:], kernel, plan, attrs.get("strides"), attrs.get("dilations"))
    return (x[0], x[1], *plan.out)


def _global_average_pool(where, shapes, consts, attrs):
    x = shapes[0]
    if len(x) < 3:
        raise ValueError(f"{where}: input must be at least 3-D (N, C, spatial...), got {_fmt(x)}")
    return (x[0], x[1]) + (1,) * (len(x) - 2)


def _gemm(where, shapes, consts, attrs):
    a, b, c = (shapes + [None])[:3]
    _require_ndim(where, "input A", a, 2)
    _require_ndim(where, "input B", b, 2)
    m, ka = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
    kb, n = (b[1], b[0]) if attrs.get("transB", 0) else (b[0], b[1])
    if ka != kb:
        raise ValueError(
            f"{where}: inner dimensions differ: A gives K={ka}, B gives K={kb} "
            f"(A {_fmt(a)}, B {_fmt(b)}, transA={attrs.get('transA', 0)}, transB={attrs.get('transB', 0)})"
        )
    y = (m, n)
    if c is not None:
        try:
            ok = broadcast_shapes(c, y, where) == y
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{where}: C of shape {_fmt(c)} does not broadcast to the output {_fmt(y)}")
    return y


def _matmul(where, shapes, consts, attrs):
    a, b = shapes
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"{where}: MatMul inputs must be at least 1-D, got {_fmt(a)} and {_fmt(b)}")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"{where}: inner dimensions differ: {_fmt(a)} @ {_fmt(b)}")
    batch = broadcast_shapes(a2[:-2], b2[:-2], where)
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _same(where, shapes, consts, attrs):
    return shapes[0]


def _clip(where, shapes, consts, attrs):
    for name, s in zip(("min", "max"), shapes[1:]):
        if s is not None and len(s) != 0:
            raise ValueError(f"{where}: {name!r} must be a scalar (shape ()), got {_fmt(s)}")
    return shapes[0]


def _add(where, shapes, consts, attrs):
    return broadcast_shapes(shapes[0], shapes[1], where)


def _softmax(where, shapes, consts, attrs):
    x, axis = shapes[0], attrs.get("axis", -1)
    if not -len(x) <= axis < len(x):
        raise ValueError(f"{where}: axis {axis} is outside [{-len(x)}, {len(x) - 1}] for input {_fmt(x)}")
    return x


def _flatten(where, shapes, consts, attrs):
    x, axis = shapes[0], attrs.get("axis", 1)
    r = len(x)
    if not -r <= axis <= r:
        raise ValueError(f"{where}: axis {axis} is outside [{-r}, {r}] for input {_fmt(x)}")
    axis = axis + r if axis < 0 else axis
    return (dim_product(x[:axis]), dim_product(x[axis:]))


def _reshape(where, shapes, consts, attrs):
    x, target = shapes[0], consts[1]
    if target is None:
        raise ValueError(f"{where}: the 'shape' input must be an initializer (static shape)")
    if target.dtype != np.int64 or target.ndim != 1:
        raise ValueError(f"{where}: the 'shape' input must be a 1-D int64 array, got {target.dtype} {target.shape}")
    values = [int(v) for v in target]
    if values.count(-1) > 1:
        raise ValueError(f"{where}: target shape {values} has more than one -1")
    out: list[Dim] = []
    for i, v in enumerate(values):
        if v == 0:
            if i >= len(x):
                raise ValueError(f"{where}: target shape {values} copies dimension {i} but the input is {_fmt(x)}")
            out.append(x[i])
        elif v >= -1:
            out.append(v)
        else:
            raise ValueError(f"{where}: target shape {values} has a negative size {v} (only -1 is allowed)")
    total = dim_product(x)
    known = dim_product([d for d in out if d != -1])
    if -1 in out:
        rest = dim_quotient(total, known)
        if rest is None:
            raise ValueError(
                f"{where}: cannot reshape {_fmt(x)} ({total} elements) into {values}: the -1 would "
                f"be {total}/{known}, not a whole number whatever the batch size is"
            )
        out[out.index(-1)] = rest
    elif known != total:
        raise ValueError(f"{where}: cannot reshape {_fmt(x)} ({total} elements) into {values} ({known} elements)")
    return tuple(out)


def _broadcast_binary(where, shapes, consts, attrs):
    return broadcast_shapes(shapes[0], shapes[1], where)


def _axes_values(where, consts, i, rank):
    """Input ``i``, a constant 1-D int64 ``axes``, normalised to ``[0, rank)``; ValueError naming the node."""
    axes = _constant_input(where, consts, i, "axes", np.int64)
    if axes.ndim != 1:
        raise ValueError(f"{where}: the 'axes' input must be 1-D, got shape {axes.shape}")
    return normalise_axes(where, [int(a) for a in axes], rank)


def _transpose(where, shapes, consts, attrs):
    x = shapes[0]
    perm = attrs.get("perm")
    if perm is None:
        return tuple(reversed(x))
    if sorted(perm) != list(range(len(x))):
        raise ValueError(f"{where}: perm {list(perm)} is not a permutation of the {len(x)} axes of {_fmt(x)}")
    return tuple(x[p] for p in perm)


def _concat(where, shapes, consts, attrs):
    first, axis = shapes[0], attrs["axis"]
    r = len(first)
    if not -r <= axis < r:
        raise ValueError(f"{where}: axis {axis} is outside [{-r}, {r - 1}] for input {_fmt(first)}")
    a = axis % r
    joined = [first[a]]
    for i, s in enumerate(shapes[1:], 1):
        if len(s) != r or s[:a] + s[a + 1:] != first[:a] + first[a + 1:]:
            raise ValueError(f"{where}: input {i} has shape {_fmt(s)}, which does not match input 0's "
                             f"{_fmt(first)} outside axis {axis}")
        joined.append(s[a])
    return first[:a] + (dim_sum(joined, where),) + first[a + 1:]


def dim_sum(dims, where: str) -> Dim:
    """The sum of dimensions: an int when all are ints, else equal symbolic terms added."""
    if all(isinstance(d, int) for d in dims):
        return sum(dims)
    syms = {_factors(d)[1] for d in dims}
    if len(syms) != 1:
        raise ValueError(f"{where}: cannot add dimensions {list(dims)} (static and symbolic mixed)")
    return _make_dim(sum(_factors(d)[0] for d in dims), syms.pop())


def _unsqueeze(where, shapes, consts, attrs):
    x = shapes[0]
    n = _constant_input(where, consts, 1, "axes", np.int64).size  # the output's rank is len(x) + n
    out = list(x)
    for a in sorted(_axes_values(where, consts, 1, len(x) + n)):
        out.insert(a, 1)
    return tuple(out)


def _squeeze(where, shapes, consts, attrs):
    x = shapes[0]
    if len(shapes) < 2 or shapes[1] is None:
        if any(not isinstance(d, int) for d in x):
            raise ValueError(f"{where}: Squeeze without axes needs static dimensions, got {_fmt(x)}")
        return tuple(d for d in x if d != 1)
    drop = _axes_values(where, consts, 1, len(x))
    for a in drop:
        if x[a] != 1:
            raise ValueError(f"{where}: axis {a} of {_fmt(x)} has size {x[a]}, not 1")
    return tuple(d for i, d in enumerate(x) if i not in drop)


def _reduced(where, x, axes, keepdims):
    axes = range(len(x)) if axes is None else axes
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _reduce_mean(where, shapes, consts, attrs):
    x, axes = shapes[0], attrs.get("axes")
    axes = None if axes is None else normalise_axes(where, list(axes), len(x))
    return _reduced(where, x, axes, attrs.get("keepdims", 1))


def _reduce_sum(where, shapes, consts, attrs):
    x = shapes[0]
    has_axes = len(shapes) > 1 and shapes[1] is not None
    axes = _axes_values(where, consts, 1, len(x)) if has_axes else None
    if not axes:
        axes = None
        if attrs.get("noop_with_empty_axes", 0):
            return x
    return _reduced(where, x, axes, attrs.get("keepdims", 1))


def _batchnorm(where, shapes, consts, attrs):
    x = shapes[0]
    if len(x) < 2:
        raise ValueError(f"{where}: input must be at least 2-D (N, C, ...), got {_fmt(x)}")
    for name, s in zip(("scale", "B", "input_mean", "input_var"), shapes[1:]):
        if tuple(s) != (x[1],):
            raise ValueError(f"{where}: {name!r} must have shape ({x[1]},) to match the input channels, got {_fmt(s)}")
    return x


def _gather(where, shapes, consts, attrs):
    data, indices = shapes
    r, axis = len(data), attrs.get("axis", 0)
    if r == 0:
        raise ValueError(f"{where}: 'data' must be at least 1-D, got a scalar")
    if not -r <= axis < r:
        raise ValueError(f"{where}: axis {axis} is outside [{-r}, {r - 1}] for data {_fmt(data)}")
    axis = axis + r if axis < 0 else axis
    return tuple(data[:axis]) + tuple(indices) + tuple(data[axis + 1:])


def _layer_norm(where, shapes, consts, attrs):
    x = shapes[0]
    r, axis = len(x), attrs.get("axis", -1)
    if not -r <= axis < r:
        raise ValueError(f"{where}: axis {axis} is outside [{-r}, {r - 1}] for input {_fmt(x)}")
    axis = axis + r if axis < 0 else axis
    for name, s in zip(("Scale", "B"), shapes[1:]):
        if s is not None and tuple(s) != tuple(x[axis:]):
            raise ValueError(f"{where}: {name!r} must have the shape of the normalised axes {_fmt(x[axis:])}, "
                             f"got {_fmt(s)}")
    return x
def _constant_input(where, consts, i, name, dtype):
    a = consts[i] if i < len(consts) else None
    if a is None:
        raise ValueError(f"{where}: the {name!r} input must be an initializer (a constant)")
    if a.dtype != dtype:
        raise ValueError(f"{where}: the {name!r} input must be {dtype}, got {a.dtype}")
    return a


def _conv_transpose(where, shapes, consts, attrs):
    x, w, b = _conv_operands(where, shapes)
    group = attrs.get("group", 1)
    if w[0] != x[1] or x[1] % group:
        raise ValueError(f"{where}: weight {_fmt(w)} must be ({x[1]}, M/group, kH, kW) for an input of "
                         f"{x[1]} channels and group={group}")
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != tuple(w[2:]):
        raise ValueError(f"{where}: kernel_shape {attrs['kernel_shape']} does not match weight shape {_fmt(w)}")
    m = w[1] * group
    if b is not None and tuple(b) != (m,):
        raise ValueError(f"{where}: bias must have shape ({m},), got {_fmt(b)}")
    out = convtranspose_output_size(x[2:], w[2:], attrs.get("strides") or (1, 1), attrs.get("dilations") or (1, 1),
                                    list(attrs.get("pads") or (0, 0, 0, 0)), attrs.get("output_padding") or (0, 0))
    if min(out) <= 0:
        raise ValueError(f"{where}: the output would be {out[0]}x{out[1]} (pads {attrs.get('pads')} too large)")
    return (x[0], m, *out)


def _resize(where, shapes, consts, attrs):
    x = shapes[0]
    for i, name in ((1, "roi"), (2, "scales")):
        if i < len(shapes) and shapes[i] is not None:
            _constant_input(where, consts, i, name, np.float32)
    sizes = _constant_input(where, consts, 3, "sizes", np.int64) if len(shapes) > 3 and shapes[3] is not None else None
    scales = consts[2] if len(consts) > 2 else None
    out = []
    try:
        target = resize_output_shape(tuple(1 if isinstance(d, str) else d for d in x), scales, sizes)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for d, t, i in zip(x, target, range(len(x))):
        if isinstance(d, str):
            if sizes is not None and np.size(sizes) or float(np.asarray(scales).reshape(-1)[i]) != 1.0:
                raise ValueError(f"{where}: the symbolic dimension {d} of input {_fmt(x)} can only keep its size")
            out.append(d)
        else:
            if t <= 0:
                raise ValueError(f"{where}: dimension {i} of {_fmt(x)} would resize to {t}")
            out.append(t)
    return tuple(out)


def _slice(where, shapes, consts, attrs):
    x = shapes[0]
    args = [_constant_input(where, consts, 1, "starts", np.int64), _constant_input(where, consts, 2, "ends", np.int64)]
    for i, name in ((3, "axes"), (4, "steps")):
        args.append(_constant_input(where, consts, i, name, np.int64) if len(shapes) > i and shapes[i] is not None
                    else None)
    try:
        index = slice_index(x, *args)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    out = tuple(d if isinstance(d, str) else len(range(*ix.indices(d))) for d, ix in zip(x, index))
    if any(d == 0 for d in out):
        raise ValueError(f"{where}: the slice of {_fmt(x)} is empty ({_fmt(out)})")
    return out


SHAPE_RULES = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": _same,
    "Clip": _clip,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_average_pool,
    "Add": _add,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Softmax": _softmax,
    "BatchNormalization": _batchnorm,
    "Gather": _gather,
    "LayerNormalization": _layer_norm,
    "Gelu": _same,
    "Mul": _broadcast_binary,
    "Sub": _broadcast_binary,
    "Div": _broadcast_binary,
    "Pow": _broadcast_binary,
    "Sqrt": _same,
    "Erf": _same,
    "Sigmoid": _same,
    "HardSigmoid": _same,
    "Transpose": _transpose,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "ReduceMean": _reduce_mean,
    "ReduceSum": _reduce_sum,
    "ConvTranspose": _conv_transpose,
    "Resize": _resize,
    "Slice": _slice,
}


def infer_node_shape(node: Node, shapes: list, consts: list) -> Shape:
    """The output shape of one node from its input shapes (None for absent inputs) and the
    values of its initializer inputs (None for the others)."""
    return tuple(SHAPE_RULES[node.op_type](str(node), list(shapes), list(consts), node.attributes))


def infer_shapes(graph: Graph) -> dict[str, Shape]:
    """Shape of every tensor of ``graph``: inputs, initializers and node outputs.

    Nodes are visited in :meth:`Graph.topological_order`; their op types and attributes are
    assumed checked (:func:`refquant.graph.validate_graph` does both, in that order).
    """
    shapes: dict[str, Shape] = {t.name: tuple(t.shape) for t in graph.inputs}
    shapes.update({name: tuple(a.shape) for name, a in graph.initializers.items()})
    for node in graph.topological_order():
        ins = [shapes[t] if t else None for t in node.inputs]
        consts = [graph.initializers.get(t) if t else None for t in node.inputs]
        shapes[node.outputs[0]] = infer_node_shape(node, ins, consts)
    return shapes
