"""The refquant_static plugin: weight and activation range rules against independent computations."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import entropy as scipy_entropy

from refquant import plugins
from refquant.numerics import dequantize, qparams_from_range, quantize
from refquant.registry import quantizers
from refquant.strategies import LayerSpec
from refquant_static import (
    MinMaxWeights,
    MSEWeights,
    StaticEntropy,
    StaticMinMax,
    StaticMSE,
    StaticPercentile,
)
from refquant_static.clipsearch import clip_fractions, fake_quantize, squared_errors
from refquant_static.entropy import entropy_threshold_bins, kl_divergences
from refquant_static.histogram import SignMagnitudeHistogram
from refquant_static.mse import bin_representatives, pair_ranges
from refquant_static.percentile import allowed_beyond

ACTIVATIONS = [StaticMinMax(), StaticPercentile(), StaticMSE(), StaticEntropy()]


def act_spec(granularity="per-tensor", symmetric=False, signed=None, bits=8, options=()):
    signed = symmetric if signed is None else signed
    return LayerSpec("conv1", "Conv", bits, signed, granularity, symmetric, options)


def w_spec(granularity="per-tensor", symmetric=True, signed=True, bits=8, options=()):
    return LayerSpec("fc1", "Gemm", bits, signed, granularity, symmetric, options)


floats32 = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)
values32 = floats32 | st.sampled_from([0.0, -0.0, 1.0, -2.5])
batch = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 9)),
                   elements=values32)


@st.composite
def batch_lists(draw):
    """1–4 calibration batches ``[N_i, C, L]`` sharing ``C`` and ``L`` (so they concatenate)."""
    c, length = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    return [draw(hnp.arrays(np.float32, (n, c, length), elements=values32)) for n in sizes]


# ----------------------------------------------------------------------------- registration

@pytest.fixture
def fresh_plugins(monkeypatch):
    plugins.reset()
    yield monkeypatch
    monkeypatch.delenv("REFQUANT_PLUGINS", raising=False)
    plugins.reset()


def test_entry_points_register_every_static_strategy(fresh_plugins):
    found = quantizers()
    expected = {"minmax": ("weights", None), "mse": ("weights", None),
                "static-minmax": ("activations", "offline"), "static-percentile": ("activations", "offline"),
                "static-mse": ("activations", "offline"), "static-entropy": ("activations", "offline")}
    for name, (kind, timing) in expected.items():
        entry = found[name]
        assert (entry.plugin, entry.distribution) == ("static", "refquant")
        assert entry.obj.kind == kind and getattr(entry.obj, "timing", None) == timing
        assert entry.doc and entry.obj.name == name


def test_refquant_plugins_variable_leaves_static_out(fresh_plugins):
    fresh_plugins.setenv("REFQUANT_PLUGINS", "dynamic")
    plugins.reset()
    assert not {"minmax", "static-mse"} & set(quantizers())


# ----------------------------------------------------------------------------- histogram

def oracle_histogram(values: np.ndarray, width: float, bins: int):
    """pos/neg/zeros by comparison against explicit edges (np.histogram with given edges)."""
    edges = np.arange(bins + 1) * width
    v = values.astype(np.float64)
    return (np.histogram(v[v > 0], edges)[0], np.histogram(-v[v < 0], edges)[0],
            int(np.count_nonzero(v == 0)))


@given(st.lists(hnp.arrays(np.float32, st.integers(0, 40), elements=floats32 | st.just(0.0)),
                min_size=1, max_size=5), st.sampled_from([4, 16, 2048]))
def test_streaming_histogram_equals_histogram_of_concatenation(batches, bins):
    streamed = SignMagnitudeHistogram(1, bins)
    for b in batches:
        streamed.add(b[None, :])
    everything = np.concatenate(batches)
    once = SignMagnitudeHistogram(1, bins)
    once.add(everything[None, :])
    assert streamed.width[0] == once.width[0]
    for attr in ("pos", "neg", "zeros"):
        assert np.array_equal(getattr(streamed, attr), getattr(once, attr))
    assert streamed.count()[0] == everything.size  # re-binning keeps every count
    amax = float(np.abs(everything).max()) if everything.size else 0.0
    w = streamed.width[0]
    if amax > 0:
        assert bins * w > amax >= bins * w / 2 and math.frexp(w)[0] == 0.5  # smallest power of two
        pos, neg, zeros = oracle_histogram(everything, w, bins)
        assert np.array_equal(streamed.pos[0], pos) and np.array_equal(streamed.neg[0], neg)
        assert streamed.zeros[0] == zeros
    else:
        assert w == 0 and streamed.zeros[0] == everything.size


def test_growth_merges_bins_exactly():
    h = SignMagnitudeHistogram(1, 8)
    h.add(np.array([[0.5, 1.5, 3.5, -3.9, 0.0]], np.float32))  # max 3.9 → w = 0.5 (8·0.5 = 4 > 3.9)
    assert h.width[0] == 0.5
    assert h.pos[0].tolist() == [0, 1, 0, 1, 0, 0, 0, 1] and h.neg[0].tolist() == [0] * 7 + [1]
    h.add(np.array([[30.0]], np.float32))  # w → 4: three doublings, bin m → m >> 3
    assert h.width[0] == 4.0
    assert h.pos[0].tolist() == [3, 0, 0, 0, 0, 0, 0, 1] and h.neg[0].tolist() == [1] + [0] * 7
    assert h.zeros[0] == 1 and h.count()[0] == 6


def test_per_channel_histograms_are_independent():
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((3, 500)) * np.array([[1e-3], [1.0], [1e3]])).astype(np.float32)
    h = SignMagnitudeHistogram(3, 256)
    h.add(rows)
    for c in range(3):
        pos, neg, zeros = oracle_histogram(rows[c], h.width[c], 256)
        assert np.array_equal(h.pos[c], pos) and np.array_equal(h.neg[c], neg)


# ----------------------------------------------------------------------------- fake quantization

@given(hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1e6, 1e6, width=32)),
       st.floats(-50, 0), st.floats(0, 50), st.sampled_from(["uint8", "int8", "int4", "uint4"]),
       st.booleans())
def test_fake_quantize_is_quantize_then_dequantize_bit_for_bit(x, lo, hi, fmt_name, symmetric):
    from refquant.numerics import int_format

    fmt = int_format(fmt_name, narrow=symmetric and fmt_name.startswith("int"))
    try:
        qp = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    except ValueError as exc:  # only a range too narrow for any float32 scale is refused
        assert "underflows float32" in str(exc) and max(-lo, hi) < 1e-40, exc
        return
    expected = dequantize(quantize(x, qp), qp)
    got = fake_quantize(x, qp.scale, np.float32(qp.zero_point), fmt)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.int32), expected.view(np.int32))


# ----------------------------------------------------------------------------- weights

weights = hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 12)),
                     elements=st.floats(-4, 4, width=32, allow_subnormal=False) | st.just(0.0))


@given(weights, st.booleans())
def test_minmax_weights_symmetric_scale_is_max_abs_over_127(w, per_channel):
    spec = w_spec("per-channel" if per_channel else "per-tensor")
    qw = MinMaxWeights().quantize_weight(w, spec)
    amax = np.abs(w).max(axis=1) if per_channel else np.abs(w).max()
    expected = np.where(amax > 0, np.float32(amax) / np.float32(127), np.float32(1))
    assert np.array_equal(qw.qparams.scale, expected.astype(np.float32))
    assert np.all(qw.qparams.zero_point == 0) and qw.qparams.axis == (0 if per_channel else None)
    assert qw.values.dtype == np.int8 and np.abs(qw.values.astype(int)).max() <= 127
    assert np.array_equal(qw.values, quantize(w, qw.qparams))
    if np.any(amax > 0):  # the largest magnitude lands on the grid's end
        assert np.abs(qw.values.astype(int)).max() == 127


@given(weights)
def test_minmax_weights_asymmetric_follows_the_range_formula(w):
    qw = MinMaxWeights().quantize_weight(w, w_spec("per-channel", symmetric=False))
    lo = np.minimum(w.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(w.max(axis=1), 0).astype(np.float32)
    span = hi - lo
    scale = np.where(span > 0, span / np.float32(255), np.float32(1)).astype(np.float32)
    zp = np.rint(np.clip(np.float32(-128) - lo / scale, -128, 127))
    assert np.array_equal(qw.qparams.scale, scale) and np.array_equal(qw.qparams.zero_point, zp)


def brute_force_mse_range(w, spec, grid):
    """Per channel, loop over α = k/grid with the library's quantize/dequantize; ties to larger α."""
    rows = w.reshape(w.shape[0], -1) if spec.per_channel else w.reshape(1, -1)
    best = []
    for r in rows:
        errors = []
        for alpha in clip_fractions(grid):
            lo, hi = alpha * float(r.min()), alpha * float(r.max())
            qp = qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric)
            d = dequantize(quantize(r, qp), qp).astype(np.float64) - r
            errors.append((float(d @ d), alpha, lo, hi))
        e_min = min(e for e, *_ in errors)
        best.append([t for t in errors if t[0] == e_min][-1])
    return best


@given(weights, st.booleans(), st.booleans(), st.sampled_from([1, 7, 20]))
def test_mse_weights_equal_brute_force_search(w, per_channel, symmetric, grid):
    spec = w_spec("per-channel" if per_channel else "per-tensor", symmetric=symmetric,
                  options=(("grid", grid),))
    qw = MSEWeights().quantize_weight(w, spec)
    best = brute_force_mse_range(w, spec, grid)
    lo = np.array([b[2] for b in best])
    hi = np.array([b[3] for b in best])
    expected = (qparams_from_range(lo, hi, spec.fmt, symmetric=symmetric, axis=0) if per_channel
                else qparams_from_range(lo[0], hi[0], spec.fmt, symmetric=symmetric))
    assert qw.qparams == expected


@given(weights, st.booleans())
def test_mse_weights_never_worse_than_minmax_nor_than_a_coarser_grid(w, symmetric):
    def sse(qw):
        d = qw.dequantize().astype(np.float64) - w
        return (d * d).sum(axis=1)

    spec = w_spec("per-channel", symmetric=symmetric)
    fine = sse(MSEWeights().quantize_weight(w, spec))
    coarse = sse(MSEWeights().quantize_weight(w, w_spec("per-channel", symmetric=symmetric,
                                                          options=(("grid", 10),))))
    assert np.all(fine <= sse(MinMaxWeights().quantize_weight(w, spec)))
    assert np.all(fine <= coarse)  # k/10 = 10k/100: the coarse grid is a subset of the default one


def test_mse_weights_clip_heavy_tails():
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(16, 256)).astype(np.float32)
    spec = w_spec("per-channel", bits=4)
    mse_qw, mm_qw = MSEWeights().quantize_weight(w, spec), MinMaxWeights().quantize_weight(w, spec)
    err = lambda qw: float(((qw.dequantize() - w) ** 2).sum())  # noqa: E731
    assert np.all(mse_qw.qparams.scale < mm_qw.qparams.scale)  # at 4 bits every channel clips
    assert err(mse_qw) < 0.8 * err(mm_qw)


def test_weight_layout_and_bits_per_weight():
    w = np.linspace(-1, 1, 6 * 4 * 3 * 3, dtype=np.float32).reshape(6, 4, 3, 3)  # OIHW
    for strategy in (MinMaxWeights(), MSEWeights()):
        per_channel = strategy.quantize_weight(w, w_spec("per-channel", bits=4))
        assert per_channel.values.shape == w.shape and per_channel.qparams.scale.shape == (6,)
        assert per_channel.bits_per_weight == 4 + 6 * (32 + 4) / w.size
        per_tensor = strategy.quantize_weight(w, w_spec())
        assert per_tensor.qparams.scale.shape == () and per_tensor.bits_per_weight == 8 + 40 / w.size
        assert per_tensor.representation == "uniform"


def test_constant_and_zero_weights():
    zero = MSEWeights().quantize_weight(np.zeros((3, 4), np.float32), w_spec("per-channel"))
    assert np.all(zero.qparams.scale == 1) and np.all(zero.values == 0)
    const = MinMaxWeights().quantize_weight(np.full((2, 5), 2.5, np.float32), w_spec())
    assert const.qparams.scale == np.float32(2.5) / np.float32(127) and np.all(const.values == 127)


@pytest.mark.parametrize("strategy", [MinMaxWeights(), MSEWeights()])
def test_bad_weights_get_clear_errors(strategy):
    with pytest.raises(ValueError, match="'fc1'.*non-finite"):
        strategy.quantize_weight(np.array([[1.0, np.nan]], np.float32), w_spec())
    with pytest.raises(ValueError, match="'fc1'.*empty"):
        strategy.quantize_weight(np.zeros((0, 3), np.float32), w_spec())
    with pytest.raises(TypeError, match="'fc1'"):
        strategy.quantize_weight(np.ones((2, 2), np.int8), w_spec())
    with pytest.raises(ValueError, match="fc1.*(underflow|subnormal)"):  # a scale would underflow
        strategy.quantize_weight(np.full((2, 2), 1e-45, np.float32), w_spec())


def test_bad_options_name_the_layer():
    with pytest.raises(ValueError, match="'fc1'.*grid"):
        MSEWeights().quantize_weight(np.ones((2, 2), np.float32), w_spec(options=(("grid", 0),)))
    for options in ((("percentile", 0),), (("percentile", "x"),), (("tails", "left"),), (("bins", 1000),)):
        with pytest.raises(ValueError, match="'conv1'"):
            StaticPercentile().make_observer(act_spec(options=options))


# ----------------------------------------------------------------------------- activations: common rules

def observed(strategy, spec, batches):
    obs = strategy.make_observer(spec)
    for b in batches:
        obs.observe(b)
    return obs


@pytest.mark.parametrize("strategy", ACTIVATIONS, ids=lambda s: s.name)
@given(batches=batch_lists(), symmetric=st.booleans(), per_channel=st.booleans())
def test_batching_does_not_change_the_qparams(strategy, batches, symmetric, per_channel):
    channels = batches[0].shape[1]
    spec = act_spec("per-channel" if per_channel else "per-tensor", symmetric,
                    options=(("grid", 20), ("bins", 256)))
    streamed = observed(strategy, spec, batches).qparams()
    once = observed(strategy, spec, [np.concatenate(batches)]).qparams()
    assert streamed == once
    if per_channel:
        assert streamed.axis == 1 and streamed.scale.shape == (channels,)
    else:
        assert streamed.axis is None


@given(st.lists(batch, min_size=1, max_size=4), st.booleans())
def test_static_minmax_is_the_range_of_everything_seen(batches, symmetric):
    spec = act_spec(symmetric=symmetric)
    got = observed(StaticMinMax(), spec, batches).qparams()
    everything = np.concatenate([b.ravel() for b in batches])
    assert got == qparams_from_range(everything.min(), everything.max(), spec.fmt, symmetric=symmetric)


@pytest.mark.parametrize("strategy", ACTIVATIONS, ids=lambda s: s.name)
def test_constant_tensors_have_defined_qparams(strategy):
    zeros = observed(strategy, act_spec(), [np.zeros((2, 3, 4), np.float32)]).qparams()
    assert zeros.scale == 1 and zeros.zero_point == 0  # qparams_from_range's degenerate rule
    const = observed(strategy, act_spec(), [np.full((2, 3, 4), 3.0, np.float32)]).qparams()
    assert const == qparams_from_range(0.0, 3.0, "uint8")  # nothing to clip: every rule keeps [0, 3]
    per_channel = observed(strategy, act_spec("per-channel"), [np.zeros((2, 3), np.float32)]).qparams()
    assert np.all(per_channel.scale == 1) and per_channel.scale.shape == (3,)


@pytest.mark.parametrize("strategy", ACTIVATIONS, ids=lambda s: s.name)
def test_bad_calibration_gets_clear_errors(strategy):
    obs = strategy.make_observer(act_spec())
    with pytest.raises(ValueError, match="'conv1'.*observed no values"):
        obs.qparams()
    obs.observe(np.zeros((0, 4), np.float32))  # an empty batch observes nothing
    with pytest.raises(ValueError, match="'conv1'.*observed no values"):
        obs.qparams()
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="'conv1'.*1 non-finite"):
            obs.observe(np.array([[1.0, bad]], np.float32))
    with pytest.raises(TypeError, match="'conv1'"):
        obs.observe(np.array(["a"]))
    if strategy.name == "static-mse":
        obs.observe(np.full(3, 1e-40, np.float32))
        with pytest.raises(ValueError, match="'conv1'.*subnormal"):
            obs.qparams()
    per_channel = strategy.make_observer(act_spec("per-channel"))
    with pytest.raises(ValueError, match="'conv1'.*axis 1"):
        per_channel.observe(np.ones(5, np.float32))
    per_channel.observe(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="'conv1'.*4 channels"):
        per_channel.observe(np.ones((2, 4), np.float32))


@pytest.mark.parametrize("strategy", ACTIVATIONS, ids=lambda s: s.name)
def test_qparams_for_float_returns_calibration_or_names_the_layer(strategy):
    qp = qparams_from_range(-1.0, 2.0, "uint8")
    y = np.ones((2, 3), np.float32)
    assert strategy.qparams_for_float(y, act_spec(), qp) is qp
    with pytest.raises(ValueError, match="'conv1'.*never calibrated"):
        strategy.qparams_for_float(y, act_spec(), None)


# ----------------------------------------------------------------------------- percentile

magnitudes_data = hnp.arrays(np.float32, st.integers(1, 400),
                             elements=st.floats(-100, 100, width=32) | st.just(0.0))


@given(magnitudes_data, st.sampled_from([50, 90, 99, 99.9, 99.99, 100, 75.5]))
def test_percentile_abs_threshold_against_sorted_data(y, p):
    # max_saturation=1: this pins the threshold arithmetic on any data, collapse included
    # (the collapse check itself is tests/test_entropy_low_bits.py's)
    obs = observed(StaticPercentile(), act_spec(symmetric=True, options=(("percentile", p), ("max_saturation", 1))),
                   [y])
    lo, hi = obs.ranges()
    t = max(-lo[0], hi[0])
    try:
        got = obs.qparams()
    except ValueError as exc:  # only a threshold too small for any float32 scale is refused
        assert "underflows float32" in str(exc) and t < 1e-40, exc
        return
    assert got == qparams_from_range(lo[0], hi[0], obs.spec.fmt, symmetric=True)
    a = np.abs(y.astype(np.float64))
    n, w = a.size, obs.hist.width[0]
    allowed = allowed_beyond(p, n)
    assert allowed == math.floor((100 - p) * n / 100 + 1e-9)
    assert np.count_nonzero(a > t) <= allowed  # never clips more than 100 - p percent
    s = np.sort(a)
    kth = s[n - allowed - 1]  # the smallest value with at least p % of the data at or below it
    assert kth <= t <= kth + w
    if t < a.max():  # not clipped to the data: one bin lower would clip too many
        assert np.count_nonzero(a >= t - w) > allowed
    if p in (50, 90, 99):  # NumPy's inverted-CDF percentile is the same order statistic
        assert np.percentile(a, p, method="inverted_cdf") == kth


@given(magnitudes_data, st.sampled_from([80, 99, 99.99]))
def test_percentile_both_tails_clip_at_most_half_each(y, p):
    obs = observed(StaticPercentile(), act_spec(options=(("percentile", p), ("tails", "both"), ("max_saturation", 1))),
                   [y])
    lo, hi = obs.ranges()
    v = y.astype(np.float64)
    allowed = allowed_beyond(p, v.size, tails=2)
    assert np.count_nonzero(v > hi[0]) <= allowed and np.count_nonzero(v < lo[0]) <= allowed
    assert v.min() <= lo[0] <= hi[0] <= v.max() or (lo[0] == v.min() and hi[0] == v.max())


def test_percentile_default_is_99_99_of_abs():
    rng = np.random.default_rng(5)
    y = rng.standard_normal(200_000).astype(np.float32)
    obs = observed(StaticPercentile(), act_spec(symmetric=True), np.array_split(y, 3))
    lo, hi = obs.ranges()
    exact = np.percentile(np.abs(y), 99.99, method="inverted_cdf")
    assert exact <= hi[0] <= exact + obs.hist.width[0] and lo[0] == -hi[0]


# ----------------------------------------------------------------------------- MSE (activations)

def loop_mse_search(values, counts, lo, hi, spec, grid):
    """The documented search with plain loops and the library's quantize/dequantize."""
    def score(k_lo, k_hi):
        lo_k = -k_hi / grid * max(-lo, hi) if spec.symmetric else (k_lo / grid * lo if lo < 0 else 0.0)
        hi_k = k_hi / grid * max(-lo, hi) if spec.symmetric else (k_hi / grid * hi if hi > 0 else 0.0)
        qp = qparams_from_range(lo_k, hi_k, spec.fmt, symmetric=spec.symmetric)
        d = dequantize(quantize(values, qp), qp).astype(np.float64) - values
        return float((d * d) @ counts), qp

    def best(pairs):  # ties go to the later pair
        scored = [(score(a, b)[0], a, b) for a, b in pairs]
        e_min = min(e for e, _, _ in scored)
        return [(a, b) for e, a, b in scored if e == e_min][-1]

    ks = range(1, grid + 1)
    if spec.symmetric or lo >= 0 or hi <= 0:
        return score(*best([(k, k) for k in ks]))[1]
    m = max(1, round(math.sqrt(grid)))
    coarse = sorted(range(grid, 0, -m))
    a, b = best([(i, j) for i in coarse for j in coarse])
    near = lambda k: range(max(1, k - m), min(grid, k + m) + 1)  # noqa: E731
    return score(*best([(i, j) for i in near(a) for j in near(b)]))[1]


@given(st.lists(hnp.arrays(np.float32, st.integers(1, 60),
                           elements=st.floats(-10, 10, width=32, allow_subnormal=False)),
                min_size=1, max_size=3), st.booleans(), st.sampled_from([1, 5, 12]))
def test_static_mse_equals_a_loop_over_its_candidates(batches, symmetric, grid):
    spec = act_spec(symmetric=symmetric, options=(("grid", grid), ("bins", 256)))
    obs = observed(StaticMSE(), spec, batches)
    qp = obs.qparams()
    hist, lo, hi = obs.hist, float(obs.lo[0]), float(obs.hi[0])
    if hist.width[0] == 0:
        assert qp.scale == 1
        return
    values, counts = bin_representatives(hist, 0, lo, hi)
    assert qp == loop_mse_search(values, counts, lo, hi, spec, grid)


@pytest.mark.parametrize("seed", range(6))
def test_coarse_to_fine_finds_the_full_grid_optimum(seed):
    rng = np.random.default_rng(seed)
    n = 20_000
    y = [rng.normal(0.5, 1, n), rng.laplace(-0.5, 1, n), rng.standard_t(3, n),
         np.concatenate([rng.normal(-2, 0.5, n // 2), rng.normal(3, 1, n // 2)])][seed % 4]
    spec = act_spec()
    obs = observed(StaticMSE(), spec, [y.astype(np.float32)])
    lo, hi = float(obs.lo[0]), float(obs.hi[0])
    values, counts = bin_representatives(obs.hist, 0, lo, hi)
    k = np.arange(1, 101)
    lo_k, hi_k, _ = pair_ranges(lo, hi, k, k, 100)  # all 10 000 pairs
    full = squared_errors(values[None], lo_k[:, None], hi_k[:, None], spec.fmt, symmetric=False,
                          counts=counts[None])[:, 0]
    best = len(full) - 1 - int(np.argmin(full[::-1]))
    assert (lo_k[best], hi_k[best]) == tuple(x[0] for x in obs.ranges())


def test_static_mse_beats_minmax_on_data_with_outliers():
    rng = np.random.default_rng(7)
    y = rng.standard_normal((256, 8, 64)).astype(np.float32)
    y[0, 0, :4] = [15.0, -12.0, 14.0, 13.0]  # four outliers stretch the min-max range
    spec = act_spec()
    mse_qp = observed(StaticMSE(), spec, np.array_split(y, 3)).qparams()
    mm_qp = observed(StaticMinMax(), spec, [y]).qparams()
    err = lambda qp: float(np.mean((dequantize(quantize(y, qp), qp) - y) ** 2))  # noqa: E731
    assert mse_qp.scale < mm_qp.scale
    assert err(mse_qp) < 0.85 * err(mm_qp)  # measured: 7.23e-4 against 9.35e-4


def test_squared_errors_weights_by_counts():
    values = np.array([[0.1, 0.9]], np.float32)
    e1 = squared_errors(values, np.array([[0.0]]), np.array([[1.0]]), "uint4", symmetric=False,
                        counts=np.array([[3, 0]]))
    e2 = squared_errors(values[:, :1], np.array([[0.0]]), np.array([[1.0]]), "uint4", symmetric=False)
    assert e1[0, 0] == pytest.approx(3 * e2[0, 0], rel=1e-15)


# ----------------------------------------------------------------------------- entropy

def trt_kl_oracle(hist, levels):
    """KL_i by the published loop (bins digitized against linspace, expanded over non-empty bins)."""
    hist = np.asarray(hist)
    out = []
    for i in range(levels, len(hist) + 1):
        group = np.digitize(np.arange(i), np.linspace(0, i, levels + 1)) - 1
        group[hist[:i] == 0] = -1
        level_mass = np.zeros(levels)
        for j, g in enumerate(group):
            if g >= 0:
                level_mass[g] += hist[j]
        members = Counter(g for g in group if g >= 0)
        q = np.array([level_mass[g] / members[g] if g >= 0 else 0.0 for g in group])
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()
        # no mass inside the window: scipy gives NaN (q sums to 0), which np.argmin would pick;
        # refquant defines KL = ∞ there (all of P is clipped onto a bin Q leaves empty)
        out.append(np.inf if q.sum() == 0 else scipy_entropy(p, q))
    return np.array(out)


@given(hnp.arrays(np.int64, st.integers(8, 60), elements=st.integers(0, 1000) | st.just(0)),
       st.sampled_from([4, 8]))
def test_kl_divergences_equal_the_published_loop(hist, levels):
    assume(hist.sum() > 0)
    i, kl = kl_divergences(hist, levels)
    oracle = trt_kl_oracle(hist, levels)
    assert np.array_equal(i, np.arange(levels, len(hist) + 1))
    assert np.array_equal(np.isinf(kl), np.isinf(oracle))
    finite = np.isfinite(oracle)
    assert np.allclose(kl[finite], oracle[finite], rtol=1e-9, atol=1e-12)
    used = np.flatnonzero(hist)[-1] + 1
    if used >= levels:  # the chosen candidate is a minimum of the oracle's KL
        chosen = entropy_threshold_bins(hist, levels)
        o = trt_kl_oracle(hist[:used], levels)
        assert o[chosen - levels] <= o.min() * (1 + 1e-9) + 1e-12


def test_entropy_threshold_on_a_heavy_tailed_distribution():
    rng = np.random.default_rng(11)
    y = rng.laplace(size=200_000).astype(np.float32)  # b = 1: max ≈ 12, KL clips the sparse tail
    spec = act_spec(symmetric=True)
    first = observed(StaticEntropy(), spec, np.array_split(y, 5))
    lo, hi = first.ranges()
    assert 7.0 < hi[0] < 0.9 * np.abs(y).max() and lo[0] == -hi[0]
    again = observed(StaticEntropy(), spec, [y]).qparams()
    assert again == first.qparams()  # deterministic, batch split included


def test_entropy_ignores_exact_zeros_and_uses_all_levels_for_one_signed_data():
    rng = np.random.default_rng(12)
    y = np.maximum(rng.laplace(size=50_000), 0).astype(np.float32)  # a ReLU output: half zeros
    spec = act_spec()  # uint8 asymmetric: 256 levels over [0, a]
    with_zeros = observed(StaticEntropy(), spec, [y])
    without = observed(StaticEntropy(), spec, [y[y > 0]])
    assert np.array_equal(with_zeros.ranges()[1], without.ranges()[1])
    mags = with_zeros.hist.magnitudes()[0]
    expected = entropy_threshold_bins(mags, 256) * with_zeros.hist.width[0]
    assert with_zeros.ranges()[1][0] == min(expected, float(y.max()))
