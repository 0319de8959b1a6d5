"""Samples sorted once, so that every sum a fixed-point update needs is two array reads.

The iterative quantizer asks, at each step, how many samples lie beyond the clip and what
they sum to, how many are inside, and — for the exact refinement — the count and sum of every
cell of the grid. Over a sorted array ``x_(1) <= … <= x_(n)`` with prefix sums (float64,
sequential ``np.cumsum``)::

    C1[i] = Σ_{j<i} x_(j),    C2[i] = Σ_{j<i} x_(j)^2

any range of values is an index range found by ``np.searchsorted`` and its sums are
differences of ``C1``, ``C2``: an update costs ``O(L log n)`` for ``L`` levels, not ``O(n)``.
"""

from __future__ import annotations

import numpy as np

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
        """``mean (x - nearest level)^2`` from the cell sums, ``Σ_k (S2_k - 2 y_k S1_k + y_k^2 N_k) / n``."""
        count, s1, s2 = self.cells(levels)
        return float(np.sum(np.maximum(s2 - 2.0 * levels * s1 + levels * levels * count, 0.0))) / self.n

    def exact_mse(self, levels: np.ndarray) -> float:
        """The same MSE summed directly over the samples (no prefix-sum cancellation), ``O(n)``."""
        t = 0.5 * (levels[1:] + levels[:-1])
        nearest = levels[np.searchsorted(t, self.x, side="left")]
        d = self.x - nearest
        return float(np.dot(d, d)) / self.n
