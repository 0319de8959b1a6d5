"""``refquant compare`` on the PP-OCRv4 models: their data and their fidelity measures.

**Data** (``page.png`` and ``text.png`` from scikit-image, :mod:`refquant.data.text_images`):

* ``ppocrv4-det`` (192×384 input) is evaluated on ``page`` (page.png preprocessed as
  :func:`refquant.zoo.ppocr.det_preprocess` does) and calibrated on two other images of the
  same size: text.png resized to 192×384, and page.png mirrored left-right.
* ``ppocrv4-rec`` (48×800 input) is evaluated on ``page-lines``: the seven text lines the
  *float* detector finds on page.png, cropped and preprocessed
  (:func:`refquant.zoo.ppocr.rec_preprocess`). It is calibrated on the left halves of the same
  seven crops (other images: half of each line, padded) — there is no second printed page in
  the packages, so calibration and evaluation share their text, never their inputs.

**Fidelity** (fields of :class:`refquant.compare.CompareRow`; ``None`` where they do not apply):

* detector: ``box_f1`` — F1 of the quantized model's boxes (:func:`refquant.zoo.ppocr.db_boxes`)
  against the float model's, a match at IoU ≥ 0.5 (:func:`refquant.metrics.box_f1`); ``sqnr_db``
  of the probability map; ``top1_agreement`` = ``top5_agreement`` — the share of probability-map
  pixels on the same side of DB's threshold 0.3 as the float model's;
* recogniser: ``cer_float`` — character error rate of the quantized model's text against the
  float model's text, ``cer_transcription`` against page.txt (``float_cer_transcription``: the
  float model's own), the lines joined with newlines; ``top1_agreement`` — the share of CTC
  time steps whose arg-max class equals the float model's; ``sqnr_db`` of the probabilities.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .data.photos import resize_bilinear
from .data.text_images import load_text_image, transcription
from .executor import run_float
from .metrics import box_f1, character_error_rate, topk_agreement
from .zoo import PPOCR_DET_HW, PPOCR_REC_WIDTH, import_ppocr, weight_file
from .zoo.ppocr import characters_from_onnx, crop_box, ctc_decode, db_boxes, det_preprocess, group_lines, rec_preprocess

__all__ = ["OCR_MODELS", "OCR_SETS", "ocr_data", "ocr_fidelity", "ocr_golden_inputs", "text_regions"]

OCR_MODELS = ("ppocrv4-det", "ppocrv4-rec")
DB_THRESH = 0.3
OCR_SETS = {"ppocrv4-det": ("page",), "ppocrv4-rec": ("page-lines",)}


def _det_input(rgb: np.ndarray) -> np.ndarray:
    h, w = PPOCR_DET_HW
    if rgb.shape[:2] != (h, w):
        rgb = resize_bilinear(np.asarray(rgb, np.uint8), h, w)
    return det_preprocess(rgb)


@lru_cache(maxsize=1)
def page_lines() -> tuple:
    """The float detector's boxes on page.png and their crops (cached: one float detection)."""
    page = load_text_image("page")
    g = import_ppocr(weight_file("ppocrv4-det"), "det")
    prob = run_float(g, {g.inputs[0].name: det_preprocess(page)})[g.outputs[0]][0, 0]
    boxes, _ = db_boxes(prob, page.shape[:2])
    return boxes, [crop_box(page, b) for b in boxes]


def ocr_data(model: str):
    """``(calibration inputs, [(set name, inputs, None)])`` of an OCR model (module doc)."""
    if model == "ppocrv4-det":
        page, text = load_text_image("page"), load_text_image("text")
        calib = np.concatenate([_det_input(text), _det_input(page[:, ::-1])])
        return calib, [("page", _det_input(page), None)]
    if model == "ppocrv4-rec":
        _, crops = page_lines()
        halves = [c[:, : max(1, c.shape[1] // 2)] for c in crops]
        return rec_preprocess(halves, PPOCR_REC_WIDTH), [("page-lines", rec_preprocess(crops, PPOCR_REC_WIDTH), None)]
    raise ValueError(f"not an OCR model: {model!r}; OCR models: {', '.join(OCR_MODELS)}")


@lru_cache(maxsize=1)
def _characters() -> tuple:
    return tuple(characters_from_onnx(weight_file("ppocrv4-rec")))


def _text(probs: np.ndarray) -> str:
    boxes, _ = page_lines()
    texts = [t for t, _ in ctc_decode(probs, list(_characters()))]
    return "\n".join(group_lines(boxes, texts))


def ocr_fidelity(model: str, ref: np.ndarray, out: np.ndarray) -> dict:
    """The fidelity fields of one row (module doc) from the float and quantized outputs."""
    if model == "ppocrv4-det":
        page_hw = load_text_image("page").shape[:2]
        f1 = [box_f1(db_boxes(r[0], page_hw)[0], db_boxes(o[0], page_hw)[0]) for r, o in zip(ref, out)]
        same = float(np.mean((np.asarray(ref) > DB_THRESH) == (np.asarray(out) > DB_THRESH)))
        return {"box_f1": float(np.mean(f1)), "top1_agreement": same, "top5_agreement": same}
    truth = "\n".join(transcription("page"))
    ref_text, out_text = _text(ref), _text(out)
    flat = (-1, ref.shape[-1])
    return {"cer_float": character_error_rate(out_text, ref_text),
            "cer_transcription": character_error_rate(out_text, truth),
            "float_cer_transcription": character_error_rate(ref_text, truth),
            "top1_agreement": topk_agreement(ref.reshape(flat), out.reshape(flat), 1),
            "top5_agreement": topk_agreement(ref.reshape(flat), out.reshape(flat), 5)}


def text_regions(views) -> list[tuple[str, np.ndarray]]:
    """``[(view, (h, w, 3) uint8 region)]`` of views named ``IMAGE`` (the whole text image) or
    ``IMAGE/R0:R1,C0:C1`` (rows ``R0 … R1-1``, columns ``C0 … C1-1``, as NumPy slices) of
    :data:`refquant.data.text_images.TEXT_IMAGES`; a malformed or empty view is a ``ValueError``
    naming it."""
    out = []
    for view in views:
        name, _, box = str(view).partition("/")
        img = load_text_image(name)
        if box:
            try:
                rows, cols = box.split(",")
                (r0, r1), (c0, c1) = (tuple(int(v) for v in part.split(":")) for part in (rows, cols))
            except ValueError:
                raise ValueError(f"view {view!r}: expected IMAGE or IMAGE/R0:R1,C0:C1 (e.g. page/100:132,0:32)") from None
            region = img[r0:r1, c0:c1]
            if region.shape[0] < 1 or region.shape[1] < 1 or not (0 <= r0 < r1 <= img.shape[0]
                                                                    and 0 <= c0 < c1 <= img.shape[1]):
                raise ValueError(f"view {view!r}: the region lies outside {name} ({img.shape[0]}x{img.shape[1]}) "
                                 f"or is empty")
            img = region
        out.append((str(view), img))
    return out


def ocr_golden_inputs(model: str, views):
    """``(graph, inputs, calibration, description)`` of an OCR model's golden set on text-image
    views (:func:`text_regions`), the graph imported at the size the views need:

    * ``ppocrv4-det``: each region through :func:`~refquant.zoo.ppocr.det_preprocess`; all views
      must give the same size (multiples of 32), and the graph is imported at it;
    * ``ppocrv4-rec``: the regions as line crops (:func:`~refquant.zoo.ppocr.rec_preprocess`),
      the graph imported at the widest crop's width at height 48, rounded up to a multiple of 32
      (at most :data:`~refquant.zoo.PPOCR_REC_WIDTH`).

    Calibration: the same regions mirrored left-right (the same statistics, never the recorded
    inputs)."""
    regions = text_regions(views)
    if not regions:
        raise ValueError(f"golden export {model}: name at least one view with --views (e.g. page/100:132,0:32)")
    crops = [r for _, r in regions]
    mirrored = [np.ascontiguousarray(r[:, ::-1]) for r in crops]
    if model == "ppocrv4-det":
        x = [det_preprocess(c) for c in crops]
        sizes = {a.shape[2:] for a in x}
        if len(sizes) > 1:
            raise ValueError(f"golden export {model}: the views give different detector input sizes "
                             f"{sorted(sizes)}; name regions of one size")
        (h, w), = sizes
        graph = import_ppocr(weight_file(model), "det", (h, w))
        inputs, calib = np.concatenate(x), np.concatenate([det_preprocess(c) for c in mirrored])
        size = f"{h}x{w}"
    elif model == "ppocrv4-rec":
        wide = max(int(np.ceil(48 * c.shape[1] / c.shape[0])) for c in crops)
        width = min(PPOCR_REC_WIDTH, 32 * -(-wide // 32))
        graph = import_ppocr(weight_file(model), "rec", width)
        inputs, calib = rec_preprocess(crops, width), rec_preprocess(mirrored, width)
        size = f"48x{width}"
    else:
        raise ValueError(f"not an OCR model: {model!r}; OCR models: {', '.join(OCR_MODELS)}")
    description = (f"text views {[v for v, _ in regions]} (refquant.compare_ocr.text_regions), model imported at "
                   f"{size}; calibration: the same views mirrored left-right")
    return graph, inputs, calib, description
