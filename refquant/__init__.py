"""refquant — a reference inference engine for quantized neural networks.

Every number refquant produces is defined in ``spec/`` and reproducible. The integer
arithmetic lives in :mod:`refquant.numerics` and :mod:`refquant.kernels`; the ONNX-named
operator functions in :mod:`refquant.functional`.
"""

__version__ = "0.1.0"
