"""A restricted reader for *legacy* (pre-1.6, non-zip) PyTorch ``.pth`` state dicts.

No torch is needed or imported, and no code from the file runs: the pickles inside are read
by an :class:`pickle.Unpickler` whose ``find_class`` answers exactly four globals, each mapped
to something of ours, and refuses every other one with :class:`UnsafePickleError`.

The legacy file layout (``torch.save(..., _use_new_zipfile_serialization=False)``) is, in
order::

    pickle  magic number        the int 0x1950a86a20f9469cfc6c
    pickle  protocol version    the int 1001
    pickle  sys info            {"protocol_version": 1001, "little_endian": True,
                                 "type_sizes": {"short": 2, "int": 4, "long": 4 or 8}}
    pickle  the object          here an OrderedDict name -> tensor; each tensor is
                                torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                requires_grad, backward_hooks[, metadata]) whose storage is a
                                persistent id ("storage", <storage type>, key, location,
                                element count, None)
    pickle  storage keys        the list of the keys, in the order the storages follow
    per key                     int64 little-endian element count, then count * itemsize
                                raw little-endian bytes

Allowed globals and what they become:

================================  =========================================================
``collections.OrderedDict``       :class:`collections.OrderedDict`
``torch._utils._rebuild_tensor_v2`` :func:`_rebuild_tensor_v2` here: a :class:`_TensorRef`
                                  (storage key, offset, size, stride), filled in later
``torch.FloatStorage``            the marker for dtype ``<f4`` (float32)
``torch.LongStorage``             the marker for dtype ``<i8`` (int64)
================================  =========================================================

Numeric decisions: storages are read with ``np.frombuffer(dtype="<f4" | "<i8")`` (explicitly
little-endian, whatever the host) and copied once; a tensor is the strided view
``storage[offset + sum(i_k * stride_k)]`` of its storage, checked to stay inside it, and
returned C-contiguous in the host's native byte order.  Every count is checked against the
bytes that remain in the file *before* anything is allocated.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LEGACY_MAGIC", "LEGACY_PROTOCOL", "UnsafePickleError", "TorchFileError", "read_legacy_state_dict"]

#: the first pickle of a legacy torch file
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: the second pickle of a legacy torch file
LEGACY_PROTOCOL = 1001


class TorchFileError(ValueError):
    """The file is not a well-formed legacy torch state dict (message names the file)."""


class UnsafePickleError(TorchFileError):
    """The pickle asked for a global (or construct) outside the allow-list; nothing was run."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: str  # explicit little-endian NumPy dtype string

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


_FLOAT = _StorageType("torch.FloatStorage", "<f4")
_LONG = _StorageType("torch.LongStorage", "<i8")


@dataclass(frozen=True)
class _StorageRef:
    key: str
    storage_type: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _is_int_tuple(v) -> bool:
    return isinstance(v, tuple) and all(type(x) is int for x in v)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: checks the arguments, builds nothing."""
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError("_rebuild_tensor_v2: the storage argument is not a storage reference")
    if type(storage_offset) is not int or not _is_int_tuple(size) or not _is_int_tuple(stride):
        raise UnsafePickleError("_rebuild_tensor_v2: offset, size and stride must be ints")
    if len(size) != len(stride):
        raise UnsafePickleError(f"_rebuild_tensor_v2: size {size} and stride {stride} differ in length")
    if backward_hooks is not None and not (isinstance(backward_hooks, OrderedDict) and not backward_hooks):
        raise UnsafePickleError("_rebuild_tensor_v2: backward hooks are not allowed")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _FLOAT,
    ("torch", "LongStorage"): _LONG,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; persistent ids become :class:`_StorageRef`."""

    def __init__(self, stream, storages: dict[str, _StorageRef] | None):
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing global {module}.{name} (allowed: "
                                    + ", ".join(f"{m}.{n}" for m, n in _ALLOWED) + ")") from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise UnsafePickleError("persistent id outside the main pickle")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafePickleError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError(f"persistent id: {stype!r:.40} is not an allowed storage type")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise UnsafePickleError(f"persistent id: bad key or element count in {pid!r:.80}")
        if view is not None:
            raise UnsafePickleError("persistent id: storage views are not supported")
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = _StorageRef(key, stype, numel)
        elif ref.storage_type != stype or ref.numel != numel:
            raise UnsafePickleError(f"storage {key!r} is declared twice with different types or sizes")
        return ref


def _unpickle(stream, what: str, path, storages=None):
    try:
        return _RestrictedUnpickler(stream, storages).load()
    except UnsafePickleError as exc:
        raise type(exc)(f"{path}: {what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, RecursionError) as exc:
        raise TorchFileError(f"{path}: {what}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def read_legacy_state_dict(path) -> "OrderedDict[str, np.ndarray]":
    """The state dict in the legacy torch file ``path`` as name -> C-contiguous ndarray.

    float tensors come back as float32, long tensors (``num_batches_tracked``) as int64.
    Raises :class:`UnsafePickleError` for anything outside the allow-list and
    :class:`TorchFileError` for any other malformed content, each naming ``path``.
    """
    path = Path(path)
    data = path.read_bytes()
    stream = io.BytesIO(data)

    magic = _unpickle(stream, "magic number", path)
    if magic != LEGACY_MAGIC:
        hint = " (a zip-format torch file?)" if data[:2] == b"PK" else ""
        raise TorchFileError(f"{path}: not a legacy torch file: wrong magic number{hint}")
    version = _unpickle(stream, "protocol version", path)
    if version != LEGACY_PROTOCOL:
        raise TorchFileError(f"{path}: unsupported legacy protocol version {version!r} (expected {LEGACY_PROTOCOL})")
    sys_info = _unpickle(stream, "sys info", path)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise TorchFileError(f"{path}: sys info must say little_endian=True, got {sys_info!r:.120}")

    storages: dict[str, _StorageRef] = {}
    obj = _unpickle(stream, "state dict", path, storages)
    if not isinstance(obj, dict):
        raise TorchFileError(f"{path}: the main pickle is a {type(obj).__name__}, not a state dict")
    keys = _unpickle(stream, "storage keys", path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchFileError(f"{path}: the storage-key pickle is not a list of strings")
    if set(keys) != set(storages) or len(keys) != len(storages):
        raise TorchFileError(f"{path}: storage keys {len(keys)} listed do not match the {len(storages)} referenced")

    arrays: dict[str, np.ndarray] = {}
    pos = stream.tell()
    for key in keys:
        ref = storages[key]
        if pos + 8 > len(data):
            raise TorchFileError(f"{path}: truncated: storage {key!r} has no element count")
        (count,) = np.frombuffer(data, dtype="<i8", count=1, offset=pos)
        count = int(count)
        pos += 8
        if count != ref.numel:
            raise TorchFileError(f"{path}: storage {key!r} holds {count} elements, the pickle declared {ref.numel}")
        nbytes = count * ref.storage_type.itemsize
        if nbytes > len(data) - pos:
            raise TorchFileError(f"{path}: truncated: storage {key!r} needs {nbytes} bytes, "
                                 f"{len(data) - pos} remain")
        arrays[key] = np.frombuffer(data, dtype=ref.storage_type.dtype, count=count, offset=pos).copy()
        pos += nbytes
    if pos != len(data):
        raise TorchFileError(f"{path}: {len(data) - pos} unexpected bytes after the last storage")

    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, t in obj.items():
        if not isinstance(name, str) or not isinstance(t, _TensorRef):
            raise TorchFileError(f"{path}: entry {name!r:.60} is not a named tensor")
        out[name] = _materialize(arrays[t.storage.key], t, f"{path}: tensor {name!r}")
    return out


def _materialize(storage: np.ndarray, t: _TensorRef, where: str) -> np.ndarray:
    """``storage[offset + sum(i_k * stride_k)]`` as a fresh C-contiguous native-order array."""
    if t.offset < 0 or any(s < 0 for s in t.size) or any(s < 0 for s in t.stride):
        raise TorchFileError(f"{where}: negative offset, size or stride")
    numel = math.prod(t.size)  # Python ints: no overflow for hostile sizes
    if numel:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if last >= storage.size:
            raise TorchFileError(f"{where}: size {t.size} stride {t.stride} offset {t.offset} "
                                 f"reaches element {last} of a storage of {storage.size}")
    elif t.offset > storage.size:
        raise TorchFileError(f"{where}: offset {t.offset} beyond a storage of {storage.size}")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[t.offset:] if numel else storage[:0],
                                           shape=t.size, strides=tuple(s * item for s in t.stride),
                                           writeable=False)
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")  # a copy; 0-d stays 0-d
