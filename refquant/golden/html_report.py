"""``verify``'s report as one self-contained HTML page — what a backend developer attaches to a
bug report.

``html_report(report)`` renders a :class:`~refquant.golden.verify.VerifyReport` from
``report.to_dict()`` — the very dictionary ``refquant golden verify --json`` prints — so the
page and the JSON cannot disagree on a number:

* a summary: model, the backend whose outputs were verified, the golden set's requant mode,
  policy, verdict (PASS/FAIL) and verify's summary line;
* one table row per layer (and float graph output): elements, exact, ±1 LSB, worse, largest
  difference in LSBs, verdict;
* per differing layer: a heat map of where the differing elements sit (``mismatch_map``:
  channels × positions, summed over the batch), the histogram of the signed differences in
  LSBs (``lsb_histogram``, also as a table), the first differing element, and the explanation;
* per layer, the integer rule that defines it (``rule``: the requant mode and multiplier form,
  or the operator's / onnxruntime kernel's rule).

The images are PNGs drawn with matplotlib (imported here, inside the function: the optional
``matplotlib`` extra) and embedded as ``data:image/png;base64`` URIs; the page loads nothing
from anywhere else (no scripts, no style sheets, no links out).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

__all__ = ["html_report", "write_html_report"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176117; font-weight: bold; } .fail { color: #a11; font-weight: bold; }
section.layer { border-top: 2px solid #ddd; margin-top: 1.5em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

_COUNT_FIELDS = ("elements", "exact", "within_1", "worse", "max_abs_lsb")
_COUNT_HEADS = ("elements", "exact", "±1 LSB", "worse", "max |Δ| (LSB)")


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heat_map(m: dict) -> str:
    from matplotlib.figure import Figure

    counts = np.asarray(m["counts"], dtype=float)
    fig = Figure(figsize=(7.0, max(1.6, min(6.0, 0.12 * counts.shape[0] + 1.2))))
    ax = fig.add_subplot()
    im = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="Reds", vmin=0)
    fig.colorbar(im, ax=ax, label="differing elements")
    rb, cb = m["row_bin"], m["col_bin"]
    ax.set_ylabel(m["rows"] + (f" (bins of {rb})" if rb > 1 else ""))
    ax.set_xlabel(m["cols"] + (f" (bins of {cb})" if cb > 1 else ""))
    return _png(fig)


def _histogram(hist: list) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0, 2.6))
    ax = fig.add_subplot()
    xs = [v for v, _ in hist]
    ys = [c for _, c in hist]
    ax.bar([str(x) for x in xs], ys, color="#a33")
    ax.set_xlabel("backend − golden (LSB)")
    ax.set_ylabel("elements")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if ys and max(ys) > 50 * min(ys):
        ax.set_yscale("log")
    return _png(fig)


def _verdict(row: dict) -> str:
    if row["passed"] is None:
        return "given" if row["status"] == "given" else "missing"
    if row["passed"]:
        return "ok" if row["status"] == "exact" else "ok (±1)"
    return "ERROR" if row["status"] == "error" else "FAIL"


def _layer_row(r: dict) -> str:
    cells = [f'<td data-field="name">{_e(r["name"])}</td>', f'<td data-field="op">{_e(r["op"])}</td>',
             f'<td data-field="kernel">{_e(r["kernel"])}</td>']
    cells += [f'<td class="num" data-field="{f}">{_e(r[f])}</td>' for f in _COUNT_FIELDS]
    cells.append(f'<td data-field="verdict">{_e(_verdict(r))}</td>')
    return f'<tr data-layer="{_e(r["name"])}">' + "".join(cells) + "</tr>"


def _layer_section(r: dict) -> str:
    out = [f'<section class="layer" data-layer="{_e(r["name"])}">',
           f'<h3>{_e(r["name"])} — {_e(r["op"])} ({_e(r["kernel"])}): {_e(_verdict(r))}</h3>',
           f'<p><b>Integer rule:</b> <span data-field="rule">{_e(r["rule"] or "-")}</span></p>']
    if r["message"]:
        out.append(f'<p><b>Error:</b> <span data-field="message">{_e(r["message"])}</span></p>')
    if r["passed"] is None:
        out.append("<p>Not in the backend's outputs: not judged.</p></section>")
        return "\n".join(out)
    mismatches = r["elements"] - r["exact"]
    out.append(f'<p><span data-field="exact">{_e(r["exact"])}</span> of <span data-field="elements">'
               f'{_e(r["elements"])}</span> elements exact, <span data-field="within_1">{_e(r["within_1"])}</span> '
               f'off by ±1 LSB, <span data-field="worse">{_e(r["worse"])}</span> worse '
               f'(<span data-field="mismatches">{mismatches}</span> differ; largest |Δ| '
               f'<span data-field="max_abs_lsb">{_e(r["max_abs_lsb"])}</span> LSB).</p>')
    fm = r["first_mismatch"]
    if fm:
        extra = "".join(f", {k} {_e(fm[k])}" for k in ("accumulator", "acc_times_multiplier") if k in fm)
        out.append(f"<p><b>First differing element</b> {_e(tuple(fm['index']))}: golden {_e(fm['golden'])}, "
                   f"backend {_e(fm['backend'])}{extra}</p>")
    if r["explanation"]:
        out.append(f'<p><b>Explanation:</b> <span data-field="explanation">{_e(r["explanation"])}</span></p>')
    if r["matching_modes"] or r["matching_rules"]:
        out.append(f"<p>Reproduced exactly by requant mode(s) {_e(', '.join(r['matching_modes']) or '-')}; "
                   f"rule(s) {_e(', '.join(r['matching_rules']) or '-')}.</p>")
    if r["mismatch_map"]:
        m = r["mismatch_map"]
        out.append(f'<figure><img alt="where the differing elements of {_e(r["name"])} sit" '
                   f'src="{_heat_map(m)}"><figcaption>Where they sit: {_e(m["rows"])} × {_e(m["cols"])} over a '
                   f'{_e(m["shape"][0])} × {_e(m["shape"][1])} grid (summed over the batch; '
                   f'<span data-field="map_total">{sum(map(sum, m["counts"]))}</span> elements).'
                   "</figcaption></figure>")
    if r["lsb_histogram"]:
        out.append(f'<figure><img alt="histogram of the differences of {_e(r["name"])} in LSB" '
                   f'src="{_histogram(r["lsb_histogram"])}"><figcaption>Signed differences, backend − golden, '
                   "in LSBs.</figcaption></figure>")
        out.append('<table class="histogram"><tr><th>Δ (LSB)</th><th>elements</th></tr>'
                   + "".join(f'<tr><td class="num" data-lsb="{_e(v)}">{_e(v)}</td>'
                             f'<td class="num" data-count="{_e(c)}">{_e(c)}</td></tr>' for v, c in r["lsb_histogram"])
                   + "</table>")
    out.append("</section>")
    return "\n".join(out)


def html_report(report) -> str:
    """The page for ``report`` (a ``VerifyReport`` or its ``to_dict()``), as a string."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("the HTML report draws its images with matplotlib: pip install 'refquant[plot]'") from None
    d = report if isinstance(report, dict) else report.to_dict()
    rows = d["layers"] + d["graph_outputs"]
    verdict = "PASS" if d["passed"] else "FAIL"
    summary = [("model", d["model"]), ("backend", d["backend"]), ("requant mode", d["requant"]),
               ("policy", d["policy"]), ("golden set", d["golden"]), ("manifest sha256", d["manifest_sha256"]),
               ("outputs", d["outputs"])]
    keys = {"model": "model", "backend": "backend", "requant mode": "requant", "policy": "policy"}
    head = "".join(f'<tr><th>{_e(k)}</th><td{" data-field=" + chr(34) + keys[k] + chr(34) if k in keys else ""}>'
                   f"{_e(v)}</td></tr>" for k, v in summary)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>refquant golden verify — {_e(d['model'])}: {verdict}</title>", f"<style>{_STYLE}</style></head><body>",
        f'<h1>refquant golden verify: <span class="{verdict.lower()}" data-field="verdict">{verdict}</span></h1>',
        f'<table id="summary">{head}</table>', f'<p data-field="summary">{_e(d["summary"])}</p>',
        "<h2>Layers</h2>", '<table id="layers"><tr><th>layer</th><th>op</th><th>kernel</th>'
        + "".join(f"<th>{h}</th>" for h in _COUNT_HEADS) + "<th>verdict</th></tr>",
        *(_layer_row(r) for r in rows), "</table>",
    ]
    if d["unknown"]:
        parts.append(f"<p>Arrays not in the golden set (ignored): {_e(', '.join(d['unknown']))}</p>")
    parts.append("<h2>Each layer</h2>")
    parts += [_layer_section(r) for r in rows]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(report, path) -> Path:
    """Write :func:`html_report` to ``path`` (UTF-8); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(report), encoding="utf-8")
    return path
