"""NumPy's pairwise summation, compiled: the same additions in the same order as ``np.sum``.

Compiled code that must reproduce a ``np.sum`` of float64 bit for bit (the strategies' MSE
scans, whose results decide codebooks and scales) calls :func:`pairwise_sum` instead of
summing in its own order. Written from NumPy 2's ``pairwise_sum`` (``loops_utils.h.src``);
``tests/plugins/test_compiled_bit_exact.py`` compares it with the installed NumPy 2.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["pairwise_sum"]


@njit(cache=True)
def _block_sum(a, lo, n):  # pragma: no cover - compiled
    """NumPy's pairwise summation of ``a[lo:lo + n]`` for ``n <= 128`` (:func:`pairwise_sum`)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]  # eight partial sums, in registers
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        b = lo + i
        r0 += a[b]
        r1 += a[b + 1]
        r2 += a[b + 2]
        r3 += a[b + 3]
        r4 += a[b + 4]
        r5 += a[b + 5]
        r6 += a[b + 6]
        r7 += a[b + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def pairwise_sum(a, lo, n):  # pragma: no cover - compiled
    """``np.sum(a[lo:lo + n])`` for contiguous float64, bit for bit: NumPy's pairwise summation
    (fewer than 8 values: in order from 0.0; up to 128: eight interleaved partial sums, combined
    as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the remainder in order; more: split at
    ⌊n/2⌋ rounded down to a multiple of 8, the two halves summed and added, left + right).
    The recursion is unrolled onto an explicit stack (a cached recursive Numba function is not
    reliable); the additions and their order are the recursive ones. ``np.sum`` adds this to the
    reduction's initial 0.0, which changes nothing but the sign of an all-negative-zero sum:
    write ``0.0 + pairwise_sum(...)`` where that matters."""
    if n <= 128:
        return _block_sum(a, lo, n)
    half = n // 2
    half -= half % 8
    if n - half <= 128:  # one split (n <= 256 or so): both halves are blocks
        return _block_sum(a, lo, half) + _block_sum(a, lo + half, n - half)
    s_lo = np.empty(64, np.int64)
    s_n = np.empty(64, np.int64)
    s_stage = np.zeros(64, np.int64)
    s_left = np.empty(64)
    top = 0
    s_lo[0], s_n[0] = lo, n
    ret = 0.0
    while top >= 0:
        start, size = s_lo[top], s_n[top]
        if size <= 128:
            ret = _block_sum(a, start, size)
            top -= 1
            continue
        half = size // 2
        half -= half % 8
        if s_stage[top] == 0:  # sum the left half first
            s_stage[top] = 1
            top += 1
            s_lo[top], s_n[top], s_stage[top] = start, half, 0
        elif s_stage[top] == 1:  # left half in ret: now the right half
            s_left[top] = ret
            s_stage[top] = 2
            top += 1
            s_lo[top], s_n[top], s_stage[top] = start + half, size - half, 0
        else:  # both halves done
            ret = s_left[top] + ret
            top -= 1
    return ret
