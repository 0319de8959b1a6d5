"""Random small QDQ graphs built with ``onnx.helper``, imported under both semantics and compared
bit for bit with onnxruntime: ``integer`` against onnxruntime with every optimization on (and
``session.qdqisint8allowed=1``, so int8 activations stay int8), ``qdq-float`` against onnxruntime
with optimizations off. Each graph ends in a QuantizeLinear, so the compared output is integer.

Activations × weights are s8s8 or u8u8 — the pairs onnxruntime multiplies exactly on this host
(``exact_integer_products``). Concat joins the chain's tensor with a constant, or with itself
through a second DQ, along the channels; its output qparams are sometimes the input's (the
copy path of onnxruntime's ``QLinearConcat``), else new (the lookup-table path)."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refquant.onnx_io import exact_integer_products  # noqa: E402
from refquant.onnx_io.qimport import import_quantized  # noqa: E402

SPATIAL = ("Conv", "AddConst", "MaxPool", "AveragePool", "Concat")
FLAT = ("MatMul", "Gemm", "AddConst", "Concat")


class _Builder:
    def __init__(self, rng, act):
        self.rng, self.act = rng, act
        self.dt = np.int8 if act == "s8s8" else np.uint8
        self.tp = TensorProto.INT8 if act == "s8s8" else TensorProto.UINT8
        self.nodes, self.inits, self.k = [], [], 0

    def name(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def const(self, p, value):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def qparams(self, scale):
        lo, hi = np.iinfo(self.dt).min, np.iinfo(self.dt).max
        zp = self.rng.integers(lo // 4 + (hi + 1) // 4 if self.dt == np.uint8 else -20,
                               3 * (hi + 1) // 4 if self.dt == np.uint8 else 21)
        return self.const("s", np.float32(scale)), self.const("z", np.array(zp, self.dt))

    def q(self, x, scale):
        s, z = self.qparams(scale)
        y = self.name("q")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [y], name=self.name("Q")))
        return y, (s, z, scale)

    def dq(self, t, qp):
        y = self.name("dq")
        self.nodes.append(helper.make_node("DequantizeLinear", [t, qp[0], qp[1]], [y], name=self.name("DQ")))
        return y

    def weight(self, shape, axis, per_channel):
        """Integer weight and its DQ: int8 symmetric (zero point 0) for s8s8, uint8 with one zero
        point (128) for u8u8 — onnxruntime's QLinearConv takes one weight zero point value."""
        n = shape[axis]
        ws = (self.rng.uniform(0.005, 0.05, n if per_channel else 1)).astype(np.float32)
        if self.dt == np.int8:
            w = self.rng.integers(-127, 128, shape).astype(np.int8)
            wz = np.zeros(ws.shape, np.int8)
        else:
            w = self.rng.integers(0, 256, shape).astype(np.uint8)
            wz = np.full(ws.shape, 128, np.uint8)
        if not per_channel:
            ws, wz = ws.reshape(()), wz.reshape(())
        y = self.name("w")
        attrs = {"axis": axis} if per_channel else {}
        self.nodes.append(helper.make_node("DequantizeLinear", [self.const("W", w), self.const("ws", ws),
                                                                self.const("wz", wz)], [y], name=self.name("DQw"), **attrs))
        return y, ws

    def bias(self, n, xs, ws, axis_ok=True):
        s = (np.float32(xs) * np.broadcast_to(ws, (n,))).astype(np.float32)
        b = self.rng.integers(-2000, 2001, n).astype(np.int32)
        y = self.name("b")
        per = np.asarray(ws).size > 1
        self.nodes.append(helper.make_node(
            "DequantizeLinear", [self.const("B", b), self.const("bs", s if per else s[:1].reshape(())),
                                 self.const("bz", np.zeros(n if per else (), np.int32))], [y],
            name=self.name("DQb"), **({"axis": 0} if per else {})))
        return y


def _concat(b, rng, f, t, qp, shape):
    """``Concat(DQ(t), DQ(other))`` along axis 1 → Q; ``other`` a constant of ``shape`` with its
    own qparams, or ``t`` itself through a second DQ node. Returns ``(q, qparams, added channels)``."""
    y = b.name("y")
    if rng.integers(2):
        other = rng.integers(np.iinfo(b.dt).min, np.iinfo(b.dt).max + 1, shape).astype(b.dt)
        g = b.dq(b.const("C", other), b.qparams(float(rng.uniform(0.01, 0.05))))
        added = shape[1]
    else:
        g, added = b.dq(t, qp), None
    b.nodes.append(helper.make_node("Concat", [f, g], [y], name=b.name("Concat"), axis=1))
    if rng.integers(3) == 0:   # the output keeps the input's qparams: QLinearConcat copies that input
        yq = b.name("q")
        b.nodes.append(helper.make_node("QuantizeLinear", [y, qp[0], qp[1]], [yq], name=b.name("Q")))
        return yq, qp, added
    t2, qp2 = b.q(y, qp[2] * float(rng.uniform(0.5, 2.0)))
    return t2, qp2, added


def build(ops, act, per_channel, seed, channels=3, size=6, batch=2):
    """A ``Q → (DQ → op → Q)* `` chain: spatial ops on [batch, C, size, size], then a
    GlobalAveragePool or Flatten to [batch, C], then flat ops. Returns (model, input)."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, act)
    spatial, flat, to_flat = ops
    x = rng.normal(0, 1, (batch, channels, size, size)).astype(np.float32)
    t, qp = b.q("x", float(rng.uniform(0.01, 0.05)))
    c, hw = channels, size
    for op in spatial:
        f = b.dq(t, qp)
        y = b.name("y")
        if op == "Conv":
            co, k = int(rng.integers(2, 5)), int(rng.choice([1, 3]))
            w, ws = b.weight((co, c, k, k), 0, per_channel)
            bias = b.bias(co, qp[2], ws)
            b.nodes.append(helper.make_node("Conv", [f, w, bias], [y], name=b.name("Conv"),
                                            pads=[k // 2] * 4, kernel_shape=[k, k]))
            t, qp = b.q(y, qp[2] * float(np.mean(ws)) * np.sqrt(c * k * k) * 60 * float(rng.uniform(0.5, 2)))
            c = co
        elif op == "AddConst":
            other = rng.integers(np.iinfo(b.dt).min, np.iinfo(b.dt).max + 1, (1, c, hw, hw)).astype(b.dt)
            oq = b.qparams(float(rng.uniform(0.01, 0.05)))
            g = b.dq(b.const("C", other), oq)
            b.nodes.append(helper.make_node("Add", [f, g], [y], name=b.name("Add")))
            t, qp = b.q(y, qp[2] * float(rng.uniform(1.0, 3.0)))
        elif op == "MaxPool":
            b.nodes.append(helper.make_node("MaxPool", [f], [y], name=b.name("MaxPool"), kernel_shape=[2, 2],
                                            strides=[1, 1]))
            s, z = qp[0], qp[1]  # the same qparams: the DQ/Q pair is dropped
            yq = b.name("q")
            b.nodes.append(helper.make_node("QuantizeLinear", [y, s, z], [yq], name=b.name("Q")))
            t, hw = yq, hw - 1
        elif op == "Concat":
            t, qp, added = _concat(b, rng, f, t, qp, (batch, int(rng.integers(1, 3)), hw, hw))
            c += c if added is None else added
        else:  # AveragePool
            b.nodes.append(helper.make_node("AveragePool", [f], [y], name=b.name("AveragePool"), kernel_shape=[2, 2],
                                            strides=[1, 1], pads=[0, 0, 1, 1], count_include_pad=int(rng.integers(2))))
            t, qp = b.q(y, qp[2] * float(rng.uniform(0.5, 2.0)))
    f = b.dq(t, qp)
    y = b.name("y")
    if to_flat == "GlobalAveragePool":
        b.nodes.append(helper.make_node("GlobalAveragePool", [f], [y], name=b.name("GAP")))
        t, qp = b.q(y, qp[2] * float(rng.uniform(0.3, 1.5)))
        f, y = b.dq(t, qp), b.name("y")
        b.nodes.append(helper.make_node("Flatten", [f], [y], name=b.name("Flatten")))
        yq = b.name("q")
        b.nodes.append(helper.make_node("QuantizeLinear", [y, qp[0], qp[1]], [yq], name=b.name("Q")))
        t = yq
    else:
        b.nodes.append(helper.make_node("Flatten", [f], [y], name=b.name("Flatten")))
        yq = b.name("q")
        b.nodes.append(helper.make_node("QuantizeLinear", [y, qp[0], qp[1]], [yq], name=b.name("Q")))
        t, c = yq, c * hw * hw
    for op in flat:
        f = b.dq(t, qp)
        y = b.name("y")
        n = int(rng.integers(2, 7))
        if op == "MatMul":
            w, ws = b.weight((c, n), 1, False)
            b.nodes.append(helper.make_node("MatMul", [f, w], [y], name=b.name("MatMul")))
        elif op == "Gemm":
            w, ws = b.weight((n, c), 0, per_channel)
            bias = b.bias(n, qp[2], ws)
            b.nodes.append(helper.make_node("Gemm", [f, w, bias], [y], name=b.name("Gemm"), transB=1))
        elif op == "Concat":
            t, qp, added = _concat(b, rng, f, t, qp, (batch, int(rng.integers(1, 4))))
            c += c if added is None else added
            continue
        else:
            n = c
            other = rng.integers(np.iinfo(b.dt).min, np.iinfo(b.dt).max + 1, (1, c)).astype(b.dt)
            g = b.dq(b.const("C", other), b.qparams(float(rng.uniform(0.01, 0.05))))
            b.nodes.append(helper.make_node("Add", [f, g], [y], name=b.name("Add")))
            t, qp = b.q(y, qp[2] * float(rng.uniform(1.0, 3.0)))
            continue
        t, qp = b.q(y, qp[2] * float(np.mean(ws)) * np.sqrt(c) * 60 * float(rng.uniform(0.5, 2)))
        c = n
    graph = helper.make_graph(b.nodes, "random_qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info(t, b.tp, [batch, c])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, x


def _ort(model, optimize):
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    if optimize:
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.add_session_config_entry("session.qdqisint8allowed", "1")
    else:
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


graphs = st.tuples(
    st.lists(st.sampled_from(SPATIAL), min_size=0, max_size=3),
    st.lists(st.sampled_from(FLAT), min_size=0, max_size=2),
    st.sampled_from(["GlobalAveragePool", "Flatten"]),
)


@settings(max_examples=int(os.environ.get("REFQUANT_QDQ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=graphs, act=st.sampled_from(["s8s8", "u8u8"]), per_channel=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_random_qdq_graphs_are_bit_exact_with_onnxruntime(ops, act, per_channel, seed):
    dt = "int8" if act == "s8s8" else "uint8"
    if not exact_integer_products(dt, dt):
        pytest.skip(f"onnxruntime does not multiply {dt}x{dt} exactly on this host")
    model, x = build(ops, act, per_channel, seed)
    for semantics, optimize in (("integer", True), ("qdq-float", False)):
        want = _ort(model, optimize).run(None, {"x": x})[0]
        m = import_quantized(model, semantics=semantics)
        concats = sum(op == "Concat" for op in ops[0] + ops[1])
        fused = [st.op for st in m.steps].count("QLinearConcat")
        assert fused == (concats if semantics == "integer" else 0), [st.op for st in m.steps]
        for backend in ("reference", "numba") if semantics == "integer" else ("reference",):
            got = m.run({"x": x}, backend=backend).outputs[m.outputs[0]]
            assert got.dtype == want.dtype and got.shape == want.shape, (semantics, got.dtype, want.dtype)
            assert np.array_equal(got, want), (semantics, backend, ops, act, per_channel, seed,
                                               int(np.sum(got != want)), [s.op for s in m.steps])
