"""The int32 bias rule (``refquant.executor.biasrule``, spec/numerics.md "The int32 bias rule").

A weight channel whose scale is so small that its int32 bias (plus the accumulator's headroom)
leaves int32 is widened and requantized after calibration; a genuinely overflowing layer still
raises :class:`AccumulatorOverflowError`.
"""

from __future__ import annotations

import numpy as np
import pytest

from refquant import quantize_model
from refquant.executor.biasrule import INT32_MAX, accumulator_headroom
from refquant.executor.program import quantize_bias
from refquant.graph import GraphBuilder
from refquant.kernels import AccumulatorOverflowError
from refquant.numerics import dequantize
from refquant.plan import Plan, TensorPlan


def dead_channel_conv():
    """A 3×3 conv with 4 output channels; channel 1 is "dead" (max |w| 3e-9, bias -1.19), as
    BatchNormalization folding leaves them (EfficientNet-Lite0's stem)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, size=(4, 3, 3, 3)).astype(np.float32)
    w[1] = rng.normal(0, 1e-9, size=(3, 3, 3)).astype(np.float32)
    bias = np.array([0.1, -1.19, 0.2, -0.05], np.float32)
    b = GraphBuilder("dead")
    x = b.input("x", ["N", 3, 8, 8])
    y = b.conv(x, w, bias, name="conv", pads=[1, 1, 1, 1])
    return b.build(y), rng.normal(size=(6, 3, 8, 8)).astype(np.float32)


def plan(weights="minmax", gran="per-channel", acts="static-minmax", bits=8):
    return Plan(TensorPlan(weights, bits, gran, True, True), TensorPlan(acts, bits, "per-tensor", False, False))


def test_without_the_rule_the_dead_channel_overflows():
    g, x = dead_channel_conv()
    qm = quantize_model(g, plan(), x, bias_rule="off")
    assert qm.layers["conv"].widening is None
    with pytest.raises(AccumulatorOverflowError, match="conv"):
        qm.run(x, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_the_rule_widens_only_the_dead_channel_and_the_layer_runs(backend):
    g, x = dead_channel_conv()
    before = quantize_model(g, plan(), x, bias_rule="off").layers["conv"].weight
    qm = quantize_model(g, plan(), x)
    layer = qm.layers["conv"]
    wd = layer.widening
    assert list(wd.channels) == [1]
    s_old, s_new = before.qparams.scale, layer.weight.qparams.scale
    assert s_new[1] > 1000 * s_old[1]
    np.testing.assert_array_equal(np.delete(s_new, 1), np.delete(s_old, 1))
    np.testing.assert_array_equal(np.delete(layer.weight.values, 1, 0), np.delete(before.values, 1, 0))
    assert not layer.weight.values[1].any()  # the dead channel's weights requantize to 0
    # the bias and every sum of products fit: |b_q| + K·Q_w·Q_x ≤ 2^31 - 1
    x_qp = qm.tensor_qparams["x"]
    b_q = quantize_bias(layer.bias, x_qp.scale, s_new)
    assert np.abs(b_q.astype(np.int64)).max() + accumulator_headroom(layer.weight.values, layer.weight.qparams,
                                                                     x_qp) <= INT32_MAX
    out = qm.run(x, backend=backend).outputs[g.outputs[0]]
    from refquant.executor import run_float
    ref = run_float(g, {"x": x})[g.outputs[0]]
    s_y = float(qm.layers["conv"].observed.scale)
    assert np.abs(out[:, 1] - ref[:, 1]).max() <= s_y  # the dead channel outputs its bias
    assert np.abs(out - ref).max() < 0.1


def test_per_tensor_and_codebook_weights_and_float_execution():
    g, x = dead_channel_conv()
    # per tensor: the tensor's one scale is the largest channel's, nothing to widen
    assert quantize_model(g, plan(gran="per-tensor"), x).layers["conv"].widening is None
    # a codebook (lloydmax): the dead channel's int8 levels are re-rounded, values stay codebook[idx]
    from refquant_lloydmax.strategy import indices_of
    layer = quantize_model(g, plan(weights="lloydmax", bits=4), x).layers["conv"]
    assert list(layer.widening.channels) == [1]
    cb = layer.weight.arrays["codebook_int8"]
    idx = indices_of(layer.weight).reshape(4, -1)
    np.testing.assert_array_equal(np.take_along_axis(cb, idx.astype(np.int64), 1),
                                  layer.weight.values.reshape(4, -1))
    # float-execution weights keep a float32 bias: the rule leaves them alone
    from refquant.strategies import QuantizedWeight
    from refquant_lloydmax.strategy import LloydMaxWeights
    qw = LloydMaxWeights(execution="float").quantize_weight(g.initializers[g.nodes[0].inputs[1]],
                                                            qm_spec := _spec())
    assert isinstance(qw, QuantizedWeight) and qw.execution == "float"
    from refquant.executor.biasrule import widen_for_bias
    x_qp = quantize_model(g, plan(), x).tensor_qparams["x"]
    assert widen_for_bias(qw, g.initializers[g.nodes[0].inputs[1]], g.initializers[g.nodes[0].inputs[2]],
                          x_qp, qm_spec.layer) == (qw, None)


def _spec():
    from refquant.strategies import LayerSpec
    return LayerSpec("conv", "Conv", 4, True, "per-channel", True)


def test_a_genuinely_overflowing_layer_still_raises():
    """K = 70 000 products of 127 · 255 exceed int32 whatever the scales: no weight scale can
    help, the rule leaves the layer alone and the kernel raises."""
    k = 70_000
    b = GraphBuilder("wide")
    x = b.input("x", ["N", k])
    y = b.gemm(x, np.full((2, k), 0.5, np.float32), np.array([0.0, 1.0], np.float32), transB=1, name="fc")
    g = b.build(y)
    calib = np.full((2, k), 4.0, np.float32)
    calib[1] = 0.0
    qm = quantize_model(g, plan(), calib)
    assert qm.layers["fc"].widening is None
    with pytest.raises(AccumulatorOverflowError, match="fc"):
        qm.run(np.full((1, k), 4.0, np.float32), backend="reference")


def test_unknown_bias_rule():
    g, x = dead_channel_conv()
    with pytest.raises(ValueError, match="bias_rule"):
        quantize_model(g, plan(), x, bias_rule="clamp")
