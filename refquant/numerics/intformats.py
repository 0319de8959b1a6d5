"""Integer storage formats: n-bit signed and unsigned grids, and 4-bit packing.

An integer format is a grid of consecutive integers ``[qmin, qmax]``:

* signed n-bit:   ``[-2**(n-1), 2**(n-1) - 1]``, or ``[-(2**(n-1) - 1), 2**(n-1) - 1]`` in
  *narrow range* (symmetric about zero, as TFLite and ONNX Runtime use for symmetric weights);
* unsigned n-bit: ``[0, 2**n - 1]`` (narrow range drops 0: ``[1, 2**n - 1]``).

Values are stored in the smallest NumPy integer type that holds the grid (int8/uint8 up to
8 bits, int16/uint16 up to 16). Sub-byte values are stored one per element; ``pack_nibbles``
packs 4-bit values two per byte in ONNX's order (element ``2i`` in the low nibble).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["IntFormat", "int_format", "pack_nibbles", "unpack_nibbles", "INT_FORMAT_NAMES"]

INT_FORMAT_NAMES = ("int8", "uint8", "int16", "uint16", "int4", "uint4")
_NAME = re.compile(r"^(u?)int(\d+)$")


@dataclass(frozen=True)
class IntFormat:
    """An n-bit integer grid ``[qmin, qmax]`` (2 ≤ bits ≤ 16)."""

    bits: int
    signed: bool
    narrow: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or not 2 <= int(self.bits) <= 16:
            raise ValueError(f"integer format: bits must be an integer in 2..16, got {self.bits!r}")

    @property
    def name(self) -> str:
        base = f"{'' if self.signed else 'u'}int{self.bits}"
        return base + ("-narrow" if self.narrow else "")

    @property
    def qmin(self) -> int:
        if self.signed:
            return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)
        return 1 if self.narrow else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def levels(self) -> int:
        """Number of grid points, ``qmax - qmin + 1``."""
        return self.qmax - self.qmin + 1

    @property
    def storage_dtype(self) -> np.dtype:
        """Smallest NumPy integer dtype holding the full (not narrow) grid."""
        if self.bits <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        return np.dtype(np.int16 if self.signed else np.uint16)

    def __str__(self) -> str:  # used in error messages and tables
        return self.name


def int_format(spec, *, narrow: bool = False) -> IntFormat:
    """Parse ``spec`` into an :class:`IntFormat`.

    ``spec`` may be an ``IntFormat`` (returned as is), a name ``"int8"``, ``"uint4"``,
    ``"int5"`` (any 2..16), or a NumPy integer dtype of 8 or 16 bits.
    """
    if isinstance(spec, IntFormat):
        return spec
    if isinstance(spec, str):
        m = _NAME.match(spec.strip().lower())
        if not m:
            raise ValueError(
                f"unknown integer format {spec!r}: expected 'intN' or 'uintN' with N in 2..16"
            )
        return IntFormat(int(m.group(2)), signed=m.group(1) == "", narrow=narrow)
    try:
        dt = np.dtype(spec)
    except TypeError:
        raise TypeError(f"integer format: expected a name, IntFormat or dtype, got {spec!r}") from None
    if dt.kind not in "iu" or dt.itemsize > 2:
        raise ValueError(f"integer format: dtype {dt} is not an 8- or 16-bit integer type")
    return IntFormat(dt.itemsize * 8, signed=dt.kind == "i", narrow=narrow)


def pack_nibbles(values, fmt) -> np.ndarray:
    """Pack 4-bit values two per byte: ``byte[i] = (v[2i] & 0xF) | (v[2i+1] & 0xF) << 4``.

    ``values`` is flattened; an odd count is padded with a zero nibble (ONNX's rule for int4
    tensors). Values outside ``fmt``'s grid raise ``ValueError``. Returns uint8.
    """
    fmt = int_format(fmt)
    if fmt.bits != 4:
        raise ValueError(f"pack_nibbles: format must be 4-bit, got {fmt}")
    v = np.asarray(values).reshape(-1)
    if v.dtype.kind not in "iu":
        raise TypeError(f"pack_nibbles: values must be integers, got dtype {v.dtype}")
    if v.size and (v.min() < fmt.qmin or v.max() > fmt.qmax):
        raise ValueError(f"pack_nibbles: values outside the {fmt} range [{fmt.qmin}, {fmt.qmax}]")
    nib = (v.astype(np.int16) & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed, count: int, fmt) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: ``count`` 4-bit values, sign-extended if ``fmt`` is signed."""
    fmt = int_format(fmt)
    if fmt.bits != 4:
        raise ValueError(f"unpack_nibbles: format must be 4-bit, got {fmt}")
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"unpack_nibbles: packed data must be uint8, got {p.dtype}")
    p = p.reshape(-1)
    if not 0 <= count <= 2 * p.size:
        raise ValueError(f"unpack_nibbles: count {count} does not fit in {p.size} packed bytes")
    nib = np.empty(2 * p.size, dtype=np.int16)
    nib[0::2] = p & 0xF
    nib[1::2] = p >> 4
    nib = nib[:count]
    if fmt.signed:
        nib = np.where(nib >= 8, nib - 16, nib)
    return nib.astype(fmt.storage_dtype)
