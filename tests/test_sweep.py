"""Sweeps beyond one process: the recorded calibration pass, the results file, Dask executors.

The serial sweep is the reference. A sweep on a 2-worker local Dask cluster gives the same rows
(every field but ``latency_ms``, a wall time), also when a worker dies mid-task; an interrupted
sweep resumed from its results file gives the rows of the uninterrupted one, each exactly once.
One module-scoped cluster serves every Dask test (its start-up costs seconds).
"""

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from refquant import quantize_model, registry
from refquant.cli import main
from refquant.compare import ROW_FIELDS, compare
from refquant.data import digits_inputs, load_digits
from refquant.executor import trace_calibration
from refquant.sweep import ResultsError, ResultsFile, SerialExecutor, read_rows

MODEL = "digits-mlp"
GRID = dict(bits=[8], weights=["minmax", "mse"], activations=["static-minmax", "dynamic"],
            granularities=["per-tensor"], threads=1)
ROWS = 4 * 7  # 4 plans × (test + 6 shifted sets)


def _comparable(row) -> dict:
    d = row.as_dict() if hasattr(row, "as_dict") else dict(row)
    return {k: d[k] for k in ROW_FIELDS if k != "latency_ms"}


@pytest.fixture(scope="module")
def serial_rows():
    rows = compare([MODEL], progress=False, **GRID)
    assert len(rows) == ROWS
    return rows


# ------------------------------------------------------------------ the recorded calibration pass

@pytest.mark.parametrize("activations", sorted(registry.quantizers("activations")))
def test_a_replayed_calibration_pass_calibrates_bit_for_bit(activations):
    """Every registered activation strategy gets the same qparams and the same outputs from the
    recorded pass as from a live one."""
    graph = registry.resolve_model("digits-cnn")
    digits = load_digits()
    calib = digits_inputs(graph, digits.calibration(16).x)
    x = digits_inputs(graph, digits.test.x[:8])
    plan = f"weights=minmax:8:per-channel activations={activations}:8"
    live = quantize_model(graph, plan, calib)
    replayed = quantize_model(graph, plan, trace_calibration(graph, calib))
    assert live.tensor_qparams.keys() == replayed.tensor_qparams.keys()
    for t, qp in live.tensor_qparams.items():
        other = replayed.tensor_qparams[t]
        assert np.array_equal(qp.scale, other.scale) and np.array_equal(qp.zero_point, other.zero_point), t
    out = graph.outputs[0]
    assert np.array_equal(live.run(x).outputs[out], replayed.run(x).outputs[out])


def test_a_trace_is_read_only_and_names_its_graph():
    graph = registry.resolve_model(MODEL)
    trace = trace_calibration(graph, digits_inputs(graph, load_digits().calibration(16).x))
    _, events = trace.batches[0]
    assert events and not events[0][2].flags.writeable and trace.nbytes > 0
    other = registry.resolve_model("digits-cnn")
    with pytest.raises(ValueError, match="calibration trace of graph"):
        quantize_model(other, "weights=minmax activations=static-minmax", trace)


# ------------------------------------------------------------------------------ the results file

def test_results_file_holds_every_row_as_returned(tmp_path, serial_rows, capsys):
    db = tmp_path / "r.db"
    rows = compare([MODEL], progress=False, results=db, **GRID)
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in serial_rows]
    stored = read_rows(db)
    assert [_comparable(r) for r in stored] == [_comparable(r) for r in rows]
    assert {r["executor"] for r in stored} == {"serial"} and all(r["model_sha256"] for r in stored)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    assert main(["results", str(db), "--json"]) == 0
    assert [_comparable(r) for r in json.loads(capsys.readouterr().out)] == [_comparable(r) for r in rows]
    assert main(["results", str(db), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model,plan,dataset,data_sha256,") and len(lines) == 1 + ROWS


def test_an_interrupted_sweep_resumes_to_the_uninterrupted_rows(tmp_path, serial_rows):
    db = tmp_path / "r.db"
    seen = []

    def interrupt_after_9(done, total, label):
        seen.append(done)
        if done == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare([MODEL], progress=interrupt_after_9, results=db, **GRID)
    assert len(read_rows(db)) == 9  # every finished row, committed; nothing after the interrupt
    with pytest.raises(ResultsError, match="pass --resume"):
        compare([MODEL], progress=False, results=db, **GRID)
    resumed = []
    rows = compare([MODEL], progress=lambda d, t, label: resumed.append(d), results=db, resume=True, **GRID)
    assert sorted(set(resumed)) == [0, *range(9, ROWS + 1)]  # the 9 stored rows were not run again
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in serial_rows]
    stored = read_rows(db)
    assert [_comparable(r) for r in stored] == [_comparable(r) for r in serial_rows]  # each row once


def test_a_row_is_complete_or_absent(tmp_path):
    with ResultsFile(tmp_path / "r.db") as f:
        row = {c: "x" for c in ("model", "plan", "dataset", "data_sha256", "refquant_version", "model_sha256",
                                "weights", "activations", "granularity", "requant", "backend", "executor",
                                "finished_at")}
        row.update(seq=0, bits=8, activation_bits=8, images=1, accuracy=None, float_accuracy=None,
                   top1_agreement=1.0, top5_agreement=1.0, sqnr_db=float("inf"), peak_working_bytes=1,
                   latency_ms=None, box_f1=None, cer_float=None, cer_transcription=None, float_cer_transcription=None)
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            f.insert(row)
        with pytest.raises(ValueError, match="lacks sqnr_db"):
            f.insert({k: v for k, v in row.items() if k != "sqnr_db"})
        f.insert({**row, "latency_ms": 0.5})
    (stored,) = read_rows(tmp_path / "r.db")
    assert stored["sqnr_db"] == float("inf") and stored["accuracy"] is None


def test_results_of_another_version_are_refused(tmp_path):
    db = tmp_path / "r.db"
    compare([MODEL], progress=False, results=db, **{**GRID, "weights": ["minmax"], "activations": ["dynamic"]})
    con = sqlite3.connect(db)
    con.execute("UPDATE rows SET refquant_version = '0.0.1'")
    con.commit()
    con.close()
    with pytest.raises(ResultsError, match=r"computed by refquant 0\.0\.1 .* this sweep is refquant 0\.1\.0"):
        compare([MODEL], progress=False, results=db, resume=True,
                **{**GRID, "weights": ["minmax"], "activations": ["dynamic"]})


def test_bad_results_files_are_one_line_exit_2(tmp_path, capsys):
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    assert main(["results", str(text)]) == 2
    err = capsys.readouterr().err
    assert err == f"refquant: error: {text}: not a SQLite results file (its first bytes are not 'SQLite format 3')\n"
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    assert main(["compare", MODEL, "--bits", "8", "--weights", "minmax", "--activations", "dynamic",
                 "--results", str(other), "--quiet"]) == 2
    assert "a SQLite file but not a refquant results file" in capsys.readouterr().err
    assert main(["results", str(tmp_path / "missing.db")]) == 2
    assert "no such results file" in capsys.readouterr().err
    assert main(["compare", MODEL, "--resume", "--quiet"]) == 2
    assert "--resume needs --results FILE" in capsys.readouterr().err
    assert main(["compare", MODEL, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--quiet"]) == 2
    assert "not both" in capsys.readouterr().err


def test_progress_shows_done_total_rate_and_eta():
    import io

    from refquant.presentation import SweepProgress

    now = [100.0]
    out = io.StringIO()
    progress = SweepProgress(40, stream=out, clock=lambda: now[0])
    progress.start(10)  # 10 rows skipped on resume: in done, not in the rate
    now[0] += 5.0
    progress.update(20, "digits-mlp minmax:8 dynamic:8 per-tensor test")
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert "20/40 2.00 rows/s ETA 0:00:10  digits-mlp minmax:8 dynamic:8 per-tensor test" in line
    progress.update(40, "done")
    assert out.getvalue().endswith("\n")


# --------------------------------------------------------------------------------- on Dask

KILLER = "refquant-test-kill-first-task"


def kill_first_task(marker: str):
    """A worker plugin: the first task to start executing on any worker ends its process
    (``os._exit``, no clean-up) — mid-task, before it returns anything."""
    from distributed import WorkerPlugin

    class KillFirstTask(WorkerPlugin):
        name = KILLER

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing":
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.close(fd)
                os._exit(1)

    return KillFirstTask()


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as c, distributed.Client(c) as client:
        yield client


def test_two_workers_give_the_serial_rows(cluster, serial_rows, tmp_path):
    from refquant.sweep import DaskExecutor

    db = tmp_path / "r.db"
    rows = compare([MODEL], progress=False, executor=DaskExecutor(client=cluster), results=db, **GRID)
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in serial_rows]
    stored = read_rows(db)
    assert [_comparable(r) for r in stored] == [_comparable(r) for r in serial_rows]
    assert {r["executor"] for r in stored} == {"dask:2 workers"}


def test_compare_on_a_running_scheduler_from_the_command_line(cluster, serial_rows, tmp_path, capsys):
    db = tmp_path / "r.db"
    assert main(["compare", MODEL, "--bits", "8", "--weights", "minmax", "mse", "--activations", "static-minmax",
                 "dynamic", "--granularity", "per-tensor", "--threads", "1", "--scheduler",
                 cluster.scheduler.address, "--results", str(db), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [_comparable(r) for r in json.loads(out)] == [_comparable(r) for r in serial_rows]
    assert f"{ROWS}/{ROWS}" in err and "rows/s" in err
    assert len(read_rows(db)) == ROWS


def test_a_worker_killed_mid_sweep_loses_no_row(cluster, serial_rows, tmp_path):
    from refquant.sweep import DaskExecutor

    marker = tmp_path / "killed"
    cluster.register_plugin(kill_first_task(str(marker)))
    try:
        db = tmp_path / "r.db"
        rows = compare([MODEL], progress=False, executor=DaskExecutor(client=cluster), results=db, **GRID)
    finally:
        cluster.unregister_worker_plugin(KILLER)
    assert marker.exists()  # a worker did die, mid-task
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in serial_rows]
    stored = read_rows(db)
    assert [_comparable(r) for r in stored] == [_comparable(r) for r in serial_rows]  # every row once
    cluster.wait_for_workers(2, timeout=60)


def test_interrupted_on_dask_resumed_serially(cluster, serial_rows, tmp_path):
    from refquant.sweep import DaskExecutor

    db = tmp_path / "r.db"

    def interrupt_after_10(done, total, label):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare([MODEL], progress=interrupt_after_10, executor=DaskExecutor(client=cluster), results=db, **GRID)
    assert len(read_rows(db)) == 10
    rows = compare([MODEL], progress=False, executor=SerialExecutor(), results=db, resume=True, **GRID)
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in serial_rows]
    assert [_comparable(r) for r in read_rows(db)] == [_comparable(r) for r in serial_rows]


def test_golden_export_of_several_plans_on_a_running_scheduler(cluster, tmp_path, capsys):
    plans = ["weights=minmax:8:per-channel activations=static-minmax:8", "weights=mse:4 activations=dynamic:8"]
    address = cluster.scheduler.address
    assert main(["golden", "export", MODEL, str(tmp_path / "dask"), "--plan", *plans, "--scheduler", address,
                 "--quiet", "--json"]) == 0
    on_dask = json.loads(capsys.readouterr().out)
    assert main(["golden", "export", MODEL, str(tmp_path / "serial"), "--plan", *plans, "--json"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert [s["manifest_sha256"] for s in on_dask] == [s["manifest_sha256"] for s in serial]
    assert [Path(s["golden"]).name for s in on_dask] == ["00-weights_minmax_8_per-channel_activations_static-minmax_8",
                                                         "01-weights_mse_4_activations_dynamic_8"]
    # one plan, no executor: the set is DIR itself, and the same set as its sweep counterpart
    assert main(["golden", "export", MODEL, str(tmp_path / "one"), "--plan", plans[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest_sha256"] == serial[0]["manifest_sha256"]
