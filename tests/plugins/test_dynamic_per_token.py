"""Per-token dynamic activations (``dynamic:8:per=token``): each row's qparams are onnxruntime's
DynamicQuantizeLinear of that row; a MatMul reading them equals the closed form
``float32(Σ (q − z_r)(w − z_w)) · float32(s_r · s_w)``; where the rule does not apply, one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refquant.executor import quantize_model
from refquant.executor.integer_ops import MatMulIntegers, QTensor
from refquant.executor.per_row import is_per_row, per_row_to_float
from refquant.graph import GraphBuilder
from refquant.kernels import fast, reference
from refquant.numerics import QParams, quantize
from refquant.strategies import LayerSpec
from refquant_dynamic import DynamicActivations
from refquant_dynamic.strategy import per_token_qparams

DYNAMIC = DynamicActivations()
TOKEN = LayerSpec("layer0_query", "MatMul", 8, False, "per-tensor", False, (("per", "token"),))

rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9)),
                  elements=st.floats(-1e4, 1e4, width=32).filter(lambda v: v == 0 or abs(v) > 1e-30))


@pytest.fixture(scope="module")
def ort_dql():
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from refquant.onnx_io.runtime import ort_session

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["k"])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, ["k"]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                               helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort_session(model)
    return lambda x: session.run(None, {"x": x})


@settings(max_examples=40, deadline=None)
@given(rows)
def test_each_row_is_onnxruntimes_dynamic_quantize_linear_of_that_row(ort_dql, y):
    qp = per_token_qparams(y, TOKEN)
    assert is_per_row(qp, y.shape) and qp.scale.shape == y.shape[:-1] + (1,)
    q = quantize(y, qp)
    for r, row in enumerate(y.reshape(-1, y.shape[-1])):
        ort_q, ort_s, ort_z = ort_dql(row)
        assert qp.scale.reshape(-1)[r] == ort_s and int(qp.zero_point.reshape(-1)[r]) == int(ort_z)
        assert np.array_equal(q.reshape(-1, y.shape[-1])[r], ort_q)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.integers(1, 7), st.integers(1, 9), st.integers(1, 6), st.booleans())
def test_a_per_row_matmul_is_the_closed_form_on_both_backends(data, r, k, c, with_bias):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    q = rng.integers(0, 256, size=(r, k)).astype(np.uint8)
    s_r = rng.uniform(1e-3, 1, size=r).astype(np.float32)
    z_r = rng.integers(0, 256, size=r)
    qp = QParams(s_r.reshape(r, 1), z_r.reshape(r, 1), "uint8", axis=1, block_size=k)
    w = rng.integers(-127, 128, size=(c, k)).astype(np.int8)
    w_qp = QParams(rng.uniform(1e-3, 1, size=c).astype(np.float32), np.zeros(c, np.int32), "int8", axis=0)
    bias = rng.normal(size=c).astype(np.float32) if with_bias else None
    scale = (s_r[:, None] * w_qp.scale[None, :]).astype(np.float32)
    acc = (q.astype(np.int64) - z_r[:, None]) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.rint(bias[None, :] / scale).astype(np.int64)
    want = acc.astype(np.float32) * scale
    for kernels in (reference, fast):
        y, got_acc = per_row_to_float(kernels, q, qp, w, w_qp, bias, "fc")
        assert np.array_equal(got_acc, acc) and y.tobytes() == want.tobytes()


def test_activation_times_activation_keeps_a_per_row_a_and_requantizes_a_per_row_b():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    b = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    qa, qb = per_token_qparams(a, TOKEN), per_token_qparams(b, TOKEN)
    ta, tb = QTensor(quantize(a, qa), qa), QTensor(quantize(b, qb), qb)
    rule = MatMulIntegers()
    assert rule.supports("MatMul", [qa, qb])
    y = rule.compute("MatMul", [ta, tb], {}, name="scores")
    from refquant.executor.integer_ops import per_tensor

    pb = per_tensor(tb, "scores")
    acc = (ta.q.astype(np.int64) - qa.zero_point) @ (pb.q.astype(np.int64) - np.int64(pb.qp.zero_point))
    want = acc.astype(np.float32) * (qa.scale * np.float32(pb.qp.scale)).astype(np.float32)
    assert y.tobytes() == want.tobytes()
    assert np.abs(y - a @ b).max() < 0.1  # and it is the product


def _two_layer_transformer():
    rng = np.random.default_rng(0)
    b = GraphBuilder("block")
    x = b.input("x", ["N", "S", 8])
    h = b.node("LayerNormalization", [x, np.ones(8, np.float32), np.zeros(8, np.float32)], "norm", axis=-1)
    f = b.add(b.matmul(h, rng.normal(size=(8, 16)).astype(np.float32), name="up"),
              rng.normal(size=16).astype(np.float32), name="up_bias")
    f = b.node("Gelu", [f], "gelu")
    y = b.add(b.matmul(f, rng.normal(size=(16, 8)).astype(np.float32), name="down"), x, name="residual")
    return b.build(outputs=[y]), rng.normal(size=(2, 5, 8)).astype(np.float32) * 3


def test_the_executor_runs_per_token_layers_by_the_closed_form():
    graph, x = _two_layer_transformer()
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=dynamic:8:per=token", x)
    r = qm.run(x, keep=True, backend="numba")
    rec = {rec.name: rec for rec in r.records}
    up, norm = rec["up"], rec["norm"]
    assert up.kernel == "unfused → float" and is_per_row(norm.output_qparams, norm.q_output.shape)
    w = qm.layers["up"].weight
    q = norm.q_output.reshape(-1, 8)
    acc = (q.astype(np.int64) - norm.output_qparams.zero_point.reshape(-1, 1)) @ \
        (w.values.astype(np.int64) - w.qparams.zero_point.reshape(-1, 1)).T
    scale = (norm.output_qparams.scale.reshape(-1, 1) * w.qparams.scale.reshape(1, -1)).astype(np.float32)
    assert up.float_output.reshape(-1, 16).tobytes() == (acc.astype(np.float32) * scale).tobytes()
    per_tensor = qm.run(x, backend="numba").outputs  # reference and numba agree bit for bit
    assert all(np.array_equal(per_tensor[k], qm.run(x).outputs[k]) for k in per_tensor)


def test_per_token_errors_name_the_layer_and_the_rule():
    with pytest.raises(ValueError, match=r"layer 'fc': dynamic option per='row'; expected one of tensor, token"):
        DYNAMIC.qparams_for_float(np.ones((2, 3), np.float32), LayerSpec("fc", "Gemm", 8, False, "per-tensor", False,
                                                                        (("per", "row"),)), None)
    with pytest.raises(ValueError, match="per=token needs rows"):
        per_token_qparams(np.ones(3, np.float32), TOKEN)
    with pytest.raises(ValueError, match="layer 'fc': dynamic activations per=token apply to tensors quantized from"):
        DYNAMIC.qparams_after(np.ones((2, 3), np.int32), np.float32(1),
                              LayerSpec("fc", "Gemm", 8, False, "per-tensor", False, (("per", "token"),)))
    graph, x = _two_layer_transformer()
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=dynamic:8:per=token", x)
    pytest.importorskip("onnx")
    from refquant.onnx_io import export_qoperator

    with pytest.raises(ValueError, match="norm|dynamic"):
        export_qoperator(qm)
