"""The grids StatQAT quantizes onto, named by strings, and the quantizer of a grid at a scale.

A grid is a finite set of values ``G`` that contains 0; at scale ``s`` a value ``x`` goes to
the nearest point of ``s·G`` (ties to even, as everywhere in refquant). Two kinds:

* **uniform**: ``G = {kmin, …, kmax}`` (integers, ``kmin <= 0 <= kmax``); ``s`` is the step.

  - ``"int2"`` … ``"int8"``: signed, symmetric, narrow range ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
    (``[-7, 7]`` for int4) — the weight grid of refquant's plans;
  - ``"uint2"`` … ``"uint8"``: one-sided ``[0, 2^b - 1]`` (zero point 0, the grid of a
    post-ReLU activation); every negative value goes to 0.
  - :func:`uniform_grid` gives any other ``[kmin, kmax]``: the grid of an integer format with
    zero point ``z`` is ``[qmin - z, qmax - z]``.

* **float**: ``G`` = every finite value of a small float format (from
  :func:`refquant.numerics.format_values`); ``s`` multiplies the format's values. Names:
  ``"float8_e4m3fn"``, ``"float8_e5m2"``, ``"float6_e2m3fn"``, ``"float6_e3m2fn"``,
  ``"float4_e2m1fn"``. The nearest point of ``s·G`` is ``s · round_to_format(x / s)``: the
  format's round-to-nearest-even on the unbounded-exponent grid followed by saturation to
  ``±max_finite`` picks the nearest finite value.

``top`` (``max G``: ``kmax``, or ``max_finite``) times ``s`` is the clip: values beyond it are
*clipped*, the others *stepped* (see :mod:`.errormodel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refquant.numerics import FLOAT_FORMATS, FloatFormat, float_format, format_values, round_to_format

__all__ = ["Grid", "GRID_NAMES", "INT_GRIDS", "UINT_GRIDS", "FLOAT_GRIDS", "grid", "uniform_grid",
           "quantize_to_grid", "fake_quantize_float", "float_saturation_threshold"]

INT_GRIDS = tuple(f"int{b}" for b in range(2, 9))
UINT_GRIDS = tuple(f"uint{b}" for b in range(2, 9))
FLOAT_GRIDS = ("float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn")
GRID_NAMES = INT_GRIDS + UINT_GRIDS + FLOAT_GRIDS


@dataclass(frozen=True, eq=False)
class Grid:
    """A quantization grid ``G`` (sorted float64 ``levels`` containing 0) and its kind.

    ``kind`` is ``"uniform"`` (``levels = kmin..kmax``) or ``"float"`` (``fmt`` is the
    :class:`~refquant.numerics.FloatFormat`).
    """

    name: str
    kind: str
    levels: np.ndarray = field(repr=False)
    fmt: FloatFormat | None = None

    @property
    def top(self) -> float:
        """``max G``: the clip is ``top · scale``."""
        return float(self.levels[-1])

    @property
    def bottom(self) -> float:
        """``min G`` (``-top`` for the symmetric grids, 0 for ``uintN``)."""
        return float(self.levels[0])

    @property
    def kmin(self) -> int:
        return int(self.levels[0])

    @property
    def kmax(self) -> int:
        return int(self.levels[-1])

    @property
    def symmetric(self) -> bool:
        return self.bottom == -self.top

    def __eq__(self, other) -> bool:
        return isinstance(other, Grid) and self.name == other.name and np.array_equal(self.levels, other.levels)

    def __hash__(self) -> int:
        return hash((self.name, self.levels.size))

    def __str__(self) -> str:
        return self.name


def uniform_grid(kmin: int, kmax: int, name: str | None = None) -> Grid:
    """The uniform grid ``{kmin, …, kmax}`` (integers with ``kmin <= 0 <= kmax < kmin + 2**16``)."""
    if not (isinstance(kmin, (int, np.integer)) and isinstance(kmax, (int, np.integer))):
        raise TypeError(f"uniform grid: kmin and kmax must be integers, got {kmin!r} and {kmax!r}")
    kmin, kmax = int(kmin), int(kmax)
    if not kmin <= 0 <= kmax or kmin == kmax or kmax - kmin >= 2**16:
        raise ValueError(f"uniform grid: need kmin <= 0 <= kmax, kmin < kmax and at most 2**16 levels, "
                         f"got [{kmin}, {kmax}]")
    return Grid(name or f"uniform[{kmin},{kmax}]", "uniform", np.arange(kmin, kmax + 1, dtype=np.float64))


def grid(name) -> Grid:
    """The :class:`Grid` called ``name`` (one of :data:`GRID_NAMES`), or ``name`` if it is a Grid."""
    if isinstance(name, Grid):
        return name
    if not isinstance(name, str):
        raise TypeError(f"grid: expected a grid name (str) or a Grid, got {type(name).__name__}")
    if name in INT_GRIDS:
        q = 2 ** (int(name[3:]) - 1) - 1
        return uniform_grid(-q, q, name)
    if name in UINT_GRIDS:
        return uniform_grid(0, 2 ** int(name[4:]) - 1, name)
    if name in FLOAT_GRIDS:
        return Grid(name, "float", format_values(name), FLOAT_FORMATS[name])
    raise ValueError(f"unknown grid {name!r}; expected one of {', '.join(GRID_NAMES)}")


def _positive_scale(scale, what: str) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float64)
    if s.dtype.kind != "f" or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"{what}: scale must be finite and > 0, got {scale!r}")
    return s


def quantize_to_grid(x, g, scale) -> np.ndarray:
    """``Q(x)``: the nearest point of ``scale · G`` to each ``x``, in float64 (the error model's quantizer).

    Uniform: ``scale · clip(round_half_even(x / scale), kmin, kmax)``. Float:
    ``scale · round_to_format(x / scale)`` (saturating). ``x / scale`` is a float64 division;
    this is the mathematical quantizer the MSE is defined for, not a kernel's float32 path
    (which :func:`fake_quantize_float` and :func:`refquant.numerics.quantize` are).
    """
    g = grid(g)
    s = _positive_scale(scale, f"quantize onto {g}")
    x = np.asarray(x, dtype=np.float64)
    if g.kind == "uniform":
        return s * np.clip(np.rint(x / s), g.kmin, g.kmax)
    with np.errstate(over="ignore"):
        return s * round_to_format(x / s, g.fmt).astype(np.float64)


def float_saturation_threshold(fmt) -> tuple[float, bool]:
    """``(t, tie_passes)``: ``|v| < t`` rounds onto a finite value without saturating; at ``|v| = t``
    it does so only if ``tie_passes``.

    ``max_finite = 2^e (1 + m / 2^M)`` sits in the binade of step ``2^(e - M)``; the next grid
    point up is one step higher, so ``t = max_finite + 2^(e - M) / 2``. At the tie, rounding
    goes to the even mantissa: onto ``max_finite`` when its mantissa field ``m`` is even
    (E4M3FN: 448 = 1.110b·2^8, so 464 → 448), past it when odd (E2M1: 6 = 1.1b·2^2, so 7 → 8,
    which saturates).
    """
    fmt = float_format(fmt)
    e = int(np.floor(np.log2(fmt.max_finite)))
    step = 2.0 ** (e - fmt.mantissa_bits)
    mantissa = round((fmt.max_finite / 2.0**e - 1.0) * 2**fmt.mantissa_bits)
    return fmt.max_finite + step / 2, mantissa % 2 == 0


def fake_quantize_float(x: np.ndarray, fmt, scale, *, axis: int | None = None,
                        name: str = "tensor") -> tuple[np.ndarray, np.ndarray]:
    """``(y, mask)``: float-format fake quantization on the float path, float32.

    ``v = float32(x) / float32(s)`` (a float32 division, as :func:`refquant.numerics.quantize`),
    ``y = round_to_format(v, fmt) * s`` (the decoded value times the scale, one float32
    rounding), ``mask = |v|`` rounds onto the format without saturating
    (:func:`float_saturation_threshold`) — the straight-through estimator passes the gradient
    there. ``scale`` is a scalar, or one scale per index of ``axis``.
    """
    fmt = float_format(fmt)
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"{name}: float fake quantization expects float32, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: {int(np.count_nonzero(~np.isfinite(x)))} non-finite value(s) (NaN or Inf)")
    s = np.asarray(_positive_scale(scale, name), dtype=np.float32)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"{name}: scale {scale!r} is not a positive float32")
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    with np.errstate(over="ignore"):
        v = x / s
    y = (round_to_format(v, fmt, name=name) * s).astype(np.float32)
    threshold, tie_passes = float_saturation_threshold(fmt)
    a = np.abs(v)
    mask = (a < threshold) | ((a == threshold) & tie_passes)
    return y, mask
