"""When a small Numba kernel runs on the calling thread instead of the thread pool.

A ``prange`` kernel wakes the pool on every call. On an idle machine that costs a few
microseconds; on the shared 2-core machine, with other processes on both cores, the caller
waits until a descheduled pool thread gets the CPU back: measured 2.6 ms on average per empty
parallel region (8 ms at the median in a second run; 1.6 µs with one thread), longer than the
whole of a small kernel (MaxPool of ``[599, 16, 8, 8]``: 0.9 ms on one thread). So the
bandwidth-bound kernels of the integer-operator table (pooling) and the requantization of
accumulators run with one Numba thread below :data:`PARALLEL_GRAIN` elements, and with the
caller's thread count above it.

The numbers do not change: each kernel computes every output in one thread, in a fixed order,
whatever the thread count (their tests run 1 and 2 threads and a grain of 0, which forces the
pool).
"""

from __future__ import annotations

import contextlib

import numba

__all__ = ["PARALLEL_GRAIN", "kernel_threads", "run_chunked", "threads_for"]

#: elements below which :func:`threads_for` runs a kernel on the calling thread (about 2 ms of
#: a pooling kernel's work on one core); 0 always uses the caller's thread count
PARALLEL_GRAIN = 1 << 21


def kernel_threads(elements: int) -> int:
    """The Numba threads a kernel over ``elements`` elements runs with (module doc)."""
    return 1 if elements < PARALLEL_GRAIN else numba.get_num_threads()


@contextlib.contextmanager
def threads_for(elements: int):
    """Run the enclosed kernel call with :func:`kernel_threads` threads; yields that count
    (the number of chunks to split the work into)."""
    old = numba.get_num_threads()
    n = kernel_threads(elements)
    if n == old:
        yield n
        return
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(old)


def run_chunked(elements: int, serial, parallel, *args):
    """``serial(*args)`` on the calling thread when :func:`kernel_threads` gives one thread —
    no parallel region at all: launching one costs 48–126 µs on Numba's workqueue layer (1.6
    µs on OpenMP), more than a small elementwise kernel's whole work — else
    ``parallel(*args, chunks)`` with that many threads and chunks. For kernels whose parallel
    form only cuts the serial one's range into chunks, so both give the same bits."""
    with threads_for(elements) as chunks:
        if chunks <= 1:
            return serial(*args)
        return parallel(*args, chunks)
