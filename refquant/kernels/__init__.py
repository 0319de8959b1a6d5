"""Integer kernels: ``reference`` (NumPy, the specification) and ``fast`` (Numba), same signatures.

They are the engine's two kernel backends, registered as ``"reference"`` and ``"numba"`` by
:mod:`refquant.builtin`; look a backend up by name with :func:`refquant.registry.get_backend`
(the executor and :mod:`refquant.functional` both do), so that a plugin's backend works
wherever these do.
"""

from .geometry import ConvGeometry, conv_geometry, resolve_auto_pad
from .reference import AccumulatorOverflowError

__all__ = ["AccumulatorOverflowError", "ConvGeometry", "conv_geometry", "resolve_auto_pad"]
