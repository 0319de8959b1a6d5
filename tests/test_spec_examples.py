"""The worked examples of spec/numerics.md, number for number."""

import numpy as np
import pytest

from refquant.numerics import (REQUANT_MODES, dequantize, make_requantizer, qparams_from_range,
                               quantize, requantize)


def test_range_examples():
    qp = qparams_from_range(-1.0, 2.0, "uint8")
    assert qp.scale == np.float32(3) / np.float32(255) and float(qp.scale) == 0.0117647061124444
    assert int(qp.zero_point) == 85
    qs = qparams_from_range(-0.5, 1.27, "int8", symmetric=True)
    assert float(qs.scale) == 0.009999999776482582 and int(qs.zero_point) == 0
    q0 = qparams_from_range(0.0, 0.0, "uint8")
    assert float(q0.scale) == 1.0 and int(q0.zero_point) == 0


def test_quantize_dequantize_examples():
    qp = qparams_from_range(-1.0, 2.0, "uint8")
    q = quantize(np.array([-1.0, 0.0, 0.5, 2.0, 3.0], np.float32), qp)
    assert q.tolist() == [0, 85, 127, 255, 255]
    assert np.float32(0.5) / qp.scale == np.float32(42.5)  # the tie the spec mentions
    x = dequantize(np.array([0, 85, 128, 255], np.uint8), qp)
    assert x.tolist() == [np.float32(-1.0), 0.0, np.float32(0.5058824), np.float32(2.0)]


TIES = [  # acc, z_y, float32, float64, fixed-point, fixed-point-single
    (96, 0, 2, 2, 2, 2),
    (96, 1, 3, 2, 3, 3),
    (-96, 1, -1, 0, -1, 0),
    (160, 0, 2, 2, 3, 3),
    (-160, 0, -2, -2, -3, -2),
]


@pytest.mark.parametrize("row", TIES, ids=[f"acc={r[0]},zp={r[1]}" for r in TIES])
def test_tie_table(row):
    acc, zp, *expected = row
    for mode, want in zip(REQUANT_MODES, expected):
        rq = make_requantizer(2.0**-7, 2.0**-8, 2.0**-9, zp, "int8", mode=mode)
        assert requantize(np.array([acc], np.int32), rq, channel_axis=0)[0] == want, mode


def test_layer_example():
    rq = make_requantizer(0.02, 0.003, 0.05, 3, "int8", mode="fixed-point")
    assert rq.multiplier[0] == np.float32(np.float32(np.float32(0.02) * np.float32(0.003)) / np.float32(0.05))
    assert float(rq.multiplier[0]) == 0.0011999999405816197  # float32 0.0011999999, not float32(0.0012)
    assert (int(rq.q_multiplier[0]), int(rq.shift[0])) == (1319413916, -9)
    acc = np.array([1000, -1000, 12345, 20000000], np.int32)
    for mode in REQUANT_MODES:
        rq = make_requantizer(0.02, 0.003, 0.05, 3, "int8", mode=mode)
        assert requantize(acc, rq, channel_axis=0).tolist() == [4, 2, 18, 127], mode
