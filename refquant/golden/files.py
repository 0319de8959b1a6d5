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

A golden set is a plain tree of files: a symbolic link anywhere on a listed file's path
inside the set (the file itself or a directory on the way) is refused, so a set can never
make ``verify`` read a file outside itself. The size recorded for a file is checked against
the file on disk *before* it is read, and against :data:`MAX_FILE_BYTES`; an ``.npy`` header
is checked against the bytes that follow it before any array is allocated.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from ..graph.io import parse_npy_bytes

__all__ = ["GoldenFileError", "sha256_hex", "npy_bytes", "file_entry", "read_checked", "load_npy_checked",
           "write_bytes"]


class GoldenFileError(ValueError):
    """A golden file is missing, damaged or not what its manifest says."""


#: The largest file a golden set may list (bytes); the checked-in sets' largest is ~60 KiB.
MAX_FILE_BYTES = 2**30

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256_hex(value, what: str) -> str:
    """``value`` as a lower-case SHA-256 hex digest; ``GoldenFileError`` if it is not one."""
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise GoldenFileError(f"{what} must be a SHA-256 digest (64 hex digits), got {value!r}")
    return value.lower()


def check_inside(root: Path, name: str) -> Path:
    """``root / name`` after checking that no part of it below ``root`` is a symbolic link."""
    root = Path(root)
    path = root
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            raise GoldenFileError(f"{path}: is a symbolic link; a golden set must hold its files itself "
                                  f"(links are refused so that no file outside the set is read)")
    return path


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
    """All bytes of ``path`` after checking their count and SHA-256 against ``entry``.

    The size on disk is compared with ``entry`` (and :data:`MAX_FILE_BYTES`) before reading.
    A symbolic link is refused (callers check the directories on the way with
    :func:`check_inside`).
    """
    path = Path(path)
    if path.is_symlink():
        raise GoldenFileError(f"{path}: is a symbolic link; golden files must be regular files")
    if not path.is_file():
        raise GoldenFileError(f"{path}: file listed in the manifest is missing")
    want = int(entry["bytes"])
    if want > MAX_FILE_BYTES:
        raise GoldenFileError(f"{path}: the manifest records {want} bytes, over the limit of {MAX_FILE_BYTES}")
    size = path.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than recorded"
        raise GoldenFileError(f"{path}: {what}: {size} bytes, the manifest records {want}")
    data = path.read_bytes()
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
        a = parse_npy_bytes(data, str(path), max_bytes=MAX_FILE_BYTES)
    except ValueError as exc:
        raise GoldenFileError(str(exc)) from None
    if "dtype" in entry and a.dtype != np.dtype(entry["dtype"]):
        raise GoldenFileError(f"{path}: dtype {a.dtype.name}, the manifest records {entry['dtype']}")
    if "shape" in entry and list(a.shape) != list(entry["shape"]):
        raise GoldenFileError(f"{path}: shape {list(a.shape)}, the manifest records {entry['shape']}")
    return a
