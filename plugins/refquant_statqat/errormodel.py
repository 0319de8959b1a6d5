"""StatQAT's error model: quantization MSE = clipping error + stepping error, exact and approximate.

For a grid ``G`` at scale ``s`` (levels ``y_0 < … < y_{L-1}``, ``y = s·G``), every ``x`` goes
to its nearest level. Split the line at the outermost levels::

    clipping:  E[(X - y_{L-1})^2 1{X > y_{L-1}}] + E[(X - y_0)^2 1{X < y_0}]
    stepping:  Σ_k ∫ over cell k ∩ [y_0, y_{L-1}] of (x - y_k)^2 f(x) dx
    total = clipping + stepping,     SNR = 10 log10(E[X^2] / total)  dB

(for ``uintN``, ``y_0 = 0``: every negative value is clipped to 0).

**Exact.** For ``"gaussian"`` (N(0, 1)) and ``"laplace"`` (unit variance, ``b = 1/√2``)
each piece is a sum over intervals ``(a, b]`` of ``M_2 - 2 y M_1 + y^2 M_0`` with the closed-form
partial moments ``M_j = ∫_a^b x^j f`` of :mod:`refquant_lloydmax.densities` (no quadrature).
For samples the same pieces are sample averages of ``(x - Q(x))^2``, ``Q`` from
:func:`.grids.quantize_to_grid`.

**Approximate** (the textbook closed forms, shown beside the exact values): the clipping
error is kept exact, the stepping error is replaced by the uniform-noise model — a value in a
cell of width ``Δ`` makes error ``Δ^2/12``:

    uniform grid:  (s^2 / 12) · P(y_0 < X < y_{L-1}, X ≠ 0)
    float grid:    Σ_e (s·2^(e-M))^2 / 12 · P(|X|/s in binade e)  +  (s·δ_sub)^2 / 12 · P(0 < |X|/s < 2^emin)

(binade ``e``: ``[2^e, 2^(e+1))``, the top one cut at ``max_finite``; ``δ_sub`` the
subnormal step ``2^(emin-M)``). An exact zero is left out: it is a grid point at every scale
(the atom a ReLU puts at 0), so the model charges it nothing. The approximation is poor where
cells are few and wide — at 2 bits the whole middle cell ``|x| < s/2`` has error ``x^2``,
not ``s^2/12`` — and that is what the side-by-side numbers show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refquant.metrics import snr_db
from refquant_lloydmax.densities import Gaussian, Laplace

from .grids import Grid, grid, quantize_to_grid

__all__ = ["QuantizationError", "quantization_error", "snr_vs_clip", "ANALYTIC_DISTRIBUTIONS",
           "analytic_density", "as_samples", "float_binades"]

ANALYTIC_DISTRIBUTIONS = ("gaussian", "laplace")


def analytic_density(name: str):
    """The closed-form density called ``name`` (``"gaussian"`` or ``"laplace"``, unit variance)."""
    if name == "gaussian":
        return Gaussian()
    if name == "laplace":
        return Laplace()
    raise ValueError(f"unknown distribution {name!r}; expected 'gaussian', 'laplace' or a 1-D array of samples")


def as_samples(x, what: str = "samples") -> np.ndarray:
    """``x`` as a non-empty 1-D float64 array of finite values, or a ValueError/TypeError naming ``what``."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what}: expected real-valued samples, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of samples, got shape {a.shape} (flatten it first)")
    if a.size == 0:
        raise ValueError(f"{what}: no samples (the array is empty)")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {a.size} samples are NaN or infinite "
                         f"(first at index {int(np.flatnonzero(bad)[0])})")
    return a


@dataclass(frozen=True)
class QuantizationError:
    """The error of one grid at one scale on one distribution (every MSE in units of ``x^2``)."""

    distribution: str
    grid: str
    scale: float
    clip: float  # top · scale
    signal: float  # E[X^2]
    clipping: float
    stepping: float
    approx_stepping: float

    @property
    def total(self) -> float:
        return self.clipping + self.stepping

    @property
    def snr_db(self) -> float:
        return snr_db(self.signal, self.total)

    @property
    def approx_total(self) -> float:
        return self.clipping + self.approx_stepping

    @property
    def approx_snr_db(self) -> float:
        return snr_db(self.signal, self.approx_total)


def float_binades(g: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower, upper, step)`` of the magnitude intervals of a float grid: the subnormal range
    ``[0, 2^emin)`` with step ``δ_sub``, then each binade ``[2^e, 2^(e+1))`` (the last cut at
    ``max_finite``) with step ``2^(e-M)``."""
    fmt = g.fmt
    exps = np.arange(fmt.min_exponent, int(np.floor(np.log2(fmt.max_finite))) + 1)
    lower = np.concatenate(([0.0], np.ldexp(1.0, exps)))
    upper = np.concatenate((lower[1:], [fmt.max_finite]))
    step = np.concatenate(([fmt.min_subnormal], np.ldexp(1.0, exps - fmt.mantissa_bits)))
    return lower, upper, step


def _interval_errors(density, a, b, y) -> np.ndarray:
    """``∫_a^b (x - y)^2 f(x) dx`` per interval, from the closed-form partial moments (clamped at 0)."""
    m0, m1, m2 = density.partial_moments(a, b)
    return np.maximum(m2 - 2.0 * y * m1 + y * y * m0, 0.0)


def _analytic_error(name: str, g: Grid, s: float) -> tuple[float, float, float]:
    d = analytic_density(name)
    y = s * g.levels
    clipping = float(np.sum(_interval_errors(d, np.array([-np.inf, y[-1]]), np.array([y[0], np.inf]),
                                             np.array([y[0], y[-1]]))))
    # stepping cells: (y_0, t_1], (t_1, t_2], …, (t_{L-1}, y_{L-1}] with level y_k
    edges = np.concatenate(([y[0]], 0.5 * (y[1:] + y[:-1]), [y[-1]]))
    stepping = float(np.sum(_interval_errors(d, edges[:-1], edges[1:], y)))
    if g.kind == "uniform":
        p_in = d.partial_moments(np.array([y[0]]), np.array([y[-1]]))[0]
        approx = float(s * s / 12.0 * p_in[0])
    else:
        lower, upper, step = float_binades(g)
        # P(|X|/s in [lo, hi)) = 2 P(X in [s lo, s hi)) for a density even about 0
        p = 2.0 * d.partial_moments(s * lower, s * upper)[0]
        approx = float(np.sum((s * step) ** 2 / 12.0 * p))
    return clipping, stepping, approx


def _sample_error(x: np.ndarray, g: Grid, s: float) -> tuple[float, float, float]:
    n = x.size
    err2 = (x - quantize_to_grid(x, g, s)) ** 2
    lo, hi = s * g.bottom, s * g.top
    clipped = (x > hi) | (x < lo)
    clipping = float(np.sum(err2[clipped])) / n
    stepping = float(np.sum(err2[~clipped])) / n
    inside = ~clipped & (x != 0)
    if g.kind == "uniform":
        approx = s * s / 12.0 * np.count_nonzero(inside) / n
    else:
        lower, _, step = float_binades(g)
        a = np.abs(x[inside]) / s
        which = np.searchsorted(lower, a, side="right") - 1  # the interval [lower_i, upper_i) holding a
        approx = float(np.sum((s * step[which]) ** 2)) / 12.0 / n
    return clipping, stepping, float(approx)


def quantization_error(distribution, grid_name, scale) -> QuantizationError:
    """Clipping, stepping, total MSE and SNR of ``grid_name`` at ``scale`` on ``distribution``.

    ``distribution``: ``"gaussian"`` (N(0,1)), ``"laplace"`` (unit variance) — exact,
    cell-by-cell closed forms — or a 1-D array of samples (sample averages). ``grid_name``: a
    name of :data:`.grids.GRID_NAMES` or a :class:`.grids.Grid`. ``scale``: the integer step,
    or the factor the float format's values are multiplied by. See the module docstring for
    the definitions and the approximate forms returned beside the exact ones.
    """
    g = grid(grid_name)
    s = float(np.asarray(scale, dtype=np.float64)) if np.ndim(scale) == 0 else None
    if s is None or not np.isfinite(s) or s <= 0:
        raise ValueError(f"quantization_error on {g}: scale must be one finite number > 0, got {scale!r}")
    if isinstance(distribution, str):
        clipping, stepping, approx = _analytic_error(distribution, g, s)
        name, signal = distribution, 1.0
    else:
        x = as_samples(distribution, "quantization_error samples")
        clipping, stepping, approx = _sample_error(x, g, s)
        name, signal = f"samples(n={x.size})", float(np.mean(x * x))
    return QuantizationError(name, g.name, s, s * g.top, signal, clipping, stepping, approx)


def snr_vs_clip(distribution, grid_name, clips) -> np.ndarray:
    """Exact SNR (dB) at each clip ``c`` (scale ``c / top``): the curve of SNR against clipping."""
    g = grid(grid_name)
    return np.array([quantization_error(distribution, g, float(c) / g.top).snr_db for c in np.atleast_1d(clips)])
