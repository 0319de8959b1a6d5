"""Calibration observers: one pass over each batch, then a range rule turns the statistics into qparams.

Every observer sees a batch as float32 rows ``[channels, n]``: a single row per tensor, or, for
per-channel qparams, one row per channel of axis 1 (``N C H W`` or ``N C``). It keeps the
running minimum and maximum per row (exact: min and max are associative), and the histogram
observer also a :class:`~.histogram.SignMagnitudeHistogram` — nothing else, so memory does not
grow with the number of batches, and any split of the data into batches gives the same result.

Rules for bad input, each a ``ValueError`` naming the layer: NaN or ±Inf in a batch; a
per-channel tensor of rank < 2 or whose channel count changes; ``qparams()`` before any value
was observed (an empty batch observes nothing). A constant tensor is not an error: its range
``[c, c]`` widens to include 0 and ``[0, 0]`` gets scale 1 (``qparams_from_range``'s rule).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from refquant.numerics import QParams, qparams_from_range
from refquant.strategies import LayerSpec, check_saturation

from .histogram import SignMagnitudeHistogram
from .options import max_saturation_option

__all__ = ["channel_rows", "rows_and_range", "range_qparams", "MinMaxObserver", "HistogramObserver"]


def channel_rows(y, spec: LayerSpec) -> np.ndarray:
    """``y`` as float32 rows: ``[1, size]`` per tensor, ``[C, size / C]`` per channel (axis 1).

    float64 input is rounded to float32 once (activations are float32); NaN/Inf raise.
    """
    return rows_and_range(y, spec)[0]


def rows_and_range(y, spec: LayerSpec):
    """:func:`channel_rows` and each row's minimum and maximum (float32 ``[rows]``; ``None``
    for an empty batch), from one ``min`` and one ``max`` pass: a NaN reaches its row's
    minimum and maximum and ±Inf one of them, so they are also the finiteness check."""
    y = np.asarray(y)
    where = f"layer {spec.layer!r}"
    if y.dtype.kind not in "fiu":
        raise TypeError(f"{where}: calibration expects a real-valued tensor, got dtype {y.dtype}")
    y = y.astype(np.float32, copy=False)
    if spec.per_channel and y.ndim < 2:
        raise ValueError(f"{where}: per-channel activations need channels on axis 1 "
                         f"(N C … layout), got shape {y.shape}")
    rows = y.reshape(1, -1) if not spec.per_channel else np.moveaxis(y, 1, 0).reshape(y.shape[1], -1)
    if not rows.shape[1]:
        return rows, None, None
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"{where}: calibration batch has {int(np.count_nonzero(~np.isfinite(y)))} "
                         f"non-finite value(s) (NaN or Inf) in its output")
    return rows, lo, hi


def range_qparams(lo, hi, spec: LayerSpec) -> QParams:
    """qparams of the range(s) ``[lo, hi]`` on ``spec.fmt``: per tensor, or per channel on axis 1."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if spec.per_channel:
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=1, name=spec.layer)
    return qparams_from_range(lo.reshape(-1)[0], hi.reshape(-1)[0], spec.fmt,
                              symmetric=spec.symmetric, name=spec.layer)


class MinMaxObserver:
    """Running ``min`` and ``max`` per row; ``qparams()`` maps ``[min, max]`` onto the grid."""

    def __init__(self, spec: LayerSpec, strategy: str = "static-minmax"):
        self.spec = spec
        self.strategy = strategy
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def observe(self, y, *, context=None, x=None) -> None:
        rows, lo, hi = rows_and_range(y, self.spec)
        if rows.shape[1]:
            self._update(rows, lo, hi)

    def _update(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Fold one batch's per-row ``lo``/``hi`` (of ``rows``) into the running range."""
        if self.lo is not None and rows.shape[0] != self.lo.shape[0]:
            raise ValueError(f"layer {self.spec.layer!r}: batch has {rows.shape[0]} channels, "
                             f"earlier batches had {self.lo.shape[0]}")
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def _require_data(self) -> None:
        if self.lo is None:
            raise ValueError(f"layer {self.spec.layer!r}: strategy {self.strategy!r} has observed no "
                             f"values; run calibration batches through observe() before qparams()")

    def qparams(self) -> QParams:
        self._require_data()
        return range_qparams(self.lo, self.hi, self.spec)


class HistogramObserver(MinMaxObserver):
    """Min-max plus a sign-magnitude histogram; ``rule(hist, lo, hi)`` returns the chosen ranges.

    ``rule`` receives the histogram and the observed per-row ``lo``/``hi`` (float64 ``[rows]``)
    and returns the clipped ``(lo, hi)``.
    """

    def __init__(self, spec: LayerSpec, strategy: str, rule: Callable, bins: int = 2048):
        super().__init__(spec, strategy)
        self.rule = rule
        self.bins = bins
        self.hist: SignMagnitudeHistogram | None = None

    def observe(self, y, *, context=None, x=None) -> None:
        rows, lo, hi = rows_and_range(y, self.spec)
        if rows.shape[1] == 0:
            return
        self._update(rows, lo, hi)
        if self.hist is None:
            self.hist = SignMagnitudeHistogram(rows.shape[0], self.bins)
        self.hist.add(rows, lo, hi)

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """The per-row ``(lo, hi)`` the rule chooses (float64)."""
        self._require_data()
        return self.rule(self.hist, self.lo.astype(np.float64), self.hi.astype(np.float64))

    def saturated(self, lo, hi) -> np.ndarray:
        """Per row, the calibration values at or beyond ``[lo, hi]``: every histogram bin whose
        lower edge ``m·w`` is ``>= hi`` (positive side) or ``>= -lo`` (negative side). Bins are
        exact (:mod:`.histogram`), and every range rule here returns bin edges or the observed
        ends, so this is the exact count of values ``>= hi`` or ``<= lo``."""
        h = self.hist
        edges = np.arange(h.bins)[None, :] * h.width[:, None]
        hi = np.asarray(hi, np.float64).reshape(-1, 1)
        lo = np.asarray(lo, np.float64).reshape(-1, 1)
        above = np.where(edges >= hi, h.pos, 0).sum(axis=1)
        below = np.where(edges >= -lo, h.neg, 0).sum(axis=1)
        return np.where(h.width > 0, above + below, 0)

    def qparams(self) -> QParams:
        """The rule's range on the grid, after :func:`refquant.strategies.check_saturation`:
        a range that saturates more than ``max_saturation`` (default 0.9) of the non-zero
        calibration values raises ``CollapsedRangeError`` naming the layer."""
        lo, hi = self.ranges()
        h = self.hist
        # the observed ends themselves are not saturated: only clipping counts
        clipped_hi = np.where(np.asarray(hi) < self.hi, hi, np.inf)
        clipped_lo = np.where(np.asarray(lo) > self.lo, lo, -np.inf)
        check_saturation(self.spec.layer, self.strategy, self.saturated(clipped_lo, clipped_hi),
                         h.count() - h.zeros, (lo, hi), (self.lo, self.hi), max_saturation_option(self.spec))
        return range_qparams(lo, hi, self.spec)
