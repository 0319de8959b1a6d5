"""``python -m refquant.papers``: the papers' comparisons on EfficientNet-Lite0, recomputed on small
subsets and checked against the recorded tables (bench/papers/*.json, quoted in spec/strategies/)."""

import json
from pathlib import Path

import pytest
from tests_support import requires_real_model


pytestmark = requires_real_model("efficientnet-lite0")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "papers"


def test_statqat_command_recomputes_the_recorded_table(capsys):
    from refquant.papers import main

    assert main(["statqat", "--bits", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "python -m refquant.papers statqat --bits 4 --json"
    assert {"date", "machine", "wall_s", "cpu_s", "rows"} <= set(doc)
    recorded = {r["layer"]: r for r in json.loads((BENCH / "statqat.json").read_text())["rows"] if r["bits"] == 4}
    rows = doc["rows"]
    assert len(rows) == 50 and [r["layer"] for r in rows] == list(recorded)
    for r in rows:
        for k, v in r.items():
            if k not in ("layer", "shape", "bits"):
                assert v == pytest.approx(recorded[r["layer"]][k], abs=2e-3), (r["layer"], k)
    # the claim spec/strategies/statqat.md makes at 4 bits per tensor: analytic above min-max on 47 of 50
    assert sum(r["statqat per-tensor"] > r["minmax per-tensor"] for r in rows) == 47
