"""The contract kit: every registered strategy passes it, and it catches broken strategies."""

import numpy as np
import pytest

from refquant import registry
from refquant.numerics import qparams_from_range, quantize
from refquant.strategies import QuantizedWeight
from refquant.testing import check_strategy, parametrize_with_checks

ALL = [e.obj for _, e in sorted(registry.quantizers().items())]


def test_every_built_in_is_checked():
    names = {s.name for s in ALL}
    assert names >= {"minmax", "mse", "lloydmax", "statqat-analytic", "static-minmax", "static-percentile",
                     "static-mse", "static-entropy", "dynamic", "probabilistic", "statqat-iterative"}


@parametrize_with_checks(ALL)
def test_registered_strategies_keep_the_contract(strategy, check):
    check(strategy)


class _IgnoresBits:
    """Always 8-bit per tensor, nondeterministic, and silent on NaN: three broken rules."""

    name, kind, doc = "broken", "weights", "ignores the plan"

    def __init__(self):
        self.calls = 0

    def quantize_weight(self, w, spec):
        self.calls += 1
        w = np.nan_to_num(np.asarray(w, np.float32))
        amax = float(np.abs(w).max(initial=0.0)) or 1.0
        qp = qparams_from_range(-amax, amax * (1 + 1e-3 * self.calls), "int8", symmetric=True)
        return QuantizedWeight(quantize(w, qp), qp)


def test_the_kit_reports_what_a_broken_strategy_breaks():
    report = check_strategy(_IgnoresBits())
    failed = {r.name for r in report.failures}
    assert {"check_weight_valid", "check_weight_deterministic", "check_weight_bad_input"} <= failed
    assert not report.ok and report.ran == 6
    assert "FAIL check_weight_valid" in str(report)
    known = check_strategy(_IgnoresBits(), expected_failures={n: "known" for n in failed})
    assert known.ok and str(known).count("expected failures") == 1


@parametrize_with_checks([_IgnoresBits()], expected_failures={"broken": {
    "check_weight_valid": "always 8-bit per tensor", "check_weight_deterministic": "scale drifts per call",
    "check_weight_bad_input": "NaN silently zeroed", "check_weight_constant": "ignores per-channel"}})
def test_known_failures_are_marked_xfail(strategy, check):
    check(strategy)


def test_expected_failures_are_strict_and_checked():
    deco = parametrize_with_checks([_IgnoresBits()], expected_failures={"broken": {"check_weight_valid": "x"}})
    params = deco.args[1]
    marked = {p.id: [m.kwargs for m in p.marks] for p in params}
    assert marked["broken-check_weight_valid"] == [{"reason": "x", "strict": True, "raises": Exception}]
    assert marked["broken-check_weight_constant"] == []
    with pytest.raises(ValueError, match="broken:check_no_such"):
        parametrize_with_checks([_IgnoresBits()], expected_failures={"broken": {"check_no_such": "typo"}})
