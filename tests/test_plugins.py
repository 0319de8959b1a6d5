"""The plugin manager: entry points, selection, failures, hooks, and the example third-party plugin."""

import inspect
import pathlib
import re

import numpy as np
import pytest

from refquant import hookspecs, plugins, registry
from refquant.cli import main
from refquant.hookspecs import hookimpl

ROOT = pathlib.Path(__file__).resolve().parents[1]


#: every test starts from a fresh plugin manager with no REFQUANT_PLUGINS (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_plugin_manager")


def test_builtins_register_through_entry_points_with_their_source():
    q = registry.quantizers()
    for name, plugin in [("minmax", "static"), ("mse", "static"), ("static-minmax", "static"),
                         ("static-percentile", "static"), ("static-mse", "static"),
                         ("static-entropy", "static"), ("dynamic", "dynamic")]:
        assert q[name].plugin == plugin
        assert q[name].distribution == "refquant"


def test_third_party_plugin_is_listed_and_broken_one_is_named(capsys):
    q = registry.quantizers("weights")
    assert q["pow2"].distribution == "refquant-pow2"
    assert q["pow2"].version == "0.1.0"
    errors = plugins.load_errors()
    assert "broken" in errors and "fails on purpose" in errors["broken"]
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^pow2\s+weights\s+-\s+pow2\s+refquant-pow2 0\.1\.0", out, re.M)
    assert re.search(r"^dynamic\s+activations\s+after\s+dynamic\s+refquant", out, re.M)
    assert "plugin 'broken' failed to load" in err


def test_environment_variable_selects_plugins(monkeypatch):
    monkeypatch.setenv("REFQUANT_PLUGINS", "static")
    plugins.reset()
    assert "minmax" in registry.quantizers()
    assert "dynamic" not in registry.quantizers()
    assert "pow2" not in registry.quantizers()
    assert not plugins.load_errors()  # the broken plugin was not even imported
    monkeypatch.setenv("REFQUANT_PLUGINS", "")
    plugins.reset()
    assert registry.quantizers() == {}
    assert set(registry.backends()) == {"reference", "numba"}  # the engine's own, always


class _Dup:
    name, kind, doc = "minmax", "weights", "a second minmax"

    def quantize_weight(self, w, spec):
        raise NotImplementedError


class _DupPlugin:
    @hookimpl
    def register_quantizers(self, register):
        register(_Dup())


def test_duplicate_strategy_names_are_an_error_naming_both_plugins():
    plugins.get_plugin_manager().register(_DupPlugin(), name="dup")
    with pytest.raises(ValueError, match=r"'minmax' is registered by both plugin '(static|dup)' and plugin '(static|dup)'"):
        registry.quantizers()


def test_unknown_strategy_error_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown weights strategy 'nope'; registered: .*minmax"):
        registry.get_quantizer("nope", "weights")


def test_strategy_without_required_attributes_is_rejected():
    class Bad:
        @hookimpl
        def register_quantizers(self, register):
            register(object())

    plugins.get_plugin_manager().register(Bad(), name="bad")
    with pytest.raises(TypeError, match="has no 'name' attribute"):
        registry.quantizers()


def test_every_hook_is_documented_and_tested():
    """Each hookspec has a docstring, is listed in spec/architecture.md and used by a test."""
    specs = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "refquant_spec")]
    assert set(specs) >= {"register_quantizers", "register_models", "register_backends",
                          "register_commands", "layer_executed", "calibration_progress"}
    arch = (ROOT / "spec" / "architecture.md").read_text()
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"`{name}" in arch, f"{name} missing from spec/architecture.md"
        assert f"def {name}(" in tests, f"no test implements the hook {name}"


def test_register_commands_adds_a_cli_command(capsys):
    class Cmd:
        @hookimpl
        def register_commands(self, cli):
            p = cli.command("hello", "say hello")
            p.add_argument("who")
            p.set_defaults(handler=lambda args: print(f"hello {args.who}") or 0)

    plugins.get_plugin_manager().register(Cmd(), name="cmd")
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out.strip() == "hello world"


def test_register_backends_and_models_from_a_plugin():
    from refquant.graph import GraphBuilder
    from refquant.kernels import reference

    def tiny():
        b = GraphBuilder("tiny")
        x = b.input("x", ["N", 3])
        return b.build(b.relu(x))

    class P:
        @hookimpl
        def register_backends(self, register):
            register("reference-copy", reference)

        @hookimpl
        def register_models(self, register):
            register("tiny", tiny, "a one-node model")

    plugins.get_plugin_manager().register(P(), name="p")
    assert registry.get_backend("reference-copy") is reference
    assert registry.models()["tiny"].doc == "a one-node model"
    assert registry.get_model("tiny").name == "tiny"


def test_spec_example_is_the_example_plugin_file():
    spec = (ROOT / "spec" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", spec, re.S)
    source = (ROOT / "tests" / "example_plugin" / "refquant_pow2" / "__init__.py").read_text()
    assert source in blocks


def test_example_plugin_runs_end_to_end_and_passes_the_contract_kit():
    from refquant.executor import quantize_model
    from refquant.testing import check_strategy

    from tests_support import small_cnn

    strategy = registry.get_quantizer("pow2", "weights")
    report = check_strategy(strategy)
    assert report.ok and report.ran == 6, str(report)
    g, x = small_cnn()
    qm = quantize_model(g, "weights=pow2:8:per-channel activations=static-minmax:8", x)
    res = qm.run(x, keep=True)
    conv = next(r for r in res.records if r.op == "Conv")
    scales = conv.weight_qparams.scale
    assert np.all(np.log2(scales) == np.round(np.log2(scales)))  # powers of two, really used
    assert np.isfinite(res.outputs[g.outputs[0]]).all()
