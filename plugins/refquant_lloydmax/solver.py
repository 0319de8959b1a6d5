"""The Lloyd-Max quantizer: the N levels that minimise the mean squared error for a density.

A nearest-level quantizer with levels y_1 <= ... <= y_N is MSE-optimal only if (Lloyd 1957,
Max 1960)

    midpoint criterion:         t_k = (y_k + y_{k+1}) / 2                     k = 1 .. N-1
    conditional-mean criterion: y_k = E[X | t_{k-1} < X <= t_k]              k = 1 .. N

(t_0 = -inf, t_N = +inf). Lloyd's iteration alternates the two: from levels y, take the
thresholds of the first criterion, then replace every level by the centroid of its cell. Neither
half can raise the MSE, so the MSE never increases. For a log-concave density (Gaussian, Laplace)
the fixed point is unique and the iteration converges to it at a linear rate
(``spec/strategies/lloydmax.md`` gives the argument and the measured rates).

The linear rate is slow for many levels: the number of iterations grows like N^2 (650 for
N = 16, 2,399 for N = 32, of the order of 10^5 for N = 256, at tol 1e-12). For the analytic densities the
solver therefore also tries a Newton step on the fixed-point equation ``C(y) = y``, where C maps
levels to the centroids of their cells. C's Jacobian is tridiagonal (c_k depends on t_{k-1} and
t_k only) with

    d c_k / d t_{k-1} = f(t_{k-1}) (c_k - t_{k-1}) / P_k = alpha_k
    d c_k / d t_k     = f(t_k) (t_k - c_k) / P_k         = beta_k

and t_k = (y_k + y_{k+1})/2, so the Newton step is ``y + (I - J)^{-1} (C(y) - y)``: the Lloyd
step ``C(y) - y`` multiplied by ``I + J + J^2 + ...``, the sum of all the Lloyd steps the
linearisation predicts. The Newton candidate is taken only when its levels stay sorted and its MSE
is no larger than the Lloyd step's, so the MSE still never increases; the fixed point is the same.
Samples have no density to differentiate (C is piecewise constant), but there the partition
becomes stationary after finitely many Lloyd steps and the iteration stops exactly.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import linalg

from .checks import check_count
from .densities import Cells, Density, Samples, as_density, midpoints
from .uniform import optimal_uniform

__all__ = ["LloydMaxResult", "lloyd_max", "lloyd_rates", "lloyd_step", "quantizer_mse"]


@dataclass(frozen=True)
class LloydMaxResult:
    """The Lloyd-Max quantizer for one distribution and level count.

    ``levels`` (N, sorted) and ``thresholds`` (the N-1 finite interior midpoints) are read-only
    float64 arrays; ``mse`` is the exact MSE of the final levels; ``iterations`` counts the
    updates made; ``converged`` says the last update moved no level by more than
    ``tol * std``; ``mse_history[0]`` is the MSE of the levels the iteration starts from (the
    optimal uniform quantizer, or ``init``) and ``mse_history[i]`` the MSE after update i (so the last entry is
    ``mse``); ``newton_steps`` counts the updates that were Newton steps.
    """

    distribution: str
    levels: np.ndarray
    thresholds: np.ndarray
    mse: float
    iterations: int
    converged: bool
    mse_history: tuple
    newton_steps: int = 0


def _check_levels_count(n_levels) -> int:
    return check_count(n_levels, "n_levels", 2)


def _check_levels(levels) -> np.ndarray:
    y = np.asarray(levels, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"levels must be a 1-D array of at least 2 values, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("levels must be finite")
    if np.any(np.diff(y) < 0):
        raise ValueError("levels must be sorted in increasing order")
    return y


def quantizer_mse(distribution, levels) -> float:
    """Exact MSE of the nearest-level quantizer with sorted ``levels`` on ``distribution``.

    Analytic densities: ``sum_k M2_k - 2 y_k M1_k + y_k^2 M0_k`` with closed-form partial
    moments. Samples: ``mean((x_i - y_{k(i)})^2)`` summed directly over the samples.
    """
    density = as_density(distribution, what="quantizer_mse")
    y = _check_levels(levels)
    if isinstance(density, Samples):
        return density.exact_mse(y)
    return density.mse(y)


def _centroid_step(levels: np.ndarray, cells: Cells, symmetric: bool) -> np.ndarray:
    """Every level becomes the centroid of its cell; an empty cell keeps its level.

    Keeping the level of an empty cell leaves the MSE unchanged (the cell holds no mass) and
    keeps the levels sorted. With ``symmetric`` (a symmetric density and symmetric levels, whose
    centroids are then symmetric too) the result is mirrored, ``y <- (y - reversed(y)) / 2``,
    which removes rounding asymmetry and nothing else.
    """
    y = np.where(cells.prob > 0, cells.centroid, levels)
    if symmetric:
        y = 0.5 * (y - y[::-1])
    return y


def lloyd_step(distribution, levels) -> np.ndarray:
    """One Lloyd iteration: thresholds at the midpoints, then levels at the cell centroids.

    The result is mirrored only when both the density and the given levels are symmetric.
    """
    density = as_density(distribution, what="lloyd_step")
    y = _check_levels(levels)
    symmetric = density.symmetric and np.array_equal(y, -y[::-1])
    return _centroid_step(y, density.cells(y), symmetric)


def _centroid_slopes(density: Density, cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    """alpha_k = d c_k / d t_{k-1} and beta_k = d c_k / d t_k (module docstring).

    alpha_1 = 0 and beta_N = 0: the outer edges are fixed at -inf and +inf.
    """
    t, c, p = cells.thresholds, cells.centroid, cells.prob
    f_t = density.pdf(t)
    alpha = np.zeros_like(c)
    beta = np.zeros_like(c)
    alpha[1:] = f_t * (c[1:] - t) / p[1:]
    beta[:-1] = f_t * (t - c[:-1]) / p[:-1]
    return alpha, beta


def _newton_step(density: Density, y: np.ndarray, cells: Cells) -> np.ndarray | None:
    """Newton step on C(y) = y with the tridiagonal Jacobian (module docstring), or None.

    Returns None where the step is undefined (an empty cell) or would unsort the levels.
    """
    if np.any(cells.prob <= 0):
        return None
    c = cells.centroid
    alpha, beta = _centroid_slopes(density, cells)
    n = y.size
    banded = np.zeros((3, n))  # I - J in scipy's (1, 1)-banded layout
    banded[0, 1:] = -0.5 * beta[:-1]  # row k, column k+1
    banded[1, :] = 1.0 - 0.5 * (alpha + beta)  # diagonal
    banded[2, :-1] = -0.5 * alpha[1:]  # row k+1, column k
    try:
        delta = linalg.solve_banded((1, 1), banded, c - y)
    except (linalg.LinAlgError, ValueError):
        return None
    y_new = y + delta
    if density.symmetric:
        y_new = 0.5 * (y_new - y_new[::-1])
    if not np.all(np.isfinite(y_new)) or np.any(np.diff(y_new) <= 0):
        return None
    return y_new


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


@njit(cache=True)
def _sample_lloyd(x, s1, mean, y0, threshold, max_iter):  # pragma: no cover - compiled
    """Lloyd's iteration on sorted samples, the arithmetic of :meth:`Samples.cells` and
    :func:`_centroid_step` (no mirroring) one scalar at a time, in the same order: t_k =
    0.5·(y_{k+1} + y_k); cell k = x[i_k : i_{k+1}] with i_k = searchsorted(x, t_k, "right");
    a nonempty cell's level becomes clip(mean + (S1[i_{k+1}] − S1[i_k]) / count, x[i_k],
    x[i_{k+1} − 1]), an empty cell keeps its level; stop after an update that moves no level
    by more than ``threshold``, or after ``max_iter`` updates. Returns every level set
    (row 0 = y0, row i = after update i, ``iterations + 1`` rows used), the update count and
    whether it converged."""
    n = y0.size
    m = x.size
    path = np.empty((min(max_iter + 1, 64), n))  # grown by doubling: most runs stop early
    path[0] = y0
    y = y0.copy()
    t = np.empty(n - 1)
    for it in range(max_iter):
        if it + 1 == path.shape[0]:
            grown = np.empty((min(2 * path.shape[0], max_iter + 1), n))
            grown[:it + 1] = path[:it + 1]
            path = grown
        for k in range(n - 1):
            t[k] = 0.5 * (y[k + 1] + y[k])
        idx = np.searchsorted(x, t, side="right")
        step = 0.0
        lo_i = 0
        for k in range(n):
            hi_i = idx[k] if k < n - 1 else m
            count = hi_i - lo_i
            new = y[k]
            if count > 0:
                c = mean + (s1[hi_i] - s1[lo_i]) / count
                lo = x[min(lo_i, m - 1)]
                hi = x[max(hi_i - 1, 0)]
                new = min(max(c, lo), hi)
            d = abs(new - y[k])
            if d > step:
                step = d
            path[it + 1, k] = new
            lo_i = hi_i
        y[:] = path[it + 1]
        if step <= threshold:
            return path[:it + 2], it + 1, True
    return path[:max_iter + 1], max_iter, False


def _iterate_samples(density: Samples, y: np.ndarray, tol: float, max_iter: int) -> LloydMaxResult:
    """:func:`_iterate` for samples: the loop compiled (:func:`_sample_lloyd`), the MSE history of
    every level set from one batched :meth:`Samples.mse` (``Samples.cells(path).mse``: the same
    float64 values, row by row)."""
    path, iterations, converged = _sample_lloyd(density.x, density.s1, density.mean, np.ascontiguousarray(y),
                                                tol * density.std, max_iter)
    history = [float(v) for v in density.mse(path)]
    y = path[-1]
    history[-1] = density.exact_mse(y)
    return _result(density, y, int(iterations), bool(converged), history, 0)


def _result(density, y, iterations: int, converged: bool, history: list, newton_steps: int) -> LloydMaxResult:
    """The solver's result for final levels ``y``; its MSE is the last entry of ``history``."""
    return LloydMaxResult(
        distribution=density.name,
        levels=_readonly(y),
        thresholds=_readonly(midpoints(y)),
        mse=history[-1],
        iterations=iterations,
        converged=converged,
        mse_history=tuple(history),
        newton_steps=newton_steps,
    )


def _iterate(density: Density, n: int, tol: float, max_iter: int, newton: bool,
             init: np.ndarray | None = None) -> LloydMaxResult:
    y = optimal_uniform(density, n).levels.copy() if init is None else init.copy()
    if isinstance(density, Samples):
        return _iterate_samples(density, y, tol, max_iter)
    cells = density.cells(y)
    history = [cells.mse]
    threshold = tol * density.std
    converged = False
    newton_steps = 0
    iterations = 0
    while iterations < max_iter:
        y_next = _centroid_step(y, cells, density.symmetric)
        next_cells = density.cells(y_next)
        if newton:
            y_try = _newton_step(density, y, cells)
            if y_try is not None:
                try_cells = density.cells(y_try)
                if try_cells.mse <= next_cells.mse:
                    y_next, next_cells = y_try, try_cells
                    newton_steps += 1
        iterations += 1
        step = float(np.max(np.abs(y_next - y)))
        y, cells = y_next, next_cells
        history.append(cells.mse)
        if step <= threshold:
            converged = True
            break
    return _result(density, y, iterations, converged, history, newton_steps)


@functools.lru_cache(maxsize=256)
def _named_table(name: str, n: int, tol: float, max_iter: int, newton: bool) -> LloydMaxResult:
    return _iterate(as_density(name), n, tol, max_iter, newton)


def lloyd_max(
    distribution,
    n_levels: int,
    *,
    tol: float = 1e-12,
    max_iter: int = 10_000,
    newton: bool = True,
    init=None,
) -> LloydMaxResult:
    """The N-level Lloyd-Max (MSE-optimal) quantizer of ``distribution``.

    ``distribution`` is ``"gaussian"`` (N(0,1)), ``"laplace"`` (unit variance) or a 1-D array
    of samples. The iteration starts from the optimal uniform quantizer
    (:func:`~refquant_lloydmax.uniform.optimal_uniform`: symmetric about 0 for the analytic
    densities, about the sample mean for samples), alternates the midpoint and centroid
    criteria, and stops once an update moves no level by more than ``tol * std`` (std = 1 for
    the analytic densities, the sample standard deviation for samples) or after ``max_iter``
    updates, with a ``RuntimeWarning`` in the second case. ``newton=True`` lets analytic
    densities take Newton steps (module docstring); ``newton=False`` is the plain Lloyd
    iteration. Tables for the named densities are cached, so results are shared and read-only.
    ``init`` (N sorted, finite levels) starts the iteration there instead of at the optimal
    uniform quantizer: the result is then the fixed point reached from ``init``, whose MSE is
    at most ``init``'s (for samples, a local optimum: which one depends on the start).
    """
    n = _check_levels_count(n_levels)
    if isinstance(tol, (bool, np.bool_)) or not (
        isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0
    ):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    max_iter = check_count(max_iter, "max_iter", 1)
    if init is not None:
        start = _check_levels(init)
        if start.shape != (n,) or np.any(np.diff(start) <= 0):
            raise ValueError(f"lloyd_max: init must be {n} strictly increasing levels, got shape {start.shape}")
        density = as_density(distribution, what="lloyd_max")
        result = _iterate(density, n, float(tol), max_iter, bool(newton), start)
    elif isinstance(distribution, str):
        density = as_density(distribution, what="lloyd_max")  # clear error for an unknown name
        result = _named_table(distribution, n, float(tol), max_iter, bool(newton))
    else:
        density = as_density(distribution, what="lloyd_max")
        result = _iterate(density, n, float(tol), max_iter, bool(newton))
    if not result.converged:
        warnings.warn(
            f"lloyd_max({density.name}, {n}): not converged after {max_iter} iterations "
            f"(no update of at most tol * std = {tol * density.std:.3g})",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def lloyd_rates(distribution, n_levels: int) -> tuple[float, float]:
    """Linear convergence rates of the plain Lloyd iteration at the Lloyd-Max fixed point.

    The Jacobian of the centroid map C at the fixed point is tridiagonal with rows
    ``(alpha_k/2, (alpha_k + beta_k)/2, beta_k/2)`` (module docstring); near the fixed point
    each plain Lloyd update shrinks the error by its spectral radius. For a symmetric density
    C commutes with mirroring, so its eigenvectors are either mirror-symmetric level
    perturbations (y_k -> -y_{N+1-k}; the only ones the symmetric iteration can excite) or
    mirror-antisymmetric ones (which move the levels' centre, as sampling noise does).
    Returns ``(rho_symmetric, rho_all)``: the largest eigenvalue on the first subspace and on
    the whole space. Analytic densities only.
    """
    density = as_density(distribution, what="lloyd_rates")
    if isinstance(density, Samples):
        raise ValueError("lloyd_rates: needs an analytic density (samples have no derivative)")
    n = _check_levels_count(n_levels)
    y = np.array(lloyd_max(distribution, n).levels)
    alpha, beta = _centroid_slopes(density, density.cells(y))
    jac = np.diag(0.5 * (alpha + beta)) + np.diag(0.5 * beta[:-1], 1) + np.diag(0.5 * alpha[1:], -1)
    # Orthonormal basis of the perturbations that keep the levels mirror-symmetric:
    # v_j = (e_{N-1-j} - e_j) / sqrt(2), j < N/2 (for odd N the middle level stays at 0).
    half = n // 2
    basis = np.zeros((n, half))
    basis[n - 1 - np.arange(half), np.arange(half)] = np.sqrt(0.5)
    basis[np.arange(half), np.arange(half)] = -np.sqrt(0.5)
    rho_symmetric = float(np.max(np.abs(np.linalg.eigvals(basis.T @ jac @ basis))))
    rho_all = float(np.max(np.abs(np.linalg.eigvals(jac))))
    return rho_symmetric, rho_all
