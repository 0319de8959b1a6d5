"""Golden files: deterministic bytes, SHA-256 checks before parsing, manifest schema errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refquant.golden import GoldenFileError, export_golden, load_golden
from refquant.golden.files import file_entry, load_npy_checked, npy_bytes, read_checked
from refquant.golden.manifest import dumps
from refquant.executor import quantize_model
from tests_support import small_cnn

DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32])


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_npy_round_trip_is_exact_and_bytes_are_deterministic(tmp_path_factory, a):
    data = npy_bytes(a)
    assert data == npy_bytes(a.copy())  # same array, same bytes
    path = tmp_path_factory.mktemp("npy") / "t.npy"
    path.write_bytes(data)
    entry = file_entry(data, dtype=a.dtype.name, shape=list(a.shape))
    b = load_npy_checked(path, entry)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert b.tobytes() == a.tobytes()  # bit for bit, NaN payloads included


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="numeric"):
        npy_bytes(np.array([{"a": 1}], dtype=object))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    graph, x = small_cnn(seed=3, n=8)
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", x)
    root = tmp_path_factory.mktemp("golden") / "set"
    export_golden(qm, x[:2], root, seed=3)
    return root


def _copy(golden, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(golden, dst)
    return dst


def test_every_file_checks_out(golden):
    gs = load_golden(golden)
    gs.check_files()
    assert (golden / "manifest.json").read_bytes() == dumps(gs.manifest)


def test_a_flipped_bit_is_reported_with_the_file_and_both_hashes(golden, tmp_path):
    root = _copy(golden, tmp_path)
    name = next(n for n in sorted(load_golden(root).manifest["files"]) if n.endswith("output.npy"))
    data = bytearray((root / name).read_bytes())
    data[-1] ^= 0x01
    (root / name).write_bytes(bytes(data))
    with pytest.raises(GoldenFileError, match=rf"{name}: SHA-256 [0-9a-f]{{64}} differs"):
        load_golden(root).check_files()


def test_truncated_and_missing_files_are_reported(golden, tmp_path):
    root = _copy(golden, tmp_path)
    gs = load_golden(root)
    name = sorted(gs.manifest["files"])[0]
    size = gs.manifest["files"][name]["bytes"]
    (root / name).write_bytes((root / name).read_bytes()[: size // 2])
    with pytest.raises(GoldenFileError, match=f"truncated: {size // 2} bytes, the manifest records {size}"):
        gs.check_files()
    (root / name).unlink()
    with pytest.raises(GoldenFileError, match="missing"):
        load_golden(root).check_files()


def test_a_tampered_file_with_a_matching_length_is_not_parsed(golden, tmp_path, monkeypatch):
    """The checksum is checked before the bytes reach the .npy parser."""
    root = _copy(golden, tmp_path)
    gs = load_golden(root)
    name = next(n for n in sorted(gs.manifest["files"]) if n.endswith(".npy"))
    data = (root / name).read_bytes()
    (root / name).write_bytes(b"\x93NUMPY garbage".ljust(len(data), b" "))
    calls = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: calls.append(1))
    with pytest.raises(GoldenFileError, match="SHA-256"):
        gs.tensor(name)
    assert calls == []


def test_dtype_and_shape_are_checked_against_the_manifest(tmp_path):
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    data = npy_bytes(a)
    (tmp_path / "a.npy").write_bytes(data)
    with pytest.raises(GoldenFileError, match="dtype uint8, the manifest records int8"):
        load_npy_checked(tmp_path / "a.npy", file_entry(data, dtype="int8", shape=[2, 3]))
    with pytest.raises(GoldenFileError, match=r"shape \[2, 3\], the manifest records \[3, 2\]"):
        load_npy_checked(tmp_path / "a.npy", file_entry(data, dtype="uint8", shape=[3, 2]))
    assert read_checked(tmp_path / "a.npy", file_entry(data)) == data


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="other"), "'format' must be 'refquant.golden'"),
    (lambda m: m.update(format_version=99), "format_version"),
    (lambda m: m.pop("layers"), "missing key"),
    (lambda m: m["layers"][1].update(kernel="magic"), "'kernel' must be one of"),
    (lambda m: m["layers"][1]["tensors"].update(output="nowhere.npy"), "which 'files' does not list"),
    (lambda m: m["layers"][1].update(inputs=["later"]), "is not an earlier layer"),
    (lambda m: m["files"].update({"../escape.npy": {"bytes": 1, "sha256": "0"}}), "must stay inside"),
])
def test_manifest_schema_errors_name_the_problem(golden, tmp_path, edit, message):
    root = _copy(golden, tmp_path)
    doc = json.loads((root / "manifest.json").read_text())
    edit(doc)
    (root / "manifest.json").write_bytes(dumps(doc))
    with pytest.raises(GoldenFileError, match=message):
        load_golden(root)


def test_a_damaged_manifest_and_a_missing_one_are_clear_errors(golden, tmp_path):
    root = _copy(golden, tmp_path)
    (root / "manifest.json").write_bytes((root / "manifest.json").read_bytes()[:50])
    with pytest.raises(GoldenFileError, match="not valid JSON"):
        load_golden(root)
    with pytest.raises(GoldenFileError, match="no golden manifest"):
        load_golden(tmp_path / "nothing")


def test_manifest_json_is_sorted_ascii_and_ends_with_a_newline(golden):
    text = (golden / "manifest.json").read_bytes()
    assert text.endswith(b"\n") and text.isascii()
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert dumps(doc) == text
