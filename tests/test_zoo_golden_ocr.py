"""PP-OCRv4 golden sets: ``refquant golden export ppocrv4-det|ppocrv4-rec --views REGION`` (the
graph imported at the region's size), ``golden run``/``verify`` on the reference and Numba
backends, and the set's QOperator model run in onnxruntime — bit for bit on every integer
layer (spec/models/ppocrv4.md, "Golden sets").

Small regions keep this to seconds: the detector on a 32×32 region of page.png, the recogniser
on a 21×24 crop (imported at 48×64). onnxruntime is an exact oracle for int8 × int8 products
only (``refquant.onnx_io.exact_integer_products``: its u8 × s8 GEMM saturates pair sums on this
CPU), so the sets use int8 activations (``static-minmax:8:signed:asym``).

Float islands — operators with no integer rule (Mul, Div, HardSigmoid, Sigmoid, LayerNorm's
pieces, …: records with ``kernel == "float"``) — run in float32 in both engines, and float
operators are not bit-specified: onnxruntime's Sigmoid/Softmax/Pow use their own
approximations. Their outputs (and the quantized values they feed) are compared and reported
apart, in LSBs, never counted as integer mismatches.
"""

import numpy as np
import pytest
from tests_support import requires_real_model

pytestmark = [requires_real_model("ppocrv4-det"), requires_real_model("ppocrv4-rec")]

INT8 = "static-minmax:8:signed:asym"
VIEWS = {"ppocrv4-det": "page/100:132,0:32", "ppocrv4-rec": "page/111:132,4:28"}


def _export(tmp, model, activations=INT8):
    from refquant.cli import main

    out = tmp / model
    assert main(["golden", "export", model, str(out), "--views", VIEWS[model], "--activations", activations,
                 "--onnx"]) == 0
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ocr-golden")
    return {m: _export(tmp, m) for m in VIEWS}


@pytest.mark.parametrize("model", list(VIEWS))
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_golden_run_on_each_backend_verifies_exactly(sets, model, backend, tmp_path):
    from refquant.cli import main
    from refquant.golden import load_golden, verify

    gs = load_golden(sets[model])
    assert gs.manifest["inputs"]["description"].startswith(f"text views ['{VIEWS[model]}']")
    out = tmp_path / "out.npz"
    assert main(["golden", "run", str(sets[model]), "--backend", backend, "-o", str(out)]) == 0
    report = verify(gs, out)
    assert report.passed, report.summary
    assert not [r.name for r in report.layers if r.passed is None]


def _compare_with_onnxruntime(root):
    """``{"integer": (values, mismatches, max LSB), "float": (...)}`` of every layer output of the
    set's QOperator model run in onnxruntime against the set's expected .pb files."""
    onnx = pytest.importorskip("onnx")
    from refquant.golden import load_golden
    from refquant.golden.onnx_layout import read_output_dir, read_pb
    from refquant.onnx_io import ort_session

    gs = load_golden(root)
    layer_of = {v: k for k, v in gs.manifest["onnx"]["layer_outputs"].items()}
    kernel = {layer["name"]: layer["kernel"] for layer in gs.layers}
    ds = root / "onnx" / "test_data_set_0"
    feeds = dict(read_pb(p) for p in sorted(ds.glob("input_*.pb")))
    expected = read_output_dir(ds)
    got = ort_session(onnx.load_model(str(root / "onnx" / "model.onnx"))).run([n for n, _, _ in expected], feeds)
    tally = {"integer": [0, 0, 0], "float": [0, 0, 0]}
    for (name, want, _), have in zip(expected, got):
        assert want.dtype == have.dtype and want.shape == have.shape, name
        if want.dtype.kind == "f":  # the model's float output: dequantized from the last layer, or a float op
            lsb = np.zeros(want.shape, np.int64) if np.array_equal(want, have) else np.abs(
                want.view(np.int32).astype(np.int64) - have.view(np.int32))  # in float32 ulps
            kind = "float"
        else:
            lsb = np.abs(want.astype(np.int64) - have.astype(np.int64))
            kind = "float" if kernel[layer_of[name]] == "float" else "integer"
        t = tally[kind]
        t[0] += want.size
        t[1] += int(np.count_nonzero(lsb))
        t[2] = max(t[2], int(lsb.max(initial=0)))
    return {k: tuple(v) for k, v in tally.items()}


@pytest.mark.parametrize("model", list(VIEWS))
def test_qoperator_model_runs_bit_exactly_in_onnxruntime_on_the_integer_layers(sets, model, capsys):
    pytest.importorskip("onnxruntime")
    tally = _compare_with_onnxruntime(sets[model])
    values, bad, worst = tally["integer"]
    with capsys.disabled():
        print(f"\n{model}: integer layers {values} values, {bad} mismatches (max {worst} LSB); float islands "
              f"{tally['float'][0]} values, {tally['float'][1]} differ (max {tally['float'][2]} LSB)")
    assert values > 100_000
    assert bad == 0, f"{bad} of {values} integer values differ from onnxruntime (max {worst} LSB)"


def test_qoperator_model_with_uint8_activations_where_onnxruntime_multiplies_u8s8_exactly(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_oracle import ort_u8s8_exact, u8s8_quirk

    if not ort_u8s8_exact():
        pytest.skip(f"{u8s8_quirk()}; the int8-activation sets are the bit-exact check on this host")
    tally = _compare_with_onnxruntime(_export(tmp_path, "ppocrv4-rec", "static-minmax:8"))
    assert tally["integer"][1] == 0, tally


def test_views_are_checked(tmp_path, capsys):
    from refquant.cli import main

    for views, message in ((["page/100:132"], "IMAGE/R0:R1,C0:C1"), (["page/0:500,0:32"], "outside page"),
                           (["pages"], "unknown text image 'pages'")):
        assert main(["golden", "export", "ppocrv4-det", str(tmp_path / "g"), "--views", *views]) == 2
        assert message in capsys.readouterr().err
    assert main(["golden", "export", "ppocrv4-rec", str(tmp_path / "g"), "--views", "page",
                 "--calibration", "4"]) == 2
    assert "mirrored" in capsys.readouterr().err
