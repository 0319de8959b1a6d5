"""StatQAT inside quantization-aware training: the QAT quantizers' rules, and a tiny version of the
StatQAT-versus-min-max experiment (the full one is ``bench/statqat_qat.py``)."""
import numpy as np
import pytest

import refquant_statqat as sq
from refquant.registry import models, qat_quantizers
from refquant.strategies import LayerSpec, QATQuantizer
from refquant.train.fakequant import fake_quantize
from refquant_statqat import experiment
from refquant_statqat.strategies import iterative_qparams


def test_registered_qat_quantizers():
    q = qat_quantizers()
    for name, kind in (("statqat-analytic", "weights"), ("statqat-iterative", "activations"),
                       ("minmax-float", "weights"), ("ema-minmax-float", "activations")):
        assert q[name].plugin == "statqat" and q[name].obj.kind == kind
        assert isinstance(q[name].obj, QATQuantizer)


def test_weights_equal_the_post_training_strategy():
    """The last step's fake-quantized weight is what statqat-analytic gives the executor, bit for bit."""
    w = (np.random.default_rng(14).standard_normal((8, 4, 3, 3)) * 0.1).astype(np.float32)
    for spec in (LayerSpec("c", "Conv", 4, True, "per-channel", True), LayerSpec("c", "Conv", 3, True, "per-tensor", True)):
        y, mask, state = sq.StatQATWeights().fake_quant(w, {}, spec, True)
        qw = sq.AnalyticWeights().quantize_weight(w, spec)
        assert np.array_equal(y, qw.dequantize()) and state == {}
        assert np.array_equal(mask, fake_quantize(w, qw.qparams)[1])


def test_float_weights_on_the_format_grid():
    w = (np.random.default_rng(15).standard_normal((4, 50)) * 0.3).astype(np.float32)
    spec = LayerSpec("fc", "Gemm", 4, True, "per-channel", True, (("format", "float4_e2m1fn"),))
    y, mask, _ = sq.StatQATWeights().fake_quant(w, {}, spec, True)
    qw = sq.AnalyticWeights().quantize_weight(w, spec)
    assert np.array_equal(y, qw.dequantize())
    scale = qw.qparams.scale * np.float32(2)
    assert set(np.unique(y / scale[:, None])) <= set(sq.grid("float4_e2m1fn").levels)
    assert mask.all()  # the scale is capped at min-max: nothing saturates


def test_activation_state_is_an_ema_of_the_batch_fixed_point():
    rng = np.random.default_rng(16)
    spec = LayerSpec("conv", "Conv", 4, False, "per-tensor", False)
    q = sq.StatQATActivations()
    first = np.maximum(rng.standard_normal((4, 3, 5, 5)), 0).astype(np.float32)
    state = q.init_state(first, spec)
    scales, zps = iterative_qparams([first.ravel().astype(np.float64)], spec)
    assert state["scale"][0] == np.float32(scales[0]) and state["zero_point"][0] == zps[0] == 0
    batch = (np.maximum(rng.standard_normal((4, 3, 5, 5)), 0) * 1.3).astype(np.float32)
    frozen = {k: v.copy() for k, v in state.items()}
    y, mask, new = q.fake_quant(batch, state, spec, training=True)
    assert all(np.array_equal(state[k], frozen[k]) for k in state)  # not modified in place
    s_batch = sq.iterative_scale(batch.ravel().astype(np.float64), sq.uniform_grid(0, 15),
                                 init=float(state["scale"][0]), max_iter=5).scale
    m = np.float32(0.9)
    expected = m * state["scale"] + (np.float32(1) - m) * np.float32(s_batch)
    assert new["scale"].dtype == np.float32 and np.array_equal(new["scale"], expected)
    from refquant.numerics import QParams

    qp = QParams(new["scale"][0], 0, spec.fmt, name="conv")
    assert np.array_equal(y, fake_quantize(batch, qp)[0])
    y_eval, _, _ = q.fake_quant(batch, new, spec, training=False)
    assert np.array_equal(y_eval, y)


def test_float_minmax_baselines():
    x = (np.random.default_rng(17).standard_normal((2, 3, 4, 4))).astype(np.float32)
    spec = LayerSpec("conv", "Conv", 8, True, "per-channel", True, (("format", "float8_e4m3fn"),))
    y, mask, _ = sq.MinMaxFloatQATWeights().fake_quant(x, {}, spec, True)
    amax = np.abs(x.reshape(2, -1)).max(axis=1)
    y2, _ = sq.fake_quantize_float(x, "float8_e4m3fn", (amax / 448).astype(np.float32), axis=0)
    assert np.array_equal(y, y2) and mask.all()
    act = sq.EMAMinMaxFloatQATActivations()
    state = act.init_state(x, spec)
    assert np.allclose(state["scale"], np.abs(np.moveaxis(x, 1, 0).reshape(3, -1)).max(axis=1) / 448)
    with pytest.raises(ValueError, match="conv.*format"):
        sq.MinMaxFloatQATWeights().fake_quant(x, {}, LayerSpec("conv", "Conv", 8, True, "per-tensor", True), True)


def test_plan_options_reach_the_quantizers():
    """A plan's KEY=VALUE parts (strings) set the float format and the EMA options."""
    from refquant.registry import get_model
    from refquant.train.fakequant import FakeQuant

    if "digits-mlp" not in models():
        pytest.skip("digits-mlp not shipped")
    graph = get_model("digits-mlp")
    fq = FakeQuant(graph, "weights=statqat-analytic:4:format=float4_e2m1fn "
                          "activations=statqat-iterative:4:format=float4_e2m1fn:momentum=0.5:iterations=2")
    assert all(p.spec.option("format") == "float4_e2m1fn" for p in fq.points())
    x = np.random.default_rng(18).standard_normal((8, 64)).astype(np.float32)
    y, mask = fq.activation("x", x, True)
    scale = fq.activations["x"].state["scale"][0]
    assert set(np.unique(y / scale)) <= set(sq.grid("float4_e2m1fn").levels)
    with pytest.raises(ValueError, match="x.*'iterations'"):
        FakeQuant(graph, "weights=statqat-analytic:4 activations=statqat-iterative:4:iterations=two").activation(
            "x", x, True)
    with pytest.raises(ValueError, match="x.*'momentum'"):
        FakeQuant(graph, "weights=statqat-analytic:4 activations=statqat-iterative:4:momentum=1.5").activation(
            "x", x, True)


# ---- a tiny version of the experiment ----------------------------------------------------------
@pytest.mark.skipif("digits-cnn" not in models(), reason="digits-cnn not shipped")
def test_tiny_experiment():
    from refquant.data import load_digits

    data = load_digits()
    runs = [experiment.run_one("digits-cnn", grid, method, 0, 1, data)
            for grid in ("int4", "fp4") for method in experiment.METHODS]
    for r in runs:
        assert len(r.history) == 1 and len(r.step_losses) == -(-len(data.train.x) // 32)
        assert np.mean(r.step_losses) == pytest.approx(r.history[0]["loss"], rel=0.05)
        assert np.isfinite(r.step_losses).all() and 0.5 < r.fake_quant_accuracy <= 1
        assert r.executor_accuracy is not None and r.executor_accuracy > 0.5  # saved, loaded, run by the executor
    rows = experiment.summarize(runs)
    assert {(r["grid"], r["method"]) for r in rows} == {(g, m) for g in ("int4", "fp4") for m in experiment.METHODS}
    table = experiment.summary_table(rows)
    assert table.count("| digits-cnn |") == 2


def test_plans():
    assert experiment.qat_plan("statqat", "int3") == (
        "weights=statqat-analytic:3:per-channel activations=statqat-iterative:3")
    assert experiment.qat_plan("minmax", "fp8") == (
        "weights=minmax-float:8:per-channel:format=float8_e4m3fn activations=ema-minmax-float:8:format=float8_e4m3fn")
    assert experiment.ptq_plan("minmax", "fp8") is None


@pytest.mark.skipif("digits-mlp" not in models(), reason="digits-mlp not shipped")
def test_checkpoint_and_resume_keep_the_statqat_state(tmp_path):
    from refquant.train import Trainer, config_for

    plan = "weights=statqat-analytic:4:per-channel activations=statqat-iterative:4"
    config = config_for("digits-mlp", epochs=2, qat=plan, init="digits-mlp", optimizer="adam", lr=1e-3)
    full = Trainer(config)
    full.fit()
    part = Trainer(config)
    part.fit(stop_at=1, checkpoint=tmp_path / "ck.npz")
    resumed = Trainer.resume(tmp_path / "ck.npz")
    resumed.fit()
    for name, point in full.fake_quant.activations.items():
        other = resumed.fake_quant.activations[name].state
        assert set(point.state) == {"scale", "zero_point"}
        assert all(np.array_equal(point.state[k], other[k]) for k in point.state), name
    assert all(np.array_equal(full.params[k], resumed.params[k]) for k in full.params)
