"""The bad-input campaign (issue #15): generated bad inputs for the public API and every file format.

Seeded and deterministic. Each case is an input known to be wrong — a mutated argument of a
valid call, a damaged or hostile file — and must end in one of refquant's clear errors
(``ValueError`` and its subclasses ``GoldenFileError``/``CollapsedRangeError``, ``TypeError``,
``FileNotFoundError``, ``OverflowError``/``AccumulatorOverflowError``), raised by refquant's
own code (the innermost frame of the traceback is in refquant, never in NumPy, zipfile or
json) with a message that names the operation/argument or the file. Where a mutation cannot
be told apart from a valid input (a flipped bit in zip metadata, a changed description in a
manifest without a pinned digest, a changed weight inside an .onnx protobuf), acceptance is
allowed only when the result is provably the same (zip: identical arrays) or is counted and
reported. ``spec/limits.md`` lists the limits and the error of each bad-input class.

Sizes: the default (CI) profile runs about 2,700 cases in well under a minute;
``REFQUANT_CAMPAIGN=large`` multiplies every count by 20 (run by hand:
``REFQUANT_CAMPAIGN=large .venv/bin/python -m pytest -q tests/test_bad_input_campaign.py -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest

import refquant.functional as F
from refquant import numerics as N
from refquant.golden import GoldenFileError, load_golden
from refquant.graph.io import load_model

SCALE = 20 if os.environ.get("REFQUANT_CAMPAIGN") == "large" else 1
ROOT = Path(__file__).resolve().parents[1]
CLEAR = (ValueError, TypeError, FileNotFoundError, OverflowError)
REPORT: dict = {}


def _innermost(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return frames[-1].filename if frames else ""


def _check_clear(exc: BaseException, names: tuple, what: str) -> None:
    assert isinstance(exc, CLEAR), f"{what}: {type(exc).__name__} is not a clear error: {exc}"
    inner = _innermost(exc).replace("\\", "/")
    assert "/refquant" in inner, f"{what}: raised inside {inner}, not by refquant: {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert any(n in msg for n in names), f"{what}: the message names none of {names}: {msg}"


# ------------------------------------------------------------------------------------ API

def _bad_float_array(rng, shape):
    """An array a float-tensor argument cannot be: wrong kind, or non-finite where finite is required."""
    kind = rng.integers(6)
    if kind == 0:
        return np.zeros(shape, bool)
    if kind == 1:
        return np.zeros(shape, np.complex64)
    if kind == 2:
        return np.array([["a"] * shape[-1]] * shape[0])
    if kind == 3:
        return np.array([[object()] * shape[-1]] * shape[0], dtype=object)
    if kind == 4:
        return np.zeros(shape, "datetime64[s]")
    return np.zeros(shape, np.float16).astype(">c8")


def _bad_scale(rng):
    return [np.float32(0), np.float32(-1), np.float32(np.nan), np.float32(np.inf), np.zeros(0, np.float32),
            np.array("1.0"), np.complex64(1), np.float32([[1, 2], [3, 4]]), -np.float32(1e-45),
            np.array([np.nan], np.float32)][rng.integers(10)]


def _bad_int_attr(rng):
    return [1.5, "1", None, True, 2.0, [1], np.float32(1), object(), b"1", 1j][rng.integers(10)]


def _bad_zero_point(rng, dtype):
    info = np.iinfo(dtype)
    return [np.int32(info.max) + 1, np.float32(0.5), np.int64(-(2**40)), np.array(["z"]),
            np.zeros(3, dtype), np.array(info.min, np.int64) - 1, np.complex64(0)][rng.integers(7)]


def _api_case(rng):
    """``(callable, names that the error must mention, description)`` for one bad call."""
    x = rng.normal(size=(2, 3)).astype(np.float32)
    q8 = rng.integers(0, 256, (2, 3)).astype(np.uint8)
    a = rng.integers(0, 256, (2, 4)).astype(np.uint8)
    b = rng.integers(-100, 100, (4, 3)).astype(np.int8)
    xc = rng.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    w = rng.integers(-100, 100, (3, 2, 2, 2)).astype(np.int8)
    s = np.float32(0.05)
    op = int(rng.integers(16))
    arg = int(rng.integers(4))
    if op == 0:  # quantize_linear
        kw = dict(x=x, y_scale=s, y_zero_point=np.uint8(3))
        if arg == 0:
            kw["x"] = _bad_float_array(rng, (2, 3)) if rng.integers(2) else np.float32([[np.nan, 1, 2]] * 2)
        elif arg == 1:
            kw["y_scale"] = _bad_scale(rng)
        elif arg == 2:
            kw["y_zero_point"] = _bad_zero_point(rng, np.uint8)
        else:
            kw.update(y_scale=np.float32([0.1, 0.2, 0.3]), y_zero_point=np.uint8([0, 0, 0]), axis=_bad_int_attr(rng))
        return (lambda: F.quantize_linear(**kw)), ("quantize_linear",), f"quantize_linear {sorted(kw)} arg {arg}"
    if op == 1:  # dequantize_linear
        kw = dict(x=q8, x_scale=s, x_zero_point=np.uint8(3))
        if arg == 0:
            kw["x"] = [np.float32(q8), q8.astype(bool), q8.astype(np.int64), q8.astype(">f8")][rng.integers(4)]
        elif arg == 1:
            kw["x_scale"] = _bad_scale(rng)
        elif arg == 2:
            kw["x_zero_point"] = _bad_zero_point(rng, np.uint8)
        else:
            kw["output_dtype"] = ["int8", 3, "float64", "nonsense", 999][rng.integers(5)]
        return (lambda: F.dequantize_linear(**kw)), ("dequantize_linear",), f"dequantize_linear arg {arg}"
    if op == 2:  # dynamic_quantize_linear
        bad = [_bad_float_array(rng, (2, 3)), np.float32([np.inf, 1]), np.float32([np.nan]),
               np.float32([-3e38, 3e38]), x.astype(np.int32)][rng.integers(5)]
        return (lambda: F.dynamic_quantize_linear(bad)), ("dynamic_quantize_linear",), "dynamic_quantize_linear"
    if op in (3, 4):  # qlinear_matmul / matmul_integer
        qlin = op == 3
        kw = dict(a=a, a_scale=s, a_zero_point=np.uint8(128), b=b, b_scale=s, b_zero_point=np.int8(0),
                  y_scale=np.float32(0.3), y_zero_point=np.uint8(100))
        choice = int(rng.integers(6))
        if choice == 0:
            kw["a"] = [a.astype(np.int16), a.astype(np.float32), a[:, :3], a.astype(bool)][rng.integers(4)]
        elif choice == 1:
            kw["b"] = [b.astype(np.int32), b[:3], b.reshape(-1)[:5], np.zeros((), np.int8)][rng.integers(4)]
        elif choice == 2:
            kw["a_zero_point"] = _bad_zero_point(rng, np.uint8)
        elif choice == 3:
            kw["b_zero_point"] = [np.int8([1, 2]), np.uint8(1), np.int8(np.zeros((2, 2, 3))), 1.5][rng.integers(4)]
        elif choice == 4 and qlin:
            kw["b_scale"] = [_bad_scale(rng), np.float32([0.1, 0.2]), np.float32(np.ones((2, 1, 3)))][rng.integers(3)]
        else:
            kw["backend" if not qlin or rng.integers(2) else "requant"] = ["gpu", "", 3][rng.integers(3)]
        if qlin:
            return (lambda: F.qlinear_matmul(**kw)), ("qlinear_matmul", "backend"), f"qlinear_matmul {choice}"
        for k in ("a_scale", "b_scale", "y_scale", "y_zero_point", "requant"):
            kw.pop(k, None)
        if choice == 4:
            kw["a"] = a[:, :0]
            kw["b"] = b[:1]
        return (lambda: F.matmul_integer(**kw)), ("matmul_integer", "backend"), f"matmul_integer {choice}"
    if op in (5, 6):  # qlinear_conv / conv_integer
        qlin = op == 5
        kw = dict(x=xc, x_scale=s, x_zero_point=np.uint8(128), w=w, w_scale=s, w_zero_point=np.int8(0),
                  y_scale=np.float32(0.3), y_zero_point=np.uint8(100))
        choice = int(rng.integers(5))
        if choice == 0:
            attr = ["strides", "dilations", "pads", "kernel_shape", "group"][rng.integers(5)]
            bad = _bad_int_attr(rng)
            if bad is None and attr != "group":  # None is a list attribute's default: not bad
                bad = 1.5
            kw[attr] = [bad] * 2 if rng.integers(2) else bad
        elif choice == 1:
            kw[["strides", "dilations", "pads"][rng.integers(3)]] = [[0, 0], [-1, 1], [1, 1, 1], [1, 2, 3, 4, 5]][rng.integers(4)]
        elif choice == 2:
            kw["w"] = [w[:, :1], w.astype(np.float32), w[0], np.zeros((3, 2, 9, 9), np.int8)][rng.integers(4)]
        elif choice == 3:
            kw["group"] = [0, -1, 4, 3][rng.integers(4)]
        else:
            kw["auto_pad"] = ["SAME", "valid", 1, "NOTSET "][rng.integers(4)]
        if qlin:
            return (lambda: F.qlinear_conv(**kw)), ("qlinear_conv", "conv2d"), f"qlinear_conv {choice} {kw.keys()}"
        for k in ("x_scale", "w_scale", "y_scale", "y_zero_point"):
            kw.pop(k)
        return (lambda: F.conv_integer(**kw)), ("conv_integer", "conv2d"), f"conv_integer {choice}"
    if op == 7:  # qparams_from_range
        lo, hi = [(np.nan, 1), (0, np.inf), (2, 1), (-3e38, 3e38), ("a", 1), (0, 1e-44)][rng.integers(6)]
        return (lambda: N.qparams_from_range(lo, hi, "uint8", name="t")), ("t:", "tensor"), f"range {lo} {hi}"
    if op == 8:  # requantize
        rq = N.make_requantizer(0.1, 0.02, 0.5, 3, "int8")
        acc = np.arange(12, dtype=np.int32).reshape(2, 6)
        bad = [dict(acc=acc.astype(np.int64)), dict(acc=acc.astype(np.float32)), dict(channel_axis=5),
               dict(channel_axis=1.5), dict(channel_axis=-3)][rng.integers(5)]
        kw = dict(acc=acc, rq=rq, channel_axis=1) | bad
        return (lambda: N.requantize(**kw)), ("requantize",), f"requantize {bad}"
    if op == 9:  # make_requantizer
        bad = [dict(x_scale=0.0), dict(w_scale=np.float32([0.1, -1])), dict(y_scale=np.nan), dict(mode="fixed"),
               dict(y_zero_point=300), dict(activation="gelu"), dict(y_scale=1e-38, x_scale=1e30)][rng.integers(7)]
        kw = dict(x_scale=0.1, w_scale=0.02, y_scale=0.5, y_zero_point=3, fmt="int8") | bad
        return (lambda: N.make_requantizer(**kw)), ("requant",), f"make_requantizer {bad}"
    if op == 10:  # gemmlowp primitives
        if rng.integers(2):
            x_, e_ = [(5, -1), (5, 64), (5, 2**40), (1.5, 1), (5, 1.0), (2**70, 1)][rng.integers(6)]
            return (lambda: N.rounding_divide_by_pot(x_, e_)), ("rounding_divide_by_pot",), f"rdbp {x_} {e_}"
        a_, b_ = [(2**62, 4), (-(2**63), 1), (2**40, 2**40), (0.5, 1), (2**70, 1)][rng.integers(5)]
        return (lambda: N.saturating_rounding_doubling_high_mul(a_, b_)), ("saturating_rounding",), f"srdhm {a_} {b_}"
    if op == 11:  # float formats
        fmt = ["float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float4_e2m1fn"][rng.integers(4)]
        choice = int(rng.integers(4))
        if choice == 0:
            return (lambda: N.decode_format(np.array([1 << 8]), fmt)), ("bits",), f"decode {fmt}"
        if choice == 1:
            return (lambda: N.round_to_format(_bad_float_array(rng, (2, 3)), fmt)), ("x",), f"round {fmt}"
        if choice == 2:
            return (lambda: N.encode_format(x, fmt + "x")), ("float format",), f"encode {fmt}x"
        return (lambda: N.round_to_format(np.float32([np.nan]), "float6_e3m2fn")), ("NaN",), "fp6 NaN"
    if op == 12:  # integer formats and nibbles
        choice = int(rng.integers(4))
        if choice == 0:
            spec = ["int1", "int17", "uint", "float8", 3.5, np.float32][rng.integers(6)]
            return (lambda: N.int_format(spec)), ("integer format",), f"int_format {spec}"
        if choice == 1:
            return (lambda: N.pack_nibbles(np.int8([9]), "int4")), ("pack_nibbles",), "pack 9"
        if choice == 2:
            return (lambda: N.unpack_nibbles(np.uint8([1]), 3, "int4")), ("unpack_nibbles",), "unpack 3"
        return (lambda: N.pack_nibbles(np.float32([1]), "int4")), ("pack_nibbles",), "pack float"
    if op == 13:  # QParams
        bad = [dict(scale=0.0), dict(scale=np.nan), dict(zero_point=300), dict(zero_point=0.5),
               dict(scale=np.float32([0.1, 0.2])), dict(block_size=-1, axis=0, scale=np.float32([1]))][rng.integers(6)]
        kw = dict(scale=np.float32(0.1), zero_point=0, fmt=N.int_format("uint8"), name="t") | bad
        return (lambda: N.QParams(**kw)), ("'t'",), f"QParams {bad}"
    if op == 14:  # quantize / dequantize with QParams
        qp = N.QParams(np.float32([0.1, 0.2, 0.3]), np.int32([0, 0, 0]), N.int_format("uint8"), axis=1, name="t")
        bad = [lambda: N.quantize(np.float32([[np.inf, 1, 1]]), qp), lambda: N.quantize(np.zeros((2, 4), np.float32), qp),
               lambda: N.dequantize(np.float32([[1, 2, 3]]), qp), lambda: N.quantize(np.array([["a", "b", "c"]]), qp)]
        return bad[rng.integers(4)], ("'t'", "t:"), "quantize/dequantize"
    # op == 15: tensor_range
    bad = [_bad_float_array(rng, (2, 3)), np.float32([np.nan, 1])][rng.integers(2)]
    return (lambda: N.tensor_range(bad, name="t")), ("t:",), "tensor_range"


def test_api_campaign():
    rng = np.random.default_rng(20261207)
    n = 1500 * SCALE
    for i in range(n):
        call, names, what = _api_case(rng)
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - the point is to classify it
            _check_clear(exc, names, f"case {i}: {what}")
        else:
            pytest.fail(f"case {i}: {what}: a bad input was accepted silently")
    REPORT["api"] = n


# ------------------------------------------------------------------------------ file formats

def _flip(data: bytes, rng) -> bytes:
    b = bytearray(data)
    pos = int(rng.integers(len(b)))
    b[pos] ^= 1 << int(rng.integers(8))
    return bytes(b)


def test_model_npz_campaign(tmp_path):
    rng = np.random.default_rng(1)
    src = ROOT / "models" / "digits-cnn"
    shutil.copy(src.with_suffix(".json"), tmp_path / "m.json")
    ref = load_model(src, fold_bn=False).initializers
    data = src.with_suffix(".npz").read_bytes()
    refused = identical = 0
    n = 300 * SCALE
    for i in range(n):
        kind = int(rng.integers(4))
        if kind == 0:
            bad = _flip(data, rng)
        elif kind == 1:
            bad = data[: int(rng.integers(len(data)))]
        elif kind == 2:
            bad = _flip(_flip(_flip(data, rng), rng), rng)
        else:
            bad = bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)) + data[int(rng.integers(len(data))):]
        (tmp_path / "m.npz").write_bytes(bad)
        try:
            got = load_model(tmp_path / "m", fold_bn=False).initializers
        except BaseException as exc:  # noqa: BLE001
            _check_clear(exc, ("m.npz",), f"npz case {i} (kind {kind})")
            refused += 1
            continue
        assert all(np.array_equal(ref[k], got[k]) for k in ref), f"npz case {i}: changed weights were accepted"
        identical += 1
    REPORT["model npz"] = (n, refused, identical)
    assert refused > 0.9 * n


def _json_mutations(doc, rng):
    """A deep copy of ``doc`` with one field replaced by a value of the wrong type or removed."""
    doc = json.loads(json.dumps(doc))
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(node, list):
            for j, v in enumerate(node):
                paths.append(path + (j,))
                walk(v, path + (j,))

    walk(doc, ())
    path = paths[int(rng.integers(len(paths)))]
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    old = parent[path[-1]]
    choices = [None, 1.5, "x", [], {}, True, -1, [[[]]], 10**30]
    new = choices[int(rng.integers(len(choices)))]
    if isinstance(parent, dict) and rng.integers(4) == 0:
        del parent[path[-1]]
        return doc, path, "deleted"
    parent[path[-1]] = new
    return doc, path, (old, new)


def test_model_json_campaign(tmp_path):
    rng = np.random.default_rng(2)
    src = ROOT / "models" / "digits-mlp"
    shutil.copy(src.with_suffix(".npz"), tmp_path / "m.npz")
    text = src.with_suffix(".json").read_text()
    doc = json.loads(text)
    refused = accepted = 0
    n = 300 * SCALE
    for i in range(n):
        kind = int(rng.integers(3))
        if kind == 0:
            bad, what = text[: int(rng.integers(text.rindex("}")))], "truncated"
        elif kind == 1:
            mutated, path, change = _json_mutations(doc, rng)
            bad, what = json.dumps(mutated), f"{path}: {change}"
        else:
            bad, what = "[" * int(rng.integers(33, 200000)) if rng.integers(2) else '{"a": NaN}', "hostile"
        (tmp_path / "m.json").write_text(bad)
        try:
            load_model(tmp_path / "m")
        except BaseException as exc:  # noqa: BLE001
            _check_clear(exc, ("m.json", "m.npz", "graph", "node", "Node"), f"json case {i} ({what})")
            refused += 1
        else:
            accepted += 1  # a type change of a value the graph does not check (e.g. a name string -> "x")
            assert kind == 1, f"json case {i}: {what} was accepted"
    REPORT["model json"] = (n, refused, accepted)
    assert refused > 0.9 * n


GOLDEN = ROOT / "spec" / "golden" / "digits-cnn" / "minmax+static-minmax"


def test_golden_manifest_campaign(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "set"
    shutil.copytree(GOLDEN, root)
    data = (GOLDEN / "manifest.json").read_bytes()
    pin = load_golden(GOLDEN).manifest_sha256
    doc = json.loads(data)
    unpinned_refused = unpinned_accepted = 0
    n = 300 * SCALE
    for i in range(n):
        kind = int(rng.integers(3))
        if kind == 0:
            bad = _flip(data, rng)
        elif kind == 1:
            bad = data[: int(rng.integers(len(data) - 2))]
        else:
            bad = json.dumps(_json_mutations(doc, rng)[0]).encode()
        (root / "manifest.json").write_bytes(bad)
        with pytest.raises(GoldenFileError) as info:  # pinned: every change is refused
            load_golden(root, manifest_sha256=pin)
        _check_clear(info.value, ("manifest.json",), f"manifest case {i}")
        try:
            load_golden(root).check_files()
        except BaseException as exc:  # noqa: BLE001
            _check_clear(exc, ("manifest.json", "set/"), f"unpinned manifest case {i} (kind {kind})")
            unpinned_refused += 1
        else:
            unpinned_accepted += 1
    REPORT["golden manifest"] = (n, n, unpinned_refused, unpinned_accepted)


def test_golden_data_file_campaign(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "set"
    shutil.copytree(GOLDEN, root)
    gs = load_golden(root)
    files = sorted(gs.manifest["files"])
    n = 200 * SCALE
    for i in range(n):
        name = files[int(rng.integers(len(files)))]
        good = (GOLDEN / name).read_bytes()
        kind = int(rng.integers(3))
        bad = _flip(good, rng) if kind == 0 else good[: int(rng.integers(len(good)))] if kind == 1 else good + b"\0"
        (root / name).write_bytes(bad)
        with pytest.raises(GoldenFileError) as info:
            load_golden(root).check_files()
        _check_clear(info.value, (name,), f"golden file case {i}: {name}")
        (root / name).write_bytes(good)
    REPORT["golden files"] = n


def test_onnx_campaign(tmp_path):
    pytest.importorskip("onnx")
    from refquant.onnx_io import import_onnx

    rng = np.random.default_rng(5)
    from refquant.onnx_io import export_float  # the float model, which import_onnx reads

    data = export_float(load_model(ROOT / "models" / "digits-mlp")).to_bytes()
    import_onnx_ok = import_onnx  # the unmutated model imports
    (tmp_path / "ok.onnx").write_bytes(data)
    import_onnx_ok(tmp_path / "ok.onnx")
    refused = accepted = 0
    n = 200 * SCALE
    for i in range(n):
        kind = int(rng.integers(4))
        bad = (_flip(data, rng) if kind == 0 else data[: int(rng.integers(len(data)))] if kind == 1
               else b"" if kind == 2 else bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)))
        (tmp_path / "m.onnx").write_bytes(bad)
        try:
            import_onnx(tmp_path / "m.onnx")
        except BaseException as exc:  # noqa: BLE001
            _check_clear(exc, ("m.onnx", "graph", "node", "Node", "initializer", "input", "output"), f"onnx case {i}")
            refused += 1
        else:
            accepted += 1  # protobuf has no checksum: a flipped weight bit is still a valid model
            assert kind in (0, 1), f"onnx case {i}: kind {kind} accepted"
    REPORT["onnx"] = (n, refused, accepted)


def test_zz_report(capsys):
    with capsys.disabled():
        print(f"\nbad-input campaign (scale {SCALE}): {json.dumps(REPORT)}")
