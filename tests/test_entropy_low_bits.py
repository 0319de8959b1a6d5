"""Issue #15, item 1: static-entropy below 8 bits, and the check that refuses collapsed ranges.

Before the fix, ``static-entropy`` at 4 bits searched thresholds from ``L = 8`` bins up and
chose ranges of a few bins: digits-cnn's input got scale 0.0026 for data spanning about ±2,
97 % of its non-zero values saturated, and accuracy was chance (9.68 %) with no warning.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant_static.entropy as entropy
from refquant.strategies import MAX_SATURATED_FRACTION, CollapsedRangeError, LayerSpec, check_saturation
from refquant_static.activations import StaticEntropy, StaticMSE, StaticPercentile
from refquant_static.entropy import entropy_threshold_bins, first_candidate


def _digits_input():
    from refquant.data import load_digits
    from refquant.data import digits_inputs
    from refquant.registry import resolve_model

    g = resolve_model("digits-cnn")
    return g, digits_inputs(g, load_digits().calibration(32).x)


def _spec(bits, **options):
    return LayerSpec("x", "Input", bits=bits, signed=False, symmetric=False,
                     options=tuple((k, str(v)) for k, v in options.items()))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_entropy_keeps_most_of_the_digits_input_at_every_bit_width(bits):
    _, x = _digits_input()
    obs = StaticEntropy().make_observer(_spec(bits))
    obs.observe(x)
    qp = obs.qparams()
    fmt = qp.fmt
    lo = (fmt.qmin - int(qp.zero_point)) * float(qp.scale)
    hi = (fmt.qmax - int(qp.zero_point)) * float(qp.scale)
    # the data spans about [-0.8, 1.8]; the old search chose about [-0.02, 0.02] at 4 bits
    assert hi - lo > 0.5 * (float(x.max()) - float(x.min()))


def test_entropy_at_8_bits_is_unchanged_by_the_candidate_floor():
    for levels in (128, 256):
        assert first_candidate(levels, 2048) == levels  # 8-bit: the search starts where it did
    assert first_candidate(8, 2048) == 128 and first_candidate(16, 256) == 16


def test_the_old_candidate_start_is_held_within_the_saturation_limit(monkeypatch):
    """The old start (``L`` = 8 bins at 4 bits) chose a range saturating 97 % of the digits input;
    the search now considers only thresholds within ``max_saturation`` (0.9), so even from the old
    start it returns a range the check accepts, and ``max_saturation=1`` gives back the old pick."""
    _, x = _digits_input()
    monkeypatch.setattr(entropy, "first_candidate", lambda levels, bins: levels)  # the old search
    obs = StaticEntropy().make_observer(_spec(4))
    obs.observe(x)
    lo, hi = obs.ranges()
    share = obs.saturated(np.where(lo > obs.lo, lo, -np.inf), np.where(hi < obs.hi, hi, np.inf)) \
        / (obs.hist.count() - obs.hist.zeros)
    assert share[0] <= 0.9
    obs.qparams()
    obs = StaticEntropy().make_observer(_spec(4, max_saturation=1))  # the limit is an option
    obs.observe(x)
    assert obs.qparams().scale < 0.01


def test_a_collapsed_range_from_another_rule_is_still_refused():
    """static-percentile keeping 5 % of ``|y|`` saturates 93.9 % of the digits input: refused."""
    _, x = _digits_input()
    obs = StaticPercentile().make_observer(_spec(8, percentile=5))
    obs.observe(x)
    with pytest.raises(CollapsedRangeError, match=r"layer 'x'.*static-percentile.*saturates 9\d\.\d% .*max_saturation"):
        obs.qparams()


def test_digits_cnn_at_4_bits_with_static_entropy_is_far_above_chance():
    from refquant.data import load_digits
    from refquant.data import digits_inputs
    from refquant.executor import quantize_model
    from refquant.plan import Plan, TensorPlan

    g, cal = _digits_input()
    plan = Plan(TensorPlan("minmax", 4, "per-channel", True, True),
                TensorPlan("static-entropy", 4, "per-tensor", False, False))
    qm = quantize_model(g, plan, cal)
    test = load_digits().test
    out = qm.run(digits_inputs(g, test.x), backend="reference").outputs[g.outputs[0]]
    assert np.mean(out.argmax(1) == test.y) > 0.7  # measured 0.858; chance is 0.1


@pytest.mark.parametrize("strategy", [StaticEntropy, StaticMSE, StaticPercentile])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_builtin_histogram_strategies_pass_the_check_on_the_digits_input(strategy, bits):
    _, x = _digits_input()
    obs = strategy().make_observer(_spec(bits))
    obs.observe(x)
    obs.qparams()


@given(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=300),
       st.sampled_from([2, 3, 4, 8]))
@settings(max_examples=60, deadline=None)
def test_saturated_count_is_exact(values, bits):
    y = np.asarray(values, np.float32)
    obs = StaticEntropy().make_observer(_spec(bits, max_saturation=1))
    obs.observe(y)
    lo, hi = obs.ranges()
    clipped_hi = hi if hi < obs.hi else np.inf
    clipped_lo = lo if lo > obs.lo else -np.inf
    want = np.count_nonzero((y != 0) & ((y >= clipped_hi) | (y <= clipped_lo)))
    assert int(obs.saturated(np.array([clipped_lo]), np.array([clipped_hi]))[0]) == want


def test_check_saturation_names_the_channel_and_respects_the_limit():
    check_saturation("conv1", "s", [9, 0], [10, 10], ([0, 0], [1, 1]), ([0, 0], [2, 2]))
    with pytest.raises(CollapsedRangeError, match=r"layer 'conv1' channel 1: .*'s'.*95\.0%"):
        check_saturation("conv1", "s", [0, 19], [10, 20], ([0, 0], [1, 1]), ([0, 0], [2, 2]))
    check_saturation("conv1", "s", 19, 20, (0, 1), (0, 2), limit=0.96)
    check_saturation("t", "s", 0, 0, (0, 0), (0, 0))  # an all-zero tensor saturates nothing
    assert MAX_SATURATED_FRACTION == 0.9


@pytest.mark.parametrize("value", ["0", "1.5", "abc", "-0.1"])
def test_max_saturation_option_is_validated(value):
    with pytest.raises(ValueError, match="max_saturation"):
        obs = StaticEntropy().make_observer(_spec(8, max_saturation=value))
        obs.observe(np.arange(10, dtype=np.float32))
        obs.qparams()


def test_few_occupied_bins_are_not_clipped():
    h = np.zeros(2048, np.int64)
    h[:100] = 5
    assert entropy_threshold_bins(h, 8) == 100  # below the floor of 128: nothing to search


def test_offset_one_signed_data_no_longer_collapses_onto_its_first_bin():
    """PP-OCRv4's LayerNorm std (``p2o.Sqrt.1``: 700 values in [0.44, 1.45]) in miniature: every
    value far from 0. The candidate ending at the first occupied bin folds all values into that
    bin, ``P`` and ``Q`` are the same spike and ``KL = 0`` — the global minimum — so the
    unlimited search saturates everything but that bin; within the 90 % limit it keeps the data."""
    from refquant_static.entropy import kl_divergences

    h = np.zeros(2048, np.int64)
    h[450:1480] = np.random.default_rng(0).integers(0, 4, 1030)
    h[450] = 1
    i, kl = kl_divergences(h[:1480], 256)
    assert kl[i == 451][0] == 0.0
    assert entropy_threshold_bins(h, 256, max_saturation=1.0) == 451
    chosen = entropy_threshold_bins(h, 256, max_saturation=0.9)
    assert h[chosen:].sum() <= 0.9 * h.sum() and chosen > 1400


@given(st.lists(st.integers(0, 50), min_size=8, max_size=400), st.sampled_from([4, 8, 16]),
       st.floats(0.05, 1.0), st.integers(0, 300))
@settings(max_examples=60, deadline=None)
def test_the_search_is_the_last_kl_minimum_among_thresholds_within_the_limit(counts, levels, limit, offset):
    from refquant_static.entropy import kl_divergences

    h = np.zeros(1024, np.int64)
    h[offset:offset + len(counts)] = counts
    if not h.any():
        return
    used = int(np.flatnonzero(h)[-1]) + 1
    chosen = entropy_threshold_bins(h, levels, max_saturation=limit)
    start = first_candidate(levels, 1024)
    if used < start:
        assert chosen == used
        return
    i, kl = kl_divergences(h[:used], levels)
    feasible = [(k, v) for k, v in zip(i, kl) if k >= start and h[k:].sum() / h.sum() <= limit]
    best = min(v for _, v in feasible)
    assert chosen == max(k for k, v in feasible if v == best)
    free = entropy_threshold_bins(h, levels, max_saturation=1.0)
    if h[free:].sum() / h.sum() <= limit:
        assert chosen == free  # a range the check accepts is never changed by the limit
