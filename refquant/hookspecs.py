"""The hooks a refquant plugin may implement.

Plugins are found through the ``refquant`` entry-point group; the built-in strategies register
through the same path. Register-style hooks receive a ``register`` callback; event hooks are
called by the engine for observers (tracing, progress, statistics) and their return value is
ignored.
"""

import pluggy

hookspec = pluggy.HookspecMarker("refquant")
hookimpl = pluggy.HookimplMarker("refquant")


@hookspec
def register_quantizers(register):
    """Register quantizer strategies: call ``register(strategy)`` once per strategy.

    A strategy is an object following :class:`refquant.strategies.WeightQuantizer` or
    :class:`refquant.strategies.ActivationQuantizer` (it has ``name``, ``kind`` and ``doc``).
    Names are unique across all plugins; a duplicate is an error naming both plugins.
    """


@hookspec
def register_qat_quantizers(register):
    """Register quantizers for quantization-aware training: ``register(quantizer)`` once each.

    A quantizer follows :class:`refquant.strategies.QATQuantizer` (``name``, ``kind`` =
    ``"weights"`` or ``"activations"``, ``doc``, ``init_state``, ``fake_quant``). Names are
    unique across all plugins (a duplicate is an error naming both plugins); they are
    separate from the post-training strategies' names, which they may repeat.
    """


@hookspec
def register_models(register):
    """Register models: call ``register(name, loader, description)``.

    ``loader()`` returns a :class:`refquant.graph.Graph` with its weights.
    """


@hookspec
def register_backends(register):
    """Register kernel backends: call ``register(name, module)``.

    ``module`` provides ``matmul_int32``, ``matmul_requant``, ``conv2d_int32``,
    ``conv2d_requant`` and ``requantize`` with the signatures of
    :mod:`refquant.kernels.reference`.
    """


@hookspec
def register_commands(cli):
    """Add sub-commands to the ``refquant`` command line.

    ``cli.command(name, help)`` returns an ``argparse.ArgumentParser`` to add arguments to;
    set its handler with ``parser.set_defaults(handler=fn)`` where ``fn(args) -> int``.
    """


@hookspec
def layer_executed(record):
    """Called after each node the quantized executor runs, with its :class:`LayerRecord`."""


@hookspec
def calibration_progress(stage, done, total):
    """Called during calibration: ``stage`` names the pass, ``done`` of ``total`` batches."""
