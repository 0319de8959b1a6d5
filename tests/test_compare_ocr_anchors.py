"""``refquant compare ppocrv4-det --anchors MinMax --json``: onnxruntime's ``quantize_static`` rows
next to refquant's, with the detector's fields (box F1, bitmap agreement, probability-map SQNR).

Small: the detector imported at 32×96 and evaluated on one page.png strip (two text lines),
calibrated on the strip below it — ``refquant.compare``'s model and data look-ups are replaced
for the test; the command, the sweep and the rows are the real ones.
"""

import json

import pytest
from tests_support import requires_real_model

pytestmark = requires_real_model("ppocrv4-det")


def test_anchor_rows_carry_the_ocr_fields_in_json(monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import refquant.compare as compare
    from refquant.cli import main
    from refquant.data.text_images import load_text_image
    from refquant.zoo import import_ppocr, weight_file
    from refquant.zoo.ppocr import det_preprocess

    page = load_text_image("page")
    small = import_ppocr(weight_file("ppocrv4-det"), "det", (32, 96))
    monkeypatch.setattr(compare, "resolve_model", lambda name: small)
    monkeypatch.setattr(compare, "ocr_data", lambda name: (det_preprocess(page[132:164, 0:96]),
                                                           [("page", det_preprocess(page[100:132, 0:96]), None)]))
    assert main(["compare", "ppocrv4-det", "--weights", "minmax", "--activations", "static-minmax",
                 "--bits", "8", "--granularity", "per-channel", "--anchors", "MinMax", "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["weights"], r["activations"]) for r in rows] == [("minmax", "static-minmax"),
                                                                ("onnxruntime", "quantize_static-MinMax")]
    for r in rows:
        assert r["model"] == "ppocrv4-det" and r["dataset"] == "page"
        assert 0.0 <= r["box_f1"] <= 1.0 and 0.5 < r["top1_agreement"] <= 1.0, r
        assert r["sqnr_db"] is not None and r["cer_float"] is None and r["cer_transcription"] is None
