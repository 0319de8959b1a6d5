"""The iterative quantizer: a fixed point for the MSE-optimal scale of samples from any distribution.

Two stages, each a fixed-point iteration on the samples ``x_1 … x_n``:

**1. The statistical update** — set the derivative of the *modelled* MSE (exact clipping,
``Δ^2/12`` stepping; :mod:`.errormodel`) to zero, holding the sets of clipped and inside samples
fixed, and solve for the scale. For a uniform grid ``{kmin … kmax}`` (clips ``hi = kmax·s``,
``lo = kmin·s``)::

    MSE(s) ≈ [ Σ_{x>=hi} (x - kmax s)^2 + Σ_{x<=lo} (x - kmin s)^2 + N_in s^2/12 ] / n

    s_{t+1} = ( kmax Σ_{x>=hi} x + |kmin| Σ_{x<=lo} |x| ) / ( N_in/12 + kmax^2 N_hi + kmin^2 N_lo )

which for the symmetric grid ``kmax = -kmin = Q`` and clip ``c = Q s`` is OCTAV's rule
``c_{t+1} = Σ_{|x|>=c} |x| / (N_in / (12 Q^2) + N_clip)``. For ``uintN`` (``kmin = 0``) the
negative samples go to 0 at every scale and drop out. For a float format (clip
``s·v_max``, subnormal step ``s·δ_sub`` below ``s·2^emin``)::

    s_{t+1} = v_max Σ_{|x|>=s v_max} |x|  /  ( N_sub δ_sub^2 / 12 + v_max^2 N_clip )

In the normal binades the step ``s·2^(e-M)`` of a value ``|x|`` in binade ``e`` of ``|x|/s``
is proportional to ``|x|`` on average, so their stepping error does not depend on ``s`` and
drops out of the derivative; only the subnormal samples (absolute step ``s·δ_sub``) remain.
Keeping ``δ(|x|/s)^2/12`` for *every* inside sample — the naive update — is biased low
(``spec/strategies/statqat.md`` has the numbers).

``N_in`` counts the non-zero samples strictly inside the clips and ``N_sub`` the non-zero
samples below the subnormal bound: an exact zero (what a ReLU outputs) is a grid point at every
scale and carries no error. Samples exactly on a clip count as clipped (their error is 0, but
moving the clip inward would clip them). A scale that clips nothing has a zero numerator; the
iteration then moves to the min-max scale (the smallest that clips nothing) and continues.
Start: ``s_0 = mean|x| / max(kmax, -kmin)`` (OCTAV's first step from 0) for uniform grids,
the min-max scale ``max|x| / v_max`` for float formats, or ``init`` (a warm start).

**2. The exact refinement** — hold each sample's *level* ``k_i`` fixed instead and set the
derivative of the exact empirical MSE ``Σ (x_i - s k_i)^2`` to zero::

    F(s_t) = Σ_i k_i x_i / Σ_i k_i^2

(``k_i`` the grid value nearest ``x_i / s_t``, clipped samples included). By the envelope
theorem ``F(s) = s`` is the stationarity condition of the true empirical MSE, and
``s -> F(s)`` can only lower it (the least-squares scale for fixed levels, then the nearest
levels for that scale) — Lloyd's two steps with the codebook's shape held. It corrects what
the ``Δ^2/12`` model gets wrong where cells are wide (2 and 3 bits) and lands on the local
minimum of the MSE next to the statistical fixed point — a minimum of its piece: the MSE is a
quadratic in ``s`` while no sample changes level and jumps where one does, so a scale just
past such a jump can be lower (``tests/plugins/test_statqat_iterative.py`` pins one, 0.06 %). Plain ``s -> F(s)`` crawls on fine
grids, so each update doubles the step along ``F(s) - s`` while the MSE keeps falling; for
float grids the stage starts from the best phase of the MSE's ripple (see :func:`_refine`).

The statistical stage stops when ``|s_{t+1} - s_t| <= tol · s_t``, the exact one when an
update lowers the MSE by ``<= tol`` relative; each runs at most ``max_iter`` updates.
Samples are sorted once (:class:`.samples.SortedSamples`); an update costs ``O(L log n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .errormodel import as_samples, float_binades
from .grids import Grid, grid, uniform_grid
from .samples import SortedSamples

__all__ = ["IterativeResult", "iterative_scale", "statistical_update", "least_squares_update",
           "naive_float_update", "minmax_scale", "best_zero_point", "ZeroPointResult"]


@dataclass(frozen=True)
class IterativeResult:
    """What :func:`iterative_scale` found."""

    grid: str
    scale: float  # after the exact refinement (= model_scale without it)
    model_scale: float  # the statistical fixed point
    iterations: int  # statistical updates run
    refinements: int  # exact updates run
    converged: bool  # both stages met the tolerance
    mse: float  # empirical MSE at ``scale`` (summed directly)
    model_mse: float  # empirical MSE at ``model_scale``
    clip: float  # scale · top


def minmax_scale(S: SortedSamples, g: Grid) -> float:
    """The smallest scale that clips nothing: ``max(x_max / top, x_min / bottom)`` over the sides
    the grid has (0 when every sample is 0)."""
    s = 0.0
    if g.top > 0 and S.x[-1] > 0:
        s = max(s, S.x[-1] / g.top)
    if g.bottom < 0 and S.x[0] < 0:
        s = max(s, S.x[0] / g.bottom)
    return float(s)


@njit(cache=True)
def _uniform_fixed_point(x, c1, zeros, kmin, kmax, s, tol, max_iter, s_minmax):  # pragma: no cover - compiled
    """``_iterate(lambda v: _uniform_update(S, g, v), s, tol, max_iter, lambda: s_minmax)`` for
    the uniform grid ``{kmin … kmax}``, compiled: the same searches, the same float64
    operations in the same order (``kmax * kmax * n_hi`` is an exact int64, as the Python int
    ``g.kmax**2 * n_hi`` is, converted to float64 when added). Returns ``(s, updates, converged)``."""
    n = x.size
    before = np.nan  # no value equals it (``before = None`` in _iterate)
    for t in range(1, max_iter + 1):
        hi, lo = kmax * s, kmin * s
        n_hi, sum_hi = 0, 0.0
        if kmax > 0:  # S.at_least(hi)
            i = np.searchsorted(x, hi, side="left")
            n_hi, sum_hi = n - i, c1[n] - c1[i]
        n_lo, sum_lo = 0, 0.0
        if kmin < 0:  # S.at_most(lo)
            i = np.searchsorted(x, lo, side="right")
            n_lo, sum_lo = i, c1[i]
        i = np.searchsorted(x, lo, side="right")  # S.count_open(lo, hi)
        j = np.searchsorted(x, hi, side="left")
        n_in = max(j - i, 0)
        if lo < 0.0 < hi:
            n_in -= zeros
        numerator = kmax * sum_hi + kmin * sum_lo
        denominator = n_in / 12.0 + np.float64(kmax * kmax * n_hi) + np.float64(kmin * kmin * n_lo)
        s_new = numerator / denominator if denominator > 0 else 0.0
        if not s_new > 0:
            s_new = s_minmax
        if abs(s_new - s) <= tol * s or s_new == before:
            return s_new, t, True
        before, s = s, s_new
    return s, max_iter, False


def _statistical_fixed_point(S: SortedSamples, g: Grid, s0: float, tol: float, max_iter: int,
                             s_minmax: float) -> tuple[float, int, bool]:
    """``_iterate`` of :func:`statistical_update` from ``s0`` (restart at ``s_minmax``); compiled
    for a uniform grid (:func:`_uniform_fixed_point`, the same values)."""
    if g.kind == "uniform":
        s, t, converged = _uniform_fixed_point(S.x, S.c1, S.zeros, g.kmin, g.kmax, float(s0), float(tol),
                                               int(max_iter), float(s_minmax))
        return float(s), int(t), bool(converged)
    return _iterate(lambda v: statistical_update(S, g, v), s0, tol, max_iter, lambda: s_minmax)


def _uniform_update(S: SortedSamples, g: Grid, s: float) -> float:
    hi, lo = g.kmax * s, g.kmin * s
    n_hi, sum_hi = S.at_least(hi) if g.kmax > 0 else (0, 0.0)
    n_lo, sum_lo = S.at_most(lo) if g.kmin < 0 else (0, 0.0)
    n_in = S.count_open(lo, hi)
    numerator = g.kmax * sum_hi + g.kmin * sum_lo  # kmin < 0 and sum_lo <= 0: both terms >= 0
    denominator = n_in / 12.0 + g.kmax**2 * n_hi + g.kmin**2 * n_lo
    return numerator / denominator if denominator > 0 else 0.0


def _float_update(S: SortedSamples, g: Grid, s: float, *, naive: bool = False) -> float:
    fmt = g.fmt
    vmax = fmt.max_finite
    c = s * vmax
    n_hi, sum_hi = S.at_least(c)
    n_lo, sum_lo = S.at_most(-c)
    n_clip, sum_clip = n_hi + n_lo, sum_hi - sum_lo
    if naive:
        # every inside sample keeps its own step δ(|x|/s)^2 / 12 (in units of s^2)
        lower, upper, step = float_binades(g)
        weight = sum(S.count_abs(s * a, s * b) * d * d / 12.0 for a, b, d in zip(lower, upper, step))
    else:
        weight = S.count_abs(0.0, s * fmt.min_normal) * fmt.min_subnormal**2 / 12.0
    denominator = weight + vmax**2 * n_clip
    return vmax * sum_clip / denominator if denominator > 0 else 0.0


def statistical_update(S: SortedSamples, g, s: float) -> float:
    """One statistical update ``s_t -> s_{t+1}`` (module docstring); 0 when nothing is clipped."""
    g = grid(g)
    return _uniform_update(S, g, s) if g.kind == "uniform" else _float_update(S, g, s)


def naive_float_update(S: SortedSamples, g, s: float) -> float:
    """The biased float update that keeps ``δ(|x|/s)^2/12`` for every inside sample (for comparison)."""
    g = grid(g)
    if g.kind != "float":
        raise ValueError(f"naive_float_update: {g} is not a float-format grid")
    return _float_update(S, g, s, naive=True)


def least_squares_update(S: SortedSamples, g, s: float) -> float:
    """One exact update ``s_{t+1} = Σ k_i x_i / Σ k_i^2`` with ``k_i`` the nearest grid value of ``x_i/s_t``."""
    g = grid(g)
    count, s1, _ = S.cells(s * g.levels)
    denominator = float(np.sum(g.levels * g.levels * count))
    return float(np.sum(g.levels * s1)) / denominator if denominator > 0 else s


def _iterate(update, s: float, tol: float, max_iter: int, restart) -> tuple[float, int, bool]:
    """Run ``s <- update(s)`` to a relative change ``<= tol``.

    On samples the map is piecewise constant in places (a sample enters or leaves the clip set),
    so it can settle into a two-cycle a few ulps to a few 1e-7 apart: returning to the value of
    two steps before also ends the iteration (converged to the resolution of the samples).
    """
    before = None
    for t in range(1, max_iter + 1):
        s_new = update(s)
        if not s_new > 0:
            s_new = restart()
        if abs(s_new - s) <= tol * s or s_new == before:
            return s_new, t, True
        before, s = s, s_new
    return s, max_iter, False


#: points per binade of the float grids' phase search (one period of the MSE's ripple in log2 s)
PHASE_POINTS = 32


def _refine(S: SortedSamples, g: Grid, s: float, tol: float, max_iter: int) -> tuple[float, int, bool]:
    """The exact stage (module docstring). Returns ``(scale, updates, stopped_by_tolerance)``.

    For a float grid it starts from the best of ``PHASE_POINTS`` scales spread over one binade
    ``[s/√2, s·√2)`` around ``s``. Each update then moves along the least-squares step,
    ``s + ω (F(s) - s)`` with ``F`` the least-squares update and ``ω = 1, 2, 4, …`` doubled
    while the MSE keeps falling: plain least squares (``ω = 1``) converges linearly with a
    rate near 1 on fine grids (hundreds of updates at 8 bits), the doubling in a handful.
    The MSE never rises. The stage ends when an update lowers the MSE by ``<= tol`` (relative).
    """
    best, best_mse = s, S.mse(s * g.levels)
    if g.kind == "float":
        for f in np.exp2((np.arange(PHASE_POINTS) - PHASE_POINTS // 2) / PHASE_POINTS):
            m = S.mse(s * f * g.levels)
            if m < best_mse:
                best, best_mse = s * f, m
    for t in range(1, max_iter + 1):
        direction = least_squares_update(S, g, best) - best
        trial, trial_mse, omega = best, best_mse, 1.0
        while True:
            candidate = best + omega * direction
            m = S.mse(candidate * g.levels) if candidate > 0 else np.inf
            if not m < trial_mse:
                break
            trial, trial_mse, omega = candidate, m, 2.0 * omega
        if best_mse - trial_mse <= tol * best_mse:
            return (trial if trial_mse < best_mse else best), t, True
        best, best_mse = trial, trial_mse
    return best, max_iter, False


def _check_options(tol, max_iter, what: str) -> None:
    if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol >= 0):
        raise ValueError(f"{what}: tol must be a finite number >= 0, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"{what}: max_iter must be an integer >= 1, got {max_iter!r}")


def _solve(S: SortedSamples, g: Grid, init, tol: float, max_iter: int, refine: bool,
           what: str) -> IterativeResult:
    s_minmax = minmax_scale(S, g)
    if s_minmax == 0.0:
        raise ValueError(f"{what}: every sample is 0 (or lies where {g} has no levels); "
                         f"any scale quantizes them exactly, so there is no optimum to find")
    if init is None:
        if g.kind == "uniform":
            s0 = float(np.mean(np.abs(S.x))) / max(g.kmax, -g.kmin)
        else:
            s0 = s_minmax
    else:
        s0 = float(init)
        if not (np.isfinite(s0) and s0 > 0):
            raise ValueError(f"{what}: init must be a finite scale > 0, got {init!r}")
    s, iterations, converged = _statistical_fixed_point(S, g, s0, tol, max_iter, s_minmax)
    model_scale, model_mse = s, S.exact_mse(s * g.levels)
    refinements, best = 0, s
    if refine:
        best, refinements, refined = _refine(S, g, s, tol, max_iter)
        converged = converged and refined
    best_mse = S.exact_mse(best * g.levels) if best != s else model_mse
    if best_mse > model_mse:  # the prefix sums' rounding chose a scale the direct sum does not confirm
        best, best_mse = s, model_mse
    return IterativeResult(g.name, float(best), float(model_scale), iterations, refinements, converged,
                           float(best_mse), float(model_mse), float(best * g.top))


def iterative_scale(samples, grid_name, *, init=None, tol: float = 1e-9, max_iter: int = 100,
                    refine: bool = True) -> IterativeResult:
    """The MSE-optimal scale of ``grid_name`` for ``samples``, by the fixed points of the module docstring.

    ``samples``: a 1-D array of finite reals (any distribution), or a
    :class:`.samples.SortedSamples` of them (to sort once for several grids). ``grid_name``: a name of
    :data:`.grids.GRID_NAMES` or a :class:`.grids.Grid`. ``init``: a starting scale (a warm
    start, e.g. the previous training step's); ``tol``: relative change of the scale that
    ends a stage; ``max_iter``: updates per stage; ``refine``: run the exact stage after the
    statistical one. All-zero samples raise ``ValueError`` (every scale is optimal).
    """
    g = grid(grid_name)
    _check_options(tol, max_iter, f"iterative_scale on {g}")
    if not isinstance(samples, SortedSamples):
        samples = SortedSamples(as_samples(samples, f"iterative_scale on {g}"))
    return _solve(samples, g, init, tol, max_iter, refine, f"iterative_scale on {g}")


@dataclass(frozen=True)
class ZeroPointResult:
    """The scale and zero point an asymmetric integer grid ``[qmin, qmax]`` gets for some samples."""

    scale: float
    zero_point: int
    result: IterativeResult


def best_zero_point(S: SortedSamples, qmin: int, qmax: int, *, init=None, tol: float = 1e-9,
                    max_iter: int = 100, refine: bool = True, what: str = "samples") -> ZeroPointResult:
    """Zero point and scale for the integer grid ``[qmin, qmax]`` with a free zero point ``z``.

    The grid is ``{qmin - z, …, qmax - z}·s``. Samples of one sign take the zero point that puts
    every level on their side (``z = qmin`` for ``x >= 0``, ``z = qmax`` for ``x <= 0``: a grid
    with more levels on the data's side is never worse). Samples of both signs: zero points
    with a level on each side are scored — the statistical fixed point for each (warm-started
    from the previous one's scale), then the exact empirical MSE at it — coarse to fine: every
    ``step = max(1, levels // 32)``-th one (all of them up to 5 bits), then every one within a
    step of the best; the best is refined.
    """
    if S.x[0] >= 0 or S.x[-1] <= 0:
        z = qmin if S.x[0] >= 0 else qmax
        r = _solve(S, uniform_grid(qmin - z, qmax - z), init, tol, max_iter, refine, what)
        return ZeroPointResult(r.scale, z, r)
    scored: dict = {}

    def score(z: int, s0) -> float:
        g = uniform_grid(qmin - z, qmax - z)
        s_minmax = minmax_scale(S, g)
        if s0 is None:
            s0 = float(np.mean(np.abs(S.x))) / max(g.kmax, -g.kmin)
        s, _, _ = _statistical_fixed_point(S, g, s0, tol, max_iter, s_minmax)
        scored[z] = (S.mse(s * g.levels), s)
        return s

    # coarse to fine: every `step`-th zero point, then every one within a step of the best
    step = max(1, (qmax - qmin + 1) // 32)
    s_prev = init
    for z in sorted(set(range(qmin + 1, qmax, step)) | {qmax - 1}):
        s_prev = score(z, s_prev)
    z0 = min(scored, key=lambda z: scored[z][0])
    for z in range(max(qmin + 1, z0 - step + 1), min(qmax - 1, z0 + step - 1) + 1):
        if z not in scored:
            score(z, scored[z0][1])
    z = min(scored, key=lambda z: scored[z][0])
    best = (scored[z][0], z, scored[z][1])
    _, z, s = best
    r = _solve(S, uniform_grid(qmin - z, qmax - z), s, tol, max_iter, refine, what)
    return ZeroPointResult(r.scale, z, r)
