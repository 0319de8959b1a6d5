"""Every registered weight × activation strategy quantizes and runs both PP-OCRv4 models
(issue #13: "every strategy combination runs on the three real models").

What runs, on reduced inputs (the detector imported at 32×32, the recogniser at width 64;
calibration: one page.png region, evaluation: another):

* **every pair** of the registry's weight strategies (the example plugin's ``pow2`` included
  when installed) × activation strategies, at 8 bits per channel, on both models;
* **a seeded subset of the rest** — 8 and 4 bits × per tensor and per channel minus the above,
  ``REST_PER_MODEL`` plans per model drawn with ``numpy.random.default_rng(REFQUANT_GRID_SEED)``
  (environment variable, default 0; set it to rotate through the rest). The whole grid, lloydmax
  per channel included, is ``bench/ocr_all_plans.py``.

Exceptions, for time: ``lloydmax`` per channel designs one codebook per output channel — 65 s
(detector) and 158 s (recogniser, whose classifier has 6 625 channels) per 8-bit plan on this
machine (4 bits: 42 s and 53 s; per tensor 3 s and 5 s) — so its per-channel plans here keep
per-channel codebooks on the layers with at most 64 output channels (plan override) and
per-tensor ones elsewhere.

Each (strategy, tensor spec) is computed once per model and reused by later plans: weights are
memoised per (model, strategy, LayerSpec), and an offline activation strategy's calibrated
qparams per (model, strategy, LayerSpec) — the calibration pass is the same recorded trace
for every plan (:func:`refquant.executor.trace_calibration`), so the reuse changes no number,
it only skips recomputing the KL search or the iterative quantizer for each weight strategy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from tests_support import requires_real_model

pytestmark = [requires_real_model("ppocrv4-det"), requires_real_model("ppocrv4-rec")]

REST_PER_MODEL = 2
PER_CHANNEL_CODEBOOK_MAX_ROWS = 64


class _Replay:
    """An observer whose calibration already ran in an earlier plan of the same model."""

    def __init__(self, qparams):
        self._qparams = qparams

    def observe(self, y, *, context=None, x=None):
        pass

    def qparams(self):
        return self._qparams


class _Memo:
    """Weights and calibrated qparams per (model, strategy, spec), installed on the registry's
    strategy objects for this module only."""

    def __init__(self):
        self.model = ""
        self.weights: dict = {}
        self.qparams: dict = {}

    def install(self, mp):
        from refquant.registry import get_quantizer, quantizers

        for name in quantizers("weights"):
            s = get_quantizer(name, "weights")
            mp.setattr(s, "quantize_weight", self._weights(name, s.quantize_weight))
        for name in quantizers("activations"):
            s = get_quantizer(name, "activations")
            mp.setattr(s, "make_observer", self._observer(name, s.make_observer))

    def _weights(self, name, real):
        def quantize_weight(w, spec):
            key = (self.model, name, spec)
            if key not in self.weights:
                self.weights[key] = real(w, spec)
            return self.weights[key]
        return quantize_weight

    def _observer(self, name, real):
        memo = self

        def make_observer(spec):
            key = (memo.model, name, spec)
            if key in memo.qparams:
                return _Replay(memo.qparams[key])
            obs = real(spec)

            class Recording:
                def observe(self, y, *, context=None, x=None):
                    obs.observe(y, context=context, x=x)

                def qparams(self):
                    memo.qparams[key] = obs.qparams()
                    return memo.qparams[key]
            return Recording()
        return make_observer


@pytest.fixture(scope="module")
def setup():
    from refquant.data.text_images import load_text_image
    from refquant.executor import run_float, trace_calibration
    from refquant.zoo import import_ppocr, weight_file
    from refquant.zoo.ppocr import det_preprocess, rec_preprocess

    page = load_text_image("page")
    det = import_ppocr(weight_file("ppocrv4-det"), "det", (32, 32))
    rec = import_ppocr(weight_file("ppocrv4-rec"), "rec", 64)
    models = {"ppocrv4-det": (det, det_preprocess(page[132:164, 0:32]), det_preprocess(page[100:132, 0:32])),
              "ppocrv4-rec": (rec, rec_preprocess([page[160:191, 15:121]], 64),
                              rec_preprocess([page[111:132, 4:111]], 64))}
    out = {}
    for m, (g, calib, x) in models.items():
        out[m] = (g, trace_calibration(g, calib), x, run_float(g, {"x": x})[g.outputs[0]])
    memo = _Memo()
    with pytest.MonkeyPatch.context() as mp:
        memo.install(mp)
        yield out, memo


def _plan(g, w, a, bits, gran):
    from refquant.executor.quantized import weight_matrix
    from refquant.executor.traverse import lower
    from refquant.plan import Plan, TensorPlan

    plan = Plan(TensorPlan(w, bits, gran, True, True), TensorPlan(a, bits, "per-tensor", False, False))
    if w == "lloydmax" and gran == "per-channel":
        for s in lower(g):
            if s.quantizable and weight_matrix(g, s.node).shape[0] > PER_CHANNEL_CODEBOOK_MAX_ROWS:
                plan = plan.with_override(s.node.name, "weights", TensorPlan(w, bits, "per-tensor", True, True))
    return plan


def _runs(setup, model, w, a, bits, gran):
    from refquant.executor import quantize_model

    data, memo = setup
    g, trace, x, ref = data[model]
    memo.model = model
    res = quantize_model(g, _plan(g, w, a, bits, gran), trace).run(x, backend="numba")
    out = res.outputs[g.outputs[0]]
    where = f"{model} weights={w}:{bits}:{gran} activations={a}:{bits}"
    assert out.shape == ref.shape and np.isfinite(out).all(), where
    # operators with no integer rule run as float islands, each one a record, never silently
    assert {"Mul", "HardSigmoid"} <= {r.op for r in res.records if r.kernel == "float"}, where


def _pairs():
    from refquant.registry import quantizers

    return [(w, a) for w in sorted(quantizers("weights")) for a in sorted(quantizers("activations"))]


@pytest.mark.parametrize("model", ["ppocrv4-det", "ppocrv4-rec"])
def test_every_weight_and_activation_pair_runs_at_8_bits_per_channel(setup, model):
    from refquant.registry import quantizers

    pairs = _pairs()
    assert len(pairs) == len(quantizers("weights")) * len(quantizers("activations")) >= 5 * 7
    for w, a in pairs:
        _runs(setup, model, w, a, 8, "per-channel")


@pytest.mark.parametrize("model", ["ppocrv4-det", "ppocrv4-rec"])
def test_a_seeded_subset_of_the_other_bits_and_granularities_runs(setup, model):
    seed = int(os.environ.get("REFQUANT_GRID_SEED", "0"))
    rest = [(w, a, b, g) for w, a in _pairs() for b in (8, 4) for g in ("per-tensor", "per-channel")
            if (b, g) != (8, "per-channel")]
    rng = np.random.default_rng([seed, model == "ppocrv4-rec"])
    for k in rng.choice(len(rest), REST_PER_MODEL, replace=False):
        _runs(setup, model, *rest[int(k)])
