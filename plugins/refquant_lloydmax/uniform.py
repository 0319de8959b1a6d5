"""Uniform (equal-step) quantizers, scored on the same densities as Lloyd-Max.

All uniform quantizers here are the N-level *mid-rise* grid of Max (1960), Table II:

    y_k = m + (k - (N - 1)/2) * step        k = 0 .. N-1

centred on m, with thresholds at the midpoints (equal steps too) and unbounded outer cells:
values beyond the outermost thresholds go to the outermost levels. The grid covers the clip
range ``[m - c, m + c]`` with ``c = N * step / 2`` split into N equal bins, which is also how
ACIQ counts its 2^M bins; so min-max, ACIQ and MSE-optimal uniform quantizers differ only in c
and can be compared on equal terms (same N, same centre, same exact MSE):

* :func:`clipped_uniform` -- the grid for a given clip c;
* :func:`minmax_uniform` -- c = max |x - m| over the samples;
* :func:`optimal_uniform` -- the c (equivalently the step) that minimises the exact MSE.

The centre m is 0 for the analytic densities and the sample mean for samples, unless given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import optimize

from .checks import check_count
from .densities import Samples, _samples_mse, _samples_mse_scan, as_density, midpoints

__all__ = ["UniformResult", "clipped_uniform", "minmax_uniform", "optimal_uniform", "uniform_levels"]

# Clip values scanned before the local refinement, as multiples of the distribution's scale.
_SCAN_POINTS = 128
_ANALYTIC_CLIP_RANGE = (1e-3, 1e2)  # in units of the standard deviation
_SAMPLES_CLIP_RANGE = (1e-6, 2.0)  # in units of max |x - m|


@dataclass(frozen=True)
class UniformResult:
    """An N-level mid-rise uniform quantizer and its exact MSE on the distribution it was scored on.

    ``clip = N * step / 2``; ``levels`` and ``thresholds`` (N-1 interior midpoints) are
    read-only float64 arrays centred on ``center``.
    """

    step: float
    clip: float
    center: float
    levels: np.ndarray
    thresholds: np.ndarray
    mse: float


def uniform_levels(step: float, n_levels: int, center: float = 0.0) -> np.ndarray:
    """``center + (k - (N-1)/2) * step`` for k = 0 .. N-1, in float64."""
    return center + (np.arange(n_levels, dtype=np.float64) - (n_levels - 1) / 2.0) * step


def _center(density, center) -> float:
    if center is None:
        return density.mean if isinstance(density, Samples) else 0.0
    c = float(center)
    if not np.isfinite(c):
        raise ValueError(f"center must be finite, got {center!r}")
    return c


def _n(n_levels) -> int:
    return check_count(n_levels, "n_levels", 2)


def _result(density, n: int, clip: float, center: float) -> UniformResult:
    step = 2.0 * clip / n
    y = uniform_levels(step, n, center)
    mse = density.exact_mse(y) if isinstance(density, Samples) else density.mse(y)
    y.flags.writeable = False
    t = midpoints(y)
    t.flags.writeable = False
    return UniformResult(step=step, clip=clip, center=center, levels=y, thresholds=t, mse=mse)


def clipped_uniform(distribution, n_levels: int, clip: float, *, center=None) -> UniformResult:
    """The N-level mid-rise grid covering ``[center - clip, center + clip]`` (step = 2 clip / N)."""
    density = as_density(distribution, what="clipped_uniform")
    n = _n(n_levels)
    c = float(clip)
    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"clipped_uniform: clip must be a positive finite number, got {clip!r}")
    return _result(density, n, c, _center(density, center))


def minmax_uniform(samples, n_levels: int, *, center=None) -> UniformResult:
    """The grid whose clip range just covers the samples: ``clip = max |x - center|``."""
    density = as_density(samples, what="minmax_uniform")
    if not isinstance(density, Samples):
        raise ValueError(
            f"minmax_uniform: needs samples (the {density.name} density has unbounded support)"
        )
    n = _n(n_levels)
    m = _center(density, center)
    clip = float(max(m - density.x[0], density.x[-1] - m))
    return _result(density, n, clip, m)


def optimal_uniform(distribution, n_levels: int, *, center=None) -> UniformResult:
    """The step minimising the exact MSE of the N-level mid-rise grid (Max 1960, Table II).

    The MSE as a function of the clip c = N step / 2 is evaluated exactly (closed-form cell
    integrals, or prefix sums over the samples). It is scanned at 128 geometrically spaced clips
    -- 1e-3 .. 1e2 standard deviations for the analytic densities, 1e-6 .. 2 times max |x - m|
    for samples, a range that includes the min-max clip -- and the best scan point is refined
    by bounded Brent minimisation (``scipy.optimize.minimize_scalar``; for samples the same
    algorithm compiled, :func:`_bounded_brent`) between its neighbours.
    The result is the better of the two, so it is never worse than any scanned clip. For the
    Gaussian and Laplace densities the MSE is unimodal in c and this is the global optimum; the
    step is then accurate to about 1e-8 relative (a minimum is flat: the MSE varies with the
    square of the step error).
    """
    density = as_density(distribution, what="optimal_uniform")
    n = _n(n_levels)
    m = _center(density, center)
    if isinstance(density, Samples):
        reach = float(max(m - density.x[0], density.x[-1] - m))
        lo, hi = (reach * r for r in _SAMPLES_CLIP_RANGE)
    else:
        lo, hi = (density.std * r for r in _ANALYTIC_CLIP_RANGE)

    offsets = np.arange(n, dtype=np.float64) - (n - 1) / 2.0

    def mse_of_clip(c: float) -> float:
        return density.mse(m + offsets * (2.0 * c / n))

    clips = np.geomspace(lo, hi, _SCAN_POINTS)
    if isinstance(density, Samples):  # the min-max clip is a candidate by construction
        clips = np.unique(np.append(clips, reach))
    if isinstance(density, Samples):  # compiled, the grids made row by row (the same values)
        scores = _samples_mse_scan(density.x, density.s1, density.s2, density.mean, m, offsets, clips, n)
    else:
        scan = m + offsets[None, :] * (2.0 * clips[:, None] / n)  # one grid per row
        scores = density.mse(scan)
    i = int(np.argmin(scores))
    best_c, best = float(clips[i]), float(scores[i])
    a, b = float(clips[max(i - 1, 0)]), float(clips[min(i + 1, clips.size - 1)])
    if b > a and isinstance(density, Samples):  # the same search, compiled (_bounded_brent)
        x, fun = _bounded_brent(density.x, density.s1, density.s2, density.mean, m, offsets, n,
                                a, b, 1e-12 * best_c, _BRENT_MAXFUN)
        if fun <= best:
            best_c = float(x)
    elif b > a:
        refined = optimize.minimize_scalar(
            mse_of_clip, bounds=(a, b), method="bounded", options={"xatol": 1e-12 * best_c}
        )
        if refined.fun <= best:
            best_c = float(refined.x)
    return _result(density, n, best_c, m)


#: ``minimize_scalar(method="bounded")``'s default ``maxiter`` (its limit on evaluations)
_BRENT_MAXFUN = 500


@njit(cache=True)
def _clip_mse(x, s1, s2, mean, center, offsets, n, c):  # pragma: no cover - compiled
    """``mse_of_clip(c)`` of :func:`optimal_uniform` for samples: ``Samples.mse`` of the grid
    ``center + offsets * (2.0 * c / n)``."""
    return _samples_mse(x, s1, s2, mean, center + offsets * (2.0 * c / n))


@njit(cache=True)
def _sign(v):  # pragma: no cover - compiled
    """``np.sign`` of a float64: -1.0, 0.0 (either zero) or 1.0; NaN stays NaN."""
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    if v == 0.0:
        return 0.0
    return v


@njit(cache=True)
def _bounded_brent(x, s1, s2, mean, center, offsets, n, x1, x2, xatol, maxfun):  # pragma: no cover - compiled
    """``minimize_scalar(mse_of_clip, bounds=(x1, x2), method="bounded", options={"xatol": xatol})``
    for samples, as ``(x, fun)``: SciPy's ``_minimize_scalar_bounded`` (Brent's bounded method,
    golden-section and parabolic steps; written from SciPy 1.17, and
    ``tests/plugins/test_compiled_bit_exact.py`` compares it with the installed SciPy) statement
    for statement, with the same float64 arithmetic in the same order, so the same points are
    evaluated and the same minimum returned; the objective is :func:`_clip_mse`
    (``np.maximum(|rat|, tol1)`` keeps a NaN as NumPy does)."""
    sqrt_eps = np.sqrt(2.2e-16)
    golden_mean = 0.5 * (3.0 - np.sqrt(5.0))
    a, b = x1, x2
    fulc = a + golden_mean * (b - a)
    nfc, xf = fulc, fulc
    rat = e = 0.0
    xx = xf
    fx = _clip_mse(x, s1, s2, mean, center, offsets, n, xx)
    num = 1
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = sqrt_eps * np.abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while np.abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if np.abs(e) > tol1:  # parabolic fit
            golden = False
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = np.abs(q)
            r = e
            e = rat
            if (np.abs(p) < np.abs(0.5 * q * r)) and (p > q * (a - xf)) and (p < q * (b - xf)):
                rat = (p + 0.0) / q
                xx = xf + rat
                if ((xx - a) < tol2) or ((b - xx) < tol2):
                    si = _sign(xm - xf) + (1.0 if (xm - xf) == 0 else 0.0)
                    rat = tol1 * si
            else:
                golden = True
        if golden:  # golden-section step
            if xf >= xm:
                e = a - xf
            else:
                e = b - xf
            rat = golden_mean * e
        si = _sign(rat) + (1.0 if rat == 0 else 0.0)
        step = np.abs(rat)
        if not (step >= tol1 or np.isnan(step)):
            step = tol1
        xx = xf + si * step
        fu = _clip_mse(x, s1, s2, mean, center, offsets, n, xx)
        num += 1
        if fu <= fx:
            if xx >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = xx, fu
        else:
            if xx < xf:
                a = xx
            else:
                b = xx
            if (fu <= fnfc) or (nfc == xf):
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = xx, fu
            elif (fu <= ffulc) or (fulc == xf) or (fulc == nfc):
                fulc, ffulc = xx, fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * np.abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxfun:
            break
    return xf, fx
