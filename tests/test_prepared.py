"""The prepared program (``refquant/executor/program.py``, ``refquant/kernels/fast_prepared.py``)
gives the bits of the plain, per-call path.

Two levels: the Numba backend's prepared layer against its own unprepared kernels on the same
hypothesis cases as ``test_kernels_fast`` (every tile path, zero points, biases, requantizers,
overflow errors); and whole quantized models run with ``prepared=True`` (twice: the second run
uses the memoised constants) and ``prepared=False``, over layer kinds, per-tensor and
per-channel weights, activation strategies of each timing, fused ReLU/ReLU6, both backends
and every requant mode.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refquant.executor import quantize_model
from refquant.executor.program import PreparedStep, static_qparams
from refquant.graph import GraphBuilder
from refquant.kernels import fast, fast_prepared
from refquant.numerics.requant import REQUANT_MODES
from test_kernels_fast import PATHS, assert_same, conv_case, forced_path, matmul_case, outcome, requantizer

# --- the Numba backend's prepared layer == its unprepared kernels ----------------------------


def _prepared_call(kind, x, w, x_zp, w_zp, bias, rq, attrs):
    name = {"conv2d": "conv", "matmul": "matmul"}[kind]  # the unprepared kernels' default names
    layer = fast_prepared.prepare_layer(kind, w, w_zp, x_dtype=x.dtype, name=name, **attrs)
    assert layer is not None
    binding = layer.bind(x_zp, bias)
    if rq is None:
        return layer.run(x, binding, layer.requant_args(None), np.int32)
    return layer.run(x, binding, layer.requant_args(rq), rq.out_dtype)


@settings(deadline=None)
@given(matmul_case(), st.sampled_from(PATHS), st.data())
def test_prepared_matmul_equals_unprepared(case, path, data):
    a, w, za, zw, bias = case
    rq = data.draw(st.one_of(st.none(), requantizer(w.shape[0])))
    with forced_path(path):
        if rq is None:
            want = outcome(fast.matmul_int32, a, w, za, zw, bias)
        else:
            want = outcome(fast.matmul_requant, a, w, za, zw, bias, rq)
        got = outcome(_prepared_call, "matmul", a, w, za, zw, bias, rq, {})
    assert_same(want, got)


@settings(deadline=None)
@given(conv_case(), st.sampled_from(PATHS), st.data())
def test_prepared_conv_equals_unprepared(case, path, data):
    x, w, zx, zw, bias, attrs = case
    rq = data.draw(st.one_of(st.none(), requantizer(w.shape[0])))
    with forced_path(path):
        if rq is None:
            want = outcome(fast.conv2d_int32, x, w, zx, zw, bias, **attrs)
        else:
            want = outcome(fast.conv2d_requant, x, w, zx, zw, bias, rq, **attrs)
        got = outcome(_prepared_call, "conv2d", x, w, zx, zw, bias, rq, attrs)
    assert_same(want, got)


def test_prepared_layer_is_reused_across_inputs_and_shapes():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (5, 3, 3, 3)).astype(np.int8)
    bias = rng.integers(-500, 500, 5).astype(np.int32)
    layer = fast_prepared.prepare_layer("conv2d", w, 0, x_dtype=np.uint8, name="c", pads=[1, 1, 1, 1])
    binding = layer.bind(7, bias)
    for hw in (4, 9, 4):
        x = rng.integers(0, 256, (2, 3, hw, hw)).astype(np.uint8)
        want = fast.conv2d_int32(x, w, 7, 0, bias, pads=[1, 1, 1, 1])
        assert np.array_equal(layer.run(x, binding, layer.requant_args(None), np.int32), want)
    assert len(layer._plans) == 2


def test_sixteen_bit_operands_are_not_prepared():
    w = np.zeros((2, 3), np.int8)
    assert fast_prepared.prepare_layer("matmul", w, 0, x_dtype=np.int16, name="m") is None
    assert fast_prepared.prepare_layer("matmul", w.astype(np.int16), 0, x_dtype=np.int8, name="m") is None


def test_prepared_call_checks_the_input():
    w = np.ones((2, 3), np.int8)
    layer = fast_prepared.prepare_layer("matmul", w, 0, x_dtype=np.uint8, name="m")
    binding = layer.bind(0, None)
    with pytest.raises(TypeError, match="prepared for uint8"):
        layer.run(np.zeros((1, 3), np.int8), binding, layer.requant_args(None), np.int32)
    with pytest.raises(ValueError, match="equal K"):
        layer.run(np.zeros((1, 4), np.uint8), binding, layer.requant_args(None), np.int32)
    with pytest.raises(ValueError, match="bias must have shape"):
        layer.bind(0, np.zeros(3, np.int32))


# --- whole models: prepared == plain ---------------------------------------------------------

STRATEGIES = ("static-minmax", "probabilistic", "dynamic")  # timings offline, before, after


def _model(kind: str, act1, act2, seed: int):
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"two-{kind}")

    def activate(h, act):
        if act == "relu":
            return b.relu(h)
        if act == "relu6":
            return b.clip(h, 0.0, 6.0)
        return h

    if kind == "Conv":
        x = b.input("x", ["N", 2, 6, 6])
        h = b.conv(x, rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32),
                   rng.normal(0, 0.2, 4).astype(np.float32), pads=[1, 1, 1, 1], name="l1")
        h = activate(h, act1)
        h = b.max_pool(h, kernel_shape=[2, 2], strides=[1, 1])
        y = b.conv(h, rng.normal(0, 0.4, (3, 4, 3, 3)).astype(np.float32),
                   rng.normal(0, 0.2, 3).astype(np.float32), strides=[2, 2], name="l2")
        xs = rng.normal(0, 1.5, (6, 2, 6, 6)).astype(np.float32)
    else:
        x = b.input("x", ["N", 12])
        w1 = rng.normal(0, 0.4, (12, 8)).astype(np.float32)
        if kind == "Gemm":
            h = b.gemm(x, w1.T.copy(), rng.normal(0, 0.2, 8).astype(np.float32), transB=1, name="l1")
        else:
            h = b.matmul(x, w1, name="l1")
        h = activate(h, act1)
        w2 = rng.normal(0, 0.4, (8, 5)).astype(np.float32)
        y = (b.gemm(h, w2, rng.normal(0, 0.2, 5).astype(np.float32), name="l2") if kind == "Gemm"
             else b.matmul(h, w2, name="l2"))
        xs = rng.normal(0, 1.5, (6, 12)).astype(np.float32)
    y = activate(y, act2)
    return b.build(y), xs


def _outcome_run(qm, x, backend, prepared):
    try:
        return ("ok", qm.run(x, backend=backend, keep=True, prepared=prepared))
    except (ValueError, TypeError, OverflowError) as e:
        return ("error", type(e), str(e))


def _assert_same_run(want, got):
    assert want[0] == got[0], (want, got)
    if want[0] == "error":
        assert want[1:] == got[1:]
        return
    want, got = want[1], got[1]
    for name, y in want.outputs.items():
        assert y.dtype == got.outputs[name].dtype
        assert np.array_equal(y.view(np.uint32), got.outputs[name].view(np.uint32))  # bits, NaN-proof
    assert len(want.records) == len(got.records)
    for r, g in zip(want.records, got.records):
        assert (r.name, r.kernel, r.timing, r.buffers) == (g.name, g.kernel, g.timing, g.buffers)
        for a, b in ((r.q_output, g.q_output), (r.accumulators, g.accumulators)):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and np.array_equal(a, b)
        if r.output_qparams is not None:
            assert np.array_equal(r.output_qparams.scale, g.output_qparams.scale)
            assert np.array_equal(r.output_qparams.zero_point, g.output_qparams.zero_point)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["Conv", "Gemm", "MatMul"]),
       granularity=st.sampled_from(["per-tensor", "per-channel"]),
       signed_acts=st.booleans(),
       strategies=st.tuples(*[st.sampled_from(STRATEGIES)] * 3),
       acts=st.tuples(*[st.sampled_from([None, "relu", "relu6"])] * 2),
       backend=st.sampled_from(["reference", "numba"]),
       mode=st.sampled_from(REQUANT_MODES),
       seed=st.integers(0, 2**16))
def test_prepared_run_equals_plain_run(kind, granularity, signed_acts, strategies, acts, backend, mode, seed):
    graph, xs = _model(kind, *acts, seed)
    sign = ":signed" if signed_acts else ""
    plan = (f"weights=minmax:8:{granularity} activations={strategies[0]}:8{sign} "
            f"l1.activations={strategies[1]}:8{sign} l2.activations={strategies[2]}:8{sign}")
    qm = quantize_model(graph, plan, xs, requant=mode)
    x = xs[:3]
    plain = _outcome_run(qm, x, backend, False)
    _assert_same_run(plain, _outcome_run(qm, x, backend, True))   # builds the program
    _assert_same_run(plain, _outcome_run(qm, x, backend, True))   # memoised constants
    _assert_same_run(_outcome_run(qm, xs[3:], backend, False), _outcome_run(qm, xs[3:], backend, True))


def _static_cnn():
    graph, xs = _model("Conv", "relu", "relu6", 3)
    return quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", xs), xs


def test_static_layers_are_prepared_when_the_program_is_built():
    qm, xs = _static_cnn()
    program = qm.prepare("numba")
    known = static_qparams(qm)
    for name, step in program.steps.items():
        layer = qm.layers[name]
        x_qp = known[layer.step.node.inputs[0]]
        assert step._bias[0] is x_qp and step._rq[0] is x_qp and step._rq[1] is layer.observed
        assert step._rq[3] is not None and len(step._packed) == 1
    # the first run hits every memo: nothing is recomputed
    before = {n: (s._bias[2], s._rq[2]) for n, s in program.steps.items()}
    qm.run(xs[:2], backend="numba")
    assert before == {n: (s._bias[2], s._rq[2]) for n, s in program.steps.items()}
    assert qm.prepare("numba") is program


def test_changed_qparams_or_weights_are_seen_by_the_program():
    qm, xs = _static_cnn()
    qm.run(xs[:2], backend="numba")
    layer = qm.layers["l2"]
    qp = layer.observed
    layer.observed = type(qp)(qp.scale * 2, qp.zero_point, qp.fmt, name=qp.name)
    _assert_same_run(_outcome_run(qm, xs[:2], "numba", False), _outcome_run(qm, xs[:2], "numba", True))
    w = layer.weight
    layer.weight = type(w)(np.ascontiguousarray(w.values[:, :, ::-1, :]), w.qparams)
    _assert_same_run(_outcome_run(qm, xs[:2], "numba", False), _outcome_run(qm, xs[:2], "numba", True))
    assert qm.prepare("numba").steps["l2"]._weight is layer.weight


def test_a_backend_without_preparation_runs_unprepared_kernels(monkeypatch):
    from refquant.kernels import numba_backend

    qm, xs = _static_cnn()
    calls = []
    original = numba_backend.conv2d_requant

    def counting(*args, **kwargs):
        calls.append(kwargs["name"])
        return original(*args, **kwargs)

    monkeypatch.setattr(numba_backend, "conv2d_requant", counting)
    qm.run(xs[:2], backend="numba")
    assert calls == []  # prepared: the backend's prepare_layer path
    monkeypatch.delattr(numba_backend, "prepare_layer")
    unprepared = PreparedStep(qm.layers["l1"], numba_backend, qm.requant)
    assert unprepared._prepare is None
    qm._programs.clear()
    got = qm.run(xs[:2], backend="numba")
    assert calls == ["l1", "l2"]
    want = qm.run(xs[:2], backend="numba", prepared=False)
    assert np.array_equal(got.outputs[qm.graph.outputs[0]], want.outputs[qm.graph.outputs[0]])
