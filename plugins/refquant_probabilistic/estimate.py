"""The estimate compiled: from a layer's quantized input to its output qparams in two Numba calls.

:meth:`~refquant_probabilistic.ProbabilisticActivations.qparams_before` runs, per layer and
batch, the chain *patch sums → surrogate moments → range → union over the batch → qparams*.
Written in NumPy — :func:`~.surrogate.layer_moments`, ``image_ranges`` and
:func:`refquant.numerics.qparams_from_range` — it is the reference, readable line by line
against ``spec/strategies/probabilistic.md``; but its thirty-odd calls on ``[N]``-sized
arrays cost a fixed ≈ 0.1–0.2 ms per layer call, more than the patch sums themselves and
several per cent of a millisecond-sized layer.

:func:`estimated_qparams` runs the chain as two Numba calls: the patch-sum loops of
:mod:`.patches` (on scratch arrays allocated here, in Python, so that ``tracemalloc`` and the
engine's accounting see them; called from Python rather than from a fused kernel, where LLVM
compiled them ≈ 1.5× slower), then :func:`_qparams_kernel`, which performs the *same
operations in the same order* as the reference:

* the patch moments (:func:`~.surrogate.patch_moments`): ``mean_p S1 = s·(T1/P)``,
  ``var_p S1 = s²·((P·Q1 − T1²)/P²)`` with ``P·Q1 − T1²`` an exact int64,
  ``mean_p S2 = s²·(T2/P)``, float64, ``s = float64(float32(s_x))``;
* per tensor (:func:`~.surrogate.tensor_moments`) the group terms ``μ_g``, ``w_g`` in the
  reference's order, and over groups sequential sums in group order (the definition of the
  group mean in :mod:`.surrogate`); per channel (:func:`~.surrogate.channel_moments`)
  ``μ_o = m_o·S̄1 + b_o``, ``σ_o² = v_o·S̄2 + m_o²·V1``;
* ``σ = sqrt(max(σ², 0))``, the range ``[μ − α σ, μ + β σ]`` through the fused activation,
  then ``min(lo, 0)``, ``max(hi, 0)`` and the union over the images (min/max: exact in any
  order);
* :func:`~refquant.numerics.qparams_from_range`'s float32 rule: ``lo32 = float32(lo)``,
  ``hi32 = float32(hi)``; asymmetric ``scale = float32(hi32 − lo32) / float32(qmax − qmin)``
  (1 for an empty span), ``zero_point = rint(clip(float32(qmin − lo32/scale)))``; symmetric
  ``scale = max(|lo32|, |hi32|) / float32(2^(b−1) − 1)``, the fixed zero point.

float32 quotients are correctly rounded whether Numba divides in float32 or in float64 and
rounds (53 ≥ 2·24 + 2 bits: the double rounding is innocuous), so the qparams are
bit-identical to the reference's — a hypothesis test asserts it over shapes, groups,
activations, widths, formats and granularities. What depends only on the layer, the input's
shape, dtype and zero point and the spec (the patch grid, the accumulator types, the format's
constants) is worked out once and kept in ``LayerContext.cache`` (``prepare`` clears it);
the weight statistics and widths are read from ``LayerContext.state`` at every call, so a
calibration that replaces or edits them in place is seen at once.

Where the reference would take another road, the kernel does not guess: it reports it and
:func:`estimated_qparams` returns ``None`` so the caller runs the reference — when ``P·Q1 −
T1²`` would need Python integers (``P·Q1`` bound ≥ 2⁶³), for a float input, and when any
moment or scale is not finite and positive (the reference then raises its error naming the
layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from refquant.numerics import IntFormat, QParams
from refquant.strategies import LayerContext, LayerSpec

from .options import read_options
from .patches import PatchGrid, _integer_plan, _scratch, as_nchw, fill_patch_sums, patch_grid

__all__ = ["estimated_qparams"]

_ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2}
_MIX_KEYS = ("mix_mean", "mix_bias", "mix_var", "mix_mean_sq", "mix_mean_var", "mix_mean_bias_cov",
             "mix_bias_var")
_CACHE_KEY = "probabilistic"


@njit(cache=True)
def _image_range(mu, sigma, alpha, beta, activation):
    """One image's ``(lo, hi, finite)``: ``μ − α σ``, ``μ + β σ`` through the activation, then with 0
    inside. The comparisons are NumPy's ``maximum``/``minimum`` (``a >= b ? a : b``) on finite values."""
    lo = mu - alpha * sigma
    hi = mu + beta * sigma
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi, False  # the reference decides (NaN would not survive the comparisons below)
    if activation != 0:
        lo = lo if lo >= 0.0 else 0.0
        hi = hi if hi >= 0.0 else 0.0
        if activation == 2:
            lo = lo if lo <= 6.0 else 6.0
            hi = hi if hi <= 6.0 else 6.0
    lo = lo if lo <= 0.0 else 0.0
    hi = hi if hi >= 0.0 else 0.0
    return lo, hi, True


@njit(cache=True)
def _qparams_kernel(sums, count, s, per_channel, m, v, b, has_bias, tensor_weights, m_tensor, v_tensor,
                    mix_mean, mix_bias, mix_var, mix_mean_sq, mix_mean_var, mix_cov, mix_bias_var, alpha, beta,
                    activation, qmin, qmax, symmetric, half, symmetric_zero_point, scale_out, zp_out):
    """Fill ``scale_out`` (float32) and ``zp_out`` (int32), ``[rows]``; return 0, or 1 when the
    caller must run the reference (a non-finite moment, or a scale that is not finite and > 0).

    ``sums``: int64 ``[N, G, 3]`` patch sums ``(T1, Q1, T2)`` over ``count`` patches. Per channel:
    ``m, v`` the ``[C_out]`` weight statistics (``m_tensor, v_tensor`` instead when
    ``tensor_weights``), ``b`` the bias when ``has_bias`` (else 0, the reference's scalar 0.0).
    Per tensor: ``mix_*`` float64 ``[G]`` (:func:`~.weightstats.mixture_statistics`).
    ``alpha, beta``: float64 ``[rows]``; ``half = 2^(b−1) − 1`` (the symmetric divisor)."""
    n_img, groups = sums.shape[0], sums.shape[1]
    rows = scale_out.shape[0]
    ss = s * s
    pp = float(count * count)
    lo_u = np.zeros(rows)
    hi_u = np.zeros(rows)
    mean_s1 = np.empty(groups)  # the patch moments of one image, per group
    var_s1 = np.empty(groups)
    mean_s2 = np.empty(groups)
    mu_g = np.empty(groups)
    w_g = np.empty(groups)
    per_group = rows // groups if per_channel else 1
    for n in range(n_img):
        for g in range(groups):
            t1, q1, t2 = sums[n, g, 0], sums[n, g, 1], sums[n, g, 2]
            mean_s1[g] = s * (t1 / count)
            var_s1[g] = ss * (float(count * q1 - t1 * t1) / pp)  # P·Q1 − T1²: exact int64 (the plan's bound)
            mean_s2[g] = ss * (t2 / count)
        if per_channel:
            for o in range(rows):
                g = o // per_group
                mo = m_tensor if tensor_weights else np.float64(m[o])
                vo = v_tensor if tensor_weights else np.float64(v[o])
                mu = mo * mean_s1[g] + (np.float64(b[o]) if has_bias else 0.0)
                var = vo * mean_s2[g] + (mo * mo) * var_s1[g]
                sigma = math.sqrt(var)
                if not (math.isfinite(mu) and math.isfinite(sigma)):
                    return 1
                lo, hi, finite = _image_range(mu, sigma, alpha[o], beta[o], activation)
                if not finite:
                    return 1
                lo_u[o] = min(lo_u[o], lo)
                hi_u[o] = max(hi_u[o], hi)
            continue
        for g in range(groups):
            mu_g[g] = mix_mean[g] * mean_s1[g] + mix_bias[g]
            w_g[g] = (mix_var[g] * mean_s2[g] + mix_mean_sq[g] * var_s1[g] + mix_mean_var[g] * (mean_s1[g] * mean_s1[g])
                      + 2.0 * mix_cov[g] * mean_s1[g] + mix_bias_var[g])
        if groups == 1:
            mu, var = mu_g[0], w_g[0]
        else:  # sequential sums in group order, as the reference's _group_mean
            total = 0.0
            for g in range(groups):
                total += mu_g[g]
            mu = total / groups
            within = 0.0
            between = 0.0
            for g in range(groups):
                within += w_g[g]
            for g in range(groups):
                d = mu_g[g] - mu
                between += d * d
            var = within / groups + between / groups
        if not (math.isfinite(mu) and math.isfinite(var)):
            return 1
        sigma = math.sqrt(var if var >= 0.0 else 0.0)
        lo, hi, finite = _image_range(mu, sigma, alpha[0], beta[0], activation)
        if not finite:
            return 1
        lo_u[0] = min(lo_u[0], lo)
        hi_u[0] = max(hi_u[0], hi)
    steps = np.float32(qmax - qmin)
    for r in range(rows):
        lo32 = np.float32(lo_u[r])
        hi32 = np.float32(hi_u[r])
        if symmetric:
            amax = max(abs(lo32), abs(hi32))
            scale = np.float32(1.0) if amax == 0 else np.float32(amax / np.float32(half))
            zp = symmetric_zero_point
        else:
            span = np.float32(hi32 - lo32)
            scale = np.float32(1.0) if span == 0 else np.float32(span / steps)
            if not (math.isfinite(scale) and scale > 0):
                return 1
            initial = np.float32(np.float32(qmin) - np.float32(lo32 / scale))
            initial = min(max(initial, np.float32(qmin)), np.float32(qmax))
            zp = np.int32(np.rint(initial))
        if not (math.isfinite(scale) and scale > 0):
            return 1
        scale_out[r] = scale
        zp_out[r] = zp
    return 0


@dataclass(frozen=True)
class _Plan:
    """What one layer's estimate needs that depends only on the input's shape, dtype and zero
    point, the spec and the layer: worked out once per such combination."""

    grid: PatchGrid
    z: np.integer  # the zero point in the accumulators' type
    scratch: dict  # {name: (shape, dtype)} of the patch sums' arrays (patches._scratch)
    rows: int
    tensor_weights: bool
    activation: int
    fmt: IntFormat
    half: int
    symmetric_zero_point: int


def _make_plan(x_q: np.ndarray, zero_point: int, context: LayerContext, spec: LayerSpec) -> _Plan | None:
    """The plan, or ``None`` where the reference must decide (missing statistics, unknown
    activation, a bias that is not one value per channel, sums beyond int64)."""
    state = context.state
    activation = _ACTIVATION_CODES.get(context.fused_activation)
    if "weight_mean" not in state or activation is None or "alpha" not in state:
        return None
    channels = np.shape(state["weight_mean"])[0]
    if context.bias is not None and np.shape(context.bias) != (channels,):
        return None
    options = read_options(spec)
    grid = patch_grid(x_q.shape, state["weight_shape"], context.attributes, options.gamma, spec.layer)
    g = grid.geometry
    bound, ring = _integer_plan(x_q.dtype.str, zero_point, grid.count, g.k, g.cin_per_group)
    if grid.count * bound >= 2**63:
        return None
    rows = channels if spec.per_channel else 1
    fmt = spec.fmt
    return _Plan(grid, ring(zero_point), _scratch(grid, np.int64, ring), rows,
                 spec.per_channel and options.weight_model == "per-tensor", activation, fmt,
                 2 ** (fmt.bits - 1) - 1, 0 if fmt.signed else 2 ** (fmt.bits - 1))


def estimated_qparams(x_q: np.ndarray, x_qparams: QParams, context: LayerContext, spec: LayerSpec) -> QParams | None:
    """The layer's output qparams for the integer input ``x_q`` (per-tensor ``x_qparams``), or
    ``None`` when the reference must decide.

    Bit-identical to ``qparams_from_range(union of image_ranges(...))`` (module docstring).
    The input checks are the caller's (``ProbabilisticActivations.qparams_before``).
    """
    if x_q.dtype.kind not in "iu":
        return None
    zero_point = int(x_qparams.zero_point)
    plans = context.cache.setdefault(_CACHE_KEY, {})
    key = (x_q.shape, x_q.dtype.num, zero_point, id(spec), context.fused_activation)
    entry = plans.get(key)
    if entry is None or entry[0] is not spec:  # the id of a spec that is gone may be reused
        entry = plans[key] = (spec, _make_plan(x_q, zero_point, context, spec))
    plan = entry[1]
    if plan is None:
        return None
    state = context.state
    alpha, beta = state["alpha"], state["beta"]
    if np.shape(alpha) != (plan.rows,) or np.shape(beta) != (plan.rows,):
        return None
    grid, fmt = plan.grid, plan.fmt
    scratch = {name: np.empty(shape, dtype) for name, (shape, dtype) in plan.scratch.items()}
    sums = fill_patch_sums(as_nchw(np.ascontiguousarray(x_q)), plan.z, grid, scratch)
    scale = np.empty(plan.rows, np.float32)
    zp = np.empty(plan.rows, np.int32)
    bias = context.bias
    status = _qparams_kernel(
        sums, grid.count, float(np.float32(x_qparams.scale)), spec.per_channel, state["weight_mean"],
        state["weight_var"], state["weight_mean"] if bias is None else bias, bias is not None, plan.tensor_weights,
        float(state["weight_mean_tensor"]), float(state["weight_var_tensor"]), *(state[k] for k in _MIX_KEYS),
        alpha, beta, plan.activation, fmt.qmin, fmt.qmax, spec.symmetric, plan.half, plan.symmetric_zero_point,
        scale, zp)
    if status:
        return None
    if spec.per_channel:
        return QParams.from_checked(scale, zp, fmt, axis=1, name=spec.layer)
    return QParams.from_checked(scale.reshape(()), zp.reshape(()), fmt, name=spec.layer)
