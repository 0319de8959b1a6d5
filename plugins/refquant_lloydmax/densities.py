"""The distributions a scalar quantizer is designed for, reduced to what the design needs.

A quantizer with sorted levels ``y_1 <= ... <= y_N`` sends every x to its nearest level, so its
thresholds are the midpoints ``t_k = (y_k + y_{k+1}) / 2`` and its cells are
``C_k = (t_{k-1}, t_k]`` with ``t_0 = -inf`` and ``t_N = +inf`` (a value exactly on a threshold
goes to the lower cell; both levels are equally near, so the error is the same).
The Lloyd-Max iteration, the search for the best uniform step and the MSE all need only three
numbers per cell, and :meth:`Density.cells` returns them:

    P_k = integral over C_k of f(x) dx                 probability of the cell
    c_k = integral over C_k of x f(x) dx / P_k         its centroid (conditional mean)
    D_k = integral over C_k of (x - y_k)^2 f(x) dx     its share of the MSE; MSE = sum_k D_k

Three densities are provided:

* :class:`Gaussian` -- N(0, 1);
* :class:`Laplace` -- the Laplace density with unit variance, scale ``b = 1/sqrt(2)``;
* :class:`Samples` -- the empirical distribution of a 1-D array (each sample has mass 1/n).

For the two analytic densities every integral is closed form (no quadrature); for samples the
integrals are sums over a sorted array, read off prefix sums.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from refquant.numerics import pairwise_sum
from scipy import stats

__all__ = ["Cells", "Density", "Gaussian", "Laplace", "Samples", "as_density", "midpoints"]


def midpoints(levels: np.ndarray) -> np.ndarray:
    """Decision thresholds of the nearest-level quantizer: ``t_k = (y_k + y_{k+1}) / 2``.

    Computed as ``0.5 * (y_k + y_{k+1})`` in float64, along the last axis; this is the midpoint
    criterion, so it holds exactly in every result the package returns.
    """
    return 0.5 * (levels[..., 1:] + levels[..., :-1])


def _with_infinite_ends(t: np.ndarray) -> np.ndarray:
    """``[-inf, t_1, ..., t_{N-1}, +inf]`` along the last axis: the edges of the N cells."""
    end = np.ones(t.shape[:-1] + (1,))
    return np.concatenate((-np.inf * end, t, np.inf * end), axis=-1)


@dataclass(frozen=True)
class Cells:
    """Per-cell integrals of a density for one set of levels (see the module docstring).

    ``prob[..., k]`` is P_k, ``centroid[..., k]`` is c_k (NaN when P_k == 0: an empty cell has
    no centroid), ``sq_error[..., k]`` is D_k, and ``mse`` is sum_k D_k. The leading axes, if
    any, index several level sets evaluated at once.
    """

    thresholds: np.ndarray
    prob: np.ndarray
    centroid: np.ndarray
    sq_error: np.ndarray

    @property
    def mse(self):
        """sum_k D_k: a float for one level set, an array for several."""
        total = np.sum(self.sq_error, axis=-1)
        return float(total) if total.ndim == 0 else total


class Density:
    """What a quantizer design needs to know about a distribution.

    ``name`` identifies it in messages; ``symmetric`` says the density is even about 0 (the
    solver then keeps the levels exactly mirror-symmetric); ``std`` is its standard deviation,
    the unit of the solver's convergence tolerance.
    """

    name: str
    symmetric: bool
    std: float

    def cells(self, levels: np.ndarray) -> Cells:  # pragma: no cover - interface
        """P_k, c_k and D_k for sorted levels of shape (..., N) (module docstring)."""
        raise NotImplementedError

    def mse(self, levels: np.ndarray) -> float:
        """MSE of the nearest-level quantizer with these (sorted) levels."""
        return self.cells(np.asarray(levels, dtype=np.float64)).mse


class _SymmetricDensity(Density):
    """A density even about 0, described by its upper-tail partial moments.

    For x >= 0 let ``U_j(x) = integral from x to inf of u^j f(u) du`` (j = 0, 1, 2). Every cell
    integral follows from U_j by symmetry, ``f(-u) = f(u)``:

        cell (a, b] with 0 <= a:      U_j(a) - U_j(b)
        cell (a, b] with b <= 0:      (-1)^j (U_j(-b) - U_j(-a))
        cell (a, b] with a < 0 < b:   (-1)^j (U_j(0) - U_j(-a)) + (U_j(0) - U_j(b))

    Working from the tails, never from the CDF near 1, keeps the small probabilities of the
    outer cells at full relative precision (``1 - cdf(3)`` would lose three digits).
    """

    symmetric = True
    std = 1.0

    def tail_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(U_0, U_1, U_2) at x >= 0 (x may be +inf, where all three are 0)."""
        raise NotImplementedError  # pragma: no cover - interface

    def pdf(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def partial_moments(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
        """(M_0, M_1, M_2): integrals of x^j f(x) over (a, b], elementwise, a <= b."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        tail_a = self.tail_moments(np.abs(a))
        tail_b = self.tail_moments(np.abs(b))
        tail_0 = self.tail_moments(np.zeros(1))
        moments = []
        for j in range(3):
            sign = -1.0 if j % 2 else 1.0
            ua, ub, u0 = tail_a[j], tail_b[j], tail_0[j]
            right = ua - ub
            left = sign * (ub - ua)
            across = sign * (u0 - ua) + (u0 - ub)
            moments.append(np.where(a >= 0, right, np.where(b <= 0, left, across)))
        return tuple(moments)

    def cells(self, levels: np.ndarray) -> Cells:
        """Closed-form P_k, c_k and D_k for the cells of ``levels``.

        ``c_k = M_1 / M_0``, clipped to the cell (where it lies exactly: the clip only removes
        the rounding of very narrow cells, and keeps successive centroids in order).
        ``D_k = M_2 - 2 y_k M_1 + y_k^2 M_0`` (the exact per-cell form; it holds for any levels,
        not only at centroids, and is clamped at 0 against rounding).
        """
        y = np.asarray(levels, dtype=np.float64)
        t = midpoints(y)
        edges = _with_infinite_ends(t)
        lower, upper = edges[..., :-1], edges[..., 1:]
        m0, m1, m2 = self.partial_moments(lower, upper)
        with np.errstate(invalid="ignore", divide="ignore"):
            centroid = np.where(m0 > 0, np.clip(m1 / m0, lower, upper), np.nan)
        sq_error = np.maximum(m2 - 2.0 * y * m1 + y * y * m0, 0.0)
        return Cells(thresholds=t, prob=m0, centroid=centroid, sq_error=sq_error)


class Gaussian(_SymmetricDensity):
    """N(0, 1).  With Q(x) = 1 - Phi(x) (``scipy.stats.norm.sf``) and phi its pdf:

        U_0(x) = Q(x),   U_1(x) = phi(x),   U_2(x) = x phi(x) + Q(x)

    (integrate ``x phi(x) = -phi'(x)`` once, and ``x^2 phi`` by parts). The familiar forms
    ``int_a^b x phi = phi(a) - phi(b)`` and ``int_a^b x^2 phi = P + a phi(a) - b phi(b)``
    are the differences of these.
    """

    name = "gaussian"

    def pdf(self, x):
        return stats.norm.pdf(x)

    def tail_moments(self, x):
        x = np.asarray(x, dtype=np.float64)
        q = stats.norm.sf(x)
        phi = stats.norm.pdf(x)
        finite = np.isfinite(x)
        x_phi = np.where(finite, np.where(finite, x, 0.0) * phi, 0.0)
        return q, phi, x_phi + q


class Laplace(_SymmetricDensity):
    """Laplace density with unit variance: ``f(x) = exp(-|x|/b) / (2b)``, ``b = 1/sqrt(2)``.

    With S(x) = exp(-x/b)/2 (``scipy.stats.laplace.sf``) for x >= 0, integrating by parts:

        U_0(x) = S(x),   U_1(x) = (x + b) S(x),   U_2(x) = (x^2 + 2 b x + 2 b^2) S(x)
    """

    name = "laplace"
    b = 1.0 / np.sqrt(2.0)

    def pdf(self, x):
        return stats.laplace.pdf(x, scale=self.b)

    def tail_moments(self, x):
        x = np.asarray(x, dtype=np.float64)
        s = stats.laplace.sf(x, scale=self.b)
        b = self.b
        xf = np.where(np.isfinite(x), x, 0.0)  # S(inf) = 0 already; avoid inf * 0
        return s, (xf + b) * s, (xf * xf + 2.0 * b * xf + 2.0 * b * b) * s


@njit(cache=True)
def _cell_squared_errors(x, idx, y):  # pragma: no cover - compiled
    """Σ_k Σ_{i in cell k} (x_i − y_k)², each cell summed pairwise (:meth:`Samples.exact_mse`)."""
    buf = np.empty(x.size)
    total = 0.0
    for k in range(y.size):
        a, b = idx[k], idx[k + 1]
        if b > a:  # an empty cell would add +0.0 to a total >= 0: nothing
            for i in range(a, b):
                e = x[i] - y[k]
                buf[i - a] = e * e
            total += pairwise_sum(buf, 0, b - a)
    return total


@njit(cache=True)
def _count_at_most(x, t, start):  # pragma: no cover - compiled
    """``np.searchsorted(x, t, side="right")`` for sorted ``x`` when ``x[start - 1] <= t`` is
    known (the previous threshold's count ``start`` of a non-decreasing sequence): an
    exponential search of ``x[start:]`` only — one comparison when the cell is empty, about
    ``2 log2(count)`` otherwise. The same integer; a NaN ``t`` (which NumPy sorts last)
    searches the whole array as NumPy does."""
    n = x.size
    if t != t:
        return np.searchsorted(x, t, side="right")
    if start >= n or x[start] > t:
        return start
    bound = 1  # x[start] <= t: double the reach while it stays <= t
    while start + bound < n and x[start + bound] <= t:
        bound *= 2
    lo, hi = start + bound // 2 + 1, min(start + bound, n)  # x[lo - 1] <= t; x[hi] > t or hi == n
    while lo < hi:
        mid = (lo + hi) >> 1
        if x[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _samples_mse(x, s1, s2, mean, y):  # pragma: no cover - compiled
    """:meth:`Samples.mse` of one level set ``y`` (float64, N >= 1), operation for operation::

        t_k = 0.5 * (y_{k+1} + y_k)                     i_k = searchsorted(x, t_k, "right")
        count, sum1, sum2 = i_k - i_{k-1}, S1[i_k] - S1[i_{k-1}], S2[i_k] - S2[i_{k-1}]
        d = y_k - mean
        D_k = maximum(sum2 - 2.0 * d * sum1 + d * d * count, 0.0) / n   (count as float64)

    (``i_0 = 0``, ``i_N = n``; the maximum keeps a NaN as ``np.maximum`` does; D_k is never
    -0.0: ``d * d * count`` is not), then ``np.sum(D)``: NumPy's pairwise rule
    (:func:`pairwise_sum`) added to the reduction's initial 0.0."""
    n_levels = y.size
    n = x.size
    d_k = np.empty(n_levels)
    lower = 0
    t_prev = -np.inf
    for k in range(n_levels):
        if k < n_levels - 1:
            t = 0.5 * (y[k + 1] + y[k])
            upper = _count_at_most(x, t, lower if t >= t_prev else 0)
            t_prev = t
        else:
            upper = n
        count = upper - lower
        sum1 = s1[upper] - s1[lower]
        sum2 = s2[upper] - s2[lower]
        d = y[k] - mean
        v = sum2 - 2.0 * d * sum1 + d * d * np.float64(count)
        if v < 0.0:
            v = 0.0
        d_k[k] = v / n
        lower = upper
    return 0.0 + pairwise_sum(d_k, 0, n_levels)


@njit(cache=True)
def _samples_mse_scan(x, s1, s2, mean, center, offsets, clips, n):  # pragma: no cover - compiled
    """:func:`_samples_mse` of every grid ``center + offsets * (2.0 * clips[r] / n)`` — the rows
    of ``center + offsets[None, :] * (2.0 * clips[:, None] / n)``, element for element."""
    out = np.empty(clips.size)
    y = np.empty(offsets.size)
    for r in range(clips.size):
        step = 2.0 * clips[r] / n
        for k in range(offsets.size):
            y[k] = center + offsets[k] * step
        out[r] = _samples_mse(x, s1, s2, mean, y)
    return out


@njit(cache=True)
def _samples_mse_rows(x, s1, s2, mean, y):  # pragma: no cover - compiled
    """:func:`_samples_mse` of every row of ``y`` [sets, N]: ``np.sum(D, axis=-1)`` sums each
    contiguous row by the same pairwise rule."""
    out = np.empty(y.shape[0])
    for r in range(y.shape[0]):
        out[r] = _samples_mse(x, s1, s2, mean, y[r])
    return out


class Samples(Density):
    """The empirical distribution of a 1-D array of finite samples (mass 1/n each).

    The samples are sorted once and centred on their mean m; the prefix sums

        S1[i] = sum_{j<i} (x_(j) - m),    S2[i] = sum_{j<i} (x_(j) - m)^2

    (float64, sequential ``np.cumsum``) make the sums over any cell two subtractions after one
    ``np.searchsorted`` per threshold: one evaluation of the cells costs O(N log n), not O(n).
    Centring keeps ``S2 - 2 y S1 + y^2 n`` free of the cancellation a large common offset of the
    samples would cause.
    """

    symmetric = False
    name = "samples"

    def __init__(self, samples: np.ndarray):
        x = np.sort(np.asarray(samples, dtype=np.float64))
        self.x = x
        self.n = x.size
        self.mean = float(np.mean(x))
        centred = x - self.mean
        self.s1 = np.zeros(self.n + 1)
        self.s2 = np.zeros(self.n + 1)
        np.cumsum(centred, out=self.s1[1:])
        np.multiply(centred, centred, out=centred)
        np.cumsum(centred, out=self.s2[1:])
        self.std = float(np.sqrt(self.s2[-1] / self.n))

    def cell_bounds(self, thresholds: np.ndarray) -> np.ndarray:
        """Indices ``i_0 = 0 <= i_1 <= ... <= i_N = n``: cell k holds ``x[i_{k-1}:i_k]``."""
        inner = np.searchsorted(self.x, thresholds, side="right")
        end = np.ones(inner.shape[:-1] + (1,), dtype=inner.dtype)
        return np.concatenate((0 * end, inner, self.n * end), axis=-1)

    def cells(self, levels: np.ndarray) -> Cells:
        """P_k, c_k and D_k from the prefix sums.

        The centroid ``m + (S1[i_k] - S1[i_{k-1}]) / count`` is clipped to the cell's own
        smallest and largest sample, where it lies exactly; the clip only removes rounding, and
        it keeps successive centroids in order.
        """
        y = np.asarray(levels, dtype=np.float64)
        t = midpoints(y)
        idx = self.cell_bounds(t)
        count = np.diff(idx, axis=-1)
        sum1 = np.diff(self.s1[idx], axis=-1)
        sum2 = np.diff(self.s2[idx], axis=-1)
        nonempty = count > 0
        safe = np.maximum(count, 1)
        lo = self.x[np.minimum(idx[..., :-1], self.n - 1)]
        hi = self.x[np.maximum(idx[..., 1:] - 1, 0)]
        centroid = np.where(nonempty, np.clip(self.mean + sum1 / safe, lo, hi), np.nan)
        d = y - self.mean
        sq_error = np.maximum(sum2 - 2.0 * d * sum1 + d * d * count, 0.0) / self.n
        return Cells(thresholds=t, prob=count / self.n, centroid=centroid, sq_error=sq_error)

    def mse(self, levels: np.ndarray):
        """``cells(levels).mse`` without the centroids: the same D_k, float64 operation for
        operation, summed the same way (what the optimal-uniform search evaluates many times).

        One level set, or a stack of them ``[sets, N]``, is evaluated compiled
        (:func:`_samples_mse`, the same operations one scalar at a time and NumPy's pairwise sum
        of each row); more leading axes by the NumPy expression below."""
        y = np.asarray(levels, dtype=np.float64)
        if y.ndim == 1 and y.size >= 1:
            return _samples_mse(self.x, self.s1, self.s2, self.mean, np.ascontiguousarray(y))
        if y.ndim == 2 and y.shape[1] >= 1:
            return _samples_mse_rows(self.x, self.s1, self.s2, self.mean, np.ascontiguousarray(y))
        idx = self.cell_bounds(midpoints(y))
        count = np.diff(idx, axis=-1)
        sum1 = np.diff(self.s1[idx], axis=-1)
        sum2 = np.diff(self.s2[idx], axis=-1)
        d = y - self.mean
        total = np.sum(np.maximum(sum2 - 2.0 * d * sum1 + d * d * count, 0.0) / self.n, axis=-1)
        return float(total) if total.ndim == 0 else total

    def exact_mse(self, levels: np.ndarray) -> float:
        """MSE summed directly over the samples, ``mean((x_i - y_{k(i)})^2)`` (O(n)).

        Used for the MSE a result reports, so that number carries no prefix-sum rounding. Per
        cell k, ``(x_i − y_k)²`` in float64 summed by NumPy's pairwise rule (what ``np.sum``
        does on a contiguous float64 array, :func:`pairwise_sum`), the cell sums added in
        order; compiled, the same float64 value as ``Σ_k float(np.sum((x[cell k] − y_k)**2))``.
        """
        y = np.asarray(levels, dtype=np.float64)
        idx = self.cell_bounds(midpoints(y))
        return _cell_squared_errors(self.x, idx, y) / self.n


_NAMED = {"gaussian": Gaussian, "laplace": Laplace}


def as_density(distribution, *, what: str = "distribution") -> Density:
    """Turn ``"gaussian"``, ``"laplace"``, a :class:`Density` or a 1-D sample array into a Density.

    Samples must be a non-empty 1-D array of finite real numbers that are not all equal; any
    other input raises ``TypeError``/``ValueError`` naming ``what`` and what was expected.
    """
    if isinstance(distribution, Density):
        return distribution
    if isinstance(distribution, str):
        try:
            return _NAMED[distribution]()
        except KeyError:
            raise ValueError(
                f"{what}: unknown distribution {distribution!r}; expected one of "
                f"{sorted(_NAMED)} or a 1-D array of samples"
            ) from None
    arr = np.asarray(distribution)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{what}: expected 'gaussian', 'laplace' or a 1-D array of real samples, "
            f"got an array of dtype {arr.dtype}"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{what}: samples must be a 1-D array, got shape {arr.shape} (flatten the tensor "
            f"or one channel of it first)"
        )
    if arr.size == 0:
        raise ValueError(f"{what}: the sample array is empty")
    x = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what}: samples must be finite; {int(bad.sum())} of {x.size} are NaN or infinite "
            f"(first at index {first}: {x[first]})"
        )
    if x.min() == x.max():
        raise ValueError(
            f"{what}: all {x.size} samples equal {float(x[0])!r}; a quantizer needs samples with "
            f"spread"
        )
    with np.errstate(over="ignore"):
        density = Samples(x)
    if not np.isfinite(density.s2[-1]):
        raise ValueError(
            f"{what}: the squares of the samples overflow float64 (largest |x| = "
            f"{np.max(np.abs(x)):.3g}); rescale them first"
        )
    return density
