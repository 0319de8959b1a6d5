"""``verify``: counts in LSBs, the first bad element, the mode or rule that explains a difference,
policies, inherited differences, damaged inputs, and the command line's exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import faulty_backend
from refquant.cli import main
from refquant.executor import quantize_model
from refquant.golden import RULES, compute_layer, explain_requantization, export_golden, load_golden, replay, verify
from refquant.golden.shipped import GOLDEN_DIR
from refquant.numerics import REQUANT_MODES, QParams, make_requantizer, requantize
from refquant.testing.backend import KernelCase, write_kernel_case
from tests_support import small_cnn


@pytest.fixture(scope="module")
def tie_case(tmp_path_factory):
    """A conv whose multiplier is exactly 1/2 and whose output zero point is odd: every odd
    accumulator is a tie, of both signs — where the requant modes part."""
    rng = np.random.default_rng(7)
    case = KernelCase("conv", rng.integers(0, 256, (1, 2, 6, 6)).astype(np.uint8),
                      rng.integers(-3, 4, (3, 2, 3, 3)).astype(np.int8), 128, np.zeros(3, np.int8),
                      rng.integers(-9, 10, 3).astype(np.int32), 2.0**-4, np.full(3, 2.0**-5, np.float32), 2.0**-8,
                      51, "uint8", "float32", None, {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1],
                                                     "group": 1})
    return write_kernel_case(case, tmp_path_factory.mktemp("case") / "ties")


@pytest.fixture(scope="module")
def model_set(tmp_path_factory):
    graph, x = small_cnn(seed=5, n=16)
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", x)
    return export_golden(qm, x[:4], tmp_path_factory.mktemp("golden") / "set", seed=5)


def test_refquant_against_itself_passes_on_the_checked_in_sets():
    for rel in ("digits-resnet/minmax+static-minmax", "digits-cnn/minmax+dynamic", "digits-mlp/mse+static-minmax"):
        gs = load_golden(GOLDEN_DIR / rel)
        report = verify(gs, replay(gs))
        assert report.passed, report.summary
        assert all(r.status == "exact" for r in report.layers if r.op != "Input")


@pytest.mark.parametrize("mode", ["float64", "fixed-point", "fixed-point-single"])
def test_a_backend_in_another_mode_is_named_by_that_mode(tie_case, mode):
    out = replay(tie_case, mode=mode)
    report = verify(tie_case, out)
    assert not report.passed
    r = next(r for r in report.layers if r.name == "case")
    golden = tie_case.layer_tensor(tie_case.layer("case"), "output")
    i = tuple(np.argwhere(golden != out["case"])[0])
    assert r.first_mismatch["index"] == list(i)
    assert (r.first_mismatch["golden"], r.first_mismatch["backend"]) == (golden[i], out["case"][i])
    assert mode in r.matching_modes and "float32" not in r.matching_modes
    assert f"(refquant mode {mode!r}" in r.explanation
    assert r.exact + r.within_1 + r.worse == r.elements and r.worse == 0 and r.max_abs_lsb == 1


def test_the_faulty_backend_fails_naming_its_rounding_rule_and_first_bad_element(tie_case):
    out = replay(tie_case, faulty_backend)
    report = verify(tie_case, out)
    assert not report.passed
    r = next(r for r in report.layers if r.name == "case")
    assert r.matching_rules == ["float32-half-away"] and r.matching_modes == []
    assert "rounded half away from zero' exactly: breaks round half to even" in r.explanation
    acc = r.first_mismatch["accumulator"]
    assert r.first_mismatch["acc_times_multiplier"] == acc / 2 and acc % 2 == 1  # an exact tie
    assert "half away from zero" in report.summary and str(tuple(r.first_mismatch["index"])) in report.summary


def test_policies_and_lsb_counts(tie_case):
    out = replay(tie_case, faulty_backend)
    assert verify(tie_case, out, policy="lsb1").passed
    worse = dict(out)
    worse["case"] = out["case"].copy()
    worse["case"].flat[0] += 3 if worse["case"].flat[0] < 250 else -3
    report = verify(tie_case, worse, policy="lsb1")
    r = report.layers[-1]
    assert not report.passed and r.worse == 1 and r.max_abs_lsb == 3
    with pytest.raises(ValueError, match="unknown policy"):
        verify(tie_case, out, policy="close-enough")


def test_a_difference_inherited_from_an_earlier_layer_is_marked(model_set):
    """A whole-model backend computes each layer from its own earlier outputs."""
    gs = model_set
    outputs = {}
    for layer in gs.layers:
        inputs = [outputs[n] for n in layer["inputs"]]
        y = compute_layer(gs, layer, inputs)
        if layer["name"] == "conv1":
            y = np.where(y < 250, y + 3, y).astype(y.dtype)
        outputs[layer["name"]] = y
    report = verify(gs, outputs)
    bad = {r.name: r for r in report.layers if r.status == "differs"}
    assert "conv1" in bad and bad["conv1"].inherited_from is None
    assert "no requant mode or known rule reproduces it" in bad["conv1"].explanation
    downstream = [r for n, r in bad.items() if n != "conv1"]
    assert downstream and all(r.inherited_from is not None for r in downstream)
    assert "'conv1'" in report.summary


def one_lsb_away(v, scale: float) -> np.float32:
    """The float32 farthest above ``v`` that is still at most one LSB (``scale``) away —
    constructed, not left to ``v + scale``'s rounding, which can land just over 1 LSB
    depending on ``v`` (and so on the machine that computed ``v``)."""
    v = np.float32(v)
    w = np.float32(np.float64(v) + scale)
    while np.float64(w) - np.float64(v) > scale:
        w = np.nextafter(w, np.float32(-np.inf))
    assert 0.99 * scale < np.float64(w) - np.float64(v) <= scale
    return w


def test_missing_and_unknown_arrays_and_float_outputs(model_set):
    gs = model_set
    out = replay(gs)
    partial = {k: v for k, v in out.items() if k in ("conv1", "fc")}
    partial["surprise"] = np.zeros(3)
    out_name = gs.manifest["outputs"][0]["name"]
    y = gs.tensor(gs.manifest["outputs"][0]["file"]).copy()
    scale = float(gs.qparams(gs.layer(gs.manifest["outputs"][0]["layer"]), "output").scale)
    y.flat[0] = one_lsb_away(y.flat[0], scale)
    partial[out_name] = y
    report = verify(gs, partial)
    assert report.unknown == ["surprise"]
    assert "layer(s) not in the outputs" in report.summary
    r = report.graph_outputs[0]
    assert r.within_1 == 1 and r.exact == r.elements - 1 and not report.passed
    assert verify(gs, partial, policy="lsb1").passed
    nothing = verify(gs, {"surprise": np.zeros(1)})
    assert not nothing.passed and "none of the golden set's" in nothing.summary


def test_damaged_or_foreign_outputs_files_are_clear_errors(model_set, tmp_path):
    out = replay(model_set)
    path = tmp_path / "out.npz"
    np.savez(path, **out)
    assert verify(model_set, path).passed
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable .npz"):
        verify(model_set, tmp_path / "cut.npz")
    np.savez(tmp_path / "obj.npz", conv1=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="'conv1' cannot be read"):
        verify(model_set, tmp_path / "obj.npz")
    wrong = dict(out, conv1=out["conv1"][:1])
    report = verify(model_set, wrong)
    assert report.layers[1].status == "error" and "shape" in report.layers[1].message


def test_command_line_exit_codes_and_json(model_set, tie_case, tmp_path, capsys):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, **replay(model_set))
    np.savez(bad, **replay(tie_case, faulty_backend))
    assert main(["golden", "verify", str(model_set.root), "--outputs", str(good)]) == 0
    assert "PASS under policy 'exact'" in capsys.readouterr().out
    assert main(["golden", "verify", str(tie_case.root), "--outputs", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and doc["layers"][-1]["matching_rules"] == ["float32-half-away"]
    assert main(["golden", "verify", str(tie_case.root), "--outputs", str(bad), "--policy", "lsb1"]) == 0
    capsys.readouterr()
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_set.root, broken)
    victim = sorted(p for p in broken.glob("*.npy"))[3]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    assert main(["golden", "verify", str(broken), "--outputs", str(good)]) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "SHA-256" in err


def test_golden_run_writes_what_verify_reads(model_set, tmp_path, capsys):
    out = tmp_path / "numba.npz"
    assert main(["golden", "run", str(model_set.root), "--backend", "numba", "-o", str(out)]) == 0
    assert main(["golden", "verify", str(model_set.root), "--outputs", str(out)]) == 0
    capsys.readouterr()


# ----------------------------------------------------------------------------- explanations

@st.composite
def requant_problems(draw):
    channels = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    acc = rng.integers(-600, 600, (2, channels, 3)).astype(np.int32)
    if draw(st.booleans()):
        x_s, w_s, y_s = 2.0**-3, np.full(channels, 2.0**-4), 2.0**-draw(st.integers(5, 8))
    else:
        x_s, w_s, y_s = 0.02, rng.uniform(0.005, 0.02, channels), draw(st.floats(0.01, 0.5))
    fmt = draw(st.sampled_from(["uint8", "int8"]))
    lo, hi = (0, 255) if fmt == "uint8" else (-128, 127)
    zy = draw(st.integers(lo, hi))
    x_qp = QParams(np.float32(x_s), 0, "uint8")
    w_qp = QParams(np.asarray(w_s, np.float32), np.zeros(channels, np.int32), "int8", axis=0)
    y_qp = QParams(np.float32(y_s), zy, fmt)
    act = draw(st.sampled_from([None, "relu", "relu6"]))
    bias = rng.integers(-50, 50, channels).astype(np.int32) if draw(st.booleans()) else None
    return acc, x_qp, w_qp, y_qp, act, bias


@given(requant_problems(), st.sampled_from(REQUANT_MODES))
def test_every_mode_is_recognised_as_itself(problem, mode):
    acc, x_qp, w_qp, y_qp, act, bias = problem
    rq = make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, mode=mode, activation=act)
    got = requantize(acc, rq, channel_axis=1)
    e = explain_requantization(acc, got, x_qp, w_qp, y_qp, act, bias, "float32")
    assert mode in e["matching_modes"]
    assert e["mode_mismatches"][mode] == 0
    assert ("float32" in e["matching_modes"]) == e["text"].startswith("equals refquant's 'float32'")


@given(requant_problems(), st.sampled_from([r.name for r in RULES]))
def test_every_rule_is_recognised_when_it_is_what_the_backend_did(problem, rule_name):
    acc, x_qp, w_qp, y_qp, act, bias = problem
    rule = next(r for r in RULES if r.name == rule_name)
    layer = {"rq": make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                                    mode="float32", activation=act),
             "rq_no_clamp": make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt,
                                             mode="float32", activation=None),
             "x_qp": x_qp, "w_qp": w_qp, "y_qp": y_qp, "bias": bias}
    got = rule.compute(acc, layer)
    if got is None or (rule_name == "no-activation-clamp" and act is None):
        return
    e = explain_requantization(acc, got, x_qp, w_qp, y_qp, act, bias, "float32")
    assert rule_name in e["matching_rules"] or "float32" in e["matching_modes"]
