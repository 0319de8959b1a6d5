"""The refquant_dynamic plugin: qparams from int32 accumulators, against the float output's range
and onnxruntime's DynamicQuantizeLinear."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refquant import plugins
from refquant.numerics import qparams_from_range, tensor_range
from refquant.registry import quantizers
from refquant.strategies import LayerSpec
from refquant_dynamic import DynamicActivations

DYNAMIC = DynamicActivations()


def spec(granularity="per-tensor", symmetric=False, signed=None, bits=8):
    signed = symmetric if signed is None else signed
    return LayerSpec("conv2", "Conv", bits, signed, granularity, symmetric)


def float_output(acc, acc_scale, channel_axis, fused):
    """The layer's real output, formed: float32(acc) · s[c] (float32), then the activation."""
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    s = np.broadcast_to(np.asarray(acc_scale, np.float32).reshape(-1), (acc.shape[channel_axis],))
    y = acc.astype(np.float32) * s.reshape(shape)
    if fused == "relu":
        y = np.maximum(y, np.float32(0))
    elif fused == "relu6":
        y = np.clip(y, np.float32(0), np.float32(6))
    return y


int32s = st.integers(-(2**31), 2**31 - 1)
accumulators = hnp.arrays(np.int32, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)),
                          elements=st.integers(-3000, 3000) | int32s)
scales = st.floats(float(np.float32(1e-9)), float(np.float32(1e-2)), width=32)


@pytest.fixture
def fresh_plugins(monkeypatch):
    plugins.reset()
    yield monkeypatch
    monkeypatch.delenv("REFQUANT_PLUGINS", raising=False)
    plugins.reset()


def test_entry_point_registers_dynamic(fresh_plugins):
    entry = quantizers("activations")["dynamic"]
    assert (entry.plugin, entry.distribution) == ("dynamic", "refquant")
    assert entry.obj.timing == "after" and entry.doc
    fresh_plugins.setenv("REFQUANT_PLUGINS", "static")
    plugins.reset()
    assert "dynamic" not in quantizers()


# ----------------------------------------------------------------------------- the rule

@given(accumulators, st.data(), st.booleans(), st.booleans(), st.sampled_from([None, "relu", "relu6"]),
       st.sampled_from([(8, False), (8, True), (4, False), (6, True)]))
def test_qparams_after_equal_the_range_of_the_float_output(acc, data, per_channel, per_channel_scale,
                                                            fused, grid):
    bits, symmetric = grid
    channels = acc.shape[1]
    acc_scale = np.array(data.draw(st.lists(scales, min_size=channels, max_size=channels))
                         if per_channel_scale else [data.draw(scales)], np.float32)
    sp = spec("per-channel" if per_channel else "per-tensor", symmetric, bits=bits)
    got = DYNAMIC.qparams_after(acc, acc_scale, sp, fused_activation=fused)
    y = float_output(acc, acc_scale, 1, fused)
    lo, hi = tensor_range(y, axis=1 if per_channel else None)
    assert got == qparams_from_range(lo, hi, sp.fmt, symmetric=symmetric, axis=1 if per_channel else None)
    assert DYNAMIC.qparams_for_float(y, sp, None) == got  # the float path gives the same qparams
    if per_channel:
        assert got.axis == 1 and got.scale.shape == (channels,)


def test_per_tensor_range_uses_each_channels_scale():
    acc = np.array([[100, -100], [10, -10]], np.int32)[None]  # [1, 2, 2]: channel 1 has the small acc
    acc_scale = np.array([0.001, 1.0], np.float32)  # … and the large scale: its range wins
    qp = DYNAMIC.qparams_after(acc, acc_scale, spec())
    assert qp == qparams_from_range(-10.0, 10.0, "uint8")


def test_gemm_output_with_channels_last_axis():
    acc = np.arange(-6, 6, dtype=np.int32).reshape(4, 3)  # [N, C], channel axis 1 (= -1)
    for axis in (1, -1):
        qp = DYNAMIC.qparams_after(acc, np.float32(0.5), spec("per-channel"), channel_axis=axis)
        assert qp.axis == 1
        assert np.array_equal(qp.scale, (np.maximum(acc.max(0), 0) - np.minimum(acc.min(0), 0))
                              .astype(np.float32) * np.float32(0.5) / np.float32(255))


def test_relu6_clamps_and_an_all_negative_relu_output_is_degenerate():
    acc = np.array([[[-50], [20]]], np.int32)  # channels: all negative, and 20 · 0.5 = 10 > 6
    qp = DYNAMIC.qparams_after(acc, np.float32(0.5), spec("per-channel"), fused_activation="relu6")
    assert qp.scale.tolist() == [1.0, np.float32(6) / np.float32(255)]
    assert qp.zero_point.tolist() == [0, 0]


def test_large_accumulators_round_as_float32_does():
    acc = np.array([[[2**24 + 1, 2**30 + 65]]], np.int32)  # float32 holds neither exactly
    qp = DYNAMIC.qparams_after(acc, np.float32(1), spec())
    assert qp.scale == np.float32(np.float32(2**30 + 65)) / np.float32(255)  # 2^30 + 64 · 1 / 255


# ----------------------------------------------------------------------------- onnxruntime

@pytest.fixture(scope="module")
def ort_dynamic_quantize_linear():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "y_scale", "y_zero_point"])
    graph = helper.make_graph(
        [node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "l"])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n", "c", "l"]),
         helper.make_tensor_value_info("y_scale", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("y_zero_point", TensorProto.UINT8, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})


@given(accumulators, scales, st.sampled_from([None, "relu", "relu6"]))
def test_uint8_per_tensor_equals_onnxruntime_dynamic_quantize_linear(ort_dynamic_quantize_linear, acc,
                                                                      s, fused):
    y = float_output(acc, s, 1, fused)
    _, ort_scale, ort_zp = ort_dynamic_quantize_linear(y)
    qp = DYNAMIC.qparams_after(acc, np.float32(s), spec(), fused_activation=fused)
    assert qp.scale == ort_scale, f"scale differs by {abs(float(qp.scale) - float(ort_scale))}"
    assert int(qp.zero_point) - int(ort_zp) == 0, "zero point differs (in LSBs)"
    float_qp = DYNAMIC.qparams_for_float(y, spec(), None)
    assert float_qp.scale == ort_scale and float_qp.zero_point == ort_zp


def test_all_zero_accumulators_match_onnxruntime(ort_dynamic_quantize_linear):
    acc = np.zeros((2, 3, 4), np.int32)
    _, ort_scale, ort_zp = ort_dynamic_quantize_linear(acc.astype(np.float32))
    qp = DYNAMIC.qparams_after(acc, np.float32(0.1), spec())
    assert (float(qp.scale), int(qp.zero_point)) == (float(ort_scale), int(ort_zp)) == (1.0, 0)


# ----------------------------------------------------------------------------- observer and errors

@given(st.lists(hnp.arrays(np.float32, (3, 2), elements=st.floats(-100, 100, width=32)), min_size=1,
                max_size=4), st.booleans())
def test_observer_is_the_dynamic_rule_over_all_calibration_data(batches, per_channel):
    sp = spec("per-channel" if per_channel else "per-tensor")
    obs = DYNAMIC.make_observer(sp)
    for b in batches:
        obs.observe(b)
    assert obs.qparams() == DYNAMIC.qparams_for_float(np.concatenate(batches), sp, None)


def test_bad_inputs_get_clear_errors():
    acc = np.ones((1, 2, 3), np.int32)
    with pytest.raises(TypeError, match="'conv2'.*integers"):
        DYNAMIC.qparams_after(acc.astype(np.float32), np.float32(1), spec())
    with pytest.raises(ValueError, match="'conv2'.*empty"):
        DYNAMIC.qparams_after(np.zeros((0, 2, 3), np.int32), np.float32(1), spec())
    with pytest.raises(ValueError, match="'conv2'.*1 or 2 entries"):
        DYNAMIC.qparams_after(acc, np.ones(3, np.float32), spec())
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="'conv2'.*finite and > 0"):
            DYNAMIC.qparams_after(acc, np.float32(bad), spec())
    with pytest.raises(ValueError, match="'conv2'.*fused activation 'gelu'"):
        DYNAMIC.qparams_after(acc, np.float32(1), spec(), fused_activation="gelu")
    with pytest.raises(ValueError, match="'conv2'.*channel axis 3"):
        DYNAMIC.qparams_after(acc, np.float32(1), spec(), channel_axis=3)
    with pytest.raises(ValueError, match="'conv2'.*non-finite"):
        DYNAMIC.qparams_for_float(np.array([1.0, np.nan], np.float32), spec(), None)
    with pytest.raises(ValueError, match="'conv2'.*empty"):
        DYNAMIC.qparams_for_float(np.zeros((0, 3), np.float32), spec(), None)
    with pytest.raises(ValueError, match="'conv2'.*axis 1"):
        DYNAMIC.qparams_for_float(np.ones(4, np.float32), spec("per-channel"), None)
    obs = DYNAMIC.make_observer(spec())
    obs.observe(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match="'conv2'.*seen no values"):
        obs.qparams()
