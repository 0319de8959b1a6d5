"""The surrogate: mean and variance of a layer's pre-activations from patch moments and weight statistics.

Model (``spec/strategies/probabilistic.md`` has the derivation). The pre-activation of output
channel ``o`` at output position ``p`` is ``y_{o,p} = Σ_i w_{o,i} x_{p,i} + b_o``. Treat the
weights of channel ``o`` as i.i.d. with mean ``m_o`` and variance ``v_o`` (independent of the
input) and the position ``p`` as drawn uniformly from the sample ``P_γ``. Then, exactly under
the model (no Normality needed for the two moments)::

    E[y_o | p]   = m_o · S1_p + b_o              Var[y_o | p] = v_o · S2_p
    μ_o  = E[y_o]   = m_o · mean_p S1 + b_o
    σ_o² = Var[y_o] = v_o · mean_p S2 + m_o² · var_p S1          (law of total variance)

Per tensor, with ``o`` also uniform over the output channels (a mixture of the channels)::

    μ  = mean_o μ_o             σ² = mean_o σ_o² + var_o μ_o

computed without forming the ``[N, C_out]`` channel moments: within a group ``g`` of channels
(which share the patch moments ``S̄1 = mean_p S1``, ``V1 = var_p S1``, ``S̄2 = mean_p S2``)::

    μ_g  = m̄_g · S̄1 + b̄_g
    w_g  = v̄_g · S̄2 + (m²)‾_g · V1 + var_g(m) · S̄1² + 2 · cov_g(m, b) · S̄1 + var_g(b)
    μ = mean_g μ_g               σ² = mean_g w_g + var_g μ_g

(``w_g`` is mean σ_o² plus var μ_o over the group, expanded; the group statistics are those of
:func:`~.weightstats.mixture_statistics`, computed offline). This equals the mixture above in
exact arithmetic; in float64 they agree to rounding (tested).

With ``weight_model="per-tensor"`` every channel uses the tensor's ``(m, v)`` in place of its
own (the bias stays per channel).

Arithmetic (so that another implementation reproduces the qparams bit for bit): the patch
sums are exact integers (:mod:`.patches`); with ``P = |P_γ|`` and ``s = float64(s_x)``::

    mean_p S1 = s · (T1 / P)         var_p S1 = s² · ((P·Q1 − T1²) / P²)      mean_p S2 = s² · (T2 / P)

where ``P·Q1 − T1²`` is formed exactly in integers (it is ``P²·var``, ≥ 0) and each ``/`` is one
float64 division; everything after is float64 in the order written above, ``σ = sqrt(σ²)``, and
``mean_g``/``var_g`` over groups are sequential sums in group order divided by ``G``
(``var_g μ_g = mean_g (μ_g − μ)²``, ddof 0). :mod:`.estimate` runs exactly these operations
compiled; :func:`pooled_moments` (the brute mixture over channels, a check) uses NumPy's
``mean``/``var``.
"""

from __future__ import annotations

import numpy as np

from .patches import PatchSums, patch_grid, patch_sums

__all__ = ["patch_moments", "channel_moments", "pooled_moments", "tensor_moments", "activation_range",
           "layer_moments"]

FUSED_ACTIVATIONS = (None, "relu", "relu6")


def patch_moments(sums: PatchSums, x_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_p S1, var_p S1, mean_p S2)`` in real units, float64 ``[N, G]``."""
    p = sums.count
    s = float(np.float32(x_scale))
    if sums.t1.dtype.kind in "iu":
        q1 = sums.q1
        if p * sums.q1_bound < 2**63 or p * int(q1.max(initial=0)) < 2**63:  # then T1² ≤ P·Q1 fits too
            numerator = (p * q1 - sums.t1 * sums.t1).astype(np.float64)
        else:  # Python integers: exact at any size
            numerator = np.array([p * int(a) - int(b) ** 2 for a, b in zip(q1.ravel(), sums.t1.ravel())],
                                 np.float64).reshape(q1.shape)
        var_s1 = numerator / float(p * p)
    else:
        mean = sums.t1 / p
        var_s1 = np.maximum(sums.q1 / p - mean * mean, 0.0)
    return s * (sums.t1 / p), (s * s) * var_s1, (s * s) * (sums.t2 / p)


def _by_channel(values: np.ndarray, channels: int) -> np.ndarray:
    """``[N, G]`` group values repeated for each of the ``channels`` output channels (in order)."""
    groups = values.shape[1]
    return np.repeat(values, channels // groups, axis=1)


def channel_moments(moments, weight_mean, weight_var, bias) -> tuple[np.ndarray, np.ndarray]:
    """``(μ_o, σ_o²)`` per image and output channel, float64 ``[N, C_out]``.

    ``moments`` is :func:`patch_moments`' triple; ``weight_mean``, ``weight_var`` and ``bias``
    (or None) are ``[C_out]`` (the per-tensor weight model passes the tensor's values repeated).
    """
    mean_s1, var_s1, mean_s2 = moments
    m = np.asarray(weight_mean, np.float64).reshape(-1)
    v = np.asarray(weight_var, np.float64).reshape(-1)
    b = 0.0 if bias is None else np.asarray(bias, np.float64).reshape(-1)
    s1, vs1, s2 = (_by_channel(a, m.size) for a in (mean_s1, var_s1, mean_s2))
    mu = m * s1 + b
    var = v * s2 + (m * m) * vs1
    return mu, var


def pooled_moments(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(μ, σ²)`` of the mixture over the channels (axis 1): ``[N]`` each."""
    return mu.mean(axis=1), var.mean(axis=1) + mu.var(axis=1)


def tensor_moments(moments, mix: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(μ, σ²)`` of the channel mixture (``[N]`` each) from the group statistics ``mix``."""
    mean_s1, var_s1, mean_s2 = moments
    mu_g = mix["mix_mean"] * mean_s1 + mix["mix_bias"]
    within = (mix["mix_var"] * mean_s2 + mix["mix_mean_sq"] * var_s1 + mix["mix_mean_var"] * (mean_s1 * mean_s1)
              + 2.0 * mix["mix_mean_bias_cov"] * mean_s1 + mix["mix_bias_var"])
    if mu_g.shape[1] == 1:
        return mu_g[:, 0], within[:, 0]
    mu = _group_mean(mu_g)
    d = mu_g - mu[:, None]
    return mu, _group_mean(within) + _group_mean(d * d)


def _group_mean(values: np.ndarray) -> np.ndarray:
    """``mean_g`` over axis 1 as this module defines it: a sequential float64 sum in group order
    (``cumsum``, not NumPy's pairwise ``sum``), then one division by ``G``."""
    return np.cumsum(values, axis=1)[:, -1] / values.shape[1]


def activation_range(lo, hi, fused_activation: str | None, layer: str):
    """``[lo, hi]`` through a fused activation: ReLU ``[max(lo, 0), max(hi, 0)]``, ReLU6 both clipped to ``[0, 6]``."""
    if fused_activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"layer {layer!r}: unknown fused activation {fused_activation!r}; "
                         f"expected one of {FUSED_ACTIVATIONS}")
    if fused_activation is None:
        return lo, hi
    lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    if fused_activation == "relu6":
        lo, hi = np.minimum(lo, 6.0), np.minimum(hi, 6.0)
    return lo, hi


def layer_moments(x: np.ndarray, zero_point, x_scale, state: dict, bias, attributes: dict, *, gamma: int,
                  weight_model: str, per_channel: bool, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The surrogate's ``(μ, σ)`` of each image's pre-activations, from the layer input ``x``.

    ``x`` is the quantized input (integers with ``zero_point`` and ``x_scale``) or, during
    calibration, the float input (``zero_point = 0``, ``x_scale = 1``). ``state`` holds the
    weight statistics of :func:`~.weightstats.weight_statistics` (per channel),
    :func:`~.weightstats.mixture_statistics` (per tensor, already for the chosen
    ``weight_model``) and ``"weight_shape"``.
    Returns float64 ``[N]`` arrays per tensor, ``[N, C_out]`` per channel.
    """
    if "weight_mean" not in state:
        raise ValueError(f"layer {layer!r}: no weight statistics; the strategy's prepare() must run "
                         f"before the layer is estimated")
    grid = patch_grid(x.shape, tuple(int(d) for d in state["weight_shape"]), attributes, gamma, layer)
    moments = patch_moments(patch_sums(x, zero_point, grid, layer), x_scale)
    if not per_channel:
        mu, var = tensor_moments(moments, state)
        return mu, np.sqrt(np.maximum(var, 0.0))  # ≥ 0 exactly; rounding could give −0
    m, v = state["weight_mean"], state["weight_var"]
    if weight_model == "per-tensor":
        m = np.full(m.shape, state["weight_mean_tensor"])
        v = np.full(v.shape, state["weight_var_tensor"])
    mu, var = channel_moments(moments, m, v, bias)
    return mu, np.sqrt(var)  # a sum of products of non-negative terms: never negative
