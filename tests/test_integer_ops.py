"""The integer-operator table: each entry's rule against an independent oracle, and the
executor, the golden replay and the ONNX export (run in onnxruntime) giving the same integers
— per-tensor and per-channel qparams alike."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.executor import quantize_model
from refquant.executor.integer_ops import (
    FALLBACK, INTEGER_OPS, TABLE, AveragePools, Clip, MaxPool, QTensor, Relu, ShapeOp, operand_kinds, rule_for,
)
from refquant.golden import export_golden, replay
from refquant.graph import GraphBuilder, validate_graph
from refquant.numerics import QParams, int_format, quantize
from refquant.train.fakequant import QUANTIZED_INPUT_OPS, FakeQuant

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from refquant.onnx_io import ExportError, export_qoperator, run_onnxruntime  # noqa: E402
from refquant.onnx_io.exporter import _QGraph  # noqa: E402

#: the onnx reference evaluator implements DequantizeLinear from opset 19
ORACLE_OPSET = 19
SPEC = __import__("pathlib").Path(__file__).resolve().parents[1] / "spec" / "integer-ops.md"


# ------------------------------------------------------------------------------------ strategies

@st.composite
def qtensors(draw, *, per_channel=None, shape=None, fmt=None):
    """An integer tensor ``[N, C, H, W]`` with per-tensor or per-channel (axis 1) qparams.

    Scales in ``[1/128, 1/2]``: the grid then covers several units, so bounds drawn from
    ``[-3, 3]`` land inside it and a bound off by one step shows.
    """
    fmt = int_format(fmt or draw(st.sampled_from(["uint8", "int8"])))
    shape = shape or (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(2, 6)),
                      draw(st.integers(2, 6)))
    per_channel = draw(st.booleans()) if per_channel is None else per_channel
    n = shape[1] if per_channel else 1
    scales = draw(st.lists(st.floats(0.0078125, 0.5, width=32), min_size=n, max_size=n))
    zps = draw(st.lists(st.integers(fmt.qmin, fmt.qmax), min_size=n, max_size=n))
    if per_channel:
        qp = QParams(np.array(scales, np.float32), np.array(zps, np.int32), fmt, axis=1, name="x")
    else:
        qp = QParams(np.float32(scales[0]), np.int32(zps[0]), fmt, name="x")
    seed = draw(st.integers(0, 2**32 - 1))
    q = np.random.default_rng(seed).integers(fmt.qmin, fmt.qmax, shape, endpoint=True).astype(fmt.storage_dtype)
    return QTensor(q, qp)


def _out_qparams(fmt="uint8", scale=0.05, zp=7):
    return QParams(np.float32(scale), np.int32(zp), int_format(fmt), name="y")


# ---------------------------------------------------------------------- the onnx reference oracle

def _dq_op_q(x: QTensor, op_type: str, constants: list, attributes: dict, y_qp: QParams | None = None):
    """``QuantizeLinear(op(DequantizeLinear(q)))`` in the onnx reference evaluator (QLinear style):
    the output quantized with the input's qparams unless ``y_qp`` is given."""
    y_qp = y_qp or x.qp

    def qparams_inits(prefix, qp):
        s = np.asarray(qp.scale, np.float32)
        z = np.asarray(qp.zero_point).astype(qp.fmt.storage_dtype)
        return [numpy_helper.from_array(s, f"{prefix}_s"), numpy_helper.from_array(z, f"{prefix}_z")], \
            ({} if qp.per_tensor else {"axis": qp.axis})

    inits, x_attr = qparams_inits("x", x.qp)
    y_inits, y_attr = qparams_inits("y", y_qp)
    names = []
    for i, c in enumerate(constants):
        if c is None:
            names.append("")
        else:
            inits.append(numpy_helper.from_array(np.asarray(c), f"c{i}"))
            names.append(f"c{i}")
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xf"], **x_attr),
             helper.make_node(op_type, ["xf"] + names, ["yf"], **attributes),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"], **y_attr)]
    elem = helper.np_dtype_to_tensor_dtype(x.q.dtype)
    graph = helper.make_graph(nodes, "oracle", [helper.make_tensor_value_info("xq", elem, list(x.q.shape))],
                              [helper.make_tensor_value_info("yq", helper.np_dtype_to_tensor_dtype(y_qp.fmt.storage_dtype),
                                                             None)], initializer=inits + y_inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ORACLE_OPSET)])
    model.ir_version = 9
    return ReferenceEvaluator(model).run(None, {"xq": x.q})[0]


def _compute(entry, op_type, values, attributes):
    return entry.compute(op_type, values, attributes, name="t")


# --------------------------------------------------------------------------- each rule vs oracle

@settings(max_examples=60, deadline=None)
@given(qtensors())
def test_relu_is_max_with_the_zero_point_of_each_channel(x):
    got = _compute(TABLE["Relu"], "Relu", [x], {})
    assert got.dtype == x.q.dtype
    assert np.array_equal(got, _dq_op_q(x, "Relu", [], {}))
    # closed form, channel by channel
    for c in range(x.q.shape[1]):
        z = int(x.qp.zero_point if x.qp.per_tensor else x.qp.zero_point[c])
        assert np.array_equal(got[:, c], np.maximum(x.q[:, c].astype(np.int64), z))


@settings(max_examples=60, deadline=None)
@given(qtensors(), st.one_of(st.none(), st.floats(-3.0, 3.0, width=32)), st.one_of(st.none(), st.floats(-3.0, 3.0, width=32)))
def test_clip_quantizes_its_bounds_with_the_input_qparams(x, lo, hi):
    bounds = [None if b is None else np.float32(b) for b in (lo, hi)]
    values = [x] + [None if b is None else np.asarray(b) for b in bounds]
    got = _compute(TABLE["Clip"], "Clip", values, {})
    assert got.dtype == x.q.dtype and got is not x.q
    assert np.array_equal(got, _dq_op_q(x, "Clip", values[1:], {}))


@settings(max_examples=40, deadline=None)
@given(qtensors(), st.sampled_from([([2, 2], [2, 2], None), ([3, 3], [1, 1], [1, 1, 1, 1]),
                                    ([2, 3], [1, 2], [0, 1, 1, 0])]))
def test_maxpool_of_the_integers(x, window):
    kernel, strides, pads = window
    attrs = {"kernel_shape": kernel, "strides": strides} | ({"pads": pads} if pads else {})
    got = _compute(TABLE["MaxPool"], "MaxPool", [x], attrs)
    assert np.array_equal(got, _dq_op_q(x, "MaxPool", [], attrs))


@settings(max_examples=30, deadline=None)
@given(qtensors(per_channel=False))
def test_flatten_and_reshape_rearrange_the_integers(x):
    n = x.q.shape[0]
    flat = _compute(TABLE["Flatten"], "Flatten", [x], {"axis": 1})
    assert np.array_equal(flat, _dq_op_q(x, "Flatten", [], {"axis": 1}))
    shape = np.array([n, -1], np.int64)
    assert np.array_equal(_compute(TABLE["Reshape"], "Reshape", [x, shape], {}), _dq_op_q(x, "Reshape", [shape], {}))


def _average_oracle(q, z, s, kernel, strides, pads, count_include_pad):
    """``float32(Σ(q - z) / count) · s`` with exact integer sums (Python ints, Fractions), window by window."""
    n, c, h, w = q.shape
    kh, kw = kernel
    top, left, bottom, right = pads
    oh = (h + top + bottom - kh) // strides[0] + 1
    ow = (w + left + right - kw) // strides[1] + 1
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * strides[0] - top, j * strides[1] - left
            rows = [r for r in range(r0, r0 + kh) if 0 <= r < h]
            cols = [cc for cc in range(c0, c0 + kw) if 0 <= cc < w]
            count = kh * kw if count_include_pad else len(rows) * len(cols)
            for b in range(n):
                for ch in range(c):
                    total = sum(int(q[b, ch, r, cc]) - z for r in rows for cc in cols)
                    # a correctly rounded float64 quotient rounded to float32 is the correctly
                    # rounded float32 quotient (53 >= 2·24 + 2), so this is one rounding
                    out[b, ch, i, j] = np.float32(float(Fraction(total, count)))
    return (out * np.float32(s)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(qtensors(per_channel=False), st.sampled_from([([2, 2], [2, 2], [0, 0, 0, 0], 0), ([3, 3], [1, 1], [1, 1, 1, 1], 1),
                                                     ([3, 2], [2, 1], [1, 0, 1, 1], 0)]))
def test_average_pool_is_the_exact_mean_of_the_integers_times_the_scale(x, window):
    kernel, strides, pads, cip = window
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "count_include_pad": cip}
    got = _compute(TABLE["AveragePool"], "AveragePool", [x], attrs)
    want = _average_oracle(x.q, int(x.qp.zero_point), x.qp.scale, kernel, strides, pads, cip)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    h, w = x.q.shape[2:]
    g = _compute(TABLE["GlobalAveragePool"], "GlobalAveragePool", [x], {})
    want = _average_oracle(x.q, int(x.qp.zero_point), x.qp.scale, [h, w], [1, 1], [0, 0, 0, 0], 1)
    assert g.tobytes() == want.tobytes()


@settings(max_examples=40, deadline=None)
@given(qtensors(per_channel=False, shape=(2, 3, 4, 4)), qtensors(shape=(2, 3, 4, 4)))
def test_fallback_is_dequantize_float_op_quantize(a, b):
    y_qp = _out_qparams()
    got = quantize(_compute(FALLBACK, "Add", [a, b], {}), y_qp)
    # the oracle: both inputs dequantized, added and quantized by the onnx reference evaluator
    inits = []
    for p, t in (("a", a), ("b", b), ("y", QTensor(None, y_qp))):
        inits += [numpy_helper.from_array(np.asarray(t.qp.scale, np.float32), f"{p}_s"),
                  numpy_helper.from_array(np.asarray(t.qp.zero_point).astype(t.qp.fmt.storage_dtype), f"{p}_z")]
    axis = lambda qp: {} if qp.per_tensor else {"axis": 1}  # noqa: E731
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"], **axis(a.qp)),
             helper.make_node("DequantizeLinear", ["bq", "b_s", "b_z"], ["bf"], **axis(b.qp)),
             helper.make_node("Add", ["af", "bf"], ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
    info = lambda n, t: helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(t.q.dtype), list(t.q.shape))  # noqa: E731
    graph = helper.make_graph(nodes, "add", [info("aq", a), info("bq", b)],
                              [helper.make_tensor_value_info("yq", TensorProto.UINT8, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ORACLE_OPSET)])
    model.ir_version = 9
    want = ReferenceEvaluator(model).run(None, {"aq": a.q, "bq": b.q})[0]
    assert np.array_equal(got, want)


# ------------------------------------------------------------------------------- which rule runs

def test_the_rule_chosen_for_each_operand_kind():
    pt = _out_qparams()
    pc = QParams(np.ones(3, np.float32), np.zeros(3, np.int32), int_format("uint8"), axis=1, name="x")
    bound, shape = np.asarray(np.float32(1.0)), np.array([0, -1], np.int64)
    assert isinstance(rule_for("Relu", [pc]), Relu)
    assert isinstance(rule_for("MaxPool", [pc]), MaxPool)
    assert isinstance(rule_for("Clip", [pc, bound, None]), Clip)
    assert rule_for("Clip", [pt, "runtime_bound", None]) is FALLBACK  # bounds known only at run time
    assert isinstance(rule_for("Flatten", [pt]), ShapeOp) and rule_for("Flatten", [pc]) is FALLBACK
    assert isinstance(rule_for("Reshape", [pt, shape]), ShapeOp) and rule_for("Reshape", [pt, "s"]) is FALLBACK
    assert isinstance(rule_for("GlobalAveragePool", [pt]), AveragePools)
    assert rule_for("AveragePool", [pc]) is FALLBACK
    assert rule_for("Add", [pt, pt]) is FALLBACK and rule_for("Relu", [np.zeros(3, np.float32)]) is FALLBACK
    assert operand_kinds([QTensor(np.zeros(1, np.uint8), pt), shape, None])[0] is pt


def test_integer_ops_is_what_qat_reads_and_qat_quantizes_after_nothing_else():
    assert INTEGER_OPS == ("Relu", "Clip", "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                           "Slice", "Resize")
    assert QUANTIZED_INPUT_OPS == INTEGER_OPS
    graph, _ = _ops_graph()
    fq = FakeQuant(graph, "weights=minmax:8 activations=ema-minmax:8")
    for node in graph.nodes:
        assert fq.has_activation(node.outputs[0]) == (node.op_type not in INTEGER_OPS), node


def test_every_entry_has_a_spec_paragraph_and_a_docstring():
    text = SPEC.read_text()
    for op, entry in TABLE.items():
        assert f"### {', '.join(entry.op_types)}\n" in text, op
        assert entry.__doc__ and len(entry.__doc__) > 80, op
    assert "### Fallback" in text
    assert "integer-ops.md" in (SPEC.parent / "architecture.md").read_text()


def test_fallback_errors_name_the_layer():
    x = QTensor(np.zeros((1, 2), np.uint8), _out_qparams())
    with pytest.raises(ValueError, match="my_layer"):
        FALLBACK.compute("Reshape", [x, np.array([3, 5], np.int64)], {}, name="my_layer")
    with pytest.raises(ValueError, match="my_relu: input 0 is not a quantized tensor"):
        TABLE["Relu"].compute("Relu", [np.zeros(2, np.float32)], {}, name="my_relu")


# ------------------------------------------------------------------ each entry's ONNX emission

def _emit_and_run(op_type, values, attributes, y_qp=None):
    """Run the table entry's ``emit`` for one node in onnxruntime; return the integer output.

    ``values`` as ``compute`` takes them (QTensor, constant array or None). The exporter's
    QOperator graph object is used as it is, on a one-node refquant graph.
    """
    b = GraphBuilder("one")
    names = []
    for i, v in enumerate(values):
        if v is None:
            names.append("")
        elif isinstance(v, QTensor):
            names.append(b.input(f"in{i}", list(v.q.shape)))
        else:
            names.append(b.initializer(f"c{i}", np.asarray(v)))
    y = b.node(op_type, names, name="op", **attributes)
    graph = b.build(y)
    node = graph.nodes[0]
    qps = {t: v.qp for t, v in zip(names, values) if isinstance(v, QTensor)}
    rule = rule_for(op_type, operand_kinds(values))
    if not rule.keeps_qparams:
        qps[y] = y_qp
    q = _QGraph(onnx, SimpleNamespace(graph=graph), qps)
    feeds, inputs = {}, []
    for t, v in zip(names, values):
        if isinstance(v, QTensor):
            name = q.integer_tensor(t)
            feeds[name] = v.q
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.q.dtype),
                                                        list(v.q.shape)))
    rule.emit(q, node)
    out = q.int_name[y]
    dtype = (values[0].qp if rule.keeps_qparams else y_qp).fmt.storage_dtype
    shape = list(validate_graph(graph)[y])
    model = q.e.model(graph, inputs, [helper.make_tensor_value_info(out, helper.np_dtype_to_tensor_dtype(dtype), shape)],
                      "one operator")
    onnx.checker.check_model(model, full_check=True)
    return run_onnxruntime(model, feeds)[out], rule


def _table_result(op_type, values, attributes, y_qp=None):
    rule = rule_for(op_type, operand_kinds(values))
    y = rule.compute(op_type, values, attributes, name="op")
    return y if rule.keeps_qparams else quantize(y, y_qp)


@settings(max_examples=40, deadline=None)
@given(qtensors(), st.sampled_from(["Relu", "Clip", "Clip-lo", "Clip-hi", "Clip-none", "MaxPool"]),
       st.floats(-2.0, 2.0, width=32), st.floats(-2.0, 2.0, width=32))
def test_emitted_integer_operators_equal_the_rule_in_onnxruntime(x, case, lo, hi):
    op = case.split("-")[0]
    values = [x]
    attrs = {}
    if op == "Clip":
        which = case.split("-")[1] if "-" in case else "both"
        values += [None if which in ("hi", "none") else np.asarray(np.float32(lo)),
                   None if which in ("lo", "none") else np.asarray(np.float32(hi))]
        while values[-1] is None and len(values) > 1:
            values.pop()
    if op == "MaxPool":
        attrs = {"kernel_shape": [2, 2], "strides": [1, 2], "pads": [1, 0, 0, 1]}
    got, rule = _emit_and_run(op, values, attrs)
    assert rule.keeps_qparams
    want = _table_result(op, values, attrs)
    assert got.dtype == want.dtype and np.array_equal(got, want), f"{case}: {int(np.sum(got != want))} differ"


@settings(max_examples=25, deadline=None)
@given(qtensors(per_channel=False), qtensors(per_channel=False),
       st.sampled_from(["Flatten", "Reshape", "AveragePool", "GlobalAveragePool", "Add"]))
def test_emitted_per_tensor_operators_equal_the_rule_in_onnxruntime(x, other, op):
    attrs, values = {}, [x]
    if op == "Flatten":
        attrs = {"axis": 1}
    elif op == "Reshape":
        values.append(np.array([0, -1], np.int64))
    elif op == "AveragePool":
        attrs = {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0], "count_include_pad": 0}
    elif op == "Add":
        values.append(QTensor(other.q[:1, :1, :1, :1], other.qp))  # broadcast along N, H, W
    y_qp = _out_qparams("int8", 0.02, -3)
    got, _ = _emit_and_run(op, values, attrs, y_qp)
    want = _table_result(op, values, attrs, y_qp)
    assert got.dtype == want.dtype and np.array_equal(got, want), f"{op}: {int(np.sum(got != want))} differ"


# ------------------------------------------------- the executor, the replay and the export agree

def _ops_graph(seed: int = 0):
    """Every table operator in one graph, on the graph input (no kernel layers)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("integer-ops")
    x = b.input("x", ["N", 3, 6, 6])
    h = b.clip(x, -0.75, 1.5)
    h = b.relu(h)
    h = b.clip(h, None, 1.0)
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[1, 1])
    h = b.node("Transpose", [h], perm=[0, 1, 3, 2])
    h = b.node("Unsqueeze", [h, b.initializer("axes_u", np.array([2], np.int64))])
    h = b.node("Squeeze", [h, b.initializer("axes_s", np.array([-3], np.int64))])
    a = b.node("AveragePool", [h], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    h = b.add(a, h)
    h = b.node("Concat", [h, b.node("Mul", [h, a])], axis=1)
    h = b.node("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], count_include_pad=0)
    g1 = b.node("GlobalAveragePool", [h])
    h = b.node("Reshape", [g1, b.initializer("shape", np.array([0, -1, 1], np.int64))])
    h = b.flatten(h)
    h = b.node("Softmax", [h])
    return b.build(h), rng.normal(0.2, 1, (12, 3, 6, 6)).astype(np.float32)


PLANS = ["weights=minmax:8 activations=static-minmax:8",
         "weights=minmax:8 activations=static-minmax:8:signed:sym",
         "weights=minmax:8 activations=static-minmax:8:per-channel",
         "weights=minmax:8 activations=static-minmax:8:per-channel:signed"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("plan", PLANS)
def test_executor_replay_and_export_agree_on_every_integer(plan, seed, tmp_path):
    graph, x = _ops_graph(seed)
    qm = quantize_model(graph, plan, x, requant="float32")
    result = qm.run(x[:4], keep=True)
    ints = {r.name: r.q_output for r in result.records if r.q_output is not None}
    kernels = {r.name: r.kernel for r in result.records}
    per_channel = "per-channel" in plan
    assert all(not r.output_qparams.per_tensor for r in result.records) == per_channel
    # which rule ran: per-channel qparams keep Relu/Clip/MaxPool on the integers, not Flatten/Reshape
    assert kernels["relu_0"] == kernels["clip_0"] == kernels["maxpool_0"] == "integer"
    for op in ("flatten_0", "transpose_0", "unsqueeze_0", "squeeze_0"):
        assert kernels[op] == ("float" if per_channel else "integer"), op
    assert kernels["concat_0"] == kernels["mul_0"] == "float"

    gs = export_golden(qm, x[:4], tmp_path / "set", seed=seed)
    replayed = replay(gs)
    for name, q in ints.items():
        assert replayed[name].dtype == q.dtype and np.array_equal(replayed[name], q), f"replay differs on {name}"

    if per_channel:
        with pytest.raises(ExportError, match="per-channel"):
            export_qoperator(qm)
        return
    exported = export_qoperator(qm, layer_outputs=True)
    got = run_onnxruntime(exported.model, {"x": x[:4]})
    for name, q in ints.items():
        if name == "softmax_0":  # onnxruntime's float Softmax is not refquant's to the last bit
            continue
        have = got[exported.layer_outputs[name]]
        assert have.dtype == q.dtype and np.array_equal(have, q), f"onnxruntime differs on {name}"


def test_replay_refuses_a_layer_recorded_under_another_rule(tmp_path):
    graph, x = _ops_graph()
    qm = quantize_model(graph, PLANS[0], x)
    gs = export_golden(qm, x[:2], tmp_path / "set")
    layer = dict(gs.layer("flatten_0"), kernel="float")
    from refquant.golden.replay import compute_layer
    with pytest.raises(ValueError, match="flatten_0.*recorded kernel 'float'"):
        compute_layer(gs, layer, [gs.layer_tensor(gs.layer("reshape_0"), "output")])


def test_per_channel_clip_runs_on_the_integers_with_one_bound_per_channel():
    graph, x = _ops_graph()
    qm = quantize_model(graph, PLANS[2], x)
    recs = {r.name: r for r in qm.run(x[:2], keep=True).records}
    x_qp = recs["x"].output_qparams
    xq = QTensor(quantize(x[:2], x_qp), x_qp)
    assert not x_qp.per_tensor and len(np.unique(x_qp.zero_point)) > 1
    clip = recs["clip_0"]
    assert clip.kernel == "integer" and clip.output_qparams is x_qp
    want = _dq_op_q(xq, "Clip", [np.float32(-0.75), np.float32(1.5)], {})
    assert np.array_equal(clip.q_output, want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_crossed_clip_bounds_give_the_upper_bound_everywhere(per_channel):
    """``a > b``: ONNX Clip gives ``b``; so do the rule, its oracle and its export."""
    fmt = int_format("uint8")
    qp = (QParams(np.array([0.1, 0.2], np.float32), np.array([10, 20], np.int32), fmt, axis=1, name="x")
          if per_channel else QParams(np.float32(0.1), np.int32(10), fmt, name="x"))
    x = QTensor(np.random.default_rng(0).integers(0, 256, (2, 2, 3, 3)).astype(np.uint8), qp)
    values = [x, np.asarray(np.float32(1.0)), np.asarray(np.float32(-1.0))]
    want = _table_result("Clip", values, {})
    _, z = qp.broadcast_to(x.q.shape)
    assert np.array_equal(want, np.broadcast_to(np.rint(-1.0 / qp.broadcast_to(x.q.shape)[0]) + z, x.q.shape))
    assert np.array_equal(want, _dq_op_q(x, "Clip", values[1:], {}))
    got, _ = _emit_and_run("Clip", values, {})
    assert np.array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(qtensors(per_channel=False, shape=(1, 2, 3, 3), fmt="uint8"),
       qtensors(per_channel=False, shape=(1, 3, 3, 3), fmt="uint8"), st.booleans())
def test_concat_fallback_is_onnxruntimes_fused_qlinearconcat(a, b, same_as_output):
    """The exported DQ → Concat → Q, fused by onnxruntime into com.microsoft.QLinearConcat
    (a lookup table per input, or a copy when its qparams are the output's), gives the
    fallback's integers."""
    import onnxruntime as ort

    y_qp = a.qp if same_as_output else _out_qparams("uint8", 0.03, 120)
    values = [a, b]
    want = _table_result("Concat", values, {"axis": 1}, y_qp)
    b_ = GraphBuilder("concat")
    names = [b_.input(f"in{i}", list(v.q.shape)) for i, v in enumerate(values)]
    y = b_.node("Concat", names, name="op", axis=1)
    graph = b_.build(y)
    q = _QGraph(onnx, SimpleNamespace(graph=graph), {**dict(zip(names, (v.qp for v in values))), y: y_qp})
    inputs = []
    for t, v in zip(names, values):
        inputs.append(helper.make_tensor_value_info(q.integer_tensor(t), TensorProto.UINT8, list(v.q.shape)))
    rule_for("Concat", operand_kinds(values)).emit(q, graph.nodes[0])
    out = q.int_name[y]
    model = q.e.model(graph, inputs, [helper.make_tensor_value_info(out, TensorProto.UINT8, [1, 5, 3, 3])], "concat")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        options.optimized_model_filepath = str(Path(d) / "fused.onnx")
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        fused = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert "QLinearConcat" in fused, fused
    got = sess.run([out], {q.integer_tensor(t): v.q for t, v in zip(names, values)})[0]
    assert np.array_equal(got, want), f"{int(np.sum(got != want))} of {want.size} differ"
