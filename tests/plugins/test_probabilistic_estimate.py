"""The compiled estimate (:mod:`refquant_probabilistic.estimate`) gives the reference's qparams bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refquant.graph import Node
from refquant.numerics import qparams_from_range, quantize
from refquant.strategies import LayerContext, LayerSpec, QuantizedWeight
from refquant_probabilistic import ProbabilisticActivations
from refquant_probabilistic.estimate import estimated_qparams

PROB = ProbabilisticActivations()


@st.composite
def layers(draw):
    """A random Conv or Gemm layer, its prepared context, spec and a quantized input batch."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    conv = draw(st.booleans())
    group = draw(st.sampled_from([1, 2, 3])) if conv else 1
    c_in, c_out = group * draw(st.integers(1, 4)), group * draw(st.integers(1, 4))
    n = draw(st.integers(1, 4))
    if conv:
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        attrs = {"pads": [draw(st.integers(0, 2)) for _ in range(4)], "strides": [draw(st.integers(1, 2))] * 2,
                 "dilations": [draw(st.integers(1, 2))] * 2, "group": group}
        span_h, span_w = (kh - 1) * attrs["dilations"][0] + 1, (kw - 1) * attrs["dilations"][1] + 1
        h, w = draw(st.integers(span_h, 9)), draw(st.integers(span_w, 9))
        w_shape, x_shape, op = (c_out, c_in // group, kh, kw), (n, c_in, h, w), "Conv"
    else:
        attrs, k = {}, draw(st.integers(1, 40))
        w_shape, x_shape, op = (c_out, k), (n, k), "Gemm"
    weights = rng.normal(draw(st.floats(-0.2, 0.2)), 0.3, w_shape).astype(np.float32)
    bits, signed, symmetric = draw(st.integers(2, 8)), draw(st.booleans()), draw(st.booleans())
    per_channel = draw(st.booleans())
    wqp = qparams_from_range(-np.abs(weights).max(), np.abs(weights).max(), "int8", symmetric=True, name="w")
    bias = None if draw(st.booleans()) else rng.normal(0, 0.3, c_out).astype(np.float32)
    node = Node("layer", op, ["x", "w", "b"], ["y"], attrs)
    ctx = LayerContext(node, QuantizedWeight(quantize(weights, wqp), wqp), bias, dict(attrs),
                       draw(st.sampled_from([None, "relu", "relu6"])))
    spec = LayerSpec("layer", op, bits, signed, "per-channel" if per_channel else "per-tensor", symmetric,
                     (("gamma", draw(st.integers(1, 4))),
                      ("weight_model", draw(st.sampled_from(["per-channel", "per-tensor"])))))
    PROB.prepare(ctx, spec)
    rows = c_out if per_channel else 1
    ctx.state["alpha"] = rng.uniform(-1, 6, rows)
    ctx.state["beta"] = rng.uniform(-1, 6, rows)
    x = rng.normal(draw(st.floats(-1, 1)), draw(st.floats(0.01, 3)), x_shape).astype(np.float32)
    xqp = qparams_from_range(x.min(), x.max(), draw(st.sampled_from(["uint8", "int8"])), name="x")
    return ctx, spec, quantize(x, xqp), xqp


@given(layers())
def test_compiled_estimate_equals_the_reference_bit_for_bit(layer):
    ctx, spec, xq, xqp = layer
    fast = estimated_qparams(xq, xqp, ctx, spec)
    assert fast is not None  # the compiled path decided: nothing here needs the reference
    ref = PROB.qparams_before_reference(xq, xqp, ctx, spec)
    assert fast.scale.dtype == np.float32 and fast.zero_point.dtype == np.int32
    assert fast.scale.shape == ref.scale.shape and fast.axis == ref.axis and fast.fmt == ref.fmt
    np.testing.assert_array_equal(fast.scale.view(np.uint32), ref.scale.view(np.uint32))
    np.testing.assert_array_equal(fast.zero_point, ref.zero_point)
    assert PROB.qparams_before(xq, xqp, ctx, spec) == ref


def test_a_non_finite_width_is_left_to_the_reference_and_its_error():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (3, 5)).astype(np.float32)
    wqp = qparams_from_range(-1.0, 1.0, "int8", symmetric=True, name="w")
    ctx = LayerContext(Node("fc", "Gemm", ["x", "w"], ["y"], {}), QuantizedWeight(quantize(w, wqp), wqp), None, {},
                       None)
    spec = LayerSpec("fc", "Gemm", 8, False, "per-tensor", False)
    PROB.prepare(ctx, spec)
    xqp = qparams_from_range(-1.0, 1.0, "uint8", name="x")
    xq = quantize(rng.normal(0, 0.5, (2, 5)).astype(np.float32), xqp)
    ctx.state["beta"] = np.array([np.nan])
    assert estimated_qparams(xq, xqp, ctx, spec) is None
    with pytest.raises(ValueError, match="fc.*finite"):
        PROB.qparams_before(xq, xqp, ctx, spec)


def test_widths_edited_after_the_first_call_are_seen():
    """The plan caches only shapes and constants; widths and statistics are read at every call."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    wqp = qparams_from_range(-1.0, 1.0, "int8", symmetric=True, name="w")
    attrs = {"pads": [1, 1, 1, 1]}
    ctx = LayerContext(Node("conv", "Conv", ["x", "w"], ["y"], attrs), QuantizedWeight(quantize(w, wqp), wqp),
                       rng.normal(0, 0.2, 4).astype(np.float32), dict(attrs), None)
    spec = LayerSpec("conv", "Conv", 8, False, "per-channel", False)
    PROB.prepare(ctx, spec)
    xqp = qparams_from_range(-1.0, 2.0, "uint8", name="x")
    xq = quantize(rng.normal(0, 0.7, (3, 3, 6, 6)).astype(np.float32), xqp)
    first = PROB.qparams_before(xq, xqp, ctx, spec)
    ctx.state["alpha"][:] = 0.5  # in place
    ctx.state["beta"] = np.full(4, 7.0)  # replaced
    second = PROB.qparams_before(xq, xqp, ctx, spec)
    assert second == PROB.qparams_before_reference(xq, xqp, ctx, spec) and not second == first
    ctx.weight = QuantizedWeight(quantize(2 * w, wqp), wqp)  # a new weight: prepare again
    PROB.prepare(ctx, spec)
    assert PROB.qparams_before(xq, xqp, ctx, spec) == PROB.qparams_before_reference(xq, xqp, ctx, spec)


def test_a_layer_the_compiled_path_declines_goes_to_the_reference_at_every_call():
    """An unknown fused activation: no plan; each call runs the reference, which names it."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.3, (3, 5)).astype(np.float32)
    wqp = qparams_from_range(-1.0, 1.0, "int8", symmetric=True, name="w")
    ctx = LayerContext(Node("fc", "Gemm", ["x", "w"], ["y"], {}), QuantizedWeight(quantize(w, wqp), wqp), None, {},
                       "gelu")
    spec = LayerSpec("fc", "Gemm", 8, False, "per-tensor", False)
    PROB.prepare(ctx, spec)
    xqp = qparams_from_range(-1.0, 1.0, "uint8", name="x")
    xq = quantize(rng.normal(0, 0.5, (2, 5)).astype(np.float32), xqp)
    for _ in range(2):
        assert estimated_qparams(xq, xqp, ctx, spec) is None
        with pytest.raises(ValueError, match="'fc'.*gelu"):
            PROB.qparams_before(xq, xqp, ctx, spec)
