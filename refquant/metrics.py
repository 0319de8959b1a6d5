"""How good a quantized result is: classification accuracy and signal-to-noise ratios.

* accuracy: the fraction of arg-max predictions equal to the labels (``numpy.argmax``: the
  first maximum wins a tie);
* ``snr_db(signal_power, noise_power) = 10·log10(signal_power / noise_power)`` dB, +inf when
  the noise is zero;
* ``sqnr_db(reference, approx)``: :func:`snr_db` of ``Σ reference²`` against
  ``Σ (approx − reference)²``, both summed in float64;
* fidelity to a reference model, for models without labels (``refquant compare
  efficientnet-lite0``): ``topk_agreement(reference, approx, k)`` — the fraction of rows whose
  reference arg-max class is among the ``k`` largest ``approx`` logits, i.e. fewer than ``k``
  approx logits are strictly larger than the approx logit of that class (a tie counts in its
  favour). ``k = 1``: top-1 agreement (the two models name the same class); ``k = 5``: top-5
  agreement (the reference's answer survives in the approximation's top 5). The reference's
  arg-max is ``numpy.argmax`` (first maximum). ``agreement_counts`` gives ``(agreeing, total)``.

* fidelity of sentence embeddings (``refquant compare minilm-l6``), all in float64:
  ``cosine_similarities(reference, approx)`` — per row ``⟨r, a⟩ / (‖r‖·‖a‖)``;
  ``nearest_neighbour_agreement(reference, approx)`` — the fraction of rows whose nearest other
  row by cosine similarity (``numpy.argmax``, first maximum) is the same under both;
  ``pairwise_spearman(reference, approx)`` — Spearman's rank correlation
  (``scipy.stats.spearmanr``, average ranks for ties) of the cosine similarities of all
  ``n(n−1)/2`` pairs of rows.

``refquant compare``, training reports and the plugins' reports all measure with these.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

__all__ = ["accuracy", "accuracy_counts", "agreement_counts", "cosine_similarities", "nearest_neighbour_agreement",
           "pairwise_spearman", "snr_db", "sqnr_db", "topk_agreement"]


def accuracy_counts(logits: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """``(correct, total)``: arg-max predictions (over axis 1) equal to the labels ``y``."""
    return int(np.sum(np.argmax(logits, axis=1) == y)), int(len(y))


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """The fraction of arg-max predictions (over axis 1) equal to the labels ``y``."""
    return float(np.mean(np.argmax(logits, axis=1) == y))


def snr_db(signal_power: float, noise_power: float) -> float:
    """``10·log10(signal_power / noise_power)``; +inf for zero noise."""
    return float("inf") if noise_power == 0 else float(10.0 * np.log10(signal_power / noise_power))


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """``10·log10(Σ ref² / Σ (approx − ref)²)``; +inf when they are equal."""
    noise = float(np.sum((approx.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return snr_db(signal, noise)


def agreement_counts(reference: np.ndarray, approx: np.ndarray, k: int = 1) -> tuple[int, int]:
    """``(agreeing, total)``: rows whose ``reference`` arg-max class is in ``approx``'s top ``k``."""
    reference, approx = np.asarray(reference), np.asarray(approx)
    if reference.shape != approx.shape or reference.ndim != 2:
        raise ValueError(f"agreement needs two [N, classes] arrays of one shape, got {reference.shape} "
                         f"and {approx.shape}")
    if not 1 <= k <= reference.shape[1]:
        raise ValueError(f"k must be in 1..{reference.shape[1]}, got {k}")
    top = np.argmax(reference, axis=1)
    mine = approx[np.arange(len(approx)), top][:, None]
    larger = np.sum(approx > mine, axis=1)
    return int(np.sum(larger < k)), int(len(reference))


def topk_agreement(reference: np.ndarray, approx: np.ndarray, k: int = 1) -> float:
    """The fraction of rows whose ``reference`` arg-max class is among ``approx``'s ``k`` largest."""
    agree, total = agreement_counts(reference, approx, k)
    return agree / total if total else float("nan")


def _rows(reference, approx, what: str):
    reference, approx = np.asarray(reference, np.float64), np.asarray(approx, np.float64)
    if reference.shape != approx.shape or reference.ndim != 2:
        raise ValueError(f"{what} needs two [N, dim] arrays of one shape, got {reference.shape} and {approx.shape}")
    return reference, approx


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def cosine_similarities(reference: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per row, ``⟨r, a⟩ / (‖r‖·‖a‖)`` in float64 (a zero row counts as similarity 0)."""
    reference, approx = _rows(reference, approx, "cosine similarity")
    return np.sum(_unit(reference) * _unit(approx), axis=1)


def _similarity_matrix(x: np.ndarray) -> np.ndarray:
    u = _unit(x)
    return u @ u.T


def nearest_neighbour_agreement(reference: np.ndarray, approx: np.ndarray) -> float:
    """The fraction of rows whose nearest other row (cosine) is the same in ``reference`` and ``approx``."""
    reference, approx = _rows(reference, approx, "nearest-neighbour agreement")
    if len(reference) < 2:
        raise ValueError(f"nearest-neighbour agreement needs at least 2 rows, got {len(reference)}")
    nn = []
    for x in (reference, approx):
        s = _similarity_matrix(x)
        np.fill_diagonal(s, -np.inf)
        nn.append(np.argmax(s, axis=1))
    return float(np.mean(nn[0] == nn[1]))


def pairwise_spearman(reference: np.ndarray, approx: np.ndarray) -> float:
    """Spearman's rho of the cosine similarities of every pair of rows, reference against approx."""
    reference, approx = _rows(reference, approx, "pairwise Spearman correlation")
    if len(reference) < 3:
        raise ValueError(f"pairwise Spearman correlation needs at least 3 rows, got {len(reference)}")
    i, j = np.triu_indices(len(reference), 1)
    return float(spearmanr(_similarity_matrix(reference)[i, j], _similarity_matrix(approx)[i, j]).statistic)
