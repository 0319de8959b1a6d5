"""PP-OCRv4 (PaddleOCR's mobile Chinese/English OCR): pre- and post-processing in NumPy/SciPy.

The two networks are imported from the ONNX files that ``rapidocr-onnxruntime`` ships
(:mod:`refquant.zoo`); this module turns a page into their inputs and their outputs into
text, following PaddleOCR's inference defaults (``tools/infer/utility.py``):

**Detection (DB, Liao et al. 2020).**

1. Resize (:func:`det_preprocess`): with ``limit_type="max"`` the longer side is scaled
   down to ``limit_side_len`` if it is longer (``"min"``: the shorter side scaled up to it
   if it is shorter, rapidocr's default); each side is then rounded to the nearest multiple
   of 32 (at least 32); bilinear resampling (:func:`refquant.data.photos.resize_bilinear`).
   Normalise ``(x/255 − mean)/std`` with ImageNet's mean (0.485, 0.456, 0.406) and std
   (0.229, 0.224, 0.225), NCHW float32.
2. Boxes from the probability map ``P`` (:func:`db_boxes`): bitmap ``P > 0.3``; its 8-connected
   components (``scipy.ndimage.label``); per component the minimum-area rectangle of its
   pixel centres (convex hull, rotating calipers: :func:`min_area_rect`), dropped when its
   shorter side is below 3 pixels; the *box score* is the mean of ``P`` over the component
   with its holes filled — DB's "slow" score (the filled contour polygon); its "fast" score,
   the mean over the whole rectangle, drops the lines of a curved page, whose rectangles are
   mostly background — and the box is dropped below ``box_thresh`` 0.6; the
   rectangle is then expanded ("unclipped") by ``d = area · 1.5 / perimeter`` on every side —
   for a rectangle, the minimum-area rectangle of Clipper's rounded offset polygon is exactly
   the rectangle grown by ``d`` — and dropped if its shorter side is below 5; corners are
   scaled back to page coordinates and clipped to the page.  Boxes are ordered top to bottom,
   then left to right (rapidocr's ``sorted_boxes``: boxes whose tops differ by < 10 px count as
   one row).

**Recognition (SVTR-LCNet, CTC).**

3. Each box is cut out of the page by the affine map of its corners (bilinear,
   ``scipy.ndimage.map_coordinates``, edges replicated: :func:`crop_box`), resized to height
   48 keeping its aspect ratio (width ``ceil(48 w/h)``, at most the model's width), normalised
   ``(x/255 − 0.5)/0.5`` and padded with zeros (grey) to the model's fixed width
   (:func:`rec_preprocess`).
4. Greedy CTC decoding (:func:`ctc_decode`): the arg-max class per time step, repeats merged,
   the blank (class 0) removed; classes are ``["blank"] + metadata['character'].split("\\n")
   + [" "]`` (rapidocr appends the space).  A line's score is the mean of the kept steps' maxima.

:func:`read_page` chains the four with any two callables that run the networks (float,
quantized, onnxruntime), so every back end is evaluated by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..data.photos import resize_bilinear
from ..onnx_io.runtime import require_onnx

__all__ = ["DET_MEAN", "DET_STD", "REC_HEIGHT", "OcrResult", "characters_from_onnx", "crop_box", "ctc_decode",
           "db_boxes", "det_preprocess", "group_lines", "min_area_rect", "read_page", "rec_preprocess"]

DET_MEAN = (0.485, 0.456, 0.406)
DET_STD = (0.229, 0.224, 0.225)
REC_HEIGHT = 48


def det_preprocess(rgb: np.ndarray, limit_side_len: int = 960, limit_type: str = "max") -> np.ndarray:
    """(H, W, 3) uint8 → (1, 3, H', W') float32, H' and W' multiples of 32 (module docstring, step 1)."""
    h, w = rgb.shape[:2]
    ratio = 1.0
    if limit_type == "max" and max(h, w) > limit_side_len:
        ratio = limit_side_len / max(h, w)
    elif limit_type == "min" and min(h, w) < limit_side_len:
        ratio = limit_side_len / min(h, w)
    elif limit_type not in ("max", "min"):
        raise ValueError(f"det_preprocess: limit_type must be 'max' or 'min', got {limit_type!r}")
    rh = max(int(round(int(h * ratio) / 32) * 32), 32)
    rw = max(int(round(int(w * ratio) / 32) * 32), 32)
    img = resize_bilinear(np.asarray(rgb, np.uint8), rh, rw) if (rh, rw) != (h, w) else np.asarray(rgb)
    x = (img.astype(np.float32) / np.float32(255) - np.asarray(DET_MEAN, np.float32)) / np.asarray(DET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """The 4 corners (clockwise from the top-left, float64) of the minimum-area rectangle
    enclosing ``points`` (K, 2) as (x, y): rotating calipers over the convex hull's edges."""
    pts = np.asarray(points, np.float64)
    try:
        hull = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):  # collinear or too few points: a degenerate box
        hull = pts
    best = None
    edges = np.roll(hull, -1, axis=0) - hull
    for e in edges:
        n = math.hypot(*e)
        if n == 0:
            continue
        u = e / n
        v = np.array([-u[1], u[0]])
        a, b = hull @ u, hull @ v
        area = (a.max() - a.min()) * (b.max() - b.min())
        if best is None or area < best[0]:
            best = (area, u, v, a.min(), a.max(), b.min(), b.max())
    if best is None:  # all points equal
        p = pts[0]
        return np.array([p, p, p, p])
    _, u, v, a0, a1, b0, b1 = best
    corners = np.array([a0 * u + b0 * v, a1 * u + b0 * v, a1 * u + b1 * v, a0 * u + b1 * v])
    return _order_corners(corners)


def _order_corners(c: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left (DB's get_mini_boxes order)."""
    c = c[np.argsort(c[:, 0], kind="stable")]
    left, right = c[:2], c[2:]
    tl, bl = (left[0], left[1]) if left[0, 1] <= left[1, 1] else (left[1], left[0])
    tr, br = (right[0], right[1]) if right[0, 1] <= right[1, 1] else (right[1], right[0])
    return np.array([tl, tr, br, bl])


def _sides(box: np.ndarray) -> tuple[float, float]:
    return float(np.linalg.norm(box[1] - box[0])), float(np.linalg.norm(box[3] - box[0]))


def db_boxes(prob: np.ndarray, page_hw: tuple, *, thresh: float = 0.3, box_thresh: float = 0.6,
             unclip_ratio: float = 1.5, min_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Text boxes (K, 4, 2) in page (x, y) coordinates and their scores (K,) from a DB
    probability map ``prob`` (H', W') (module docstring, step 2), in reading order."""
    prob = np.asarray(prob, np.float64)
    if prob.ndim != 2:
        raise ValueError(f"db_boxes: the probability map must be 2-D (H, W), got shape {prob.shape}")
    ph, pw = page_hw
    h, w = prob.shape
    labels, count = ndimage.label(prob > thresh, structure=np.ones((3, 3), bool))
    boxes, scores = [], []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[sl] == k)
        pts = np.stack([xs + sl[1].start, ys + sl[0].start], axis=1).astype(np.float64)
        box = min_area_rect(pts)
        if min(_sides(box)) < min_size:
            continue
        region = ndimage.binary_fill_holes(labels[sl] == k)
        score = float(prob[sl][region].mean())
        if score < box_thresh:
            continue
        bw, bh = _sides(box)
        d = bw * bh * unclip_ratio / (2 * (bw + bh))
        u = (box[1] - box[0]) / bw
        v = (box[3] - box[0]) / bh
        grown = np.array([box[0] - d * u - d * v, box[1] + d * u - d * v, box[2] + d * u + d * v,
                          box[3] - d * u + d * v])
        if min(_sides(grown)) < min_size + 2:
            continue
        grown[:, 0] = np.clip(np.round(grown[:, 0] * pw / w), 0, pw)
        grown[:, 1] = np.clip(np.round(grown[:, 1] * ph / h), 0, ph)
        boxes.append(grown)
        scores.append(score)
    if not boxes:
        return np.zeros((0, 4, 2)), np.zeros(0)
    boxes, scores = np.array(boxes), np.array(scores)
    order = _reading_order(boxes)
    return boxes[order], scores[order]


def _reading_order(boxes: np.ndarray) -> list[int]:
    """rapidocr's sorted_boxes: by the top-left corner (y, then x), then neighbours whose tops
    differ by < 10 px swapped into left-to-right order."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0][1], boxes[i][0][0]))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[order[j]], boxes[order[j + 1]]
            if abs(b[0][1] - a[0][1]) < 10 and b[0][0] < a[0][0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order


def crop_box(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box's content as an upright (h, w, 3) uint8 image (module docstring, step 3); a
    crop at least 1.5 times as tall as wide is rotated by 90° (rapidocr's rule)."""
    box = np.asarray(box, np.float64)
    w = max(int(round(max(np.linalg.norm(box[1] - box[0]), np.linalg.norm(box[2] - box[3])))), 1)
    h = max(int(round(max(np.linalg.norm(box[3] - box[0]), np.linalg.norm(box[2] - box[1])))), 1)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = (u + 0.5) / w, (v + 0.5) / h
    px = box[0, 0] + fx * (box[1, 0] - box[0, 0]) + fy * (box[3, 0] - box[0, 0]) - 0.5
    py = box[0, 1] + fx * (box[1, 1] - box[0, 1]) + fy * (box[3, 1] - box[0, 1]) - 0.5
    img = np.asarray(rgb, np.float64)
    out = np.stack([ndimage.map_coordinates(img[:, :, c], [py, px], order=1, mode="nearest") for c in range(3)],
                   axis=-1)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.rot90(out) if h >= 1.5 * w else out


def rec_preprocess(crops: list, width: int) -> np.ndarray:
    """(K, 3, 48, width) float32 recogniser inputs from (h, w, 3) uint8 crops (step 3)."""
    x = np.zeros((len(crops), 3, REC_HEIGHT, width), np.float32)
    for i, c in enumerate(crops):
        h, w = c.shape[:2]
        rw = min(width, max(1, int(math.ceil(REC_HEIGHT * w / h))))
        img = resize_bilinear(np.asarray(c, np.uint8), REC_HEIGHT, rw).astype(np.float32)
        x[i, :, :, :rw] = ((img / np.float32(255) - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)
    return x


def characters_from_onnx(path) -> list[str]:
    """The recogniser's classes from its ONNX metadata (step 4): blank, the file's characters, space."""
    onnx = require_onnx()
    m = onnx.load_model(str(path), load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if "character" not in props:
        raise ValueError(f"{path}: no 'character' entry in the model's metadata_props (keys: {sorted(props)})")
    return ["blank"] + props["character"].splitlines() + [" "]


def ctc_decode(probs: np.ndarray, characters: list[str]) -> list[tuple[str, float]]:
    """Greedy CTC (step 4) of (K, T, C) class probabilities: ``(text, mean max-probability)`` per line."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[2] != len(characters):
        raise ValueError(f"ctc_decode: probabilities of shape {probs.shape} for {len(characters)} classes")
    idx = probs.argmax(axis=2)
    best = probs.max(axis=2)
    out = []
    for k in range(len(idx)):
        keep = np.ones(idx.shape[1], bool)
        keep[1:] = idx[k, 1:] != idx[k, :-1]
        keep &= idx[k] != 0
        text = "".join(characters[i] for i in idx[k][keep])
        out.append((text, float(best[k][keep].mean()) if keep.any() else 0.0))
    return out


def group_lines(boxes: np.ndarray, texts: list[str]) -> list[str]:
    """Texts of boxes on one line (vertical centres within half the smaller height) joined
    left to right with a space; lines top to bottom."""
    items = []
    for b, t in zip(boxes, texts):
        cy, hh = float(b[:, 1].mean()), float(b[:, 1].max() - b[:, 1].min())
        items.append((cy, hh, float(b[:, 0].min()), t))
    items.sort()
    lines: list[list] = []
    for it in items:
        if lines and abs(it[0] - lines[-1][0][0]) < 0.5 * min(it[1], lines[-1][0][1]):
            lines[-1].append(it)
        else:
            lines.append([it])
    return [" ".join(t for *_, t in sorted(line, key=lambda i: i[2]) if t) for line in lines]


@dataclass
class OcrResult:
    """What :func:`read_page` found: the probability map, boxes, scores, per-box texts, lines."""

    prob: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    texts: list
    lines: list

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def read_page(rgb: np.ndarray, detect: Callable, recognise: Callable, characters: list[str], rec_width: int, *,
              limit_side_len: int = 960, limit_type: str = "max", rec_batch: int = 8) -> OcrResult:
    """Run detection, cropping, recognition and decoding on one page.

    ``detect(x)`` maps a (1, 3, H', W') float32 input to the (1, 1, H', W') probability map,
    ``recognise(x)`` a (K, 3, 48, rec_width) batch to (K, T, classes) probabilities.
    """
    x = det_preprocess(rgb, limit_side_len, limit_type)
    prob = np.asarray(detect(x))[0, 0]
    boxes, scores = db_boxes(prob, rgb.shape[:2])
    crops = [crop_box(rgb, b) for b in boxes]
    texts: list = []
    for i in range(0, len(crops), rec_batch):
        texts += [t for t, _ in ctc_decode(recognise(rec_preprocess(crops[i:i + rec_batch], rec_width)), characters)]
    return OcrResult(prob, boxes, scores, texts, group_lines(boxes, texts))
