"""PP-OCRv4 from rapidocr-onnxruntime's ONNX files: registration, import (folding, operator
list), float outputs against onnxruntime, the NumPy/SciPy post-processing, page.png's CER. Every
strategy pair quantizing and running both models: tests/test_zoo_ppocr_all_plans.py.

Sizes keep this to seconds: the detector at 32×96, the recogniser at width 160;
the full-page float read (CER 2.68 %, 38 s) is measured by ``refquant compare`` and recorded in
spec/models/ppocrv4.md.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refquant.metrics import box_f1, character_error_rate, levenshtein
from refquant.zoo.ppocr import ctc_decode, db_boxes, min_area_rect

try:
    from refquant.zoo import weight_file

    weight_file("ppocrv4-det")
    HAVE = True
except ImportError:  # pragma: no cover - the extra `models` is part of `test`
    HAVE = False
needs_models = pytest.mark.skipif(not HAVE, reason="pip install 'refquant[models]'")


# ---- post-processing, no model needed ---------------------------------------------------------

def _dp(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[-1]


@settings(max_examples=60, deadline=None)
@given(st.text("abc é", max_size=12), st.text("abc é", max_size=12))
def test_levenshtein_equals_the_textbook_programme(a, b):
    assert levenshtein(a, b) == _dp(a, b) == levenshtein(b, a)


def test_cer_and_box_f1_closed_cases():
    assert character_error_rate("kitten", "sitting") == 3 / 7
    assert character_error_rate("", "") == 0.0
    box = np.array([[0, 0], [10, 0], [10, 4], [0, 4]], float)
    assert box_f1([box], [box + 1]) == 1.0          # IoU 27/53 ≥ 0.5
    assert box_f1([box], [box + 3]) == 0.0          # IoU 7/73
    assert box_f1([box, box + 20], [box]) == 2 / 3
    assert box_f1([], []) == 1.0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 30))
def test_min_area_rect_is_minimal_over_every_direction(seed, n):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 2)) * [5, 1] @ np.array([[0.8, 0.6], [-0.6, 0.8]])
    box = min_area_rect(pts)
    w, h = np.linalg.norm(box[1] - box[0]), np.linalg.norm(box[3] - box[0])
    best = math.inf
    for t in np.linspace(0, np.pi / 2, 721):
        u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        best = min(best, np.ptp(pts @ u) * np.ptp(pts @ v))
    assert w * h <= best * (1 + 1e-9)
    # every point inside (up to rounding): the box's own axes contain the projections
    u, v = (box[1] - box[0]) / w, (box[3] - box[0]) / h
    assert ((pts - box[0]) @ u >= -1e-9).all() and ((pts - box[0]) @ u <= w + 1e-9).all()
    assert ((pts - box[0]) @ v >= -1e-9).all() and ((pts - box[0]) @ v <= h + 1e-9).all()


def test_db_boxes_grow_each_region_by_the_unclip_distance():
    """A 40×6-pixel region (centres span 39×5) of probability 0.9: one box, grown by
    d = 39·5·1.5 / (2·(39 + 5)) on every side, scaled to a page twice the map's size."""
    prob = np.zeros((32, 64))
    prob[10:16, 8:48] = 0.9
    prob[25:27, 3:5] = 0.9      # too small: shorter side 1 < 3
    prob[20:23, 50:60] = 0.45   # above the threshold, but its score 0.45 < 0.6
    boxes, scores = db_boxes(prob, (64, 128))
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9)
    d = 39 * 5 * 1.5 / (2 * 44)
    expect = np.array([[8 - d, 10 - d], [47 + d, 10 - d], [47 + d, 15 + d], [8 - d, 15 + d]]) * 2
    assert np.abs(boxes[0] - np.round(expect)).max() <= 1


def test_ctc_decode_merges_repeats_and_drops_blanks():
    chars = ["blank", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 0, 2]
    probs = np.full((1, len(steps), 4), 0.1)
    probs[0, np.arange(len(steps)), steps] = 0.7
    assert ctc_decode(probs, chars) == [("aab b", pytest.approx(0.7))]
    with pytest.raises(ValueError, match="4 classes"):
        ctc_decode(probs[:, :, :3], chars)


# ---- the real files --------------------------------------------------------------------------

@needs_models
def test_models_are_listed_with_their_package_and_file(monkeypatch):
    import refquant.zoo as zoo

    rows = {r["name"]: r for r in zoo.annotate_model_rows([{"name": "ppocrv4-det"}, {"name": "ppocrv4-rec"}])}
    assert rows["ppocrv4-det"]["package"] == "rapidocr-onnxruntime"
    assert rows["ppocrv4-rec"]["file"] == "ch_PP-OCRv4_rec_infer.onnx"
    monkeypatch.setattr(zoo, "_distribution", lambda m: None)
    seen = {}
    zoo.register_real_models(lambda name, load, doc: seen.setdefault(name, doc))
    assert "not installed: install with pip install 'refquant[models]'" in seen["ppocrv4-rec"]
    with pytest.raises(ImportError, match="rapidocr-onnxruntime"):
        zoo.weight_file("ppocrv4-det")


@needs_models
def test_the_files_operators_and_what_import_folds():
    import onnx

    from refquant.zoo import import_ppocr

    ops = {k: Counter(n.op_type for n in onnx.load(str(weight_file(k))).graph.node)
           for k in ("ppocrv4-det", "ppocrv4-rec")}
    assert ops["ppocrv4-det"]["Resize"] == 6 and ops["ppocrv4-det"]["ConvTranspose"] == 2
    assert ops["ppocrv4-rec"]["Shape"] == 4 and ops["ppocrv4-rec"]["Cast"] == 23
    rec = import_ppocr(weight_file("ppocrv4-rec"), "rec", 160)
    kept = Counter(n.op_type for n in rec.nodes)
    assert not {"Shape", "Cast", "Constant"} & set(kept)
    assert kept["Slice"] == 6 and kept["Reshape"] == 6 and kept["Concat"] == 1  # 4 Slices, 6 Concats folded


@pytest.fixture(scope="module")
def ort_sessions():
    import onnxruntime as ort

    return {k: ort.InferenceSession(str(weight_file(k)), providers=["CPUExecutionProvider"])
            for k in ("ppocrv4-det", "ppocrv4-rec")}


@needs_models
def test_post_processing_reads_page_png_within_5_percent_on_onnxruntime(ort_sessions):
    """The pipeline (DB boxes, crops, CTC) with onnxruntime running the original files."""
    from refquant.data.text_images import load_text_image, transcription
    from refquant.zoo import PPOCR_REC_WIDTH
    from refquant.zoo.ppocr import characters_from_onnx, read_page

    det, rec = ort_sessions["ppocrv4-det"], ort_sessions["ppocrv4-rec"]
    r = read_page(load_text_image("page"), lambda x: det.run(None, {"x": x})[0], lambda x: rec.run(None, {"x": x})[0],
                  characters_from_onnx(weight_file("ppocrv4-rec")), PPOCR_REC_WIDTH)
    assert len(r.lines) == 7
    assert character_error_rate(r.text, "\n".join(transcription("page"))) <= 0.05


@pytest.fixture(scope="module")
def small():
    """Both models imported at small sizes with their small inputs (bench/ocr_all_plans.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from ocr_all_plans import small_inputs

    return small_inputs()


@needs_models
def test_float_models_match_onnxruntime_and_read_a_crop(small, ort_sessions):
    from refquant.executor import run_float
    from refquant.zoo.ppocr import characters_from_onnx

    outs = {}
    for model, (g, _, x) in small.items():
        outs[model] = run_float(g, {"x": x})[g.outputs[0]]
        assert np.abs(outs[model] - ort_sessions[model].run(None, {"x": x})[0]).max() < 1e-4, model
    (text, _), = ctc_decode(outs["ppocrv4-rec"], characters_from_onnx(weight_file("ppocrv4-rec")))
    assert text.replace(" ", "").startswith("histogramof"), text  # (the crop cuts into "grey")
    assert box_f1(db_boxes(ort_sessions["ppocrv4-det"].run(None, {"x": small["ppocrv4-det"][2]})[0][0, 0], (32, 96))[0],
                  db_boxes(outs["ppocrv4-det"][0, 0], (32, 96))[0]) == 1.0


def test_mse_weights_keep_a_dead_subnormal_channel_at_its_min_max_range():
    """PP-OCRv4's detector has a channel whose largest weight is 3e-39 (subnormal in float32):
    ``mse`` gives it the min-max range and searches the other channels as before."""
    from refquant.registry import get_quantizer
    from refquant.strategies import LayerSpec

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 8)).astype(np.float32)
    w[1] = np.float32(3e-39) * np.sign(w[1])
    spec = LayerSpec(layer="conv", op="Conv", granularity="per-channel")
    mse, minmax = get_quantizer("mse", "weights"), get_quantizer("minmax", "weights")
    both = mse.quantize_weight(w, spec), minmax.quantize_weight(w, spec)
    assert both[0].qparams.scale[1] == both[1].qparams.scale[1]
    alone = mse.quantize_weight(w[[0, 2]], spec)
    assert np.array_equal(both[0].qparams.scale[[0, 2]], alone.qparams.scale)


@needs_models
def test_compare_fidelity_fields_of_the_ocr_models(monkeypatch):
    """ocr_fidelity on made-up outputs: the detector's box F1 and bitmap agreement, the
    recogniser's CER against the float text and against page.txt (boxes stubbed)."""
    import refquant.compare_ocr as co
    from refquant.compare import ROW_FIELDS
    from refquant.data.text_images import transcription

    prob = np.zeros((1, 1, 192, 384), np.float32)
    prob[0, 0, 10:16, 8:200] = 0.9
    moved = np.roll(prob, 120, axis=3)
    same = co.ocr_fidelity("ppocrv4-det", prob, prob)
    assert same["box_f1"] == 1.0 and same["top1_agreement"] == 1.0
    assert co.ocr_fidelity("ppocrv4-det", prob, moved)["box_f1"] == 0.0

    chars = co._characters()
    truth = transcription("page")
    index = {c: i for i, c in enumerate(chars)}
    probs = np.zeros((len(truth), 60, len(chars)), np.float32)
    for k, line in enumerate(truth):
        steps = [index.get(c, 0) for c in line[:30]]
        probs[k, np.arange(0, 2 * len(steps), 2), steps] = 1.0   # a blank between characters
        probs[k, np.arange(1, 60, 2), 0] = 1.0
        probs[k, 2 * len(steps):, 0] = 1.0
    boxes = np.array([[[0, 20 * k], [10, 20 * k], [10, 20 * k + 10], [0, 20 * k + 10]] for k in range(len(truth))],
                     float)
    monkeypatch.setattr(co, "page_lines", lambda: (boxes, []))
    fid = co.ocr_fidelity("ppocrv4-rec", probs, probs)
    assert fid["cer_float"] == 0.0 and fid["top1_agreement"] == 1.0
    cut = "\n".join(line[:30] for line in truth)
    assert fid["cer_transcription"] == character_error_rate(cut, "\n".join(truth))
    assert {"box_f1", "cer_float", "cer_transcription", "float_cer_transcription"} <= set(ROW_FIELDS)


@needs_models
def test_text_png_has_a_transcription_and_the_detector_finds_no_text_in_it(ort_sessions):
    """text.png (handwritten maths at a grazing angle): four transcribed lines; the float
    detector's largest probability is about 3.6e-7, so the pipeline reads nothing — CER 100 %."""
    from refquant.data.text_images import load_text_image, transcription
    from refquant.zoo import PPOCR_REC_WIDTH
    from refquant.zoo.ppocr import characters_from_onnx, read_page

    truth = transcription("text")
    assert len(truth) == 4 and truth[2].startswith("f(s) = ∫")
    det, rec = ort_sessions["ppocrv4-det"], ort_sessions["ppocrv4-rec"]
    r = read_page(load_text_image("text"), lambda x: det.run(None, {"x": x})[0], lambda x: rec.run(None, {"x": x})[0],
                  characters_from_onnx(weight_file("ppocrv4-rec")), PPOCR_REC_WIDTH)
    assert r.prob.max() < 1e-3 and len(r.boxes) == 0 and r.text == ""
    assert character_error_rate(r.text, "\n".join(truth)) == 1.0
