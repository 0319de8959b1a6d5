"""Golden sets of an imported onnxruntime-quantized model: ``refquant golden export MODEL.onnx
DIR --inputs IN.npz`` writes the imported model's integer steps as golden layers, and onnxruntime's
own per-layer integers (every layer's ONNX tensor added as a graph output) pass
``refquant golden verify``. digits-cnn, QOperator, per-channel s8s8 — a pair onnxruntime multiplies
exactly on this host — and QDQ u8u8."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from qimport_grid import digits, quantized_model  # noqa: E402
from refquant.cli import main  # noqa: E402
from refquant.data import digits_inputs  # noqa: E402
from refquant.golden import load_golden, verify  # noqa: E402
from refquant.golden.imported import layer_tensors  # noqa: E402
from refquant.onnx_io import exact_integer_products  # noqa: E402
from refquant.registry import resolve_model  # noqa: E402


def _onnxruntime_layer_outputs(path, gs, feeds) -> dict:
    """onnxruntime's value of every golden layer (its tensor made a graph output), optimizations
    on with int8 kept int8, plus the float graph outputs; keyed as ``verify`` reads them."""
    m = onnx.load(path)
    tensors = layer_tensors(gs)
    have = {o.name for o in m.graph.output}
    for t in tensors.values():
        if t not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry("session.qdqisint8allowed", "1")
    s = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
    names = [x.name for x in s.get_outputs()]
    values = dict(zip(names, s.run(None, feeds)))
    out = {layer: values[t] for layer, t in tensors.items()}
    out.update({o["name"]: values[o["name"]] for o in gs.manifest["outputs"]})
    return out


@pytest.mark.parametrize("model,form,granularity,act", [
    ("digits-cnn", "qoperator", "channel", "s8s8"),
    ("digits-cnn", "qdq", "tensor", "u8u8"),
    ("digits-resnet", "qdq", "tensor", "s8s8"),  # QLinearAdd (MLAS rule): compared, not replayable
])
def test_golden_set_of_an_imported_model_verifies_onnxruntime_per_layer(tmp_path, capsys, model, form, granularity,
                                                                        act):
    dt = "int8" if act == "s8s8" else "uint8"
    if not exact_integer_products(dt, dt):
        pytest.skip(f"onnxruntime does not multiply {dt}x{dt} exactly on this host")
    path = quantized_model(model, form, granularity, act)
    x = digits_inputs(resolve_model(model), digits().test.x[:4]).astype(np.float32)
    name = onnx.load(path).graph.input[0].name
    np.savez(tmp_path / "in.npz", **{name: x})
    assert main(["golden", "export", path, str(tmp_path / "gs"), "--inputs", str(tmp_path / "in.npz")]) == 0
    gs = load_golden(tmp_path / "gs")
    ops = [layer["op"] for layer in gs.layers]
    if model == "digits-cnn":
        assert ops.count("Conv") == 2 and ops.count("Gemm") == 1, ops
    else:
        adds = [layer for layer in gs.layers if layer["op"] == "QLinearAdd"]
        assert len(adds) == 2 and all(not layer["imported"]["replayable"] for layer in adds), ops
        from refquant.golden import replay
        with pytest.raises(ValueError, match="replay does not run"):
            replay(gs)
    assert gs.manifest["imported"]["excluded"], "the float steps are listed, not dropped silently"
    assert all(layer["kernel"] == "fused" and "requantization" in layer and "bias" in layer["tensors"]
               for layer in gs.layers if layer["op"] in ("Conv", "Gemm"))

    outs = _onnxruntime_layer_outputs(path, gs, {name: x})
    np.savez(tmp_path / "ort.npz", **outs)
    capsys.readouterr()
    assert main(["golden", "verify", str(tmp_path / "gs"), "--outputs", str(tmp_path / "ort.npz")]) == 0, \
        capsys.readouterr().out
    report = verify(tmp_path / "gs", outs)
    assert report.passed and all(r.status == "exact" for r in report.layers), report.format_text()

    # a wrong integer is caught and located
    bad = dict(outs)
    conv = next(layer["name"] for layer in gs.layers if layer["op"] == "Conv")
    bad[conv] = outs[conv].copy()
    bad[conv].flat[7] = np.clip(int(bad[conv].flat[7]) + 3, np.iinfo(bad[conv].dtype).min, np.iinfo(bad[conv].dtype).max)
    if not np.array_equal(bad[conv], outs[conv]):
        r = verify(tmp_path / "gs", bad)
        assert not r.passed and r.summary.startswith("FAIL") and conv in r.summary


def test_golden_run_replays_the_imported_conv_and_gemm_layers(tmp_path):
    """The imported product layers are refquant's own Conv/Gemm layer schema: ``replay``
    recomputes them from the golden inputs, equal to the recorded integers."""
    from refquant.golden import replay
    path = quantized_model("digits-cnn", "qoperator", "channel", "s8s8")
    x = digits_inputs(resolve_model("digits-cnn"), digits().test.x[:2]).astype(np.float32)
    from refquant.golden.imported import export_imported_golden
    gs = export_imported_golden(path, {onnx.load(path).graph.input[0].name: x}, tmp_path / "gs")
    out = replay(gs)
    for layer in gs.layers:
        assert np.array_equal(out[layer["name"]], gs.layer_tensor(layer, "output")), layer["name"]
