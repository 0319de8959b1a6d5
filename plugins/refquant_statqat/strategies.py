"""The post-training strategies: ``statqat-analytic`` weights and ``statqat-iterative`` activations.

**Grids from a plan.** A :class:`~refquant.strategies.LayerSpec` names an integer grid (bits,
signedness, symmetry). The LayerSpec option ``format`` may name a float format instead
(:data:`.grids.FLOAT_GRIDS`). refquant's quantized executor runs Conv/Gemm/MatMul on int8
kernels, so a float format runs there only if its values, times a power of two, are integers
that fit the narrow int8 grid: ``float4_e2m1fn`` (values × 2 ∈ {0, ±1, ±2, ±3, ±4, ±6, ±8,
±12}) and ``float6_e2m3fn`` (× 8, up to ±60). Those two are written as a ``"codebook"`` weight
(:func:`float_codebook_weight`): exact, the dequantized weight is bit for bit the float path's
``round_to_format(w/s)·s``. ``float6_e3m2fn`` (× 16 reaches ±448) and the FP8 formats do not
fit and are refused with a ``ValueError`` naming the layer, as are float-format activations:
they run as fake quantization on the float path (:mod:`.qat`, :func:`.grids.fake_quantize_float`).
In a plan the option is a ``KEY=VALUE`` part: ``weights=statqat-analytic:4:format=float4_e2m1fn``.

**statqat-analytic** (weights, per tensor or per output channel): the weight is modelled as a
zero-mean density of standard deviation ``σ = sqrt(mean(w^2))`` over the tensor or the channel
(the root mean square: the grid is centred on 0, so a mean is part of what it must represent),
and the scale is the analytic one, capped at min-max's::

    s_d = min( κ_d(grid) · σ,  max|w| / top )          d = Gaussian, Laplace

with κ from :mod:`.kappa` (``grid`` = the narrow symmetric ``int<b>``, or the float format).
StatQAT's analytic quantizer is the Gaussian ``s_G``. The weights of the shipped models are
heavy-tailed in places (kurtosis up to 7), where the Gaussian clip is too tight, so refquant
keeps, per tensor or channel, whichever of ``s_G`` and ``s_L`` (unit-variance Laplace) gives
the smaller quantization error on the weight itself (option ``prior``: ``"auto"``, the default,
or force ``"gaussian"`` / ``"laplace"``). It is still a closed-form scale — two candidates
scored once, no search. The cap: a clip beyond the largest weight only widens the step (it
binds on small groups, e.g. 9 weights per channel). Zero point 0 (signed) or ``2^(b-1)``
(unsigned); an all-zero tensor or channel gets scale 1 (its values are exactly 0). The qparams
are on the plan's grid (``spec.fmt``) and the weight is quantized by
:func:`refquant.numerics.quantize`: the ordinary int8/int4 kernels run it.

**statqat-iterative** (activations, offline): the observer keeps every calibration value of the
tensor (or of each channel, axis 1) — memory grows with the calibration set, 4 bytes per
value — and ``qparams()`` runs :func:`.iterative.iterative_scale` on them: on the grid
``[qmin - z, qmax - z]`` with ``z = 0`` (signed) or ``2^(b-1)`` (unsigned) for a symmetric
plan, and with the zero point chosen by :func:`.iterative.best_zero_point` for an asymmetric
one (the default uint8 activation plan: ``z = 0`` for post-ReLU data, a search over ``z``
for data of both signs). Any split of the calibration data into batches gives the same
qparams. All-zero data gets scale 1 and the zero point the same rule gives for ``x >= 0``.
"""

from __future__ import annotations

import numpy as np

from refquant.numerics import IntFormat, QParams, float_format, format_values, quantize, round_to_format
from refquant.strategies import LayerSpec, QuantizedWeight, weight_groups

from .analytic import analytic_scale
from .grids import FLOAT_GRIDS, Grid, grid, quantize_to_grid, uniform_grid
from .iterative import best_zero_point, iterative_scale
from .samples import SortedSamples

__all__ = ["PRIORS", "prior_option", "AnalyticWeights", "IterativeActivations", "IterativeObserver", "float_format_option",
           "analytic_row_scales", "weight_rows", "activation_rows", "iterative_qparams", "float_codebook_weight",
           "INT8_EXACT_FORMATS"]


def float_format_option(spec: LayerSpec) -> str | None:
    """The float format the LayerSpec option ``format`` names, or None for the integer grid."""
    fmt = spec.option("format")
    if fmt is None:
        return None
    if fmt not in FLOAT_GRIDS:
        raise ValueError(f"layer {spec.layer!r}: option 'format' must be one of {', '.join(FLOAT_GRIDS)}, "
                         f"got {fmt!r}")
    return fmt


#: float formats whose values times a power of two are integers on the narrow int8 grid
INT8_EXACT_FORMATS = {"float4_e2m1fn": 2, "float6_e2m3fn": 8}


def _refuse_float(spec: LayerSpec, what: str) -> None:
    fmt = float_format_option(spec)
    if fmt is not None:
        raise ValueError(f"layer {spec.layer!r}: {what} on {fmt} needs a float-format execution path, which "
                         f"the quantized executor does not have (it runs int8 kernels); simulate it with "
                         f"fake quantization on the float path instead (refquant_statqat.qat)")


def float_codebook_weight(w: np.ndarray, scale: np.ndarray, fmt: str, spec: LayerSpec) -> QuantizedWeight:
    """A float-format weight as a ``"codebook"`` weight on the narrow int8 grid (exact).

    ``v = round_to_format(float32(w) / float32(s), fmt)`` (float32 division, as
    :func:`.grids.fake_quantize_float`), stored as the integer ``m·v`` with the int8 scale
    ``s/m`` (``m`` = 2 for E2M1, 8 for E2M3: exact, a power of two). Then
    ``dequantize = float32(m v) · float32(s/m) = float32(v·s)``, the float path's value.
    ``arrays``: ``indices`` (uint8, the position of ``v`` among the format's sorted values) and
    ``codebook`` (float32 ``[groups, 2^b - 1]``: ``s_g ·`` those values).
    """
    m = INT8_EXACT_FORMATS[fmt]
    fmt_obj = float_format(fmt)
    if spec.bits != fmt_obj.total_bits or not spec.signed:
        raise ValueError(f"layer {spec.layer!r}: a {fmt} weight needs a signed {fmt_obj.total_bits}-bit plan entry, "
                         f"got {spec.bits}-bit {'signed' if spec.signed else 'unsigned'}")
    w32 = np.asarray(w, dtype=np.float32)
    s32 = np.asarray(scale, dtype=np.float32)
    shape = [-1] + [1] * (w32.ndim - 1)
    v = round_to_format(w32 / (s32.reshape(shape) if spec.per_channel else s32.reshape(-1)[0]), fmt)
    int8 = IntFormat(8, True, narrow=spec.fmt.narrow)
    name = f"{spec.layer}.weight"
    step = (s32 / np.float32(m)).astype(np.float32)
    if spec.per_channel:
        qp = QParams(step, np.zeros(step.shape, np.int32), int8, axis=0, name=name)
    else:
        qp = QParams(step.reshape(-1)[0], 0, int8, name=name)
    levels = format_values(fmt)
    indices = np.searchsorted(levels, v.astype(np.float64)).astype(np.uint8)
    codebook = (s32.reshape(-1, 1).astype(np.float64) * levels).astype(np.float32)
    return QuantizedWeight(values=(v * m).astype(np.int8), qparams=qp, representation="codebook",
                           arrays={"indices": indices, "codebook": codebook},
                           bits_per_weight=fmt_obj.total_bits + s32.size * 32 / w32.size)


def weight_rows(w, spec: LayerSpec) -> np.ndarray:
    """The weight as float32 rows ``[groups, n]`` (:func:`refquant.strategies.weight_groups`)."""
    return weight_groups(w, per_channel=spec.per_channel, layer=spec.layer)


PRIORS = ("gaussian", "laplace")


def prior_option(spec: LayerSpec) -> str:
    """LayerSpec option ``prior``: ``"auto"`` (default), ``"gaussian"`` or ``"laplace"``."""
    prior = spec.option("prior", "auto")
    if prior not in ("auto",) + PRIORS:
        raise ValueError(f"layer {spec.layer!r}: option 'prior' must be 'auto', 'gaussian' or 'laplace', "
                         f"got {prior!r}")
    return prior


def analytic_row_scales(rows: np.ndarray, g: Grid, prior: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``(scale, prior index)`` with ``scale = min(κ_prior(g) · rms(row), max|row| / top)``.

    ``prior="auto"``: both priors' scales are tried and each row keeps the one whose
    quantization error ``Σ (w - Q(w))^2`` (float64, :func:`.grids.quantize_to_grid`) is smaller
    — the Gaussian on a tie. An all-zero row gets scale 1. The index is 0 (Gaussian) or 1 (Laplace).
    """
    r = rows.astype(np.float64)
    rms = np.sqrt(np.mean(r * r, axis=1))
    amax = np.max(np.abs(r), axis=1)
    nonzero = amax > 0
    candidates = [np.where(nonzero, np.minimum(analytic_scale(g, rms, distribution=d), amax / g.top), 1.0)
                  for d in PRIORS]
    if prior != "auto":
        k = PRIORS.index(prior)
        return candidates[k], np.full(r.shape[0], k)
    errors = [np.sum((r - quantize_to_grid(r, g, s[:, None])) ** 2, axis=1) for s in candidates]
    laplace = errors[1] < errors[0]
    return np.where(laplace, candidates[1], candidates[0]), laplace.astype(int)


class AnalyticWeights:
    """StatQAT's analytic weight quantizer: scale κ·σ (Gaussian or Laplace κ, whichever errs less; capped at min-max).

    Per tensor or per output channel; κ of the narrow symmetric grid from the exact MSE of the
    unit-variance density. See :mod:`refquant_statqat.strategies` and ``spec/strategies/statqat.md``.
    """

    name = "statqat-analytic"
    options = ("format", "prior")
    kind = "weights"
    doc = __doc__

    def quantize_weight(self, w: np.ndarray, spec: LayerSpec) -> QuantizedWeight:
        fmt = float_format_option(spec)
        if fmt is not None and fmt not in INT8_EXACT_FORMATS:
            _refuse_float(spec, "statqat-analytic")
        rows = weight_rows(w, spec)
        g = grid(fmt or f"int{spec.bits}")
        scale, _ = analytic_row_scales(rows, g, prior_option(spec))
        if fmt is not None:
            return float_codebook_weight(w, scale, fmt, spec)
        zero_point = 0 if spec.signed else 2 ** (spec.bits - 1)
        name = f"{spec.layer}.weight"
        if spec.per_channel:
            qp = QParams(scale, np.full(scale.shape, zero_point, np.int32), spec.fmt, axis=0, name=name)
        else:
            qp = QParams(scale[0], zero_point, spec.fmt, name=name)
        w32 = np.asarray(w, dtype=np.float32)
        return QuantizedWeight(values=quantize(w32, qp), qparams=qp,
                               bits_per_weight=spec.bits + scale.size * (32 + spec.bits) / w32.size)


def activation_rows(y, spec: LayerSpec) -> np.ndarray:
    """``y`` as float32 rows: ``[1, size]`` per tensor, ``[C, size / C]`` per channel (axis 1)."""
    y = np.asarray(y)
    where = f"layer {spec.layer!r}"
    if y.dtype.kind not in "fiu":
        raise TypeError(f"{where}: calibration expects a real-valued tensor, got dtype {y.dtype}")
    y = y.astype(np.float32, copy=False)
    if spec.per_channel and y.ndim < 2:
        raise ValueError(f"{where}: per-channel activations need channels on axis 1, got shape {y.shape}")
    if y.size and not np.all(np.isfinite(y)):
        raise ValueError(f"{where}: {int(np.count_nonzero(~np.isfinite(y)))} non-finite value(s) (NaN or Inf) "
                         f"in the tensor")
    if not spec.per_channel:
        return y.reshape(1, -1)
    return np.moveaxis(y, 1, 0).reshape(y.shape[1], -1)


def _symmetric_zero_point(spec: LayerSpec) -> int:
    return 0 if spec.signed else 2 ** (spec.bits - 1)


def iterative_qparams(rows: list, spec: LayerSpec, *, init=None, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(scales float64, zero points int32)`` per row of samples for ``spec``'s integer grid.

    Symmetric plan: zero point at the grid's centre, :func:`.iterative.iterative_scale` on
    ``[qmin - z, qmax - z]``. Asymmetric: :func:`.iterative.best_zero_point`. ``init`` (one
    scale per row, or None) warm-starts the iteration. An all-zero row: scale 1 and the zero
    point of non-negative data.
    """
    fmt = spec.fmt
    scales = np.ones(len(rows))
    zps = np.zeros(len(rows), np.int32)
    for i, row in enumerate(rows):
        start = None if init is None else float(np.asarray(init).reshape(-1)[i])
        what = f"layer {spec.layer!r}" + (f" channel {i}" if spec.per_channel else "")
        if spec.symmetric:
            z = _symmetric_zero_point(spec)
            zps[i] = z
            if np.any(row != 0):
                g = uniform_grid(fmt.qmin - z, fmt.qmax - z)
                scales[i] = iterative_scale(row, g, init=start, max_iter=max_iter).scale
        else:
            if not np.any(row != 0):
                zps[i] = fmt.qmin
                continue
            r = best_zero_point(SortedSamples(row), fmt.qmin, fmt.qmax, init=start, max_iter=max_iter, what=what)
            scales[i], zps[i] = r.scale, r.zero_point
    return scales, zps


def _to_qparams(scales: np.ndarray, zps: np.ndarray, spec: LayerSpec, axis: int) -> QParams:
    if spec.per_channel:
        return QParams(scales, zps, spec.fmt, axis=axis, name=spec.layer)
    return QParams(scales[0], zps[0], spec.fmt, name=spec.layer)


class IterativeObserver:
    """Keeps every observed value (per tensor, or per channel of axis 1) for the fixed point."""

    def __init__(self, spec: LayerSpec, strategy: str = "statqat-iterative"):
        self.spec = spec
        self.strategy = strategy
        self.chunks: list[np.ndarray] = []

    def observe(self, y, *, context=None, x=None) -> None:
        rows = activation_rows(y, self.spec)
        if rows.shape[1] == 0:
            return
        if self.chunks and rows.shape[0] != self.chunks[0].shape[0]:
            raise ValueError(f"layer {self.spec.layer!r}: batch has {rows.shape[0]} channels, earlier batches "
                             f"had {self.chunks[0].shape[0]}")
        self.chunks.append(np.array(rows))

    def qparams(self) -> QParams:
        if not self.chunks:
            raise ValueError(f"layer {self.spec.layer!r}: strategy {self.strategy!r} has observed no values; "
                             f"run calibration batches through observe() before qparams()")
        data = np.concatenate(self.chunks, axis=1).astype(np.float64)
        scales, zps = iterative_qparams(list(data), self.spec)
        return _to_qparams(scales, zps, self.spec, axis=1)


class IterativeActivations:
    """StatQAT's iterative activation quantizer: the MSE fixed point on the calibration data, fixed offline.

    Statistical (OCTAV-type) update, then the exact refinement; asymmetric plans search the
    zero point. See :mod:`refquant_statqat.iterative` and ``spec/strategies/statqat.md``.
    """

    name = "statqat-iterative"
    options = ("format",)
    kind = "activations"
    timing = "offline"
    doc = __doc__

    def make_observer(self, spec: LayerSpec) -> IterativeObserver:
        _refuse_float(spec, "statqat-iterative")
        return IterativeObserver(spec, self.name)

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        """The calibrated qparams; ``ValueError`` naming the layer if there are none."""
        if observed is None:
            raise ValueError(f"layer {spec.layer!r}: activation strategy {self.name!r} fixes qparams offline, "
                             f"but this tensor was never calibrated; run calibration data through the model first")
        if not isinstance(observed, QParams):
            raise TypeError(f"layer {spec.layer!r}: calibrated qparams must be QParams, got {type(observed).__name__}")
        return observed

