"""The hook implementation that registers the real models (:mod:`refquant.zoo`).

Registered by the plugin manager directly, as plugin ``refquant.zoo`` (not ``refquant``, so
the shipped digits models — plugin ``refquant`` — stay the set that golden files cover).
"""

from ..hookspecs import hookimpl
from . import register_real_models


@hookimpl
def register_models(register):
    """Every real model, installed or not (see :func:`refquant.zoo.register_real_models`)."""
    register_real_models(register)
