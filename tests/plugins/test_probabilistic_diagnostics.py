"""Diagnostics of the probabilistic strategy and the ``refquant probabilistic-report`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refquant.cli import main
from refquant.executor import quantize_model
from refquant.graph import save_model
from refquant_probabilistic.diagnostics import GAMMAS, estimator_timing, per_input_accuracy, range_diagnostics
from refquant_probabilistic.memory import tiled_reference_requant
from refquant_probabilistic.report import plot_ranges
from refquant_probabilistic.plans import probabilistic_plan

from tests_support import small_cnn, small_mlp


@pytest.fixture(scope="module")
def cnn():
    graph, x = small_cnn(n=48)
    return graph, x, quantize_model(graph, probabilistic_plan(weights="minmax", gamma=2), x[:16])


def test_range_diagnostics_measure_coverage_and_misses(cnn):
    graph, x, qm = cnn
    diags = range_diagnostics(qm, x[16:])
    assert [d.layer for d in diags] == list(qm.layers)
    for d in diags:
        inside = (d.actual_lo >= d.predicted_lo) & (d.actual_hi <= d.predicted_hi)
        assert d.coverage == pytest.approx(np.mean(inside))  # per tensor: one range per image
        assert 0 <= d.miss_rate <= 1 and 0 <= d.clipped <= 1
        assert (d.miss_rate == 0) == (d.coverage == 1)
        assert d.patches >= 1 and len(d.predicted_lo) == 32
        assert set(d.summary()) >= {"layer", "coverage", "miss_rate", "clipped", "gamma", "beta"}


def test_wide_and_narrow_widths_move_coverage_and_clipping_as_they_must(cnn):
    graph, x, qm = cnn
    layer = qm.layers["conv1"]
    alpha, beta = layer.context.state["alpha"].copy(), layer.context.state["beta"].copy()
    try:
        layer.context.state["alpha"][:], layer.context.state["beta"][:] = 1e3, 1e3
        wide = next(d for d in range_diagnostics(qm, x) if d.layer == "conv1")
        layer.context.state["alpha"][:], layer.context.state["beta"][:] = 0.0, 0.0
        narrow = next(d for d in range_diagnostics(qm, x) if d.layer == "conv1")
    finally:
        layer.context.state["alpha"][:], layer.context.state["beta"][:] = alpha, beta
    assert wide.coverage == 1 and wide.miss_rate == 0 and wide.clipped == 0
    assert narrow.coverage < 1 and narrow.clipped > 0 and narrow.miss_rate > 0


def test_tiled_reference_equals_the_fused_kernels():
    graph, x = small_mlp(n=20)
    qm = quantize_model(graph, probabilistic_plan(weights="minmax", bits=6), x)
    run = qm.run(x, keep=True)
    rec = {r.name: r for r in run.records}
    layer = qm.layers["fc1"]
    xq = rec["x"].output_qparams
    from refquant.numerics import quantize

    q = quantize(x, xq)
    for tile in (1, 5, 64):
        y = tiled_reference_requant(layer, q, xq, rec["fc1"].output_qparams, qm.requant, tile)
        assert np.array_equal(y, rec["fc1"].q_output)


def test_estimator_timing_rows(cnn):
    graph, x, qm = cnn
    rows = estimator_timing(qm, x[:8], repeats=2)
    assert [(r["layer"], r["gamma"]) for r in rows] == [(n, g) for n in qm.layers for g in GAMMAS]
    assert all(r["estimator_ms"] > 0 and r["layer_ms"] > 0 for r in rows)
    conv1 = [r["patches"] for r in rows if r["layer"] == "conv1"]
    assert conv1 == [64, 16, 4, 1]  # 8×8 outputs sampled every γ-th row and column


def test_per_input_accuracy_runs_each_image_alone(cnn):
    graph, x, qm = cnn
    labels = np.argmax(qm.run(x[:6]).outputs[graph.outputs[0]], axis=1)
    acc = per_input_accuracy(qm, x[:6], labels)
    assert 0 <= acc <= 1


def test_plot_is_written_when_matplotlib_is_installed(cnn, tmp_path):
    pytest.importorskip("matplotlib")
    graph, x, qm = cnn
    path = plot_ranges(range_diagnostics(qm, x), str(tmp_path / "ranges.png"))
    assert path and (tmp_path / "ranges.png").stat().st_size > 1000


def test_report_command_json(tmp_path, capsys):
    graph, _ = small_cnn()
    save_model(graph, tmp_path / "cnn")
    assert main(["probabilistic-report", str(tmp_path / "cnn.json"), "--gamma", "2", "--repeats", "2",
                 "--gammas", "1", "4", "--timing-images", "4", "--calibration", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"] == {"gamma": 2, "aggregator": "max"} and out["images"] > 0
    assert [row["layer"] for row in out["layers"]] == ["conv1", "conv2", "fc"]
    assert {row["gamma"] for row in out["timing"]} == {1, 4}


def test_report_command_table_and_errors(tmp_path, capsys):
    graph, _ = small_mlp()
    save_model(graph, tmp_path / "mlp")
    assert main(["probabilistic-report", str(tmp_path / "mlp.json"), "--repeats", "1", "--gammas", "1",
                 "--timing-images", "2", "--dataset", "noise"]) == 0
    out = capsys.readouterr().out
    assert "coverage" in out and "overhead_pct" in out and "noise" in out
    assert main(["probabilistic-report", "no-such-model"]) == 2
