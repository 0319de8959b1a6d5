"""The 599-image grid table of ``spec/onnx-import.md`` ("Measured") is true on this host: its rows
are exactly the configurations ``tests/qimport_grid.py`` enumerates, and a fixed subset of its
rows — every model, every oracle kind (onnxruntime with optimizations on, the onnx reference
evaluator where onnxruntime's u8×s8 products saturate, onnxruntime with optimizations off —
on digits-mlp only: a ``qdq-float`` row of the convolutional models costs ~10 s of CPU, its float
islands emulating MLAS's FMA order), every form, granularity, dtype pair and calibration at least
once, and ``quantize_dynamic`` — is recomputed on all 599 digits test images and must equal the spec's cells.

The whole table is the output of the command the spec records (several minutes on this host);
this test recomputes the subset. The ``oracle`` and ``requant`` cells of u8×s8 rows depend on the
host (``exact_integer_products``): they are compared only where the probe finds onnxruntime
inexact for uint8×int8, as it is on the host the spec was measured on."""

from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from qimport_grid import CALIBRATIONS, MODELS, compare, grid, quantized_model  # noqa: E402
from refquant.onnx_io import exact_integer_products  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "spec" / "onnx-import.md"
HEAD = "| model | form | granularity | activations×weights | calibration | semantics | oracle | requant | bit-exact images |"
IMAGES = 599

#: (model, form, granularity, activations×weights, calibration, semantics) recomputed here
SUBSET = [
    ("digits-mlp", "qoperator", "tensor", "u8u8", "Percentile", "integer"),
    ("digits-mlp", "qdq", "channel", "u8s8", "Entropy", "qdq-float"),
    ("digits-mlp", "dynamic", "tensor", "u8u8", "-", "integer"),
    ("digits-mlp", "dynamic", "tensor", "u8s8", "-", "integer"),
    ("digits-cnn", "qdq", "channel", "s8s8", "Entropy", "integer"),
    ("digits-cnn", "qoperator", "tensor", "u8s8", "MinMax", "integer"),
    ("digits-resnet", "qdq", "tensor", "u8u8", "Percentile", "integer"),
    ("digits-resnet", "qoperator", "channel", "s8s8", "MinMax", "integer"),
    ("digits-resnet", "qdq", "channel", "u8s8", "Entropy", "integer"),
    ("digits-resnet", "qdq", "tensor", "s8s8", "MinMax", "integer"),
]


def spec_table() -> dict:
    """``{(model, form, granularity, acts, calibration, semantics): {"oracle", "requant", "bit_exact"}}``."""
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEAD)
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 9, line
        key = tuple(cells[:6])
        assert key not in rows, f"row twice in the spec: {key}"
        rows[key] = {"oracle": cells[6], "requant": cells[7], "bit_exact": cells[8]}
    return rows


def test_the_spec_table_lists_exactly_the_grid():
    want = set()
    for name, form, gran, act, cal in grid(MODELS, acts=("u8u8", "s8s8", "u8s8"), calibrations=CALIBRATIONS):
        for sem in ("integer", "qdq-float") if form == "qdq" else ("integer",):
            want.add((name, form, gran, act, cal, sem))
    want |= {("digits-mlp", "dynamic", "tensor", act, "-", "integer") for act in ("u8u8", "u8s8")}
    table = spec_table()
    assert set(table) == want
    assert set(SUBSET) <= want
    assert all(r["bit_exact"] == f"{IMAGES}/{IMAGES}" for r in table.values()), "the spec records a mismatch"
    # the subset covers every model, form, granularity, dtype pair, calibration and oracle kind
    for k in range(5):
        assert {s[k] for s in SUBSET} >= {w[k] for w in want}, k
    kinds = {table[s]["oracle"].split(",")[0].split(" (")[0] + (" off" if "off" in table[s]["oracle"] else "")
             for s in SUBSET}
    assert len(kinds) == 3, kinds


@pytest.mark.parametrize("key", SUBSET, ids=["-".join(k) for k in SUBSET])
def test_a_spec_row_recomputes_on_all_599_images(key):
    name, form, gran, act, cal, sem = key
    cell = spec_table()[key]
    row = compare(quantized_model(name, form, gran, act, cal), sem, IMAGES, backends=("reference", "numba"))
    assert f"{row['bit_exact']}/{IMAGES}" == cell["bit_exact"], row
    if act == "u8s8" and sem == "integer" and exact_integer_products("uint8", "int8"):
        # a host where onnxruntime multiplies u8×s8 exactly: the oracle is onnxruntime itself
        assert row["oracle"] == "onnxruntime, optimizations on", row
        return
    assert (row["oracle"], row["requant"]) == (cell["oracle"], cell["requant"]), row
