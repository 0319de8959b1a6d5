"""A digits compare grid serially and on a local Dask cluster of 1 and 2 workers.

    python bench/sweep.py [--model digits-cnn] [--bits 8] [--granularity per-channel]
                          [--workers 1 2] [--threads 1] [--json]

The grid is every registered weight strategy × every registered activation strategy at the
given bits and granularity (``refquant.compare.plan_grid``), on the digits test set and its six
shifted sets: one task per plan, seven rows per task. Each configuration runs the whole sweep
through :func:`refquant.compare.compare` with ``threads`` Numba threads per task:

* ``serial`` — :class:`refquant.sweep.SerialExecutor`, in this process;
* ``dask-N`` — :class:`refquant.sweep.DaskExecutor` on a ``LocalCluster`` of N worker processes
  (one thread each); the cluster's start-up is timed separately and not in the sweep's time.

Reported per configuration: the sweep's wall time (model preparation — data, float logits, the
calibration pass — included, once), tasks per second, the speed-up over serial, and the
per-task overhead of Dask, ``(T_dask-1 − T_serial) / tasks``: what a task costs beyond its own
work when it is shipped to a worker process and its rows shipped back; and the scheduling cost
alone, ``empty task ms``: the wall time per task of 500 tasks that return at once (with the
same scattered-argument shape as a plan task). Before timing, each
configuration's rows are checked equal to serial's (every field but ``latency_ms``). Every
Dask configuration runs the sweep twice and reports the second (the first loads each worker's
Numba cache). The machine is shared: the load average before and after is printed; compare
numbers measured under similar load only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from refquant.compare import ROW_FIELDS, compare, plan_grid


NOOPS = 500


def _noop(shared, item):
    return item


def _comparable(rows):
    return [{k: v for k, v in r.as_dict().items() if k != "latency_ms"} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--bits", type=int, nargs="+", default=[8])
    ap.add_argument("--granularity", nargs="+", default=["per-channel"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from refquant.sweep import DaskExecutor, SerialExecutor

    grid = dict(bits=args.bits, granularities=args.granularity, threads=args.threads, progress=False)
    tasks = len(plan_grid([args.model], args.bits, None, None, args.granularity))
    out = {"model": args.model, "tasks": tasks, "threads": args.threads, "cpu": platform.processor() or "",
           "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "runs": []}
    compare([args.model], executor=SerialExecutor(), **grid)  # warm: Numba's cache, the data
    t0 = time.perf_counter()
    reference = compare([args.model], executor=SerialExecutor(), **grid)
    serial = time.perf_counter() - t0
    out["runs"].append({"executor": "serial", "startup_s": 0.0, "sweep_s": serial})
    for n in args.workers:
        t0 = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as client:
            startup = time.perf_counter() - t0
            handle = client.scatter(0, broadcast=True)
            client.gather([client.submit(_noop, handle, i, pure=False) for i in range(20)])
            t0 = time.perf_counter()
            client.gather([client.submit(_noop, handle, i, pure=False) for i in range(NOOPS)])
            dispatch = (time.perf_counter() - t0) / NOOPS
            ex = DaskExecutor(client=client)
            compare([args.model], executor=ex, **grid)  # warm each worker
            t0 = time.perf_counter()
            rows = compare([args.model], executor=ex, **grid)
            sweep = time.perf_counter() - t0
        assert _comparable(rows) == _comparable(reference), f"dask-{n}: rows differ from serial"
        out["runs"].append({"executor": f"dask-{n}", "startup_s": startup, "sweep_s": sweep,
                            "empty_task_ms": 1e3 * dispatch})
    out["load_after"] = os.getloadavg()[0]
    base = out["runs"][0]["sweep_s"]
    for r in out["runs"]:
        r["tasks_per_s"] = tasks / r["sweep_s"]
        r["speedup"] = base / r["sweep_s"]
    one = next((r for r in out["runs"] if r["executor"] == "dask-1"), None)
    out["per_task_serial_ms"] = 1e3 * base / tasks
    out["per_task_overhead_ms"] = None if one is None else 1e3 * (one["sweep_s"] - base) / tasks
    out["rows"] = len(reference)
    out["row_fields"] = list(ROW_FIELDS)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{args.model}: {tasks} plans × 7 sets = {len(reference)} rows, {args.threads} Numba thread(s) per task; "
          f"load average {out['load_before']:.1f} before, {out['load_after']:.1f} after")
    print(f"{'executor':<9} {'startup s':>9} {'sweep s':>8} {'tasks/s':>8} {'speed-up':>8} {'empty task ms':>13}")
    for r in out["runs"]:
        empty = f"{r['empty_task_ms']:.2f}" if "empty_task_ms" in r else "-"
        print(f"{r['executor']:<9} {r['startup_s']:>9.2f} {r['sweep_s']:>8.2f} {r['tasks_per_s']:>8.2f} "
              f"{r['speedup']:>8.2f} {empty:>13}")
    print(f"serial time per task {out['per_task_serial_ms']:.1f} ms; Dask overhead per task "
          f"{out['per_task_overhead_ms']:.1f} ms (dask-1 − serial, per task)")


if __name__ == "__main__":
    main()
