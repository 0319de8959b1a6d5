"""Mul/Sub/Div/Pow, Sqrt/Erf/Sigmoid/HardSigmoid, Transpose/Concat/Squeeze/Unsqueeze and
ReduceMean/ReduceSum against the onnx reference evaluator and onnxruntime; each shape rule
against the shape the operator computes; errors name the operator.

Exact operators (one IEEE operation or a pure move) must equal both oracles bit for bit; the
transcendental ones and the reductions are bounded in ulps of the float64 value, and their
distance to onnxruntime's float32 approximations is measured, not assumed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_oracle import requires_onnx, run_onnxruntime, run_reference

from refquant.graph import GraphBuilder, validate_graph
from refquant.ops import FLOAT_OPS

pytestmark = requires_onnx


def _ulps(ours: np.ndarray, other: np.ndarray) -> int:
    """The largest distance in float32 units in the last place (0 = bit-identical)."""
    a = np.asarray(ours, np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(other, np.float32).view(np.int32).astype(np.int64)
    a = np.where(a < 0, -(a & 0x7FFFFFFF), a)
    b = np.where(b < 0, -(b & 0x7FFFFFFF), b)
    return int(np.abs(a - b).max()) if a.size else 0


@st.composite
def broadcast_pairs(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    other = tuple(d if draw(st.booleans()) else 1 for d in shape[draw(st.integers(0, len(shape))):])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.normal(0, 3, shape).astype(np.float32)
    b = rng.normal(0, 3, other).astype(np.float32)
    return (a, b) if draw(st.booleans()) else (b, a)


def _shape_rule(op_type, inputs, attrs):
    """The output shape validate_graph infers for one node on these inputs (constants as initializers)."""
    b = GraphBuilder("one")
    names = [b.input(f"x{i}", list(a.shape)) if a.dtype == np.float32 and a.ndim else
             b.initializer(f"c{i}", a) for i, a in enumerate(inputs)]
    y = b.node(op_type, names, name="op", **attrs)
    return validate_graph(b.build(y))[y]


@settings(max_examples=40, deadline=None)
@given(broadcast_pairs(), st.sampled_from(["Mul", "Sub", "Div"]))
def test_mul_sub_div_are_exact(pair, op):
    a, b = pair
    ours = FLOAT_OPS[op](a, b)
    for oracle in (run_reference, run_onnxruntime):
        other = oracle(op, [a, b], {})
        assert ours.dtype == np.float32 and np.array_equal(ours, other, equal_nan=True), op
    assert _shape_rule(op, [a, b], {}) == ours.shape


@settings(max_examples=30, deadline=None)
@given(broadcast_pairs())
def test_pow_two_is_the_square_and_others_within_an_ulp(pair):
    a, _ = pair
    x = np.atleast_1d(np.abs(a) + np.float32(0.5))
    assert np.array_equal(FLOAT_OPS["Pow"](a, np.array(2, np.float32)), a * a)
    for e in (np.float32(0.5), np.float32(-1.5), np.float32(3.0)):
        y = np.array(e, np.float32)
        exact = np.power(x.astype(np.float64), np.float64(e)).astype(np.float32)
        assert _ulps(FLOAT_OPS["Pow"](x, y), exact) <= 1
        assert _ulps(FLOAT_OPS["Pow"](x, y), run_onnxruntime("Pow", [x, y], {})) <= 2


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0625, 1.0, width=32), st.floats(-1.0, 1.0, width=32))
def test_unary_operators(seed, alpha, beta):
    x = np.random.default_rng(seed).normal(0, 4, (3, 17)).astype(np.float32)
    x[0, :3] = [0.0, -0.0, 60.0]
    assert np.array_equal(FLOAT_OPS["Sqrt"](np.abs(x)), run_onnxruntime("Sqrt", [np.abs(x)], {}))
    assert np.array_equal(FLOAT_OPS["Sqrt"](np.abs(x)), run_reference("Sqrt", [np.abs(x)], {}))
    for op in ("Erf", "Sigmoid"):
        ours = FLOAT_OPS[op](x)
        want = run_reference(op, [x.astype(np.float64)], {}).astype(np.float32)  # float64, rounded once
        assert _ulps(ours, want) <= 1, op
        # onnxruntime's float32 approximations (MLAS) carry an absolute error of a few 1e-7
        assert np.abs(ours - run_onnxruntime(op, [x], {})).max() <= 2e-6, op
    attrs = {"alpha": float(alpha), "beta": float(beta)}
    ours = FLOAT_OPS["HardSigmoid"](x, **attrs)
    assert np.array_equal(ours, run_reference("HardSigmoid", [x], attrs))
    assert _ulps(ours, run_onnxruntime("HardSigmoid", [x], attrs)) <= 1


@st.composite
def layout_cases(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(0, 1, shape).astype(np.float32)
    perm = draw(st.permutations(range(rank)))
    axis = draw(st.integers(-rank, rank - 1))
    return x, list(perm), axis


@settings(max_examples=40, deadline=None)
@given(layout_cases())
def test_layout_operators_move_values_exactly(case):
    x, perm, axis = case
    cases = [("Transpose", [x], {"perm": perm}), ("Transpose", [x], {}),
             ("Concat", [x, x[::-1].copy(), x * 2], {"axis": axis}),
             ("Unsqueeze", [x, np.array([axis, 0], np.int64) if axis not in (0, -x.ndim - 2) else np.array([0], np.int64)], {}),
             ("Squeeze", [x.reshape(x.shape[:1] + (1,) + x.shape[1:]), np.array([1], np.int64)], {}),
             ("Squeeze", [x], {})]
    for op, inputs, attrs in cases:
        if op == "Unsqueeze" and len(set(a % (x.ndim + inputs[1].size) for a in inputs[1])) != inputs[1].size:
            continue
        ours = FLOAT_OPS[op](*inputs, **attrs)
        assert np.array_equal(ours, run_reference(op, inputs, attrs)), (op, attrs)
        assert np.array_equal(ours, run_onnxruntime(op, inputs, attrs)), (op, attrs)
        if op != "Squeeze" or len(inputs) > 1:
            assert _shape_rule(op, inputs, attrs) == ours.shape, op


@settings(max_examples=40, deadline=None)
@given(layout_cases(), st.booleans())
def test_reductions_round_the_float64_sum_once(case, keepdims):
    x, perm, axis = case
    axes = sorted({axis % x.ndim, perm[0]})
    for op, inputs, attrs in (("ReduceMean", [x], {"axes": axes, "keepdims": int(keepdims)}),
                              ("ReduceSum", [x, np.array(axes, np.int64)], {"keepdims": int(keepdims)})):
        ours = FLOAT_OPS[op](*inputs, **attrs)
        exact = run_reference(op, [x.astype(np.float64), *inputs[1:]], attrs)
        assert ours.dtype == np.float32 and ours.shape == exact.shape
        assert _ulps(ours, exact.astype(np.float32)) <= 1, op
        ort = run_onnxruntime(op, inputs, attrs)
        assert np.allclose(ours, ort, rtol=1e-5, atol=1e-6), op
        assert _shape_rule(op, inputs, attrs) == ours.shape, op
    assert FLOAT_OPS["ReduceSum"](x, None, noop_with_empty_axes=1) is x
    assert FLOAT_OPS["ReduceMean"](x).shape == (1,) * x.ndim


def test_errors_name_the_operator_and_what_was_expected():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Mul: shapes \(2, 3\) and \(4,\) do not broadcast"):
        FLOAT_OPS["Mul"](x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"Transpose: perm \[0, 0\] is not a permutation"):
        FLOAT_OPS["Transpose"](x, perm=[0, 0])
    with pytest.raises(ValueError, match=r"Concat: input 1 has shape \(2, 4\)"):
        FLOAT_OPS["Concat"](x, np.zeros((2, 4), np.float32), axis=0)
    with pytest.raises(ValueError, match=r"Squeeze: axis 1 of shape \(2, 3\) has size 3, not 1"):
        FLOAT_OPS["Squeeze"](x, np.array([1], np.int64))
    with pytest.raises(ValueError, match=r"ReduceMean: axes \[2\] has 2, outside \[-2, 1\]"):
        FLOAT_OPS["ReduceMean"](x, axes=[2])
    with pytest.raises(TypeError, match=r"Sigmoid: argument 'x' must be float32, got float64"):
        FLOAT_OPS["Sigmoid"](x.astype(np.float64))
    b = GraphBuilder("bad")
    h = b.input("x", ["N", 3])
    y = b.node("Unsqueeze", [h, b.input("axes", [1])], name="u")
    with pytest.raises(ValueError, match="u.*'axes' input must be an initializer"):
        validate_graph(b.build(y))
