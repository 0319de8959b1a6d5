"""The digits data: file integrity, the fixed split, normalisation and the shifted test sets."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refquant.data as data
from refquant.data import (
    CALIBRATION_SIZES,
    DIGITS_PATH,
    DIGITS_SHA256,
    PIXEL_MEAN,
    PIXEL_STD,
    SHIFTED_SETS,
    DigitsData,
    apply_shift,
    flatten,
    load_digits,
    normalize,
    pixel_statistics,
)
from refquant.data import shifts

REPO = Path(data.__file__).resolve().parents[2]
SPEC = REPO / "spec" / "data.md"
PROVENANCE = REPO / "models" / "data" / "PROVENANCE.md"
UCI_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]

# SHA-256 of the C-order bytes of each array. A change means the split or a shifted set is no
# longer the one the shipped models and recorded results were made with (e.g. NumPy changed
# a Generator method's stream).
PINNED = {
    "train.index": "6afbc210ce97a1d1ce6f5bdf64129660eca841ae0b82cc1f0b22d3b3f58afe2e",
    "test.index": "4c965e3748c33cae58b1f10617c6daf82a6d86808a80ec73766476b9529c1b9c",
    "calibration-128.index": "c32f7d28989910df7a971cb398d303cd8a9381ae03ced789c3758b14df58c3a5",
    "test": "eaf9589bbe7382c3e4c7e46a90af5f161ad14f41871c9db63c797b41b31c17c7",
    "contrast-0.5": "cfa7e7da91fbb3b1c7b3fa54fbb64f8ac61c4ae010f0897ba90430466a073a13",
    "contrast-2": "08af2332f55f2b1cc5cfdee821d6a771abec28a98e7cc35f97256a444c254885",
    "brightness+4": "9184fd5cdcbbd868563d66df502de368ea6df165b9dc933987b3f51a08e9fe9a",
    "noise": "11af4b0d3dfbc97aac4a1249f9f65e7e6421ce13cd89683e7d3d22ad6d9c9129",
    "occlusion": "82369e8a0fad24cee1603c9fb41005641f8966d171a04eb11edb6681dbb7debf",
    "inverted": "4da5300bab73678c3328a9b0201c7379d1f566cb1566336f4a1b8d6f288dd26a",
}


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return load_digits()


def pixel_arrays(max_images: int = 4):
    """Hypothesis: pixel images [N, 8, 8] with integer values 0..16 (as uint8)."""
    shape = st.tuples(st.integers(1, max_images), st.just(8), st.just(8))
    return hnp.arrays(np.uint8, shape, elements=st.integers(0, 16))


# ---------------------------------------------------------------- the file


def test_data_dir_is_models_data_under_the_repository_root():
    assert DIGITS_PATH == REPO / "models" / "data" / "digits.npz"
    assert (REPO / "refquant").is_dir() and DIGITS_PATH.is_file()


def test_shipped_file_has_the_recorded_checksum():
    assert hashlib.sha256(DIGITS_PATH.read_bytes()).hexdigest() == DIGITS_SHA256
    assert DIGITS_SHA256 in PROVENANCE.read_text()
    assert DIGITS_SHA256 in SPEC.read_text()


def test_npz_holds_two_uint8_arrays_and_no_pickles():
    with np.load(DIGITS_PATH, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["images", "labels"]
        images, labels = npz["images"], npz["labels"]
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert labels.dtype == np.uint8 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == UCI_CLASS_COUNTS


def test_make_digits_writer_reproduces_the_shipped_bytes(tmp_path):
    script = REPO / "models" / "data" / "make_digits.py"
    spec = importlib.util.spec_from_file_location("make_digits", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with np.load(DIGITS_PATH, allow_pickle=False) as npz:
        arrays = {"images": npz["images"], "labels": npz["labels"]}
    out = tmp_path / "digits.npz"
    module.write_reproducible_npz(out, arrays)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == DIGITS_SHA256


def test_tampered_file_is_rejected_naming_the_file(tmp_path):
    copy = tmp_path / "digits.npz"
    shutil.copyfile(DIGITS_PATH, copy)
    assert load_digits(copy).test.y.shape == (599,)  # an intact copy elsewhere loads
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one pixel
    copy.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256") as info:
        load_digits(copy)
    assert str(copy) in str(info.value)


def test_missing_file_is_reported_with_its_path(tmp_path):
    missing = tmp_path / "nope" / "digits.npz"
    with pytest.raises(FileNotFoundError) as info:
        load_digits(missing)
    assert str(missing) in str(info.value)


# ---------------------------------------------------------------- splits


def test_splits_have_documented_shapes_and_dtypes(digits):
    for split in (digits.train, digits.test, digits.calibration(32), digits.shifted("noise")):
        n = len(split)
        assert split.x.dtype == np.float32 and split.x.shape == (n, 1, 8, 8)
        assert split.y.dtype == np.int64 and split.y.shape == (n,)
        assert split.pixels.dtype == np.float64 and split.pixels.shape == (n, 8, 8)
        assert split.index.dtype == np.int64 and split.index.shape == (n,)
        assert split.x_flat.shape == (n, 64)
        for array in (split.x, split.y, split.pixels, split.index):
            assert not array.flags.writeable


def test_train_and_test_partition_the_file_one_third_of_each_class_to_test(digits):
    assert (len(digits.train), len(digits.test)) == (1198, 599)
    assert np.intersect1d(digits.train.index, digits.test.index).size == 0
    assert np.array_equal(np.union1d(digits.train.index, digits.test.index), np.arange(1797))
    assert np.all(np.diff(digits.test.index) > 0) and np.all(np.diff(digits.train.index) > 0)
    test_counts = np.bincount(digits.test.y, minlength=10)
    assert test_counts.tolist() == [(n + 1) // 3 for n in UCI_CLASS_COUNTS]
    assert (np.bincount(digits.train.y) + test_counts).tolist() == UCI_CLASS_COUNTS


def test_labels_and_pixels_follow_the_index(digits):
    for split in (digits.train, digits.test, digits.calibration(128)):
        assert np.array_equal(split.y, digits.labels[split.index])
        assert np.array_equal(split.pixels, digits.images[split.index])


def test_calibration_subsets_are_nested_balanced_and_inside_train(digits):
    subsets = [digits.calibration(n) for n in CALIBRATION_SIZES]
    assert [len(s) for s in subsets] == [16, 32, 128]
    for small, large in zip(subsets, subsets[1:]):
        assert np.array_equal(small.index, large.index[: len(small)])
    for subset in subsets:
        assert len(np.unique(subset.index)) == len(subset)
        assert np.isin(subset.index, digits.train.index).all()
        assert not np.isin(subset.index, digits.test.index).any()
        counts = np.bincount(subset.y, minlength=10)
        assert counts.max() - counts.min() <= 1
        assert counts.sum() == len(subset)


def test_two_loads_are_identical(digits):
    again = load_digits()
    pairs = [(digits.train, again.train), (digits.test, again.test)]
    pairs += [(digits.calibration(n), again.calibration(n)) for n in CALIBRATION_SIZES]
    pairs += [(digits.shifted(s), again.shifted(s)) for s in SHIFTED_SETS]
    for a, b in pairs:
        assert a.name == b.name
        for field in ("x", "y", "pixels", "index"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.name, field)


def test_split_and_shifted_sets_match_the_pinned_digests(digits):
    assert sha(digits.train.index) == PINNED["train.index"]
    assert sha(digits.test.index) == PINNED["test.index"]
    assert sha(digits.calibration(128).index) == PINNED["calibration-128.index"]
    for split in digits.test_sets():
        assert sha(split.pixels) == PINNED[split.name], split.name


def test_test_sets_are_test_then_every_shift(digits):
    assert [s.name for s in digits.test_sets()] == ["test", *SHIFTED_SETS]
    for split in digits.test_sets():
        assert np.array_equal(split.index, digits.test.index)
        assert np.array_equal(split.y, digits.test.y)


# ---------------------------------------------------------------- normalisation


def test_normalisation_constants_are_the_exact_training_statistics(digits):
    train_pixels = digits.images[digits.train.index]
    assert pixel_statistics(train_pixels) == (PIXEL_MEAN, PIXEL_STD)
    # Independent oracle: NumPy's float64 mean and std of p / 16.
    p = train_pixels.astype(np.float64) / 16
    assert PIXEL_MEAN == pytest.approx(p.mean(), rel=1e-14)
    assert PIXEL_STD == pytest.approx(p.std(), rel=1e-14)


def test_normalised_train_set_has_mean_zero_and_std_one(digits):
    x = digits.train.x.astype(np.float64)
    assert abs(x.mean()) < 1e-6
    assert abs(x.std() - 1.0) < 1e-6


def test_normalisation_worked_example():
    x = normalize(np.array([[[0, 16, 8, 1, 0, 0, 0, 0]] * 8], dtype=np.uint8))
    assert x[0, 0, 0, :4].tolist() == [
        np.float32(-PIXEL_MEAN / PIXEL_STD),
        np.float32((1 - PIXEL_MEAN) / PIXEL_STD),
        np.float32((0.5 - PIXEL_MEAN) / PIXEL_STD),
        np.float32((1 / 16 - PIXEL_MEAN) / PIXEL_STD),
    ]
    assert x[0, 0, 0, 0] == np.float32(-0.81199145)
    assert x[0, 0, 0, 1] == np.float32(1.8463776)


@given(pixel_arrays())
def test_normalize_is_the_affine_map_rounded_once_to_float32(pixels):
    x = normalize(pixels)
    assert x.dtype == np.float32 and x.shape == (len(pixels), 1, 8, 8)
    exact = (pixels.astype(np.float64) / 16 - PIXEL_MEAN) / PIXEL_STD
    # Rounded once from float64: within half an ulp of float32 of the float64 value.
    assert np.all(np.abs(x[:, 0].astype(np.float64) - exact) <= np.spacing(np.abs(x[:, 0])) / 2)
    # Undoing the map recovers the pixel count to well within one count.
    back = (x[:, 0].astype(np.float64) * PIXEL_STD + PIXEL_MEAN) * 16
    assert np.array_equal(np.rint(back), pixels)


@given(pixel_arrays())
def test_flatten_is_row_major_per_image(pixels):
    x = normalize(pixels)
    flat = flatten(x)
    assert flat.shape == (len(pixels), 64)
    assert np.array_equal(flat[:, 8 * 3 + 5], x[:, 0, 3, 5])


# ---------------------------------------------------------------- shifts, against their formulas


def oracle(name: str, image: np.ndarray, z: np.ndarray | None, corner) -> np.ndarray:
    """The rule of each shift written pixel by pixel, as in the spec table."""
    out = np.empty((8, 8))
    m = sum(float(v) for v in image.ravel()) / 64
    for r in range(8):
        for c in range(8):
            p = float(image[r, c])
            if name == "contrast-0.5":
                v = m + 0.5 * (p - m)
            elif name == "contrast-2":
                v = m + 2.0 * (p - m)
            elif name == "brightness+4":
                v = p + 4.0
            elif name == "noise":
                v = p + 2.0 * z[r, c]
            elif name == "occlusion":
                inside = corner[0] <= r < corner[0] + 3 and corner[1] <= c < corner[1] + 3
                v = 0.0 if inside else p
            elif name == "inverted":
                v = 16.0 - p
            out[r, c] = min(max(v, 0.0), 16.0)
    return out


@pytest.mark.parametrize("name", SHIFTED_SETS)
def test_each_shift_follows_its_formula_on_test_images(digits, name):
    shifted = digits.shifted(name)
    test_pixels = digits.images[digits.test.index]
    z = np.random.Generator(np.random.PCG64(shifts.NOISE_SEED)).standard_normal(test_pixels.shape)
    corners = shifts.occlusion_corners(len(test_pixels), 8, 8, 3, shifts.OCCLUSION_SEED)
    for i in (0, 1, 17, 300, 598):
        expected = oracle(name, test_pixels[i], z[i], corners[i])
        assert np.array_equal(shifted.pixels[i], expected), (name, i)
    assert np.array_equal(shifted.x, normalize(shifted.pixels))
    assert shifted.pixels.min() >= 0 and shifted.pixels.max() <= 16


def test_occlusion_zeroes_exactly_one_three_by_three_patch(digits):
    test_pixels = digits.images[digits.test.index].astype(np.float64)
    occluded = digits.shifted("occlusion").pixels
    corners = shifts.occlusion_corners(len(test_pixels), 8, 8, 3, shifts.OCCLUSION_SEED)
    assert corners.min() == 0 and corners.max() == 5
    changed_outside = 0
    for image, before, (r, c) in zip(occluded, test_pixels, corners):
        assert np.all(image[r : r + 3, c : c + 3] == 0)
        mask = np.ones((8, 8), bool)
        mask[r : r + 3, c : c + 3] = False
        changed_outside += int(np.any(image[mask] != before[mask]))
    assert changed_outside == 0
    assert np.mean(np.any(occluded != test_pixels, axis=(1, 2))) > 0.5  # usually hits ink


@given(pixel_arrays())
def test_shift_properties(pixels):
    p = pixels.astype(np.float64)
    image_mean = p.mean(axis=(1, 2))
    low = apply_shift("contrast-0.5", pixels)
    assert np.allclose(low.mean(axis=(1, 2)), image_mean, rtol=0, atol=1e-12)  # no clip needed
    assert np.allclose(low.std(axis=(1, 2)), 0.5 * p.std(axis=(1, 2)), rtol=0, atol=1e-12)
    assert np.array_equal(apply_shift("brightness+4", pixels), np.minimum(p + 4, 16))
    inverted = apply_shift("inverted", pixels)
    assert np.array_equal(16 - inverted, p)
    for name in SHIFTED_SETS:
        out = apply_shift(name, pixels)
        assert out.dtype == np.float64 and out.shape == pixels.shape
        assert out.min() >= 0 and out.max() <= 16


@given(pixel_arrays(), st.integers(0, 2**32 - 1))
def test_noise_is_clipped_gaussian_with_the_given_seed(pixels, seed):
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(pixels.shape)
    out = shifts.gaussian_noise(pixels, 2.0, seed)
    assert np.array_equal(out, np.clip(pixels + 2.0 * z, 0, 16))
    assert np.array_equal(out, shifts.gaussian_noise(pixels, 2.0, seed))


def test_noise_residual_is_gaussian_with_the_documented_sigma(digits):
    # Where no clip can act (4 <= p <= 12 and |2z| < 4) the added noise is exactly 2 z.
    from scipy import stats

    before = digits.images[digits.test.index].astype(np.float64)
    residual = (digits.shifted("noise").pixels - before)[(before >= 4) & (before <= 12)]
    residual = residual[np.abs(residual) < 4]  # drop clipped pixels: |2z| >= 4 may clip
    truncated = stats.truncnorm(-2, 2, loc=0, scale=2.0)
    assert stats.kstest(residual, truncated.cdf).pvalue > 1e-3


# ---------------------------------------------------------------- errors


def test_bad_names_and_sizes_list_the_valid_ones(digits):
    with pytest.raises(ValueError, match="16, 32, 128"):
        digits.calibration(17)
    with pytest.raises(ValueError, match="contrast-0.5.*inverted"):
        digits.shifted("blur")
    with pytest.raises(ValueError, match="valid names"):
        apply_shift("blur", np.zeros((1, 8, 8)))


def test_bad_arrays_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\[N, 8, 8\]"):
        normalize(np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        normalize(np.full((1, 8, 8), 17.0))
    with pytest.raises(TypeError, match="integer or float"):
        normalize(np.full((1, 8, 8), "1"))
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        apply_shift("noise", np.full((1, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        flatten(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        DigitsData(np.zeros((3, 8, 8), np.float32), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        DigitsData(np.zeros((3, 8, 8), np.uint8), np.full(3, 10, np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        shifts.occlusion(np.zeros((1, 2, 2)), 3, 0)


# ---------------------------------------------------------------- the spec tells the truth


def test_spec_prints_the_numbers_the_code_produces(digits):
    text = SPEC.read_text()
    assert repr(PIXEL_MEAN) in text and repr(PIXEL_STD) in text
    for split in digits.test_sets():
        x = split.x.astype(np.float64)
        row = (
            f"| `{split.name}` | {split.pixels.mean():.3f} | {split.pixels.std():.3f} "
            f"| {x.mean():+.3f} | {x.std():.3f} |"
        )
        assert row in text, row
    for n in CALIBRATION_SIZES:
        counts = " ".join(str(c) for c in np.bincount(digits.calibration(n).y, minlength=10))
        assert f"| {n} | {counts} |" in text
