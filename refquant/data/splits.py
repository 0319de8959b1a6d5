"""The fixed split of the digits into train / test, and the calibration subsets.

Rule (``spec/data.md`` has the resulting sizes):

* **train / test** — stratified by class. For each digit ``c`` (in order 0..9) the indices
  of its images are permuted by one ``numpy.random.Generator(PCG64(SPLIT_SEED))`` and the
  first ``round(n_c / 3) = (n_c + 1) // 3`` go to test, the rest to train. Both index lists
  are returned sorted, so each split keeps the order of the file. Every class is split
  1 : 2, so test accuracy is not tilted by class frequency.
* **calibration** — an ordering of training images; the subset of size ``n`` is its first
  ``n`` entries, so the 16 lie inside the 32 inside the 128. The order is built in rounds:
  in each round every class gives its next image (its training images permuted once by
  ``Generator(PCG64(CALIBRATION_SEED))``), classes taking turns in an order drawn afresh
  each round. Any prefix is therefore class-balanced as far as possible (class counts differ
  by at most one) and, since the turn order is random, the extra images of an incomplete
  round do not always go to the low digits. Calibration images are training images, never
  test images.

NumPy promises a fixed bit stream for ``PCG64`` but not for every ``Generator`` method; the
tests pin a SHA-256 of the resulting index lists so that a change would be noticed.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 0
CALIBRATION_SEED = 1


def _generator(seed: int) -> np.random.Generator:
    # PCG64 named explicitly: default_rng may change its bit generator one day.
    return np.random.Generator(np.random.PCG64(seed))


def stratified_split(
    labels: np.ndarray, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_index, test_index)``: sorted int64 row numbers, 1/3 of each class to test."""
    rng = _generator(seed)
    train, test = [], []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_test = (len(members) + 1) // 3
        test.append(members[:n_test])
        train.append(members[n_test:])
    train_index = np.sort(np.concatenate(train)).astype(np.int64)
    test_index = np.sort(np.concatenate(test)).astype(np.int64)
    return train_index, test_index


def calibration_order(
    labels: np.ndarray, train_index: np.ndarray, count: int, seed: int = CALIBRATION_SEED
) -> np.ndarray:
    """Return ``count`` training row numbers (int64) whose every prefix is class-balanced."""
    rng = _generator(seed)
    classes = np.unique(labels[train_index])
    queues = [rng.permutation(train_index[labels[train_index] == c]) for c in classes]
    rounds = -(-count // len(classes))
    if min(len(q) for q in queues) < rounds:
        raise ValueError(f"calibration of {count} images needs {rounds} training images per class")
    order = []
    for r in range(rounds):
        for c in rng.permutation(len(classes)):
            order.append(queues[c][r])
    return np.asarray(order[:count], dtype=np.int64)
