"""EfficientNet-Lite0 quantized: the int32 bias rule on real weights, and every registered
strategy running on it (a small subset here; the full grid is ``bench/effnet_all_plans.py``,
its result in spec/models/efficientnet-lite0.md).

Two calibration views and one test view keep this to seconds per plan.
"""

import numpy as np
import pytest
from tests_support import requires_real_model

from refquant.executor import quantize_model, run_float
from refquant.kernels import AccumulatorOverflowError
from refquant.plan import Plan, TensorPlan
from refquant.registry import quantizers

pytestmark = requires_real_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def setup():
    from refquant.data.photos import photo_views
    from refquant.registry import resolve_model
    from refquant.zoo.efficientnet_lite import preprocess

    g = resolve_model("efficientnet-lite0")
    calib = preprocess(photo_views(["chelsea", "coffee"], ["tl"]).images)
    x = preprocess(photo_views(["chelsea"], ["center"]).images)
    ref = run_float(g, {g.inputs[0].name: x})[g.outputs[0]]
    return g, calib, x, ref


def plan(w, a, bits=8, gran="per-channel"):
    return Plan(TensorPlan(w, bits, gran, True, True), TensorPlan(a, bits, "per-tensor", False, False))


def test_the_default_plan_overflows_without_the_bias_rule_and_runs_with_it(setup):
    g, calib, x, ref = setup
    p = plan("minmax", "static-minmax")
    with pytest.raises(AccumulatorOverflowError, match="stem"):
        quantize_model(g, p, calib, bias_rule="off").run(x, backend="numba")
    qm = quantize_model(g, p, calib)
    stem = qm.layers["stem"].widening
    # the four dead stem channels (max |w| 3e-9 .. 4e-6 after BN folding)
    assert len(stem.channels) == 4
    assert sum(len(l.widening.channels) for l in qm.layers.values() if l.widening is not None) > 50
    out = qm.run(x, backend="numba").outputs[g.outputs[0]]
    assert np.argmax(out) == np.argmax(ref)


def test_every_strategy_quantizes_and_runs(setup):
    """Every weight strategy (8-bit per channel, static-minmax activations) and every activation
    strategy with its own execution path (4-bit per-tensor minmax weights: dynamic, probabilistic,
    statqat-iterative), on the Numba backend; float islands are named in
    the records (``kernel == "float"``: the Adds and the global pool here).

    Not here: ``lloydmax``, whose per-channel codebook design takes minutes on this network
    (the grid runs it; its codebook path under the bias rule is tested in test_bias_rule.py)."""
    g, calib, x, ref = setup
    plans = [plan(w, "static-minmax") for w in sorted(quantizers("weights")) if w != "lloydmax"]
    # the static-* observers share static-minmax's execution path; the grid runs them all
    plans += [plan("minmax", a, 4, "per-tensor") for a in sorted(quantizers("activations"))
              if not a.startswith("static-")]
    for p in plans:
        res = quantize_model(g, p, calib).run(x, backend="numba")
        out = res.outputs[g.outputs[0]]
        assert out.shape == ref.shape and np.isfinite(out).all(), p
        islands = {r.op for r in res.records if r.kernel == "float"}
        assert islands <= {"Add", "GlobalAveragePool", "Conv", "Gemm"}, (p, islands)
