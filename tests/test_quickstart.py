"""The front door: the names ``refquant`` exports, and the README's quick start run as written."""

import re
from pathlib import Path

import numpy as np

import refquant

ROOT = Path(__file__).resolve().parents[1]


def quickstart_block() -> str:
    """The Python block after ``<!-- quickstart -->`` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- quickstart --> python block"
    return m.group(1)


def test_the_root_exports_the_front_door():
    for name in ("load_model", "resolve_model", "parse_plan", "quantize_model", "QuantizedModel",
                 "load_digits", "digits_inputs", "__version__"):
        assert hasattr(refquant, name), name
        assert name in refquant.__all__
    assert callable(refquant.QuantizedModel.run)
    from refquant.executor import quantize_model
    from refquant.registry import resolve_model
    assert refquant.quantize_model is quantize_model and refquant.resolve_model is resolve_model


def test_version_matches_the_distribution():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version = "([^"]+)"', text, re.M)   # [project] version (tomllib is 3.11+)
    assert m and refquant.__version__ == m.group(1)


def test_the_quickstart_is_five_lines_and_runs():
    code = quickstart_block()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) == 5, lines
    ns: dict = {}
    exec(compile(code, "README.md:quickstart", "exec"), ns)
    digits, logits = ns["digits"], ns["logits"]
    assert logits.shape == (len(digits.test.x), 10) and logits.dtype == np.float32
    # the README's results table: digits-cnn, 8 bits, per channel, minmax / static-minmax: 97.33 %
    accuracy = 100 * float(np.mean(logits.argmax(axis=1) == digits.test.y))
    assert accuracy > 95, accuracy


def test_the_quickstart_plan_matches_the_long_form():
    """The names compose as the docs say: a plan string or a parsed Plan, run on either backend."""
    digits = refquant.load_digits()
    graph = refquant.resolve_model("digits-mlp")
    x_cal = refquant.digits_inputs(graph, digits.calibration(16).x)
    x = refquant.digits_inputs(graph, digits.test.x[:8])
    text = "weights=minmax:8 activations=static-minmax:8"
    a = refquant.quantize_model(graph, text, calibration=x_cal).run(x)
    b = refquant.quantize_model(graph, refquant.parse_plan(text), calibration=x_cal).run(x, backend="numba")
    out = graph.outputs[0]
    np.testing.assert_array_equal(a.outputs[out], b.outputs[out])
