"""Quantization parameters: scale, zero point, format, granularity.

A uniform quantizer maps a real value ``x`` to an integer ``q`` on the grid of an
:class:`~refquant.numerics.intformats.IntFormat`::

    q = saturate(round_half_even(x / scale) + zero_point)        x ≈ (q - zero_point) * scale

``QParams`` holds the scale(s) as float32 and zero point(s) as int32, with the granularity:
per tensor (``axis=None``), per axis (``axis=k``: one scale per index along axis k), or
blocked (``axis=k, block_size=B``: one scale per B consecutive elements along axis k, as
ONNX QuantizeLinear-21 defines it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .intformats import IntFormat, int_format

__all__ = ["QParams", "qparams_from_range", "tensor_range", "expand_along_axis"]


def _as_float32_scale(scale, what: str) -> np.ndarray:
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"{what}: scale must be a real number or array, got dtype {s.dtype}")
    s = s.astype(np.float32)
    if s.size == 0:
        raise ValueError(f"{what}: scale is empty")
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        bad = s[~(np.isfinite(s) & (s > 0))].reshape(-1)[0]
        raise ValueError(f"{what}: scale must be finite and > 0, got {bad!r}")
    return s


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale(s), zero point(s), integer format and granularity of a quantized tensor.

    ``scale`` is stored as float32 (any real input is rounded to float32 once, here), and
    ``zero_point`` as int32; both are 0-d for per-tensor quantization and 1-D otherwise.
    Construction validates: scale finite and > 0, zero point an integer inside
    ``[fmt.qmin, fmt.qmax]``, shapes consistent with ``axis`` / ``block_size``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    fmt: IntFormat
    axis: int | None = None
    block_size: int = 0
    name: str = "tensor"

    def __post_init__(self):
        what = f"qparams of {self.name!r}"
        fmt = int_format(self.fmt)
        s = _as_float32_scale(self.scale, what)
        zp = np.asarray(self.zero_point)
        if zp.dtype.kind == "f":
            if not np.all(np.isfinite(zp)) or not np.all(zp == np.round(zp)):
                raise ValueError(f"{what}: zero point must be an integer, got {zp.reshape(-1)[:4]}")
        elif zp.dtype.kind not in "iub":
            raise TypeError(f"{what}: zero point must be an integer, got dtype {zp.dtype}")
        zp = np.broadcast_to(zp, s.shape) if zp.ndim == 0 else zp
        if zp.size and (zp.min() < fmt.qmin or zp.max() > fmt.qmax):
            raise ValueError(
                f"{what}: zero point {zp.reshape(-1)[np.argmax((zp < fmt.qmin) | (zp > fmt.qmax))]} "
                f"outside the {fmt} range [{fmt.qmin}, {fmt.qmax}]"
            )
        if zp.shape != s.shape:
            raise ValueError(f"{what}: zero point shape {zp.shape} differs from scale shape {s.shape}")
        if self.axis is None:
            if s.ndim != 0 and s.size != 1:
                raise ValueError(f"{what}: per-tensor qparams need a scalar scale, got shape {s.shape}")
            s, zp = s.reshape(()), zp.reshape(())
        elif s.ndim > 1 and self.block_size == 0:
            raise ValueError(f"{what}: per-axis scale must be 1-D, got shape {s.shape}")
        if self.block_size < 0:
            raise ValueError(f"{what}: block_size must be >= 0, got {self.block_size}")
        object.__setattr__(self, "fmt", fmt)
        object.__setattr__(self, "scale", s.copy())
        object.__setattr__(self, "zero_point", zp.astype(np.int32))

    @classmethod
    def from_checked(cls, scale: np.ndarray, zero_point: np.ndarray, fmt: IntFormat, *,
                     axis: int | None = None, name: str = "tensor") -> "QParams":
        """QParams without the constructor's checks, for a hot path that already made them.

        The caller guarantees what ``__post_init__`` would verify: ``scale`` a float32 array
        (0-d per tensor, 1-D per axis), finite and > 0; ``zero_point`` an int32 array of the
        same shape inside ``[fmt.qmin, fmt.qmax]``; ``fmt`` an :class:`IntFormat`. The arrays
        are kept, not copied. Used by the probabilistic estimate, whose compiled kernel
        applies :func:`qparams_from_range`'s formulas and checks once per layer and batch
        (validation would cost more than the estimate).
        """
        self = object.__new__(cls)
        self.__dict__.update(scale=scale, zero_point=zero_point, fmt=fmt, axis=axis, block_size=0, name=name)
        return self

    @property
    def per_tensor(self) -> bool:
        return self.axis is None

    def broadcast_to(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point broadcast against a tensor of ``shape``."""
        if self.axis is None:
            return self.scale, self.zero_point
        return (
            expand_along_axis(self.scale, shape, self.axis, self.block_size, self.name),
            expand_along_axis(self.zero_point, shape, self.axis, self.block_size, self.name),
        )

    def to_dict(self) -> dict:
        """JSON-ready form (scales as exact float32 values written as Python floats)."""
        return {
            "scale": self.scale.tolist(),
            "zero_point": self.zero_point.tolist(),
            "format": self.fmt.name,
            "axis": self.axis,
            "block_size": self.block_size,
        }

    @classmethod
    def from_dict(cls, d: dict, name: str = "tensor") -> "QParams":
        fmt_name = d["format"]
        narrow = fmt_name.endswith("-narrow")
        fmt = int_format(fmt_name.removesuffix("-narrow"), narrow=narrow)
        return cls(
            np.asarray(d["scale"], dtype=np.float32),
            np.asarray(d["zero_point"], dtype=np.int32),
            fmt,
            d.get("axis"),
            d.get("block_size", 0),
            name,
        )

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, QParams)
            and self.fmt == other.fmt
            and self.axis == other.axis
            and self.block_size == other.block_size
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def __repr__(self) -> str:
        g = "per-tensor" if self.axis is None else f"axis={self.axis}"
        if self.block_size:
            g += f", block={self.block_size}"
        if self.scale.ndim == 0:
            return f"QParams({self.fmt}, scale={float(self.scale):.6g}, zp={int(self.zero_point)})"
        return f"QParams({self.fmt}, {g}, {self.scale.size} scales)"


def expand_along_axis(values, shape, axis: int, block_size: int = 0, name: str = "tensor"):
    """Broadcast per-axis (or blocked) ``values`` against a tensor of ``shape``.

    Per axis: ``values`` has ``shape[axis]`` entries. Blocked (ONNX QuantizeLinear-21):
    ``values`` has the tensor's shape except ``ceil(shape[axis] / block_size)`` along ``axis``;
    each entry is repeated ``block_size`` times and the last block is cut to fit.
    """
    shape = tuple(shape)
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ValueError(f"{name}: axis {axis} out of range for a tensor of rank {nd}")
    axis %= nd
    v = np.asarray(values)
    if block_size:
        nblocks = -(-shape[axis] // block_size)
        want = shape[:axis] + (nblocks,) + shape[axis + 1 :]
        if v.shape != want:
            raise ValueError(
                f"{name}: blocked scale/zero point must have shape {want} for block_size "
                f"{block_size}, got {v.shape}"
            )
        return np.repeat(v, block_size, axis=axis).take(range(shape[axis]), axis=axis)
    if v.ndim != 1 or v.shape[0] != shape[axis]:
        raise ValueError(
            f"{name}: per-axis scale/zero point must have {shape[axis]} entries "
            f"(dimension {axis} of shape {shape}), got shape {v.shape}"
        )
    return v.reshape([-1 if i == axis else 1 for i in range(nd)])


def tensor_range(x, *, axis: int | None = None, name: str = "tensor") -> tuple[np.ndarray, np.ndarray]:
    """``(min, max)`` of ``x`` over everything, or per index along ``axis``.

    NaN or ±Inf anywhere raises ``ValueError`` naming the tensor. An empty tensor (or an
    empty slice) has the range ``[0, 0]``: the range a quantizer uses always contains 0, and
    the empty set contributes nothing beyond it.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real-valued tensor, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        n_bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name}: {n_bad} non-finite value(s) (NaN or Inf); cannot choose a range")
    if axis is None:
        if x.size == 0:
            return np.float32(0), np.float32(0)
        return np.float32(x.min()), np.float32(x.max())
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    if moved.shape[1] == 0:
        z = np.zeros(moved.shape[0], np.float32)
        return z, z.copy()
    return moved.min(axis=1).astype(np.float32), moved.max(axis=1).astype(np.float32)


def qparams_from_range(
    lo,
    hi,
    fmt="uint8",
    *,
    symmetric: bool = False,
    axis: int | None = None,
    name: str = "tensor",
) -> QParams:
    """Scale and zero point that map the real range ``[lo, hi]`` onto ``fmt``'s grid.

    Asymmetric (the ONNX DynamicQuantizeLinear rule, computed in float32)::

        lo' = min(lo, 0),  hi' = max(hi, 0)                  # 0 must be exactly representable
        scale = (hi' - lo') / (qmax - qmin)                  # float32 subtraction and division
        zero_point = round_half_even(clamp(qmin - lo' / scale, qmin, qmax))

    Symmetric (zero point at the grid's centre; divisor ``2**(b-1) - 1`` = 127 for 8 bits, as
    ONNX Runtime and TFLite use — not PyTorch's 255/2 = 127.5)::

        scale = max(|lo|, |hi|) / (2**(b-1) - 1)
        zero_point = 0 (signed) or 2**(b-1) (unsigned)

    A narrow-range signed format ``[-127, 127]`` makes the symmetric grid exactly symmetric.
    A degenerate range ``lo' == hi'`` (only possible as ``[0, 0]``) gets ``scale = 1``, as
    ONNX Runtime's DynamicQuantizeLinear does, with the zero point from the same formula.

    A span beyond float32 (e.g. ``[-3e38, 3e38]``: ``hi' - lo'`` rounds to inf in float32)
    raises ``ValueError`` saying the scale *overflows*; onnxruntime's DynamicQuantizeLinear
    returns ``scale = inf`` and an all-zero output there, which no later step can use. A
    scale that rounds to 0 raises saying it *underflows*.
    """
    fmt = int_format(fmt)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"{name}: range bounds must be finite, got [{lo}, {hi}]")
    if np.any(lo > hi):
        raise ValueError(f"{name}: range lower bound exceeds upper bound: [{lo}, {hi}]")
    lo32 = np.minimum(lo, 0).astype(np.float32)
    hi32 = np.maximum(hi, 0).astype(np.float32)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        scale, zp = _scale_and_zero_point(lo32, hi32, fmt, symmetric)
    if np.any(~np.isfinite(scale)):
        raise ValueError(f"{name}: range [{lo}, {hi}] gives a scale that overflows float32 (the span "
                         f"hi - lo exceeds float32's largest value {float(np.finfo(np.float32).max):.6g}); "
                         f"refquant refuses it where onnxruntime returns scale inf and all-zero outputs")
    if np.any(scale <= 0):
        raise ValueError(f"{name}: range [{lo}, {hi}] gives a scale that underflows float32 to 0")
    return QParams(scale, zp, fmt, axis=axis, name=name)


def _scale_and_zero_point(lo32, hi32, fmt, symmetric: bool):
    """The formulas of :func:`qparams_from_range` on float32 bounds that already include 0."""
    if symmetric:
        half = np.float32(2 ** (fmt.bits - 1) - 1)
        amax = np.maximum(np.abs(lo32), np.abs(hi32))
        degenerate = amax == 0
        scale = np.where(degenerate, np.float32(1), amax / half).astype(np.float32)
        zp = np.full(scale.shape, 0 if fmt.signed else 2 ** (fmt.bits - 1), np.int32)
    else:
        span = (hi32 - lo32).astype(np.float32)
        degenerate = span == 0
        scale = np.where(degenerate, np.float32(1), span / np.float32(fmt.qmax - fmt.qmin))
        scale = scale.astype(np.float32)
        initial = (np.float32(fmt.qmin) - lo32 / scale).astype(np.float32)
        zp = np.rint(np.clip(np.nan_to_num(initial), fmt.qmin, fmt.qmax)).astype(np.int32)
    return scale, zp
