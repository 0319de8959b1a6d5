"""Golden files on disk: tensors as ``.npy`` bytes with SHA-256 checksums, read back only when whole.

A golden tensor is written as the bytes of NumPy's ``.npy`` format version 1.0 (a fixed
header naming dtype and shape, then the C-order data), with ``allow_pickle=False``: the same
array always gives the same bytes, so a golden set can be regenerated and compared byte for
byte. Its manifest entry records the byte count and the SHA-256 of those bytes.

Reading is the other way round and never trusts the file first: the whole file is read,
its size and SHA-256 are compared with the manifest, and only then are the bytes parsed
(``allow_pickle=False``), and the array's dtype and shape compared with the manifest too. A
missing, truncated, corrupted or tampered file raises :class:`GoldenFileError` naming the
file and what differs — nothing is half-read.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

__all__ = ["GoldenFileError", "sha256_hex", "npy_bytes", "file_entry", "read_checked", "load_npy_checked",
           "write_bytes"]


class GoldenFileError(ValueError):
    """A golden file is missing, damaged or not what its manifest says."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` (format 1.0) bytes of ``array`` in C order; object arrays are refused."""
    a = np.asarray(array)
    a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    if a.dtype.hasobject:
        raise TypeError(f"golden tensors must be numeric, got dtype {a.dtype}")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def file_entry(data: bytes, **extra) -> dict:
    """The manifest entry of a file: ``bytes`` and ``sha256`` (plus ``extra`` fields)."""
    return {"bytes": len(data), "sha256": sha256_hex(data), **extra}


def read_checked(path: Path, entry: dict) -> bytes:
    """All bytes of ``path`` after checking their count and SHA-256 against ``entry``."""
    path = Path(path)
    if not path.is_file():
        raise GoldenFileError(f"{path}: file listed in the manifest is missing")
    data = path.read_bytes()
    want = int(entry["bytes"])
    if len(data) != want:
        what = "truncated" if len(data) < want else "longer than recorded"
        raise GoldenFileError(f"{path}: {what}: {len(data)} bytes, the manifest records {want}")
    digest = sha256_hex(data)
    if digest != entry["sha256"]:
        raise GoldenFileError(f"{path}: SHA-256 {digest} differs from the manifest's {entry['sha256']} "
                              f"(the file was changed or corrupted)")
    return data


def load_npy_checked(path: Path, entry: dict) -> np.ndarray:
    """The array in ``path``: checksum first, then ``allow_pickle=False`` parse, then dtype/shape."""
    data = read_checked(path, entry)
    try:
        a = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise GoldenFileError(f"{path}: not a readable .npy file ({exc})") from None
    if "dtype" in entry and a.dtype != np.dtype(entry["dtype"]):
        raise GoldenFileError(f"{path}: dtype {a.dtype.name}, the manifest records {entry['dtype']}")
    if "shape" in entry and list(a.shape) != list(entry["shape"]):
        raise GoldenFileError(f"{path}: shape {list(a.shape)}, the manifest records {entry['shape']}")
    return a
