"""The integer kernels against independent computations on the same integers.

Conv: ``scipy.signal.correlate`` (direct method, float64 — exact for these sums) of the
zero-point-centred, zero-padded input with the centred kernel, the kernel dilated by
inserting zeros and the output subsampled by the stride; ONNX's ``auto_pad`` rule is
restated here rather than taken from ``kernels/geometry.py``. Matmul: Python integers.
Both backends are checked (the Numba one is also compared with the reference bit for bit in
``test_kernels_fast.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from refquant.registry import get_backend

BACKENDS = ("reference", "numba")


def same_pads(size, k, stride, dilation, upper):
    """ONNX SAME_UPPER / SAME_LOWER: output ceil(in / stride), the odd pixel at the end / start."""
    total = max(0, (math.ceil(size / stride) - 1) * stride + dilation * (k - 1) + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def conv_oracle(x, w, zx, zw, bias, strides, pads, dilations, group, auto_pad):
    n, c_in, h, wd = x.shape
    c_out, cin_g, kh, kw = w.shape
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        (t, b), (l, r) = (same_pads(h, kh, strides[0], dilations[0], auto_pad == "SAME_UPPER"),
                          same_pads(wd, kw, strides[1], dilations[1], auto_pad == "SAME_UPPER"))
    elif auto_pad == "VALID":
        t = l = b = r = 0
    else:
        t, l, b, r = pads
    xc = np.pad(x.astype(np.float64) - zx, ((0, 0), (0, 0), (t, b), (l, r)))
    wc = w.astype(np.float64) - np.asarray(zw, np.float64).reshape(-1, 1, 1, 1)
    dilated = np.zeros((c_out, cin_g, dilations[0] * (kh - 1) + 1, dilations[1] * (kw - 1) + 1))
    dilated[:, :, :: dilations[0], :: dilations[1]] = wc
    cout_g = c_out // group
    out = []
    for img in range(n):
        maps = []
        for o in range(c_out):
            first = (o // cout_g) * cin_g
            acc = sum(signal.correlate(xc[img, first + c], dilated[o, c], mode="valid", method="direct")
                      for c in range(cin_g))
            maps.append(acc[:: strides[0], :: strides[1]] + (0 if bias is None else bias[o]))
        out.append(maps)
    return np.array(out, np.float64)


@st.composite
def conv_case(draw):
    group = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4)) if auto_pad == "NOTSET" else None
    h = draw(st.integers(dilations[0] * (kh - 1) + 1, 9))
    wd = draw(st.integers(dilations[1] * (kw - 1) + 1, 9))
    x_dtype, w_dtype = draw(st.sampled_from([np.int8, np.uint8])), draw(st.sampled_from([np.int8, np.uint8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xi, wi = np.iinfo(x_dtype), np.iinfo(w_dtype)
    x = rng.integers(xi.min, int(xi.max) + 1, (draw(st.integers(1, 2)), group * cin_g, h, wd)).astype(x_dtype)
    w = rng.integers(wi.min, int(wi.max) + 1, (group * cout_g, cin_g, kh, kw)).astype(w_dtype)
    zx = int(rng.integers(xi.min, int(xi.max) + 1))
    zw = rng.integers(wi.min, int(wi.max) + 1, group * cout_g if draw(st.booleans()) else 1).astype(w_dtype)
    bias = rng.integers(-(2**20), 2**20, group * cout_g).astype(np.int32) if draw(st.booleans()) else None
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group, auto_pad=auto_pad)
    return x, w, zx, zw, bias, attrs


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=conv_case())
def test_conv2d_int32_equals_scipy_correlate(backend, case):
    x, w, zx, zw, bias, attrs = case
    got = get_backend(backend).conv2d_int32(x, w, zx, zw, bias, **attrs)
    expected = conv_oracle(x, w, zx, zw, bias, attrs["strides"], attrs["pads"], attrs["dilations"],
                           attrs["group"], attrs["auto_pad"])
    assert got.dtype == np.int32 and got.shape == expected.shape
    assert np.array_equal(got.astype(np.float64), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@given(st.integers(0, 6), st.integers(0, 40), st.integers(0, 6), st.integers(0, 2**32 - 1))
def test_matmul_int32_equals_python_integers(backend, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    za, zw = int(rng.integers(0, 256)), rng.integers(-128, 128, n).astype(np.int8)
    bias = rng.integers(-(2**30), 2**30, n).astype(np.int32)
    got = get_backend(backend).matmul_int32(a, w, za, zw, bias)
    expected = [[sum((int(a[i, q]) - za) * (int(w[j, q]) - int(zw[j])) for q in range(k)) + int(bias[j])
                 for j in range(n)] for i in range(m)]
    assert got.dtype == np.int32 and got.tolist() == expected


def test_conv_with_no_input_channels_is_the_bias():
    """An empty sum: C_in = 0 gives the bias (as a matmul with K = 0 does)."""
    x, w = np.zeros((1, 0, 4, 4), np.int8), np.zeros((2, 0, 3, 3), np.int8)
    bias = np.array([5, -7], np.int32)
    for backend in BACKENDS:
        out = get_backend(backend).conv2d_int32(x, w, bias=bias)
        assert out.shape == (1, 2, 2, 2) and (out[0, 0] == 5).all() and (out[0, 1] == -7).all()
