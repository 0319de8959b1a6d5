"""The handwritten digits: loading, the fixed split, and normalisation.

The data are the 1797 8x8 images of the UCI "Optical Recognition of Handwritten Digits"
test set as bundled with scikit-learn, shipped as ``models/data/digits.npz`` (uint8 images
0..16 and uint8 labels; provenance, licence and checksum in ``models/data/PROVENANCE.md``).
Nothing is downloaded and scikit-learn is not needed.

Where the file is found: ``models/data/`` under the repository root, which is taken to be
the parent of the ``refquant/`` package directory. That holds for a source checkout and for
an editable install (``pip install -e .``). A regular (non-editable) install does not ship
``models/`` yet; pass ``load_digits(path=...)`` to use a copy elsewhere.

Integrity: the file's SHA-256 must equal :data:`DIGITS_SHA256`; the bytes that were hashed
are the bytes that are parsed, with ``allow_pickle=False``.

Normalisation (one rule for every split, shifted sets included)::

    x = float32( (p / 16 − PIXEL_MEAN) / PIXEL_STD )       computed in float64, rounded once

``PIXEL_MEAN`` and ``PIXEL_STD`` are the mean and the population standard deviation
(ddof = 0) of ``p / 16`` over all pixels of the training split, computed exactly from the
integer sums ``S1 = Σp``, ``S2 = Σp²`` over ``n`` pixels::

    PIXEL_MEAN = fl64( S1 / (16 n) )
    PIXEL_STD  = sqrt( fl64( (n S2 − S1²) / (256 n²) ) )    (IEEE sqrt, correctly rounded)

so they do not depend on summation order. They are stored below as literals (models need
them without loading the data) and :func:`pixel_statistics` recomputes them; the tests check
that the two agree exactly. Images come as NCHW ``[N, 1, 8, 8]`` float32; :func:`flatten`
gives ``[N, 64]`` for MLPs. Labels are int64.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from refquant.data.shifts import SHIFTED_SETS, apply_shift
from refquant.data.splits import calibration_order, stratified_split

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "models" / "data"
DIGITS_PATH = DATA_DIR / "digits.npz"
DIGITS_SHA256 = "0c2aff3ad3efa4c983d74435f40847c3f2dea3c33f362c61616f7b067d84c8fe"

N_IMAGES = 1797
IMAGE_SHAPE = (8, 8)
N_CLASSES = 10
PIXEL_MAX = 16

CALIBRATION_SIZES: tuple[int, ...] = (16, 32, 128)

#: the names of :meth:`DigitsData.test_sets`, in order: the clean ``test`` split, then every
#: shifted set (:data:`SHIFTED_SETS`) — known without building (or loading) any data
TEST_SETS: tuple[str, ...] = ("test", *SHIFTED_SETS)

PIXEL_MEAN = 0.3054472297579299
PIXEL_STD = 0.3761704878468756


def pixel_statistics(pixels: np.ndarray) -> tuple[float, float]:
    """Return ``(mean, std)`` of ``pixels / 16`` (ddof = 0) from exact integer sums.

    ``pixels`` must hold integers (the stored uint8 images). See the module docstring.
    """
    p = np.asarray(pixels)
    if not np.issubdtype(p.dtype, np.integer) or p.size == 0:
        raise ValueError(
            f"pixel_statistics needs a non-empty integer array, got {p.dtype} of size {p.size}"
        )
    n = int(p.size)
    s1 = int(p.sum(dtype=np.int64))
    s2 = int((p.astype(np.int64) ** 2).sum())
    mean = float(Fraction(s1, PIXEL_MAX * n))
    variance = float(Fraction(n * s2 - s1 * s1, PIXEL_MAX * PIXEL_MAX * n * n))
    return mean, math.sqrt(variance)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Pixels [N, 8, 8] in 0..16 → float32 NCHW [N, 1, 8, 8]: ``(p/16 − PIXEL_MEAN)/PIXEL_STD``.

    The arithmetic is float64 and rounds to float32 once at the end (``p / 16`` is exact).
    """
    p = np.asarray(pixels)
    if p.ndim != 3 or p.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"normalize: pixels must be [N, 8, 8], got shape {p.shape}")
    if p.dtype.kind not in "iuf":
        raise TypeError(f"normalize: pixels must be integer or float, got {p.dtype}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)) or p.min(initial=0.0) < 0 or p.max(initial=0.0) > PIXEL_MAX:
        raise ValueError("normalize: pixels must be finite values in [0, 16]")
    x = (p / PIXEL_MAX - PIXEL_MEAN) / PIXEL_STD
    return x.astype(np.float32)[:, None, :, :]


def flatten(x: np.ndarray) -> np.ndarray:
    """NCHW images ``[N, 1, 8, 8]`` → ``[N, 64]`` (a view when ``x`` is contiguous)."""
    array = np.asarray(x)
    if array.ndim != 4 or array.shape[1:] != (1, *IMAGE_SHAPE):
        raise ValueError(f"flatten: expected images of shape [N, 1, 8, 8], got {array.shape}")
    return array.reshape(array.shape[0], -1)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    """One set of labelled images.

    ``x`` float32 [N, 1, 8, 8] normalised; ``y`` int64 [N] digits; ``pixels`` float64
    [N, 8, 8] the pixel values (0..16) that were normalised; ``index`` int64 [N] the row of
    each image in ``digits.npz``. Arrays are read-only.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    pixels: np.ndarray = field(repr=False)
    index: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x_flat(self) -> np.ndarray:
        """``flatten(self.x)``: [N, 64] for MLPs."""
        return flatten(self.x)


class DigitsData:
    """The digits with their fixed split (see :mod:`refquant.data.splits`).

    ``train`` and ``test`` are :class:`DigitsSplit`; ``calibration(n)`` for ``n`` in
    :data:`CALIBRATION_SIZES` gives nested, class-balanced subsets of ``train``;
    ``shifted(name)`` for ``name`` in :data:`SHIFTED_SETS` gives the test images under a
    shift (:mod:`refquant.data.shifts`).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, source: str = "<arrays>"):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"{source}: images must be uint8 [N, 8, 8], got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{source}: labels must be uint8 [{len(images)}], got {labels.dtype} {labels.shape}"
            )
        if images.max(initial=0) > PIXEL_MAX:
            raise ValueError(f"{source}: pixel values must be 0..16, found {images.max()}")
        if labels.max(initial=0) >= N_CLASSES:
            raise ValueError(f"{source}: labels must be 0..9, found {labels.max()}")
        self.source = source
        self.images = _read_only(images.copy())
        self.labels = _read_only(labels.copy())
        train_index, test_index = stratified_split(self.labels)
        self._calibration_index = calibration_order(
            self.labels, train_index, max(CALIBRATION_SIZES)
        )
        self.train = self._split("train", train_index, self.images[train_index])
        self.test = self._split("test", test_index, self.images[test_index])
        self._shifted: dict[str, DigitsSplit] = {}

    def _split(self, name: str, index: np.ndarray, pixels: np.ndarray) -> DigitsSplit:
        pixels = pixels.astype(np.float64)
        return DigitsSplit(
            name=name,
            x=_read_only(normalize(pixels)),
            y=_read_only(self.labels[index].astype(np.int64)),
            pixels=_read_only(pixels),
            index=_read_only(index.astype(np.int64)),
        )

    def calibration(self, n: int) -> DigitsSplit:
        """The first ``n`` images of the calibration order (``n`` in 16, 32, 128)."""
        if n not in CALIBRATION_SIZES:
            raise ValueError(
                f"calibration size {n!r} is not offered; valid sizes: {CALIBRATION_SIZES}"
            )
        index = self._calibration_index[:n]
        return self._split(f"calibration-{n}", index, self.images[index])

    def shifted(self, name: str) -> DigitsSplit:
        """The test images under the shift ``name`` (one of :data:`SHIFTED_SETS`)."""
        if name not in SHIFTED_SETS:
            valid = ", ".join(SHIFTED_SETS)
            raise ValueError(f"unknown shifted set {name!r}; valid names: {valid}")
        if name not in self._shifted:
            pixels = apply_shift(name, self.images[self.test.index])
            self._shifted[name] = self._split(name, self.test.index, pixels)
        return self._shifted[name]

    def test_sets(self) -> tuple[DigitsSplit, ...]:
        """The sets :data:`TEST_SETS` names: ``test`` followed by every shifted set, in
        :data:`SHIFTED_SETS` order."""
        return tuple(self.test if name == "test" else self.shifted(name) for name in TEST_SETS)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_digits(path: str | Path | None = None) -> DigitsData:
    """Load ``digits.npz`` (default :data:`DIGITS_PATH`), verify its SHA-256, return the data.

    Raises ``FileNotFoundError`` naming the path when the file is absent, and ``ValueError``
    naming it when its SHA-256 differs from :data:`DIGITS_SHA256` or its contents are not
    the expected ``images`` / ``labels`` arrays.
    """
    file = Path(path) if path is not None else DIGITS_PATH
    if not file.is_file():
        raise FileNotFoundError(
            f"digits data file not found: {file}. refquant looks for models/data/digits.npz "
            f"under the repository root ({REPO_ROOT}); this works from a source checkout or an "
            "editable install, not yet from a regular install."
        )
    data = file.read_bytes()
    digest = _sha256(data)
    if digest != DIGITS_SHA256:
        raise ValueError(
            f"{file}: SHA-256 {digest} does not match the recorded {DIGITS_SHA256}; the file is "
            "corrupt or was changed (regenerate it with models/data/make_digits.py)"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        if sorted(npz.files) != ["images", "labels"]:
            raise ValueError(f"{file}: expected arrays 'images' and 'labels', found {npz.files}")
        images, labels = npz["images"], npz["labels"]
    if images.shape != (N_IMAGES, *IMAGE_SHAPE):
        raise ValueError(f"{file}: expected {N_IMAGES} images of 8x8, got shape {images.shape}")
    return DigitsData(images, labels, source=str(file))
