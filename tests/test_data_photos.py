"""ImageNet class names, the real photos, their views and their corruptions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.data.imagenet import IMAGENET_CLASSES_PATH, imagenet_class_names

photos = pytest.importorskip("refquant.data.photos")
pytest.importorskip("PIL")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")


def test_class_names_file():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert IMAGENET_CLASSES_PATH.read_text(encoding="utf-8").count("\n") == 1000
    known = {0: "tench", 1: "goldfish", 2: "great white shark", 207: "golden retriever", 281: "tabby",
             282: "tiger cat", 285: "Egyptian cat", 409: "analog clock", 504: "coffee mug", 657: "missile",
             665: "moped", 967: "espresso", 999: "toilet tissue"}
    assert {k: names[k] for k in known} == known
    assert len(set(names)) == 998 and names[134] == names[517] == "crane" and names[638] == names[639]


def test_every_photo_exists_in_its_package_and_every_label_is_a_class():
    classes = set(imagenet_class_names())
    for name, (dist, file, labels) in photos.PHOTOS.items():
        p = photos.load_photo(name)
        assert p.rgb.dtype == np.uint8 and p.rgb.ndim == 3 and p.rgb.shape[2] == 3 and min(p.rgb.shape[:2]) >= 200
        assert set(labels) <= classes, (name, set(labels) - classes)
    assert len(photos.PHOTOS) * len(photos.VIEW_NAMES) >= 100
    with pytest.raises(ValueError, match="unknown photo 'nope'"):
        photos.load_photo("nope")


def test_views_shape_dtype_names_and_determinism():
    v = photos.photo_views(["chelsea", "china"], ["center", "tr", "flip", "squash"])
    assert v.images.shape == (8, 224, 224, 3) and v.images.dtype == np.uint8
    assert v.names[:4] == ("chelsea/center", "chelsea/tr", "chelsea/flip", "chelsea/squash")
    np.testing.assert_array_equal(v.images[2], v.images[0][:, ::-1])  # resize commutes with mirroring
    again = photos.photo_views(["chelsea", "china"], ["center", "tr", "flip", "squash"])
    assert np.array_equal(v.images, again.images) and v.names == again.names
    with pytest.raises(ValueError, match="unknown view"):
        photos.photo_views(["chelsea"], ["middle"])


def test_resize_rule():
    const = np.full((300, 451, 3), 77, np.uint8)
    assert np.all(photos.resize_bilinear(const) == 77)
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(photos.resize_bilinear(img), img)        # same size: identity
    # 2x downscale of a 1-D ramp: triangle of half-width 2 over pixels centred at 2i+1
    ramp = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 10, (8, 1, 3))
    small = photos.resize_bilinear(ramp, 4, 4)
    np.testing.assert_array_equal(small[0, :, 0], [7, 25, 45, 63])          # edges: weights renormalised
    with pytest.raises(ValueError, match="uint8"):
        photos.resize_bilinear(ramp.astype(np.float32))


def _resize_by_the_rule(a, height, width):
    """The resize rule one output at a time in plain Python floats: each pass adds the products
    ``t_j * p_j`` of the dense weight rows (zeros included) one by one in increasing ``j``."""
    wy, wx = photos._filter_matrix(a.shape[0], height), photos._filter_matrix(a.shape[1], width)
    rows = [[[0.0] * a.shape[2] for _ in range(a.shape[1])] for _ in range(height)]
    for i in range(height):
        for v in range(a.shape[1]):
            for c in range(a.shape[2]):
                s = 0.0
                for j in range(a.shape[0]):
                    s += float(wy[i, j]) * float(a[j, v, c])
                rows[i][v][c] = s
    out = np.empty((height, width, a.shape[2]), np.uint8)
    for i in range(height):
        for q in range(width):
            for c in range(a.shape[2]):
                s = 0.0
                for v in range(a.shape[1]):
                    s += float(wx[q, v]) * rows[i][v][c]
                out[i, q, c] = min(255, max(0, round(s)))  # Python's round: half to even
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 23), st.integers(1, 23), st.integers(1, 23), st.integers(1, 23), st.integers(1, 3),
       st.integers(0, 2**32 - 1))
def test_resize_equals_the_rule_term_by_term(h_in, w_in, height, width, channels, seed):
    """The banded resize gives the bits of the rule's dense sum in increasing j (a zero weight
    adds +0.0), up- and downsampling, any aspect."""
    a = np.random.default_rng(seed).integers(0, 256, (h_in, w_in, channels), dtype=np.uint8)
    got = photos.resize_bilinear(a, height, width)
    assert got.flags.c_contiguous and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _resize_by_the_rule(a, height, width))


@pytest.fixture(scope="module")
def two_views():
    return photos.photo_views(["coffee", "astronaut"], ["center"]).images


@pytest.mark.parametrize("name", list(photos.CORRUPTIONS))
def test_corruptions_deterministic_shape_and_graded(two_views, name):
    outs = [photos.corrupt(two_views, name, s) for s in (1, 5)]
    for o in outs:
        assert o.shape == two_views.shape and o.dtype == np.uint8
    assert np.array_equal(outs[1], photos.corrupt(two_views, name, 5))
    err = [np.abs(o.astype(int) - two_views).mean() for o in outs]
    assert 0 < err[0] < err[1], err                                         # severity 5 changes more


def test_corruption_details(two_views):
    a = photos.corrupt(two_views, "gaussian_noise", 3, seed=0)
    assert not np.array_equal(a, photos.corrupt(two_views, "gaussian_noise", 3, seed=1))
    assert not np.array_equal(a[0], photos.corrupt(two_views[1:2], "gaussian_noise", 3)[0])  # per-image stream
    c = photos.corrupt(two_views, "contrast", 5).astype(float)                 # c = 0.05 about the mean
    np.testing.assert_allclose(c.std(axis=(1, 2)), 0.05 * two_views.std(axis=(1, 2)), atol=0.6)
    np.testing.assert_allclose(c.mean(axis=(1, 2)), two_views.mean(axis=(1, 2)), atol=0.6)
    black = np.zeros((1, 4, 4, 3), np.uint8)
    assert np.all(photos.corrupt(black, "brightness", 2) == 51)                # grey c = 0.2
    pix = photos.corrupt(two_views, "pixelate", 5)                            # 56x56 blocks of 4x4
    assert np.all(pix[:, ::4, ::4] == pix[:, 3::4, 3::4])
    with pytest.raises(ValueError, match="severity must be 1..5"):
        photos.corrupt(two_views, "contrast", 6)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        photos.corrupt(two_views, "fog", 1)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        photos.corrupt(two_views.astype(np.float32), "contrast", 1)
