"""Importing models quantized by onnxruntime's own tool: refquant's outputs equal the oracle's
bit for bit on 64 digits test images (the full 599-image grid: ``tests/qimport_grid.py``, table
in ``spec/onnx-import.md``), and each onnxruntime kernel rule refquant reproduces equals the
onnxruntime kernel on random operands.

Oracles: ``integer`` semantics — onnxruntime with optimizations on (int8 QDQ kept int8), where
``integer_product_probe`` says it multiplies the model's dtype pairs exactly on this host;
``qdq-float`` — onnxruntime with optimizations off (see ``tests/qimport_grid.py``)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper  # noqa: E402

from qimport_grid import compare, quantized_model  # noqa: E402
from refquant.onnx_io import u8s8_saturation_note  # noqa: E402
from refquant.onnx_io.qimport import (  # noqa: E402
    dynamic_quantize_linear, import_quantized, qlinear_add, qlinear_global_average_pool,
)

IMAGES = 64

#: (model, form, granularity, activations×weights) — every model in both forms, both granularities
#: and both exact dtype pairs at least once
CASES = [
    ("digits-mlp", "qoperator", "tensor", "u8u8"),
    ("digits-mlp", "qdq", "channel", "s8s8"),
    ("digits-cnn", "qoperator", "channel", "s8s8"),
    ("digits-cnn", "qdq", "tensor", "u8u8"),
    ("digits-resnet", "qoperator", "tensor", "s8s8"),
    ("digits-resnet", "qdq", "channel", "u8u8"),
    ("digits-resnet", "qdq", "tensor", "s8s8"),
]


@pytest.mark.parametrize("model,form,granularity,act", CASES)
def test_imported_model_is_bit_exact_with_onnxruntime(model, form, granularity, act):
    path = quantized_model(model, form, granularity, act)
    for semantics in ("integer", "qdq-float") if form == "qdq" else ("integer",):
        row = compare(path, semantics, IMAGES, backends=("reference", "numba"))
        assert row["bit_exact"] == IMAGES, row


@pytest.mark.parametrize("calibration", ["Entropy", "Percentile"])
def test_other_calibrations_import_bit_exact(calibration):
    path = quantized_model("digits-cnn", "qdq", "tensor", "s8s8", calibration)
    for semantics in ("integer", "qdq-float"):
        row = compare(path, semantics, IMAGES)
        assert row["bit_exact"] == IMAGES, row


def test_dynamic_quantization_of_the_mlp_is_bit_exact():
    path = quantized_model("digits-mlp", "dynamic", "tensor", "u8u8", "-")
    m = import_quantized(path)
    assert [s.op for s in m.steps].count("DynamicQuantizeLinear") == 2
    row = compare(path, "integer", IMAGES, backends=("reference", "numba"))
    assert row["bit_exact"] == IMAGES, row


@pytest.mark.parametrize("model,form", [("digits-mlp", "qoperator"), ("digits-resnet", "qdq")])
def test_uint8_x_int8_models_are_bit_exact_with_the_oracle_exact_on_this_host(model, form):
    """u8 activations × s8 weights (the tool's default): onnxruntime where it multiplies u8s8
    exactly, else the onnx reference evaluator on the standard-operator form (requant float64)."""
    path = quantized_model(model, form, "tensor", "u8s8")
    row = compare(path, "integer", IMAGES, backends=("reference", "numba"))
    assert row["bit_exact"] == IMAGES, row
    if "reference evaluator" in row["oracle"]:
        assert row["requant"] == "float64" and "inexact" in row["oracle"], u8s8_saturation_note()
    if form == "qdq":
        assert compare(path, "qdq-float", IMAGES)["bit_exact"] == IMAGES


def test_qdq_groups_fuse_as_onnxruntime_fuses_them():
    path = quantized_model("digits-resnet", "qdq", "tensor", "u8u8")
    m = import_quantized(path, semantics="integer")
    ops = [s.op for s in m.steps]
    assert "Conv" not in ops and "Add" not in ops and "Gemm" not in ops and "GlobalAveragePool" not in ops
    assert {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm", "MaxPool"} <= set(ops)
    assert ops[0] == "QuantizeLinear" and ops[-1] == "DequantizeLinear"
    fused = [s for s in m.steps if s.op == "QLinearConv"][0]
    assert [o for o in fused.origin][-2:][0].startswith(fused.name)
    # qdq-float runs the model as written
    assert [s.op for s in import_quantized(path, semantics="qdq-float").steps].count("Conv") == 5


def test_every_backend_and_requant_mode_runs_an_imported_model():
    path = quantized_model("digits-cnn", "qoperator", "tensor", "s8s8")
    m = import_quantized(path)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    base = m.run(x).outputs[m.outputs[0]]
    for backend in ("reference", "numba"):
        for mode in ("float32", "float64", "fixed-point", "fixed-point-single"):
            y = m.run(x, backend=backend, requant=mode).outputs[m.outputs[0]]
            assert y.shape == base.shape and y.dtype == np.float32
            assert np.abs(y - base).max() <= 0.5  # a few LSB of the output scale at most
    assert np.array_equal(m.run(x, backend="numba").outputs[m.outputs[0]], base)


def _ort_node(op, inputs: dict, out_dtype, attrs=None, domain=""):
    nodes = [helper.make_node(op, list(inputs), ["y"], domain=domain or None, **(attrs or {}))]
    infos = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for k, v in inputs.items()]
    g = helper.make_graph(nodes, "g", infos, [helper.make_tensor_value_info(
        "y", helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype)), None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"]).run(None, inputs)[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("seed", range(6))
def test_qlinear_add_rule_equals_onnxruntime(dtype, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    n = int(rng.integers(1, 300))
    a = rng.integers(info.min, info.max + 1, n).astype(dtype)
    b = rng.integers(info.min, info.max + 1, n).astype(dtype) if seed % 3 else a[:1].copy()
    s = [np.array(v, np.float32) for v in rng.uniform(0.001, 0.2, 3)]
    z = [np.array(v, dtype) for v in rng.integers(info.min, info.max + 1, 3)]
    feeds = {"a": a, "sa": s[0], "za": z[0], "b": b, "sb": s[1], "zb": z[1], "sc": s[2], "zc": z[2]}
    want = _ort_node("QLinearAdd", feeds, dtype, domain="com.microsoft")
    assert np.array_equal(qlinear_add(a, s[0], z[0], b, s[1], z[1], s[2], z[2]), want)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("seed", range(4))
def test_qlinear_global_average_pool_rule_equals_onnxruntime(dtype, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, int(rng.integers(1, 20)), 5, int(rng.integers(1, 9)))).astype(dtype)
    sx, sy = (np.array(v, np.float32) for v in rng.uniform(0.01, 0.1, 2))
    zx, zy = (np.array(v, dtype) for v in rng.integers(info.min, info.max + 1, 2))
    want = _ort_node("QLinearGlobalAveragePool", {"x": x, "sx": sx, "zx": zx, "sy": sy, "zy": zy}, dtype,
                     {"channels_last": 0}, domain="com.microsoft")
    assert np.array_equal(qlinear_global_average_pool(x, sx, zx, sy, zy), want)


@pytest.mark.parametrize("seed", range(4))
def test_dynamic_quantize_linear_rule_equals_onnxruntime(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 17)) * rng.uniform(0.1, 10) + rng.uniform(-2, 2)).astype(np.float32)
    i = helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in
            (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))]
    g = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g", [i], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = dynamic_quantize_linear(x)
    for g_, w_ in zip(got, want):
        assert np.array_equal(np.asarray(g_).reshape(-1), np.asarray(w_).reshape(-1))


def test_cli_inspect_and_run_an_imported_model(tmp_path, capsys):
    import json

    from refquant.cli import main

    path = quantized_model("digits-cnn", "qdq", "tensor", "u8u8")
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["form"] == "qdq" and not info["unsupported"]
    assert {r["op"]: r["format"] for r in info["layers"]}["QLinearConv"] == "integer"
    m = import_quantized(path)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "out.npz"
    assert main(["run", path, "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out), "--backend", "numba"]) == 0
    with np.load(out) as z:
        assert np.array_equal(z[m.outputs[0]], m.run(x).outputs[m.outputs[0]])
    capsys.readouterr()
    bad = {"extra": {"x": x, "y": x}, "missing": {"z": x}, "dtype": {"x": x.astype(np.float64)},
           "shape": {"x": x.reshape(3, 64)}, "pickled": {"x": np.array([{}], dtype=object)}}
    for what, arrays in bad.items():
        np.savez(tmp_path / f"{what}.npz", **arrays)
        target = tmp_path / f"{what}.out.npz"
        assert main(["run", path, "--inputs", str(tmp_path / f"{what}.npz"), "--outputs", str(target)]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("refquant: error:") and "\n" not in err, (what, err)
        assert not target.exists()


@pytest.mark.parametrize("seed", range(6))
def test_qlinear_average_pool_rule_equals_onnxruntime(seed):
    from refquant.onnx_io.qimport import dequantize_linear, quantize_linear
    from refquant.ops import FLOAT_OPS

    rng = np.random.default_rng(seed)
    dtype = (np.uint8, np.int8)[seed % 2]
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, 3, 7, 6)).astype(dtype)
    sx, sy = (np.array(v, np.float32) for v in rng.uniform(0.01, 0.1, 2))
    zx, zy = (np.array(v, dtype) for v in rng.integers(info.min, info.max + 1, 2))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": int(seed % 3 == 0)}
    want = _ort_node("QLinearAveragePool", {"x": x, "sx": sx, "zx": zx, "sy": sy, "zy": zy}, dtype, attrs,
                     domain="com.microsoft")
    got = quantize_linear(FLOAT_OPS["AveragePool"](dequantize_linear(x, sx, zx), **attrs), sy, zy)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_float_island_rules_equal_onnxruntime(seed):
    """qdq-float's float32 Conv / Gemm / GlobalAveragePool follow onnxruntime's MLAS order
    (one FMA per k in order, then the bias; 4-lane sums), so they agree to the last bit."""
    from refquant.onnx_io.qimport import mlas_conv, mlas_gemm, mlas_global_average_pool

    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 9))
    x = rng.standard_normal((3, c, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "strides": [1 + seed % 2, 1], "kernel_shape": [3, 3]}
    assert np.array_equal(mlas_conv(x, w, b, **attrs), _ort_node("Conv", {"x": x, "w": w, "b": b}, np.float32, attrs))
    a, m = rng.standard_normal((5, 37)).astype(np.float32), rng.standard_normal((7, 37)).astype(np.float32)
    assert np.array_equal(mlas_gemm(a, m, b[:1].repeat(7), transB=1),
                          _ort_node("Gemm", {"a": a, "m": m, "c": b[:1].repeat(7)}, np.float32, {"transB": 1}))
    g = rng.standard_normal((2, 3, 5, int(rng.integers(1, 9)))).astype(np.float32)
    assert np.array_equal(mlas_global_average_pool(g), _ort_node("GlobalAveragePool", {"g": g}, np.float32))
    # grouped, 2 or 3 input channels per group: MlasConv's per-group im2col + SGEMM
    groups, cg = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    xg = rng.standard_normal((2, groups * cg, 7, 6)).astype(np.float32)
    wg = rng.standard_normal((groups * 2, cg, 3, 3)).astype(np.float32)
    ga = {**attrs, "group": groups}
    assert np.array_equal(mlas_conv(xg, wg, b[:1].repeat(groups * 2), **ga),
                          _ort_node("Conv", {"x": xg, "w": wg, "b": b[:1].repeat(groups * 2)}, np.float32, ga))
    # K beyond MLAS's 128-deep panel with N >= K: K in slices; Gemm accumulates into its C
    kk = int(rng.integers(129, 300))
    x1 = rng.standard_normal((1, kk, 12, 12)).astype(np.float32)
    w1 = rng.standard_normal((3, kk, 1, 1)).astype(np.float32)
    assert np.array_equal(mlas_conv(x1, w1, b[:3], kernel_shape=[1, 1]),
                          _ort_node("Conv", {"x": x1, "w": w1, "b": b[:3]}, np.float32, {"kernel_shape": [1, 1]}))
    a2, m2 = rng.standard_normal((4, kk)).astype(np.float32), rng.standard_normal((kk + 9, kk)).astype(np.float32)
    c2 = rng.standard_normal(kk + 9).astype(np.float32)
    assert np.array_equal(mlas_gemm(a2, m2, c2, transB=1),
                          _ort_node("Gemm", {"a": a2, "m": m2, "c": c2}, np.float32, {"transB": 1}))
    # one row (M = 1): MLAS's M1 kernels, B transposed or not, Gemm and MatMul
    from refquant.onnx_io.qimport import QStep, _float_op
    n1 = int(rng.integers(1, 12))
    a1, m1, c1 = a2[:1], m2[:n1], c2[:n1]
    assert np.array_equal(mlas_gemm(a1, m1, c1, transB=1),
                          _ort_node("Gemm", {"a": a1, "m": m1, "c": c1}, np.float32, {"transB": 1}))
    mt = np.ascontiguousarray(m1.T)
    assert np.array_equal(mlas_gemm(a1, mt, c1), _ort_node("Gemm", {"a": a1, "m": mt, "c": c1}, np.float32))
    assert np.array_equal(_float_op(QStep("MatMul", [], [], {}, "mm"), [a1, mt]),
                          _ort_node("MatMul", {"a": a1, "m": mt}, np.float32))
    # depthwise (one filter per group, M = 1: MLAS's M1 kernel), strides and kernel sizes varied
    k, s = int(rng.choice([3, 5, 7])), 1 + seed % 2
    xd = rng.standard_normal((2, 5, 11, 10)).astype(np.float32)
    wd = rng.standard_normal((5, 1, k, k)).astype(np.float32)
    da = {"group": 5, "kernel_shape": [k, k], "strides": [s, s], "pads": [k // 2, k // 2 - 1 + s % 2, k // 2, k // 2]}
    assert np.array_equal(mlas_conv(xd, wd, b[:1].repeat(5), **da),
                          _ort_node("Conv", {"x": xd, "w": wd, "b": b[:1].repeat(5)}, np.float32, da))


def test_inspect_names_unsupported_operators_and_run_refuses_them(tmp_path, capsys):
    import json

    from refquant.cli import main

    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), helper.make_node("Softsign", ["d"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(np.float32(0.1), "s"), onnx.numpy_helper.from_array(np.uint8(128), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "unsupported.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["unsupported"] == ["Softsign_2 (Softsign)"]
    assert [r["format"] for r in info["layers"]] == ["boundary", "boundary", "unsupported"]
    np.savez(tmp_path / "in.npz", x=np.ones((2, 3), np.float32))
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 2
    assert "Softsign" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("seed", range(8))
def test_qlinear_concat_rule_equals_onnxruntime(seed):
    """Every code of each 8-bit type through ``com.microsoft.QLinearConcat`` (three inputs; one
    with the output's own scale and zero point, the copy path), with the qparams as graph inputs
    (the table built per run) or as initializers (built once, when the kernel is created)."""
    from onnx import numpy_helper

    from refquant.onnx_io.qimport import qlinear_concat

    rng = np.random.default_rng(seed)
    dtype = (np.uint8, np.int8)[seed % 2]
    info = np.iinfo(dtype)
    codes = np.arange(info.min, info.max + 1).astype(dtype)
    xs = [codes.reshape(2, 128), rng.integers(info.min, info.max + 1, (2, 5)).astype(dtype), codes[:64].reshape(2, 32)]
    ys, yz = np.array(rng.uniform(0.005, 0.1), np.float32), np.array(rng.integers(info.min, info.max + 1), dtype)
    qps = [(np.array(rng.uniform(0.005, 0.1), np.float32), np.array(rng.integers(info.min, info.max + 1), dtype)),
           (ys.copy(), yz.copy()),
           (np.array(ys * np.float32(rng.choice([0.5, 2.0, 1.5])), np.float32), yz.copy())]
    feeds, consts, names = {}, {}, ["ys", "yz"]
    (consts if seed % 4 >= 2 else feeds).update(ys=ys, yz=yz)
    for k, (x, (s, z)) in enumerate(zip(xs, qps)):
        feeds[f"x{k}"] = x
        (consts if seed % 4 >= 2 else feeds).update({f"s{k}": s, f"z{k}": z})
        names += [f"x{k}", f"s{k}", f"z{k}"]
    tp = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    g = helper.make_graph([helper.make_node("QLinearConcat", names, ["y"], domain="com.microsoft", axis=1)], "g",
                          [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                           for k, v in feeds.items()], [helper.make_tensor_value_info("y", tp, None)],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.intra_op_num_threads = 1
    want = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(qlinear_concat(ys, yz, [(x, s, z) for x, (s, z) in zip(xs, qps)], 1), want)
    got = import_quantized(m).run(feeds).outputs["y"]   # the QOperator model imported as it is
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_inspect_run_and_golden_export_of_a_qdq_concat(tmp_path, capsys):
    """``DQ(x), DQ(constant) → Concat → Q`` is fused into one ``QLinearConcat`` step: ``inspect``
    shows it as an integer step with every input's qparams, ``run`` equals onnxruntime
    (optimizations on), and ``golden export`` writes it as a (non-replayable) layer that
    ``golden verify`` passes on the import's own integers."""
    import json

    from onnx import numpy_helper

    from refquant.cli import main

    rng = np.random.default_rng(0)
    c = rng.integers(0, 256, (1, 2, 3)).astype(np.uint8)
    inits = {"s": np.float32(0.02), "z": np.uint8(120), "C": c, "cs": np.float32(0.05), "cz": np.uint8(7),
             "ys": np.float32(0.03), "yz": np.uint8(100)}
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Qx"),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="DQx"),
         helper.make_node("DequantizeLinear", ["C", "cs", "cz"], ["dc"], name="DQc"),
         helper.make_node("Concat", ["d", "dc"], ["cat"], name="cat", axis=1),
         helper.make_node("QuantizeLinear", ["cat", "ys", "yz"], ["yq"], name="Qy"),
         helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="DQy")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 3])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "concat.qdq.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("cat "))
    assert "QLinearConcat" in line and "integer" in line and "uint8 s=0.02 z=120 | uint8 s=0.05 z=7" in line, text
    assert main(["inspect", str(path), "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["layers"] if r["op"] == "QLinearConcat")
    assert row["rule"].startswith("qlinear-lookup-table") and row["fused_from"] == ["DQx", "DQc", "cat", "Qy"]
    assert [q["zero_point"] for q in row["inputs"]] == [120, 7] and row["output"]["zero_point"] == 100

    x = rng.normal(0, 1, (1, 3, 3)).astype(np.float32)
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    want = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(import_quantized(str(path)).run({"x": x}).outputs["y"], want)

    np.savez(tmp_path / "in.npz", x=x)
    assert main(["golden", "export", str(path), str(tmp_path / "gs"), "--inputs", str(tmp_path / "in.npz")]) == 0
    from refquant.golden import load_golden, verify
    gs = load_golden(tmp_path / "gs")
    layer = gs.layer("cat")
    assert layer["op"] == "QLinearConcat" and not layer["imported"]["replayable"]
    assert layer["operands"] == [{"layer": "Qx"}, {"constant": "input1"}]
    r = import_quantized(str(path)).run({"x": x}, keep=True)
    assert verify(gs, {"cat": r.tensors["yq"], "Qx": r.tensors["q"]}).passed
