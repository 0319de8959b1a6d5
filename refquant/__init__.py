"""refquant — a reference inference engine for quantized neural networks.

The front door: the names a user starts from. Five lines quantize a shipped model and run it
(the README's quick start; ``tests/test_quickstart.py`` runs that copy)::

    import refquant
    digits = refquant.load_digits()                                   # the data set (spec/data.md)
    graph = refquant.resolve_model("digits-cnn")                      # a registered name or a .json file
    plan = refquant.parse_plan("weights=minmax:8:per-channel activations=static-minmax:8")
    model = refquant.quantize_model(graph, plan, calibration=digits.calibration(32).x)
    logits = model.run(digits.test.x).outputs[graph.outputs[0]]       # dequantized float32

``load_model(path)`` reads a model file; ``resolve_model`` also knows the registered models
(``refquant models``); ``digits_inputs(graph, x)`` flattens images for an MLP. A plan says, per
layer, which strategy quantizes the weights and the activations, with how many bits
(``spec/architecture.md``); :meth:`QuantizedModel.run` uses the ``reference`` kernels unless
``run(x, backend="numba")``, and ``keep=True`` keeps every layer's integers in the records.

Every number refquant produces is defined in ``spec/`` and reproducible. The integer
arithmetic lives in :mod:`refquant.numerics` and :mod:`refquant.kernels`; the ONNX-named
operator functions in :mod:`refquant.functional`. ``spec/reading-order.md`` is the path
through the code, from ``quantize_model`` to one integer layer to one strategy.
"""

from ._version import __version__
from .data import digits_inputs, load_digits
from .executor import QuantizedModel, RunResult, quantize_model
from .graph import Graph, load_model, save_model
from .plan import Plan, parse_plan
from .registry import resolve_model

__all__ = ["__version__", "Graph", "Plan", "QuantizedModel", "RunResult", "digits_inputs", "load_digits",
           "load_model", "parse_plan", "quantize_model", "resolve_model", "save_model"]
