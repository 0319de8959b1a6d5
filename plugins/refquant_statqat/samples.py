"""Samples sorted once, so that every sum a fixed-point update needs is two array reads.

The iterative quantizer asks, at each step, how many samples lie beyond the clip and what
they sum to, how many are inside, and — for the exact refinement — the count and sum of every
cell of the grid. Over a sorted array ``x_(1) <= … <= x_(n)`` with prefix sums (float64,
sequential ``np.cumsum``)::

    C1[i] = Σ_{j<i} x_(j),    C2[i] = Σ_{j<i} x_(j)^2

any range of values is an index range found by ``np.searchsorted`` and its sums are
differences of ``C1``, ``C2``: an update costs ``O(L log n)`` for ``L`` levels, not ``O(n)``.

:meth:`SortedSamples.mse` and :meth:`SortedSamples.exact_mse` run compiled (they are evaluated
hundreds of times per tensor); each docstring gives the NumPy expression whose float64 value it
reproduces operation for operation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from refquant.numerics import pairwise_sum

__all__ = ["SortedSamples"]


class SortedSamples:
    """A 1-D float64 sample array sorted, with prefix sums of ``x`` and ``x^2``.

    Exact zeros are counted separately (``zeros``): they are grid points at every scale.
    """

    def __init__(self, x: np.ndarray):
        x = np.sort(np.asarray(x, dtype=np.float64).reshape(-1))
        self.x = x
        self.n = x.size
        self.c1 = np.zeros(self.n + 1)
        self.c2 = np.zeros(self.n + 1)
        np.cumsum(x, out=self.c1[1:])
        np.cumsum(x * x, out=self.c2[1:])
        self.zero_lo = int(np.searchsorted(x, 0.0, side="left"))
        self.zero_hi = int(np.searchsorted(x, 0.0, side="right"))

    @property
    def zeros(self) -> int:
        return self.zero_hi - self.zero_lo

    @property
    def max_abs(self) -> float:
        return float(max(-self.x[0], self.x[-1])) if self.n else 0.0

    def at_least(self, t: float) -> tuple[int, float]:
        """``(count, sum)`` of the samples ``x >= t``."""
        i = int(np.searchsorted(self.x, t, side="left"))
        return self.n - i, float(self.c1[-1] - self.c1[i])

    def at_most(self, t: float) -> tuple[int, float]:
        """``(count, sum)`` of the samples ``x <= t``."""
        i = int(np.searchsorted(self.x, t, side="right"))
        return i, float(self.c1[i])

    def count_open(self, a: float, b: float) -> int:
        """Number of samples with ``a < x < b``, exact zeros left out."""
        i = int(np.searchsorted(self.x, a, side="right"))
        j = int(np.searchsorted(self.x, b, side="left"))
        inside = max(j - i, 0)
        if a < 0.0 < b:
            inside -= self.zeros
        return inside

    def count_abs(self, a: float, b: float) -> int:
        """Number of non-zero samples with ``a <= |x| < b`` (``0 <= a <= b``)."""
        pos = int(np.searchsorted(self.x, b, side="left")) - int(np.searchsorted(self.x, a, side="left"))
        neg = int(np.searchsorted(self.x, -a, side="right")) - int(np.searchsorted(self.x, -b, side="right"))
        return pos + neg - (2 * self.zeros if a == 0.0 else 0)

    def cells(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per nearest-level cell of the sorted ``levels``: ``(count, Σx, Σx^2)``.

        Thresholds are the midpoints; a sample on a threshold goes to the lower cell (both
        levels are equally near, so the error is the same either way).
        """
        t = 0.5 * (levels[1:] + levels[:-1])
        idx = np.concatenate(([0], np.searchsorted(self.x, t, side="right"), [self.n]))
        return np.diff(idx), np.diff(self.c1[idx]), np.diff(self.c2[idx])

    def mse(self, levels: np.ndarray) -> float:
        """``mean (x - nearest level)^2`` from the cell sums, ``Σ_k (S2_k - 2 y_k S1_k + y_k^2 N_k) / n``:
        the float64 value of ``float(np.sum(np.maximum(s2 - 2.0 * levels * s1 + levels * levels
        * count, 0.0))) / n`` with ``(count, s1, s2) = cells(levels)``, compiled (:func:`_cells_mse`)."""
        y = np.asarray(levels)
        if y.dtype != np.float64 or y.ndim != 1 or y.size < 1:
            count, s1, s2 = self.cells(levels)
            return float(np.sum(np.maximum(s2 - 2.0 * levels * s1 + levels * levels * count, 0.0))) / self.n
        return _cells_mse(self.x, self.c1, self.c2, np.ascontiguousarray(y)) / self.n

    def exact_mse(self, levels: np.ndarray) -> float:
        """The same MSE summed directly over the samples (no prefix-sum cancellation), ``O(n)``:
        ``d = x - levels[searchsorted(t, x, "left")]`` (``t`` the midpoints), ``Σ d² / n``.

        For sorted levels the samples nearest level ``k`` are the run ``x[i_{k-1}:i_k]`` with
        ``i_k = searchsorted(x, t_k, "right")`` (``#{k : t_k < x}  <= k  ⟺  x <= t_k``), so ``d``
        is filled run by run (:func:`_nearest_differences`, the same subtractions) and
        the squares are summed by :func:`_sum_of_squares`, left to right — not ``np.dot``, whose
        BLAS result depends on the machine's blocking and thread count (1 and 2 OpenBLAS threads
        gave different sums for 64 of 80 random arrays of 10⁴–10⁵ values), which would make the
        chosen scale of a near tie depend on the host."""
        y = np.asarray(levels)
        t = 0.5 * (levels[1:] + levels[:-1])
        if y.dtype == np.float64 and y.ndim == 1 and y.size >= 1 and not np.any(t[1:] < t[:-1]):
            d = _nearest_differences(self.x, np.ascontiguousarray(y))
        else:
            nearest = levels[np.searchsorted(t, self.x, side="left")]
            d = np.ascontiguousarray(self.x - nearest, np.float64)
        return _sum_of_squares(d) / self.n


@njit(cache=True)
def _run_ends(x, y):  # pragma: no cover - compiled
    """``ends[k] = searchsorted(x, t_k, "right")`` with ``t_k = 0.5 * (y_{k+1} + y_k)``, and
    ``ends[-1] = len(x)``: the sorted samples nearest level ``k`` are ``x[ends[k-1]:ends[k]]``
    (``ends[-1]`` read as 0 for ``k = 0``)."""
    n_levels = y.size
    ends = np.empty(n_levels, np.int64)
    for k in range(n_levels - 1):
        ends[k] = np.searchsorted(x, 0.5 * (y[k + 1] + y[k]), side="right")
    ends[n_levels - 1] = x.size
    return ends


@njit(cache=True)
def _cells_mse(x, c1, c2, y):  # pragma: no cover - compiled
    """``np.sum(np.maximum(s2 - 2.0 * y * s1 + y * y * count, 0.0))`` over the cells of the
    sorted levels ``y`` (:meth:`SortedSamples.cells`: ``t_k = 0.5 * (y_{k+1} + y_k)``, bounds
    ``searchsorted(x, t, "right")``, :func:`_run_ends`), element by element in float64
    (``count`` as float64; the maximum keeps a NaN), then NumPy's pairwise sum added to the
    reduction's initial 0.0."""
    n_levels = y.size
    ends = _run_ends(x, y)
    terms = np.empty(n_levels)
    lower = 0
    for k in range(n_levels):
        upper = ends[k]
        count = upper - lower
        s1 = c1[upper] - c1[lower]
        s2 = c2[upper] - c2[lower]
        v = s2 - 2.0 * y[k] * s1 + y[k] * y[k] * np.float64(count)
        if v < 0.0:
            v = 0.0
        terms[k] = v
        lower = upper
    return 0.0 + pairwise_sum(terms, 0, n_levels)


@njit(cache=True)
def _sum_of_squares(d):  # pragma: no cover - compiled
    """``Σ d[j]²`` in float64, left to right: each square rounded, then added (no fused
    multiply-add, no reassociation — Numba compiles without fast-math), so the same bits on
    every machine and thread count."""
    total = 0.0
    for j in range(d.size):
        sq = d[j] * d[j]
        total += sq
    return total


@njit(cache=True)
def _nearest_differences(x, y):  # pragma: no cover - compiled
    """``x - y[searchsorted(t, x, "left")]`` for sorted ``x`` and levels ``y`` whose midpoints
    ``t`` do not decrease: level ``k`` for the run ``x[ends[k-1]:ends[k]]`` (:func:`_run_ends`)."""
    ends = _run_ends(x, y)
    d = np.empty(x.size)
    lower = 0
    for k in range(y.size):
        for j in range(lower, ends[k]):
            d[j] = x[j] - y[k]
        lower = ends[k]
    return d
