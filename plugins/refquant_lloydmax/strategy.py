"""The weight strategy ``lloydmax``: b-bit indices into a Lloyd-Max codebook, run on the int8 kernels.

For each group (the tensor, or each output channel) :func:`~refquant_lloydmax.codebook.design_codebook`
fits the prior, scales the 2^b-level Lloyd-Max table to it, refines it on the group's own
weights (option ``refine``) and writes the levels on the narrow int8 grid. The :class:`~refquant.strategies.QuantizedWeight` it returns has

* ``values`` = ``codebook_int8[g, idx]`` (int8, the weight's layout) and ``qparams`` = the
  int8-narrow grid (zero point 0; one scale per tensor, or per output channel on axis 0): the
  ordinary fused and unfused int8 kernels run it, so Lloyd-Max weights compose with every
  activation strategy. Note ``qparams.fmt`` is int8-narrow whatever b is: the weight holds at
  most 2^b distinct values per group, but not on a b-bit uniform grid;
* ``representation = "codebook"`` and ``arrays``: ``indices`` (b ≤ 4: two per byte,
  :func:`refquant.numerics.pack_nibbles` in the weight's C order; b > 4: uint8 in the
  weight's shape), ``codebook`` (float32 [G, 2^b]) and ``codebook_int8`` (int8 [G, 2^b]);
* ``bits_per_weight`` — the weight's size in the form its execution needs, spread over its
  numel: ``b + G·(8·2^b + 32)/numel`` for the int8 kernels (b-bit indices, an int8 lookup
  table and a float32 scale per group; the zero point is always 0 and not stored) and
  ``b + G·32·2^b/numel`` for float execution (a float32 codebook per group). b-bit indices
  are counted at b bits, as a dense packing stores them (the ``indices`` array uses whole
  nibbles or bytes);
* ``execution`` — option ``execution``: ``"integer"`` (default) or ``"float"``: the float
  fake-quant path, where the layer computes in float32 with ``float_values`` = the float
  codebook values ``codebook[g, idx]``, without the int8 rounding of the levels.

Options (``LayerSpec.options``): ``prior`` = ``auto`` (KS choice, default) | ``gaussian`` |
``laplace`` | ``empirical``; ``refine`` = ``weights`` (default: the prior's codebook refined
by Lloyd's iteration on the weights, never worse than the prior's nor than the empirical
codebook) | ``none`` (the paper's codebook as it is); ``execution`` = ``integer`` | ``float``.
Plan strings carry no options, so the strategy object also takes defaults for all three
(``LloydMaxWeights(execution="float", name="lloydmax-float")`` registers the float path under
a name of its own); an option in the spec wins over the default. Only the signed symmetric
weight grid (the plan's default for weights) is supported: the codebook carries its own
offset (loc) and the int8 grid is symmetric by construction.
"""
from __future__ import annotations

import numpy as np

from refquant.numerics import pack_nibbles, unpack_nibbles
from refquant.strategies import LayerSpec, QuantizedWeight

from .codebook import CodebookDesign, design_codebook

__all__ = ["LloydMaxWeights", "EXECUTIONS", "codebook_bits_per_weight", "quantized_weight",
           "indices_of"]

EXECUTIONS = ("integer", "float")


def codebook_bits_per_weight(numel: int, groups: int, bits: int, execution: str = "integer") -> float:
    """``b + G·(8·2^b + 32)/numel`` (int8 lookup table + float32 scale per group), or
    ``b + G·32·2^b/numel`` (float32 codebook per group) for float execution."""
    per_group = 8 * 2**bits + 32 if execution == "integer" else 32 * 2**bits
    return bits + groups * per_group / numel


def _packed_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 4:
        return pack_nibbles(indices.astype(np.int16), "uint4")
    return indices.astype(np.uint8)


def indices_of(qw: QuantizedWeight) -> np.ndarray:
    """The level index of every weight (uint8, the weight's shape), unpacked from ``qw.arrays``."""
    packed = np.asarray(qw.arrays["indices"])
    if packed.shape == qw.values.shape:
        return packed.astype(np.uint8)
    return unpack_nibbles(packed, qw.values.size, "uint4").astype(np.uint8).reshape(qw.values.shape)


def quantized_weight(design: CodebookDesign, execution: str = "integer") -> QuantizedWeight:
    """The :class:`QuantizedWeight` of a codebook design (module docstring)."""
    numel = design.indices.size
    return QuantizedWeight(
        values=design.int8_values(),
        qparams=design.qparams,
        representation="codebook",
        arrays={"indices": _packed_indices(design.indices, design.bits),
                "codebook": design.codebook.copy(), "codebook_int8": design.codebook_int8.copy()},
        bits_per_weight=codebook_bits_per_weight(numel, design.groups, design.bits, execution),
        execution=execution,
        float_values=design.float_weight() if execution == "float" else None,
    )


class LloydMaxWeights:
    """Weights by Lloyd-Max: 2^b MSE-optimal levels for the KS-chosen Gaussian or Laplace prior.

    Data-free (arXiv 2412.07391): per tensor or output channel, fit both priors, keep the
    smaller Kolmogorov-Smirnov statistic, scale the unit-variance Lloyd-Max table to the fit,
    then (``refine="weights"``, default) refine it by Lloyd's iteration on the weights
    themselves; b-bit indices into the codebook, executed on the int8 kernels through an int8
    lookup table (narrow grid, scale max|level|/127). Options: ``prior`` (auto | gaussian |
    laplace | empirical), ``refine`` (weights | none), ``execution`` (integer | float).
    """

    kind = "weights"
    doc = __doc__
    options = ("prior", "refine", "execution")

    def __init__(self, *, prior: str = "auto", refine: str = "weights", execution: str = "integer",
                 name: str = "lloydmax"):
        self.name, self.prior, self.refine, self.execution = name, prior, refine, execution

    def design(self, w: np.ndarray, spec: LayerSpec) -> CodebookDesign:
        """The codebook design of ``w`` under ``spec`` (see :mod:`refquant_lloydmax.codebook`)."""
        if not (spec.signed and spec.symmetric):
            raise ValueError(f"layer {spec.layer!r}: lloydmax writes its codebook on the signed "
                             f"symmetric int8 grid; asked for a "
                             f"{'signed' if spec.signed else 'unsigned'} "
                             f"{'symmetric' if spec.symmetric else 'asymmetric'} weight grid")
        return design_codebook(w, spec.bits, per_channel=spec.per_channel,
                               prior=spec.option("prior", self.prior), refine=spec.option("refine", self.refine),
                               layer=spec.layer)

    def quantize_weight(self, w: np.ndarray, spec: LayerSpec) -> QuantizedWeight:
        execution = spec.option("execution", self.execution)
        if execution not in EXECUTIONS:
            raise ValueError(f"layer {spec.layer!r}: option 'execution' must be one of {EXECUTIONS}, "
                             f"got {execution!r}")
        return quantized_weight(self.design(w, spec), execution)
