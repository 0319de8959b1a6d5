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

__all__ = ["OCR_MODELS", "OCR_SETS", "ocr_data", "ocr_fidelity"]

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
