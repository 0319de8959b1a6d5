"""Argument types and the parser class of the ``refquant`` command line.

Every bad argument is one line ``refquant: error: argument --n: must be an integer >= 8, got
'0'`` and exit code 2 — argparse's own usage-and-exit is turned into that line by
:class:`Parser` (``main`` prints it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["Parser", "ArgumentError", "int_at_least", "int_in_range", "float_in", "existing_dir", "existing_file"]


class ArgumentError(ValueError):
    """A command-line argument that cannot be used (``main`` prints it as one line, exit 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`ArgumentError` instead of exiting."""

    def error(self, message: str):  # noqa: D102 — argparse's hook
        raise ArgumentError(f"{self.prog}: {message}")


def int_at_least(low: int):
    """An argparse type: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def int_in_range(low: int, high: int):
    """An argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {text!r}")
        return value

    parse.__name__ = f"integer in {low}..{high}"
    return parse


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = True):
    """An argparse type: a finite number in the interval ``low..high`` (ends open as given)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def existing_dir(what: str, arg: str, path: str) -> Path:
    """``Path(path)`` if it is a directory, else :class:`ArgumentError` naming the argument."""
    p = Path(path)
    if not p.exists():
        raise ArgumentError(f"{what}: {arg} {path}: no such directory")
    if not p.is_dir():
        raise ArgumentError(f"{what}: {arg} {path}: not a directory")
    return p


def existing_file(what: str, arg: str, path: str) -> Path:
    """``Path(path)`` if it exists, else :class:`ArgumentError` naming the argument."""
    p = Path(path)
    if not p.exists():
        raise ArgumentError(f"{what}: {arg} {path}: no such file or directory")
    return p
