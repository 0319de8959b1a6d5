"""Contract checks for quantizer strategies, in the spirit of scikit-learn's ``check_estimator``.

A plugin author runs::

    from refquant.testing import check_strategy
    report = check_strategy(MyStrategy())
    report.raise_for_failures()      # or: assert report.ok, report

or, with pytest, one test per check::

    @parametrize_with_checks([MyStrategy()],
                             expected_failures={"my-strategy": {"check_weight_constant": "why"}})
    def test_contract(strategy, check):
        check(strategy)

The checks are about semantics a plan and the executor rely on: valid qparams, determinism,
the requested bits / signedness / granularity honoured (a uniform weight on the b-bit grid; a
``"codebook"`` weight on the 8-bit grid with at most 2^b distinct values per group, see
:func:`codebook_grid`), clear errors (naming the layer) for
NaN and empty tensors, defined behaviour for constant and all-zero tensors, and results that
survive a JSON + npz round trip. Known failures are declared, never hidden:
``check_strategy(s, expected_failures={"check_name": "why"})``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..graph import Node
from ..numerics import IntFormat, QParams, qparams_from_range, quantize
from ..strategies import REQUIRED_METHODS, TIMING_METHODS, TIMINGS, LayerContext, LayerSpec, QuantizedWeight

__all__ = ["CheckResult", "Report", "check_strategy", "strategy_checks", "parametrize_with_checks"]

LAYER = "contract.layer"


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str = ""
    expected_failure: str | None = None


@dataclass
class Report:
    strategy: str
    results: list = field(default_factory=list)

    @property
    def ran(self) -> int:
        return len(self.results)

    @property
    def failures(self) -> list:
        return [r for r in self.results if not r.passed and r.expected_failure is None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        if self.failures:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        xfail = sum(1 for r in self.results if r.expected_failure is not None)
        lines = [f"{self.strategy}: {self.ran} checks, {self.ran - len(self.failures) - xfail} passed, "
                 f"{len(self.failures)} failed, {xfail} expected failures"]
        lines += [f"  FAIL {r.name}: {r.message}" for r in self.failures]
        return "\n".join(lines)


class ContractError(AssertionError):
    """A strategy broke a rule of the contract."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ContractError(message)


def _specs(kind: str) -> list[LayerSpec]:
    """The grids every strategy of ``kind`` must honour."""
    if kind == "weights":
        return [LayerSpec(LAYER, "Conv", b, True, g, True) for b in (8, 4) for g in ("per-tensor", "per-channel")]
    return [LayerSpec(LAYER, "Conv", b, s, g, False) for b, s in ((8, False), (8, True), (4, False))
            for g in ("per-tensor", "per-channel")]


def _check_qparams(qp, spec: LayerSpec, channels: int, what: str, fmt: IntFormat | None = None) -> None:
    """qparams valid on the requested grid: ``spec``'s bits and signedness, or exactly ``fmt``."""
    _require(isinstance(qp, QParams), f"{what}: expected QParams, got {type(qp).__name__}")
    if fmt is None:
        _require(qp.fmt.bits == spec.bits and qp.fmt.signed == spec.signed,
                 f"{what}: asked for {spec.bits}-bit {'signed' if spec.signed else 'unsigned'}, got {qp.fmt}")
    else:
        _require(qp.fmt == fmt, f"{what}: a {spec.bits}-bit codebook weight must be on the {fmt} grid, "
                                f"got {qp.fmt}")
    _require(bool(np.all(np.isfinite(qp.scale)) and np.all(qp.scale > 0)), f"{what}: scale not finite > 0")
    _require(bool(np.all((qp.zero_point >= qp.fmt.qmin) & (qp.zero_point <= qp.fmt.qmax))),
             f"{what}: zero point outside the grid")
    if spec.per_channel:
        _require(qp.axis is not None and qp.scale.size == channels,
                 f"{what}: per-channel asked, got axis={qp.axis} with {qp.scale.size} scales "
                 f"(expected {channels})")
    else:
        _require(qp.axis is None and qp.scale.size == 1, f"{what}: per-tensor asked, got axis={qp.axis}")


def _qparams_equal(a: QParams, b: QParams) -> bool:
    return a == b


def _raises_naming_layer(fn: Callable, what: str) -> None:
    try:
        fn()
    except (ValueError, TypeError) as exc:
        _require(LAYER in str(exc), f"{what}: the error does not name the layer: {exc}")
        return
    raise ContractError(f"{what}: expected a ValueError naming the layer, nothing was raised")


def _weights(rng) -> np.ndarray:
    return rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.2


def codebook_grid(spec: LayerSpec) -> IntFormat:
    """The grid a ``"codebook"`` weight's values must lie on: ``spec``'s grid widened to 8 bits.

    A codebook of 2^b levels is not a b-bit uniform grid; written on the int8 kernels' grid
    (same signedness and narrowness as ``spec.fmt``) it holds at most 2^b distinct values per
    group instead.
    """
    return IntFormat(8, spec.signed, narrow=spec.fmt.narrow)


def _check_weight_grid(qw, spec: LayerSpec, shape: tuple, what: str) -> None:
    """The values and qparams of a quantized weight honour ``spec`` (rules by representation).

    * ``"codebook"``: qparams on :func:`codebook_grid` (the requested signedness, 8 bits),
      values on that grid, at most ``2^spec.bits`` distinct values per group (the tensor, or
      each output channel), and the ``indices`` and ``codebook`` arrays present;
    * anything else: qparams and values on ``spec.fmt``, the requested b-bit grid.
    """
    _require(isinstance(qw, QuantizedWeight), f"{what}: quantize_weight must return a QuantizedWeight")
    if qw.representation == "codebook":
        fmt = codebook_grid(spec)
        _check_qparams(qw.qparams, spec, shape[0], what, fmt=fmt)
        groups = qw.values.reshape(shape[0], -1) if spec.per_channel else qw.values.reshape(1, -1)
        most = max(np.unique(g).size for g in groups)
        _require(most <= 2**spec.bits, f"{what}: a codebook weight has {most} distinct values in a "
                                       f"group, more than 2^{spec.bits}")
        missing = {"indices", "codebook"} - set(qw.arrays)
        _require(not missing, f"{what}: a codebook weight must keep {sorted(missing)} in arrays")
    else:
        fmt = spec.fmt
        _check_qparams(qw.qparams, spec, shape[0], what)
    _require(qw.values.shape == shape, f"{what}: values shape {qw.values.shape} != weight shape {shape}")
    _require(qw.values.dtype == fmt.storage_dtype, f"{what}: values dtype {qw.values.dtype}, expected "
                                                   f"{fmt.storage_dtype}")
    _require(bool(np.all((qw.values >= fmt.qmin) & (qw.values <= fmt.qmax))),
             f"{what}: values outside the grid {fmt} [{fmt.qmin}, {fmt.qmax}]")


# ---- weight quantizer checks ------------------------------------------------------------------
def check_weight_valid(s) -> None:
    rng = np.random.default_rng(0)
    w = _weights(rng)
    for spec in _specs("weights"):
        qw = s.quantize_weight(w, spec)
        _check_weight_grid(qw, spec, w.shape, f"{spec.bits}-bit {spec.granularity}")


def check_weight_deterministic(s) -> None:
    w = _weights(np.random.default_rng(1))
    for spec in _specs("weights"):
        a, b = s.quantize_weight(w.copy(), spec), s.quantize_weight(w.copy(), spec)
        _require(np.array_equal(a.values, b.values) and _qparams_equal(a.qparams, b.qparams),
                 f"two calls on the same weight differ ({spec.granularity}, {spec.bits} bits)")


def check_weight_accuracy(s) -> None:
    """At 8 bits the dequantized weight is within 5% (relative RMS) of the float weight."""
    w = _weights(np.random.default_rng(2))
    for spec in _specs("weights"):
        if spec.bits != 8:
            continue
        err = np.sqrt(np.mean((s.quantize_weight(w, spec).dequantize() - w) ** 2) / np.mean(w**2))
        _require(err < 0.05, f"8-bit relative RMS error {err:.3g} ≥ 0.05 ({spec.granularity})")


def check_weight_bad_input(s) -> None:
    spec = _specs("weights")[0]
    w = _weights(np.random.default_rng(3))
    w[0, 0, 0, 0] = np.nan
    _raises_naming_layer(lambda: s.quantize_weight(w, spec), "NaN weight")
    _raises_naming_layer(lambda: s.quantize_weight(np.zeros((0, 3), np.float32), spec), "empty weight")


def check_weight_constant(s) -> None:
    """All-zero and constant weights: valid qparams, exact zeros, or a clear error naming the layer."""
    for spec in _specs("weights"):
        for w in (np.zeros((4, 5), np.float32), np.full((4, 5), 0.25, np.float32)):
            try:
                qw = s.quantize_weight(w, spec)
            except (ValueError, TypeError) as exc:
                _require(LAYER in str(exc), f"constant weight: error does not name the layer: {exc}")
                continue
            _check_weight_grid(qw, spec, w.shape, "constant weight")
            if not w.any():
                _require(not qw.dequantize().any(), "an all-zero weight must dequantize to zeros")


def check_weight_round_trip(s) -> None:
    w = _weights(np.random.default_rng(4))
    for spec in _specs("weights"):
        qw = s.quantize_weight(w, spec)
        meta, arrays = qw.to_state()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        buf.seek(0)
        with np.load(buf, allow_pickle=False) as npz:
            back = QuantizedWeight.from_state(json.loads(json.dumps(meta)), dict(npz))
        _require(np.array_equal(back.values, qw.values) and back.qparams == qw.qparams
                 and np.array_equal(back.dequantize(), qw.dequantize())
                 and back.representation == qw.representation and set(back.arrays) == set(qw.arrays)
                 and all(np.array_equal(back.arrays[k], np.asarray(qw.arrays[k])) for k in qw.arrays),
                 "quantized weight changed through a JSON + npz round trip")


# ---- activation quantizer checks --------------------------------------------------------------
def _batches(rng, n=3) -> list:
    return [(rng.standard_normal((4, 5, 6, 6)) * 1.5 + 0.3).astype(np.float32) for _ in range(n)]


def _context(rng) -> tuple[LayerContext, np.ndarray]:
    """A small Conv layer for before-layer strategies: its context and a quantized input."""
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32) * 0.3
    wqp = qparams_from_range(np.abs(w).max(), np.abs(w).max(), "int8", symmetric=True, name="w")
    qw = QuantizedWeight(quantize(w, wqp), wqp)
    node = Node(LAYER, "Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})
    ctx = LayerContext(node, qw, np.zeros(5, np.float32), dict(node.attributes), None)
    return ctx, w


def _observed(s, spec, batches):
    obs = s.make_observer(spec)
    for b in batches:
        obs.observe(b)
    return obs.qparams()


def check_activation_declares_timing(s) -> None:
    _require(s.timing in TIMINGS, f"timing must be one of {TIMINGS}, got {s.timing!r}")
    for m in TIMING_METHODS[s.timing]:
        _require(callable(getattr(s, m, None)), f"timing {s.timing!r} needs a {m}() method")
    for m in REQUIRED_METHODS["activations"]:
        _require(callable(getattr(s, m, None)), f"every activation strategy needs {m}()")


def check_observer_valid(s) -> None:
    batches = _batches(np.random.default_rng(5))
    for spec in _specs("activations"):
        _check_qparams(_observed(s, spec, batches), spec, 5, f"observer {spec.bits}-bit {spec.granularity}")


def check_observer_deterministic(s) -> None:
    batches = _batches(np.random.default_rng(6))
    for spec in _specs("activations"):
        _require(_observed(s, spec, batches) == _observed(s, spec, [b.copy() for b in batches]),
                 f"two observers on the same data disagree ({spec.granularity})")


def check_observer_bad_input(s) -> None:
    spec = _specs("activations")[0]
    bad = _batches(np.random.default_rng(7), 1)[0]
    bad[0, 0, 0, 0] = np.nan
    _raises_naming_layer(lambda: s.make_observer(spec).observe(bad), "NaN batch")
    _raises_naming_layer(lambda: s.make_observer(spec).qparams(), "qparams() before any observe()")


def check_observer_constant(s) -> None:
    for spec in _specs("activations"):
        for value in (0.0, 1.5):
            try:
                qp = _observed(s, spec, [np.full((2, 5, 3, 3), value, np.float32)])
            except (ValueError, TypeError) as exc:
                _require(LAYER in str(exc), f"constant batch: error does not name the layer: {exc}")
                continue
            _check_qparams(qp, spec, 5, f"constant {value} batch")


def check_qparams_for_float(s) -> None:
    batches = _batches(np.random.default_rng(8))
    for spec in _specs("activations"):
        observed = _observed(s, spec, batches)
        qp = s.qparams_for_float(batches[0], spec, observed)
        _check_qparams(qp, spec, 5, "qparams_for_float")
        _require(qp == s.qparams_for_float(batches[0].copy(), spec, observed), "qparams_for_float not deterministic")


def check_after_layer(s) -> None:
    if s.timing != "after":
        return
    rng = np.random.default_rng(9)
    acc = rng.integers(-50000, 50000, (2, 5, 4, 4)).astype(np.int32)
    acc_scale = (rng.uniform(0.5, 2, 5) * 1e-4).astype(np.float32)
    for spec in _specs("activations"):
        for act in (None, "relu"):
            qp = s.qparams_after(acc, acc_scale, spec, channel_axis=1, fused_activation=act)
            _check_qparams(qp, spec, 5, f"qparams_after ({act})")
            _require(qp == s.qparams_after(acc.copy(), acc_scale, spec, channel_axis=1, fused_activation=act),
                     "qparams_after not deterministic")


def check_before_layer(s) -> None:
    if s.timing != "before":
        return
    rng = np.random.default_rng(10)
    ctx, _ = _context(rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    xqp = qparams_from_range(x.min(), x.max(), "uint8", name="x")
    xq = quantize(x, xqp)
    for spec in _specs("activations"):
        c = LayerContext(ctx.node, ctx.weight, ctx.bias, ctx.attributes, ctx.fused_activation)
        s.prepare(c, spec)
        qp = s.qparams_before(xq, xqp, c, spec)
        _check_qparams(qp, spec, 5, "qparams_before")
        _require(qp == s.qparams_before(xq.copy(), xqp, c, spec), "qparams_before not deterministic")


def check_qparams_round_trip(s) -> None:
    batches = _batches(np.random.default_rng(11))
    for spec in _specs("activations"):
        qp = _observed(s, spec, batches)
        back = QParams.from_dict(json.loads(json.dumps(qp.to_dict())), qp.name)
        _require(back == qp, "activation qparams changed through a JSON round trip")


_WEIGHT_CHECKS = [check_weight_valid, check_weight_deterministic, check_weight_accuracy,
                  check_weight_bad_input, check_weight_constant, check_weight_round_trip]
_ACTIVATION_CHECKS = [check_activation_declares_timing, check_observer_valid, check_observer_deterministic,
                      check_observer_bad_input, check_observer_constant, check_qparams_for_float,
                      check_after_layer, check_before_layer, check_qparams_round_trip]


def strategy_checks(strategy) -> list[Callable]:
    """The checks that apply to ``strategy`` (by its ``kind``)."""
    kind = getattr(strategy, "kind", None)
    if kind == "weights":
        return list(_WEIGHT_CHECKS)
    if kind == "activations":
        return list(_ACTIVATION_CHECKS)
    raise TypeError(f"{strategy!r}: kind must be 'weights' or 'activations', got {kind!r}")


def check_strategy(strategy, *, expected_failures: dict | None = None) -> Report:
    """Run every applicable check; return a :class:`Report` (it never raises for a failure)."""
    expected_failures = expected_failures or {}
    report = Report(getattr(strategy, "name", repr(strategy)))
    for check in strategy_checks(strategy):
        try:
            check(strategy)
            result = CheckResult(check.__name__, True)
        except Exception as exc:  # noqa: BLE001 — every failure is reported, with its type
            result = CheckResult(check.__name__, False, f"{type(exc).__name__}: {exc}")
        result.expected_failure = expected_failures.get(check.__name__) if not result.passed else None
        report.results.append(result)
    return report


def parametrize_with_checks(strategies, *, expected_failures: dict | None = None):
    """A pytest decorator: one test per (strategy, check), ids ``name-check``.

    ``expected_failures`` maps a strategy name to ``{check name: reason}``; those cases are
    marked ``xfail(strict=True)`` with the reason, so a known failure is visible in the test
    report and a fixed one (an unexpected pass) turns the run red until the mark is removed.
    A name in ``expected_failures`` that matches no (strategy, check) case is an error: a
    misspelt mark must not hide anything.
    """
    import pytest

    expected_failures = expected_failures or {}
    cases, ids, used = [], [], set()
    for s in strategies:
        for c in strategy_checks(s):
            reason = expected_failures.get(s.name, {}).get(c.__name__)
            marks = ()
            if reason is not None:
                marks = (pytest.mark.xfail(reason=reason, strict=True, raises=Exception),)
                used.add((s.name, c.__name__))
            cases.append(pytest.param(s, c, marks=marks, id=f"{s.name}-{c.__name__}"))
    declared = {(n, c) for n, checks in expected_failures.items() for c in checks}
    if declared - used:
        unknown = ", ".join(f"{n}:{c}" for n, c in sorted(declared - used))
        raise ValueError(f"parametrize_with_checks: expected_failures name no such strategy check: {unknown}")
    return pytest.mark.parametrize(("strategy", "check"), cases)
