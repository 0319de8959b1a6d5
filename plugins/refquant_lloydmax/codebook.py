"""Per-group Lloyd-Max codebooks for a weight tensor, and their int8-grid form for the int8 kernels.

A *group* is the whole tensor (per-tensor) or one output channel (per-channel: axis 0 of the
OIHW / ``[N, K]`` weight). For each group with values x (float32, scored in float64):

1. **Prior.** :func:`~refquant_lloydmax.fit.fit_prior` fits a Gaussian (mean, sigma) and a
   Laplace (median, b) and keeps the smaller KS statistic, or the prior the caller forces.
2. **Levels (float).** For the Gaussian or Laplace prior, the unit-variance N-level Lloyd-Max
   table (N = 2^bits) scaled to the fit, ``y_k = loc + std * table_k`` (std = sigma, or
   sqrt(2) b) — the paper's data-free codebook; for ``"empirical"``, the Lloyd-Max quantizer
   of the group's own values (Lloyd's iteration on the samples from their best uniform grid).
   With ``refine="weights"`` (the default) a prior's codebook is then refined on the group's
   own values: Lloyd's iteration on the samples started from the prior's levels, and the
   empirical quantizer; the fixed point with the smaller exact MSE is kept (the prior's on a
   tie). Each Lloyd step can only lower the MSE on the values, so the refined codebook is
   never worse than the prior's, nor than the empirical one — which starts from a uniform grid
   at least as good as min-max's. ``refine="none"`` keeps the prior's levels as they are. The
   levels are stored as float32, ``codebook[g, k]``. A constant group (every value c, no
   spread to fit) gets N copies of c.
3. **Indices.** Each value goes to its nearest stored level: ``idx = #{k : t_k < x}`` with the
   thresholds ``t_k = (y_k + y_{k+1}) / 2`` of the float32 levels computed in float64, so a
   value exactly on a threshold takes the lower level (the solver's convention).
4. **int8 grid.** The kernels multiply int8 by int8, so each group's levels are written on the
   narrow symmetric int8 grid ``[-127, 127]`` with a zero point of 0 and one float32 scale:

       s_g = float32(max_k |y_k| / 127)                     (1 if every level is 0)
       q_k = saturate(round_half_even(float32(y_k) / s_g))  (the engine's quantize, float32 division)

   ``qparams_from_range(-max|y|, max|y|, int8-narrow, symmetric=True)`` computes ``s_g``, the
   same rule as a symmetric min-max weight; :func:`refquant.numerics.quantize` computes q.
   The weight the kernels see is ``values = q[g, idx]``, i.e. ``w ≈ s_g · q[g, idx]``.

Why this grid. *Zero point 0*: the kernels then need no weight-offset correction, and a
codebook symmetric about 0 stays exactly symmetric (round half to even is odd-symmetric).
*Narrow range*: ``[-127, 127]`` is symmetric, so the largest level of either sign is exactly
±127 (−128 would have no positive partner). *Scale from the largest |level|*: the outermost
level lands on ±127, so every level is represented with the finest step the int8 grid allows
for this codebook, and no level saturates. *A nonzero loc* (the fitted mean or median) is kept
inside the levels — they are levels of the real value, relative to 0 — rather than in a zero
point: the grid stays symmetric and the kernels unchanged; the price is that a codebook
shifted to one side uses only part of the grid on the other (the step is set by the farther
side), which for weights, whose loc is a small fraction of their spread, is a small loss.

**Representation error.** Every level moves by at most half a step of its group's grid,
``|y_k − s_g q_k| <= s_g / 2`` (plus float32 rounding of the product), so every weight the
kernels see differs from its float codebook value by at most ``s_g / 2``. Relative to the
Lloyd-Max error it is small when the levels are far apart compared with ``s_g`` and large
when they are not: with ~4σ/127 for s_g, at 8 bits (256 levels on 255 int8 values, spaced
closer than s_g near the centre) several levels round to the same int8 value and the int8
grid, not the codebook, sets the error (``spec/strategies/lloydmax.md`` §9.2 has the numbers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refquant.numerics import IntFormat, QParams, qparams_from_range, quantize
from refquant.strategies import weight_groups

from .densities import Samples
from .fit import PRIOR_CHOICES, PriorFit, fit_prior
from .solver import lloyd_max

__all__ = ["INT8_NARROW", "REFINE_CHOICES", "CodebookDesign", "weight_groups", "fit_groups", "group_levels",
           "nearest_level", "int8_grid", "design_codebook"]

#: the grid every codebook is expressed on: signed 8-bit, narrow range [-127, 127]
INT8_NARROW = IntFormat(8, True, narrow=True)

#: ``refine`` option: ``"weights"`` refines a prior's codebook on the group's values, ``"none"`` keeps it
REFINE_CHOICES = ("weights", "none")


@dataclass(frozen=True)
class CodebookDesign:
    """Everything the Lloyd-Max weight strategy computes for one weight tensor.

    Arrays have one row per group (G = 1 per-tensor, C_out per-channel), N = 2^bits levels:

    * ``codebook`` float32 [G, N] — the sorted float levels of each group;
    * ``qparams`` — the int8-narrow grid: per-tensor, or per-channel along axis 0;
    * ``codebook_int8`` int8 [G, N] — the levels on that grid;
    * ``indices`` uint8, the weight's shape — the level index of every weight;
    * ``fits`` — one :class:`PriorFit` per group (``None`` for a constant group);
    * ``origins`` — per group, where its levels come from: ``"prior"`` (the prior's table, or
      its refinement on the values), ``"uniform"`` (Lloyd on the values from the best uniform
      grid: the empirical codebook, or the refinement's other start when it won) or
      ``"constant"``.
    """

    bits: int
    codebook: np.ndarray
    qparams: QParams
    codebook_int8: np.ndarray
    indices: np.ndarray
    fits: tuple
    origins: tuple = ()

    @property
    def groups(self) -> int:
        return self.codebook.shape[0]

    @property
    def scales(self) -> np.ndarray:
        """The int8 step s_g of each group, float32 [G]."""
        return np.broadcast_to(self.qparams.scale, (self.groups,)).astype(np.float32)

    def float_weight(self) -> np.ndarray:
        """``codebook[g, idx]`` as float32 in the weight's layout: the float (fake-quant) weight."""
        rows = self.indices.reshape(self.groups, -1).astype(np.intp)
        return np.take_along_axis(self.codebook, rows, axis=1).reshape(self.indices.shape)

    def int8_values(self) -> np.ndarray:
        """``codebook_int8[g, idx]`` as int8 in the weight's layout: what the kernels consume."""
        rows = self.indices.reshape(self.groups, -1).astype(np.intp)
        return np.take_along_axis(self.codebook_int8, rows, axis=1).reshape(self.indices.shape)

    def int8_levels(self) -> np.ndarray:
        """``s_g · codebook_int8`` as float32 [G, N] (the engine's dequantize: float32 product)."""
        return (self.codebook_int8.astype(np.float32) * self.scales[:, None]).astype(np.float32)




def _where(layer: str, per_channel: bool, g: int) -> str:
    return f"layer {layer!r} weight" + (f", channel {g}" if per_channel else "")


def fit_groups(rows: np.ndarray, prior: str, *, per_channel: bool, layer: str) -> tuple:
    """:func:`~refquant_lloydmax.fit.fit_prior` of every group (row); ``None`` for a constant one."""
    return tuple(None if x.min() == x.max() else
                 fit_prior(x.astype(np.float64), prior=prior, name=_where(layer, per_channel, g))
                 for g, x in enumerate(rows))


def group_levels(x: np.ndarray, bits: int, fit: PriorFit | None, refine: str = "weights") -> tuple[np.ndarray, str]:
    """The 2^bits sorted float64 levels for the values ``x`` of one group with prior ``fit``, and their origin.

    Gaussian or Laplace: ``loc + std * table``, refined on ``x`` unless ``refine="none"``;
    empirical: the Lloyd-Max quantizer of ``x`` itself (module docstring, step 2). A constant
    group (``fit`` None) gets N copies of its value. The origin is ``"prior"``, ``"uniform"``
    or ``"constant"`` (:class:`CodebookDesign`).
    """
    n = 2 ** bits
    x64 = np.asarray(x, dtype=np.float64).reshape(-1)
    if fit is None:
        return np.full(n, x64[0]), "constant"
    if fit.prior == "empirical":
        return np.array(lloyd_max(x64, n).levels), "uniform"
    prior = fit.loc + fit.std * np.array(lloyd_max(fit.prior, n).levels)
    if refine == "none":
        return prior, "prior"
    samples = Samples(x64)  # sorted once, with its prefix sums, for both starts
    from_prior, from_uniform = lloyd_max(samples, n, init=prior), lloyd_max(samples, n)
    if from_prior.mse <= from_uniform.mse:
        return np.array(from_prior.levels), "prior"
    return np.array(from_uniform.levels), "uniform"


def nearest_level(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``levels`` for every value of ``x`` (ties to the lower).

    ``#{k : t_k < x}`` with ``t_k = (y_k + y_{k+1}) / 2`` in float64.
    """
    y = np.asarray(levels, dtype=np.float64)
    t = 0.5 * (y[:-1] + y[1:])
    return np.searchsorted(t, np.asarray(x, dtype=np.float64), side="left")


def int8_grid(codebook: np.ndarray, *, per_channel: bool, name: str) -> tuple[QParams, np.ndarray]:
    """The int8-narrow qparams of each group and its levels on them (module docstring, step 4).

    ``codebook`` is float32 [G, N]. Returns ``(qparams, codebook_int8)`` with qparams
    per-channel (axis 0, G scales) or per-tensor.
    """
    amax = np.max(np.abs(codebook.astype(np.float64)), axis=1)
    if per_channel:
        qp = qparams_from_range(-amax, amax, INT8_NARROW, symmetric=True, axis=0, name=name)
    else:
        qp = qparams_from_range(-amax[0], amax[0], INT8_NARROW, symmetric=True, name=name)
    return qp, quantize(codebook, qp)


def design_codebook(w, bits: int, *, per_channel: bool, prior: str = "auto", refine: str = "weights",
                    layer: str = "tensor", fits: tuple | None = None) -> CodebookDesign:
    """Fit, solve and place on the int8 grid the Lloyd-Max codebook(s) of the weight ``w``.

    ``w`` has output channels on axis 0; ``bits`` in 1..8 gives 2^bits levels per group.
    ``fits`` may pass the groups' prior fits from :func:`fit_groups` (they do not depend on
    ``bits``); otherwise they are computed with ``prior``. Errors (bad tensor, unknown prior,
    a codebook beyond float32) name ``layer``.
    """
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"layer {layer!r}: Lloyd-Max bits must be an integer in 1..8, got {bits!r}")
    if prior not in PRIOR_CHOICES:
        raise ValueError(f"layer {layer!r}: option 'prior' must be one of {PRIOR_CHOICES}, got {prior!r}")
    if refine not in REFINE_CHOICES:
        raise ValueError(f"layer {layer!r}: option 'refine' must be one of {REFINE_CHOICES}, got {refine!r}")
    rows = weight_groups(w, per_channel=per_channel, layer=layer)
    if fits is None:
        fits = fit_groups(rows, prior, per_channel=per_channel, layer=layer)
    if len(fits) != rows.shape[0]:
        raise ValueError(f"layer {layer!r}: {len(fits)} prior fits for {rows.shape[0]} groups")
    n = 2 ** int(bits)
    codebook = np.empty((rows.shape[0], n), dtype=np.float32)
    indices = np.empty(rows.shape, dtype=np.uint8)
    origins = []
    for g, (x, fit) in enumerate(zip(rows, fits)):
        levels, origin = group_levels(x, int(bits), fit, refine)
        origins.append(origin)
        with np.errstate(over="ignore"):
            stored = levels.astype(np.float32)
        if not np.all(np.isfinite(stored)):
            raise ValueError(f"{_where(layer, per_channel, g)}: the Lloyd-Max levels exceed the float32 "
                             f"range (largest |level| {np.max(np.abs(levels)):.3g}); rescale the weight")
        codebook[g] = stored
        indices[g] = nearest_level(x, stored)
    qp, codebook_int8 = int8_grid(codebook, per_channel=per_channel, name=f"{layer}.weight")
    return CodebookDesign(int(bits), codebook, qp, codebook_int8,
                          indices.reshape(np.shape(w)), tuple(fits), tuple(origins))
