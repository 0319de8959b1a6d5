"""Where a sweep's tasks run: in this process (the default and the reference), or on Dask.

A sweep is a list of independent tasks, each ``fn(shared, item)``: ``shared`` is what every
task of one model needs (the graph, the data, the float logits, the recorded calibration pass —
:class:`refquant.compare.ModelContext`), ``item`` is one plan. Both executors have the same
three calls:

* ``share(obj)`` → a handle a task receives as ``shared``;
* ``submit(fn, handle, item)`` → the task's index (0, 1, … in submission order);
* ``completed()`` → ``(index, result)`` pairs as tasks finish, each exactly once.

:class:`SerialExecutor` runs each task when ``completed()`` reaches it, in submission order.
:class:`DaskExecutor` submits to a Dask distributed cluster: a :class:`LocalCluster` of
``workers`` processes with one thread each, or a running scheduler at ``address``.

**Sharing: ``Client.scatter(obj, broadcast=True)``**, not a worker-side cache that each worker
fills by loading the model itself. The shared object is computed once, in the process that
runs the sweep, and every worker receives the same bytes: the calibration pass and the float
logits are never recomputed per worker (or per task), a worker on another machine needs
neither the model file nor the data on its disk, and the rows cannot depend on where a worker
loaded its inputs. Dask keeps the object in each worker's memory, deserialised once, for every
task that names it; if a worker dies, its replicas elsewhere serve the retried tasks.

**Threads.** A worker runs one task at a time (``threads_per_worker=1``). Inside a task the
Numba kernels use a fixed number of threads, :func:`numba_threads` — the sweep's setting
(default: the thread count of the process that runs the sweep), the same under every executor,
because the numba backend's scratch buffers scale with it and ``peak_working_bytes`` reports
them. Everything else in a row is exact whatever the threads (the integer kernels are exact;
the float path sums in a fixed order, ``refquant/ops/dot.py``); only ``latency_ms`` is a
wall time. On two cores, ``--workers 2 --threads 1`` uses each core once.

**Failures.** A worker that dies mid-task (killed, out of memory) is replaced by its nanny and
the scheduler runs the task again elsewhere (Dask's ``allowed-failures``, default 3); the
result still arrives once, because ``completed()`` yields each task's future once. An exception
inside a task is re-raised here, naming the task. Dask is an optional extra
(``pip install 'refquant[cluster]'``), imported only when a :class:`DaskExecutor` is made.
"""

from __future__ import annotations

import contextlib
import logging

import numba

__all__ = ["SerialExecutor", "DaskExecutor", "make_executor", "numba_threads"]


class SerialExecutor:
    """Run every task in this process, in submission order: the reference executor."""

    name = "serial"

    def __init__(self):
        self._tasks: list = []

    def share(self, obj):
        return obj

    def submit(self, fn, handle, item) -> int:
        self._tasks.append((fn, handle, item))
        return len(self._tasks) - 1

    def completed(self):
        for i, (fn, handle, item) in enumerate(self._tasks):
            self._tasks[i] = None  # a finished task's inputs are not kept alive
            yield i, fn(handle, item)
        self._tasks = []

    def cancel(self) -> None:
        self._tasks = []

    def close(self) -> None:
        self.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def numba_threads(threads: int):
    """Run the block with Numba's thread count at ``threads`` (thread-local; restored after)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise ValueError(f"a task asks for {threads} Numba threads; this process has 1..{limit} "
                         f"(NUMBA_NUM_THREADS) — choose a smaller --threads")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class DaskExecutor:
    """Run tasks on a Dask distributed cluster (see the module doc).

    ``workers=N``: start a :class:`distributed.LocalCluster` of N processes, one thread each,
    and close it afterwards. ``address``: connect to a running scheduler. ``client``: use an
    existing :class:`distributed.Client` (left open).
    """

    def __init__(self, workers: int | None = None, address: str | None = None, client=None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ImportError("running on Dask needs the extra 'cluster': pip install 'refquant[cluster]'") from None
        self._own_cluster = self._own_client = None
        if client is None:
            if address is not None:
                client = Client(address, timeout="30s")
            else:
                if not workers or workers < 1:
                    raise ValueError(f"workers must be a positive count, got {workers!r}")
                self._own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None, silence_logs=logging.ERROR)
                client = Client(self._own_cluster)
            self._own_client = client
        self.client = client
        self.name = f"dask:{len(client.scheduler_info().get('workers', {}))} workers"
        self._futures: list = []

    def share(self, obj):
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn, handle, item) -> int:
        index = len(self._futures)
        self._futures.append(self.client.submit(fn, handle, item, pure=False,
                                                priority=-index))  # earlier plans first
        return index

    def completed(self):
        from distributed import as_completed

        index = {f.key: i for i, f in enumerate(self._futures)}
        try:
            for future in as_completed(self._futures):
                i = index[future.key]
                result = future.result()
                self._futures[i] = None
                future.release()
                yield i, result
        finally:
            self.cancel()

    def cancel(self) -> None:
        pending = [f for f in self._futures if f is not None]
        if pending:
            self.client.cancel(pending)
        self._futures = []

    def close(self) -> None:
        self.cancel()
        if self._own_client is not None:
            self._own_client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_executor(workers: int | None = None, scheduler: str | None = None):
    """The executor the command line's ``--workers N`` / ``--scheduler ADDRESS`` ask for
    (neither: :class:`SerialExecutor`)."""
    if workers is not None and scheduler is not None:
        raise ValueError("give --workers (a local cluster) or --scheduler (a running one), not both")
    if workers is None and scheduler is None:
        return SerialExecutor()
    return DaskExecutor(workers=workers, address=scheduler)
