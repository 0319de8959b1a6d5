"""The examples of ``spec/plugins.md`` run as written.

A fenced ``python`` block preceded by ``<!-- example: NAME -->`` belongs to the example
``NAME``; the blocks of one example run in document order in one namespace (a later block
uses what an earlier one defined), each example in a fresh one. The examples check their own
results with ``assert``; a plugin they register is unregistered afterwards even if one fails.
"""

import re
from pathlib import Path

import pytest

from refquant import plugins

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "spec" / "plugins.md"


def examples() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for name, code in re.findall(r"<!-- example: ([\w-]+) -->\s*```python\n(.*?)```", text, re.S):
        out.setdefault(name, []).append(code)
    return out


def test_the_doc_has_its_examples():
    """An activation strategy with an observer and plan options; a QAT quantizer."""
    found = examples()
    assert set(found) >= {"activation", "qat"}
    activation = "\n".join(found["activation"])
    for needle in ("def make_observer", "def observe", "def qparams", "spec.option(", "parse_plan(",
                   "register_quantizers", "check_strategy"):
        assert needle in activation, needle
    qat = "\n".join(found["qat"])
    for needle in ("register_qat_quantizers", "def init_state", "def fake_quant", "Trainer("):
        assert needle in qat, needle


def test_the_doc_mentions_expected_failures():
    text = DOC.read_text(encoding="utf-8")
    assert "expected_failures" in text and "xfail(strict=True)" in text


@pytest.mark.parametrize("name", sorted(examples()))
def test_the_example_runs(name):
    ns: dict = {"__name__": f"plugins_md_{name}"}
    try:
        for i, code in enumerate(examples()[name]):
            exec(compile(code, f"spec/plugins.md:{name}[{i}]", "exec"), ns)
    finally:
        registered = {id(p) for p in plugins.get_plugin_manager().get_plugins()}
        for value in list(ns.values()):
            if id(value) in registered:
                plugins.unregister_plugin(value)
