"""How the four requant modes differ from exact rounding, measured on random accumulators.

Exact rounding is ``round_half_even(acc · s_x · s_w / s_y) + z_y`` evaluated with rational
arithmetic on the float32 scales (every float32 is a rational with a power-of-two
denominator, so Python's ``fractions.Fraction`` computes it without error). The report counts,
per mode, how many outputs differ from it and by how many LSBs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .numerics import REQUANT_MODES, make_requantizer, requantize

__all__ = ["exact_requantize", "modes_report"]


def exact_requantize(acc, x_scale, w_scale, y_scale, y_zero_point, qmin, qmax) -> np.ndarray:
    """``clamp(round_half_even(acc · s_x · s_w / s_y) + z_y)`` in exact rational arithmetic."""
    m = Fraction(float(np.float32(x_scale))) * Fraction(float(np.float32(w_scale))) / Fraction(
        float(np.float32(y_scale)))
    out = []
    for a in np.asarray(acc).reshape(-1).tolist():
        v = a * m
        fl = v.numerator // v.denominator
        rem = v - fl
        r = fl + (1 if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2) else 0)
        out.append(min(max(r + int(y_zero_point), qmin), qmax))
    return np.array(out, np.int64).reshape(np.shape(acc))


def modes_report(n: int = 20000, seed: int = 0, *, trials: int = 8) -> list[dict]:
    """Per mode: outputs compared, how many differ from exact rounding, max |difference| in LSBs.

    ``trials`` random layers, each with log-uniform scales (multiplier ≈ 1e-4…1e-1), an odd or
    even int8 output zero point, and ``n // trials`` accumulators: half uniform in ±2**17, half
    placed exactly on rounding ties (``acc = (k + 1/2) / m`` where that is an integer).
    """
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"modes_report: trials must be an integer >= 1, got {trials!r}")
    if not isinstance(n, (int, np.integer)) or n < trials:
        raise ValueError(f"modes_report: n must be an integer >= trials ({trials}), got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"modes_report: seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    per = n // trials
    rows = {m: {"mode": m, "outputs": 0, "differ": 0, "max_lsb": 0} for m in REQUANT_MODES}
    for _ in range(trials):
        xs, ws = np.float32(10 ** rng.uniform(-3, -1)), np.float32(10 ** rng.uniform(-3, -1))
        ys = np.float32(xs * ws / np.float32(10 ** rng.uniform(-4, -1)))
        zp = int(rng.integers(-20, 20))
        random_layer = (xs, ws, ys, rng.integers(-(2**17), 2**17, per // 2))
        # power-of-two scales with multiplier 2**-6: acc = 64k + 32 lands exactly on a tie
        tie_layer = (np.float32(2.0**-7), np.float32(2.0**-8), np.float32(2.0**-9),
                     rng.integers(-250, 250, per // 2) * 64 + 32)
        for x_scale, w_scale, y_scale, acc in (random_layer, tie_layer):
            acc = acc.astype(np.int32)
            exact = exact_requantize(acc, x_scale, w_scale, y_scale, zp, -128, 127)
            for mode in REQUANT_MODES:
                rq = make_requantizer(x_scale, w_scale, y_scale, zp, "int8", mode=mode)
                got = requantize(acc, rq, channel_axis=0).astype(np.int64)
                d = np.abs(got - exact)
                r = rows[mode]
                r["outputs"] += acc.size
                r["differ"] += int(np.count_nonzero(d))
                r["max_lsb"] = max(r["max_lsb"], int(d.max(initial=0)))
    return list(rows.values())
