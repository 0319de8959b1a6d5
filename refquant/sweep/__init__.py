"""Sweeps beyond one process: executors (serial, Dask) and the resumable results file.

* :mod:`refquant.sweep.executors` — :class:`SerialExecutor` (the default and the reference)
  and :class:`DaskExecutor` (a local cluster of worker processes or a running scheduler);
* :mod:`refquant.sweep.results` — :class:`ResultsFile`, one SQLite row per finished result,
  written as it completes and skipped on ``--resume``.

``refquant compare`` and ``refquant golden export`` of several plans use them; the design,
the determinism argument and the cost of a large sweep are in ``spec/sweeps.md``.
"""

from .executors import DaskExecutor, SerialExecutor, make_executor, numba_threads
from .results import COLUMNS, KEY, ResultsError, ResultsFile, read_rows, rows_as_csv

__all__ = ["COLUMNS", "DaskExecutor", "KEY", "ResultsError", "ResultsFile", "SerialExecutor", "make_executor",
           "numba_threads", "read_rows", "rows_as_csv"]
