"""QAT with and without the fake-quantized bias: the gap between the fake-quantized forward's
test accuracy and the integer executor's on the same trained weights (spec/training.md).

    python bench/qat_bias_gap.py [--models digits-mlp digits-cnn] [--bits 2] [--epochs 2]

Each run fine-tunes the shipped model (``--from``) with min-max QAT (per-channel weights,
EMA min-max activations) at ``--bits``, seeded, then quantizes the trained float weights with
the matching post-training plan (min-max weights, static min-max activations calibrated on 128
images) and runs the integer executor on the test set — and once more with the activation
qparams QAT itself ended with (the EMA ranges), so that the only differences left between the
two forwards are the ones QAT does or does not model. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.executor import quantize_model
from refquant.train.blas import single_blas_thread
from refquant.train.report import integer_accuracy
from refquant.train.trainer import Trainer, config_for


def measure(model: str, bits: int, epochs: int, fake_quant_bias: bool, data, seed: int = 0) -> dict:
    qat = f"weights=minmax:{bits}:per-channel activations=ema-minmax:{bits}"
    ptq = f"weights=minmax:{bits}:per-channel activations=static-minmax:{bits}"
    config = config_for(model, epochs=epochs, seed=seed, lr=1e-3, qat=qat, init=model)
    trainer = Trainer(config, data)
    trainer.fake_quant.fake_quant_bias = fake_quant_bias
    t0 = time.perf_counter()
    trainer.fit()
    with single_blas_thread():
        fq_logits = trainer.predict(trainer.x_test)  # also leaves each point's eval qparams
    fq = float(np.mean(np.argmax(fq_logits, axis=1) == trainer.y_test))
    graph = trainer.trained_graph()
    integer = integer_accuracy(graph, ptq, data, calibration=128)["accuracy"]
    # the executor with QAT's own activation qparams
    with single_blas_thread():
        qm = quantize_model(graph, ptq, digits_inputs(graph, data.calibration(128).x))
        for tensor, point in trainer.fake_quant.activations.items():
            if tensor in qm.tensor_qparams and point.qparams is not None:
                qm.tensor_qparams[tensor] = point.qparams
        for layer in qm.layers.values():
            layer.observed = qm.tensor_qparams.get(layer.step.output)
        logits = qm.run(digits_inputs(graph, data.test.x)).outputs[graph.outputs[0]]
    same = float(np.mean(np.argmax(logits, axis=1) == data.test.y))
    agree = float(np.mean(np.argmax(logits, axis=1) == np.argmax(fq_logits, axis=1)))
    return {"model": model, "bits": bits, "epochs": epochs, "seed": seed,
            "bias": "fake-quant" if fake_quant_bias else "float",
            "fake_quant_acc": round(100 * fq, 2), "integer_acc": round(100 * integer, 2),
            "gap_points": round(100 * (fq - integer), 2),
            "integer_same_qparams_acc": round(100 * same, 2), "gap_same_qparams": round(100 * (fq - same), 2),
            "prediction_agreement": round(100 * agree, 2), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits-mlp"])
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    data = load_digits()
    for model in args.models:
        for bits in args.bits:
            for seed in args.seeds:
                for flag in (False, True):
                    print(json.dumps(measure(model, bits, args.epochs, flag, data, seed)), flush=True)


if __name__ == "__main__":
    main()
