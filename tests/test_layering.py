"""Layers point one way: a static check of every import in ``refquant/`` and ``plugins/``.

Every module is parsed with :mod:`ast` (nothing is imported) and every ``import`` statement
counts, at module level or inside a function. The rules (``spec/architecture.md``):

1. **Nothing below the command line imports it.** ``refquant.cli`` and its submodules are the
   top layer; no other module of ``refquant`` and no plugin imports them.
2. **Plugins use the public API only.** A module of ``plugins/refquant_*`` imports from
   ``refquant`` only the modules in :data:`PUBLIC_API`; besides those, its own package, the
   plugins it declares in :data:`PLUGIN_DEPENDENCIES`, and other distributions.
3. **No import cycles** among the modules of ``refquant`` and the plugins, whether the imports
   are at module level or inside functions.
4. **Imports sit at module level**, except imports of the optional dependencies
   (:data:`OPTIONAL_DEPENDENCIES`: onnx, onnxruntime, matplotlib, ml_dtypes, hypothesis, ...),
   which a function imports when it needs them, so that refquant imports without them.

An import of a ``refquant`` module that does not exist is reported too (a stale path after a
move). The checks are functions of a source tree; the last tests run them on small synthetic
trees to show that each rule catches what it is for.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the ``refquant`` modules a plugin may import: the packages' front doors plus the reference
#: kernels (the backend signatures every kernel backend follows)
PUBLIC_API = frozenset({
    "refquant",                    # the front door (quantize_model, parse_plan, ...), __version__
    "refquant.hookspecs",          # hookimpl and the hooks' documentation
    "refquant.plugins",            # register_plugin / unregister_plugin
    "refquant.registry",           # strategies, backends, models by name; resolve_model
    "refquant.strategies",         # the strategy protocols, LayerSpec, QuantizedWeight, ...
    "refquant.numerics",
    "refquant.kernels",
    "refquant.kernels.reference",
    "refquant.graph",
    "refquant.ops",
    "refquant.plan",
    "refquant.executor",
    "refquant.functional",
    "refquant.data",
    "refquant.metrics",
    "refquant.presentation",
    "refquant.train",
    "refquant.compare",
    "refquant.golden",
    "refquant.onnx_io",
    "refquant.testing",
})

#: plugin packages a plugin may import (each entry says why)
PLUGIN_DEPENDENCIES = {
    # StatQAT's error model integrates the Gaussian and Laplace densities Lloyd-Max defines
    "refquant_statqat": frozenset({"refquant_lloydmax"}),
}

#: top-level packages a function may import locally: the optional extras and test tools
OPTIONAL_DEPENDENCIES = frozenset({"onnx", "onnxruntime", "matplotlib", "ml_dtypes", "hypothesis", "pytest",
                                   "threadpoolctl", "PIL", "skimage", "sklearn", "safetensors", "tokenizers",
                                   "dask", "distributed"})

CLI = "refquant.cli"


@dataclass(frozen=True)
class Import:
    module: str    # the importing module
    target: str    # the module imported (a submodule when ``from P import M`` names one)
    line: int
    local: bool    # inside a function


def find_modules(root: Path) -> dict[str, Path]:
    """Dotted name → file for ``root/refquant/**`` and ``root/plugins/refquant_*/**``."""
    out = {}
    tops = [(root, root / "refquant")]
    tops += [(root / "plugins", p) for p in sorted((root / "plugins").glob("refquant_*")) if p.is_dir()]
    for base, top in tops:
        for f in sorted(top.rglob("*.py")):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


@lru_cache(maxsize=None)
def bound_names(path: Path) -> frozenset[str]:
    """Names a module binds at its top level (imports, functions, classes, assignments)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(names)


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import statement of the module ``name``, module-level and function-local.

    ``from P import n`` imports the submodule ``P.n`` when there is one and ``P`` does not bind
    ``n`` itself (``from refquant.numerics import quantize`` is the function the package
    exports, not the module ``refquant.numerics.quantize``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(name, a.name, child.lineno, inside) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module
                for a in child.names:
                    sub = f"{source}.{a.name}"
                    is_sub = sub in modules and not (source in modules and a.name in bound_names(modules[source]))
                    found.append(Import(name, sub if is_sub else source, child.lineno, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def _top(target: str) -> str:
    return target.split(".")[0]


def _ours(target: str, modules) -> bool:
    return _top(target) == "refquant" or _top(target) in {m.split(".")[0] for m in modules}


def _is_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def check_tree(root: Path) -> list[str]:
    """Every violation of the four rules in the tree at ``root``, one line each."""
    modules = find_modules(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        plugin = None if _top(name) == "refquant" else _top(name)
        for imp in module_imports(name, path, modules):
            where = f"{path.relative_to(root)}:{imp.line}"
            if imp.local and _top(imp.target) not in OPTIONAL_DEPENDENCIES:
                problems.append(f"{where}: function-local import of {imp.target} (only optional dependencies "
                                f"{sorted(OPTIONAL_DEPENDENCIES)} may be imported inside a function)")
            if not _ours(imp.target, modules):
                continue
            if imp.target not in modules:
                problems.append(f"{where}: imports {imp.target}, which does not exist")
                continue
            if imp.target != name:
                graph[name].add(imp.target)
            if _is_cli(imp.target) and not _is_cli(name):
                problems.append(f"{where}: {name} imports the command line ({imp.target}); "
                                f"nothing below the CLI may")
            if plugin is not None:
                top = _top(imp.target)
                if top == "refquant" and imp.target not in PUBLIC_API:
                    problems.append(f"{where}: plugin module {name} imports {imp.target}, which is not in the "
                                    f"public API")
                elif top not in ("refquant", plugin) and top not in PLUGIN_DEPENDENCIES.get(plugin, ()):
                    problems.append(f"{where}: plugin module {name} imports the plugin {top}, which it does not "
                                    f"declare in PLUGIN_DEPENDENCIES")
    for component in find_cycles(graph):
        edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
        problems.append(f"import cycle of {len(component)} modules: {', '.join(component)} (edges: "
                        f"{'; '.join(edges)})")
    return problems


# ------------------------------------------------------------------------------ the real tree

def test_the_source_tree_keeps_its_layers():
    problems = check_tree(ROOT)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_the_whole_tree():
    """The walk finds the engine, its command line and every built-in plugin, and the imports
    inside functions (the optional dependencies) are counted."""
    modules = find_modules(ROOT)
    assert {"refquant.cli", "refquant.cli.engine", "refquant.registry", "refquant.presentation",
            "refquant.metrics", "refquant_static", "refquant_lloydmax.report"} <= set(modules)
    local = [imp for m, p in modules.items() for imp in module_imports(m, p, modules) if imp.local]
    assert local and {_top(i.target) for i in local} <= OPTIONAL_DEPENDENCIES
    assert any(i.target == "ml_dtypes" for i in local)


def test_public_api_modules_exist():
    modules = find_modules(ROOT)
    assert PUBLIC_API <= set(modules), sorted(PUBLIC_API - set(modules))
    assert not any(_is_cli(m) for m in PUBLIC_API)


# ------------------------------------------------------------------- the checker catches ...

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    base = {
        "refquant/__init__.py": "",
        "refquant/numerics.py": "X = 1\n",
        "refquant/executor/__init__.py": "from .quantized import run\n",
        "refquant/executor/quantized.py": "from ..numerics import X\n\ndef run():\n    return X\n",
        "refquant/cli/__init__.py": "from ..executor import run\n\ndef main():\n    return run()\n",
        "plugins/refquant_good/__init__.py": "import numpy\nfrom refquant.executor import run\nfrom . import helper\n",
        "plugins/refquant_good/helper.py": "def f():\n    import matplotlib\n    return matplotlib\n",
    }
    base.update(files)
    for rel, text in base.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_a_clean_synthetic_tree_passes(tmp_path):
    assert check_tree(_tree(tmp_path, {})) == []


@pytest.mark.parametrize("files, expected", [
    # an upward import: a module below the command line imports it (here inside a function)
    ({"refquant/numerics.py": "X = 1\n\ndef table():\n    from .cli import main\n    return main\n"},
     ["refquant/numerics.py:4: function-local import of refquant.cli",
      "refquant/numerics.py:4: refquant.numerics imports the command line (refquant.cli)",
      "import cycle of 4 modules"]),
    # the same upward import at module level, from a plugin
    ({"plugins/refquant_good/helper.py": "from refquant.cli import main\n"},
     ["plugins/refquant_good/helper.py:1: refquant_good.helper imports the command line (refquant.cli)",
      "plugin module refquant_good.helper imports refquant.cli, which is not in the public API"]),
    # a plugin reaching into an engine module that is not public
    ({"plugins/refquant_good/helper.py": "from refquant.executor.quantized import run\n"},
     ["plugin module refquant_good.helper imports refquant.executor.quantized, which is not in the public API"]),
    # a plugin importing another plugin it does not declare
    ({"plugins/refquant_other/__init__.py": "from refquant_good import helper\n"},
     ["plugin module refquant_other imports the plugin refquant_good"]),
    # a two-module cycle, one side hidden in a function
    ({"refquant/numerics.py": "X = 1\n\ndef f():\n    from .executor import quantized\n    return quantized\n"},
     ["function-local import of refquant.executor.quantized",
      "import cycle of 2 modules: refquant.executor.quantized, refquant.numerics"]),
    # a function-local import of a core dependency, no cycle
    ({"refquant/numerics.py": "def f():\n    import json\n    return json\n"},
     ["refquant/numerics.py:2: function-local import of json"]),
    # a stale path after a move
    ({"refquant/numerics.py": "from .engine_cli import resolve_model\n"},
     ["refquant/numerics.py:1: imports refquant.engine_cli, which does not exist"]),
])
def test_the_checker_reports(tmp_path, files, expected):
    problems = check_tree(_tree(tmp_path, files))
    for text in expected:
        assert any(text in p for p in problems), f"{text!r} not in {problems}"


def test_cycles_are_found_with_their_members():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
