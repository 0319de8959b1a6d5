"""Issue #15, item 2 and the golden-manifest protection: damaged, hostile or odd files.

Each case here crashed (a traceback from zipfile, NumPy or json), exhausted memory, or was
accepted silently before the fix; each must now be one clear error naming the file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refquant.golden import GoldenFileError, load_golden, verify
from refquant.graph import Graph, Node, TensorInfo
from refquant.graph.io import MAX_JSON_DEPTH, MAX_TENSOR_BYTES, load_model, save_model, write_npz

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits-mlp"
GOLDEN = ROOT / "spec" / "golden" / "digits-mlp" / "minmax+static-minmax"


def _copy_model(tmp_path, name="m") -> Path:
    shutil.copy(MODEL.with_suffix(".json"), tmp_path / f"{name}.json")
    shutil.copy(MODEL.with_suffix(".npz"), tmp_path / f"{name}.npz")
    return tmp_path / name


def _npy(shape_text: str, dtype="<f4", data=b"") -> bytes:
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (dtype, shape_text)
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


def _zip(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# ------------------------------------------------------------------------------ model files

def test_every_single_bit_flip_of_a_model_npz_is_refused_or_harmless(tmp_path):
    base = _copy_model(tmp_path)
    ref = load_model(base, fold_bn=False).initializers
    data = base.with_suffix(".npz").read_bytes()
    shutil.copy(base.with_suffix(".json"), tmp_path / "f.json")
    refused = harmless = 0
    for pos in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos % 8)
        (tmp_path / "f.npz").write_bytes(bytes(flipped))
        try:
            got = load_model(tmp_path / "f", fold_bn=False).initializers
        except ValueError as exc:
            assert "f.npz" in str(exc)
            refused += 1
            continue
        assert all(np.array_equal(ref[k], got[k]) for k in ref), f"flip at byte {pos} changed the weights silently"
        harmless += 1  # a flip in zip metadata (time stamps, attributes) the data does not depend on
    assert refused > 10 * harmless


def test_an_npy_header_declaring_2_to_the_40_elements_is_refused_before_allocation(tmp_path):
    base = _copy_model(tmp_path)
    doc = json.loads(base.with_suffix(".json").read_text())
    init = doc["initializers"][0]
    members = {f"{i['name']}.npy": b"" for i in doc["initializers"]}
    arrays = load_model(base, fold_bn=False, validate=False).initializers
    for i in doc["initializers"]:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, arrays[i["name"]])
        members[f"{i['name']}.npy"] = buf.getvalue()
    members[f"{init['name']}.npy"] = _npy("(1099511627776,)")
    _zip(base.with_suffix(".npz"), members)
    with pytest.raises(ValueError, match=rf"m.npz: initializer '{init['name']}' has shape \(1099511627776,\)"):
        load_model(base)
    init["shape"] = [2**40]  # the JSON agreeing does not help: over the documented limit
    base.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"declares {4 * 2**40} bytes .* over the limit of {MAX_TENSOR_BYTES}"):
        load_model(base)


def test_a_header_that_lies_about_its_size_is_refused(tmp_path):
    arr = np.ones(4, np.float32)
    _zip(tmp_path / "a.npz", {"w.npy": _npy("(1000,)", data=arr.tobytes())})
    from refquant.graph.io import read_npz_checked

    with pytest.raises(ValueError, match=r"a.npz: array 'w': header declares 4000 data bytes but the zip member holds 16"):
        read_npz_checked(tmp_path / "a.npz")


def test_a_small_compressed_npz_declaring_a_huge_tensor_is_refused(tmp_path):
    base = _copy_model(tmp_path)
    doc = json.loads(base.with_suffix(".json").read_text())
    doc["initializers"][0]["shape"] = [2**29 + 1]  # 2 GiB of float32, compresses to ~2 MiB
    base.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="over the limit"):
        load_model(base)


@pytest.mark.parametrize("text, match", [
    ("[" * 100000, f"nests 100000 levels deep, over the limit of {MAX_JSON_DEPTH}"),
    ('{"a": NaN}', "not valid JSON"),
    ("\xff\xfe", "not UTF-8|not valid JSON"),
    ("", "not valid JSON"),
])
def test_hostile_model_json_is_a_clear_error(tmp_path, text, match):
    base = _copy_model(tmp_path)
    base.with_suffix(".json").write_bytes(text.encode("latin1"))
    with pytest.raises(ValueError, match=match):
        load_model(base)


def test_a_model_without_outputs_is_refused_at_load(tmp_path):
    base = _copy_model(tmp_path)
    doc = json.loads(base.with_suffix(".json").read_text())
    doc["outputs"] = []
    base.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="'outputs' must be a non-empty list"):
        load_model(base)


@pytest.mark.parametrize("name", ["file", "allow_pickle", "args", "kwds", "x/y"])
def test_initializers_with_any_name_round_trip(tmp_path, name):
    g = Graph("g", [TensorInfo("x", ("N", 3), "float32")], ["y"],
              [Node("fc", "Gemm", ["x", name], ["y"], {"transB": 1})],
              {name: np.arange(6, dtype=np.float32).reshape(2, 3)})
    json_path, npz_path = save_model(g, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert np.array_equal(back.initializers[name], g.initializers[name])
    with np.load(npz_path, allow_pickle=False) as archive:  # still an ordinary .npz
        assert archive.files == [name]


def test_write_npz_is_deterministic(tmp_path):
    arrays = {"a": np.arange(3, dtype=np.int64), "b": np.ones((2, 2), np.float32)}
    write_npz(tmp_path / "1.npz", arrays)
    write_npz(tmp_path / "2.npz", arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


# ------------------------------------------------------------------------------ .onnx files

@pytest.mark.parametrize("content", [b"", b"hello, this is not a model", b"\x08\x07"])
def test_empty_or_foreign_onnx_files_are_refused(tmp_path, content):
    pytest.importorskip("onnx")
    from refquant.onnx_io import import_onnx

    (tmp_path / "m.onnx").write_bytes(content)
    with pytest.raises(ValueError, match=r"m.onnx: .*(empty|not a readable ONNX model|not an ONNX model)"):
        import_onnx(tmp_path / "m.onnx")


# ------------------------------------------------------------------------------ golden sets

@pytest.fixture
def golden_copy(tmp_path):
    dst = tmp_path / "set"
    shutil.copytree(GOLDEN, dst)
    return dst


def _edit_manifest(root: Path, edit) -> None:
    doc = json.loads((root / "manifest.json").read_text())
    edit(doc)
    (root / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["layers"][1].__setitem__("tensors", None), r"layers\[1\] \('fc1'\): 'tensors' must be an object"),
    (lambda d: d["layers"][1].__setitem__("inputs", "x"), "'inputs' must be a list"),
    (lambda d: d["layers"][1].__setitem__("qparams", {"output": {"scale": "a"}}), "missing key"),
    (lambda d: d["layers"][1]["qparams"]["output"].__setitem__("scale", -1.0), "scale must be finite and > 0"),
    (lambda d: d["layers"][1].__setitem__("fused_activation", "gelu"), "'fused_activation'"),
    (lambda d: d.__setitem__("outputs", [None]), r"outputs\[0\]"),
    (lambda d: d.__setitem__("outputs", [{"name": "o", "layer": "nope", "file": "output.fc2.out.npy"}]), "'nope'"),
    (lambda d: d.__setitem__("files", None), "'files' must be an object"),
    (lambda d: next(iter(d["files"].values())).__setitem__("bytes", True), "'bytes' must be a non-negative int"),
    (lambda d: next(iter(d["files"].values())).__setitem__("shape", [-1]), "'shape' must be a list"),
    (lambda d: d.__setitem__("requant", 3), "'requant' must be one of"),
    (lambda d: d.__setitem__("onnx", []), "'onnx' must be an object"),
    (lambda d: d["layers"][1].__setitem__("operands", [{"layer": ["x"]}]), "operand"),  # found by the campaign
])
def test_manifest_fields_of_the_wrong_type_are_named(golden_copy, edit, match):
    _edit_manifest(golden_copy, edit)
    with pytest.raises(GoldenFileError, match=match):
        load_golden(golden_copy)


def test_a_deeply_nested_manifest_is_refused(golden_copy):
    (golden_copy / "manifest.json").write_text("[" * 50000)
    with pytest.raises(GoldenFileError, match="nests 50000 levels deep"):
        load_golden(golden_copy)


def test_a_pinned_manifest_digest_catches_every_byte_change(golden_copy):
    good = load_golden(golden_copy).manifest_sha256
    index = json.loads((ROOT / "spec" / "golden" / "index.json").read_text())
    assert good in {s["manifest_sha256"] for s in index["sets"]}  # the pin the repository ships
    load_golden(golden_copy, manifest_sha256=good.upper())
    data = (golden_copy / "manifest.json").read_bytes()
    silent = 0
    for pos in range(0, len(data), 97):
        flipped = bytearray(data)
        flipped[pos] ^= 0x04
        (golden_copy / "manifest.json").write_bytes(bytes(flipped))
        with pytest.raises(GoldenFileError, match="differs from the pinned"):
            load_golden(golden_copy, manifest_sha256=good)
        try:
            load_golden(golden_copy).check_files()
        except (GoldenFileError, ValueError):
            continue
        silent += 1  # without a pin, a flip inside a number or a description can go unnoticed
    assert silent > 0
    with pytest.raises(GoldenFileError, match="64 hex digits"):
        load_golden(golden_copy, manifest_sha256="abc")


def test_verify_reports_and_checks_the_pinned_digest(golden_copy, tmp_path):
    gs = load_golden(golden_copy)
    outputs = {layer["name"]: gs.layer_tensor(layer, "output") for layer in gs.layers}
    report = verify(golden_copy, outputs, manifest_sha256=gs.manifest_sha256)
    assert report.passed and report.manifest_sha256 == gs.manifest_sha256
    with pytest.raises(GoldenFileError, match="differs from the pinned"):
        verify(golden_copy, outputs, manifest_sha256="0" * 64)
    with pytest.raises(GoldenFileError, match="differs from the pinned"):
        verify(gs, outputs, manifest_sha256="0" * 64)


def test_verify_command_line_takes_the_pin(golden_copy, tmp_path, capsys):
    from refquant.cli import main

    gs = load_golden(golden_copy)
    np.savez(tmp_path / "out.npz", **{layer["name"]: gs.layer_tensor(layer, "output") for layer in gs.layers})
    args = ["golden", "verify", str(golden_copy), "--outputs", str(tmp_path / "out.npz")]
    assert main(args + ["--manifest-sha256", gs.manifest_sha256]) == 0
    assert main(args + ["--manifest-sha256", "f" * 64]) == 2
    assert "differs from the pinned" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
@pytest.mark.parametrize("what", ["file", "outside", "directory", "manifest"])
def test_symbolic_links_in_a_golden_set_are_refused(golden_copy, tmp_path, what):
    if what == "file":  # a listed file replaced by a link to an identical copy
        target = tmp_path / "copy.npy"
        shutil.copy(golden_copy / "00.x.output.npy", target)
        (golden_copy / "00.x.output.npy").unlink()
        os.symlink(target, golden_copy / "00.x.output.npy")
    elif what == "outside":  # an unlisted link to a file outside the set
        os.symlink("/etc/hostname", golden_copy / "extra")
    elif what == "directory":
        shutil.move(golden_copy / "onnx", tmp_path / "onnx")
        os.symlink(tmp_path / "onnx", golden_copy / "onnx")
    else:
        shutil.move(golden_copy / "manifest.json", tmp_path / "manifest.json")
        os.symlink(tmp_path / "manifest.json", golden_copy / "manifest.json")
    with pytest.raises(GoldenFileError, match="symbolic link"):
        load_golden(golden_copy).check_files()


def test_a_golden_npy_whose_header_lies_is_refused_after_its_checksum(golden_copy):
    from refquant.golden.files import file_entry, load_npy_checked

    data = _npy("(1099511627776,)", dtype="|u1")
    (golden_copy / "bad.npy").write_bytes(data)
    with pytest.raises(GoldenFileError, match="bad.npy: header declares 1099511627776 bytes"):
        load_npy_checked(golden_copy / "bad.npy", file_entry(data))


def test_a_recorded_size_is_compared_before_the_file_is_read(golden_copy):
    from refquant.golden.files import read_checked

    with pytest.raises(GoldenFileError, match="over the limit"):
        read_checked(golden_copy / "00.x.output.npy", {"bytes": 2**40, "sha256": "0" * 64})
