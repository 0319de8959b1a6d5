"""Write models/data/digits.npz from scikit-learn's bundled copy of the UCI digits.

scikit-learn ships the test part of the UCI "Optical Recognition of Handwritten Digits"
data set (1797 images of 8x8 pixels, each pixel a count 0..16 of "on" pixels in a 4x4
block of the original 32x32 bitmap). This script converts it, once, into a file that
refquant loads without scikit-learn and without the network:

    images  uint8 [1797, 8, 8]  pixel counts 0..16, in scikit-learn's (= the UCI file's) order
    labels  uint8 [1797]        digit 0..9

The npz is written byte for byte reproducibly: entries are stored uncompressed
(``ZIP_STORED``, so no zlib version enters the bytes) with a fixed timestamp
(1980-01-01 00:00:00, the earliest a zip can record) instead of the time of writing, which
``numpy.savez`` would put there. Running the script again therefore reproduces the SHA-256
recorded in ``models/data/PROVENANCE.md`` and ``refquant/data/digits.py``.

scikit-learn is not a dependency of refquant; run this in a throwaway environment:

    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install scikit-learn numpy
    /tmp/skvenv/bin/python models/data/make_digits.py
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

import numpy as np

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [1797, 8, 8], labels uint8 [1797]) from scikit-learn's copy.

    scikit-learn hands out float64 images and int64 labels; both are integers in range, so
    the narrowing casts are exact — checked, not assumed.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise ValueError(f"unexpected shapes from scikit-learn: {images.shape}, {labels.shape}")
    images_u8 = images.astype(np.uint8)
    labels_u8 = labels.astype(np.uint8)
    if not np.array_equal(images_u8, images) or images.min() < 0 or images.max() > 16:
        raise ValueError("scikit-learn digits images are not integers in 0..16")
    if not np.array_equal(labels_u8, labels) or labels.min() < 0 or labels.max() > 9:
        raise ValueError("scikit-learn digits labels are not integers in 0..9")
    return images_u8, labels_u8


def write_reproducible_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz that ``np.load(path, allow_pickle=False)`` reads, with fixed bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "digits.npz",
        help="where to write the npz (default: next to this script)",
    )
    args = parser.parse_args()

    import sklearn

    images, labels = read_sklearn_digits()
    write_reproducible_npz(args.output, {"images": images, "labels": labels})
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    print(f"class counts {np.bincount(labels, minlength=10).tolist()}")
    print(f"sha256 {digest}")


if __name__ == "__main__":
    main()
