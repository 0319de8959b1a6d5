"""EfficientNet-Lite0 golden sets: ``refquant golden export efficientnet-lite0`` on two photo views,
``golden run``/``verify`` on the reference and Numba backends, and the QOperator model of the set
run in onnxruntime bit for bit (spec/models/efficientnet-lite0.md, "Golden sets").

onnxruntime is an exact oracle here only for int8 × int8 products: on x86-64 without AVX-VNNI
its uint8 × int8 GEMM saturates pair sums to int16 (``refquant.onnx_io.exact_integer_products``),
so the bit-exact run uses int8 activations (``static-minmax:8:signed``, asymmetric); the uint8
case runs only where the probe says onnxruntime multiplies u8 × s8 exactly.
"""

import numpy as np
import pytest
from tests_support import requires_real_model


pytestmark = requires_real_model("efficientnet-lite0")

VIEWS = ["chelsea/center", "coffee/flip"]
INT8 = "static-minmax:8:signed"


def _export(tmp, activations):
    from refquant.cli import main

    out = tmp / "gs"
    assert main(["golden", "export", "efficientnet-lite0", str(out), "--views", *VIEWS, "--calibration", "4",
                 "--activations", activations, "--onnx"]) == 0
    return out


@pytest.fixture(scope="module")
def int8_set(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("effnet-golden"), INT8)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_golden_run_on_each_backend_verifies_exactly(int8_set, backend, tmp_path):
    from refquant.cli import main
    from refquant.golden import load_golden, verify

    gs = load_golden(int8_set)
    assert gs.manifest["inputs"]["description"].startswith("photo views ['chelsea/center', 'coffee/flip']")
    assert sum(layer["op"] == "Conv" for layer in gs.layers) == 49
    out = tmp_path / f"{backend}.npz"
    assert main(["golden", "run", str(int8_set), "--backend", backend, "-o", str(out)]) == 0
    report = verify(gs, out)
    assert report.passed, report.summary
    assert not [r.name for r in report.layers if r.passed is None]


def _ort_outputs(root, tmp):
    """The set's QOperator model run in onnxruntime (CPU, one thread, no graph optimizations) on its
    own input .pb; onnxruntime's outputs written as .pb files in ``tmp``; with the expected ones."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from refquant.golden.onnx_layout import read_output_dir, read_pb
    from refquant.onnx_io import ort_session

    ds = root / "onnx" / "test_data_set_0"
    feeds = dict(read_pb(p) for p in sorted(ds.glob("input_*.pb")))
    expected = read_output_dir(ds)
    model = onnx.load_model(str(root / "onnx" / "model.onnx"))
    got = ort_session(model).run([name for name, _, _ in expected], feeds)
    for k, ((name, _, _), have) in enumerate(zip(expected, got)):
        (tmp / f"output_{k}.pb").write_bytes(numpy_helper.from_array(have, name).SerializeToString())
    return expected, got


def _mismatches(expected, got) -> tuple[int, int]:
    bad = total = 0
    for (name, want, _), have in zip(expected, got):
        assert want.dtype == have.dtype and want.shape == have.shape, name
        bad += int(np.count_nonzero(want.view(np.uint8) != have.view(np.uint8))) // want.itemsize \
            if want.dtype.kind == "f" else int(np.count_nonzero(want != have))
        total += want.size
    return bad, total


def test_qoperator_model_runs_bit_exactly_in_onnxruntime_with_int8_activations(int8_set, tmp_path):
    pytest.importorskip("onnxruntime")
    from refquant.golden import load_golden, verify

    expected, got = _ort_outputs(int8_set, tmp_path)
    bad, total = _mismatches(expected, got)
    assert total > 14_000_000  # every layer's integers of both views, and the logits
    assert bad == 0, f"{bad} of {total} elements differ from onnxruntime"
    report = verify(load_golden(int8_set), tmp_path)
    assert report.passed, report.summary


def test_qoperator_model_with_uint8_activations_where_onnxruntime_multiplies_u8s8_exactly(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_oracle import ort_u8s8_exact, u8s8_quirk

    if not ort_u8s8_exact():
        pytest.skip(f"{u8s8_quirk()}; the int8-activation set is the bit-exact check on this host")
    root = _export(tmp_path, "static-minmax:8")
    out = tmp_path / "ort"
    out.mkdir()
    bad, total = _mismatches(*_ort_outputs(root, out))
    assert bad == 0, f"{bad} of {total} elements differ from onnxruntime"


def test_real_model_export_names_a_bad_view(tmp_path, capsys):
    from refquant.cli import main

    assert main(["golden", "export", "efficientnet-lite0", str(tmp_path / "g"), "--views", "chelsea/centre"]) == 2
    assert "chelsea/centre" in capsys.readouterr().err
