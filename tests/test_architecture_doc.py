"""``spec/architecture.md`` stays current: every registered strategy, QAT quantizer and backend,
every command and subcommand, every integer-operator table entry and every public front-door
name is in it."""

import argparse
from pathlib import Path

import pytest

import refquant
from refquant import registry
from refquant.cli import build_parser
from refquant.executor.integer_ops import FALLBACK, TABLE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def doc() -> str:
    return (ROOT / "spec" / "architecture.md").read_text(encoding="utf-8")


def test_every_registered_strategy_is_described(doc):
    names = set(registry.quantizers()) | set(registry.qat_quantizers()) | set(registry.backends())
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, missing


def _commands(parser: argparse.ArgumentParser, prefix: str = "refquant") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out += _commands(sub, f"{prefix} {name}")
    return out


def test_every_command_is_in_the_table(doc):
    commands = _commands(build_parser())
    assert "refquant run" in commands and "refquant golden verify" in commands
    missing = [c for c in commands if f"`{c}" not in doc]
    assert not missing, missing


def test_every_integer_operator_entry_is_in_the_table(doc):
    entries = {type(e).__name__ for e in TABLE.values()} | {type(FALLBACK).__name__}
    assert {e for e in entries if f"`{e}`" not in doc} == set()
    for op in TABLE:
        assert op in doc, op


def test_the_front_door_is_described(doc):
    section = doc.split("## The front door", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in refquant.__all__ if f"`{n}`" not in section]
    assert not missing, missing
