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


def test_the_old_candidate_start_is_refused_as_a_collapse(monkeypatch):
    _, x = _digits_input()
    monkeypatch.setattr(entropy, "first_candidate", lambda levels, bins: levels)  # the old search
    obs = StaticEntropy().make_observer(_spec(4))
    obs.observe(x)
    with pytest.raises(CollapsedRangeError, match=r"layer 'x'.*static-entropy.*saturates 9\d\.\d% .*max_saturation"):
        obs.qparams()
    obs = StaticEntropy().make_observer(_spec(4, max_saturation=1))  # the limit is an option
    obs.observe(x)
    assert obs.qparams().scale < 0.01


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
