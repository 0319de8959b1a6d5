"""The post-training strategies ``statqat-analytic`` and ``statqat-iterative``: the contract kit,
their rules checked against independent computations, and runs of the quantized executor."""
import numpy as np
import pytest

import refquant_statqat as sq
from refquant.numerics import qparams_from_range
from refquant.registry import get_model, get_quantizer, models, quantizers
from refquant.strategies import LayerSpec
from refquant.testing import check_strategy, parametrize_with_checks
from refquant_statqat.strategies import INT8_EXACT_FORMATS, IterativeObserver

STRATEGIES = [sq.AnalyticWeights(), sq.IterativeActivations()]


@parametrize_with_checks(STRATEGIES)
def test_contract(strategy, check):
    check(strategy)


def test_contract_report_counts():
    assert check_strategy(STRATEGIES[0]).ran == 6 and check_strategy(STRATEGIES[0]).ok


def test_registered_through_the_entry_point():
    q = quantizers()
    assert q["statqat-analytic"].plugin == "statqat" and q["statqat-analytic"].obj.kind == "weights"
    assert q["statqat-iterative"].plugin == "statqat" and q["statqat-iterative"].obj.timing == "offline"


# ---- statqat-analytic -------------------------------------------------------------------------
def _independent_scale(row, bits):
    """min(κ_d · rms, max/Q) for d = Gaussian, Laplace; keep the one with the smaller error."""
    q = 2 ** (bits - 1) - 1
    rms, amax = np.sqrt(np.mean(row**2)), np.abs(row).max()
    best = None
    for d in ("gaussian", "laplace"):
        s = min(sq.kappa.KAPPA[d][f"int{bits}"] * rms, amax / q)
        err = np.sum((row - s * np.clip(np.rint(row / s), -q, q)) ** 2)
        if best is None or err < best[0]:
            best = (err, s)
    return best[1]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_analytic_weight_scales(bits):
    rng = np.random.default_rng(9)
    w = np.concatenate([rng.standard_normal((3, 200)), rng.laplace(size=(3, 200)) * 3,
                        rng.standard_normal((1, 200)) * 1e-3], axis=0).astype(np.float32)
    w[-1, :5] = 0.5  # one channel with outliers
    qw = sq.AnalyticWeights().quantize_weight(w, LayerSpec("fc", "Gemm", bits, True, "per-channel", True))
    expected = [_independent_scale(r.astype(np.float64), bits) for r in w]
    assert np.array_equal(qw.qparams.scale, np.asarray(expected, np.float32))
    assert np.all(qw.qparams.zero_point == 0) and qw.qparams.axis == 0
    assert qw.representation == "uniform"
    t = sq.AnalyticWeights().quantize_weight(w, LayerSpec("fc", "Gemm", bits, True, "per-tensor", True))
    assert t.qparams.scale == np.float32(_independent_scale(w.ravel().astype(np.float64), bits))


def test_analytic_never_clips_wider_than_minmax():
    w = np.array([[0.1, -0.2, 0.15]], np.float32)  # three weights: κσ would clip beyond max|w|
    spec = LayerSpec("conv", "Conv", 4, True, "per-tensor", True)
    assert sq.AnalyticWeights().quantize_weight(w, spec).qparams == qparams_from_range(
        -0.2, 0.2, spec.fmt, symmetric=True, name="conv.weight")


def test_analytic_forced_prior():
    w = np.random.default_rng(10).laplace(size=(1, 5000)).astype(np.float32)
    rms = np.sqrt(np.mean(w.astype(np.float64) ** 2))
    for prior in ("gaussian", "laplace"):
        spec = LayerSpec("fc", "Gemm", 4, True, "per-tensor", True, (("prior", prior),))
        s = sq.AnalyticWeights().quantize_weight(w, spec).qparams.scale
        assert s == np.float32(sq.analytic_scale("int4", rms, distribution=prior))


@pytest.mark.parametrize("fmt", sorted(INT8_EXACT_FORMATS))
@pytest.mark.parametrize("gran", ["per-tensor", "per-channel"])
def test_float_format_weight_is_an_exact_codebook(fmt, gran):
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((6, 3, 3, 3)) * 0.2).astype(np.float32)
    bits = sq.grid(fmt).fmt.total_bits
    spec = LayerSpec("conv", "Conv", bits, True, gran, True, (("format", fmt),))
    qw = sq.AnalyticWeights().quantize_weight(w, spec)
    assert qw.representation == "codebook" and qw.values.dtype == np.int8
    int_scale = qw.qparams.scale
    scale = int_scale * np.float32(INT8_EXACT_FORMATS[fmt])
    y, _ = sq.fake_quantize_float(w, fmt, scale if gran == "per-channel" else scale.reshape(()),
                                  axis=0 if gran == "per-channel" else None)
    assert np.array_equal(qw.dequantize(), y)  # bit for bit the float path
    levels = sq.grid(fmt).levels
    assert np.array_equal(levels[qw.arrays["indices"]] * INT8_EXACT_FORMATS[fmt], qw.values)
    from refquant.testing.strategies import _check_weight_grid

    _check_weight_grid(qw, spec, w.shape, "float codebook")


@pytest.mark.parametrize("call, match", [
    (lambda: sq.AnalyticWeights().quantize_weight(np.ones((2, 2), np.float32),
                                                  LayerSpec("L7", "Gemm", 8, True, "per-tensor", True,
                                                            (("format", "float8_e4m3fn"),))), "L7.*float-format"),
    (lambda: sq.AnalyticWeights().quantize_weight(np.ones((2, 2), np.float32),
                                                  LayerSpec("L7", "Gemm", 8, True, "per-tensor", True,
                                                            (("format", "float4_e2m1fn"),))), "L7.*signed 4-bit"),
    (lambda: sq.AnalyticWeights().quantize_weight(np.ones((2, 2), np.float32),
                                                  LayerSpec("L7", "Gemm", 4, True, "per-tensor", True,
                                                            (("format", "fp4"),))), "L7.*option 'format'"),
    (lambda: sq.AnalyticWeights().quantize_weight(np.ones((2, 2), np.float32),
                                                  LayerSpec("L7", "Gemm", 4, True, "per-tensor", True,
                                                            (("prior", "cauchy"),))), "L7.*option 'prior'"),
    (lambda: sq.IterativeActivations().make_observer(LayerSpec("L7", "Conv", 4, False, "per-tensor", False,
                                                               (("format", "float4_e2m1fn"),))), "L7.*float-format"),
])
def test_float_formats_without_an_executor_path_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- statqat-iterative --------------------------------------------------------------------------
def test_observer_runs_the_fixed_point_on_all_observed_values():
    rng = np.random.default_rng(12)
    y = (rng.standard_normal((12, 4, 5, 5)) * 2 + 0.5).astype(np.float32)
    spec = LayerSpec("conv", "Conv", 8, True, "per-tensor", True)
    one = IterativeObserver(spec)
    one.observe(y)
    split = IterativeObserver(spec)
    for part in np.array_split(y, 5):
        split.observe(part)
    assert one.qparams() == split.qparams()
    r = sq.iterative_scale(y.ravel().astype(np.float64), "int8")
    assert one.qparams().scale == np.float32(r.scale) and one.qparams().zero_point == 0


def test_observer_chooses_zero_points():
    rng = np.random.default_rng(13)
    relu = np.maximum(rng.standard_normal((8, 3, 6, 6)), 0).astype(np.float32)
    spec = LayerSpec("conv", "Conv", 8, False, "per-tensor", False)
    obs = IterativeObserver(spec)
    obs.observe(relu)
    assert obs.qparams().zero_point == 0
    both = IterativeObserver(spec)
    both.observe(rng.standard_normal((8, 3, 6, 6)).astype(np.float32))
    assert 100 < both.qparams().zero_point < 156
    per_channel = IterativeObserver(LayerSpec("conv", "Conv", 4, False, "per-channel", False))
    per_channel.observe(relu)
    qp = per_channel.qparams()
    assert qp.axis == 1 and qp.scale.shape == (3,) and np.all(qp.zero_point == 0)


def test_observer_all_zero_tensor():
    obs = IterativeObserver(LayerSpec("conv", "Conv", 8, False, "per-tensor", False))
    obs.observe(np.zeros((2, 3), np.float32))
    assert obs.qparams().scale == 1 and obs.qparams().zero_point == 0


# ---- the quantized executor ---------------------------------------------------------------------
SHIPPED = [m for m in ("digits-mlp", "digits-cnn", "digits-resnet") if m in models()]


@pytest.fixture(scope="module")
def digits():
    from refquant.data import load_digits

    return load_digits()


@pytest.mark.skipif(not SHIPPED, reason="no shipped models")
@pytest.mark.parametrize("model", SHIPPED)
def test_executor_runs_statqat_plans(model, digits):
    from refquant.train.report import float_accuracies, integer_accuracy

    graph = get_model(model)
    float_acc = float_accuracies(graph, digits)[0]["accuracy"]
    r8 = integer_accuracy(graph, "weights=statqat-analytic:8 activations=statqat-iterative:8", digits)
    assert r8["accuracy"] >= float_acc - 0.02
    r4 = integer_accuracy(graph, "weights=statqat-analytic:4:per-channel activations=statqat-iterative:4", digits)
    assert r4["accuracy"] >= 0.85


@pytest.mark.skipif("digits-cnn" not in SHIPPED, reason="digits-cnn not shipped")
def test_executor_runs_fp4_weights_as_codebooks(digits):
    from refquant.executor import quantize_model
    from refquant.data import digits_inputs

    graph = get_model("digits-cnn")
    plan = "weights=statqat-analytic:4:per-channel:format=float4_e2m1fn activations=statqat-iterative:8"
    qm = quantize_model(graph, plan, digits_inputs(graph, digits.calibration(128).x))
    for layer in qm.layers.values():
        assert layer.weight.representation == "codebook"
        assert np.unique(layer.weight.values).size <= 15
    out = qm.run(digits_inputs(graph, digits.test.x[:64])).outputs[graph.outputs[0]]
    assert np.mean(np.argmax(out, axis=1) == digits.test.y[:64]) > 0.8


def test_get_quantizer_by_name():
    assert isinstance(get_quantizer("statqat-analytic", "weights"), sq.AnalyticWeights)
