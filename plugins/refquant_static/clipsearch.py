"""MSE-optimal clipping: the range whose quantization error ``Σ count · (v − Q(v))²`` is smallest.

``Q`` is the exact quantize-then-dequantize refquant executes — ``qparams_from_range`` for the
candidate range, then the arithmetic of :func:`refquant.numerics.quantize` and
:func:`~refquant.numerics.dequantize` (float32 division, round half to even, saturation, float32
product; :func:`fake_quantize` repeats it bit for bit, in place and in cache-sized chunks) — so
a candidate is scored with the very qparams it would produce, zero-point rounding included.
Squared differences of the float32 values are formed and summed in float64, in NumPy's order
(:func:`squared_errors`).

Search: a **dense grid**, not golden-section. The error as a function of the clip is piecewise
smooth with a jump or kink wherever a value crosses a rounding boundary or the clip, so it has
many local minima and a unimodal search (golden-section, ternary) can stop in the wrong one.
Scoring ``G`` candidates costs ``G`` quantizations of the data (or of the histogram), which is
cheap, and the answer is the exact minimum over a documented set:

* one-parameter families: the clip ``α · max|v|`` (symmetric grids) or the range
  ``[α · min v, α · max v]`` (asymmetric grids shrunk towards 0 together), for
  ``α = k / G``, ``k = 1 … G``;
* two-parameter family (histograms of activations, asymmetric grid, values of both signs):
  pairs ``[α_i · min v, α_j · max v]``, searched coarse to fine over subsets of the same grid
  (:mod:`.mse`), each scored on the histogram's non-empty bins only.

Ties go to the later candidate (the larger ``α``: less clipping). Since ``α = 1`` (min-max) is
always a candidate, the result is never worse than min-max on the data it was scored on.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from refquant.numerics import IntFormat, pairwise_sum, qparams_from_range

__all__ = ["clip_fractions", "require_normal_magnitudes", "fake_quantize", "squared_errors",
           "best_candidate"]

_CHUNK_ELEMENTS = 1 << 16  # elements fake-quantized at once: small enough to stay in cache


def clip_fractions(grid: int) -> np.ndarray:
    """``α = k / G`` for ``k = 1 … G`` (float64, ascending)."""
    return np.arange(1, grid + 1, dtype=np.float64) / grid


def require_normal_magnitudes(amax, what: str) -> None:
    """Refuse data whose largest non-zero magnitude is subnormal in float32.

    With ``max|v| >= 2^-126`` every candidate scale ``α · max|v| / 255`` (``α >= 1/10000``) is
    at least ``2^-146``: positive in float32. Below that, candidate scales would underflow to 0.
    """
    amax = np.asarray(amax, dtype=np.float64)
    tiny = float(np.finfo(np.float32).tiny)
    bad = (amax > 0) & (amax < tiny)
    if np.any(bad):
        raise ValueError(f"{what}: largest magnitude {amax[bad].reshape(-1)[0]:.3g} is subnormal in "
                         f"float32 (< {tiny:.3g}); the MSE search's candidate scales would underflow")


def fake_quantize(x, scale, zero_point, fmt: IntFormat) -> np.ndarray:
    """``dequantize(quantize(x))`` as float32, bit for bit, broadcasting ``x`` against the qparams.

    The steps of :func:`refquant.numerics.quantize` and :func:`~refquant.numerics.dequantize`
    in float32, in place: ``x / s`` (float32 division), round half to even, ``+ z``, saturate,
    ``- z``, ``· s``. Adding ``z`` in float32 is exact below ``2^24``; above it the value
    saturates whatever the rounding, so the result is the same as quantize's float64 sum.
    """
    with np.errstate(over="ignore"):  # x / s beyond float32 is ±inf, which saturates
        q = np.divide(x, scale, dtype=np.float32)
    np.rint(q, out=q)
    q += zero_point
    np.clip(q, fmt.qmin, fmt.qmax, out=q)
    q -= zero_point  # exact: small integers
    q *= scale
    return q


def squared_errors(values, lo, hi, fmt, *, symmetric: bool, counts=None, name: str = "tensor") -> np.ndarray:
    """``E[k, r] = Σ_j counts[r, j] · (v[r, j] − Q_{k,r}(v[r, j]))²`` for candidate ranges.

    ``values`` is float32 ``[R, n]`` (a row per channel); ``lo``, ``hi`` are ``[K, R]`` candidate
    ranges; ``counts`` (optional, ``[R, n]``) weights each value (histogram counts).
    ``Q_{k,r}`` is :func:`fake_quantize` with ``qparams_from_range(lo[k, r], hi[k, r], fmt,
    symmetric=…)``. Each difference ``d = float64(Q(v)) − float64(v)`` is squared in float64.

    The sums: without ``counts``, ``0.0 + Σ_j d²`` by NumPy's pairwise rule
    (:func:`refquant.numerics.pairwise_sum`, what ``d.sum(axis=-1)`` computes on a row), in a
    compiled kernel that fuses the quantization, one (k, r) at a time; with ``counts``, NumPy's
    ``einsum("krn,rn->kr")`` of ``d²`` and the counts as float64.
    """
    values = np.asarray(values, dtype=np.float32)
    rows, n = values.shape
    lo = np.asarray(lo, dtype=np.float64)
    k_total = lo.shape[0]
    qp = qparams_from_range(lo.ravel(), np.asarray(hi, dtype=np.float64).ravel(), fmt,
                            symmetric=symmetric, axis=0, name=name)
    scale = qp.scale.reshape(k_total, rows)  # float32, as QParams holds it
    zero_point = qp.zero_point.astype(np.float32).reshape(k_total, rows)
    errors = np.empty((k_total, rows), np.float64)
    if counts is None:
        if errors.size:
            _squared_error_sums(np.ascontiguousarray(values), scale, zero_point, np.float32(qp.fmt.qmin),
                                np.float32(qp.fmt.qmax), errors)
        return errors
    scale, zero_point = scale[:, :, None], zero_point[:, :, None]
    weight = np.asarray(counts, dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, rows * n))
    for start in range(0, k_total, step):
        stop = min(k_total, start + step)
        d = np.subtract(fake_quantize(values, scale[start:stop], zero_point[start:stop], qp.fmt),
                        values, dtype=np.float64)
        d *= d
        errors[start:stop] = np.einsum("krn,rn->kr", d, weight)
    return errors


@njit(cache=True)
def _fill_squared_errors(v, s, z, qmin, qmax, e):  # pragma: no cover - compiled
    """``e[i] = (float64(Q(v[i])) − float64(v[i]))²``: :func:`fake_quantize`'s float32 steps
    (division, round half to even, ``+ z``, saturation, ``− z``, ``· s``), then float64. One
    loop without branches, which LLVM vectorises (float32 division and rounding are exact
    IEEE operations: the lanes give the scalar bits)."""
    for i in range(v.shape[0]):
        q = np.rint(v[i] / s) + z
        q = qmin if q < qmin else q  # NaN fails both tests and stays NaN, as in np.clip
        q = qmax if q > qmax else q
        d = np.float64((q - z) * s) - np.float64(v[i])
        e[i] = d * d


#: (k, r) rows per parallel task of :func:`_squared_error_sums` (each task has one scratch row)
_ROWS_PER_TASK = 64


@njit(cache=True, parallel=True)
def _squared_error_sums(values, scale, zero_point, qmin, qmax, errors):  # pragma: no cover - compiled
    """``errors[k, r]`` = ``0.0 +`` the pairwise sum of row ``r``'s squared errors under qparams
    ``(scale[k, r], zero_point[k, r])``. Each parallel task takes ``_ROWS_PER_TASK``
    consecutive (k, r) and sums each alone, so no sum depends on the thread count."""
    k_total, rows = errors.shape
    n = values.shape[1]
    total = k_total * rows
    for task in prange((total + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        e = np.empty(n)
        for t in range(task * _ROWS_PER_TASK, min(total, (task + 1) * _ROWS_PER_TASK)):
            k = t // rows
            r = t % rows
            _fill_squared_errors(values[r], scale[k, r], zero_point[k, r], qmin, qmax, e)
            errors[k, r] = 0.0 + pairwise_sum(e, 0, n)


def best_candidate(errors: np.ndarray) -> np.ndarray:
    """Per column, the index of the smallest error; ties go to the last (widest) candidate."""
    k = errors.shape[0]
    return k - 1 - np.argmin(errors[::-1], axis=0)
