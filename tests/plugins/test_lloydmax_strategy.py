"""The ``lloydmax`` weight strategy: codebooks on the int8 grid, the contract kit, the executor.

Oracles: the Max (1960) / Paez-Glisson tables quoted in PAPERS.md §4 (levels of the scaled
codebook), brute-force nearest-level search, and the int8 rule recomputed from its definition
(scale max|level|/127 in float32, round half to even). Model-level claims are checked against
the tables of spec/strategies/lloydmax.md §11.
"""
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refquant_lloydmax as lm
from refquant import registry
from refquant.executor import quantize_model
from refquant.hookspecs import hookimpl
from refquant.numerics import IntFormat, QParams, pack_nibbles
from refquant.plugins import register_plugin, unregister_plugin
from refquant.strategies import LayerSpec, QuantizedWeight
from refquant.testing import check_strategy, parametrize_with_checks
from refquant_lloydmax import LloydMaxWeights, codebook_bits_per_weight, design_codebook, indices_of
from refquant_lloydmax import model_tables

from tests_support import small_cnn, small_mlp

SPEC = Path(__file__).resolve().parents[2] / "spec" / "strategies" / "lloydmax.md"


def spec_of(bits=4, granularity="per-tensor", options=(), signed=True, symmetric=True):
    return LayerSpec("conv9", "Conv", bits, signed, granularity, symmetric, options)


def weight(seed=0, shape=(8, 4, 3, 3), loc=0.0, scale=0.2):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(np.float32)


# ------------------------------------------------------------------------- registration, kit
def test_registered_through_the_entry_point():
    entry = registry.quantizers("weights")["lloydmax"]
    assert isinstance(entry.obj, LloydMaxWeights) and entry.plugin == "lloydmax"
    assert entry.doc.startswith("Weights by Lloyd-Max")


@parametrize_with_checks([LloydMaxWeights(), LloydMaxWeights(prior="empirical", name="lloydmax-empirical"),
                          LloydMaxWeights(execution="float", name="lloydmax-float")])
def test_contract(strategy, check):
    check(strategy)


class _Codebookish:
    """A codebook weight strategy that breaks one rule of the kit's codebook check."""

    kind, doc = "weights", "test strategy"

    def __init__(self, name, fmt=IntFormat(8, True, narrow=True), distinct=None,
                 arrays=("indices", "codebook")):
        self.name, self.fmt, self.distinct, self.keys = name, fmt, distinct, arrays

    def quantize_weight(self, w, spec):
        if not np.all(np.isfinite(w)) or w.size == 0:
            raise ValueError(f"layer {spec.layer!r}: bad weight")
        n = self.distinct or 2**spec.bits - 1  # an odd count: the codes include 0
        amax = float(np.abs(w).max()) or 1.0
        scale = np.full(w.shape[0] if spec.per_channel else 1, amax / self.fmt.qmax)
        qp = QParams(scale, 0, self.fmt, 0 if spec.per_channel else None, name="w")
        steps = np.linspace(-self.fmt.qmax, self.fmt.qmax, n).round()
        values = steps[np.argmin(np.abs(w.reshape(-1, 1) / qp.scale.max() - steps), axis=1)]
        return QuantizedWeight(values.reshape(w.shape).astype(self.fmt.storage_dtype), qp, "codebook",
                               {k: np.zeros(1) for k in self.keys})


def test_kit_codebook_rule_is_strict():
    ok = check_strategy(_Codebookish("fine"))
    assert ok.ok and ok.ran == 6, str(ok)
    too_many = check_strategy(_Codebookish("too-many", distinct=40))  # > 2^4 values at 4 bits
    assert "check_weight_valid" in {f.name for f in too_many.failures}
    assert any("distinct values" in f.message for f in too_many.failures)
    wrong_grid = check_strategy(_Codebookish("b-bit", fmt=IntFormat(4, True, narrow=True)))
    assert any("int8-narrow grid" in f.message for f in wrong_grid.failures)
    no_arrays = check_strategy(_Codebookish("bare", arrays=()))
    assert any("must keep ['codebook', 'indices']" in f.message for f in no_arrays.failures)


# ------------------------------------------------------------------------- worked examples
def test_gaussian_codebook_is_the_scaled_max_table():
    """2 bits, Gaussian prior: levels = mean ± std·(0.4528, 1.510) (Max 1960, N = 4)."""
    w = weight(1, (64, 64), loc=0.05, scale=0.1)
    d = design_codebook(w, 2, per_channel=False, prior="gaussian", refine="none", layer="fc")
    x = w.astype(np.float64)
    mean, std = x.mean(), x.std()
    expected = mean + std * np.array([-1.510, -0.4528, 0.4528, 1.510])
    assert np.allclose(d.codebook[0], expected, atol=1e-3 * std)
    assert d.fits[0].prior == "gaussian" and d.fits[0].ks_gaussian < d.fits[0].ks_laplace


def test_laplace_codebook_is_the_scaled_paez_glisson_table():
    """3 bits, Laplace prior: levels = median ± sqrt(2)·b·(0.2334, 0.8330, 1.6725, 3.0867)."""
    x64 = np.random.default_rng(2).laplace(-0.01, 0.05, 4000)
    w = x64.astype(np.float32).reshape(40, 100)
    d = design_codebook(w, 3, per_channel=False, refine="none", layer="fc")
    x = w.astype(np.float64).ravel()
    med = np.median(x)
    std = math.sqrt(2) * np.mean(np.abs(x - med))
    half = np.array([0.2334, 0.8330, 1.6725, 3.0867])
    assert d.fits[0].prior == "laplace"
    assert np.allclose(d.codebook[0], med + std * np.concatenate([-half[::-1], half]), atol=1e-3 * std)


def test_int8_grid_worked_example():
    """Levels ±0.3, ±0.1 (a constructed codebook): s = 0.3/127, codes ±127 and ±round(42.333) = ±42."""
    w = np.array([[-0.3, -0.1, 0.1, 0.3]], np.float32)
    d = design_codebook(w, 2, per_channel=False, prior="empirical", layer="toy")
    assert np.array_equal(d.codebook[0], w[0])  # four values, four levels: the empirical codebook is exact
    assert d.qparams.scale == np.float32(np.float32(0.3) / np.float32(127))
    assert d.codebook_int8[0].tolist() == [-127, -42, 42, 127]
    assert np.array_equal(d.int8_values(), [[-127, -42, 42, 127]])
    # the representation error of ±0.1: |0.1 − 42 s| = 0.000787..., 0.333 of a step
    err = np.abs(d.codebook[0] - d.int8_levels()[0]) / d.scales[0]
    assert err.max() == pytest.approx(1 / 3, abs=1e-4)


def test_nonzero_loc_stays_in_the_levels_not_in_a_zero_point():
    w = weight(3, (16, 32), loc=0.5, scale=0.1)
    qw = LloydMaxWeights().quantize_weight(w, spec_of(3, "per-tensor"))
    assert int(qw.qparams.zero_point) == 0 and qw.qparams.fmt == lm.INT8_NARROW
    cb8 = qw.arrays["codebook_int8"][0]
    assert cb8.max() == 127 and cb8.min() > 0  # all levels positive: the negative half is unused
    assert np.all(np.abs(qw.arrays["codebook"][0] - cb8 * qw.qparams.scale) <= qw.qparams.scale / 2)


def test_symmetric_codebook_gives_a_symmetric_int8_codebook():
    half = np.random.default_rng(4).normal(0, 0.1, 2000)
    w = np.concatenate([half, -half]).astype(np.float32).reshape(40, 100)
    d = design_codebook(w, 4, per_channel=False, prior="gaussian", layer="fc")
    assert abs(d.fits[0].loc) < 1e-12
    assert np.array_equal(d.codebook_int8[0], -d.codebook_int8[0][::-1])


def test_constant_and_zero_groups():
    w = np.zeros((3, 5), np.float32)
    w[1] = 0.25
    w[2] = np.arange(5) * 0.1
    d = design_codebook(w, 3, per_channel=True, layer="fc")
    assert d.fits[0] is None and d.fits[1] is None and d.fits[2] is not None
    assert not d.codebook[0].any() and d.scales[0] == 1 and not d.int8_values()[0].any()
    assert np.all(d.codebook[1] == np.float32(0.25)) and np.all(d.int8_values()[1] == 127)
    assert d.float_weight()[1].tolist() == [0.25] * 5


def test_bits_per_weight_formula():
    w = weight(5, (6, 3, 3, 3))
    qw = LloydMaxWeights().quantize_weight(w, spec_of(4, "per-channel"))
    assert qw.bits_per_weight == pytest.approx(4 + 6 * (8 * 16 + 32) / w.size)
    qf = LloydMaxWeights(execution="float").quantize_weight(w, spec_of(4, "per-channel"))
    assert qf.bits_per_weight == pytest.approx(4 + 6 * 32 * 16 / w.size)
    assert codebook_bits_per_weight(1000, 1, 8) == pytest.approx(8 + (8 * 256 + 32) / 1000)


def test_indices_are_packed_two_per_byte_up_to_4_bits():
    w = weight(6, (5, 3, 3, 3))  # 135 weights: an odd count, padded with a zero nibble
    for bits in (2, 3, 4, 5, 8):
        qw = LloydMaxWeights().quantize_weight(w, spec_of(bits))
        idx = design_codebook(w, bits, per_channel=False, layer="conv9").indices
        packed = qw.arrays["indices"]
        if bits <= 4:
            assert packed.dtype == np.uint8 and packed.shape == (68,)
            assert np.array_equal(packed, pack_nibbles(idx.astype(np.int16), "uint4"))
        else:
            assert packed.shape == w.shape
        assert np.array_equal(indices_of(qw), idx)


def test_errors_name_the_layer():
    w = weight()
    s = LloydMaxWeights()
    for bad in (spec_of(signed=False), spec_of(symmetric=False), spec_of(options=(("prior", "cauchy"),)),
                spec_of(options=(("execution", "gpu"),)), spec_of(options=(("refine", "data"),))):
        with pytest.raises(ValueError, match="conv9"):
            s.quantize_weight(w, bad)
    with pytest.raises(TypeError, match="conv9"):
        s.quantize_weight(np.ones((2, 2), np.int32), spec_of())
    huge = np.array([[-3e38, 3e38, 1e38, -1e38]], np.float32)
    with pytest.raises(ValueError, match="conv9.*float32"):  # the Laplace table scaled to the fit overflows
        s.quantize_weight(huge, spec_of(2, options=(("prior", "laplace"), ("refine", "none"))))
    # refined on the four values, the codebook is the values themselves: representable
    assert np.array_equal(s.design(huge, spec_of(2, options=(("prior", "laplace"),))).codebook[0], np.sort(huge[0]))


# ------------------------------------------------------------------------- properties
@st.composite
def weights_and_specs(draw):
    shape = draw(st.sampled_from([(3, 7), (4, 2, 3, 3), (1, 40), (5, 1)]))
    scale = draw(st.sampled_from([1e-3, 0.1, 5.0]))
    elements = st.floats(-4, 4, width=32, allow_subnormal=False)
    w = (draw(hnp.arrays(np.float32, shape, elements=elements)) * np.float32(scale)).astype(np.float32)
    bits = draw(st.integers(2, 8))
    gran = draw(st.sampled_from(["per-tensor", "per-channel"]))
    prior = draw(st.sampled_from(["auto", "gaussian", "laplace", "empirical"]))
    execution = draw(st.sampled_from(["integer", "float"]))
    refine = draw(st.sampled_from(["weights", "none"]))
    return w, LayerSpec("conv9", "Conv", bits, True, gran, True,
                        (("prior", prior), ("execution", execution), ("refine", refine)))


def _mse(x: np.ndarray, levels: np.ndarray) -> float:
    """MSE of x against its nearest of the float32 ``levels`` (brute force, float64)."""
    y = np.asarray(levels, np.float64)
    return float(np.mean(np.min((x[:, None] - y[None, :]) ** 2, axis=1)))


@given(weights_and_specs())
def test_refined_codebook_is_never_worse_than_the_priors_the_empirical_or_min_max(case):
    """refine="weights": per group, MSE(refined) <= MSE(the prior's codebook), <= MSE(the
    empirical codebook) and <= min-max's, on the group's own values (float32 levels: a relative
    slack of 1e-6 for their rounding)."""
    w, spec = case
    prior = spec.option("prior")
    refined = design_codebook(w, spec.bits, per_channel=spec.per_channel, prior=prior, layer="conv9")
    paper = design_codebook(w, spec.bits, per_channel=spec.per_channel, prior=prior, refine="none",
                            layer="conv9", fits=refined.fits)
    empirical = design_codebook(w, spec.bits, per_channel=spec.per_channel, prior="empirical", layer="conv9")
    rows = w.reshape(refined.groups, -1).astype(np.float64)
    for g, x in enumerate(rows):
        if x.min() == x.max():
            assert refined.origins[g] == "constant"
            continue
        assert refined.origins[g] == ("uniform" if prior == "empirical" else refined.origins[g])
        assert refined.origins[g] in ("prior", "uniform") and paper.origins[g] in ("prior", "uniform")
        best = _mse(x, refined.codebook[g])
        slack = 1 + 1e-6
        assert best <= _mse(x, paper.codebook[g]) * slack + 1e-30
        assert best <= _mse(x, empirical.codebook[g]) * slack + 1e-30
        assert best <= lm.minmax_uniform(x, 2**spec.bits).mse * slack + 1e-30


@given(weights_and_specs())
def test_codebook_weight_rules(case):
    w, spec = case
    qw = LloydMaxWeights().quantize_weight(w, spec)
    groups = w.shape[0] if spec.per_channel else 1
    rows = w.reshape(groups, -1).astype(np.float64)
    cb, cb8 = qw.arrays["codebook"], qw.arrays["codebook_int8"]
    idx = indices_of(qw).reshape(groups, -1).astype(np.intp)
    scales = np.broadcast_to(qw.qparams.scale, (groups,))
    assert cb.shape == cb8.shape == (groups, 2**spec.bits) and cb.dtype == np.float32
    assert np.all(np.diff(cb.astype(np.float64), axis=1) >= 0)
    for g in range(groups):
        # the scale: float32(max|level|) / 127 in float32, 1 for an all-zero codebook
        amax = np.float32(np.abs(cb[g]).max())
        assert scales[g] == (np.float32(amax / np.float32(127)) if amax > 0 else 1)
        # every weight takes its nearest float level (brute force; ties allowed either way)
        dist = np.abs(rows[g][:, None] - cb[g].astype(np.float64)[None, :])
        assert np.all(dist[np.arange(rows.shape[1]), idx[g]] <= dist.min(axis=1))
        # int8 codes: round half to even of level / s (float32 division), largest at ±127
        assert np.array_equal(cb8[g], np.rint(cb[g] / scales[g]).astype(np.int8))
        assert amax == 0 or np.abs(cb8[g]).max() == 127
        lsb = np.abs(cb[g].astype(np.float64) - cb8[g].astype(np.float64) * scales[g]) / scales[g]
        assert lsb.max() <= 0.5 + 1e-5
    values = qw.values.reshape(groups, -1)
    assert np.array_equal(values, np.take_along_axis(cb8, idx, axis=1))
    assert max(np.unique(v).size for v in values) <= 2**spec.bits
    if spec.option("execution") == "float":
        assert qw.execution == "float"
        assert np.array_equal(qw.dequantize().reshape(groups, -1), np.take_along_axis(cb, idx, axis=1))
    else:
        assert qw.execution == "integer" and qw.float_values is None


# ------------------------------------------------------------------------- the executor
def assert_identical_integers(ref_records, fast_records):
    """Every node's integer output (and int32 accumulators, where kept) equal on both backends.

    (The graph input's record keeps no integers; its quantization involves no kernel.)"""
    assert len(ref_records) == len(fast_records)
    assert sum(r.kernel in ("fused", "unfused") for r in ref_records) >= 2
    for a, b in zip(ref_records, fast_records):
        assert a.name == b.name and a.kernel == b.kernel
        if a.kernel == "input":
            continue
        assert a.q_output is not None
        assert np.array_equal(a.q_output, b.q_output), a.name
        assert (a.accumulators is None) == (b.accumulators is None), a.name
        if a.accumulators is not None:
            assert np.array_equal(a.accumulators, b.accumulators), a.name


@pytest.mark.parametrize("activations", ["static-minmax:8", "dynamic:8"])
@pytest.mark.parametrize("make", [small_cnn, small_mlp], ids=["cnn", "mlp"])
def test_backends_give_identical_integers_on_small_models(make, activations):
    g, x = make()
    qm = quantize_model(g, f"weights=lloydmax:3:per-channel activations={activations}", x)
    ref, fast = qm.run(x, keep=True), qm.run(x, backend="numba", keep=True)
    layers = [r for r in ref.records if r.op in ("Conv", "Gemm", "MatMul")]
    assert layers and all(r.weight_qparams.fmt == lm.INT8_NARROW for r in layers)
    assert_identical_integers(ref.records, fast.records)


@pytest.mark.parametrize("model", model_tables.MODELS)
def test_backends_give_identical_integers_on_shipped_models(model):
    from refquant.data import load_digits
    from refquant.data import digits_inputs

    g = registry.get_model(model)
    data = load_digits()
    x = digits_inputs(g, data.test.x[:48])
    for plan in ("weights=lloydmax:4 activations=static-minmax:8",
                 "weights=lloydmax:3:per-channel activations=dynamic:8"):
        qm = quantize_model(g, plan, digits_inputs(g, data.calibration(32).x))
        ref, fast = qm.run(x, keep=True), qm.run(x, backend="numba", keep=True)
        assert_identical_integers(ref.records, fast.records)


def test_float_execution_runs_the_float_codebook():
    class Variant:
        @hookimpl
        def register_quantizers(self, register):
            register(LloydMaxWeights(execution="float", name="lloydmax-float-test"))

    plugin = Variant()
    register_plugin(plugin, "lloydmax-float-test")
    try:
        g, x = small_cnn()
        qm = quantize_model(g, "weights=lloydmax-float-test:4 activations=static-minmax:8", x)
        res = qm.run(x, keep=True)
    finally:
        unregister_plugin(plugin)
    conv = [r for r in res.records if r.op == "Conv"]
    assert conv and all(r.kernel == "float" for r in conv)
    layer = qm.layers["conv1"]
    cb = layer.weight.arrays["codebook"][0]
    assert np.all(np.isin(layer.weight.dequantize(), cb))  # float levels, not s·q
    assert np.isfinite(res.outputs[g.outputs[0]]).all()


# ------------------------------------------------------------------------- accuracy claim (§11)
@pytest.fixture(scope="module")
def compare_rows():
    return model_tables.compare_rows()


def test_accuracy_table_in_the_spec_is_recomputed(compare_rows):
    table = model_tables.accuracy_table(compare_rows)
    assert table in SPEC.read_text(encoding="utf-8"), (
        f"spec §11 out of date; regenerate with python -m refquant_lloydmax.model_tables:\n{table}")


def test_lloydmax_accuracy_against_minmax(compare_rows):
    """The claim "Lloyd-Max at least as accurate as min-max at 4 and 3 bits" fails in exactly the
    one row §11 names (the paper's unrefined codebook in five, the empirical one in two)."""
    clean = {(r.model, r.bits, r.granularity, r.weights): r.accuracy for r in compare_rows
             if r.dataset == "test"}

    def worse(weights):
        return {(m, b, gran) for (m, b, gran, w) in clean if w == weights
                and clean[(m, b, gran, weights)] < clean[(m, b, gran, "minmax")]}

    assert len(clean) == 3 * 2 * 2 * 5
    assert {(r.bits, r.activation_bits) for r in compare_rows} == {(4, 8), (3, 8)}
    assert worse("lloydmax") == {("digits-mlp", 4, "per-channel")}
    assert worse("lloydmax-paper") == {("digits-cnn", 4, "per-tensor"), ("digits-mlp", 4, "per-channel"),
                                       ("digits-cnn", 4, "per-channel"), ("digits-cnn", 3, "per-channel"),
                                       ("digits-resnet", 3, "per-channel")}
    assert worse("lloydmax-empirical") == {("digits-mlp", 4, "per-channel"), ("digits-mlp", 3, "per-channel")}
