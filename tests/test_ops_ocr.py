"""Resize (nearest), Slice and ConvTranspose against the onnx reference evaluator and
onnxruntime; each shape rule against the shape the operator computes; bad input named.

Resize and Slice move values (exact: bit-identical to both oracles); ConvTranspose sums
products in float64 and rounds once, so it is within a float32 rounding of the reference
evaluator's float32 result, measured in units of the sum of |products|."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from onnx_oracle import requires_onnx, run_onnxruntime, run_reference

from refquant.graph import GraphBuilder, validate_graph
from refquant.ops import FLOAT_OPS

pytestmark = requires_onnx


def _shape_rule(op_type, x, consts, attrs):
    """validate_graph's output shape for one node: ``x`` a graph input, ``consts`` initializers (None: absent)."""
    b = GraphBuilder("one")
    names = [b.input("x", list(x.shape))]
    for i, c in enumerate(consts):
        names.append("" if c is None else b.initializer(f"c{i}", c))
    while names[-1] == "":
        names.pop()
    y = b.node(op_type, names, name="op", **attrs)
    return validate_graph(b.build(y))[y]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=4, max_size=4), st.sampled_from([1.0, 2.0, 3.0, 0.5, 1.5, 0.75]),
       st.sampled_from([1.0, 2.0, 0.5, 2.5]),
       st.sampled_from(["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]),
       st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]), st.booleans())
def test_resize_nearest_equals_both_oracles(shape, sh, sw, ctm, nearest, by_sizes):
    x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    scales = np.array([1, 1, sh, sw], np.float32)
    sizes = np.array([shape[0], shape[1], max(1, int(shape[2] * sh)), max(1, int(shape[3] * sw))], np.int64)
    if not by_sizes and min(int(shape[2] * sh), int(shape[3] * sw)) == 0:
        return
    roi = np.zeros(0, np.float32)
    inputs = [x, roi, None, sizes] if by_sizes else [x, roi, scales]
    attrs = {"mode": "nearest", "coordinate_transformation_mode": ctm, "nearest_mode": nearest}
    ours = FLOAT_OPS["Resize"](*inputs, **attrs)
    assert np.array_equal(ours, run_reference("Resize", inputs, attrs))
    # onnxruntime reads L_out in align_corners / pytorch_half_pixel as the rounded output length,
    # the reference evaluator as L·scale: they differ when L·scale is not a whole number
    whole = by_sizes or all(float(n * s).is_integer() for n, s in zip(shape[2:], (sh, sw)))
    if whole or ctm not in ("align_corners", "pytorch_half_pixel"):
        assert np.array_equal(ours, run_onnxruntime("Resize", inputs, attrs))
    assert _shape_rule("Resize", x, inputs[1:], attrs) == ours.shape


def test_resize_as_the_detector_uses_it():
    """PP-OCRv4's detector: scales (1, 1, 2, 2), asymmetric, floor — every pixel repeated 2x2."""
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    y = FLOAT_OPS["Resize"](x, np.zeros(0, np.float32), np.array([1, 1, 2, 2], np.float32), **attrs)
    assert np.array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


def test_resize_refuses_what_it_does_not_implement():
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="mode 'linear'"):
        FLOAT_OPS["Resize"](x, None, np.array([1, 1, 2, 2], np.float32), mode="linear")
    with pytest.raises(ValueError, match="tf_crop_and_resize"):
        FLOAT_OPS["Resize"](x, None, np.array([1, 1, 2, 2], np.float32),
                            coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(ValueError, match="scales"):
        FLOAT_OPS["Resize"](x, None, np.array([1, 2], np.float32))
    with pytest.raises(ValueError, match="node 'op'.*mode"):
        _shape_rule("Resize", x, [None, np.array([1, 1, 2, 2], np.float32)], {"mode": "cubic"})


@st.composite
def slices(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    axes = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                         unique_by=lambda a: a % len(shape)))
    starts = [draw(st.integers(-8, 8)) for _ in axes]
    ends = [draw(st.sampled_from([-8, -3, -1, 0, 2, 5, 8, 2**63 - 1, -(2**63)])) for _ in axes]
    steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in axes]
    return shape, starts, ends, axes, steps


@settings(max_examples=60, deadline=None)
@given(slices(), st.booleans())
@example(case=((1, 1, 1, 1), [0, -2, 0, 0], [-8, -8, -8, 2**63 - 1], [0, 1, 2, 3], [1, -1, 1, -1]), with_optional=True)
def test_slice_equals_both_oracles(case, with_optional):
    shape, starts, ends, axes, steps = case
    x = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    args = [np.array(v, np.int64) for v in (starts, ends, axes, steps)]
    if not with_optional:
        args = args[:2]
        if len(starts) < len(shape):
            return
    ours = FLOAT_OPS["Slice"](x, *args)
    ref, ort = run_reference("Slice", [x, *args], {}), run_onnxruntime("Slice", [x, *args], {})
    # where an oracle leaves the ONNX rule: the reference evaluator slices with NumPy, which clamps an
    # out-of-range negative start differently under a negative step; onnxruntime 1.32 keeps one element
    # for end = INT_MAX under a negative step (the rule clamps end to L - 1: nothing is left). Both
    # can happen in one case (the @example), and then neither oracle is the rule.
    lengths = [shape[a] for a in axes]
    if all(-n <= s0 < n for s0, n in zip(starts, lengths)) or not with_optional:
        assert ref.shape == ours.shape and np.array_equal(ours, ref)
    if not any(e == 2**63 - 1 and st < 0 for e, st in zip(ends, steps)) or not with_optional:
        assert ort.shape == ours.shape and np.array_equal(ours, ort)
    if ours.size:
        assert _shape_rule("Slice", x, args, {}) == ours.shape
    else:
        with pytest.raises(ValueError, match="empty"):
            _shape_rule("Slice", x, args, {})


def test_slice_follows_the_onnx_rule_where_both_oracles_leave_it():
    """Start −2 under step −1 on a length-1 axis clamps to 0 and keeps one element (the reference
    evaluator keeps none); end INT_MAX under step −1 clamps to L − 1 and keeps none
    (onnxruntime 1.32 keeps one)."""
    x = np.zeros((2, 1, 3, 1), np.float32)
    args = [np.array(v, np.int64) for v in ([0, -2, 0, 0], [2, -8, 3, 2**63 - 1], [0, 1, 2, 3], [1, -1, 1, -1])]
    assert FLOAT_OPS["Slice"](x, *args).shape == (2, 1, 3, 0)


def test_slice_errors_name_the_problem():
    x = np.zeros((2, 3), np.float32)
    one = np.array([0], np.int64)
    with pytest.raises(ValueError, match="step of 0"):
        FLOAT_OPS["Slice"](x, one, one + 1, one, np.array([0], np.int64))
    with pytest.raises(ValueError, match="listed twice"):
        FLOAT_OPS["Slice"](x, np.array([0, 0]), np.array([1, 1]), np.array([1, -1]))
    b = GraphBuilder("one")
    y = b.node("Slice", [b.input("x", [2, 3]), b.input("s", [1]), b.initializer("e", one)], name="op")
    with pytest.raises(ValueError, match="'starts' input must be"):
        validate_graph(b.build(y))


@st.composite
def conv_transposes(draw):
    group = draw(st.sampled_from([1, 2]))
    c = group * draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = [draw(st.integers(0, 1)) for _ in range(4)]
    op = [draw(st.integers(0, s[i] - 1)) if s[i] > 1 and d[i] == 1 else 0 for i in range(2)]
    hw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(draw(st.integers(1, 2)), c, *hw)).astype(np.float32)
    w = rng.normal(size=(c, mg, *k)).astype(np.float32)
    b = rng.normal(size=(mg * group,)).astype(np.float32) if draw(st.booleans()) else None
    attrs = {"group": group, "strides": list(s), "dilations": list(d), "pads": pads, "output_padding": op,
             "kernel_shape": list(k)}
    return x, w, b, attrs


@settings(max_examples=40, deadline=None)
@given(conv_transposes())
def test_conv_transpose_within_one_rounding_of_both_oracles(case):
    x, w, b, attrs = case
    from refquant.ops.convtranspose import convtranspose_output_size

    out = convtranspose_output_size(x.shape[2:], w.shape[2:], attrs["strides"], attrs["dilations"], attrs["pads"],
                                    attrs["output_padding"])
    if min(out) <= 0:
        with pytest.raises(ValueError, match="pads"):
            FLOAT_OPS["ConvTranspose"](x, w, b, **attrs)
        return
    ours = FLOAT_OPS["ConvTranspose"](x, w, b, **attrs)
    exact, scale = _conv_transpose_float64(x, w, b, attrs), _conv_transpose_float64(np.abs(x), np.abs(w),
                                                                                   None if b is None else np.abs(b), attrs)
    assert ours.dtype == np.float32 and ours.shape == exact.shape
    # one float32 rounding of a float64 sum: within half an ulp plus the float64 sums' error
    assert (np.abs(ours - exact) <= 2.0**-24 * np.abs(exact) + 2.0**-50 * scale).all()
    if attrs["group"] == 1:  # the reference evaluator (onnx 1.23) cannot reshape grouped weights
        ref = run_reference("ConvTranspose", [x.astype(np.float64), w.astype(np.float64),
                                              None if b is None else b.astype(np.float64)], attrs)
        assert np.abs(ref - exact).max(initial=0) <= 2.0**-50 * scale.max(initial=0)
    ort = run_onnxruntime("ConvTranspose", [x, w, b], attrs)
    assert np.abs(ours - ort).max(initial=0) <= 2.0**-20 * scale.max(initial=0)
    consts = [w, b]
    assert _shape_rule_conv_transpose(x, consts, attrs) == ours.shape


def _conv_transpose_float64(x, w, b, attrs):
    """The definition, element by element in float64: every input pixel scattered through the kernel."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    mg, (kh, kw), g = w.shape[1], w.shape[2:], attrs["group"]
    (sh, sw), (dh, dw), p, op = attrs["strides"], attrs["dilations"], attrs["pads"], attrs["output_padding"]
    full = np.zeros((n, mg * g, sh * (h - 1) + op[0] + (kh - 1) * dh + 1, sw * (wd - 1) + op[1] + (kw - 1) * dw + 1))
    for ci in range(c):
        gi = ci // (c // g)
        for i in range(kh):
            for j in range(kw):
                for m in range(mg):
                    full[:, gi * mg + m, i * dh: i * dh + sh * (h - 1) + 1: sh,
                         j * dw: j * dw + sw * (wd - 1) + 1: sw] += x[:, ci] * w[ci, m, i, j]
    y = full[:, :, p[0]: full.shape[2] - p[2], p[1]: full.shape[3] - p[3]]
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def _shape_rule_conv_transpose(x, consts, attrs):
    return _shape_rule("ConvTranspose", x, consts, attrs)


def test_conv_transpose_refuses_what_it_does_not_implement():
    x, w = np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="explicit pads"):
        FLOAT_OPS["ConvTranspose"](x, w, auto_pad="SAME_UPPER")
    with pytest.raises(ValueError, match=r"\(2, M/group, kH, kW\)"):
        FLOAT_OPS["ConvTranspose"](x, np.zeros((3, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="node 'op'.*output_shape"):
        _shape_rule("ConvTranspose", x, [w], {"output_shape": [6, 6]})
