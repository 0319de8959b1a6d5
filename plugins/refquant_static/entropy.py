"""Entropy (KL-divergence) calibration: TensorRT's threshold search on a histogram of ``|y|``.

The algorithm (Migacz, "8-bit Inference with TensorRT", GTC 2017; as implemented in TensorRT's
``pytorch_quantization/calib/histogram.py::_compute_amax_entropy`` and, on a signed histogram,
in onnxruntime's ``quantization/calibrate.py::HistogramCollector.get_entropy_threshold``):
given bin counts ``h[0 … N-1]`` of magnitudes (bin ``j`` is ``[j·w, (j+1)·w)``) and ``L``
quantized levels, for every candidate ``i = L … N`` (threshold ``i·w``)::

    P = h[0 … i-1],  P[i-1] += Σ_{j≥i} h[j]              # clip: outliers fold into the last bin
    group g of bin j (j < i):  g = floor(j · L / i)       # merge the i bins into L levels
    Q[j] = (Σ_{k in g} h[k]) / #{k in g : h[k] > 0}  if h[j] > 0, else 0
                                                          # expand each level over its non-empty bins
    KL_i = Σ_j p_j · log(p_j / q_j),   p = P / ΣP,  q = Q / ΣQ        (natural log; ∞ if q_j = 0 < p_j)

and the threshold is ``i*·w`` for the largest ``i*`` among the minima (TensorRT's "last argmin").

Where refquant follows and where it differs:

* Like TensorRT it works on ``|y|`` and its threshold is the upper bin edge; the levels are
  ``L = 2^(bits-1)`` (``1 << (bits - 1 + unsigned)`` there), or ``2^bits`` when the grid spends
  all its levels on one side of zero (an asymmetric tensor whose values all have one sign).
* The group boundaries ``ceil(g · i / L)`` are integer arithmetic; TensorRT digitizes against
  ``np.linspace(0, i, L + 1)``, which gives the same groups when ``L`` is a power of two.
* No smoothing: like TensorRT, unlike MXNet/onnxruntime (which move ``1e-4`` of mass onto
  empty bins), so an empty last bin with outliers gives ``KL = ∞`` and is never chosen. A
  candidate with no mass inside it (``S_i = 0``) is ``∞`` too; TensorRT's code gets NaN from
  ``scipy.stats.entropy`` there, which its ``np.argmin`` would select.
* Exact zeros are left out of ``P`` and ``Q`` (every grid holds 0 exactly, so they carry no
  quantization error); TensorRT instead overwrites the zero bin with its neighbour's count
  (``bins[0] = bins[1]``) to tame the spike a ReLU leaves at 0.
* Candidates start at ``i0 = max(L, N/16)`` (:func:`first_candidate`) and stop at the last
  non-empty bin. TensorRT starts at 128 whatever the bit width, which is ``N/16`` of its 2048
  bins and ``L`` for signed 8-bit; at 8 bits ``i0 = L`` (the first ``i`` at which every level
  covers at least one bin). Below 8 bits the floor matters: starting at ``L`` (8 levels at
  4 bits) let the search pick thresholds of a few bins that clip nearly the whole tensor
  into the last bin, where ``P`` and ``Q`` are both a spike and ``KL ≈ 0`` — digits-cnn at
  4 bits got an input scale of 0.0026 for data spanning about ±2, and chance accuracy.
  With fewer non-empty bins than ``i0`` there is nothing to search: the threshold is the top
  of the data (no clipping).
* Only thresholds that saturate at most ``max_saturation`` (option, default 0.9) of the
  non-zero values are candidates: ``Σ_{j≥i} h[j] ≤ max_saturation · Σ h``. The KL objective has
  degenerate minima on data far from 0: a candidate ending at the first occupied bin folds every
  value into that one bin, ``P`` and ``Q`` are the same spike and ``KL = 0`` exactly — the
  global minimum (PP-OCRv4's LayerNorm std, 700 values in [0.44, 1.45]: 99.86 % saturated);
  on its hard-swish ``x + 3`` (mostly near 5.6) a local minimum at 1.51 saturating 94.4 %
  beats every range that keeps the data. TensorRT has the same minima; onnxruntime avoids them
  only because its smallest window is its whole first-batch histogram (128 bins, 128 levels).
  The limit is the one :func:`refquant.strategies.check_saturation` refuses above, so the search
  never returns a range its own check would call collapsed; a range it accepted before is
  unchanged (the last minimum over a suffix of the candidates that contains it).
* The histogram has a power-of-two bin width (see :mod:`.histogram`), so the observed range
  spans between ``N/2`` and ``N`` of its ``N = 2048`` bins, where TensorRT's spans exactly
  ``N`` after the first batch.
* onnxruntime's variant slides a window symmetric about 0 over a signed histogram; the
  ``tails="both"`` option here instead runs the search on each tail's magnitudes separately,
  giving an asymmetric range.

The search is vectorised over candidates. Because ``Q`` is constant on the non-empty bins of a
group, the cross term collapses to a sum over groups, with prefix sums for everything else::

    Σ_j p_j log p_j = (Σ_{j<i-1} h_j log h_j + P_{i-1} log P_{i-1}) / T − log T      (T = Σ h)
    Σ_j p_j log q_j = Σ_g (M_g / T) · log(G_g / (n_g · S_i))

with ``G_g`` the count in group ``g``, ``n_g`` its non-empty bins, ``S_i = Σ_{j<i} h_j`` and
``M_g = G_g`` except ``M_last = G_last + (T − S_i)``. Cost ``O(N · L)`` per tensor. The
``[candidates, L]`` terms ``M_g · log(G_g / (n_g · S_i))`` are computed by one compiled pass
(:func:`_cross_terms`: the same float64 operations, element by element, as the NumPy
expression in its docstring) and summed per candidate by NumPy's ``sum(axis=1)``; the search
computes only the candidates it may choose (each candidate's KL depends on its own row only).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["kl_divergences", "entropy_threshold_bins", "entropy_range"]


def _xlogx(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def kl_divergences(hist, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(candidates i, KL_i)`` for ``i = levels … len(hist)`` (see the module docstring)."""
    h = np.asarray(hist, dtype=np.int64)
    n = h.shape[0]
    if n < levels:
        return np.zeros(0, np.int64), np.zeros(0)
    i = np.arange(levels, n + 1)
    return i, _kl_of(h, levels, i)


def _kl_of(h: np.ndarray, levels: int, i: np.ndarray) -> np.ndarray:
    """``KL_i`` of the int64 histogram ``h`` for the candidates ``i`` (``levels <= i <= len(h)``)."""
    total = int(h.sum())
    cum = np.concatenate([[0], np.cumsum(h)])
    cum_nonempty = np.concatenate([[0], np.cumsum(h > 0)])
    cum_hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])

    inside = cum[i]  # S_i
    outliers = total - inside
    last = h[i - 1] + outliers  # P[i-1]
    self_term = (cum_hlogh[i - 1] + _xlogx(last)) / total - np.log(total)

    terms = np.empty((i.shape[0], levels))
    _cross_terms(cum, cum_nonempty.astype(np.int64), i.astype(np.int64), outliers.astype(np.int64),
                 int(levels), terms)
    cross = terms.sum(axis=1) / total
    kl = self_term - cross
    kl[(h[i - 1] == 0) & (outliers > 0)] = np.inf  # clipped mass lands on a bin Q leaves empty
    return kl


@njit(cache=True)
def _cross_terms(cum, cum_nonempty, i, outliers, levels, terms):  # pragma: no cover - compiled
    """``terms[r, g]``, for candidate ``i[r]`` and group ``g``, element for element the float64
    value of the NumPy expression::

        edges = -((-g[None, :] * i[:, None]) // levels)        # ceil(g·i/L), g = 0 … L
        group = cum[edges[:, 1:]] - cum[edges[:, :-1]]         # int64
        nonempty = cum_nonempty[edges[:, 1:]] - cum_nonempty[edges[:, :-1]]
        mass = group.astype(np.float64); mass[:, -1] += outliers
        filled = group > 0
        q_level = group / (np.maximum(nonempty, 1) * np.maximum(inside, 1)[:, None])
        terms = np.where(filled, mass * np.log(np.where(filled, q_level, 1.0)), 0.0)

    with ``inside = cum[i]``: int64 differences and products, the true division of two int64
    as float64 by float64, ``float64 + float64(int64)`` for the outliers, then ``log`` and one
    product; an unfilled group is 0.0 without evaluating the log."""
    for r in range(i.shape[0]):
        ii = i[r]
        inside = max(cum[ii], 1)
        lower = 0
        for g in range(levels):
            upper = -((-(g + 1) * ii) // levels)
            group = cum[upper] - cum[lower]
            if group > 0:
                nonempty = max(cum_nonempty[upper] - cum_nonempty[lower], 1)
                mass = np.float64(group)
                if g == levels - 1:
                    mass += np.float64(outliers[r])
                terms[r, g] = mass * np.log(np.float64(group) / np.float64(nonempty * inside))
            else:
                terms[r, g] = 0.0
            lower = upper


def first_candidate(levels: int, bins: int) -> int:
    """The smallest threshold (in bins) the search considers: ``max(levels, bins // 16)``.

    TensorRT starts at bin 128 of 2048 whatever the bit width (``start_bin=128``), and
    onnxruntime merges into 128 quantized bins whatever the target; both are the number of
    levels of signed 8-bit. At 8 bits ``levels`` is 128 or 256 and this is ``levels``; below
    8 bits it keeps TensorRT's floor (``bins / 16``, 128 of 2048) rather than falling to
    ``levels`` (8 at 4 bits), where a threshold of a few bins folds nearly all of the tensor
    into the last bin, ``P`` and ``Q`` both become a spike there and ``KL → 0``: the search
    then "prefers" clipping everything.
    """
    return max(int(levels), int(bins) // 16)


def entropy_threshold_bins(hist, levels: int, start: int | None = None, max_saturation: float = 1.0,
                           of: int | None = None) -> int:
    """The number of bins ``i*`` kept by the KL search (threshold ``i*·w``); see the module doc.

    Candidates run from ``start`` (default :func:`first_candidate`) to the last occupied bin;
    trailing empty bins are ignored. Fewer than ``start`` occupied bins: all of them (no clip).
    Only candidates whose saturated values — those at or beyond the threshold, ``Σ_{j≥i} h[j]``
    — are at most ``max_saturation`` of ``of`` values (default: all of ``hist``) are searched:
    ``Σ_{j≥i} h[j] / of ≤ max_saturation``, the share
    :func:`refquant.strategies.check_saturation` refuses above. The top candidate saturates
    nothing, so one always qualifies.
    """
    h = np.asarray(hist, dtype=np.int64)
    start = first_candidate(levels, h.shape[0]) if start is None else int(start)
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return 0
    used = int(nz[-1]) + 1
    if used < start:
        return used
    i = np.arange(levels, used + 1)
    of = int(h.sum()) if of is None else int(of)
    saturated = int(h.sum()) - np.cumsum(h)[i - 1]  # Σ_{j≥i} h[j]
    keep = (i >= start) & (saturated / max(of, 1) <= max_saturation)
    i = i[keep]
    kl = _kl_of(h[:used], levels, i)  # only the candidates searched (kl_divergences' values)
    last_min = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return int(i[last_min])


def entropy_range(hist, lo_seen, hi_seen, bits: int, symmetric: bool, tails: str, max_saturation: float = 1.0):
    """Per-channel ``(lo, hi)`` from the KL threshold(s) of a SignMagnitudeHistogram.

    ``tails="abs"``: one threshold ``a`` on ``|y|``, range ``[max(lo_seen, -a), min(hi_seen, a)]``.
    ``tails="both"``: a threshold per tail, from that tail's magnitudes.
    Each search considers only thresholds that saturate at most ``max_saturation`` of the
    channel's non-zero values (:func:`entropy_threshold_bins`): with ``"abs"`` the chosen range
    then always passes :func:`refquant.strategies.check_saturation`; with ``"both"`` each tail
    stays within the share on its own, and the check still refuses a pair whose sum exceeds it.
    """
    lo = np.array(lo_seen, dtype=np.float64, copy=True)
    hi = np.array(hi_seen, dtype=np.float64, copy=True)
    mags = hist.magnitudes()
    for c in range(hist.channels):  # a loop over channels; each search is vectorised
        w = hist.width[c]
        if w == 0:
            continue
        one_sided = lo[c] >= 0 or hi[c] <= 0
        levels = 2**bits if (one_sided and not symmetric) else 2 ** (bits - 1)
        limit = {"max_saturation": max_saturation, "of": int(mags[c].sum())}
        if tails == "abs":
            a = entropy_threshold_bins(mags[c], levels, **limit) * w
            lo[c], hi[c] = max(lo[c], -a), min(hi[c], a)
        else:
            hi[c] = min(hi[c], entropy_threshold_bins(hist.pos[c], levels, **limit) * w)
            lo[c] = max(lo[c], -entropy_threshold_bins(hist.neg[c], levels, **limit) * w)
    return lo, hi
