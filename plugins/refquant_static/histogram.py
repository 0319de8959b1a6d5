"""A streaming histogram of a tensor's values, by sign and magnitude, per channel.

For each channel ``c`` it holds::

    zeros[c]     the number of values exactly 0 (either sign)
    pos[c, m]    the number of values v > 0 with  m·w_c ≤  v < (m+1)·w_c
    neg[c, m]    the number of values v < 0 with  m·w_c ≤ -v < (m+1)·w_c      m = 0 … bins-1

Numeric decisions:

* **The bin width is a power of two**: ``w_c`` is the smallest power of two with
  ``bins · w_c > max |v|`` over everything seen in channel ``c``. Values are taken as float32;
  ``|v| / w_c`` is then exact (a multiplication by a power of two), so the bin index
  ``floor(|v| / w_c)`` is exact and lands in ``0 … bins-1`` with no clamping. The occupied part
  of the histogram is between half and all of its bins (``max|v| / w_c`` lies in
  ``[bins/2, bins)``).
* **Growth is exact re-binning**: when a batch brings a larger ``max |v|``, the width doubles
  ``k`` times and old bin ``m`` becomes bin ``m >> k`` (``2^k`` neighbours merged). Because
  ``floor(floor(|v|/w) / 2^k) = floor(|v| / (2^k w))``, every value ends in the bin it would
  have had if it had arrived after the growth: the histogram after any sequence of batches is
  *identical* to the histogram of their concatenation, whatever the split or order, and no
  count is ever lost or estimated. (onnxruntime and TensorRT instead append bins of a fixed
  width, so their bin count grows with the range; their first batch decides the width.)
* Magnitudes rather than signed values: the histogram of ``|y|`` (TensorRT's entropy
  calibration) is ``pos + neg`` exactly, and each tail is available on its own.
* Exact zeros are counted apart, because every quantization grid here holds 0 exactly: they
  never contribute quantization error.

Cost per batch: one pass for each channel's largest magnitude (its maximum and minimum) and
one compiled counting pass (per channel, or per slice of a long channel with its own counts,
summed afterwards — integer counts, so the split changes nothing); growth costs
``O(channels · bins)``. A batch of fewer than :data:`PARALLEL_MIN_VALUES` values is counted on
the calling thread: starting the worker threads costs more than counting it, and on a busy
machine a parallel region waits for a descheduled worker (milliseconds per call).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["SignMagnitudeHistogram", "power_of_two_above", "PARALLEL_MIN_VALUES"]

#: batches with at least this many values are counted by the parallel kernel, smaller ones on
#: the calling thread (the same counts either way: integers, whatever the split)
PARALLEL_MIN_VALUES = 1 << 20


def power_of_two_above(x) -> np.ndarray:
    """The smallest power of two strictly greater than ``x`` (float64), and 0 where ``x == 0``.

    With ``x = f · 2^e``, ``f ∈ [0.5, 1)`` (``np.frexp``), that power is ``2^e`` — exact.
    """
    x = np.asarray(x, dtype=np.float64)
    _, e = np.frexp(x)
    return np.where(x > 0, np.ldexp(1.0, e), 0.0)


class SignMagnitudeHistogram:
    """Counts of one tensor's values by sign and magnitude, one row per channel.

    ``add(rows)`` takes a float32 array ``[channels, n]``. Attributes ``pos``, ``neg`` (int64
    ``[channels, bins]``), ``zeros`` (int64 ``[channels]``) and ``width`` (float64
    ``[channels]``, 0 until the channel has seen a non-zero value) are read by the range rules.
    """

    def __init__(self, channels: int, bins: int = 2048):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"histogram: bins must be a power of two >= 2, got {bins}")
        self.bins = bins
        self.width = np.zeros(channels, np.float64)
        self.pos = np.zeros((channels, bins), np.int64)
        self.neg = np.zeros((channels, bins), np.int64)
        self.zeros = np.zeros(channels, np.int64)

    @property
    def channels(self) -> int:
        return self.width.shape[0]

    def count(self) -> np.ndarray:
        """Values seen per channel."""
        return self.zeros + self.pos.sum(axis=1) + self.neg.sum(axis=1)

    def magnitudes(self) -> np.ndarray:
        """Histogram of ``|v|`` for the non-zero values: ``pos + neg``."""
        return self.pos + self.neg

    def add(self, rows: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> None:
        """Count one batch: ``rows`` is finite float32 ``[channels, n]``; ``lo``/``hi``, if the
        caller has them, are its per-row minimum and maximum (saves that pass).

        Counts the signed bin index ``sign(v) · (floor(|v|/w) + 1)``, which is ``-bins … -1``
        for negatives, 0 for zeros and ``1 … bins`` for positives (:func:`_count_bins`).
        """
        c, n = rows.shape
        if c != self.channels:
            raise ValueError(f"histogram: expected {self.channels} channel rows, got {c}")
        if n == 0:
            return
        if lo is None or hi is None:
            lo, hi = rows.min(axis=1), rows.max(axis=1)
        largest = np.maximum(hi, -lo)  # max |v| (exact in float32)
        wanted = power_of_two_above(largest.astype(np.float64) / self.bins)
        self._grow_to(np.maximum(self.width, wanted))

        # |v| · 2^-e is exact in float32 (no overflow: it is < bins; an underflow is < 1 and
        # floors to 0 anyway) unless 2^-e itself leaves float32's range: then use float64.
        inverse = 1.0 / np.where(self.width > 0, self.width, 1.0)  # a width-0 channel holds only zeros
        wide = bool(inverse.max() >= 2.0**127)
        inverse32 = np.ones_like(inverse) if wide else inverse  # (unused when wide; 2**127+ overflows)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if c * n < PARALLEL_MIN_VALUES:
            counts = np.zeros((c, 1, 2 * self.bins + 1), np.int64)
            _count_bins_serial(rows, inverse32.astype(np.float32), inverse, wide, self.bins, counts)
        else:
            slices = max(1, min(4 * numba.get_num_threads(), n // 65536))  # long rows: several tasks
            counts = np.zeros((c, slices, 2 * self.bins + 1), np.int64)
            with numba.parallel_chunksize(1):  # slices handed out one by one: balanced on a busy machine
                _count_bins(rows, inverse32.astype(np.float32), inverse, wide, self.bins, counts)
        counts = counts.sum(axis=1)
        self.neg += counts[:, self.bins - 1::-1]
        self.zeros += counts[:, self.bins]
        self.pos += counts[:, self.bins + 1:]

    def _grow_to(self, new_width: np.ndarray) -> None:
        """Widen channels to ``new_width`` (powers of two, ``>=`` the current width), merging bins."""
        grow = (self.width > 0) & (new_width > self.width)
        if np.any(grow):
            k = np.frexp(new_width[grow])[1] - np.frexp(self.width[grow])[1]  # doublings, exact
            target = np.arange(self.bins)[None, :] >> np.minimum(k, 62)[:, None]
            rows = np.arange(target.shape[0])[:, None]
            for counts in (self.pos, self.neg):
                merged = np.zeros((target.shape[0], self.bins), np.int64)
                np.add.at(merged, (rows, target), counts[grow])
                counts[grow] = merged
        self.width = new_width.astype(np.float64)


@njit(cache=True)
def _count_task(rows, inverse32, inverse64, wide, bins, counts, t):  # pragma: no cover - compiled
    """Task ``t`` of :func:`_count_bins`: slice ``t % slices`` of row ``t // slices``."""
    slices = counts.shape[1]
    n = rows.shape[1]
    c = t // slices
    s = t % slices
    row = rows[c]
    out = counts[c, s]
    for e in range(s * n // slices, (s + 1) * n // slices):
        v = row[e]
        if v == 0:
            out[bins] += 1
            continue
        if wide:
            m = np.int64(np.floor(np.abs(np.float64(v)) * inverse64[c]))
        else:
            m = np.int64(np.floor(np.abs(v) * inverse32[c]))
        if v > 0:
            out[bins + 1 + m] += 1
        else:
            out[bins - 1 - m] += 1


@njit(cache=True, parallel=True)
def _count_bins(rows, inverse32, inverse64, wide, bins, counts):  # pragma: no cover - compiled
    """``counts[c, s, bins + sign(v)·(floor(|v|·inverse[c]) + 1)] += 1`` for the values ``v`` of
    slice ``s`` of row ``c``. The product is float32 (float64 where ``wide``): a value times a
    power of two, exact, so the floor is the exact bin, as in ``SignMagnitudeHistogram.add``."""
    for t in prange(counts.shape[0] * counts.shape[1]):
        _count_task(rows, inverse32, inverse64, wide, bins, counts, t)


@njit(cache=True)
def _count_bins_serial(rows, inverse32, inverse64, wide, bins, counts):  # pragma: no cover - compiled
    """:func:`_count_bins` on the calling thread, task after task (small batches)."""
    for t in range(counts.shape[0] * counts.shape[1]):
        _count_task(rows, inverse32, inverse64, wide, bins, counts, t)
