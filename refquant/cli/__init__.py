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
from ..plugins import available_plugins, get_plugin_manager, record_hook_error, unknown_selected
from .args import ArgumentError, Parser
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
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = Parser(prog="refquant", parents=[common],
                                     description="A reference engine for quantized neural networks.")
    parser.add_argument("--version", action="version", version=f"refquant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli = _Commands(sub, common)

    add_registered_commands(cli)
    add_engine_commands(cli)
    add_imported_commands(cli)
    add_golden_commands(cli)
    add_train_commands(cli)
    _plugin_commands(cli)
    return parser


def _plugin_commands(cli) -> None:
    """Each plugin's ``register_commands``; one that fails is reported (``refquant plugins``,
    :func:`refquant.plugins.load_errors`) and skipped, the others' commands still exist."""
    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — a broken plugin must not end every command
            record_hook_error(pm.get_name(impl.plugin) or repr(impl.plugin), "register_commands", exc)


def _check_selection() -> None:
    unknown = unknown_selected()
    if unknown:
        raise ArgumentError(f"REFQUANT_PLUGINS names {', '.join(repr(n) for n in unknown)}, which "
                            f"{'is not an installed plugin' if len(unknown) == 1 else 'are not installed plugins'}; "
                            f"installed: {', '.join(available_plugins()) or '(none)'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        _check_selection()
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
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
    except Exception as exc:  # noqa: BLE001 — a bug: still one line, never a bare traceback
        if debug:
            raise
        print(f"refquant: error: internal error {type(exc).__name__}: {exc} (a bug in refquant or a "
              f"plugin; --debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
