"""Golden sets of transformers (format version 2): integer (index) graph inputs, float-island
tensors, the float values float operators read, constants in files — exported, replayed, verified,
and refused when damaged. A tiny embedding → LayerNorm → attention-free block stands in for a
transformer without the model; ``minilm-l6`` itself when its package is installed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from refquant.executor import quantize_model
from refquant.golden import GoldenFileError, export_golden, load_golden, replay, verify
from refquant.golden.files import file_entry, npy_bytes
from refquant.golden.manifest import FORMAT_VERSIONS, dumps
from refquant.graph import GraphBuilder
from tests_support import requires_real_model

PLANS = ("weights=minmax:8:per-channel activations=static-minmax:8",
         "weights=minmax:8:per-channel activations=dynamic:8",
         "weights=minmax:8:per-channel activations=dynamic:8:per=token")


def tiny_transformer(seed: int = 0):
    """ids [N, S] int64 → Gather(table 5000×8) → LayerNorm → MatMul + bias → Gelu → MatMul → + residual,
    with a float mask input multiplied in; the table (40 000 values) is written to a file."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("tiny-transformer")
    ids = b.input("ids", ["N", "S"], "int64")
    mask = b.input("mask", ["N", "S"])
    e = b.node("Gather", [rng.normal(size=(5000, 8)).astype(np.float32), ids], "embed", axis=0)
    h = b.node("LayerNormalization", [e, np.ones(8, np.float32), np.zeros(8, np.float32)], "norm", axis=-1,
               epsilon=1e-5)
    f = b.add(b.matmul(h, rng.normal(size=(8, 16)).astype(np.float32), name="up"),
              rng.normal(size=16).astype(np.float32), name="up_bias")
    f = b.node("Gelu", [f], "gelu")
    f = b.matmul(f, rng.normal(size=(16, 8)).astype(np.float32) / 4, name="down")
    h = b.add(f, h, name="residual")
    m = b.reshape(mask, [0, 0, 1], name="mask3")
    out = b.node("Mul", [h, m], "masked")
    graph = b.build(outputs=[out])
    feeds = [{"ids": rng.integers(0, 5000, size=(2, 5)).astype(np.int64),
              "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)} for _ in range(3)]
    return graph, feeds


@pytest.fixture(scope="module", params=PLANS)
def golden(request, tmp_path_factory):
    graph, feeds = tiny_transformer()
    qm = quantize_model(graph, request.param, feeds[:2])
    root = tmp_path_factory.mktemp("tiny") / "set"
    export_golden(qm, feeds[2], root, seed=0, input_description="random ids")
    return qm, feeds[2], root


def _executor_outputs(qm, feeds, backend="numba"):
    result = qm.run(feeds, keep=True, backend=backend)
    out = {r.name: (r.q_output if r.q_output is not None else r.float_output) for r in result.records}
    return {**out, **feeds, **result.outputs}


def test_the_set_records_index_inputs_float_islands_and_float_values(golden):
    qm, _, root = golden
    gs = load_golden(root)
    per_token = "per=token" in str(qm.plan)
    qp = gs.qparams(gs.layer("norm"), "output")
    assert (qp.block_size, qp.scale.shape) == ((8, (2, 5, 1)) if per_token else (0, ()))
    assert gs.manifest["format_version"] == 2
    kinds = {layer["name"]: layer.get("output_kind", "quantized") for layer in gs.layers}
    assert kinds["ids"] == "index" and kinds["mask"] == "float" and kinds["embed"] == "float"
    assert kinds["norm"] == "quantized" and kinds["up"] == "float" and kinds["gelu"] == "quantized"
    norm = gs.layer("norm")
    assert gs.layer_tensor(norm, "float").dtype == np.float32  # the residual Add reads this, not the integers
    embed = gs.layer("embed")
    table = embed["constants"]["data"]
    assert "file" in table and gs.tensor(table["file"]).shape == (5000, 8)
    assert gs.layer_tensor(gs.layer("ids"), "output").dtype == np.int64


def test_replay_and_the_numba_run_reproduce_every_layer_bit_for_bit(golden):
    qm, feeds, root = golden
    gs = load_golden(root)
    replayed = replay(gs)
    replayed.update({o["name"]: replayed[o["layer"]] for o in gs.manifest["outputs"]})
    report = verify(gs, replayed)
    assert report.passed, report.summary
    report = verify(gs, _executor_outputs(qm, feeds))
    assert report.passed and "max |difference| 0 LSB" in report.summary, report.summary
    assert all(r.status == "exact" for r in report.layers if r.passed is not None)


def test_a_float_island_is_compared_bit_for_bit_or_within_the_stated_tolerance(golden):
    qm, feeds, root = golden
    outputs = _executor_outputs(qm, feeds)
    up = outputs["up"].copy()
    up.reshape(-1)[3] = np.nextafter(up.reshape(-1)[3], np.float32(np.inf))  # one ULP
    outputs["up"] = up
    report = verify(root, outputs)
    r = next(r for r in report.layers if r.name == "up")
    assert not report.passed and r.status == "differs" and r.worse == 1 and r.first_mismatch["index"] == [0, 0, 3]
    report = verify(root, outputs, float_tolerance=1e-6)
    r = next(r for r in report.layers if r.name == "up")
    assert report.passed and r.within_1 == 1 and 0 < r.max_rel_diff <= 1e-6
    outputs["up"] = up + np.float32(1.0)
    assert not verify(root, outputs, float_tolerance=1e-6).passed
    outputs["up"] = up.astype(np.int32)
    r = next(r for r in verify(root, outputs).layers if r.name == "up")
    assert r.status == "error" and "float32" in r.message
    with pytest.raises(ValueError, match="float_tolerance"):
        verify(root, outputs, float_tolerance=-1.0)


def test_sets_without_float_islands_keep_format_version_1(tmp_path):
    from tests_support import small_mlp

    graph, x = small_mlp(seed=1, n=8)
    qm = quantize_model(graph, PLANS[0], x)
    gs = export_golden(qm, x[:2], tmp_path / "mlp")
    assert gs.manifest["format_version"] == 1 and FORMAT_VERSIONS == (1, 2)
    assert all("output_kind" not in layer for layer in gs.layers)


# ---- hostile files: the new fields get the same checks as the old ones ---------------------------

def _tamper(root, tmp_path, edit):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    doc = json.loads((dst / "manifest.json").read_text())
    edit(doc, dst)
    (dst / "manifest.json").write_bytes(dumps(doc))
    return dst


def _replace_file(doc, dst, file, data: bytes, **extra):
    (dst / file).write_bytes(data)
    doc["files"][file] = file_entry(data, **extra)


def _layer(doc, name):
    return next(layer for layer in doc["layers"] if layer["name"] == name)


def _ids_as_float(doc, dst):
    f = _layer(doc, "ids")["tensors"]["output"]
    _replace_file(doc, dst, f, npy_bytes(np.zeros((2, 5), np.float32)), dtype="float32", shape=[2, 5])


def _float_as_int8(doc, dst):
    f = _layer(doc, "up")["tensors"]["output"]
    _replace_file(doc, dst, f, npy_bytes(np.zeros((2, 5, 16), np.int8)), dtype="int8", shape=[2, 5, 16])


def _pickled_ids(doc, dst):
    f = _layer(doc, "ids")["tensors"]["output"]
    _replace_file(doc, dst, f, _object_npy_bytes(), dtype="int64", shape=[1])


def _object_npy_bytes() -> bytes:
    """A ``.npy`` of one pickled object, as ``np.save`` writes it for an object array (header,
    then the pickle); written by hand, so nothing here ever allows pickles."""
    import io
    import pickle

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    buf.write(pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=3))
    return buf.getvalue()


def _huge_ids(doc, dst):
    f = _layer(doc, "ids")["tensors"]["output"]
    doc["files"][f]["bytes"] = 2**40


def _ids_header_lies(doc, dst):
    f = _layer(doc, "ids")["tensors"]["output"]
    data = npy_bytes(np.zeros((2, 5), np.int64)).replace(b"(2, 5)", b"(9, 9)")
    _replace_file(doc, dst, f, data, dtype="int64", shape=[9, 9])


def _version_1_with_new_fields(doc, dst):
    doc["format_version"] = 1


def _future_version(doc, dst):
    doc["format_version"] = 3


def _bool_version(doc, dst):
    doc["format_version"] = True


def _unknown_output_kind(doc, dst):
    _layer(doc, "up")["output_kind"] = "bfloat16"


def _float_with_qparams(doc, dst):
    _layer(doc, "up")["qparams"]["output"] = _layer(doc, "norm")["qparams"]["output"]


def _constant_file_shape(doc, dst):
    _layer(doc, "embed")["constants"]["data"]["shape"] = [50, 8]


def _constant_unlisted(doc, dst):
    _layer(doc, "embed")["constants"]["data"]["file"] = "../outside.npy"


def _constant_values_and_file(doc, dst):
    _layer(doc, "embed")["constants"]["data"]["values"] = [0.0]


def _float_value_int(doc, dst):
    f = _layer(doc, "norm")["tensors"]["float"]
    _replace_file(doc, dst, f, npy_bytes(np.zeros((2, 5, 8), np.int32)), dtype="int32", shape=[2, 5, 8])


def _nested_scale_not_blocked(doc, dst):
    _layer(doc, "gelu")["qparams"]["output"].update(scale=[[0.5]], zero_point=[[3]], block_size=0)


def _deep_nested_scale(doc, dst):
    nest = 0.5
    for _ in range(20):  # within the JSON depth limit, deeper than any tensor rank
        nest = [nest]
    _layer(doc, "gelu")["qparams"]["output"].update(scale=nest, block_size=4)


HOSTILE = [
    (_ids_as_float, "the index output file .* must record dtype int64 or int32, got 'float32'"),
    (_float_as_int8, "the float output file .* must record dtype float32, got 'int8'"),
    (_pickled_ids, r"00\.ids\.output\.npy"),
    (_huge_ids, "over the limit"),
    (_ids_header_lies, r"00\.ids\.output\.npy"),
    (_version_1_with_new_fields, "need format_version 2"),
    (_future_version, "'format_version' 3 is not supported"),
    (_bool_version, "'format_version' True is not supported"),
    (_unknown_output_kind, "'output_kind' must be one of"),
    (_float_with_qparams, "a 'float' output has no 'output' qparams"),
    (_constant_file_shape, "must record the constant's dtype and shape"),
    (_constant_unlisted, "which 'files' does not list"),
    (_constant_values_and_file, "one of 'values' or 'file'"),
    (_float_value_int, "the 'float' tensor file .* must record dtype float32"),
    (_nested_scale_not_blocked, r"'scale' must be a number or a list of numbers \(nested lists: blocked"),
    (_deep_nested_scale, r"'scale' must be a number or a list of numbers"),
]


@pytest.mark.parametrize("edit, message", HOSTILE, ids=[e.__name__.strip("_") for e, _ in HOSTILE])
def test_damaged_version_2_sets_are_refused_with_the_field_named(golden, tmp_path, edit, message):
    _, _, root = golden
    bad = _tamper(root, tmp_path, edit)
    with pytest.raises(GoldenFileError, match=message):
        load_golden(bad).check_files()


# ---- the real model ----------------------------------------------------------------------------------

@requires_real_model("minilm-l6")
def test_minilm_golden_export_replays_and_verifies(tmp_path):
    """``golden export minilm-l6`` on the one-layer model (every operator) with two sentences:
    replay on the Numba kernels and the executor's own run both verify exactly."""
    from refquant.zoo import load_minilm_tokenizer, weight_file
    from refquant.zoo.minilm import build_minilm, encode_sentences, read_safetensors

    graph = build_minilm(read_safetensors(weight_file("minilm-l6")), layers=1)
    feeds = encode_sentences(load_minilm_tokenizer(), ["Cats sleep.", "The market fell sharply today."])
    for plan in PLANS:
        qm = quantize_model(graph, plan, [feeds])
        gs = export_golden(qm, feeds, tmp_path / plan.split("=")[-1].replace(":", "-"), model_name="minilm-l6")
        kernels = {layer["kernel"] for layer in gs.layers if layer.get("output_kind") == "float"}
        assert kernels == {"unfused", "integer", "float", "input"}
        from refquant.kernels import fast

        replayed = replay(gs, fast)
        replayed.update({o["name"]: replayed[o["layer"]] for o in gs.manifest["outputs"]})
        assert verify(gs, replayed).passed
        report = verify(gs, _executor_outputs(qm, feeds))
        assert report.passed, report.summary


# ---- imported transformers: refquant's own QOperator export, onnxruntime's quantize_dynamic --------

def _ort_layer_values(model, gs, feeds) -> dict:
    """onnxruntime's value of every golden layer of an imported set (its tensor made a graph output)."""
    import onnx

    from refquant.golden.imported import layer_tensors
    from refquant.onnx_io.runtime import ort_session

    m = onnx.load_from_string(model.SerializeToString())
    tensors = layer_tensors(gs)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors.values()) if t not in have)
    sess = ort_session(m)
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return {layer: values[t] for layer, t in tensors.items()}


def test_matmul_integer_of_two_activations_is_the_exact_product():
    from refquant.onnx_io.qimport import matmul_integer_nd

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, size=(2, 3, 4, 7), dtype=np.uint8)
    b = rng.integers(-128, 128, size=(2, 3, 7, 5), dtype=np.int8)
    want = (a.astype(np.int64) - 131) @ (b.astype(np.int64) + 3)
    got = matmul_integer_nd(a, np.uint8(131), b, np.int8(-3), "scores")
    assert got.dtype == np.int32 and np.array_equal(got, want)
    with pytest.raises(ValueError, match="scores: MatMulInteger of two activations with a per-row"):
        matmul_integer_nd(a, np.full(4, 1, np.uint8), b, None, "scores")


@requires_real_model("minilm-l6")
@pytest.mark.parametrize("source", ["qoperator-int8", "ort-quantize-dynamic"])
def test_imported_minilm_golden_set_verifies_onnxruntime_per_layer(tmp_path, source):
    """The one-layer minilm as a quantized ONNX model — refquant's QOperator export (int8
    activations: onnxruntime multiplies s8×s8 exactly on every host) and onnxruntime's
    ``quantize_dynamic`` (uint8 activations × int8 weights) — imported (int64 token ids through
    Gather, 4-D ``MatMulInteger`` of two activations, a float graph output), exported as a golden
    set and compared with onnxruntime's own integers, layer by layer."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    from refquant.golden.imported import export_imported_golden
    from refquant.onnx_io import exact_integer_products, export_qoperator
    from refquant.onnx_io.anchors import ort_quantize_dynamic
    from refquant.zoo import load_minilm_tokenizer, weight_file
    from refquant.zoo.minilm import build_minilm, encode_sentences, read_safetensors

    graph = build_minilm(read_safetensors(weight_file("minilm-l6")), layers=1)
    feeds = encode_sentences(load_minilm_tokenizer(), ["Cats sleep.", "The market fell sharply today."])
    if source == "qoperator-int8":
        qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8:signed", [feeds])
        model = export_qoperator(qm).model
    else:
        model = onnx.load_from_string(ort_quantize_dynamic(graph))
    gs = export_imported_golden(model, feeds, tmp_path / "set", model_name=source)
    assert gs.manifest["format_version"] == 2 and gs.manifest["imported"]["float_outputs"] == [graph.outputs[0]]
    kinds = {(layer["op"], layer["kernel"], layer.get("output_kind", "quantized")) for layer in gs.layers}
    assert ("MatMul", "unfused", "accumulator") in kinds
    if source == "qoperator-int8":
        assert ("MatMul", "integer", "accumulator") in kinds  # Q·Kᵀ and P·V: MatMulInteger of two activations
    assert verify(gs, replay(gs)).passed
    report = verify(gs, _ort_layer_values(model, gs, feeds))
    if report.passed:
        return
    # where onnxruntime saturates u8·s8 pair sums (no VNNI), only uint8 × int8 MatMulInteger layers may differ
    assert not exact_integer_products("uint8", "int8"), report.summary
    failed = [r for r in report.layers if r.passed is False and r.inherited_from is None]
    assert all(r.op == "MatMul" and r.kernel == "unfused" for r in failed), report.summary


def test_the_cli_runs_and_verifies_a_version_2_set_with_a_float_tolerance(golden, tmp_path, capsys):
    from refquant.cli import main

    qm, feeds, root = golden
    assert main(["golden", "run", str(root), "--backend", "numba", "-o", str(tmp_path / "out.npz")]) == 0
    outputs = dict(np.load(tmp_path / "out.npz", allow_pickle=False))
    outputs["up"] = outputs["up"] * np.float32(1 + 2e-7)
    np.savez(tmp_path / "off.npz", **outputs)
    capsys.readouterr()
    assert main(["golden", "verify", str(root), "--outputs", str(tmp_path / "off.npz")]) == 1
    assert main(["golden", "verify", str(root), "--outputs", str(tmp_path / "off.npz"), "--float-tolerance", "1e-6"]) == 0
    assert "PASS" in capsys.readouterr().out
