"""The backend conformance kit on three backends — Numba (conforms), onnxruntime (conforms in
float32 mode, the only one it has) and a deliberately faulty one (caught and explained) — plus
command-line backends, the shrinking to one output element, and the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import faulty_backend
from refquant.cli import main
from refquant.golden import load_golden, replay, verify
from refquant.kernels import fast, reference
from refquant.testing.backend import (
    CommandBackend, KernelCase, check_backend, kernel_cases, resolve_backend, shrink_to_element,
)


def test_numba_backend_conforms_in_every_mode():
    # The Numba kernels are property-tested against the reference in test_kernels_fast.py; here
    # the kit is under test, so fewer cases per operator and mode keep this file quick.
    report = check_backend(fast, max_examples=30)
    assert report.ok, str(report)
    assert {(r.op, r.mode) for r in report.results} >= {(op, m) for op in ("conv", "matmul")
                                                        for m in ("float32", "float64", "fixed-point",
                                                                  "fixed-point-single")}
    assert all(r.examples == 30 for r in report.results) and not report.skipped


def test_onnxruntime_backend_conforms_in_float32_and_declares_only_that():
    """Where onnxruntime saturates u8·s8 pair sums on this host (measured), the backend declares
    (uint8, int8, uint8) a limitation instead of a capability, and refuses it by name."""
    ort_backend = pytest.importorskip("refquant.onnx_io.ort_backend")
    pytest.importorskip("onnxruntime")
    from refquant.onnx_io import exact_integer_products

    report = check_backend(ort_backend)
    assert report.ok, str(report)
    assert [(r.op, r.mode) for r in report.results] == [("conv", "float32"), ("matmul", "float32")]
    assert len(report.skipped) == 6 and all("declares modes float32" in why for *_, why in report.skipped)
    u8s8 = ("uint8", "int8", "uint8")
    if exact_integer_products("uint8", "int8"):
        assert u8s8 in ort_backend.CAPABILITIES["dtypes"] and not report.limitations
    else:
        assert u8s8 not in ort_backend.CAPABILITIES["dtypes"] and len(ort_backend.CAPABILITIES["dtypes"]) == 2
        assert len(report.limitations) == 1 and "saturates each u8·s8 pair sum to int16" in report.limitations[0]
        assert "declared limitation: (uint8, int8, uint8) not offered" in str(report)
        assert report.to_dict()["limitations"] == report.limitations
        case = KernelCase("matmul", np.full((1, 4), 255, np.uint8), np.full((2, 4), 127, np.int8), 0,
                          np.zeros(2, np.int8), None, 0.5, np.full(2, 0.5, np.float32), 0.25, 0, "uint8", "float32",
                          None)
        with pytest.raises(ValueError, match="uint8 x int8 is not offered on this host.*65534"):
            case.run(ort_backend)
    case = KernelCase("matmul", np.ones((1, 3), np.uint8), np.ones((2, 3), np.int8), 0, np.zeros(2, np.int8), None,
                      0.5, np.full(2, 0.5, np.float32), 0.25, 0, "uint8", "fixed-point", None)
    with pytest.raises(ValueError, match="'float32' mode only"):
        case.run(ort_backend)


def test_onnxruntime_backend_registers_through_the_backends_hook():
    ort_backend = pytest.importorskip("refquant.onnx_io.ort_backend")
    pytest.importorskip("onnxruntime")
    from refquant.executor import quantize_model
    from refquant.plugins import register_plugin, unregister_plugin
    from refquant.registry import backends
    from tests_support import small_cnn

    graph, x = small_cnn(seed=8, n=16)
    # (activations, weights) uint8 x int8, uint8 x uint8, int8 x int8: the ones the backend
    # declares on this host run bit-exactly; a refused one raises (see the test above)
    plans = {("uint8", "int8", "uint8"): "weights=minmax:8:per-channel activations=static-minmax:8",
             ("uint8", "uint8", "uint8"): "weights=minmax:8:unsigned:asym activations=static-minmax:8",
             ("int8", "int8", "int8"): "weights=minmax:8:per-channel activations=static-minmax:8:signed"}
    declared = [plans[d] for d in ort_backend.CAPABILITIES["dtypes"]]
    assert "weights=minmax:8:unsigned:asym activations=static-minmax:8" in declared
    register_plugin(ort_backend, "onnxruntime-kernels")
    try:
        assert "onnxruntime" in backends()
        for plan in plans.values():
            qm = quantize_model(graph, plan, x)
            if plan not in declared:
                with pytest.raises(ValueError, match="not offered on this host"):
                    qm.run(x, backend="onnxruntime")
                continue
            got = qm.run(x, backend="onnxruntime", keep=True)
            want = qm.run(x, backend="reference", keep=True)
            for a, b in zip(got.records, want.records):
                assert (a.q_output is None and b.q_output is None) or np.array_equal(a.q_output, b.q_output), \
                    f"{plan}: {a.name}"
    finally:
        unregister_plugin(ort_backend)
    assert "onnxruntime" not in backends()


@pytest.fixture(scope="module")
def faulty_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit")
    return check_backend(faulty_backend, out_dir=out, name="faulty"), out


def test_the_faulty_backend_is_caught_and_its_rule_named(faulty_report):
    report, out = faulty_report
    assert not report.ok
    failed = {(r.op, r.mode): r for r in report.failures}
    assert set(failed) == {("conv", "float32"), ("matmul", "float32")}
    for r in failed.values():
        assert r.first_bad["matching_rules"] == ["float32-half-away"] and r.first_bad["matching_modes"] == []
        assert "'float32 product rounded half away from zero' exactly on all" in r.message
        assert "breaks round half to even" in r.message
        fb = r.first_bad
        assert abs(fb["backend"] - fb["reference"]) == 1
        assert fb["acc_times_multiplier"] % 1 == 0.5  # an exact tie, rounded the wrong way
        assert f"first at {tuple(fb['index'])}: reference {fb['reference']}, backend {fb['backend']}" in r.message
    assert "FAIL conv (float32)" in str(report) and "int32" not in {r.op for r in report.failures}


def test_the_minimal_failing_case_is_one_element_and_a_golden_case_verify_reproduces(faulty_report):
    report, out = faulty_report
    for r in report.failures:
        gs = load_golden(r.case_dir)
        layer = gs.layer("case")
        assert gs.layer_tensor(layer, "output").size == 1
        assert np.array_equal(replay(gs)["case"], gs.layer_tensor(layer, "output"))
        v = verify(gs, f"{r.case_dir}.backend.npz")
        assert not v.passed and "float32-half-away" in v.layers[-1].matching_rules  # one element: one tie
        assert np.array_equal(replay(gs, faulty_backend)["case"],
                              np.load(f"{r.case_dir}.backend.npz", allow_pickle=False)["case"])


@given(st.sampled_from(["conv", "matmul"]).flatmap(lambda op: kernel_cases(op, "float32")), st.data())
def test_shrinking_to_one_element_keeps_its_accumulator_and_output(case, data):
    try:
        y = case.run(reference)
    except (OverflowError, ValueError):
        return
    index = tuple(data.draw(st.integers(0, s - 1)) for s in y.shape)
    small = shrink_to_element(case, index)
    if small is case:  # a window of padding only: not shrunk
        return
    assert small.run(reference).size == 1
    assert small.run(reference).reshape(()) == y[index]
    assert small.accumulators().reshape(()) == case.accumulators()[index]


COMMAND = """
import sys, numpy as np
from refquant.golden import load_golden, replay
gs = load_golden(sys.argv[1])
y = replay(gs)["case"]
np.savez(sys.argv[2], case=y if sys.argv[3] == "right" else y.astype(np.int32))
"""


def test_a_command_line_backend_is_run_per_case(tmp_path):
    script = tmp_path / "backend.py"
    script.write_text(COMMAND)
    right = CommandBackend(f"{sys.executable} {script} {{in}} {{out}} right", capabilities={"modes": ("float32",)})
    report = check_backend(right, max_examples=4, name="command")
    assert report.ok and [r.examples for r in report.results] == [4, 4], str(report)
    wrong = CommandBackend(f"{sys.executable} {script} {{in}} {{out}} wrong", capabilities={"modes": ("float32",)})
    report = check_backend(wrong, max_examples=4, ops=["matmul"], evidence_cases=0)
    assert not report.ok and "returned dtype int32, expected" in report.failures[0].message
    with pytest.raises(ValueError, match=r"\{in\} and \{out\}"):
        CommandBackend("my-backend --input x")


def test_resolve_backend_by_name_module_and_file():
    assert resolve_backend("reference") is reference
    assert resolve_backend("refquant.kernels.fast") is fast
    assert resolve_backend(faulty_backend.__file__).requantize.__doc__ == faulty_backend.requantize.__doc__
    with pytest.raises(ValueError, match="neither a registered backend"):
        resolve_backend("no.such.backend")


def test_command_line_conform(tmp_path, capsys):
    assert main(["golden", "conform", "--backend", "numba", "--modes", "float32", "--examples", "10"]) == 0
    assert "0 failed" in capsys.readouterr().out
    code = main(["golden", "conform", "--backend", faulty_backend.__file__, "--ops", "matmul",
                 "--out", str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["ok"] is False
    failure = doc["results"][0]
    assert failure["first_bad"]["matching_rules"] == ["float32-half-away"]
    assert main(["golden", "verify", failure["case_dir"], "--outputs", failure["case_dir"] + ".backend.npz"]) == 1
    assert "half away from zero" in capsys.readouterr().out
