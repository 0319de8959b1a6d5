"""The static calibrators' histogram counts (``refquant_static.histogram``) equal NumPy's
``bincount`` of the signed bin index, computed as the module docstring specifies: every batch,
channel, growth, long row split in slices, float32 and float64 paths, one and two threads."""

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from refquant_static import histogram
from refquant_static.histogram import SignMagnitudeHistogram, power_of_two_above


class BincountHistogram(SignMagnitudeHistogram):
    """The oracle: the signed bin index by vectorised NumPy passes, counted by ``np.bincount``."""

    def add(self, rows):
        c, n = rows.shape
        if n == 0:
            return
        mag = np.abs(rows)
        wanted = power_of_two_above(mag.max(axis=1).astype(np.float64) / self.bins)
        self._grow_to(np.maximum(self.width, wanted))
        inverse = 1.0 / np.where(self.width > 0, self.width, 1.0)
        dtype = np.float32 if inverse.max() < 2.0**127 else np.float64
        index = np.multiply(mag, inverse.astype(dtype)[:, None], dtype=dtype)
        np.floor(index, out=index)
        index += 1
        index *= np.sign(rows)
        span = 2 * self.bins + 1
        flat = index.astype(np.int64) + (self.bins + span * np.arange(c))[:, None]
        counts = np.bincount(flat.ravel(), minlength=c * span).reshape(c, span)
        self.neg += counts[:, self.bins - 1::-1]
        self.zeros += counts[:, self.bins]
        self.pos += counts[:, self.bins + 1:]


def batch(rng, c, n, scale_exp):
    v = (rng.standard_normal((c, n)) * np.exp2(scale_exp + rng.integers(-30, 3, (c, n)))).astype(np.float32)
    v[rng.random((c, n)) < 0.2] = 0.0
    v[rng.random((c, n)) < 0.05] = -0.0
    ties = rng.random((c, n)) < 0.1  # exact bin edges: powers of two and their multiples
    v[ties] = np.exp2(np.float32(scale_exp)) * rng.integers(-8, 9, int(ties.sum())).astype(np.float32)
    return v


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.sampled_from([1, 7, 300, 70_000, 140_001]),
       st.sampled_from([16, 2048]), st.sampled_from([0, 20, -60, -140]), st.integers(1, 2), st.booleans())
def test_counts_equal_the_bincount_of_the_signed_index(seed, channels, n, bins, scale_exp, threads, parallel):
    """Growth between batches (the scale rises), subnormal-only batches (the float64 path: the
    inverse width passes 2**127), rows long enough to be counted in several slices; every batch
    by the parallel kernel, or every one on the calling thread (``PARALLEL_MIN_VALUES``)."""
    rng = np.random.default_rng(seed)
    got, want = SignMagnitudeHistogram(channels, bins), BincountHistogram(channels, bins)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threshold = histogram.PARALLEL_MIN_VALUES
    histogram.PARALLEL_MIN_VALUES = 0 if parallel else 1 << 62
    try:
        for step in range(3):
            rows = batch(rng, channels, n if step != 1 else 5, scale_exp + 4 * step)
            got.add(rows)
            want.add(rows)
    finally:
        numba.set_num_threads(before)
        histogram.PARALLEL_MIN_VALUES = threshold
    for name in ("pos", "neg", "zeros", "width"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
