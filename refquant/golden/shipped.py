"""The checked-in golden sets: every shipped model × every built-in strategy, at 8 bits.

``spec/golden/MODEL/WEIGHTS+ACTIVATIONS/`` for each shipped model (``models/``) and each
strategy registered by refquant's own distribution: every weight strategy paired with the
activations ``static-minmax``, and every activation strategy paired with the weights
``minmax`` — weights 8-bit signed symmetric per channel, activations 8-bit unsigned
asymmetric per tensor, ``float32`` requantization, the reference kernels. The inputs are
:data:`IMAGES` images of the digits test set chosen with :data:`SEED`; calibration uses the
first :data:`CALIBRATION` images of the calibration split (``spec/data.md``). The
``minmax+static-minmax`` set of each model also holds the ONNX test-data layout, and
``spec/golden/onnx-ops/`` the operator-level ONNX cases (:mod:`refquant.golden.opcases`).

``spec/golden/index.json`` lists them all. ``refquant golden refresh`` rewrites everything;
the test suite regenerates each set and demands identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import digits_inputs, load_digits
from ..executor import quantize_model
from ..registry import get_model, models, quantizers
from .export import export_golden
from .opcases import write_operator_cases
from .writer import prepare_directory

__all__ = ["GOLDEN_DIR", "IMAGES", "SEED", "CALIBRATION", "BITS", "shipped_models", "builtin_strategies",
           "shipped_plans", "plan_text", "shipped_inputs", "export_shipped_set", "refresh", "INDEX"]

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "spec" / "golden"
INDEX = "index.json"
IMAGES, SEED, CALIBRATION, BITS = 4, 0, 32, 8
PARTNER_WEIGHTS, PARTNER_ACTIVATIONS = "minmax", "static-minmax"
BUILTIN_DISTRIBUTION = "refquant"


def shipped_models() -> list[str]:
    """Models registered by refquant itself (``models/NAME.json`` with a model card)."""
    return sorted(n for n, e in models().items() if e.plugin == "refquant")


def builtin_strategies(kind: str) -> list[str]:
    """Strategies of ``kind`` registered by refquant's own distribution (not third-party plugins)."""
    return sorted(n for n, e in quantizers(kind).items() if e.distribution == BUILTIN_DISTRIBUTION)


def shipped_plans() -> list[tuple[str, str]]:
    """``(weights, activations)`` pairs: each strategy once, with the partner the module names."""
    pairs = [(PARTNER_WEIGHTS, PARTNER_ACTIVATIONS)]
    pairs += [(w, PARTNER_ACTIVATIONS) for w in builtin_strategies("weights") if w != PARTNER_WEIGHTS]
    pairs += [(PARTNER_WEIGHTS, a) for a in builtin_strategies("activations") if a != PARTNER_ACTIVATIONS]
    return pairs


def plan_text(weights: str, activations: str) -> str:
    return f"weights={weights}:{BITS}:per-channel activations={activations}:{BITS}"


def shipped_inputs(graph) -> tuple[np.ndarray, np.ndarray, list]:
    """``(inputs, calibration, indices)``: the golden images (in the graph's layout) and the calibration set."""
    digits = load_digits()
    indices = sorted(int(i) for i in np.random.default_rng(SEED).choice(len(digits.test), IMAGES, replace=False))
    x = digits_inputs(graph, digits.test.x[indices])
    return x, digits_inputs(graph, digits.calibration(CALIBRATION).x), indices


def export_shipped_set(model: str, weights: str, activations: str, directory, *, onnx: bool = False):
    """Quantize ``model`` with the pair's plan and write its golden set into ``directory``."""
    graph = get_model(model)
    x, calibration, indices = shipped_inputs(graph)
    qm = quantize_model(graph, plan_text(weights, activations), calibration, requant="float32")
    description = (f"digits test set images {indices} (refquant.data.load_digits().test, chosen with "
                   f"numpy.random.default_rng({SEED}).choice); calibration: the first {CALIBRATION} images of "
                   f"the calibration split")
    return export_golden(qm, x, directory, model_name=model, backend="reference", seed=SEED,
                         input_description=description, onnx=onnx)


def _set_dir(model: str, weights: str, activations: str) -> str:
    return f"{model}/{weights}+{activations}"


def _remove_stale_sets(root: Path, keep: set) -> None:
    """Delete golden sets under ``root/MODEL/`` that the new index no longer lists (a model or
    strategy that is gone), file by file as their manifests list them."""
    for manifest in sorted(root.glob("*/*/manifest.json")):
        rel = manifest.parent.relative_to(root).as_posix()
        if rel not in keep:
            prepare_directory(manifest.parent)
            manifest.parent.rmdir()
            if not any(manifest.parent.parent.iterdir()):
                manifest.parent.parent.rmdir()


def refresh(root=GOLDEN_DIR, *, progress=None) -> dict:
    """Rewrite every checked-in golden set, the operator cases and ``index.json`` under ``root``."""
    root = Path(root)
    sets = []
    for model in shipped_models():
        for weights, activations in shipped_plans():
            rel = _set_dir(model, weights, activations)
            onnx = (weights, activations) == (PARTNER_WEIGHTS, PARTNER_ACTIVATIONS)
            gs = export_shipped_set(model, weights, activations, root / rel, onnx=onnx)
            sets.append({"dir": rel, "model": model, "weights": weights, "activations": activations,
                         "plan": plan_text(weights, activations), "onnx": onnx,
                         "manifest_sha256": gs.manifest_sha256})
            if progress:
                progress(rel)
    _remove_stale_sets(root, {s["dir"] for s in sets})
    cases = write_operator_cases(root / "onnx-ops")
    index = {"format": "refquant.golden-index", "format_version": 1, "images": IMAGES, "seed": SEED,
             "calibration": CALIBRATION, "bits": BITS, "sets": sets,
             "onnx_operator_cases": [dict(c, dir=f"onnx-ops/{c['dir']}") for c in cases]}
    (root / INDEX).write_text(json.dumps(index, sort_keys=True, indent=1) + "\n")
    return index
