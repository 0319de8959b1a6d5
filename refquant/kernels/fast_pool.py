"""Numba forms of the integer-operator table's pooling rules, for the ``numba`` backend.

The rules themselves live in :mod:`refquant.executor.integer_ops` (the NumPy form is the
specification, and what the reference backend runs); an entry asks the backend for these
hooks and uses them when present:

* :func:`max_pool_integers` — ``MaxPool`` of an integer NCHW tensor: the maximum over the taps
  inside the input (padding never wins), in the input's dtype. The rule computes the float32
  MaxPool of the integers (exact images), so the two agree bit for bit. The window plan and
  its checks are :func:`refquant.ops.padding.window_plan` and
  :func:`~refquant.ops.padding.check_pool_windows`, as in the float operator (same errors).
* :func:`global_average_integers` — ``GlobalAveragePool``'s ``float32(float32(Σ (q − z)) /
  count) · s`` (:func:`~refquant.executor.integer_ops.average_integers`) with the sum in
  int64: for 8-bit inputs and ``count < 65 793`` every float32 partial sum of the rule is an
  exact integer, so its sum equals the int64 one in any order; the division is NumPy's
  (float64 quotient of the float32 sum and the count, rounded to float32 — the same as a
  float32 division, double rounding being innocuous for 53 ≥ 2·24 + 2 bits), then one
  float32 product. Returns ``None`` where that argument does not hold (16-bit inputs,
  larger windows): the entry then runs its NumPy rule.

Both run ``prange`` over (image, channel) planes (MaxPool: one chunk of planes per thread,
each with its own row buffer; the taps are read from the input itself, those in the padding
skipped); every output is computed by one thread in a fixed order, so the result does not
depend on the thread count. Inputs below :data:`refquant.kernels.grain.PARALLEL_GRAIN`
elements run on the calling thread (a pool wake-up costs more than they do on a busy machine).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from ..ops.padding import check_pool_windows, window_plan
from .fast import _chunk_bounds
from .grain import threads_for

__all__ = ["max_pool_integers", "global_average_integers"]

_EXACT_COUNT = 65793  # 255 · 65 792 < 2**24: the float32 sums of the rule are exact integers


@njit(cache=True)
def _columns_max(row, x0, count, sw, dw, kw, dst):
    """``dst[e] = max_{j < kw} row[x0 + e·sw + j·dw]`` for ``e < count``: the first kernel column
    copied, the others folded in, each a loop over the outputs. Strides 1 and 2 have loops of
    their own: a constant stride is what lets LLVM vectorise the loads (a runtime one left the
    loop scalar, 2 ns per output and tap)."""
    if sw == 1:
        _fold_columns(row, x0, count, 1, dw, kw, dst)
    elif sw == 2:
        _fold_columns(row, x0, count, 2, dw, kw, dst)
    else:
        _fold_columns(row, x0, count, sw, dw, kw, dst)


@njit(cache=True, inline="always")
def _fold_columns(row, x0, count, sw, dw, kw, dst):
    for e in range(count):
        dst[e] = row[x0 + e * sw]
    for j in range(1, kw):
        src = row[x0 + j * dw:]
        for e in range(count):
            v = src[e * sw]
            dst[e] = v if v > dst[e] else dst[e]


@njit(cache=True, inline="always")
def _edge_max(row, x0, j0, j1, dw):
    """``max_{j0 ≤ j < j1} row[x0 + j·dw]``."""
    m = row[x0 + j0 * dw]
    for j in range(j0 + 1, j1):
        v = row[x0 + j * dw]
        m = v if v > m else m
    return m


@njit(parallel=True, cache=True)
def _max_pool_kernel(x, geometry, j_lo, j_hi, rows, out):
    """Windows that may reach the padding: the maximum over the taps inside the input only
    (padding never wins; a window of padding only is rejected before), read straight from the
    source. ``x`` is ``[P, H, W]``, ``out`` ``[P, OH, OW]``.

    Per output row: the maximum over the kernel rows inside the input into ``rows[t]`` (the
    first copied, the others folded in — contiguous loops LLVM vectorises), then, per output
    column ``ox``, over the kernel columns ``j`` in ``[j_lo[ox], j_hi[ox])``, those whose
    column ``ox·sw + j·dw − left`` lies inside (the run of columns whose taps are all inside by
    :func:`_columns_max`). Threads take contiguous chunks of planes, as in
    :func:`_max_pool_inside_kernel`; every output is written once, by one thread.
    """
    sh, sw, dh, dw, top, left, kh, kw = geometry
    n_planes, oh, ow = out.shape[0], out.shape[1], out.shape[2]
    height, width = x.shape[1], x.shape[2]
    chunks = rows.shape[0]
    a, b = 0, 0  # the first run of output columns whose kernel columns are all inside
    while a < ow and not (j_lo[a] == 0 and j_hi[a] == kw):
        a += 1
    b = a
    while b < ow and j_lo[b] == 0 and j_hi[b] == kw:
        b += 1
    for t in prange(chunks):
        row = rows[t]
        p0, p1 = _chunk_bounds(n_planes, chunks, t)
        for p in range(p0, p1):
            for oy in range(oh):
                first = True
                for i in range(kh):
                    y = oy * sh + i * dh - top
                    if y < 0 or y >= height:
                        continue
                    src = x[p, y]
                    if first:
                        for e in range(width):
                            row[e] = src[e]
                        first = False
                    else:
                        for e in range(width):
                            v = src[e]
                            row[e] = v if v > row[e] else row[e]
                dst = out[p, oy]
                _columns_max(row, a * sw - left, b - a, sw, dw, kw, dst[a:b])  # every tap inside
                for ox in range(a):  # the others, their taps in the padding skipped
                    dst[ox] = _edge_max(row, ox * sw - left, j_lo[ox], j_hi[ox], dw)
                for ox in range(b, ow):
                    dst[ox] = _edge_max(row, ox * sw - left, j_lo[ox], j_hi[ox], dw)


@functools.lru_cache(maxsize=256)
def _column_taps(width: int, ow: int, sw: int, dw: int, kw: int, left: int) -> tuple:
    """Per output column ``ox``, the kernel columns ``[j_lo, j_hi)`` whose input column
    ``ox·sw + j·dw − left`` lies in ``[0, width)`` (int64 arrays; consecutive, since the
    column grows with ``j``)."""
    cols = np.arange(ow)[:, None] * sw - left + np.arange(kw)[None, :] * dw
    inside = (cols >= 0) & (cols < width)
    j_lo = np.argmax(inside, axis=1).astype(np.int64)
    j_hi = (kw - np.argmax(inside[:, ::-1], axis=1)).astype(np.int64)
    return j_lo, j_hi


@njit(parallel=True, cache=True)
def _max_pool_inside_kernel(x, geometry, rows, out):
    """Every window inside its plane (no tap in the padding): ``out[p, oy, ox] = max_{i, j}
    x[p, oy·sh + i·dh, ox·sw + j·dw]``, read straight from the source — no padded copy.

    ``x`` is ``[P, H, W]``, ``out`` ``[P, OH, OW]`` (a plane is one image × channel). Per output
    row: the maximum over the kernel rows into ``rows[t]`` (contiguous rows of the source, a
    loop LLVM vectorises), then over the kernel columns (:func:`_columns_max`). Thread ``t`` of ``rows.shape[0]`` takes
    the planes ``[t·P // chunks, (t + 1)·P // chunks)``; every output is written once, by one
    thread, so no result depends on the thread count (a maximum is exact in any order anyway).
    """
    sh, sw, dh, dw, kh, kw = geometry
    n_planes, oh, ow = out.shape[0], out.shape[1], out.shape[2]
    width = x.shape[2]
    chunks = rows.shape[0]
    for t in prange(chunks):
        row = rows[t]
        p0, p1 = _chunk_bounds(n_planes, chunks, t)
        for p in range(p0, p1):
            for oy in range(oh):
                y0 = oy * sh
                src = x[p, y0]
                for e in range(width):
                    row[e] = src[e]
                for i in range(1, kh):
                    src = x[p, y0 + i * dh]
                    for e in range(width):
                        v = src[e]
                        row[e] = v if v > row[e] else row[e]
                _columns_max(row, 0, ow, sw, dw, kw, out[p, oy])


def _key(values):
    """An attribute list as a tuple (hashable), ``None`` kept."""
    return None if values is None else tuple(values)


@functools.lru_cache(maxsize=256)
def _window_plan(size, kernel, auto_pad, pads, strides, dilations, ceil_mode):
    """:func:`~refquant.ops.padding.window_plan` after :func:`~refquant.ops.padding.check_pool_windows`
    — a pure function of the input size and the attributes, so computed once per geometry (an
    invalid one raises on every call: errors are not cached)."""
    plan = window_plan("MaxPool", size, kernel, auto_pad=auto_pad, pads=pads, strides=strides,
                       dilations=dilations, ceil_mode=ceil_mode)
    check_pool_windows("MaxPool", size, kernel, plan, strides, dilations)
    return plan


def max_pool_integers(q: np.ndarray, *, kernel_shape, auto_pad="NOTSET", ceil_mode=0, dilations=None,
                      pads=None, strides=None, storage_order=0) -> np.ndarray | None:
    """ONNX MaxPool (output Y) of the 2-D integer NCHW tensor ``q``, in ``q``'s dtype; ``None``
    for other ranks (the entry's NumPy rule then runs and raises what it raises).

    Two kernels, one rule: when no window reaches the padding — no leading pad, and the last
    window ends inside the input on both axes, ``(O − 1)·s + d·(k − 1) < n`` (a trailing pad or
    ``ceil_mode`` that no window uses included) — the taps are read from ``q`` itself
    (:func:`_max_pool_inside_kernel`); otherwise the taps in the padding are skipped, row by
    row and, per output column, by its range of kernel columns inside (:func:`_max_pool_kernel`;
    1.6 → 0.9 ms on ResNet-18's ``[1, 64, 112, 112]`` 3×3/2 pad 1 pool, one thread, against
    the earlier copy of each plane into a border of the dtype's minimum)."""
    if q.ndim != 4 or q.dtype.kind not in "iu" or q.dtype.itemsize > 2:
        return None
    if kernel_shape is None or len(kernel_shape) != 2:
        return None
    size = q.shape[2:]
    plan = _window_plan(size, _key(kernel_shape), auto_pad, _key(pads), _key(strides), _key(dilations), ceil_mode)
    sh, sw = (int(s) for s in strides) if strides is not None else (1, 1)
    dh, dw = (int(d) for d in dilations) if dilations is not None else (1, 1)
    kh, kw = int(kernel_shape[0]), int(kernel_shape[1])
    top, left = int(plan.pads[0]), int(plan.pads[1])
    oh, ow = plan.out
    out = np.empty((*q.shape[:2], oh, ow), q.dtype)
    n_planes = q.shape[0] * q.shape[1]
    x = np.ascontiguousarray(q)
    with threads_for(q.size) as threads:  # refquant.kernels.grain
        chunks = max(1, min(threads, n_planes))
        if top == left == 0 and (oh - 1) * sh + dh * (kh - 1) < size[0] and (ow - 1) * sw + dw * (kw - 1) < size[1]:
            rows = np.empty((chunks, size[1]), q.dtype)
            _max_pool_inside_kernel(x.reshape(n_planes, *size), (sh, sw, dh, dw, kh, kw), rows,
                                    out.reshape(n_planes, oh, ow))
            return out
        j_lo, j_hi = _column_taps(size[1], ow, sw, dw, kw, left)
        rows = np.empty((chunks, size[1]), q.dtype)
        _max_pool_kernel(x.reshape(n_planes, *size), (sh, sw, dh, dw, top, left, kh, kw), j_lo, j_hi, rows,
                         out.reshape(n_planes, oh, ow))
    return out


@njit(parallel=True, cache=True)
def _global_sums(x, out):
    """``out[p] = Σ x[p, :]`` in int64, one (image, channel) plane per row."""
    for p in prange(x.shape[0]):
        s = np.int64(0)
        row = x[p]
        for e in range(x.shape[1]):
            s += np.int64(row[e])
        out[p] = s


def global_average_integers(q: np.ndarray, zero_point, scale) -> np.ndarray | None:
    """``float32(float32(Σ (q − z)) / count) · s`` per (image, channel), shaped ``[N, C, 1, …]``,
    or ``None`` where the int64 sum is not provably the rule's (module doc)."""
    if q.ndim < 3 or q.dtype.kind not in "iu" or q.dtype.itemsize != 1:
        return None
    count = int(np.prod(q.shape[2:]))
    if count == 0 or count >= _EXACT_COUNT:
        return None
    planes = np.ascontiguousarray(q).reshape(q.shape[0] * q.shape[1], count)
    sums = np.empty(planes.shape[0], np.int64)
    with threads_for(q.size):  # refquant.kernels.grain
        _global_sums(planes, sums)
    centred = (sums - np.int64(count) * np.int64(zero_point)).astype(np.float32)  # exact: |Σ| < 2**24
    mean = (centred.astype(np.float64) / np.float64(count)).astype(np.float32)
    y = (mean * np.float32(scale)).astype(np.float32)
    return y.reshape(q.shape[:2] + (1,) * (q.ndim - 2))
