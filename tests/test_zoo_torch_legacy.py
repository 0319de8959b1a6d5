"""The restricted legacy-torch reader: real files it must read, hostile files it must refuse
without running anything.  Test files are written here opcode by opcode (no torch)."""

import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from refquant.zoo.torch_legacy import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    TorchFileError,
    UnsafePickleError,
    read_legacy_state_dict,
)

REPO = Path(__file__).resolve().parent.parent
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


# ------------------------------------------------------------------ a tiny legacy-file writer

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    if -2**31 <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    return pickle.dumps(i, protocol=2)[2:-1]  # LONG1


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(key, storage_type, numel, offset, size, stride) -> bytes:
    pid = _tuple([_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel), b"N"])
    args = [pid + b"Q", _int(offset), _tuple([_int(s) for s in size]), _tuple([_int(s) for s in stride]),
            b"\x89", _global("collections", "OrderedDict") + b")R"]
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"


def _main_pickle(entries) -> bytes:
    body = b"".join(_str(name) + _tensor(*spec) for name, spec in entries)
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u."


def legacy_file(path, entries, storages, *, magic=LEGACY_MAGIC, main=None, keys=None, tail=b""):
    """entries: [(name, (key, type, numel, offset, size, stride))]; storages: {key: ndarray}."""
    parts = [pickle.dumps(magic, protocol=2), pickle.dumps(LEGACY_PROTOCOL, protocol=2),
             pickle.dumps(SYS_INFO, protocol=2), main if main is not None else _main_pickle(entries),
             pickle.dumps(list(storages) if keys is None else keys, protocol=2)]
    for a in storages.values():
        parts.append(struct.pack("<q", a.size) + a.astype(a.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(b"".join(parts) + tail)
    return path


@pytest.fixture
def good(tmp_path):
    w = np.arange(24, dtype=np.float32) * 0.5 - 3
    n = np.array([7], dtype=np.int64)
    entries = [("conv.weight", ("0", "FloatStorage", 24, 0, (2, 3, 2, 2), (12, 4, 2, 1))),
               ("fc.weight_t", ("0", "FloatStorage", 24, 4, (2, 3), (1, 2))),   # a strided view
               ("bn.num_batches_tracked", ("1", "LongStorage", 1, 0, (), ()))]
    return legacy_file(tmp_path / "good.pth", entries, {"0": w, "1": n}), w


def test_reads_tensors_strides_offsets_and_longs(good):
    path, w = good
    sd = read_legacy_state_dict(path)
    assert list(sd) == ["conv.weight", "fc.weight_t", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(sd["conv.weight"], w.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(sd["fc.weight_t"], np.lib.stride_tricks.as_strided(w[4:], (2, 3), (4, 8)))
    assert sd["conv.weight"].dtype == np.float32 and sd["conv.weight"].flags.c_contiguous
    assert sd["bn.num_batches_tracked"].dtype == np.int64 and int(sd["bn.num_batches_tracked"]) == 7


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_reduce_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    main = pickle.dumps({"conv.weight": _RunsCode(marker)}, protocol=2)
    path = legacy_file(tmp_path / "evil.pth", [], {}, main=main)
    with pytest.raises(UnsafePickleError, match=r"evil\.pth.*refusing global (posix|nt|os)\.system"):
        read_legacy_state_dict(path)
    assert not marker.exists()


def test_code_in_the_magic_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_magic.pth"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match="evil_magic.pth: magic number"):
        read_legacy_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("numpy.core.multiarray", "_reconstruct"),
                                         ("torch", "HalfStorage"), ("torch._utils", "_rebuild_parameter")])
def test_unknown_globals_are_refused(tmp_path, module, name):
    main = b"\x80\x02" + _global(module, name) + b")R."
    path = legacy_file(tmp_path / "unknown.pth", [], {}, main=main)
    with pytest.raises(UnsafePickleError, match=re.escape(f"refusing global {module}.{name}")):
        read_legacy_state_dict(path)


def test_wrong_magic_and_zip_files_are_refused(tmp_path):
    path = legacy_file(tmp_path / "magic.pth", [], {}, magic=12345)
    with pytest.raises(TorchFileError, match="magic.pth: not a legacy torch file: wrong magic number"):
        read_legacy_state_dict(path)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(TorchFileError, match="new.pth"):
        read_legacy_state_dict(zipped)


def test_truncated_storage_is_refused_before_allocating(tmp_path):
    w = np.ones(1000, dtype=np.float32)
    path = legacy_file(tmp_path / "trunc.pth", [("w", ("0", "FloatStorage", 1000, 0, (1000,), (1,)))], {"0": w})
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(TorchFileError, match=r"trunc.pth: truncated: storage '0' needs 4000 bytes, 3990 remain"):
        read_legacy_state_dict(path)
    # a huge declared count (count header and pickle agree) is refused from the byte count alone
    huge = tmp_path / "huge.pth"
    main = _main_pickle([("w", ("0", "FloatStorage", 2**40, 0, (2**20, 2**20), (2**20, 1)))])
    parts = [pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, SYS_INFO)]
    huge.write_bytes(b"".join(parts) + main + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 2**40))
    with pytest.raises(TorchFileError, match="huge.pth: truncated"):
        read_legacy_state_dict(huge)


def test_inconsistent_counts_strides_keys_and_trailing_bytes_are_refused(tmp_path):
    w = np.ones(6, dtype=np.float32)
    bad_count = legacy_file(tmp_path / "count.pth", [("w", ("0", "FloatStorage", 5, 0, (5,), (1,)))], {"0": w})
    with pytest.raises(TorchFileError, match="holds 6 elements, the pickle declared 5"):
        read_legacy_state_dict(bad_count)
    outside = legacy_file(tmp_path / "stride.pth", [("w", ("0", "FloatStorage", 6, 2, (3, 2), (2, 1)))], {"0": w})
    with pytest.raises(TorchFileError, match="stride.pth: tensor 'w'.*reaches element 7 of a storage of 6"):
        read_legacy_state_dict(outside)
    keys = legacy_file(tmp_path / "keys.pth", [("w", ("0", "FloatStorage", 6, 0, (6,), (1,)))], {"0": w},
                       keys=["0", "1"])
    with pytest.raises(TorchFileError, match="keys.pth: storage keys"):
        read_legacy_state_dict(keys)
    tail = legacy_file(tmp_path / "tail.pth", [("w", ("0", "FloatStorage", 6, 0, (6,), (1,)))], {"0": w},
                       tail=b"junk")
    with pytest.raises(TorchFileError, match="tail.pth: 4 unexpected bytes"):
        read_legacy_state_dict(tail)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x00\x01not a pickle at all")
    with pytest.raises(TorchFileError, match="garbage.pth: magic number: not a readable pickle"):
        read_legacy_state_dict(path)


def test_no_unrestricted_unpickling_anywhere_in_the_repository():
    """Nothing calls the unrestricted loaders (patterns split so this file does not match itself)."""
    patterns = ["pickle" + ".load", "torch" + ".load", "allow_pickle" + "=True"]
    hits = []
    for path in REPO.rglob("*.py"):
        if any(part.startswith(".") or part in ("build", "node_modules") for part in path.relative_to(REPO).parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{path.relative_to(REPO)}: {p}" for p in patterns if p in text]
    assert hits == []
