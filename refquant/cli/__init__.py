"""The ``refquant`` command line.

Every command prints a table for people or, with ``--json``, JSON for machines
(:mod:`refquant.presentation`). An error is one clear line on stderr and exit code 2;
``--debug`` shows the traceback instead. Plugins add commands through the
``register_commands`` hook.

This package is the top layer: it imports the engine, and nothing in the engine or in a plugin
imports it. One module per command group:

* :mod:`refquant.cli.registered` — ``plugins``, ``models``, ``modes``;
* :mod:`refquant.cli.engine` — ``run``, ``compare``;
* :mod:`refquant.cli.imported` — ``inspect``, and ``run`` of a quantized ``.onnx`` model;
* :mod:`refquant.cli.golden` — ``golden export|run|verify|conform|refresh``;
* :mod:`refquant.cli.train` — ``train``.
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from ..plugins import get_plugin_manager
from .engine import add_engine_commands
from .golden import add_golden_commands
from .imported import add_imported_commands
from .registered import add_registered_commands
from .train import add_train_commands

__all__ = ["main", "build_parser"]


class _Commands:
    """What ``register_commands`` hooks receive: ``cli.command(name, help)`` → a parser."""

    def __init__(self, sub, parent):
        self._sub, self._parent = sub, parent

    def command(self, name: str, help: str) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, help=help, description=help, parents=[self._parent])


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = argparse.ArgumentParser(prog="refquant", parents=[common],
                                     description="A reference engine for quantized neural networks.")
    parser.add_argument("--version", action="version", version=f"refquant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli = _Commands(sub, common)

    add_registered_commands(cli)
    add_engine_commands(cli)
    add_imported_commands(cli)
    add_golden_commands(cli)
    add_train_commands(cli)
    get_plugin_manager().hook.register_commands(cli=cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("refquant: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, KeyError, OverflowError, ImportError) as exc:
        if debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"refquant: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
