"""``refquant compare`` and ``refquant run`` on a small model saved to disk."""

import json

import numpy as np
import pytest

from refquant.cli import main
from refquant.compare import ROW_FIELDS
from refquant.metrics import sqnr_db
from refquant.data import SHIFTED_SETS
from refquant.graph import save_model

from tests_support import small_cnn, small_mlp


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, make in (("cnn", small_cnn), ("mlp", small_mlp)):
        g, _ = make()
        save_model(g, d / name)
        paths[name] = str(d / f"{name}.json")
    return paths


def test_sqnr_db():
    ref = np.array([3.0, 4.0])
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref + np.array([0.3, 0.4])) == pytest.approx(20.0)


def test_compare_json_rows(model_paths, capsys):
    assert main(["compare", model_paths["cnn"], model_paths["mlp"], "--bits", "8", "--weights", "minmax",
                 "--activations", "static-minmax", "dynamic", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    datasets = ["test", *SHIFTED_SETS]
    # 2 models × 1 bit width × 2 granularities × 1 × 2 strategies × 7 data sets
    assert len(rows) == 2 * 2 * 2 * len(datasets)
    assert all(set(r) == set(ROW_FIELDS) for r in rows)
    assert {r["dataset"] for r in rows} == set(datasets)
    assert {r["granularity"] for r in rows} == {"per-tensor", "per-channel"}
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0
        if r["dataset"] == "test" or r["activations"] == "dynamic":
            # shifted inputs leave a static calibration's range; on the calibration-like clean
            # set, or with ranges computed per input, 8 bits track the float logits
            assert r["sqnr_db"] > 20, r
    by = {(r["model"], r["activations"], r["granularity"], r["dataset"]): r for r in rows}
    for key, r in by.items():
        if key[1] == "dynamic":
            static = by[(key[0], "static-minmax", key[2], key[3])]
            # dynamic pays for its int32 accumulators; in the small MLP the float input's
            # quantization step is the peak either way, in the CNN the conv accumulators are
            assert r["peak_working_bytes"] >= static["peak_working_bytes"]
            if key[0] == model_paths["cnn"]:
                assert r["peak_working_bytes"] > static["peak_working_bytes"]
    assert "[" in err and "done" in err  # the progress bar goes to stderr


def test_compare_unknown_strategy_is_one_clear_line(model_paths, capsys):
    assert main(["compare", model_paths["cnn"], "--weights", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refquant: error: unknown weights strategy 'nope'") and err.count("\n") == 1


def test_run_prints_accuracy_and_layers(model_paths, capsys):
    assert main(["run", model_paths["cnn"], "--weights", "minmax:8:per-channel",
                 "--activations", "dynamic:8", "--backend", "numba", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["images"] == 599 and 0 <= doc["summary"]["accuracy"] <= 1
    kernels = {layer["layer"]: layer["kernel"] for layer in doc["layers"]}
    assert kernels["conv1"] == "unfused" and kernels["maxpool_0"] == "integer"


def test_run_unknown_model(capsys):
    assert main(["run", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_topk_agreement():
    from refquant.metrics import agreement_counts, topk_agreement

    ref = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    approx = np.array([[0.0, 3.0, 1.0, 2.0],    # same top-1
                       [1.0, 5.0, 2.0, 0.0],    # float's class 0 is 3rd
                       [0.0, 0.0, 1.0, 1.0]])   # a tie at the top counts in its favour
    assert agreement_counts(ref, approx, 1) == (2, 3)
    assert topk_agreement(ref, approx, 2) == pytest.approx(2 / 3)
    assert topk_agreement(ref, approx, 3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        topk_agreement(ref, approx, 5)
    with pytest.raises(ValueError, match="shape"):
        topk_agreement(ref, approx[:2], 1)


def test_compare_rows_carry_fidelity(model_paths):
    from refquant.compare import compare

    rows = compare([model_paths["mlp"]], bits=[8], weights=["minmax"], activations=["static-minmax"],
                   granularities=["per-tensor"], progress=False)
    for r in rows:
        assert 0 <= r.top5_agreement <= 1 and r.top1_agreement <= r.top5_agreement
        assert r.images > 0 and r.accuracy is not None
    assert next(r for r in rows if r.dataset == "test").top1_agreement > 0.9
