"""The ``refquant`` command line.

Every command prints a table for people or, with ``--json``, JSON for machines. An error is
one clear line on stderr and exit code 2; ``--debug`` shows the traceback instead.
Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__

__all__ = ["main", "build_parser", "format_table"]


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Left-aligned plain-text table of ``rows`` (dicts) with a header line."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _emit(args, rows: list[dict], columns: list[str] | None = None) -> None:
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, columns))


def cmd_plugins(args) -> int:
    """List registered strategies, models and backends with their source plugin."""
    from . import plugins, registry

    rows = []
    for name, e in sorted(registry.quantizers().items()):
        rows.append({"name": name, "kind": e.obj.kind, "timing": getattr(e.obj, "timing", "-"),
                     "plugin": e.plugin, "source": f"{e.distribution} {e.version}".strip(),
                     "doc": e.doc})
    for name, e in sorted(registry.qat_quantizers().items()):
        rows.append({"name": name, "kind": f"qat-{e.obj.kind}", "timing": "training", "plugin": e.plugin,
                     "source": f"{e.distribution} {e.version}".strip(), "doc": e.doc})
    for name, e in sorted(registry.backends().items()):
        rows.append({"name": name, "kind": "backend", "timing": "-", "plugin": e.plugin,
                     "source": f"{e.distribution} {e.version}".strip(), "doc": e.doc})
    _emit(args, rows)
    for name, err in plugins.load_errors().items():
        print(f"refquant: plugin {name!r} failed to load: {err}", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    """List registered models."""
    from . import registry
    from .zoo import annotate_model_rows

    rows = annotate_model_rows([{"name": n, "plugin": e.plugin, "description": e.doc}
                                for n, e in sorted(registry.models().items())])
    _emit(args, rows)
    return 0


def cmd_modes(args) -> int:
    """Measure how each requant mode differs from exact rounding on random accumulators."""
    from .modes_report import modes_report

    rows = modes_report(args.n, args.seed)
    for r in rows:
        r["differ_%"] = round(100.0 * r["differ"] / r["outputs"], 3)
    _emit(args, rows, ["mode", "outputs", "differ", "differ_%", "max_lsb"])
    return 0


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

    cli.command("plugins", "list strategies and backends with their source plugin").set_defaults(handler=cmd_plugins)
    cli.command("models", "list registered models").set_defaults(handler=cmd_models)
    p = cli.command("modes", "measure each requant mode against exact rounding")
    p.add_argument("--n", type=int, default=20000, help="accumulators to test (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_modes)

    from .engine_cli import add_engine_commands

    add_engine_commands(cli)
    from .train.cli import add_train_commands

    add_train_commands(cli)
    from .plugins import get_plugin_manager

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
