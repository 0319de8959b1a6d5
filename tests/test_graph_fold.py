"""BatchNormalization folding: the folded graph computes the unfolded graph's function within
float32 rounding (bounds below), folds only what it may, and leaves its argument untouched.

Bounds, with u = 2**-24 and gamma_n = n*u/(1-n*u), against the exact value (float64):

* folded Conv: the folded weights w' and bias b' are rounded once to float32 (u each), then
  the Conv sums K = C/group*kH*kW products and adds the bias: ``gamma_(K+2) * M'`` with
  ``M' = conv(|x|, |w'|) + |b'|``;
* unfolded Conv -> BN: the Conv's error ``gamma_(K+1) * M`` scaled by ``|g| = |gamma|/sqrt(var+eps)``,
  plus the BN's own roundings ``8u * (|g*(y - mean)| + |beta|)``;
* Gemm likewise with K+3 (alpha and C).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx_oracle import requires_onnx, run_graph_onnxruntime, run_reference

from refquant.graph import GraphBuilder, fold_batchnorm, load_model, save_model, validate_graph
from refquant.ops import FLOAT_OPS

U = 2.0**-24
F32 = np.float32


def gamma(n):
    return n * U / (1 - n * U)


def run(graph, feeds):
    env = {**graph.initializers, **feeds}
    for node in graph.topological_order():
        env[node.outputs[0]] = FLOAT_OPS[node.op_type](*[env[t] if t else None for t in node.inputs], **node.attributes)
    return [env[t] for t in graph.outputs]


def bn_params(rng, c):
    scale = rng.uniform(-2, 2, c).astype(F32)
    bias, mean = rng.standard_normal(c).astype(F32), rng.standard_normal(c).astype(F32)
    var = rng.uniform(0.0, 3.0, c).astype(F32)
    return scale, bias, mean, var


def bn64(y, scale, bias, mean, var, eps, axis=1):
    shape = [1] * y.ndim
    shape[axis] = -1
    s, b, m, v = (p.astype(np.float64).reshape(shape) for p in (scale, bias, mean, var))
    g = s / np.sqrt(v + eps)
    return g * (y - m) + b, np.abs(g), np.abs(g * (y - m)) + np.abs(b)


def assert_within(ours, exact, bound, what):
    err = np.abs(ours.astype(np.float64) - exact)
    assert (err <= bound).all(), f"{what}: worst err/bound {(err / np.maximum(bound, 1e-300)).max():.3g}"


@st.composite
def conv_bn_cases(draw):
    group = draw(st.integers(1, 2))
    cin, cout = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    attrs = {"group": group, "pads": [draw(st.integers(0, k - 1))] * 4, "strides": [draw(st.integers(1, 2))] * 2}
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return cin, cout, k, attrs, draw(st.booleans()), eps, draw(st.integers(0, 2**32 - 1))


@requires_onnx
@given(conv_bn_cases())
def test_folded_conv_bn_equals_unfolded_within_rounding(case):
    cin, cout, k, attrs, has_bias, eps, seed = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // attrs["group"], k, k)).astype(F32)
    b = rng.standard_normal(cout).astype(F32) if has_bias else None
    params = bn_params(rng, cout)
    builder = GraphBuilder("conv_bn")
    x_name = builder.input("x", ["N", cin, 5, 5])
    y = builder.batch_normalization(builder.conv(x_name, w, b, name="conv", **attrs), *params, epsilon=eps)
    graph = builder.build(y)
    folded = fold_batchnorm(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv"]
    validate_graph(folded)

    x = rng.standard_normal((2, cin, 5, 5)).astype(F32)
    (unf,), (fold,) = run(graph, {"x": x}), run(folded, {"x": x})
    conv64 = run_reference("Conv", [a if a is None else a.astype(np.float64) for a in (x, w, b)], attrs)
    exact, g_abs, bn_terms = bn64(conv64, *params, float(F32(eps)))
    magnitude = run_reference("Conv", [np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)),
                                       None if b is None else np.abs(b.astype(np.float64))], attrs)
    unf_bound = g_abs * gamma(cin // attrs["group"] * k * k + 1) * magnitude + 8 * U * bn_terms
    w2, b2 = (folded.initializers[t].astype(np.float64) for t in folded.nodes[0].inputs[1:])
    fold_bound = gamma(cin // attrs["group"] * k * k + 2) * (
        run_reference("Conv", [np.abs(x.astype(np.float64)), np.abs(w2), np.abs(b2)], attrs))
    assert_within(fold, exact, fold_bound, "folded vs exact")
    assert_within(unf, exact, unf_bound, "unfolded vs exact")
    assert_within(fold, unf.astype(np.float64), fold_bound + unf_bound, "folded vs unfolded")


@st.composite
def gemm_bn_cases(draw):
    k, n = draw(st.integers(1, 30)), draw(st.integers(1, 6))
    attrs = {}
    if draw(st.booleans()):
        attrs["alpha"] = draw(st.sampled_from([0.5, -1.5]))
    if draw(st.booleans()):
        attrs["beta"] = draw(st.sampled_from([0.0, 2.0]))
    if draw(st.booleans()):
        attrs["transB"] = draw(st.integers(0, 1))
    c_shape = draw(st.sampled_from([None, (), (n,), (1, n)]))
    return k, n, attrs, c_shape, draw(st.sampled_from([1e-5, 0.1])), draw(st.integers(0, 2**32 - 1))


@given(gemm_bn_cases())
def test_folded_gemm_bn_equals_unfolded_within_rounding(case):
    k, n, attrs, c_shape, eps, seed = case
    rng = np.random.default_rng(seed)
    bmat = rng.standard_normal((n, k) if attrs.get("transB") else (k, n)).astype(F32)
    c = None if c_shape is None else np.asarray(rng.standard_normal(c_shape), dtype=F32)
    params = bn_params(rng, n)
    builder = GraphBuilder("gemm_bn")
    a_name = builder.input("a", ["N", k])
    graph = builder.build(builder.batch_normalization(builder.gemm(a_name, bmat, c, **attrs), *params, epsilon=eps))
    folded = fold_batchnorm(graph)
    assert [nd.op_type for nd in folded.nodes] == ["Gemm"] and folded.nodes[0].attributes["beta"] == 1.0

    a = rng.standard_normal((3, k)).astype(F32)
    (unf,), (fold,) = run(graph, {"a": a}), run(folded, {"a": a})
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    b64 = bmat.astype(np.float64).T if attrs.get("transB") else bmat.astype(np.float64)
    y64 = alpha * (a.astype(np.float64) @ b64) + (0.0 if c is None else beta * c.astype(np.float64))
    exact, g_abs, bn_terms = bn64(y64, *params, float(F32(eps)))
    mag = abs(alpha) * (np.abs(a.astype(np.float64)) @ np.abs(b64)) + (0.0 if c is None else abs(beta) * np.abs(c))
    unf_bound = g_abs * gamma(k + 3) * mag + 8 * U * bn_terms
    w2, c2 = (folded.initializers[t].astype(np.float64) for t in folded.nodes[0].inputs[1:])
    w2 = w2.T if attrs.get("transB") else w2
    fold_bound = gamma(k + 3) * (abs(alpha) * (np.abs(a.astype(np.float64)) @ np.abs(w2)) + np.abs(c2))
    assert_within(fold, exact, fold_bound, "folded vs exact")
    assert_within(unf, exact, unf_bound, "unfolded vs exact")


def _conv_bn_graph(extra=None):
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    x = b.input("x", ["N", 2, 4, 4])
    c = b.conv(x, rng.standard_normal((3, 2, 3, 3)).astype(F32), rng.standard_normal(3).astype(F32),
               pads=[1, 1, 1, 1], name="conv")
    y = b.relu(b.batch_normalization(c, *bn_params(rng, 3), name="bn"), name="relu")
    outs = [y]
    if extra:
        outs += extra(b, c)
    return b.build(outs)


def test_fold_keeps_names_drops_unused_weights_and_leaves_the_argument_alone():
    g = _conv_bn_graph()
    before = {k: v.copy() for k, v in g.initializers.items()}
    f = fold_batchnorm(g)
    assert [(n.name, n.op_type) for n in f.nodes] == [("conv", "Conv"), ("relu", "Relu")]
    assert f.node("conv").outputs == ["bn.out"] and f.node("conv").inputs == ["x", "conv.W", "conv.B"]
    assert set(f.initializers) == {"conv.W", "conv.B"}
    assert [n.op_type for n in g.nodes] == ["Conv", "BatchNormalization", "Relu"]
    assert all(np.array_equal(g.initializers[k], v) for k, v in before.items())
    again = fold_batchnorm(f)
    assert [n.name for n in again.nodes] == ["conv", "relu"]
    assert all(np.array_equal(again.initializers[k], f.initializers[k]) for k in f.initializers)


def test_fold_adds_a_bias_when_the_conv_has_none():
    rng = np.random.default_rng(1)
    b = GraphBuilder("g")
    y = b.batch_normalization(b.conv(b.input("x", ["N", 1, 3, 3]), rng.standard_normal((2, 1, 1, 1)).astype(F32),
                                     name="c"), *bn_params(rng, 2))
    f = fold_batchnorm(b.build(y))
    assert f.node("c").inputs == ["x", "c.W", "c.bias"]
    x = rng.standard_normal((1, 1, 3, 3)).astype(F32)
    np.testing.assert_allclose(run(f, {"x": x})[0], run(b.build(y), {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["conv output also read elsewhere", "conv output is a graph output",
                                  "bn after relu", "bn parameter is a graph input", "weight is a graph input"])
def test_bn_that_cannot_be_folded_stays(case):
    rng = np.random.default_rng(2)
    b = GraphBuilder("g")
    x = b.input("x", ["N", 2, 4, 4])
    w = b.input("w", [3, 2, 1, 1]) if case == "weight is a graph input" else rng.standard_normal((3, 2, 1, 1)).astype(F32)
    c = b.conv(x, w, name="conv")
    src = b.relu(c) if case == "bn after relu" else c
    params = list(bn_params(rng, 3))
    if case == "bn parameter is a graph input":
        params[0] = b.input("gamma", [3])
    y = b.batch_normalization(src, *params, name="bn")
    outs = [y]
    if case == "conv output also read elsewhere":
        outs.append(b.relu(c))
    if case == "conv output is a graph output":
        outs.append(c)
    g = b.build(outs)
    validate_graph(g)
    f = fold_batchnorm(g)
    assert "bn" in [n.name for n in f.nodes]
    feeds = {"x": rng.standard_normal((2, 2, 4, 4)).astype(F32)}
    feeds.update({t.name: rng.standard_normal(t.shape).astype(F32) for t in g.inputs if t.name in ("w", "gamma")})
    for ours, theirs in zip(run(f, feeds), run(g, feeds)):
        np.testing.assert_array_equal(ours, theirs)


def test_shared_weight_is_copied_not_overwritten():
    rng = np.random.default_rng(3)
    b = GraphBuilder("g")
    x = b.input("x", ["N", 2, 3, 3])
    w = b.initializer("shared.w", rng.standard_normal((2, 2, 1, 1)).astype(F32))
    y1 = b.batch_normalization(b.conv(x, w, name="c1"), *bn_params(rng, 2), name="bn1")
    y2 = b.batch_normalization(b.conv(x, w, name="c2"), *bn_params(rng, 2), name="bn2")
    g = b.build([y1, y2])
    f = fold_batchnorm(g)
    assert [n.op_type for n in f.nodes] == ["Conv", "Conv"]
    w1, w2 = f.node("c1").inputs[1], f.node("c2").inputs[1]
    assert len({w1, w2}) == 2
    xs = {"x": rng.standard_normal((2, 2, 3, 3)).astype(F32)}
    for ours, theirs in zip(run(f, xs), run(g, xs)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_load_model_folds_by_default(tmp_path):
    g = _conv_bn_graph()
    save_model(g, tmp_path / "m")
    assert [n.op_type for n in load_model(tmp_path / "m").nodes] == ["Conv", "Relu"]
    assert [n.op_type for n in load_model(tmp_path / "m", fold_bn=False).nodes] == ["Conv", "BatchNormalization", "Relu"]


@requires_onnx
def test_small_cnn_folded_and_unfolded_run_like_onnxruntime():
    rng = np.random.default_rng(4)
    w = lambda *s: (rng.standard_normal(s) * 0.5).astype(F32)  # noqa: E731
    b = GraphBuilder("cnn")
    h = b.input("x", ["N", 1, 8, 8])
    h = b.relu(b.batch_normalization(b.conv(h, w(8, 1, 3, 3), w(8), pads=[1, 1, 1, 1]), *bn_params(rng, 8)))
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[2, 2])
    h = b.batch_normalization(b.conv(h, w(16, 2, 3, 3), None, group=4, pads=[1, 1, 1, 1]), *bn_params(rng, 16))
    h = b.flatten(b.global_average_pool(b.clip(h, 0.0, 6.0)))
    h = b.batch_normalization(b.gemm(h, w(10, 16), w(10), transB=1), *bn_params(rng, 10))
    g = b.build(b.softmax(h))
    x = rng.standard_normal((600, 1, 8, 8)).astype(F32)
    (theirs,) = run_graph_onnxruntime(g, {"x": x})
    # wiring and folding check on a whole model; per-operator bounds are in test_ops_float
    for graph in (g, fold_batchnorm(g)):
        (ours,) = run(graph, {"x": x})
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
