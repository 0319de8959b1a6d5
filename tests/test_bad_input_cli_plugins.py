"""Bad-input campaign over the command line and the plugin seams (issue #15, items 3 and 5).

* **CLI**: every command × bad arguments (missing files, wrong types, unknown names,
  negative/zero counts, corrupted inputs) → exit code 2 and exactly one line
  ``refquant: error: …`` on stderr naming the argument — never a traceback, never an
  "internal error". A fixed table of cases plus seeded random ones (``REFQUANT_CAMPAIGN=large``
  draws many more).
* **Plugins**: a plugin that calls ``sys.exit`` or fails at import, a hook that raises or has
  the wrong signature, a strategy that raises or returns something that breaks the contract
  (``None``, NaN scales, values off the grid, a transposed weight, wrong granularity) → an
  error naming the plugin and its package (and, for strategies, the layer); the other
  plugins keep working.

What each class of input gets is recorded in ``spec/errors-cli-plugins.md``.
"""

from __future__ import annotations

import os
import sys
import textwrap
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from refquant import plugins, registry
from refquant.cli import main
from refquant.executor import quantize_model
from refquant.hookspecs import hookimpl
from refquant.numerics import QParams, qparams_from_range
from refquant.strategies import QuantizedWeight
from tests_support import small_cnn, small_mlp

LARGE = os.environ.get("REFQUANT_CAMPAIGN") == "large"
GOLDEN = "spec/golden/digits-cnn/minmax+static-minmax"


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def _fails_cleanly(capsys, argv, *needles):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and lines[0].startswith("refquant: error: "), (argv, err)
    assert "internal error" not in err and "Traceback" not in err, (argv, err)
    for needle in needles:
        assert needle in lines[0], (argv, needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.json").write_text("{not json", encoding="utf-8")
    (d / "empty.json").write_text("", encoding="utf-8")
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    (d / "notgolden").mkdir()
    (d / "afile.txt").write_text("x", encoding="utf-8")
    (d / "nokernels.py").write_text("X = 1\n", encoding="utf-8")
    return d


def _cases(d):
    m, o = str(d / "missing"), str(d / "out.npz")
    return [
        (["nosuchcommand"], "nosuchcommand"),
        (["--bogus"], "--bogus"),
        (["modes", "--n", "0"], "--n"),
        (["modes", "--n", "-5"], "--n"),
        (["modes", "--n", "3"], "--n"),
        (["modes", "--n", "many"], "--n"),
        (["modes", "--seed", "-1"], "--seed"),
        (["run", "no-such-model"], "no-such-model"),
        (["run", m + ".json"], "missing"),
        (["run", str(d / "corrupt.json")], "corrupt.json"),
        (["run", str(d / "empty.json")], "empty.json"),
        (["run", "digits-mlp", "--weights", "nosuch:8"], "nosuch"),
        (["run", "digits-mlp", "--weights", "minmax:8:bogus=1"], "'bogus'"),
        (["run", "digits-mlp", "--activations", "static-percentile:8:percentil=99"], "'percentil'"),
        (["run", "digits-mlp", "--weights", "minmax:9"], "bits"),
        (["run", "digits-mlp", "--weights", "minmax:8:sideways"], "sideways"),
        (["run", "digits-mlp", "--plan", "garbage"], "garbage"),
        (["run", "digits-mlp", "--calibration", "7"], "--calibration"),
        (["run", "digits-mlp", "--requant", "nope"], "--requant"),
        (["run", "digits-mlp", "--dataset", "nosuch"], "nosuch"),
        (["compare", "--bits", "0"], "--bits"),
        (["compare", "--bits", "9"], "--bits"),
        (["compare", "--activation-bits", "x"], "--activation-bits"),
        (["compare", "--calibration", "-1"], "--calibration"),
        (["compare", "--weights", "nosuch", "--quiet"], "'nosuch'"),
        (["compare", "no-such-model", "--quiet"], "no-such-model"),
        (["golden"], None),
        (["golden", "nosuch"], "nosuch"),
        (["golden", "run", m, "--backend", "reference", "-o", o], "DIR"),
        (["golden", "run", str(d / "afile.txt"), "--backend", "reference", "-o", o], "not a directory"),
        (["golden", "run", GOLDEN, "-o", o], "--backend"),
        (["golden", "run", GOLDEN, "--backend", "os", "-o", o], "'os'"),
        (["golden", "run", GOLDEN, "--backend", "no_such_module_xyz", "-o", o], "no_such_module_xyz"),
        (["golden", "run", GOLDEN, "--backend", m + ".py", "-o", o], "missing.py"),
        (["golden", "run", GOLDEN, "--backend", str(d / "nokernels.py"), "-o", o], "nokernels"),
        (["golden", "run", GOLDEN, "--backend", "reference"], "-o"),
        (["golden", "verify", m, "--outputs", o], "DIR"),
        (["golden", "verify", GOLDEN, "--outputs", m + ".npz"], "--outputs"),
        (["golden", "verify", GOLDEN, "--outputs", str(d / "corrupt.npz")], "corrupt.npz"),
        (["golden", "verify", GOLDEN, "--outputs", o, "--policy", "nope"], "--policy"),
        (["golden", "verify", str(d / "notgolden"), "--outputs", str(d / "corrupt.npz")], "notgolden"),
        (["golden", "export", "no-such-model", str(d / "g")], "no-such-model"),
        (["golden", "export", "digits-mlp", str(d / "g"), "--images", "0"], "--images"),
        (["golden", "export", "digits-mlp", str(d / "g"), "--images", "-3"], "--images"),
        (["golden", "export", "digits-mlp", str(d / "g"), "--images", "100000"], "--images"),
        (["golden", "export", "digits-mlp", str(d / "g"), "--seed", "-1"], "--seed"),
        (["golden", "conform"], "--backend"),
        (["golden", "conform", "--backend", "reference", "--command", "x {in} {out}"], "--command"),
        (["golden", "conform", "--backend", "reference", "--examples", "0"], "--examples"),
        (["golden", "conform", "--backend", "reference", "--ops", "nope"], "--ops"),
        (["golden", "conform", "--backend", "os"], "'os'"),
        (["train", "nosuch"], "nosuch"),
        (["train", "digits-mlp", "--epochs", "0"], "--epochs"),
        (["train", "digits-mlp", "--batch-size", "1"], "--batch-size"),
        (["train", "digits-mlp", "--lr", "-1"], "--lr"),
        (["train", "digits-mlp", "--lr", "inf"], "--lr"),
        (["train", "digits-mlp", "--weight-decay", "1"], "--weight-decay"),
        (["train", "digits-mlp", "--lr", "fast"], "--lr"),
        (["train", "digits-mlp", "--stop-at", "0"], "--stop-at"),
        (["train", "digits-mlp", "--resume", m + ".npz"], "--resume"),
        (["train", "digits-mlp", "--optimizer", "nope"], "--optimizer"),
    ]


def test_cli_fixed_cases(capsys, files):
    for argv, needle in _cases(files):
        if argv == ["golden"]:  # the group alone prints its help and exits 2
            assert main(argv) == 2
            capsys.readouterr()
            continue
        _fails_cleanly(capsys, argv, needle)


def test_cli_unknown_plugin_in_environment(capsys, monkeypatch):
    monkeypatch.setenv("REFQUANT_PLUGINS", "statc")
    plugins.reset()
    line = _fails_cleanly(capsys, ["compare"], "'statc'", "REFQUANT_PLUGINS")
    assert "static" in line  # the installed ones are listed
    monkeypatch.setenv("REFQUANT_PLUGINS", "static, statc")
    plugins.reset()
    _fails_cleanly(capsys, ["plugins"], "'statc'")


def test_cli_seeded_random_arguments(capsys):
    """Random bad values in every numeric/named argument of the cheap-to-reject commands."""
    rng = np.random.default_rng(15)
    bad_ints = ["0", "-1", "-999999", "1.5", "", "x", "nan", "inf", "0x10", "1e3"]
    slots = [
        (["modes", "--n"], []), (["modes", "--seed"], []),
        (["compare", "--bits"], []), (["compare", "--activation-bits"], []),
        (["golden", "export", "digits-mlp", "/nonexistent/g", "--images"], []),
        (["train", "digits-mlp", "--epochs"], []), (["train", "digits-mlp", "--batch-size"], []),
        (["golden", "conform", "--backend", "reference", "--examples"], []),
    ]
    names = [(["run"], "model"), (["run", "digits-mlp", "--weights"], "w"),
             (["run", "digits-mlp", "--activations"], "a"), (["train"], "t"), (["golden", "export"], "m")]
    n = 400 if LARGE else 40
    for _ in range(n):
        if rng.random() < 0.6:
            prefix, _unused = slots[rng.integers(len(slots))]
            value = bad_ints[rng.integers(len(bad_ints))]
            if prefix[-1] == "--seed" and value == "0":
                continue  # a valid seed
            if prefix[-1] in ("--bits", "--activation-bits") and value in ("1e3",):
                pass
            argv = prefix + [value]
            _fails_cleanly(capsys, argv, prefix[-1])
        else:
            prefix, kind = names[rng.integers(len(names))]
            word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz-"), size=int(rng.integers(3, 12))))
            word = "zz" + word
            argv = prefix + [word] + (["/nonexistent/g"] if kind == "m" else [])
            _fails_cleanly(capsys, argv, word)


# -------------------------------------------------------------------------------------- plugins

def _entry_point_module(tmp_path, monkeypatch, name: str, source: str):
    """Make ``name`` an importable module and a ``refquant`` entry point (no distribution)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    real = plugins.entry_points

    def fake(group=None, **kw):
        eps = list(real(group=group, **kw))
        if group == plugins.ENTRY_POINT_GROUP:
            eps.append(EntryPoint(name=name, value=name, group=group))
        return eps

    monkeypatch.setattr(plugins, "entry_points", fake)
    plugins.reset()


@pytest.mark.parametrize("body, text", [
    ("import sys\nsys.exit(3)\n", "sys.exit"),
    ("import sys\nsys.exit()\n", "sys.exit"),
    ("raise RuntimeError('no GPU here')\n", "no GPU here"),
    ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
    ("from refquant.hookspecs import hookimpl\n@hookimpl\ndef register_quantizers(register, extra):\n    pass\n",
     "register_quantizers"),
])
def test_plugin_that_fails_at_load_is_named_and_skipped(tmp_path, monkeypatch, capsys, body, text):
    _entry_point_module(tmp_path, monkeypatch, "rq_badmod", body)
    errors = plugins.load_errors()
    assert "rq_badmod" in errors and text in errors["rq_badmod"] and "package" in errors["rq_badmod"]
    assert "minmax" in registry.quantizers()  # the others still load
    with pytest.raises(ValueError, match=r"unknown weights strategy 'nosuch'.*plugins that failed: .*rq_badmod"):
        registry.get_quantizer("nosuch", "weights")  # a missing name points at the broken plugin
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert "plugin 'rq_badmod'" in err and text in err
    assert "minmax" in out


def test_register_hook_that_raises_is_reported_and_skipped(tmp_path, monkeypatch, capsys):
    _entry_point_module(tmp_path, monkeypatch, "rq_badhook", """
        from refquant.hookspecs import hookimpl
        @hookimpl
        def register_quantizers(register):
            raise ZeroDivisionError("half-registered")
        @hookimpl
        def register_models(register):
            import sys; sys.exit(1)
        @hookimpl
        def register_commands(cli):
            raise KeyError("no commands today")
        """)
    assert "minmax" in registry.quantizers()
    assert "digits-cnn" in registry.models()
    errors = plugins.load_errors()
    assert "half-registered" in errors["rq_badhook"] and "register_quantizers" in errors["rq_badhook"]
    assert main(["models"]) == 0  # register_commands failed, the command line still works
    out, err = capsys.readouterr()
    assert "digits-cnn" in out


def test_hook_with_wrong_signature_at_run_time_names_the_plugin():
    class Wrong:
        @hookimpl
        def register_quantizers(self, register, surplus):
            pass

    with pytest.raises(plugins.PluginError, match=r"plugin 'wrong-sig' .*surplus"):
        plugins.register_plugin(Wrong(), "wrong-sig")


def test_event_hook_that_raises_names_the_plugin():
    class Noisy:
        @hookimpl
        def layer_executed(self, record):
            raise RuntimeError("tracer broke")

    graph, x = small_mlp()
    qm = quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x)
    p = Noisy()
    plugins.register_plugin(p, "noisy")
    try:
        with pytest.raises(plugins.PluginError, match=r"plugin 'noisy' .*layer_executed.*tracer broke"):
            qm.run(x)
    finally:
        plugins.unregister_plugin(p)
    qm.run(x)  # without it, fine


class _Wrapped:
    """A strategy that delegates to a registered one, then breaks its result with ``spoil``."""

    def __init__(self, base, name, spoil, method):
        self.base, self.name, self.spoil, self.method = base, name, spoil, method
        self.kind, self.doc = base.kind, "broken on purpose"
        if base.kind == "activations":
            self.timing = base.timing
        self.options = getattr(base, "options", ())

    def __getattr__(self, attr):
        value = getattr(self.base, attr)
        if attr != self.method or not callable(value):
            return value

        def spoiled(*a, **k):
            return self.spoil(value(*a, **k), *a)
        return spoiled


def _nan_qparams(qp, *a):
    return QParams.from_checked(np.full(np.shape(qp.scale), np.nan, np.float32), qp.zero_point, qp.fmt,
                                axis=qp.axis, name=qp.name)


def _raise(*a):
    raise RuntimeError("strategy exploded")


def _exit(*a):
    sys.exit(4)


def _off_grid(qw, *a):
    return QuantizedWeight(np.full_like(qw.values, 0) + np.int8(127), qw.qparams.__class__(
        qw.qparams.scale, qw.qparams.zero_point, "int4", axis=qw.qparams.axis), bits_per_weight=4)


def _transposed(qw, *a):
    return QuantizedWeight(np.ascontiguousarray(np.swapaxes(qw.values, 0, -1)), qw.qparams)


def _too_many_scales(qp, *a):
    return qparams_from_range(np.full(7, -1.0), np.full(7, 1.0), qp.fmt, axis=1, name="x")


BROKEN = [
    ("minmax", "weights", "quantize_weight", lambda r, *a: None, "must return a QuantizedWeight"),
    ("minmax", "weights", "quantize_weight", _raise, "raised RuntimeError"),
    ("minmax", "weights", "quantize_weight", _exit, "SystemExit"),
    ("minmax", "weights", "quantize_weight", lambda qw, *a: QuantizedWeight(qw.values, _nan_qparams(qw.qparams)),
     "not finite and positive"),
    ("minmax", "weights", "quantize_weight", _off_grid, "off the grid"),
    ("minmax", "weights", "quantize_weight", _transposed, "transposed"),
    ("minmax", "weights", "quantize_weight", lambda qw, *a: QuantizedWeight(qw.values.astype(np.float32), qw.qparams),
     "expected integers"),
    ("static-minmax", "activations", "qparams_for_float", lambda r, *a: None, "must return QParams"),
    ("static-minmax", "activations", "qparams_for_float", _nan_qparams, "not finite and positive"),
    ("static-minmax", "activations", "make_observer", _raise, "raised RuntimeError"),
    ("dynamic", "activations", "qparams_after", _nan_qparams, "not finite and positive"),
    ("dynamic", "activations", "qparams_after", _raise, "raised RuntimeError"),
    ("dynamic", "activations", "qparams_after", lambda r, *a: "0.1", "must return QParams"),
    ("dynamic", "activations", "qparams_after", _too_many_scales, "scales for"),
    ("probabilistic", "activations", "qparams_before", lambda r, *a: None, "must return QParams"),
    ("probabilistic", "activations", "qparams_before", _nan_qparams, "not finite and positive"),
    ("probabilistic", "activations", "prepare", _raise, "raised RuntimeError"),
]


@pytest.mark.parametrize("base, kind, method, spoil, text", BROKEN,
                         ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BROKEN)])
def test_broken_strategy_is_named_with_layer_and_plugin(base, kind, method, spoil, text):
    strat = _Wrapped(registry.get_quantizer(base, kind), "broken-" + base, spoil, method)

    class Plugin:
        @hookimpl
        def register_quantizers(self, register):
            register(strat)

    p = Plugin()
    plugins.register_plugin(p, "rq-broken")
    graph, x = small_cnn()
    wname = strat.name if kind == "weights" else "minmax"
    aname = strat.name if kind == "activations" else "static-minmax"
    try:
        with pytest.raises(ValueError) as info:
            qm = quantize_model(graph, f"weights={wname}:8:per-channel activations={aname}:8", x)
            qm.run(x)
    finally:
        plugins.unregister_plugin(p)
    msg = str(info.value)
    assert text in msg, msg
    assert f"strategy {strat.name!r}" in msg and "plugin 'rq-broken'" in msg and "package" in msg, msg
    assert "layer '" in msg, msg
    # the other strategies still work
    quantize_model(graph, "weights=minmax:8 activations=static-minmax:8", x).run(x)


def test_strategy_value_errors_keep_their_type_and_gain_provenance():
    graph, x = small_cnn()
    with pytest.raises(ValueError, match=r"layer 'x': strategy 'static-mse' \(plugin 'static'.*option 'grid'"):
        quantize_model(graph, "weights=minmax:8 activations=static-mse:8:grid=0", x)


@pytest.mark.parametrize("entry, bad", [
    ("minmax:8:bogus=1", "'bogus'"),
    ("static-percentile:8:percentil=99", "'percentil'"),
    ("mse:8:gird=10", "'gird'"),
])
def test_misspelled_plan_option_is_an_error_listing_the_valid_ones(entry, bad):
    graph, x = small_cnn()
    kind = "weights" if entry.startswith(("minmax", "mse")) else "activations"
    other = "activations=static-minmax:8" if kind == "weights" else "weights=minmax:8"
    with pytest.raises(ValueError, match="unknown option") as info:
        quantize_model(graph, f"{kind}={entry} {other}", x)
    msg = str(info.value)
    assert bad in msg and "valid options" in msg
    if "percentil" in bad:
        assert "percentile" in msg.split("valid options")[1]


def test_seeded_random_broken_strategies():
    """Random corruption of qparams (scales: NaN, inf, 0, negative; zero points off the grid)."""
    rng = np.random.default_rng(3)
    graph, x = small_mlp(n=8)
    n = 60 if LARGE else 8
    bad_scales = [np.nan, np.inf, -np.inf, 0.0, -1.0, -1e-30]
    for _ in range(n):
        bad = bad_scales[rng.integers(len(bad_scales))]
        zero = bool(rng.integers(2))

        def spoil(qp, *a, bad=bad, zero=zero):
            if zero:
                return QParams.from_checked(qp.scale, np.asarray(qp.fmt.qmax + 5, np.int32) + 0 * qp.zero_point,
                                            qp.fmt, axis=qp.axis, name=qp.name)
            return QParams.from_checked(np.full(np.shape(qp.scale), bad, np.float32), qp.zero_point, qp.fmt,
                                        axis=qp.axis, name=qp.name)

        strat = _Wrapped(registry.get_quantizer("dynamic", "activations"), "rand-dynamic", spoil, "qparams_after")

        class Plugin:
            @hookimpl
            def register_quantizers(self, register):
                register(strat)

        p = Plugin()
        plugins.register_plugin(p, "rq-random")
        try:
            qm = quantize_model(graph, "weights=minmax:8 activations=rand-dynamic:8", x)
            with pytest.raises(ValueError, match=r"layer 'fc1': strategy 'rand-dynamic' \(plugin 'rq-random'"):
                qm.run(x)
        finally:
            plugins.unregister_plugin(p)
