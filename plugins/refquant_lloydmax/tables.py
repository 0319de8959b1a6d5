"""The reference tables quoted in ``spec/strategies/lloydmax.md``, computed by this package.

Run ``python -m refquant_lloydmax.tables`` to print them as Markdown. The spec quotes this
output verbatim, and a test recomputes it, so the tables in the spec are the package's numbers.
SNR is ``10 log10(variance / MSE)`` with unit variance.
"""
from __future__ import annotations

import math

from .aciq import _gaussian_alpha, _laplace_alpha, aciq_uniform
from .solver import lloyd_max, lloyd_rates
from .uniform import optimal_uniform

__all__ = ["TABLE_BITS", "TABLE_LEVELS", "aciq_table", "iterations_table", "lloyd_max_table",
           "uniform_table", "main"]

TABLE_LEVELS = (2, 4, 8, 16, 32)
TABLE_BITS = (1, 2, 3, 4, 8)


def _g(x: float, digits: int = 5) -> str:
    """``x`` to ``digits`` significant digits, with -0 printed as 0."""
    s = f"{x:.{digits}g}"
    return "0" if s in ("-0", "0", "-0.0") else s


def _snr(mse: float) -> str:
    return _dB(10.0 * math.log10(1.0 / mse))


def _dB(x: float) -> str:
    """``x`` to 3 decimals, with -0.000 printed as 0.000: for N = 2 the Lloyd-Max quantizer *is*
    the uniform one, and the sign of a gain of order 1e-16 depends on the scipy release."""
    s = f"{x:.3f}"
    return "0.000" if s == "-0.000" else s


def lloyd_max_table(distribution: str) -> str:
    """Lloyd-Max MSE, SNR and the positive thresholds (0 for N = 2) and levels, N = 2 .. 32."""
    rows = [
        "| N | MSE | SNR (dB) | positive thresholds | positive levels |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in TABLE_LEVELS:
        r = lloyd_max(distribution, n)
        t = r.thresholds[n // 2:] if n > 2 else r.thresholds  # N = 2: the one threshold, 0
        y = r.levels[n // 2:]
        rows.append(
            f"| {n} | {_g(r.mse)} | {_snr(r.mse)} | {', '.join(_g(v) for v in t)} | "
            f"{', '.join(_g(v) for v in y)} |"
        )
    return "\n".join(rows)


def uniform_table(distribution: str) -> str:
    """Optimal uniform step, clip, MSE and SNR, and the SNR Lloyd-Max gains over it."""
    rows = [
        "| N | step | clip N step / 2 | MSE | SNR (dB) | Lloyd-Max gain (dB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in TABLE_LEVELS:
        u = optimal_uniform(distribution, n)
        r = lloyd_max(distribution, n)
        gain = 10.0 * math.log10(u.mse / r.mse)
        rows.append(
            f"| {n} | {_g(u.step)} | {_g(u.clip)} | {_g(u.mse)} | {_snr(u.mse)} | {_dB(gain)} |"
        )
    return "\n".join(rows)


def aciq_table() -> str:
    """ACIQ clips and the exact MSE of the resulting grids next to the optimal uniform grid."""
    rows = [
        "| bits M | alpha / sigma, Gaussian | alpha / b, Laplace | alpha / sigma, Laplace | "
        "MSE Gaussian: ACIQ, optimal uniform | MSE Laplace: ACIQ, optimal uniform |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for bits in TABLE_BITS:
        n = 2**bits
        ag = aciq_uniform("gaussian", bits)
        al = aciq_uniform("laplace", bits)
        og = optimal_uniform("gaussian", n)
        ol = optimal_uniform("laplace", n)
        rows.append(
            f"| {bits} | {_g(_gaussian_alpha(bits), 6)} | {_g(_laplace_alpha(bits), 6)} | "
            f"{_g(al.clip, 6)} | {_g(ag.mse)}, {_g(og.mse)} | {_g(al.mse)}, {_g(ol.mse)} |"
        )
    return "\n".join(rows)


def iterations_table() -> str:
    """Updates to convergence (tol 1e-12), with and without Newton steps, and the linear rates."""
    rows = [
        "| density | N | updates, with Newton | updates, plain Lloyd | rho, symmetric | rho, all |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("gaussian", "laplace"):
        for n in TABLE_LEVELS + (64, 128, 256):
            plain = str(lloyd_max(name, n, newton=False).iterations) if n <= 32 else "--"
            rho_sym, rho_all = lloyd_rates(name, n)
            rows.append(
                f"| {name} | {n} | {lloyd_max(name, n).iterations} | {plain} | "
                f"{rho_sym:.6f} | {rho_all:.6f} |"
            )
    return "\n".join(rows)


def main() -> None:
    for name in ("gaussian", "laplace"):
        print(f"Lloyd-Max, {name}\n\n{lloyd_max_table(name)}\n")
        print(f"Optimal uniform, {name}\n\n{uniform_table(name)}\n")
    print(f"ACIQ\n\n{aciq_table()}\n")
    print(f"Iterations\n\n{iterations_table()}")


if __name__ == "__main__":
    main()
