"""ACIQ analytic clipping (Banner, Nahshan, Soudry, NeurIPS 2019, arXiv 1810.05723).

ACIQ clips to [m - alpha, m + alpha], splits that range into 2^M equal bins, and models the
quantization noise as alpha^2 / (3 * 4^M) -- the uniform-noise variance step^2/12 with step
2 alpha / 2^M, *not* weighted by the probability of landing inside the range. Adding the exact
clipping error of the prior gives the MSE model that alpha minimises:

    Gaussian N(0, s^2):  E(alpha) = (alpha^2 + s^2) erfc(alpha / (sqrt(2) s))
                                    - sqrt(2/pi) alpha s exp(-alpha^2 / (2 s^2))
                                    + alpha^2 / (3 4^M)
    Laplace(0, b):       E(alpha) = 2 b^2 exp(-alpha / b) + alpha^2 / (3 4^M)

Both are convex in alpha with one minimum, where dE/dalpha = 0:

    Gaussian (s = 1):  2 (phi(alpha) - alpha Q(alpha)) = alpha / (3 4^M)   solved by scipy brentq
    Laplace  (b = 1):  alpha exp(alpha) = 3 4^M, i.e. alpha = W(3 4^M)      (Lambert W, closed form)

For samples ACIQ's own estimators set the scale: s = std(x), b = mean(|x - mean(x)|), and the
clip range is centred on the sample mean. (``fit_prior`` fits the Laplace about the median
instead; ACIQ's estimator is kept here so the rule is ACIQ's.)
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

from .checks import check_bits, check_count
from .densities import Laplace, Samples, as_density
from .fit import fit_prior
from .uniform import UniformResult, clipped_uniform

__all__ = ["aciq_clip", "aciq_model_mse", "aciq_uniform"]


def aciq_model_mse(alpha: float, bits: int, prior: str, scale: float = 1.0) -> float:
    """ACIQ's model E(alpha) (module docstring) for a zero-mean prior of the given scale.

    ``prior`` is ``"gaussian"`` (``scale`` = s) or ``"laplace"`` (``scale`` = b).
    """
    bits = check_bits(bits)
    noise = alpha * alpha / (3.0 * 4.0**bits)
    if prior == "gaussian":
        s = scale
        return float(
            (alpha * alpha + s * s) * special.erfc(alpha / (math.sqrt(2.0) * s))
            - math.sqrt(2.0 / math.pi) * alpha * s * math.exp(-alpha * alpha / (2.0 * s * s))
            + noise
        )
    if prior == "laplace":
        return float(2.0 * scale * scale * math.exp(-alpha / scale) + noise)
    raise ValueError(f"aciq_model_mse: prior must be 'gaussian' or 'laplace', got {prior!r}")


def _gaussian_alpha(bits: int) -> float:
    """alpha* / s for the Gaussian: the root of 2 (phi(a) - a Q(a)) - a / (3 4^M) on [0, 40].

    The left side is 2 phi(0) > 0 at 0 and negative at 40 for every M <= 24, and decreasing.
    """
    k = 3.0 * 4.0**bits

    def slope(a: float) -> float:
        return 2.0 * (stats.norm.pdf(a) - a * stats.norm.sf(a)) - a / k

    return float(optimize.brentq(slope, 0.0, 40.0, xtol=1e-15, rtol=4 * np.finfo(float).eps))


def _laplace_alpha(bits: int) -> float:
    """alpha* / b for the Laplace: the Lambert W of 3 4^M (principal branch, real)."""
    return float(special.lambertw(3.0 * 4.0**bits).real)


def aciq_clip(distribution, bits: int, *, prior: str | None = None) -> float:
    """ACIQ's clip alpha for M = ``bits`` bits (2^M bins), in the units of the distribution.

    ``"gaussian"`` and ``"laplace"`` are the unit-variance densities, so alpha is in standard
    deviations (for the Laplace, alpha = b W(3 4^M) with b = 1/sqrt(2)). For a 1-D sample array
    alpha is ``std(x) alpha*_gauss`` or ``mean(|x - mean(x)|) W(3 4^M)`` depending on ``prior``
    (``None``: the prior :func:`~refquant_lloydmax.fit.fit_prior` chooses by KS); the clip range
    is then ``[mean(x) - alpha, mean(x) + alpha]``.
    """
    bits = check_bits(bits)
    density = as_density(distribution, what="aciq_clip")
    if not isinstance(density, Samples):
        if prior is not None and prior != density.name:
            raise ValueError(
                f"aciq_clip: prior {prior!r} contradicts the {density.name} distribution"
            )
        if density.name == "gaussian":
            return _gaussian_alpha(bits)
        return Laplace.b * _laplace_alpha(bits)
    if prior is None:
        prior = fit_prior(density.x, name="aciq_clip samples").prior
    if prior == "gaussian":
        return density.std * _gaussian_alpha(bits)
    if prior == "laplace":
        b = float(np.mean(np.abs(density.x - density.mean)))
        return b * _laplace_alpha(bits)
    raise ValueError(f"aciq_clip: prior must be None, 'gaussian' or 'laplace', got {prior!r}")


def aciq_uniform(distribution, bits: int, *, prior: str | None = None) -> UniformResult:
    """The 2^bits-level mid-rise grid with ACIQ's clip, scored by the exact MSE.

    Centred on 0 for the analytic densities and on the sample mean for samples, as ACIQ does.
    """
    bits = check_bits(bits)
    density = as_density(distribution, what="aciq_uniform")
    alpha = aciq_clip(density, bits, prior=prior)
    return clipped_uniform(density, check_count(2**bits, "2**bits", 2), alpha)
