"""Contracts are enforced where things register, and there is one place to look a backend up.

A strategy's ``kind``, an activation strategy's ``timing`` and the methods they require are
checked when the plugin registers it, and the error names the plugin. A kernel backend a plugin
registers serves the functional API (:mod:`refquant.functional`) and the executor alike.
"""

import types

import numpy as np
import pytest

from refquant import functional as F
from refquant import plugins, registry
from refquant.executor import quantize_model
from refquant.hookspecs import hookimpl
from refquant.kernels import reference
from refquant.strategies import REQUIRED_METHODS, TIMING_METHODS, TIMINGS

from tests_support import small_cnn


#: every test starts from a fresh plugin manager with no REFQUANT_PLUGINS (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_plugin_manager")


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


# ------------------------------------------------------------------- one registry of backends

def _counting_backend(calls: list):
    """A backend module that runs the reference kernels and records each call."""
    module = types.ModuleType("counting_backend", "the reference kernels, counted")
    for name in ("matmul_int32", "matmul_requant", "conv2d_int32", "conv2d_requant"):
        def kernel(*args, _name=name, **kwargs):
            calls.append(_name)
            return getattr(reference, _name)(*args, **kwargs)
        setattr(module, name, kernel)
    module.requantize = reference.requantize
    return module


class _Backend:
    def __init__(self, module):
        self.module = module

    @hookimpl
    def register_backends(self, register):
        register("counting", self.module)


def test_a_plugin_backend_serves_the_functional_api_and_the_executor():
    calls = []
    plugin = _Backend(_counting_backend(calls))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    b = rng.integers(-128, 128, (5, 4), dtype=np.int8)
    x = rng.integers(0, 256, (1, 2, 5, 5), dtype=np.uint8)
    w = rng.integers(-128, 128, (3, 2, 3, 3), dtype=np.int8)
    qlm = (a, np.float32(0.02), np.uint8(7), b, np.float32(0.01), np.int8(0), np.float32(0.05), np.uint8(3))
    qlc = (x, np.float32(0.02), np.uint8(5), w, np.float32(0.01), np.int8(0), np.float32(0.1), np.uint8(2))

    with pytest.raises(ValueError, match="unknown kernel backend 'counting'"):
        F.qlinear_matmul(*qlm, backend="counting")
    with pytest.raises(ValueError, match="unknown backend 'counting'"):
        F.quantize_linear(np.zeros(3, np.float32), np.float32(1.0), backend="counting")

    plugins.register_plugin(plugin, "counting-plugin")
    try:
        assert np.array_equal(F.qlinear_matmul(*qlm, backend="counting"), F.qlinear_matmul(*qlm))
        assert np.array_equal(F.qlinear_conv(*qlc, pads=[1, 1, 1, 1], backend="counting"),
                              F.qlinear_conv(*qlc, pads=[1, 1, 1, 1]))
        assert np.array_equal(F.matmul_integer(a, b, backend="counting"), F.matmul_integer(a, b))
        assert np.array_equal(F.conv_integer(x, w, backend="counting"), F.conv_integer(x, w))
        assert calls == ["matmul_requant", "conv2d_requant", "matmul_int32", "conv2d_int32"]
        y = F.quantize_linear(np.array([0.5, -1.0], np.float32), np.float32(0.5), np.int8(0), backend="counting")
        assert y.tolist() == [1, -2]

        calls.clear()
        g, xs = small_cnn()
        qm = quantize_model(g, "weights=minmax:8 activations=static-minmax:8", xs)
        counted = qm.run(xs, backend="counting")
        assert "conv2d_requant" in calls
        for name, out in qm.run(xs, backend="reference").outputs.items():
            assert np.array_equal(counted.outputs[name], out)
    finally:
        plugins.unregister_plugin(plugin)
