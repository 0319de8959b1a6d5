"""Integer kernels: ``reference`` (NumPy, the specification) and ``fast`` (Numba), same signatures."""

from .geometry import ConvGeometry, conv_geometry, resolve_auto_pad
from .reference import AccumulatorOverflowError

BACKENDS = ("reference", "numba")


def get_backend(name: str):
    """The kernel module for ``name`` (``"reference"`` or ``"numba"``)."""
    if name == "reference":
        from . import reference
        return reference
    if name == "numba":
        from . import fast
        return fast
    raise ValueError(f"unknown kernel backend {name!r}: expected one of {', '.join(BACKENDS)}")
