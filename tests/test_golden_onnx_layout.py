"""The ONNX backend test-data layout refquant writes: read back by onnx's own numpy_helper, run
by onnxruntime and by the onnx reference evaluator, and verified layer by layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from refquant.golden import load_golden, verify  # noqa: E402
from refquant.golden.onnx_layout import read_pb  # noqa: E402
from refquant.golden.shipped import GOLDEN_DIR, INDEX  # noqa: E402
from refquant.onnx_io import ort_session  # noqa: E402

INDEX_DOC = json.loads((GOLDEN_DIR / INDEX).read_text())
MODEL_SETS = [s["dir"] for s in INDEX_DOC["sets"] if s["onnx"]]
OP_CASES = INDEX_DOC["onnx_operator_cases"]


def _tensor(path):
    """A .pb file read with nothing but onnx itself."""
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return t.name, numpy_helper.to_array(t)


def _data_set(root):
    ds = root / "test_data_set_0"
    inputs = [_tensor(p) for p in sorted(ds.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))]
    outputs = [_tensor(p) for p in sorted(ds.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))]
    return inputs, outputs


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_every_shipped_model_has_a_model_level_onnx_case():
    assert {d.split("/")[0] for d in MODEL_SETS} == {s["model"] for s in INDEX_DOC["sets"]}


@pytest.mark.parametrize("rel", MODEL_SETS)
def test_model_level_case_reads_back_and_runs_bit_exactly_in_onnxruntime(rel, tmp_path):
    gs = load_golden(GOLDEN_DIR / rel)
    root = GOLDEN_DIR / rel / "onnx"
    model = onnx.load_model(str(root / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inputs, outputs = _data_set(root)
    assert [n for n, _ in inputs] == [i.name for i in model.graph.input]
    assert [n for n, _ in outputs] == [o.name for o in model.graph.output]
    # the .pb tensors are the golden set's own tensors
    layer_of = {v: k for k, v in gs.manifest["onnx"]["layer_outputs"].items()}
    for name, array in outputs:
        if name in layer_of:
            assert _bits_equal(array, gs.layer_tensor(gs.layer(layer_of[name]), "output")), name
        else:
            out = next(o for o in gs.manifest["outputs"] if o["name"] == name)
            assert _bits_equal(array, gs.tensor(out["file"]))
    # onnxruntime: CPU, one thread, no graph optimizations
    got = ort_session(model).run(None, dict(inputs))
    for (name, want), have in zip(outputs, got):
        assert _bits_equal(have, want), f"{rel}: onnxruntime differs from refquant on {name}"
    # onnxruntime's outputs, written as .pb files, pass verify
    ds = tmp_path / "ort"
    ds.mkdir()
    for k, ((name, _), have) in enumerate(zip(outputs, got)):
        (ds / f"output_{k}.pb").write_bytes(numpy_helper.from_array(have, name).SerializeToString())
    report = verify(gs, ds)
    assert report.passed, report.summary
    assert not [r.name for r in report.layers if r.passed is None]  # every layer compared


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c["dir"])
def test_operator_cases_run_in_the_oracle_their_mode_names(case):
    root = GOLDEN_DIR / case["dir"]
    model = onnx.load_model(str(root / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inputs, outputs = _data_set(root)
    feeds = dict(inputs)
    doc = json.loads((root / "case.json").read_text())
    assert doc["requant"] == case["requant"] and doc["ops"] == [case["op"]]
    oracles = []
    if case["requant"] in (None, "float32"):
        oracles.append(("onnxruntime", lambda: ort_session(model).run(None, feeds)))
    if case["requant"] in (None, "float64"):
        oracles.append(("onnx reference", lambda: ReferenceEvaluator(model).run(None, feeds)))
    for who, run in oracles:
        for (name, want), have in zip(outputs, run()):
            assert _bits_equal(np.asarray(have), want), f"{case['dir']}: {who} differs on {name}"


def test_tie_cases_separate_the_two_oracles():
    """The *_ties cases differ between the float32 (onnxruntime) and float64 (onnx reference) modes."""
    for base, differ, size in (("qlinearconv_ties", 25, 48), ("qlinearmatmul_ties", 6, 20)):
        (_, a), = _data_set(GOLDEN_DIR / "onnx-ops" / base)[1]
        (_, b), = _data_set(GOLDEN_DIR / "onnx-ops" / f"{base}_float64")[1]
        assert (np.count_nonzero(a != b), a.size) == (differ, size)
        assert np.max(np.abs(a.astype(int) - b.astype(int))) == 1


def test_read_pb_rejects_damaged_files(tmp_path):
    good = numpy_helper.from_array(np.arange(100, dtype=np.uint8).reshape(10, 10), "y").SerializeToString()
    (tmp_path / "ok.pb").write_bytes(good)
    name, a = read_pb(tmp_path / "ok.pb")
    assert name == "y" and a.shape == (10, 10)
    (tmp_path / "cut.pb").write_bytes(good[:-7])
    with pytest.raises(ValueError, match="cut.pb"):
        read_pb(tmp_path / "cut.pb")
