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

__all__ = ["accuracy", "accuracy_counts", "agreement_counts", "box_f1", "box_iou", "character_error_rate",
           "cosine_similarities", "levenshtein", "nearest_neighbour_agreement", "pairwise_spearman", "snr_db",
           "sqnr_db", "topk_agreement"]


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
# ---- OCR -----------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """The edit distance (insertions, deletions, substitutions, each 1) between two strings:
    the dynamic programme row by row, each row one NumPy minimum over the previous one."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int64)
    for i, ch in enumerate(a, start=1):
        sub = prev[:-1] + (bb != ord(ch))
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(sub, prev[1:] + 1)
        # insertions run along the row: cur[j] = min(cur[j], cur[j-1] + 1), a running minimum of cur[j] - j
        cur = np.minimum.accumulate(cur - np.arange(len(cur))) + np.arange(len(cur))
        prev = cur
    return int(prev[-1])


def character_error_rate(hypothesis: str, reference: str) -> float:
    """``levenshtein(hypothesis, reference) / len(reference)`` (0 for two empty strings)."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return levenshtein(hypothesis, reference) / len(reference)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two quadrilaterals (4, 2), each taken as its axis-aligned bounding rectangle."""
    ax0, ay0, ax1, ay1 = a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()
    bx0, by0, bx1, by1 = b[:, 0].min(), b[:, 1].min(), b[:, 0].max(), b[:, 1].max()
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def box_f1(reference: np.ndarray, boxes: np.ndarray, iou: float = 0.5) -> float:
    """F1 of ``boxes`` against ``reference`` boxes: greedy one-to-one matching by decreasing IoU,
    a match when IoU >= ``iou``; 1.0 when both are empty."""
    if len(reference) == 0 and len(boxes) == 0:
        return 1.0
    pairs = sorted(((box_iou(r, b), i, j) for i, r in enumerate(reference) for j, b in enumerate(boxes)),
                   reverse=True)
    used_r, used_b, tp = set(), set(), 0
    for v, i, j in pairs:
        if v < iou:
            break
        if i not in used_r and j not in used_b:
            used_r.add(i)
            used_b.add(j)
            tp += 1
    return 2 * tp / (len(reference) + len(boxes))
