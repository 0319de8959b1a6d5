"""The engine's own hook implementations: the kernel backends every installation has.

Registered by the plugin manager directly (not through an entry point), so selecting plugins
with ``REFQUANT_PLUGINS`` never removes the kernels.
"""

from .hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .kernels import fast, reference

    register("reference", reference)
    register("numba", fast)
