"""``refquant golden verify … --html REPORT.html``: the page carries exactly the numbers of
``--json`` (both come from one ``VerifyReport``), embeds its images, and loads nothing from
elsewhere. A backend's outputs are perturbed so that there are real mismatches (some ±1 LSB,
some worse); an unperturbed run reports none."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from refquant.cli import main  # noqa: E402
from refquant.executor import quantize_model  # noqa: E402
from refquant.golden import export_golden, replay  # noqa: E402
from tests_support import small_cnn  # noqa: E402


class _Page(HTMLParser):
    """Collects the layer table's cells, each layer section's fields, histogram tables and every
    URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.rows: dict = {}
        self.sections: dict = {}
        self.summary: dict = {}
        self.histograms: dict = {}
        self.urls: list = []
        self.tags: list = []
        self._row = self._section = self._field = None
        self._text = ""
        self._lsb = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for k in ("src", "href", "action", "data", "poster"):
            if k in a:
                self.urls.append(a[k])
        if tag == "tr" and "data-layer" in a:
            self._row = self.rows.setdefault(a["data-layer"], {})
        elif tag == "section" and "data-layer" in a:
            self._section = a["data-layer"]
            self.sections[self._section] = {}
        if "data-field" in a:
            self._field, self._text = a["data-field"], ""
        if "data-lsb" in a:
            self._lsb = a["data-lsb"]
        if "data-count" in a:
            self.histograms.setdefault(self._section, []).append([self._lsb, int(a["data-count"])])

    def handle_data(self, data):
        if self._field is not None:
            self._text += data

    def handle_endtag(self, tag):
        if self._field is not None and tag in ("td", "span", "p"):
            if self._row is not None:
                self._row[self._field] = self._text
            elif self._section is not None:
                self.sections[self._section][self._field] = self._text
            else:
                self.summary[self._field] = self._text
            self._field = None
        if tag == "tr":
            self._row = None
        if tag == "section":
            self._section = None


def _num(text: str):
    v = float(text)
    return int(v) if v.is_integer() else v


@pytest.fixture(scope="module")
def golden_set(tmp_path_factory):
    graph, x = small_cnn(seed=5, n=16)
    qm = quantize_model(graph, "weights=minmax:8:per-channel activations=static-minmax:8", x)
    return export_golden(qm, x[:4], tmp_path_factory.mktemp("golden") / "set", seed=5)


def _verify(tmp_path, gs, outputs, capsys):
    np.savez(tmp_path / "out.npz", **outputs)
    capsys.readouterr()
    code = main(["golden", "verify", str(gs.root), "--outputs", str(tmp_path / "out.npz"), "--json",
                 "--html", str(tmp_path / "report.html"), "--backend-name", "perturbed numba"])
    doc = json.loads(capsys.readouterr().out)
    page = _Page()
    page.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    return code, doc, page


def test_the_html_page_has_the_json_numbers_and_embedded_images(tmp_path, golden_set, capsys):
    gs = golden_set
    out = {k: np.asarray(v).astype(np.int64) for k, v in replay(gs, mode="float32").items()}
    conv = next(layer["name"] for layer in gs.layers if layer["op"] == "Conv")
    fc = next(layer["name"] for layer in gs.layers if layer["op"] == "Gemm")
    rng = np.random.default_rng(3)
    y = out[conv].reshape(-1)
    picks = rng.choice(y.size, 40, replace=False)
    y[picks[:25]] += rng.choice([-1, 1], 25)        # ±1 LSB
    y[picks[25:]] += rng.choice([-5, 2, 3, 7], 15)  # worse
    out[fc].reshape(-1)[[0, 3]] += [1, -4]
    code, doc, page = _verify(tmp_path, gs, out, capsys)
    assert code == 1 and not doc["passed"]

    assert page.summary["verdict"] == "FAIL"
    assert page.summary["model"] == doc["model"] and page.summary["requant"] == doc["requant"] == "float32"
    assert page.summary["backend"] == doc["backend"] == "perturbed numba"
    assert page.summary["summary"] == doc["summary"]
    rows = doc["layers"] + doc["graph_outputs"]
    assert set(page.rows) == {r["name"] for r in rows}
    for r in rows:
        cells, sec = page.rows[r["name"]], page.sections[r["name"]]
        for f in ("elements", "exact", "within_1", "worse", "max_abs_lsb"):
            assert _num(cells[f]) == r[f], (r["name"], f)
            if r["passed"] is not None:
                assert _num(sec[f]) == r[f], (r["name"], f)
        assert sec["rule"] == r["rule"] and r["rule"]
        if r["passed"] is None:
            continue
        assert int(sec["mismatches"]) == r["elements"] - r["exact"] == r["within_1"] + r["worse"]
        if r["mismatch_map"]:
            total = sum(map(sum, r["mismatch_map"]["counts"]))
            assert int(sec["map_total"]) == total == r["elements"] - r["exact"]
        assert [[_num(v), c] for v, c in page.histograms.get(r["name"], [])] == r["lsb_histogram"]
        assert sum(c for _, c in r["lsb_histogram"]) == r["elements"] - r["exact"]

    by = {r["name"]: r for r in rows}
    assert (by[conv]["within_1"], by[conv]["worse"]) == (25, 15)
    assert (by[fc]["within_1"], by[fc]["worse"]) == (1, 1) and by[fc]["max_abs_lsb"] == 4
    assert dict((v, c) for v, c in by[fc]["lsb_histogram"]) == {-4: 1, 1: 1}
    assert "float32" in by[conv]["rule"] and "m = float32(float32(s_x·s_w)/s_y)" in by[conv]["rule"]
    # the conv's mismatches sit in the heat map where they were put
    m = np.zeros((out[conv].shape[1], int(np.prod(out[conv].shape[2:]))), int)
    for k in picks:
        i = np.unravel_index(k, out[conv].shape)
        m[i[1], np.ravel_multi_index(i[2:], out[conv].shape[2:])] += 1
    assert by[conv]["mismatch_map"]["counts"] == m.tolist()

    # images: two per differing layer, all embedded PNGs; nothing loaded from anywhere else
    differing = [r for r in rows if r["mismatch_map"]]
    assert len(differing) >= 2
    assert page.urls and len(page.urls) == 2 * len(differing)
    assert all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)


def test_an_all_exact_run_reports_no_mismatch(tmp_path, golden_set, capsys):
    code, doc, page = _verify(tmp_path, golden_set, replay(golden_set), capsys)
    assert code == 0 and doc["passed"] and page.summary["verdict"] == "PASS"
    judged = [r for r in doc["layers"] + doc["graph_outputs"] if r["passed"] is not None]
    assert judged
    for r in judged:
        assert r["exact"] == r["elements"] and r["lsb_histogram"] == [] and r["mismatch_map"] is None
        assert int(page.sections[r["name"]]["mismatches"]) == 0
        assert _num(page.rows[r["name"]]["worse"]) == 0 and _num(page.rows[r["name"]]["within_1"]) == 0
    assert page.urls == [] and not page.histograms
