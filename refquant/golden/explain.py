"""Explaining a requantization difference: which mode, or which broken rule, reproduces it.

Given a layer's exact int32 accumulators and a backend's int8 outputs, the outputs are
recomputed under each of refquant's four requant modes and under a short list of rules real
backends are known to get wrong. Every candidate that reproduces the backend's outputs
*exactly* is reported — "matches fixed-point double rounding exactly" says more than
"3 outputs are off by one". Nothing here is a tolerance: a candidate matches or it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..numerics import REQUANT_MODES, make_requantizer, requantize

__all__ = ["MODE_DESCRIPTIONS", "Rule", "RULES", "explain_requantization", "combine_explanations"]

MODE_DESCRIPTIONS = {
    "float32": "onnxruntime's float32 requantization (float32 product, round half to even, "
               "zero point added after rounding)",
    "float64": "the onnx reference evaluator's requantization (float64 product, zero point added "
               "before rounding)",
    "fixed-point": "TFLite/gemmlowp fixed-point double rounding (Q31 multiplier: rounding doubling "
                   "high multiply, then rounding divide by a power of two)",
    "fixed-point-single": "TFLite single-rounding fixed point (TFLITE_SINGLE_ROUNDING)",
}


@dataclass(frozen=True)
class Rule:
    """A requantization some backend might implement instead of refquant's.

    ``compute(acc, layer)`` returns the int outputs; ``layer`` is a dict with the requantizer
    ``rq`` of the set's mode (fused clamp included), ``rq_no_clamp``, the qparams and ``bias``.
    """

    name: str
    does: str
    breaks: str
    compute: Callable


def _per_channel(a, ndim):
    """Per-channel constants shaped to broadcast along axis 1 of an ``ndim``-D accumulator."""
    shape = [1] * ndim
    shape[1] = -1
    return np.asarray(a).reshape(shape)


def _float32_rounded(rounder):
    """``clip(rounder(float32(acc) · m) + z_y, lo, hi)`` with the float32 multiplier."""
    def compute(acc, layer):
        rq, nd = layer["rq"], acc.ndim
        v = acc.astype(np.float32) * _per_channel(rq.multiplier, nd)
        y = rounder(v.astype(np.float64)) + _per_channel(rq.zero_point, nd)
        return np.clip(y, _per_channel(rq.lo, nd), _per_channel(rq.hi, nd)).astype(rq.out_dtype)
    return compute


def _half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _reciprocal(acc, layer):
    """The multiplier as ``float32(s_x · s_w) · float32(1 / s_y)``: one more rounding."""
    x, w, y = layer["x_qp"], layer["w_qp"], layer["y_qp"]
    m = ((np.float32(x.scale) * np.asarray(w.scale, np.float32)).astype(np.float32)
         * (np.float32(1) / np.float32(y.scale))).astype(np.float32)
    rq, nd = layer["rq"], acc.ndim
    v = acc.astype(np.float32) * _per_channel(np.broadcast_to(m, rq.multiplier.shape), nd)
    yv = np.rint(v).astype(np.float64) + _per_channel(rq.zero_point, nd)
    return np.clip(yv, _per_channel(rq.lo, nd), _per_channel(rq.hi, nd)).astype(rq.out_dtype)


def _no_clamp(acc, layer):
    return requantize(acc, layer["rq_no_clamp"], channel_axis=1)


def _no_bias(acc, layer):
    bias = layer["bias"]
    if bias is None:
        return None
    unbiased = acc.astype(np.int64) - _per_channel(bias, acc.ndim)
    if unbiased.min(initial=0) < -(2**31) or unbiased.max(initial=0) > 2**31 - 1:
        return None
    return requantize(unbiased.astype(np.int32), layer["rq"], channel_axis=1)


RULES: tuple[Rule, ...] = (
    Rule("float32-half-away", "float32 product rounded half away from zero",
         "round half to even (spec/numerics.md, requantization)", _float32_rounded(_half_away)),
    Rule("float32-half-up", "float32 product rounded half up (floor(v + 0.5))",
         "round half to even (spec/numerics.md, requantization)", _float32_rounded(lambda v: np.floor(v + 0.5))),
    Rule("float32-truncate", "float32 product truncated toward zero",
         "rounding to nearest (spec/numerics.md, requantization)", _float32_rounded(np.trunc)),
    Rule("float32-floor", "float32 product rounded down (floor)",
         "rounding to nearest (spec/numerics.md, requantization)", _float32_rounded(np.floor)),
    Rule("reciprocal-multiplier", "multiplier float32(s_x·s_w)·float32(1/s_y) (a reciprocal, one more rounding)",
         "the multiplier float32(float32(s_x·s_w) / s_y) (spec/numerics.md)", _reciprocal),
    Rule("no-activation-clamp", "the fused Relu/Relu6 clamp left out",
         "the fused activation clamps to [max(qmin, z_y), …] (spec/numerics.md)", _no_clamp),
    Rule("no-bias", "the int32 bias left out of the accumulator",
         "acc = Σ (x - z_x)(w - z_w) + bias (spec/numerics.md, integer kernels)", _no_bias),
)


def _sentence(matching_modes, matching_rules, mode: str, mismatches: dict, outputs: int, cases: int = 1) -> str:
    on = f" on all {cases} cases" if cases > 1 else ""
    parts = [f"matches {MODE_DESCRIPTIONS[m]} exactly{on} (refquant mode {m!r}; the golden set uses {mode!r})"
             for m in matching_modes if m != mode]
    parts += [f"matches '{r.does}' exactly{on}: breaks {r.breaks}" for r in RULES if r.name in matching_rules]
    if mode in matching_modes:
        return f"equals refquant's {mode!r} requantization of these accumulators"
    if parts:
        return "; also ".join(parts)
    best = min(REQUANT_MODES, key=lambda m: mismatches[m])
    return (f"no requant mode or known rule reproduces it{on} (closest: {best!r}, {mismatches[best]} of "
            f"{outputs} outputs differ)")


def explain_requantization(acc, got, x_qp, w_qp, y_qp, activation, bias, mode: str) -> dict:
    """Which requant modes and :data:`RULES` turn ``acc`` into exactly ``got``.

    Returns ``{"matching_modes", "matching_rules", "checked_rules", "mode_mismatches", "outputs",
    "text"}``; ``text`` is one sentence for people. A rule that cannot apply (the clamp rule
    without a fused activation, the bias rule without a bias) is not checked.
    """
    got = np.asarray(got).astype(np.int64)
    rqs = {m: make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, mode=m,
                               activation=activation) for m in REQUANT_MODES}
    mismatches = {}
    for m, rq in rqs.items():
        try:
            mismatches[m] = int(np.count_nonzero(requantize(acc, rq, channel_axis=1).astype(np.int64) != got))
        except OverflowError:
            mismatches[m] = int(got.size)
    matching_modes = [m for m in REQUANT_MODES if mismatches[m] == 0]
    layer = {"rq": rqs[mode], "x_qp": x_qp, "w_qp": w_qp, "y_qp": y_qp, "bias": bias,
             "rq_no_clamp": make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                                             mode=mode, activation=None)}
    matching_rules, checked = [], []
    for rule in RULES:
        if rule.name == "no-activation-clamp" and activation is None:
            continue
        y = rule.compute(acc, layer)
        if y is None:
            continue
        checked.append(rule.name)
        if np.array_equal(y.astype(np.int64), got):
            matching_rules.append(rule.name)
    return {"matching_modes": matching_modes, "matching_rules": matching_rules, "checked_rules": checked,
            "mode_mismatches": mismatches, "outputs": int(got.size),
            "text": _sentence(matching_modes, matching_rules, mode, mismatches, int(got.size))}


def combine_explanations(explanations: list, mode: str) -> dict:
    """What reproduces the backend on *every* case: the intersection of the cases' matches.

    A rule counts as matching if it matched every case it was checked on (and was checked on
    at least one); a mode must match every case.
    """
    modes = [m for m in REQUANT_MODES if all(m in e["matching_modes"] for e in explanations)]
    rules = [r.name for r in RULES
             if any(r.name in e["checked_rules"] for e in explanations)
             and all(r.name in e["matching_rules"] for e in explanations if r.name in e["checked_rules"])]
    mismatches = {m: sum(e["mode_mismatches"][m] for e in explanations) for m in REQUANT_MODES}
    outputs = sum(e["outputs"] for e in explanations)
    return {"matching_modes": modes, "matching_rules": rules, "mode_mismatches": mismatches, "outputs": outputs,
            "cases": len(explanations),
            "text": _sentence(modes, rules, mode, mismatches, outputs, len(explanations))}
