"""Stride-phase planes: one input row written into the phase-split, zero-padded planes that the
direct (depthwise and grouped) convolution kernels sweep with unit-stride loops.

A padded plane split by stride phase holds ``padded[r, q]`` at phase ``(r mod s_h)·s_w +
(q mod s_w)``, row ``r div s_h``, column ``q div s_w`` (``fast._depthwise_kernel``,
``refquant.ops.dot._conv_direct_kernel``). Input pixel ``(iy, ix)`` sits at padded ``(top + iy,
left + ix)``.

Numba's on-disk cache keys a cached kernel by its own file only: after editing this module,
clear the callers' caches (``refquant/kernels/__pycache__/fast.*``,
``refquant/ops/__pycache__/dot.*``), or they keep the old ``split_row`` compiled in.
"""

from __future__ import annotations

from numba import njit

__all__ = ["split_row"]


@njit(cache=True)
def split_row(src, zero, flat, base, plane, left, sw):
    """``flat[base + ((left + ix) mod s_w)·plane + (left + ix) div s_w] = src[ix] - zero`` for
    every ``ix``: one input row into its phase planes. ``flat`` is the planes flattened (phase
    planes of ``plane`` values each), ``base`` the index of the row's first phase plane's row,
    ``(r mod s_h)·s_w·plane + (r div s_h)·W_q`` for padded row ``r``. The subtraction is in the
    type ``src - zero`` promotes to (the integer kernels centre by ``z_x``; the float kernel
    passes ``0.0``, which changes no value, ``-0.0`` and NaN included). Stride 2 writes even and
    odd columns in one pass over the row (an interleaved load); every loop writes from index 0
    of a view, which lets LLVM vectorise it."""
    width = src.shape[0]
    if sw == 1:
        dst = flat[base + left:]
        for ix in range(width):
            dst[ix] = src[ix] - zero
    elif sw == 2:
        ev = flat[base + (left % 2) * plane + left // 2:]
        od = flat[base + ((left + 1) % 2) * plane + (left + 1) // 2:]
        for u in range(width // 2):
            ev[u] = src[2 * u] - zero
            od[u] = src[2 * u + 1] - zero
        if width % 2:
            ev[width // 2] = src[width - 1] - zero
    else:
        for pc in range(sw):  # the input columns of phase pc: ix0, ix0 + s_w, ...
            ix0 = (pc - left) % sw
            dst = flat[base + pc * plane + (left + ix0) // sw:]
            for u in range((width - ix0 + sw - 1) // sw):
                dst[u] = src[ix0 + u * sw] - zero
