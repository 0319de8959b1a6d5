"""Contracts are enforced where things register, and there is one place to look a backend up.

A strategy's ``kind``, an activation strategy's ``timing`` and the methods they require are
checked when the plugin registers it, and the error names the plugin. A kernel backend a plugin
registers serves the functional API (:mod:`refquant.functional`) and the executor alike.
"""

import pytest

from refquant import plugins, registry
from refquant.hookspecs import hookimpl
from refquant.strategies import REQUIRED_METHODS, TIMING_METHODS, TIMINGS


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch):
    monkeypatch.delenv("REFQUANT_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


class _Activations:
    """An activation strategy with every method; tests take some away."""

    kind, doc = "activations", "a test strategy"

    def __init__(self, name, timing, drop=()):
        self.name, self.timing = name, timing
        for m in drop:
            setattr(self, m, None)

    def make_observer(self, spec):
        raise NotImplementedError

    def qparams_for_float(self, y, spec, observed):
        raise NotImplementedError

    def qparams_after(self, acc, acc_scale, spec, *, channel_axis=1, fused_activation=None):
        raise NotImplementedError

    def prepare(self, context, spec):
        raise NotImplementedError

    def qparams_before(self, x_q, x_qparams, context, spec):
        raise NotImplementedError


class _Registers:
    def __init__(self, *strategies, qat=()):
        self.strategies, self.qat = strategies, qat

    @hookimpl
    def register_quantizers(self, register):
        for s in self.strategies:
            register(s)

    @hookimpl
    def register_qat_quantizers(self, register):
        for q in self.qat:
            register(q)


def test_an_unknown_timing_is_an_error_naming_the_plugin():
    plugins.register_plugin(_Registers(_Activations("later", "eventually")), "late-plugin")
    with pytest.raises(ValueError, match=r"plugin 'late-plugin': register_quantizers: strategy 'later': timing "
                                         r"must be one of offline, after, before, got 'eventually'"):
        registry.quantizers()


def test_a_missing_timing_is_an_error_naming_the_plugin():
    strategy = _Activations("untimed", None)
    del strategy.timing
    plugins.register_plugin(_Registers(strategy), "untimed-plugin")
    with pytest.raises(ValueError, match=r"plugin 'untimed-plugin': .*'untimed': timing must be one of .*got None"):
        registry.quantizers("activations")


@pytest.mark.parametrize("timing, method", [(t, m) for t in TIMINGS for m in TIMING_METHODS[t]]
                         + [("offline", m) for m in REQUIRED_METHODS["activations"]])
def test_a_method_the_timing_needs_is_required_at_registration(timing, method):
    plugins.register_plugin(_Registers(_Activations("partial", timing, drop=[method])), "partial-plugin")
    with pytest.raises(TypeError, match=rf"plugin 'partial-plugin': register_quantizers: strategy 'partial' "
                                        rf"lacks {method}\(\)"):
        registry.quantizers()


def test_every_timing_with_its_methods_registers():
    strategies = [_Activations(f"s-{t}", t, drop=[m for u in TIMINGS if u != t for m in TIMING_METHODS[u]])
                  for t in TIMINGS]
    plugins.register_plugin(_Registers(*strategies), "complete-plugin")
    found = registry.quantizers("activations")
    assert {found[f"s-{t}"].obj.timing for t in TIMINGS} == set(TIMINGS)
    assert all(found[f"s-{t}"].plugin == "complete-plugin" for t in TIMINGS)


def test_a_weight_strategy_without_quantize_weight_is_rejected():
    class Weights:
        name, kind, doc = "hollow", "weights", "no method"

    plugins.register_plugin(_Registers(Weights()), "hollow-plugin")
    with pytest.raises(TypeError, match=r"plugin 'hollow-plugin': .*'hollow' lacks quantize_weight\(\)"):
        registry.quantizers()


def test_an_unknown_kind_is_an_error_naming_the_plugin():
    class Biases:
        name, kind, doc = "bias", "biases", "not a kind"

    plugins.register_plugin(_Registers(Biases()), "bias-plugin")
    with pytest.raises(ValueError, match=r"plugin 'bias-plugin': .*kind must be 'weights' or 'activations', got 'biases'"):
        registry.quantizers()


def test_a_qat_quantizer_without_fake_quant_is_rejected():
    class QAT:
        name, kind, doc = "half", "weights", "no fake_quant"

        def init_state(self, x, spec):
            return {}

    plugins.register_plugin(_Registers(qat=[QAT()]), "qat-plugin")
    with pytest.raises(TypeError, match=r"plugin 'qat-plugin': register_qat_quantizers: QAT quantizer 'half' "
                                        r"lacks fake_quant\(\)"):
        registry.qat_quantizers()
