"""Run BLAS on one thread while training: repeatable sums, and no thread contention.

Why: NumPy hands every matrix product to BLAS (OpenBLAS in NumPy's wheels). A BLAS is
deterministic for a fixed thread count on one machine, but the thread count is whatever the
environment says; and on a machine whose cores are busy, OpenBLAS's worker threads spin and
wait — a 16×2048 by 2048×144 float32 product measured 78 ms with the default threads and
0.13 ms with one thread here. Training multiplies many small matrices, so one thread is both
the repeatable and the fast choice.

How: ``threadpoolctl`` (the well-kept library for this) when it is importable; otherwise the
same thing it does for OpenBLAS, directly: find the OpenBLAS libraries loaded in this process
(``/proc/self/maps``, Linux) and call their exported ``*openblas_set_num_threads*``. If
neither works the context changes nothing and says so (``False``).
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

import numpy as np

__all__ = ["single_blas_thread", "blas_configuration", "UNKNOWN_CONFIGURATION"]

#: What the model cards of weights trained before the configuration was recorded say.
UNKNOWN_CONFIGURATION = "unknown"


def _openblas_libraries() -> list:
    """``(set_num_threads, get_num_threads)`` ctypes functions of each loaded OpenBLAS."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if "openblas" in line.rsplit("/", 1)[-1].lower() and line.split()[-1].startswith("/")})
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                               ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                               ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                               ("openblas_set_num_threads", "openblas_get_num_threads")):
            if hasattr(lib, setter) and hasattr(lib, getter):
                set_fn, get_fn = getattr(lib, setter), getattr(lib, getter)
                set_fn.argtypes, set_fn.restype = [ctypes.c_int], None
                get_fn.argtypes, get_fn.restype = [], ctypes.c_int
                found.append((set_fn, get_fn))
                break
    return found


def _openblas_core() -> str | None:
    """The kernel family the loaded OpenBLAS chose for this CPU (``openblas_get_corename``:
    e.g. ``Haswell`` on AVX2 hosts such as AMD Zen 3, ``SkylakeX``/``Cooperlake`` with AVX-512)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if "openblas" in line.rsplit("/", 1)[-1].lower() and line.split()[-1].startswith("/")})
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = [], ctypes.c_char_p
                core = fn()
                return core.decode() if core else None
    return None


def blas_configuration() -> str:
    """The configuration float32 training's BLAS sums depend on, as one line: NumPy's version,
    its BLAS library and version, and the kernel family (core type) it picked on this CPU, e.g.
    ``numpy 2.4.6, scipy-openblas 0.3.31.188.0, core Haswell, 1 thread``.  Training is
    reproducible bit for bit between hosts whose lines are equal (``spec/training.md``)."""
    config = getattr(getattr(np, "__config__", None), "CONFIG", None)
    blas = config.get("Build Dependencies", {}).get("blas", {}) if isinstance(config, dict) else {}
    library = f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}".strip()
    core = _openblas_core() if "openblas" in library.lower() else None
    return f"numpy {np.__version__}, {library}, core {core or 'unknown'}, 1 thread"


@contextlib.contextmanager
def single_blas_thread():
    """Within the block, BLAS uses one thread; yields True if that could be arranged."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield True
        return
    libs = _openblas_libraries()
    before = [get() for _, get in libs]
    for set_fn, _ in libs:
        set_fn(1)
    try:
        yield bool(libs)
    finally:
        for (set_fn, _), n in zip(libs, before):
            set_fn(n)
