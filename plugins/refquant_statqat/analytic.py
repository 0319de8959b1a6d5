"""The analytic quantizer: for Gaussian-like weights the optimal scale is a constant times σ.

If ``W ~ N(0, σ^2)`` then ``W/σ ~ N(0, 1)`` and the MSE of grid ``G`` at scale ``s`` is
``σ^2 · MSE_N(0,1)(s/σ)``, so the optimal scale is ``s* = κ(G) · σ`` with

    κ(G) = argmin_s  MSE_N(0,1)(G, s)          (exact, cell by cell: :mod:`.errormodel`)

a number per grid, computed once (:func:`optimal_scale`, tabulated in :mod:`.kappa` by
``python -m refquant_statqat.tables --write-kappa``). The same holds for any location-free
scale family; κ for the unit-variance Laplace density is tabulated beside it.

**The search.** The exact MSE is evaluated on ``SCAN_POINTS`` clips ``c = s·top`` spaced
evenly in ``log c`` over ``[CLIP_RANGE]`` (in units of σ), vectorised over all scales at once;
the best point's two neighbours bracket a bounded scalar minimisation in ``log s``
(``scipy.optimize.minimize_scalar``, ``xatol = 1e-12``). The scan matters for the float grids:
their MSE ripples with period one binade in ``log2 s`` (about 0.8 % peak to peak for the FP8
formats on N(0,1)), so it has many local minima, and on the FP8 plateau — where clipping has
vanished and subnormals do not yet matter — the minima differ by less than 1e-7 relative.
:class:`OptimalScale` reports how flat the MSE is: the smallest and largest clip of the scan
whose MSE is within 1 % of the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from refquant.metrics import snr_db

from .errormodel import analytic_density
from .grids import GRID_NAMES, grid
from .kappa import KAPPA

__all__ = ["OptimalScale", "optimal_scale", "analytic_scale", "exact_mse", "CLIP_RANGE", "SCAN_POINTS"]

CLIP_RANGE = (0.05, 64.0)
SCAN_POINTS = 2049


def exact_mse(distribution: str, grid_name, scales) -> np.ndarray:
    """Exact total MSE of ``grid_name`` at each of ``scales`` (any shape) on the analytic density.

    Nearest-level cells ``(t_{k-1}, t_k]`` with ``t_0 = -inf``, ``t_L = +inf``; per cell
    ``M_2 - 2 y M_1 + y^2 M_0`` from the closed-form partial moments, clamped at 0.
    """
    d = analytic_density(distribution)
    g = grid(grid_name)
    s = np.asarray(scales, dtype=np.float64)
    y = s[..., None] * g.levels
    t = 0.5 * (y[..., 1:] + y[..., :-1])
    ends = np.ones(s.shape + (1,))
    lower = np.concatenate((-np.inf * ends, t), axis=-1)
    upper = np.concatenate((t, np.inf * ends), axis=-1)
    m0, m1, m2 = d.partial_moments(lower, upper)
    return np.sum(np.maximum(m2 - 2.0 * y * m1 + y * y * m0, 0.0), axis=-1)


@dataclass(frozen=True)
class OptimalScale:
    """The MSE-optimal scale of a grid for a unit-variance density, and how flat the optimum is."""

    distribution: str
    grid: str
    scale: float  # κ
    clip: float  # κ · top
    mse: float
    flat_clip_lo: float  # smallest scanned clip with MSE <= 1.01 · mse
    flat_clip_hi: float  # largest such clip (CLIP_RANGE[1] means: up to the end of the scan)

    @property
    def snr_db(self) -> float:
        return snr_db(1.0, self.mse)


def optimal_scale(distribution: str, grid_name) -> OptimalScale:
    """κ for ``grid_name`` on ``"gaussian"`` (N(0,1)) or ``"laplace"`` (unit variance); see the module docstring."""
    g = grid(grid_name)
    clips = np.geomspace(CLIP_RANGE[0], CLIP_RANGE[1], SCAN_POINTS)
    scan = exact_mse(distribution, g, clips / g.top)
    i = int(np.argmin(scan))
    lo, hi = np.log(clips[max(i - 1, 0)] / g.top), np.log(clips[min(i + 1, SCAN_POINTS - 1)] / g.top)
    r = optimize.minimize_scalar(lambda v: float(exact_mse(distribution, g, np.exp(v))), bounds=(lo, hi),
                                 method="bounded", options={"xatol": 1e-12})
    scale, mse = (float(np.exp(r.x)), float(r.fun)) if r.fun <= scan[i] else (float(clips[i] / g.top), float(scan[i]))
    flat = clips[scan <= 1.01 * mse]
    return OptimalScale(distribution, g.name, scale, scale * g.top, mse, float(flat[0]), float(flat[-1]))


def scale_at(distribution: str, grid_name, scale: float) -> OptimalScale:
    """The :class:`OptimalScale` record of a *given* (e.g. stored) κ: its clip, its exact MSE,
    and the flat range of the same scan :func:`optimal_scale` uses — every field a function
    of ``scale`` through the quadrature only, with no minimiser involved."""
    g = grid(grid_name)
    clips = np.geomspace(CLIP_RANGE[0], CLIP_RANGE[1], SCAN_POINTS)
    scan = exact_mse(distribution, g, clips / g.top)
    mse = float(exact_mse(distribution, g, scale))
    flat = clips[scan <= 1.01 * mse]
    return OptimalScale(distribution, g.name, float(scale), float(scale) * g.top, mse, float(flat[0]), float(flat[-1]))


def analytic_scale(grid_name, sigma=1.0, *, distribution: str = "gaussian"):
    """``κ(grid) · σ`` with κ from the precomputed table :data:`.kappa.KAPPA` (``sigma`` may be an array).

    ``grid_name`` is one of :data:`.grids.GRID_NAMES`; ``distribution`` ``"gaussian"`` (the
    analytic quantizer of StatQAT) or ``"laplace"``. ``sigma`` must be finite and ``>= 0``.
    """
    name = grid(grid_name).name
    if distribution not in KAPPA:
        raise ValueError(f"analytic_scale: unknown distribution {distribution!r}; expected one of {sorted(KAPPA)}")
    if name not in KAPPA[distribution]:
        raise ValueError(f"analytic_scale: no κ for grid {name!r}; tabulated grids: {', '.join(GRID_NAMES)}")
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"analytic_scale on {name}: sigma must be finite and >= 0, got {sigma!r}")
    out = KAPPA[distribution][name] * s
    return float(out) if out.ndim == 0 else out
