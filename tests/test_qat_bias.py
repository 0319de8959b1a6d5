"""QAT trains what will run: the bias is fake-quantized as the integer executor rounds it
(issue #15 item 7; measurement in spec/training.md, bench/qat_bias_gap.py)."""

from __future__ import annotations

import numpy as np
from tests_support import small_cnn

from refquant.executor.program import quantize_bias
from refquant.graph import GraphBuilder
from refquant.train import FakeQuant
from refquant.train.autodiff import backward, forward
from refquant.train.fakequant import fake_quantize_bias


def _fq_forward(graph, x, plan="weights=minmax:2:per-channel activations=ema-minmax:2", bias=True):
    fq = FakeQuant(graph, plan)
    fq.fake_quant_bias = bias
    forward(graph, dict(graph.initializers), {"x": x}, training=True, fake_quant=fq)  # states
    return fq, forward(graph, dict(graph.initializers), {"x": x}, training=False, fake_quant=fq)


def test_the_forward_adds_the_executors_int32_bias():
    graph, x = small_cnn(n=8)
    fq, tape = _fq_forward(graph, x)
    # conv1 reads the graph input; fc reads Flatten(GlobalAveragePool) — the pool's qparams carried
    gap = next(n for n in graph.nodes if n.op_type == "GlobalAveragePool").outputs[0]
    for layer, x_point in (("conv1", "x"), ("fc", gap)):
        b = graph.initializers[next(n for n in graph.nodes if n.name == layer).inputs[2]]
        x_qp, w_qp = fq.activations[x_point].qparams, fq.weights[layer].qparams
        s = (np.float32(x_qp.scale) * np.asarray(w_qp.scale, np.float32)).astype(np.float32)
        expected = quantize_bias(b, x_qp.scale, w_qp.scale).astype(np.float32) * s
        used = tape.args[layer][2]
        assert np.array_equal(used, expected), layer
        assert not np.array_equal(used, b), layer  # at 2 bits the rounding is visible
    _, float_tape = _fq_forward(graph, x, bias=False)
    assert np.array_equal(float_tape.args["conv1"][2], graph.initializers[
        next(n for n in graph.nodes if n.name == "conv1").inputs[2]])


def test_bias_gradient_is_straight_through():
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    bias = rng.normal(0, 0.3, 4).astype(np.float32)
    y = b.gemm(b.input("x", ["N", 3]), rng.standard_normal((4, 3)).astype(np.float32), bias, transB=1, name="fc")
    g = b.build(y)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    fq, tape = _fq_forward(g, x)
    assert not np.array_equal(tape.args["fc"][2], bias)
    dy = rng.standard_normal(tape.values[y].shape).astype(np.float32)
    dy = np.where(tape.masks[y], dy, 0)
    grads = backward(g, tape, {y: dy})
    bias_name = g.nodes[0].inputs[2]
    assert np.allclose(grads[bias_name], dy.sum(axis=0), atol=1e-6)


def test_fake_quantize_bias_matches_the_executor_per_tensor_and_per_channel():
    rng = np.random.default_rng(1)
    from refquant.numerics import qparams_from_range
    b = rng.normal(0, 1, 6).astype(np.float32)
    x_qp = qparams_from_range(0.0, 3.0, "uint2")
    for w_qp in (qparams_from_range(-1.0, 1.0, "int2", symmetric=True),
                 qparams_from_range(-rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6), "int2", symmetric=True, axis=0)):
        s = (np.float32(x_qp.scale) * np.asarray(w_qp.scale, np.float32)).astype(np.float32)
        assert np.array_equal(fake_quantize_bias(b, x_qp, w_qp), quantize_bias(b, x_qp.scale, w_qp.scale) * s)


def test_statqat_quantizers_get_the_same_bias_rule():
    """Any QAT quantizer that computes with fake_quantize (StatQAT's on integer grids) gets it."""
    graph, x = small_cnn(n=8)
    fq, tape = _fq_forward(graph, x, "weights=statqat-analytic:2:per-channel activations=statqat-iterative:2")
    b = graph.initializers[next(n for n in graph.nodes if n.name == "conv1").inputs[2]]
    x_qp, w_qp = fq.activations["x"].qparams, fq.weights["conv1"].qparams
    assert x_qp is not None and w_qp is not None
    assert np.array_equal(tape.args["conv1"][2], fake_quantize_bias(b, x_qp, w_qp))
