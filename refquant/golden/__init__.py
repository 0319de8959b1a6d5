"""Golden sets: every integer a quantized model computes, written so other backends can check
themselves against refquant layer by layer, and the tools to do that check.

* :func:`export_golden` writes a golden set (``manifest.json`` + ``.npy`` tensors, optionally
  the ONNX backend test-data layout); :func:`load_golden` opens one, checking every file's
  SHA-256 before reading it.
* :func:`replay` recomputes every layer from the golden inputs, on any kernel backend.
* :func:`verify` compares a backend's outputs (``.npz``, or ONNX ``.pb`` files) with a golden
  set, layer by layer, in LSBs, and explains differences by the requant mode or the rounding
  rule that reproduces them.

The format is specified in ``spec/golden-format.md``.
"""

from .explain import MODE_DESCRIPTIONS, RULES, explain_requantization
from .export import export_golden, graph_sha256, safe_name
from .files import GoldenFileError
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, GoldenSet, load_golden
from .replay import compute_layer, replay
from .verify import POLICIES, LayerResult, VerifyReport, read_outputs, verify

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MODE_DESCRIPTIONS",
    "POLICIES",
    "RULES",
    "GoldenFileError",
    "GoldenSet",
    "LayerResult",
    "VerifyReport",
    "compute_layer",
    "explain_requantization",
    "export_golden",
    "graph_sha256",
    "load_golden",
    "read_outputs",
    "replay",
    "safe_name",
    "verify",
]
