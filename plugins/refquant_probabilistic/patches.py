"""Patch moments of a layer's input: ``S1_p = Σ_i x_{p,i}`` and ``S2_p = Σ_i x_{p,i}²`` over sampled patches.

A Conv output position ``p = (oh, ow)`` reads the patch of input values ``x_{p,i}`` under its
window (input channels of its group × kh × kw taps, with the layer's stride, padding and
dilation; padded taps are 0). The surrogate needs, per image ``n`` and group ``g``, three
statistics of the patch sums over a subsample ``P_γ`` of output positions::

    T1 = Σ_{p∈P_γ} S1_p          Q1 = Σ_{p∈P_γ} S1_p²          T2 = Σ_{p∈P_γ} S2_p

**The sample** ``P_γ``: rows ``r0, r0 + γ, r0 + 2γ, …`` (all ``< OH``) with
``r0 = ((OH − 1) mod γ) // 2`` — every γ-th output row, the leftover split evenly between the
two borders, so that a large γ does not always land on the padded first row — and the same
rule for columns. ``γ = 1`` is every patch. ``|P_γ| = ⌈(OH − r0)/γ⌉ · ⌈(OW − c0)/γ⌉``.

**No im2col.** ``S1`` and ``S2`` are a sum-pool — a box filter with the layer's kernel size,
stride·γ, padding and dilation — of the channel sums ``Σ_c x`` and ``Σ_c x²`` (per group).
:func:`patch_sums_reference` writes exactly that in NumPy (channel sums of the whole image,
then a strided window sum). :func:`patch_sums` does the same in one Numba pass over the input
without any buffer the size of the input: it channel-sums only the input rows and columns
that some sampled window touches, one row at a time, into a ring of ``(kh − 1)·dh + 1`` rows
(the rows one window spans), and box-sums the windows from the ring. Its cost is
``C_in · (rows touched) · (columns touched) + |P_γ| · G · kh · kw`` additions: once
``γ·stride ≥ (kh − 1)·dh + 1`` the windows no longer overlap and the first term falls as
``1/γ²`` too (for smaller γ every input pixel is touched once). When the sampled windows are
few and far apart, summing each sampled patch straight from the input
(``|P_γ| · C_in · kh · kw`` additions) is cheaper; a small cost model picks the loop (both
give the same integers).

**Integers in, integers out.** The layer's input arrives quantized; the patch moments are
taken of the centred integers ``x̃ = x_q − z_x`` (padding contributes ``x̃ = 0``, i.e. real 0)
and every sum is an exact integer: int64 for the patch sums and their totals (the bound is
checked before the call), int32 for the channel sums of one input row when they provably fit.
The real moments are ``s_x·S1`` and ``s_x²·S2`` — the scale enters once, later
(:mod:`.surrogate`). A float input (calibration) runs the same code with float64 sums.

A Gemm/MatMul input ``[N, K]`` is the same thing with a 1×1 window on a 1×1 image of K
channels: one patch per image, ``S1 = Σ_k x_k``, ``S2 = Σ_k x_k²`` — plain row sums, which a
third loop (:func:`_row_sums_kernel`) computes with int32 accumulators where they fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from refquant.kernels import ConvGeometry, conv_geometry

__all__ = ["PatchSums", "PatchGrid", "sample_positions", "patch_grid", "patch_sums", "fill_patch_sums",
           "patch_sums_reference", "patch_sums_scratch_bytes", "as_nchw"]


@dataclass(frozen=True)
class PatchGrid:
    """A layer's window geometry and the sampled output rows and columns."""

    geometry: ConvGeometry
    rows: np.ndarray  # int64, sampled output rows
    cols: np.ndarray  # int64, sampled output columns
    used_cols: np.ndarray  # int64, the input columns the ring path channel-sums
    direct: bool  # True: sum each sampled patch straight from the input (cheaper than the ring here)

    @property
    def single(self) -> bool:
        """One 1×1 patch per image and one group (a Gemm/MatMul, or a 1×1 Conv on 1×1 images):
        the patch sums are plain row sums of ``[N, C_in]``."""
        g = self.geometry
        return (g.kh == g.kw == 1 and g.h == g.w == 1 and g.oh == g.ow == 1 and g.group == 1
                and g.pads[0] == g.pads[1] == 0)  # the one window reads the one pixel

    @property
    def count(self) -> int:
        """``|P_γ|``: patches per image."""
        return int(self.rows.size * self.cols.size)

    @property
    def ring_rows(self) -> int:
        """Input rows one window spans: ``(kh − 1)·dh + 1``."""
        return (self.geometry.kh - 1) * self.geometry.dilations[0] + 1


@dataclass(frozen=True)
class PatchSums:
    """``T1``, ``Q1``, ``T2`` per image and group (``[N, G]``) over ``count`` patches, in input units.

    int64 for an integer input (exact), float64 for a float input.
    """

    t1: np.ndarray
    q1: np.ndarray
    t2: np.ndarray
    count: int
    q1_bound: int = 2**62  # an upper bound of every Q1 (exact integers: count · (K · max|x̃|)²)


def sample_positions(size: int, gamma: int) -> np.ndarray:
    """Every ``gamma``-th position of ``0 … size − 1``, starting at ``((size − 1) mod γ) // 2``."""
    if size < 1 or gamma < 1:
        raise ValueError(f"sample_positions: size and gamma must be >= 1, got {size} and {gamma}")
    start = ((size - 1) % gamma) // 2
    return np.arange(start, size, gamma, dtype=np.int64)


def as_nchw(x: np.ndarray) -> np.ndarray:
    """A Conv input as it is; a Gemm/MatMul input ``[N, K]`` as the view ``[N, K, 1, 1]``."""
    if x.ndim == 4:
        return x
    return x.reshape(x.shape[0], -1, 1, 1)


def patch_grid(x_shape, w_shape, attributes: dict, gamma: int, layer: str) -> PatchGrid:
    """The geometry of the layer's windows on an input of ``x_shape`` and the sample ``P_γ``.

    ``x_shape`` is NCHW (Conv) or ``[N, K]`` (Gemm/MatMul, a 1×1 window); ``w_shape`` OIHW or
    ``[N_out, K]``; ``attributes`` the Conv's (strides, pads, dilations, group, auto_pad).
    Cached: a layer asks for the same grid at every run.
    """
    key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in attributes.items()
                       if k in ("strides", "pads", "dilations", "group", "auto_pad")))
    return _patch_grid(tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape), key, int(gamma), layer)


@lru_cache(maxsize=256)
def _patch_grid(x_shape: tuple, w_shape: tuple, attributes: tuple, gamma: int, layer: str) -> PatchGrid:
    a = dict(attributes)
    if len(w_shape) == 4:
        if len(x_shape) != 4:
            raise ValueError(f"layer {layer!r}: a Conv input must be NCHW, got shape {x_shape}")
        geometry = conv_geometry(x_shape, w_shape, strides=a.get("strides"), pads=a.get("pads"),
                                 dilations=a.get("dilations"), group=a.get("group", 1),
                                 auto_pad=a.get("auto_pad", "NOTSET"), name=f"layer {layer!r}")
    elif len(w_shape) == 2:
        k = int(np.prod(x_shape[1:], dtype=np.int64)) if len(x_shape) > 1 else 0
        if len(x_shape) < 2 or k != w_shape[1]:
            raise ValueError(f"layer {layer!r}: input of shape {x_shape} does not match a weight [N, K] of "
                             f"shape {w_shape} (K = {w_shape[1]})")
        geometry = conv_geometry((x_shape[0], k, 1, 1), (w_shape[0], k, 1, 1), name=f"layer {layer!r}")
    else:
        raise ValueError(f"layer {layer!r}: weight must be OIHW or [N, K], got shape {w_shape}")
    g = geometry
    rows, cols = sample_positions(g.oh, gamma), sample_positions(g.ow, gamma)
    used_rows, used = _touched(rows, g.strides[0], g.pads[0], g.kh, g.dilations[0], g.h), \
        _touched(cols, g.strides[1], g.pads[1], g.kw, g.dilations[1], g.w)
    contiguous = 2 * used.size >= g.w  # then a pass over every column beats a gather
    if contiguous:
        used = np.arange(g.w, dtype=np.int64)
    # Which loop is faster: a cost model in "contiguous additions" (strided or gathered reads
    # count twice; +8 and +16 per short loop). Its constants were measured on one machine;
    # both loops give the same integers, so the choice only affects speed.
    per_row = g.c_in * ((1 if contiguous else 2) * used.size + 8) + g.group * (g.w + 16)
    ring_cost = used_rows.size * per_row + 2 * rows.size * cols.size * g.group * g.kh * g.kw
    direct_cost = 2 * rows.size * cols.size * g.c_in * g.kh * g.kw
    for array in (rows, cols, used):
        array.setflags(write=False)
    return PatchGrid(geometry, rows, cols, used, direct_cost <= ring_cost)


def _touched(outputs: np.ndarray, stride: int, pad: int, k: int, dilation: int, size: int) -> np.ndarray:
    """The input positions (sorted, int64) read by the windows at ``outputs`` along one axis."""
    taps = (outputs[:, None] * stride - pad + np.arange(k)[None, :] * dilation).ravel()
    return np.unique(taps[(taps >= 0) & (taps < size)]).astype(np.int64)


def _centred_dtype(x: np.ndarray, layer: str):
    if x.dtype.kind in "iu":
        if x.dtype.itemsize > 2:
            raise TypeError(f"layer {layer!r}: quantized input must be an 8- or 16-bit integer tensor, "
                            f"got dtype {x.dtype}")
        return np.int64
    if x.dtype.kind == "f":
        return np.float64
    raise TypeError(f"layer {layer!r}: input must be a real tensor, got dtype {x.dtype}")


@lru_cache(maxsize=1024)
def _integer_plan(dtype: str, zero_point: int, count: int, k: int, cin_per_group: int) -> tuple[int, type]:
    """For an integer input: ``(bound, ring dtype)``. ``bound = count · (K · max|x̃|)²`` is the
    largest ``Q1`` the input's dtype allows (int64 sums are exact while it stays below 2**63);
    the rings hold int32 when ``(C_in/G) · max|x̃|² < 2**31`` (every 8-bit input below 33 025
    channels per group: twice the SIMD lanes of int64), else int64. Cached: a layer asks the
    same at every call."""
    info = np.iinfo(np.dtype(dtype))
    m = max(abs(int(info.min) - zero_point), abs(int(info.max) - zero_point))
    return count * (k * m) ** 2, (np.int32 if cin_per_group * m * m < 2**31 else np.int64)


def patch_sums_reference(x: np.ndarray, zero_point, grid: PatchGrid, layer: str = "layer") -> PatchSums:
    """``T1, Q1, T2`` by the definition: channel sums, zero padding, strided window sums (NumPy)."""
    x = as_nchw(np.asarray(x))
    g = grid.geometry
    xc = x.astype(_centred_dtype(x, layer)) - zero_point
    n, c, h, w = xc.shape
    c1 = xc.reshape(n, g.group, c // g.group, h, w).sum(axis=2)
    c2 = (xc * xc).reshape(n, g.group, c // g.group, h, w).sum(axis=2)
    top, left, bottom, right = g.pads
    span_h, span_w = (g.kh - 1) * g.dilations[0] + 1, (g.kw - 1) * g.dilations[1] + 1
    rows, cols = grid.rows * g.strides[0], grid.cols * g.strides[1]  # window origins, padded coordinates

    def pooled(cs):
        padded = np.pad(cs, ((0, 0), (0, 0), (top, bottom), (left, right)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
        taps = windows[..., :: g.dilations[0], :: g.dilations[1]]
        return taps[:, :, rows][:, :, :, cols].sum(axis=(-2, -1))  # [N, G, rows, cols]

    s1, s2 = pooled(c1), pooled(c2)
    return PatchSums(s1.sum(axis=(2, 3)), (s1 * s1).sum(axis=(2, 3)), s2.sum(axis=(2, 3)), grid.count)


@njit(cache=True)
def _patch_sums_kernel(x, zero_point, group, kh, kw, sh, sw, dh, dw, pad_top, pad_left, rows, cols,
                       used_cols, direct, ring1, ring2, ring_row, out):
    """Fill ``out[n, g] = (T1, Q1, T2)``. Scratch: the rings ``[S, G, W]`` of channel-summed input
    rows and ``ring_row [S]`` (which input row each slot holds).
    ``used_cols`` lists the input columns to channel-sum (all ``W`` of them: one contiguous
    loop). ``direct``: sum each sampled patch straight from ``x`` instead (no ring; fewer
    additions when the sampled windows are few and far apart — the sums are the same
    integers). Accumulators have the dtype of ``out`` (int64 for integers: exact). Plain
    index loops only: array views inside the loops would cost a reference count each."""
    n_img, c_in, h, w = x.shape
    c_group = c_in // group
    slots = ring_row.shape[0]
    n_used = used_cols.shape[0]
    every_column = n_used == w
    for n in range(n_img):
        for s in range(slots):
            ring_row[s] = -1
        for g in range(group):
            for k in range(3):
                out[n, g, k] = 0
        if direct:
            for a in range(rows.shape[0]):
                top = rows[a] * sh - pad_top
                for b in range(cols.shape[0]):
                    left = cols[b] * sw - pad_left
                    for g in range(group):
                        s1 = out[n, g, 0] - out[n, g, 0]  # a zero of the accumulator's type
                        s2 = s1
                        for i in range(kh):
                            ih = top + i * dh
                            if ih < 0 or ih >= h:
                                continue
                            for j in range(kw):
                                iw = left + j * dw
                                if iw < 0 or iw >= w:
                                    continue
                                for c in range(g * c_group, (g + 1) * c_group):
                                    v = x[n, c, ih, iw] - zero_point
                                    s1 += v
                                    s2 += v * v
                        out[n, g, 0] += s1
                        out[n, g, 1] += s1 * s1
                        out[n, g, 2] += s2
            continue
        for a in range(rows.shape[0]):
            top = rows[a] * sh - pad_top
            for i in range(kh):  # channel sums of the input rows this window row reads
                ih = top + i * dh
                if ih < 0 or ih >= h or ring_row[ih % slots] == ih:
                    continue  # a padded row (x̃ = 0), or already in the ring
                slot = ih % slots
                ring_row[slot] = ih
                for g in range(group):
                    for iw in range(w):
                        ring1[slot, g, iw] = 0
                        ring2[slot, g, iw] = 0
                    for c in range(g * c_group, (g + 1) * c_group):
                        if every_column:
                            for iw in range(w):
                                v = x[n, c, ih, iw] - zero_point
                                ring1[slot, g, iw] += v
                                ring2[slot, g, iw] += v * v
                        else:
                            for u in range(n_used):
                                iw = used_cols[u]
                                v = x[n, c, ih, iw] - zero_point
                                ring1[slot, g, iw] += v
                                ring2[slot, g, iw] += v * v
            for b in range(cols.shape[0]):  # box sums of the sampled windows
                left = cols[b] * sw - pad_left
                for g in range(group):
                    s1 = out[n, g, 0] - out[n, g, 0]  # a zero of the accumulator's type
                    s2 = s1
                    for i in range(kh):
                        ih = top + i * dh
                        if ih < 0 or ih >= h:
                            continue
                        slot = ih % slots
                        for j in range(kw):
                            iw = left + j * dw
                            if 0 <= iw < w:
                                s1 += ring1[slot, g, iw]
                                s2 += ring2[slot, g, iw]
                    out[n, g, 0] += s1
                    out[n, g, 1] += s1 * s1
                    out[n, g, 2] += s2


@njit(cache=True)
def _row_sums_kernel(x, zero_point, out):
    """``out[n, 0] = (T1, Q1, T2)`` for one 1×1 patch per image: ``x`` is ``[N, K]`` (a Gemm input,
    or a Conv on 1×1 images with one group). The sums of one row run in the type of
    ``zero_point`` (int32 when ``K · max|x̃|² < 2**31``: twice the SIMD lanes of int64), then
    widen to ``out``'s type. Same integers as the general kernel, ≈ 5× faster on [599, 64]."""
    n_img, k = x.shape
    for n in range(n_img):
        s1 = zero_point - zero_point
        s2 = s1
        for c in range(k):
            v = x[n, c] - zero_point
            s1 += v
            s2 += v * v
        out[n, 0, 0] = 0
        total = out[n, 0, 0] + s1  # in out's type before squaring
        out[n, 0, 0] = total
        out[n, 0, 1] = total * total
        out[n, 0, 2] = s2


def _scratch(grid: PatchGrid, dtype, ring_dtype) -> dict:
    """Every array :func:`patch_sums` allocates: ``{name: (shape, dtype)}`` (no ring on the direct path)."""
    g = grid.geometry
    slots, width = (0, 0) if grid.direct else (grid.ring_rows, g.w)
    return {"ring1": ((slots, g.group, width), ring_dtype), "ring2": ((slots, g.group, width), ring_dtype),
            "ring_row": ((slots,), np.int64), "out": ((g.n, g.group, 3), dtype)}


def fill_patch_sums(x: np.ndarray, z, grid: PatchGrid, scratch: dict) -> np.ndarray:
    """Run the loop ``grid`` calls for (row sums, direct or ring) on the C-contiguous NCHW ``x``
    with the zero point ``z`` already in the accumulators' type; ``scratch`` holds the arrays of
    :func:`_scratch`. Returns ``scratch["out"]``, ``[N, G, 3]`` = ``(T1, Q1, T2)``."""
    g, out = grid.geometry, scratch["out"]
    if grid.single:
        _row_sums_kernel(x.reshape(g.n, g.c_in), z, out)
    else:
        _patch_sums_kernel(x, z, g.group, g.kh, g.kw, g.strides[0], g.strides[1], g.dilations[0], g.dilations[1],
                           g.pads[0], g.pads[1], grid.rows, grid.cols, grid.used_cols, grid.direct,
                           scratch["ring1"], scratch["ring2"], scratch["ring_row"], out)
    return out


def patch_sums_scratch_bytes(grid: PatchGrid) -> int:
    """Bytes :func:`patch_sums` allocates for an 8-bit input: ``24·N·G`` for the results, plus on
    the ring path ``8·S·G·W + 8·S`` (int32 rings; ``16·S·G·W + 8·S`` with int64 rings) with
    ``S = (kh − 1)·dh + 1`` ring rows, ``W`` the input width, ``G`` groups, ``N`` images —
    O(window rows × width), nothing of the output's size."""
    g = grid.geometry
    ring = _integer_plan(np.dtype(np.uint8).str, 0, grid.count, g.k, g.cin_per_group)[1]
    return sum(int(np.prod(shape)) * np.dtype(dt).itemsize
               for shape, dt in _scratch(grid, np.int64, ring).values())


def patch_sums(x: np.ndarray, zero_point, grid: PatchGrid, layer: str = "layer") -> PatchSums:
    """``T1, Q1, T2`` of the centred input ``x − zero_point`` over the sample of ``grid`` (Numba).

    Equal to :func:`patch_sums_reference` exactly for integer inputs (int64 sums).
    """
    x = as_nchw(np.asarray(x))
    acc = _centred_dtype(x, layer)
    g = grid.geometry
    if x.shape != (g.n, g.c_in, g.h, g.w):
        raise ValueError(f"layer {layer!r}: input shape {x.shape} differs from the grid's "
                         f"{(g.n, g.c_in, g.h, g.w)}")
    integer = acc is np.int64
    if integer:
        bound, ring = _integer_plan(x.dtype.str, int(zero_point), grid.count, g.k, g.cin_per_group)
        if bound >= 2**63:
            raise ValueError(f"layer {layer!r}: patch moments of {grid.count} patches of fan-in "
                             f"{g.k} could overflow int64; raise gamma")
    else:
        bound, ring = 0, np.float64
    arrays = {k: np.empty(shape, dt) for k, (shape, dt) in _scratch(grid, acc, ring).items()}
    z = ring(zero_point) if integer else np.float64(zero_point)  # x̃ = x − z then has the ring's type
    out = fill_patch_sums(np.ascontiguousarray(x), z, grid, arrays)
    return PatchSums(out[:, :, 0], out[:, :, 1], out[:, :, 2], grid.count, bound)
