"""Data for judging quantized models: the handwritten digits and their shifted test sets.

    >>> from refquant.data import load_digits, flatten
    >>> digits = load_digits()
    >>> digits.train.x.shape, digits.test.x.shape          # float32 NCHW, normalised
    ((1198, 1, 8, 8), (599, 1, 8, 8))
    >>> len(digits.calibration(16)), digits.shifted("noise").name
    (16, 'noise')
    >>> flatten(digits.test.x).shape                        # for MLPs
    (599, 64)

``digits_inputs(graph, x)`` shapes images for a model's input (flattened for an MLP).

The split, the normalisation and every shift are specified in ``spec/data.md``.
"""

from refquant.data.digits import (
    CALIBRATION_SIZES,
    DATA_DIR,
    DIGITS_PATH,
    DIGITS_SHA256,
    PIXEL_MEAN,
    PIXEL_STD,
    TEST_SETS,
    DigitsData,
    DigitsSplit,
    flatten,
    load_digits,
    normalize,
    pixel_statistics,
)
from refquant.data.inputs import digits_inputs
from refquant.data.shifts import SHIFTED_SETS, SHIFTS, apply_shift

__all__ = [
    "CALIBRATION_SIZES",
    "DATA_DIR",
    "DIGITS_PATH",
    "DIGITS_SHA256",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SHIFTED_SETS",
    "SHIFTS",
    "TEST_SETS",
    "DigitsData",
    "DigitsSplit",
    "apply_shift",
    "digits_inputs",
    "flatten",
    "load_digits",
    "normalize",
    "pixel_statistics",
]
