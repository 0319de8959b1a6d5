"""Percentile clipping thresholds read from a sign-magnitude histogram.

A percentile ``p`` allows ``(100 - p) %`` of the calibration values to be clipped. With ``n``
values the number allowed beyond the threshold is an exact integer::

    allowed = floor((100 - p) · n / 100)           tails="abs":  on |y|
    allowed = floor((100 - p) · n / 200)           tails="both": on each tail (y > 0, y < 0)

``p`` is read as the decimal it prints as (``99.99`` is 9999/100, not the nearest binary
float), so ``allowed`` involves no rounding at all.

The threshold is the upper edge of a histogram bin: ``t = (m + 1) · w`` for the *smallest*
``m`` such that at most ``allowed`` values lie at or beyond ``(m + 1) · w``. Hence, exactly:

* at most ``allowed`` values have ``|v| > t`` (a percentile never clips more than it allows);
* more than ``allowed`` values have ``|v| >= t - w`` (one bin lower would clip too many),

and ``t`` is within one bin width above the order statistic ``s[n - allowed - 1]`` of the sorted
magnitudes — NumPy's ``np.percentile(|y|, p, method="inverted_cdf")``. (onnxruntime and
TensorRT take the *lower* edge of the bin where the CDF crosses ``p``, which may clip more than
``100 - p`` percent.) Finally the threshold is clipped to the observed extremes.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["allowed_beyond", "tail_threshold", "percentile_range"]


def allowed_beyond(percentile, n: int, tails: int = 1) -> int:
    """``floor((100 - p) · n / (100 · tails))`` with ``p`` read as its decimal string."""
    p = Fraction(str(percentile))
    return math.floor((100 - p) * n / (100 * tails))


def tail_threshold(counts: np.ndarray, width: float, allowed: int) -> float:
    """Smallest bin upper edge ``(m+1)·w`` with at most ``allowed`` counts at or beyond it.

    ``counts[m]`` counts magnitudes in ``[m·w, (m+1)·w)``. No counts at all gives 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0:
        return 0.0
    beyond = counts.sum() - np.cumsum(counts)  # beyond[m] = counts in bins m+1, m+2, …
    m = int(np.argmax(beyond <= allowed))  # beyond[-1] == 0, so some m qualifies
    return (m + 1) * float(width)


def percentile_range(hist, lo_seen, hi_seen, percentile: float, tails: str):
    """Per-channel ``(lo, hi)`` clipping ranges at ``percentile`` from a SignMagnitudeHistogram.

    ``tails="abs"``: one threshold ``a`` on ``|y|`` (TensorRT's choice), range
    ``[max(lo_seen, -a), min(hi_seen, a)]``. ``tails="both"``: each tail clipped by its own
    threshold, each allowed half of the clipped fraction (onnxruntime's asymmetric choice).
    """
    channels = hist.channels
    lo = np.array(lo_seen, dtype=np.float64, copy=True)
    hi = np.array(hi_seen, dtype=np.float64, copy=True)
    n = hist.count()
    mags_all = hist.magnitudes()
    for c in range(channels):  # a loop over channels, not elements: each step reads `bins` counts
        w = hist.width[c]
        if w == 0:  # only zeros were seen
            continue
        if tails == "abs":
            mags = mags_all[c].copy()
            mags[0] += hist.zeros[c]  # 0 lies in the first bin [0, w)
            a = tail_threshold(mags, w, allowed_beyond(percentile, int(n[c])))
            lo[c], hi[c] = max(lo[c], -a), min(hi[c], a)
        else:
            allowed = allowed_beyond(percentile, int(n[c]), tails=2)
            hi[c] = min(hi[c], tail_threshold(hist.pos[c], w, allowed))
            lo[c] = max(lo[c], -tail_threshold(hist.neg[c], w, allowed))
    return lo, hi
