"""Real photographs shipped inside installed packages, a deterministic set of 224×224 views of
them, and ImageNet-C-style corruptions of those views (the optional extra ``models``).

Nothing is downloaded: every photo is a file inside the wheel of scikit-image
(``skimage/data/``) or scikit-learn (``sklearn/datasets/images/``), found through
``importlib.metadata.distribution(...).locate_file`` without importing either package, and
decoded with Pillow to RGB uint8 (grey photos are replicated to three channels).

Views (``photo_views``): for each photo of height H and width W, with ``s = min(H, W)``,
the ten views in this order, each resized to 224×224 by :func:`resize_bilinear`:

====================  ==============================================================
``center``            the centred s×s square
``center-0.8``        the centred square of side round(0.8 s)
``center-0.6``        the centred square of side round(0.6 s)
``tl``/``tr``/``bl``/``br``  the square of side round(0.75 s) in that corner
``flip``              ``center`` mirrored left-right
``flip-0.8``          ``center-0.8`` mirrored left-right
``squash``            the whole H×W photo (aspect ratio not kept)
====================  ==============================================================

11 photos × 10 views = 110 views, named ``photo/view``.

Corruptions (``corrupt``) follow Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019), with the constants of their
ImageNet-C code at severities 1..5; pixels are x = value/255 in [0, 1], arithmetic float64,
and the result is ``clip(round(255 x'), 0, 255)`` as uint8 (rounding to nearest, half to even):

=================  ============================  =============================================
name               constant c per severity 1..5  rule
=================  ============================  =============================================
gaussian_noise     .08 .12 .18 .26 .38           x + c z, z ~ N(0,1) i.i.d., clip to [0, 1];
                                                 Generator(PCG64([seed, severity, image index]))
gaussian_blur      1 2 3 4 6                     Gaussian filter, sigma c on H and W, edge mode
                                                 "nearest", truncated at 4 sigma
brightness         .1 .2 .3 .4 .5                V + c in HSV, clip to [0, 1], H and S kept:
                                                 rgb * min(V + c, 1) / V (V = max channel;
                                                 a black pixel becomes grey c)
contrast           .4 .3 .2 .1 .05               (x - m) c + m, m = per-channel image mean
pixelate           .6 .5 .4 .3 .25               Pillow BOX resize to int(224 c) and back
jpeg_compression   25 18 15 10 7                 Pillow JPEG encode at quality c, decode
=================  ============================  =============================================

Every function is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["CORRUPTIONS", "EXTRA", "PHOTOS", "VIEW_NAMES", "VIEW_SIZE", "Photo", "Views", "corrupt",
           "corruption_set", "load_photo", "load_photos", "named_views", "photo_views", "resize_bilinear"]

#: the install command shown when a package is missing
EXTRA = "pip install 'refquant[models]'"
VIEW_SIZE = 224

#: name -> (distribution, file inside it, ImageNet classes a correct model may answer in its top 5
#:          (empty: no ImageNet class fits the photo))
PHOTOS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "astronaut": ("scikit-image", "skimage/data/astronaut.png", ()),
    "camera": ("scikit-image", "skimage/data/camera.png", ("tripod", "reflex camera", "Polaroid camera")),
    "chelsea": ("scikit-image", "skimage/data/chelsea.png", ("tabby", "tiger cat", "Egyptian cat", "Persian cat",
                                                             "Siamese cat", "lynx")),
    "coffee": ("scikit-image", "skimage/data/coffee.png", ("espresso", "cup", "coffee mug", "eggnog")),
    "coins": ("scikit-image", "skimage/data/coins.png", ()),
    "hubble_deep_field": ("scikit-image", "skimage/data/hubble_deep_field.jpg", ()),
    "motorcycle": ("scikit-image", "skimage/data/motorcycle_left.png", ("moped", "motor scooter", "crash helmet",
                                                                        "disk brake")),
    "rocket": ("scikit-image", "skimage/data/rocket.jpg", ("missile", "projectile", "space shuttle")),
    "brick": ("scikit-image", "skimage/data/brick.png", ()),
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg", ("palace", "monastery", "stupa", "bell cote",
                                                                     "church", "mosque")),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg", ()),
}

#: the ten views of each photo: (name, square side as a fraction of min(H, W) or None for the
#: whole photo, anchor, mirrored)
_VIEWS = (("center", 1.0, "c", False), ("center-0.8", 0.8, "c", False), ("center-0.6", 0.6, "c", False),
          ("tl", 0.75, "tl", False), ("tr", 0.75, "tr", False), ("bl", 0.75, "bl", False),
          ("br", 0.75, "br", False), ("flip", 1.0, "c", True), ("flip-0.8", 0.8, "c", True),
          ("squash", None, "c", False))
VIEW_NAMES = tuple(v[0] for v in _VIEWS)

CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}


@dataclass(frozen=True)
class Photo:
    name: str
    distribution: str
    file: str
    rgb: np.ndarray  # (H, W, 3) uint8
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Views:
    """``images``: (N, 224, 224, 3) uint8 RGB; ``names``: "photo/view"; ``labels``: the
    acceptable top-5 classes of each view's photo."""

    images: np.ndarray
    names: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.names)


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"real photos need Pillow: {EXTRA}") from exc
    return Image


def _locate(distribution: str, file: str):
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"the photo {file} comes with {distribution}, which is not installed: {EXTRA}") from None
    path = dist.locate_file(file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {distribution} {dist.version}")
    return path


def load_photo(name: str) -> Photo:
    """One photo of :data:`PHOTOS` as RGB uint8 (H, W, 3)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
    dist, file, labels = PHOTOS[name]
    return Photo(name, dist, file, _decode(_locate(dist, file)), labels)


@lru_cache(maxsize=64)
def _decode_cached(path: str) -> np.ndarray:
    Image = _pil()
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be decoded as an image ({exc})") from None
    rgb.setflags(write=False)
    return rgb


def _decode(path) -> np.ndarray:
    return _decode_cached(str(path))


def load_photos(names=None) -> list[Photo]:
    """The photos of :data:`PHOTOS` (or only ``names``), in that order."""
    return [load_photo(n) for n in (names if names is not None else PHOTOS)]


def _filter_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of the 1-D bilinear resampling used by :func:`resize_bilinear`."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale               # output centres in input coordinates
    x = np.arange(n_in) + 0.5                                # input pixel centres
    w = np.maximum(0.0, 1.0 - np.abs(x[None, :] - centers[:, None]) / support)
    sums = w.sum(axis=1, keepdims=True)
    if np.any(sums == 0):  # pragma: no cover - support >= 1 always reaches a pixel
        raise ValueError("resize: an output pixel has no input pixel")
    return w / sums


def _filter_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The band of :func:`_filter_matrix`: ``(index, weight)``, both (n_out, T), output ``i``'s
    input pixels from its first to its last nonzero weight in increasing order, padded at the
    end with weight 0 (index clamped to the last pixel). T is the widest band, about
    ``2·max(n_in/n_out, 1) + 1``: the resize does T products per output, not ``n_in``."""
    w = _filter_matrix(n_in, n_out)
    nonzero = w != 0
    first = nonzero.argmax(axis=1)
    last = n_in - 1 - nonzero[:, ::-1].argmax(axis=1)
    span = first[:, None] + np.arange(int((last - first).max()) + 1)[None, :]
    index = np.minimum(span, n_in - 1)
    weight = np.where(span <= last[:, None], np.take_along_axis(w, index, axis=1), 0.0)
    return index, weight


def _resample_rows(a: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[i] = Σ_t weight[i, t] · a[index[i, t]]`` over axis 0 of float64 ``a``, the terms
    added one after another in increasing ``t`` (each product rounded, then added): NumPy's
    ``multiply`` and ``add``, no FMA. A padding term adds ``+0.0`` to a sum ``>= 0``: no bit
    changes, so this is the sum over the nonzero weights in increasing pixel order."""
    taps = a[index]                                          # (n_out, T, ...)
    shape = (-1,) + (1,) * (a.ndim - 1)
    out = weight[:, 0].reshape(shape) * taps[:, 0]
    for t in range(1, weight.shape[1]):
        out += weight[:, t].reshape(shape) * taps[:, t]
    return out


def resize_bilinear(rgb: np.ndarray, height: int = VIEW_SIZE, width: int = VIEW_SIZE) -> np.ndarray:
    """Resize (H, W, C) uint8 to (height, width, C) uint8: separable triangle (bilinear) filter.

    Output pixel ``i`` has centre ``c = (i + 0.5) * H/height`` in input coordinates; its
    value is the normalised sum over input pixels ``j`` of
    ``max(0, 1 - |j + 0.5 - c| / max(H/height, 1)) * p[j]``.  Upsampling is therefore plain
    half-pixel-centre bilinear interpolation (edges replicate), and downsampling widens the
    triangle by the scale factor, an antialiasing filter (the rule of Pillow's BILINEAR).
    Rows first, then columns, in float64: each output the sum of its nonzero-weight terms
    ``fl(t_j · p_j)`` added one at a time in increasing ``j`` from the first term (the
    normalised weight ``t_j`` is ``fl(t_j' / Σ t')``, the sum NumPy's); the result is rounded
    to nearest (half to even) and clipped to 0..255.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.dtype != np.uint8:
        raise ValueError(f"resize: expected (H, W, C) uint8, got {a.shape} {a.dtype}")
    rows = _resample_rows(a.astype(np.float64), *_filter_taps(a.shape[0], height))
    out = _resample_rows(rows.transpose(1, 0, 2), *_filter_taps(a.shape[1], width)).transpose(1, 0, 2)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _view(rgb: np.ndarray, fraction, anchor: str, mirrored: bool, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if fraction is None:
        crop = rgb
    else:
        side = int(round(fraction * min(h, w)))
        top = {"c": (h - side) // 2, "t": 0, "b": h - side}[anchor[0] if anchor != "c" else "c"]
        left = {"c": (w - side) // 2, "l": 0, "r": w - side}[anchor[1] if anchor != "c" else "c"]
        crop = rgb[top:top + side, left:left + side]
    if mirrored:
        crop = crop[:, ::-1]
    return resize_bilinear(np.ascontiguousarray(crop), size, size)


def photo_views(photos=None, views=None, size: int = VIEW_SIZE) -> Views:
    """The views (all ten, or those named in ``views``) of the photos (all, or those named)."""
    chosen = [v for v in _VIEWS if views is None or v[0] in views]
    if views is not None and len(chosen) != len(set(views)):
        raise ValueError(f"unknown view in {views!r}; known: {', '.join(VIEW_NAMES)}")
    images, names, labels = [], [], []
    for p in load_photos(photos):
        for name, fraction, anchor, mirrored in chosen:
            images.append(_view(p.rgb, fraction, anchor, mirrored, size))
            names.append(f"{p.name}/{name}")
            labels.append(p.labels)
    return Views(np.stack(images), tuple(names), tuple(labels))


def named_views(names, size: int = VIEW_SIZE) -> Views:
    """The views named ``"photo/view"`` (e.g. ``"chelsea/center"``), in the order given."""
    names = list(names)
    if not names:
        raise ValueError("named_views: no view named (expected PHOTO/VIEW, e.g. chelsea/center)")
    parts = []
    for name in names:
        photo, _, view = str(name).partition("/")
        if photo not in PHOTOS or view not in VIEW_NAMES:
            raise ValueError(f"view {name!r}: expected PHOTO/VIEW with PHOTO one of {', '.join(PHOTOS)} "
                             f"and VIEW one of {', '.join(VIEW_NAMES)}")
        parts.append(photo_views([photo], [view], size))
    return Views(np.concatenate([v.images for v in parts]), tuple(n for v in parts for n in v.names),
                 tuple(lab for v in parts for lab in v.labels))


# --------------------------------------------------------------------------------- corruptions

def _check(images: np.ndarray, name: str, severity: int):
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"corruption {name!r}: severity must be 1..5, got {severity!r}")
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"corruption {name!r}: expected (N, H, W, 3) uint8 images, got {a.shape} {a.dtype}")
    return a, CORRUPTIONS[name][severity - 1]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (N, H, W, 3) uint8 with corruption ``name`` at ``severity`` 1..5 (see the
    module docstring); ``seed`` only matters for gaussian_noise."""
    a, c = _check(images, name, severity)
    out = np.empty_like(a)
    for i, img in enumerate(a):
        x = img.astype(np.float64) / 255.0
        if name == "gaussian_noise":
            rng = np.random.Generator(np.random.PCG64([seed, severity, i]))
            out[i] = _to_uint8(np.clip(x + c * rng.standard_normal(x.shape), 0.0, 1.0))
        elif name == "gaussian_blur":
            out[i] = _to_uint8(gaussian_filter(x, sigma=(c, c, 0.0), mode="nearest", truncate=4.0))
        elif name == "brightness":
            v = x.max(axis=-1, keepdims=True)
            v_new = np.minimum(v + c, 1.0)
            ratio = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
            out[i] = _to_uint8(np.where(v > 0, x * ratio, v_new))
        elif name == "contrast":
            m = x.mean(axis=(0, 1), keepdims=True)
            out[i] = _to_uint8(np.clip((x - m) * c + m, 0.0, 1.0))
        elif name == "pixelate":
            Image = _pil()
            h, w = img.shape[:2]
            small = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
            out[i] = np.asarray(small.resize((w, h), Image.BOX), dtype=np.uint8)
        else:  # jpeg_compression
            Image = _pil()
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=int(c))
            buf.seek(0)
            with Image.open(buf) as im:
                out[i] = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return out


def corruption_set(images: np.ndarray, seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """Every corruption at every severity: ``{(name, severity): images}``, 30 sets."""
    return {(n, s): corrupt(images, n, s, seed) for n in CORRUPTIONS for s in range(1, 6)}
