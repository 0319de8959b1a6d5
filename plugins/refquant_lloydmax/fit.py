"""Which density describes a weight tensor: fit a Gaussian and a Laplace, keep the closer by KS.

For the values x_1 .. x_n of a tensor (or of one output channel):

    Gaussian (maximum likelihood):  loc = mean(x),    scale = sigma = sqrt(mean((x - loc)^2))
    Laplace  (maximum likelihood):  loc = median(x),  scale = b = mean(|x - loc|)

Each fit is scored by its Kolmogorov-Smirnov statistic ``D = sup_z |F_n(z) - F(z)|`` against
the empirical CDF F_n, and the prior with the smaller D is chosen (the Gaussian on a tie).
:func:`ks_statistic` computes D as ``scipy.stats.kstest`` does, operation for operation (so the
same float64 value), without the p-value, which is most of kstest's cost and is not used:
on the sorted values x_(1..n) and z_i = (x_(i) - loc) / scale,

    F = ndtr(z)  (Gaussian)      F = where(z > 0, 1 - exp(-z)/2, exp(z)/2)  (Laplace)
    D = max( max_i (i/n - F_i),  max_i (F_i - (i-1)/n) ). Because the parameters were fitted to the same data, the p-values of these
tests are not valid (Lilliefors); only the comparison of the two D values is used.

The unit-variance tables of :func:`~refquant_lloydmax.solver.lloyd_max` scale to a fit by
``loc + std * table``, where :attr:`PriorFit.std` is sigma for the Gaussian and ``sqrt(2) b``
for the Laplace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import special

from refquant.numerics import pairwise_sum

__all__ = ["PRIOR_CHOICES", "PriorFit", "fit_prior", "ks_statistic"]

PRIOR_CHOICES = ("auto", "gaussian", "laplace", "empirical")


@dataclass(frozen=True)
class PriorFit:
    """The prior chosen for one tensor or channel, with both KS statistics.

    ``prior`` is ``"gaussian"``, ``"laplace"`` or ``"empirical"``. ``loc`` and ``scale`` are
    the fitted parameters of that prior (sigma for the Gaussian, b for the Laplace); for
    ``"empirical"`` (quantize the samples themselves) they are the mean and standard deviation.
    ``ks_gaussian`` and ``ks_laplace`` are the KS statistics of the two fits; ``size`` is the
    number of values fitted.
    """

    prior: str
    loc: float
    scale: float
    ks_gaussian: float
    ks_laplace: float
    size: int

    @property
    def std(self) -> float:
        """Standard deviation of the fitted prior: sigma, or sqrt(2) b for the Laplace."""
        return self.scale * math.sqrt(2.0) if self.prior == "laplace" else self.scale


def ks_statistic(x: np.ndarray, prior: str, loc: float, scale: float) -> float:
    """The two-sided KS statistic of the float64 values ``x`` against the ``prior``
    (``"gaussian"`` or ``"laplace"``) with ``loc`` and ``scale`` (module docstring): the value
    ``scipy.stats.kstest(x, "norm" | "laplace", args=(loc, scale)).statistic`` returns."""
    return _ks_of_sorted(np.sort(x), prior, loc, scale)


def _ks_of_sorted(xs: np.ndarray, prior: str, loc: float, scale: float) -> float:
    """:func:`ks_statistic` of the already sorted values ``xs``."""
    z = (xs - loc) / scale
    if prior == "gaussian":
        cdf = special.ndtr(z)
    else:
        with np.errstate(over="ignore"):
            cdf = np.where(z > 0, 1.0 - 0.5 * np.exp(-z), 0.5 * np.exp(z))
    n = z.size
    d_plus = float(np.max(np.arange(1.0, n + 1) / n - cdf))
    d_minus = float(np.max(cdf - np.arange(0.0, n) / n))
    return d_plus if d_plus > d_minus else d_minus


@njit(cache=True)
def _fit_statistics(x, xs):  # pragma: no cover - compiled
    """``(np.mean(x), np.std(x), np.median(x), np.mean(np.abs(x - median)))`` of the finite
    float64 values ``x`` (``xs``: the same values sorted), as NumPy computes them: every sum is
    NumPy's pairwise sum of ``x`` in its own order added to 0.0 (:func:`pairwise_sum`), then
    divided by ``n``; ``np.std`` subtracts that mean, squares, sums and divides the same way,
    then takes the square root; the median is the mean of the middle order statistic(s) —
    ``(0.0 + ((0.0 + lower) + upper)) / 2`` for an even count."""
    n = x.size
    mean = (0.0 + pairwise_sum(x, 0, n)) / n
    work = np.empty(n)
    for i in range(n):
        d = x[i] - mean
        work[i] = d * d
    sigma = np.sqrt((0.0 + pairwise_sum(work, 0, n)) / n)
    half = n // 2
    if n % 2 == 1:
        median = (0.0 + (0.0 + xs[half])) / 1
    else:
        median = (0.0 + ((0.0 + xs[half - 1]) + xs[half])) / 2
    for i in range(n):
        work[i] = abs(x[i] - median)
    b = (0.0 + pairwise_sum(work, 0, n)) / n
    return mean, sigma, median, b


def _fit_one(x: np.ndarray, prior: str, where: str) -> PriorFit:
    if x.size < 2:
        raise ValueError(f"{where}: needs at least 2 values to fit a prior, got {x.size}")
    if x.min() == x.max():
        raise ValueError(
            f"{where}: all {x.size} values equal {float(x[0])!r}; a constant has no spread to fit"
        )
    xs = np.sort(x)  # for the median and both KS statistics
    mean, sigma, median, b = _fit_statistics(np.ascontiguousarray(x, dtype=np.float64), xs)
    if not (sigma > 0 and b > 0 and np.isfinite(sigma) and np.isfinite(b)):
        raise ValueError(
            f"{where}: fitted scales are not positive and finite (sigma={sigma!r}, b={b!r}); "
            f"the spread of the values underflows or overflows float64"
        )
    ks_g = _ks_of_sorted(xs, "gaussian", mean, sigma)
    ks_l = _ks_of_sorted(xs, "laplace", median, b)
    if prior == "auto":
        prior = "gaussian" if ks_g <= ks_l else "laplace"
    if prior == "gaussian":
        loc, scale = mean, sigma
    elif prior == "laplace":
        loc, scale = median, b
    else:  # empirical
        loc, scale = mean, sigma
    return PriorFit(prior, loc, scale, ks_g, ks_l, int(x.size))


def fit_prior(w, *, axis: int | None = None, prior: str = "auto", name: str = "tensor"):
    """Fit both priors to ``w`` and choose one (see the module docstring).

    ``axis=None`` fits the whole tensor and returns one :class:`PriorFit`; an integer axis
    (``0`` for the output channels of a ``[C_out, ...]`` weight) fits every slice along it and
    returns a tuple with one PriorFit per slice. ``prior`` is ``"auto"`` (smaller KS statistic),
    or forces ``"gaussian"``, ``"laplace"`` or ``"empirical"``; both KS statistics are reported
    either way. ``name`` is used in error messages.
    """
    if prior not in PRIOR_CHOICES:
        raise ValueError(f"{name}: prior must be one of {PRIOR_CHOICES}, got {prior!r}")
    arr = np.asarray(w)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected an array of real numbers, got dtype {arr.dtype}")
    x = arr.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} of {x.size} values are NaN or infinite (first at index "
            f"{first}: {x[first]})"
        )
    if axis is None:
        return _fit_one(x.ravel(), prior, name)
    if x.ndim == 0:
        raise ValueError(f"{name}: a scalar has no axis {axis} to fit along")
    try:
        channels = np.moveaxis(x, axis, 0)
    except (np.exceptions.AxisError, TypeError) as exc:
        raise ValueError(f"{name}: axis {axis!r} is invalid for shape {x.shape}") from exc
    channels = channels.reshape(channels.shape[0], -1)
    return tuple(
        _fit_one(row, prior, f"{name}, channel {i} along axis {axis}")
        for i, row in enumerate(channels)
    )
