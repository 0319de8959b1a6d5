"""``refquant_lloydmax.report`` and ``refquant lloydmax-report``: numbers against independent
computations, the MSE claim over the shipped models, and the tables of spec §10."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import refquant_lloydmax as lm
from refquant.cli import main
from refquant.graph import save_model
from refquant_lloydmax import model_tables
from refquant.registry import get_model
from refquant_lloydmax.report import QUANTIZERS, layer_report, model_layers, weight_only_accuracy

from tests_support import small_cnn

SPEC = Path(__file__).resolve().parents[2] / "spec" / "strategies" / "lloydmax.md"


@pytest.fixture(scope="module")
def spec_text():
    return SPEC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    g, _ = small_cnn()
    d = tmp_path_factory.mktemp("models")
    save_model(g, d / "cnn")
    return str(d / "cnn.json")


def nearest(x, levels):
    """Brute force: the nearest of ``levels`` to each value."""
    levels = np.asarray(levels, np.float64)
    return levels[np.argmin(np.abs(np.asarray(x, np.float64)[:, None] - levels[None, :]), axis=1)]


# ------------------------------------------------------------------------- one layer
@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_layer_row_against_independent_computations(granularity, bits):
    rng = np.random.default_rng(bits)
    w = np.concatenate([rng.normal(0, 0.1, (3, 60)), rng.laplace(0.02, 0.05, (3, 60))]).astype(np.float32)
    row = layer_report(w, bits, granularity=granularity, refine="none", layer="fc", op="Gemm")
    rows = w.reshape(6, -1) if granularity == "per-channel" else w.reshape(1, -1)
    x64 = rows.astype(np.float64)
    fits = [lm.fit_prior(x) for x in x64]
    lloyd, minmax, aciq, int8 = [], [], [], []
    for x, fit in zip(x64, fits):
        levels = (np.float32(fit.loc + fit.std * np.array(lm.lloyd_max(fit.prior, 2**bits).levels))
                  .astype(np.float64))
        lloyd.append(np.mean((nearest(x, levels) - x) ** 2))
        s = np.float32(np.float32(np.abs(levels).max()) / np.float32(127))
        q = np.rint(levels.astype(np.float32) / s)
        # the int8 weight keeps the float level's index: map x to its level, then to s·q
        k = np.argmin(np.abs(x[:, None] - levels[None, :]), axis=1)
        int8.append(np.mean((np.float32(q[k]) * s - x) ** 2))
        minmax.append(lm.minmax_uniform(x, 2**bits).mse)
        aciq.append(lm.aciq_uniform(x, bits, prior=fit.prior).mse)
    power = np.mean(x64**2)
    assert row["mse_lloydmax"] == pytest.approx(np.mean(lloyd), rel=1e-9)
    assert row["mse_lloydmax_int8"] == pytest.approx(np.mean(int8), rel=1e-6)
    assert row["mse_minmax"] == pytest.approx(np.mean(minmax), rel=1e-12)
    assert row["mse_aciq"] == pytest.approx(np.mean(aciq), rel=1e-12)
    for q in QUANTIZERS:
        assert row[f"sqnr_{q}"] == pytest.approx(10 * math.log10(power / row[f"mse_{q}"]), rel=1e-12)
    assert 0 < row["rep_lsb_max"] <= 0.5 + 1e-5
    assert row["rep_mse_ratio"] > 0
    groups = rows.shape[0]
    assert row["bits_per_weight"] == pytest.approx(bits + groups * (8 * 2**bits + 32) / w.size)
    if granularity == "per-tensor":
        assert row["prior"] == fits[0].prior and row["ks_gaussian"] == fits[0].ks_gaussian
    else:
        counts = {p: sum(f.prior == p for f in fits) for p in ("gaussian", "laplace")}
        assert row["prior"] == " ".join(f"{p}:{n}" for p, n in sorted(counts.items()) if n)
        assert row["ks_laplace"] == pytest.approx(np.mean([f.ks_laplace for f in fits]), rel=1e-12)
    # the default refines each prior's codebook on the values: the better of Lloyd's iteration on
    # them from the prior's levels and from their best uniform grid (levels stored as float32)
    refined = layer_report(w, bits, granularity=granularity, layer="fc", op="Gemm")
    best, starts = [], []
    for x, fit in zip(x64, fits):
        prior = fit.loc + fit.std * np.array(lm.lloyd_max(fit.prior, 2**bits).levels)
        a, b = lm.lloyd_max(x, 2**bits, init=prior), lm.lloyd_max(x, 2**bits)
        levels = np.float32(a.levels if a.mse <= b.mse else b.levels).astype(np.float64)
        best.append(np.mean((nearest(x, levels) - x) ** 2))
        starts.append(a.mse <= b.mse)
    assert refined["mse_lloydmax"] == pytest.approx(np.mean(best), rel=1e-9)
    assert refined["from_prior"] == sum(starts) and refined["refine"] == "weights"
    assert refined["mse_lloydmax"] <= row["mse_lloydmax"] * (1 + 1e-6)
    assert refined["mse_lloydmax"] <= row["mse_minmax"] * (1 + 1e-6)


def test_engine_minmax_column_is_the_minmax_strategy():
    from refquant.registry import get_quantizer
    from refquant.strategies import LayerSpec

    w = np.random.default_rng(9).normal(0, 0.2, (8, 27)).astype(np.float32)
    row = layer_report(w, 3, layer="conv", op="Conv")
    deq = get_quantizer("minmax", "weights").quantize_weight(w, LayerSpec("conv", "Conv", 3)).dequantize()
    assert row["mse_minmax_int"] == pytest.approx(np.mean((deq.astype(np.float64) - w) ** 2), rel=1e-12)


# ------------------------------------------------------------------------- the MSE claim
@pytest.mark.parametrize("prior", ["auto", "empirical"])
@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
def test_default_and_empirical_codebooks_beat_minmax_and_aciq_on_every_shipped_layer(granularity, prior):
    """§10.2: the empirical Lloyd-Max codebook starts from the best uniform grid on the same
    samples, so its MSE cannot exceed min-max's, and the default (the KS prior's codebook
    refined on the weights) is never worse than the empirical one; ACIQ's is measured."""
    rows = model_tables.reports(granularity=granularity, prior=prior)
    layers = sum(len(model_layers(get_model(m))) for m in model_tables.MODELS)
    assert {m for m, _ in rows} == set(model_tables.MODELS) and len(rows) == 4 * layers
    for model, r in rows:
        assert r["mse_lloydmax"] <= r["mse_minmax"], (model, r["layer"], r["bits"])
        assert r["mse_lloydmax"] <= r["mse_aciq"], (model, r["layer"], r["bits"])


def test_claim_tables_in_the_spec_are_recomputed(spec_text):
    for table in (model_tables.claim_table(), model_tables.failure_table(granularity="per-tensor"),
                  model_tables.failure_table(granularity="per-channel")):
        assert table in spec_text, f"spec §10 out of date; regenerate with " \
                                   f"python -m refquant_lloydmax.model_tables:\n{table}"


def test_layer_table_in_the_spec_is_recomputed(spec_text):
    table = model_tables.layer_table()
    assert table in spec_text, f"spec §10 out of date:\n{table}"


def test_representation_error_is_small_below_8_bits_and_dominates_at_8():
    """§9.2: at 2-3 bits the int8 rounding of the levels adds under 1% to the Lloyd-Max MSE on
    every shipped layer, at 4 bits under 8%; at 8 bits it exceeds the Lloyd-Max MSE itself."""
    for gran in ("per-tensor", "per-channel"):
        for model, r in model_tables.reports(granularity=gran):
            assert r["rep_lsb_max"] <= 0.5 + 1e-5
            if r["bits"] <= 4:
                assert r["rep_mse_ratio"] < (0.01 if r["bits"] <= 3 else 0.08), (model, gran, r["layer"], r["bits"])
            else:
                assert r["rep_mse_ratio"] > 1, (model, gran, r["layer"], r["bits"])


# ------------------------------------------------------------------------- accuracy, CLI, plot
def test_weight_only_accuracy_rows():
    rows = weight_only_accuracy("digits-mlp", bits=(8, 2))
    assert [r["bits"] for r in rows] == [8, 2]
    for r in rows:
        assert set(r) == {"bits", "granularity", "float", "lloydmax", "lloydmax_int8", "minmax_int"}
        assert r["float"] == pytest.approx(0.9649, abs=1e-4)
    assert rows[0]["lloydmax"] >= rows[0]["float"] - 0.01
    assert rows[1]["lloydmax"] > rows[1]["minmax_int"]  # 4 levels against the 3 of [-1, 1]


def test_cli_json(cnn_path, capsys):
    assert main(["lloydmax-report", cnn_path, "--bits", "2", "4", "--granularity", "per-channel",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["granularity"] == "per-channel" and doc["weight_only_accuracy"] is None
    rows = doc["layers"]
    expected = [(n, b) for n in ("conv1", "conv2", "fc") for b in (2, 4)]
    assert [(r["layer"], r["bits"]) for r in rows] == expected
    assert all(r["granularity"] == "per-channel" and r["mse_lloydmax"] > 0 for r in rows)


def test_cli_table_and_accuracy(cnn_path, capsys):
    assert main(["lloydmax-report", cnn_path, "--bits", "3", "--prior", "laplace", "--accuracy"]) == 0
    out = capsys.readouterr().out
    assert "sqnr_lloydmax_int8" in out and "laplace" in out and "Digits test accuracy" in out


def test_cli_errors(capsys):
    assert main(["lloydmax-report", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["lloydmax-report", "digits-mlp", "--bits", "9"]) == 2  # one line, no usage block
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refquant: error: ") and "--bits" in err[0]


def test_plot_without_matplotlib_is_skipped_with_a_message(cnn_path, capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "hist.png"
    assert main(["lloydmax-report", cnn_path, "--bits", "2", "--plot", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no plot" in err and "matplotlib" in err and not out.exists()


def test_plot_is_written(cnn_path, tmp_path):
    pytest.importorskip("matplotlib")
    from refquant_lloydmax.report import plot_report

    out = tmp_path / "hist.png"
    plot_report(cnn_path, (2, 4), out, granularity="per-channel")
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
