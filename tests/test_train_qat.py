"""Fake quantization in training: the STE rule, where the fake-quantizers sit, the min-max
quantizers, the ``register_qat_quantizers`` hook, and QAT models in the quantized executor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests_support import small_cnn, small_mlp

from refquant import plugins, registry
from refquant.executor import quantize_model
from refquant.graph import GraphBuilder, load_model, save_model
from refquant.hookspecs import hookimpl
from refquant.numerics import QParams, dequantize, int_format, qparams_from_range, quantize
from refquant.strategies import LayerSpec, QATQuantizer
from refquant.train import FakeQuant, Trainer, config_for, fake_quantize
from refquant.train.autodiff import backward, forward
from refquant.train.minmax_qat import EMAMinMaxQATActivations, MinMaxQATWeights


#: every test starts from a fresh plugin manager with no REFQUANT_PLUGINS (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_plugin_manager")


# ---- the fake-quantize rule ---------------------------------------------------------------------


@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(2, 8), signed=st.booleans(), per_channel=st.booleans(),
       spread=st.sampled_from([0.5, 1.0, 3.0]))
def test_fake_quantize_is_dequantize_of_quantize_and_mask_marks_saturation(seed, bits, signed, per_channel, spread):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 4, 5)) * spread).astype(np.float32)
    fmt = int_format(f"{'' if signed else 'u'}int{bits}")
    if per_channel:
        qp = qparams_from_range(-np.ones(4), np.full(4, 1.5), fmt, axis=1)
    else:
        qp = qparams_from_range(-1.0, 1.5, fmt)
    y, mask = fake_quantize(x, qp)
    assert y.dtype == np.float32 and mask.dtype == bool
    assert np.array_equal(y, dequantize(quantize(x, qp), qp))
    scale, zp = qp.broadcast_to(x.shape)
    unclipped = np.rint(x / scale).astype(np.float64) + zp
    assert np.array_equal(mask, (unclipped >= fmt.qmin) & (unclipped <= fmt.qmax))
    # where the mask is False the value sits on an end of the grid and x lies beyond it
    q = quantize(x, qp).astype(np.int64)
    assert np.all(np.isin(q[~mask], [fmt.qmin, fmt.qmax]))
    assert np.all(np.abs(x[~mask]) >= np.abs(y[~mask]))


def test_fake_quantize_passes_a_value_that_rounds_onto_the_last_grid_point():
    qp = QParams(np.float32(1.0), 0, int_format("int8"))
    y, mask = fake_quantize(np.array([127.4, 127.6, -128.4, -128.6], np.float32), qp)
    assert y.tolist() == [127.0, 127.0, -128.0, -128.0]
    assert mask.tolist() == [True, False, True, False]


# ---- the built-in min-max quantizers --------------------------------------------------------------


@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(2, 8), per_channel=st.booleans(), symmetric=st.booleans())
def test_minmax_qat_weights_equal_post_training_minmax(seed, bits, per_channel, symmetric):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 3, 3, 3)) * rng.uniform(0.1, 2, (4, 1, 1, 1))).astype(np.float32)
    spec = LayerSpec("conv", "Conv", bits, True, "per-channel" if per_channel else "per-tensor", symmetric)
    y, mask, state = MinMaxQATWeights().fake_quant(w, {}, spec, True)
    ptq = registry.get_quantizer("minmax", "weights").quantize_weight(w, spec)
    assert np.array_equal(y, ptq.dequantize())
    assert mask.all() and state == {}


def test_ema_minmax_updates_its_range_in_training_only():
    q = EMAMinMaxQATActivations()
    spec = LayerSpec("relu", "Conv", 4, False, "per-tensor", False)
    first = np.array([[0.0, 1.0, 2.0]], np.float32)
    state = q.init_state(first, spec)
    assert state["lo"].tolist() == [0.0] and state["hi"].tolist() == [2.0]
    batch = np.array([[0.0, 4.0]], np.float32)
    _, _, after_eval = q.fake_quant(batch, state, spec, False)
    assert after_eval["hi"].tolist() == [2.0]
    y, mask, after_train = q.fake_quant(batch, state, spec, True)
    expected = np.float32(0.9) * np.float32(2.0) + (np.float32(1) - np.float32(0.9)) * np.float32(4.0)
    assert after_train["hi"].tolist() == [expected]
    assert mask.tolist() == [[True, False]] and y[0, 1] == pytest.approx(expected, rel=1e-6)
    assert state["hi"].tolist() == [2.0]  # the input state is not modified in place


def test_builtin_qat_quantizers_follow_the_protocol_and_are_registered_by_the_engine():
    found = registry.qat_quantizers()
    assert found["minmax"].obj.kind == "weights" and found["ema-minmax"].obj.kind == "activations"
    assert found["minmax"].plugin == "refquant" and found["ema-minmax"].plugin == "refquant"
    assert set(registry.qat_quantizers("weights")) >= {"minmax"}
    assert "ema-minmax" not in registry.qat_quantizers("weights")
    for e in found.values():
        assert isinstance(e.obj, QATQuantizer)
    with pytest.raises(ValueError, match=r"unknown activations QAT quantizer 'minmax'; registered: .*ema-minmax"):
        registry.get_qat_quantizer("minmax", "activations")


# ---- a plugin's quantizers: analytic weights (κ·σ) and an iterative activation fixed point --------


class KappaSigmaWeights:
    """Analytic weights: symmetric scale ``κ·σ(w)`` recomputed at every step (StatQAT's shape)."""

    name, kind, doc = "test-kappa-sigma", "weights", "analytic κσ weights (test plugin)"
    step_per_sigma = {2: 0.9957, 3: 0.5860, 4: 0.3352, 8: 0.0308}  # near-optimal Gaussian steps

    def init_state(self, x, spec):
        return {}

    def fake_quant(self, x, state, spec, training):
        scale = np.float32(self.step_per_sigma.get(spec.bits, 0.3) * float(np.std(x)))
        y, mask = fake_quantize(x, QParams(scale, 0, spec.fmt, name=spec.layer))
        return y, mask, state


class FixedPointActivations:
    """Iterative activations: a few clip fixed-point steps warm-started from the state, and an
    EMA of the resulting scale used in evaluation (StatQAT's shape)."""

    name, kind, doc = "test-fixed-point", "activations", "iterative clip with an EMA (test plugin)"

    def init_state(self, x, spec):
        c = np.float32(np.abs(x).mean() * 3 + 1e-3)
        return {"clip": np.array(c), "scale": np.array(c / spec.fmt.qmax, np.float32)}

    def fake_quant(self, x, state, spec, training):
        scale = np.float32(state["scale"])
        new = dict(state)
        if training:
            a = np.abs(x.astype(np.float64)).ravel()
            c = float(state["clip"])
            for _ in range(3):  # c <- sum_{|x|>c} |x| / (N_in / (12 Q^2) + N_clip)
                out = a > c
                denom = (~out).sum() / (12 * spec.fmt.qmax**2) + out.sum()
                c = a[out].sum() / denom if out.any() else c
            new = {"clip": np.array(np.float32(c)),
                   "scale": np.array(np.float32(0.9) * scale + np.float32(0.1) * np.float32(c / spec.fmt.qmax))}
            scale = np.float32(new["scale"])
        lo = -scale * spec.fmt.qmax if x.min() < 0 else 0.0
        qp = qparams_from_range(lo, scale * spec.fmt.qmax, spec.fmt, symmetric=spec.symmetric, name=spec.layer)
        y, mask = fake_quantize(x, qp)
        return y, mask, new


class StatLikePlugin:
    @hookimpl
    def register_qat_quantizers(self, register):
        register(KappaSigmaWeights())
        register(FixedPointActivations())


def test_a_plugin_registers_qat_quantizers_and_trains_with_them_without_special_cases(tmp_path):
    plugins.register_plugin(StatLikePlugin(), "statlike")
    found = registry.qat_quantizers()
    assert found["test-kappa-sigma"].plugin == "statlike"
    assert found["test-fixed-point"].doc == "iterative clip with an EMA (test plugin)"
    config = config_for("digits-mlp", epochs=2, qat="weights=test-kappa-sigma:4 activations=test-fixed-point:4")
    trainer = Trainer(config)
    trainer.fit(stop_at=1, checkpoint=tmp_path / "ck.npz")
    point = trainer.fake_quant.activations["relu1.out"]
    assert set(point.state) == {"clip", "scale"}
    resumed = Trainer.resume(tmp_path / "ck.npz")
    assert np.array_equal(resumed.fake_quant.activations["relu1.out"].state["scale"], point.state["scale"])
    trainer.fit()
    resumed.fit()
    for k in trainer.params:
        assert trainer.params[k].tobytes() == resumed.params[k].tobytes(), k
    assert trainer.history[-1]["test_accuracy"] > 0.8


class _Incomplete:
    name, kind, doc = "incomplete", "weights", "no fake_quant"

    def init_state(self, x, spec):
        return {}


def test_qat_hook_errors_name_the_problem():
    class Dup:
        @hookimpl
        def register_qat_quantizers(self, register):
            register(MinMaxQATWeights())

    plugins.register_plugin(Dup(), "dup")
    with pytest.raises(ValueError, match=r"'minmax' is registered by both plugin '(refquant|dup)' and plugin"):
        registry.qat_quantizers()
    plugins.reset()

    class Bad:
        @hookimpl
        def register_qat_quantizers(self, register):
            register(_Incomplete())

    plugins.register_plugin(Bad(), "bad")
    with pytest.raises(TypeError, match=r"plugin 'bad': register_qat_quantizers: .* lacks fake_quant\(\)"):
        registry.qat_quantizers()


def test_fake_quant_rejects_a_quantizer_that_returns_the_wrong_mask():
    class NoMask(MinMaxQATWeights):
        name = "nomask"

        def fake_quant(self, x, state, spec, training):
            y, mask, s = super().fake_quant(x, state, spec, training)
            return y, mask.astype(np.float32), s

    g, x = small_mlp()
    lookup = {"nomask": NoMask(), "ema-minmax": EMAMinMaxQATActivations()}
    fq = FakeQuant(g, "weights=nomask:4 activations=ema-minmax:4", get_quantizer=lambda n, k: lookup[n])
    with pytest.raises(TypeError, match="QAT quantizer 'nomask' at weights of 'fc1': .*bool mask"):
        forward(g, dict(g.initializers), {"x": x}, training=True, fake_quant=fq)


# ---- placement: the tensors the quantized executor quantizes --------------------------------------


def test_fake_quant_points_are_the_quantized_executors_quantization_points():
    g, x = small_cnn()
    plan = ("weights=minmax:4:per-channel activations=static-minmax:6 conv2.activations=static-minmax:5 "
            "fc.weights=minmax:3")
    qm = quantize_model(g, plan, x)
    fq = FakeQuant(g, plan.replace("static-minmax", "ema-minmax"))
    assert set(fq.weights) == set(qm.layers) == {"conv1", "conv2", "fc"}
    for name, point in fq.weights.items():
        assert point.spec == qm.layers[name].weight_spec
    requantized = {t for t, _ in qm.tensor_specs.items()} - {
        s.output for s in qm.steps if s.node.op_type in ("Relu", "Clip", "MaxPool", "Flatten", "Reshape")}
    assert set(fq.activations) == requantized
    for t, point in fq.activations.items():
        assert point.spec == qm.tensor_specs[t][1], t
    # the max-pool and flatten outputs keep their input's grid: no fake-quant there
    assert not any(t.startswith(("maxpool", "flatten")) for t in fq.activations)


def test_ste_gradients_are_masked_where_values_saturated():
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    y = b.gemm(b.input("x", ["N", 3]), rng.standard_normal((2, 3)).astype(np.float32), None, transB=1, name="fc")
    g = b.build(y)
    x = (rng.standard_normal((64, 3)) * 3).astype(np.float32)
    fq = FakeQuant(g, "weights=minmax:2 activations=ema-minmax:2")
    fq.activations["x"].state = {"lo": np.float32([-1.0]), "hi": np.float32([1.0])}
    fq.activations[y].state = {"lo": np.float32([-0.5]), "hi": np.float32([0.5])}
    tape = forward(g, dict(g.initializers), {"x": x}, training=False, fake_quant=fq)
    x_mask, y_mask = tape.masks["x"], tape.masks[y]
    assert not x_mask.all() and not y_mask.all() and y_mask.any()
    dy = rng.standard_normal(tape.values[y].shape).astype(np.float32)
    (dw,) = backward(g, tape, {y: dy}).values()
    x_q = tape.values["x"]
    expected = np.where(tape.weight_masks["fc"], np.where(y_mask, dy, 0).T @ x_q, 0)
    assert np.array_equal(dw, expected)
    assert np.array_equal(x_q, fake_quantize(x, qparams_from_range(-1.0, 1.0, int_format("uint2")))[0])


def test_qat_refuses_an_unfolded_batchnorm():
    from refquant.train.architectures import build_resnet

    with pytest.raises(ValueError, match=r"needs BatchNormalization folded .* --from NAME --qat"):
        FakeQuant(build_resnet(np.random.default_rng(0)), "weights=minmax:4 activations=ema-minmax:4")


def test_unknown_qat_quantizer_is_named():
    with pytest.raises(ValueError, match=r"unknown weights QAT quantizer 'statqat'; registered: minmax"):
        Trainer(config_for("digits-mlp", qat="weights=statqat:4 activations=ema-minmax:4"))


# ---- a QAT model in the quantized executor ------------------------------------------------------------


def test_a_qat_model_saves_and_runs_in_the_quantized_executor_with_the_same_bits(tmp_path):
    qat = "weights=minmax:4:per-channel activations=ema-minmax:4"
    trainer = Trainer(config_for("digits-mlp", epochs=2, qat=qat, lr=0.02))
    trainer.fit()
    save_model(trainer.trained_graph(), tmp_path / "mlp-qat")
    g = load_model(tmp_path / "mlp-qat")
    qm = quantize_model(g, "weights=minmax:4:per-channel activations=static-minmax:4",
                        trainer.data.calibration(128).x_flat)
    # the executor's integer weights are exactly the grid the last QAT forward computed with
    tape = forward(trainer.graph, trainer.params, {"x": trainer.x_test[:4]}, training=False,
                   fake_quant=trainer.fake_quant)
    for name, layer in qm.layers.items():
        assert layer.weight.qparams.fmt.bits == 4
        assert np.array_equal(layer.weight.dequantize(), tape.args[name][1]), name
    logits = qm.run(trainer.x_test).outputs[g.outputs[0]]
    accuracy = float(np.mean(np.argmax(logits, axis=1) == trainer.y_test))
    assert accuracy > 0.85
