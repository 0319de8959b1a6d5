"""The float operators against the onnx reference evaluator and onnxruntime.

Tolerances are error bounds, not fudge factors.  With ``u = 2**-24`` (float32 unit roundoff)
and ``gamma_n = n*u/(1 - n*u)``, any float32 evaluation of a sum of ``n`` products, in any
order, is within ``gamma_n * sum|terms|`` of the exact value.  So for each operator we check

* ours against the exact value (the onnx reference evaluator run in float64): ``<= bound``;
* ours against the float32 oracles (reference evaluator, onnxruntime): ``<= 2 * bound``
  (both sides are within ``bound`` of the exact value, summed in different orders).

Selections (Relu, Clip, MaxPool), single roundings (Add) and reshapes are exact: equal.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx_oracle import requires_onnx, run_onnxruntime, run_reference

from refquant.graph.schema import OP_SCHEMAS
from refquant.ops import (
    FLOAT_OPS,
    IN_PLACE_ACTIVATIONS,
    add,
    average_pool,
    batch_normalization,
    clip,
    clip_in_place,
    conv,
    flatten,
    gemm,
    global_average_pool,
    matmul,
    max_pool,
    relu,
    reshape,
    softmax,
)
from refquant.ops.padding import AUTO_PAD_MODES, check_pool_windows, window_plan

U = 2.0**-24
SMALLEST_NORMAL = 2.0**-126


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def assert_within(ours, other, bound, what: str):
    """|ours - other| <= bound elementwise; the message gives the worst ratio err/bound."""
    assert ours.shape == other.shape, f"{what}: shape {ours.shape} != {other.shape}"
    assert ours.dtype == np.float32
    err = np.abs(ours.astype(np.float64) - np.asarray(other, dtype=np.float64))
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    ratio = np.where(err > 0, err / np.where(bound > 0, bound, np.inf), 0.0)
    assert (err <= bound).all(), f"{what}: error {err.max():.3g} exceeds bound (worst err/bound {ratio.max():.3g})"


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def absf64(*arrays):
    return [None if a is None else np.abs(a.astype(np.float64)) for a in arrays]


def data(seed: int, *shapes, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s) * scale, dtype=np.float32) for s in shapes]


seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([1e-3, 1.0, 1e3])
pair = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=2, max_size=2)  # noqa: E731


# ---- Conv ---------------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    group, cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel, strides, dilations = draw(pair(1, 4)), draw(pair(1, 3)), draw(pair(1, 3))
    auto_pad = draw(st.sampled_from(AUTO_PAD_MODES))
    attrs = {"group": group, "strides": strides, "dilations": dilations}
    if auto_pad != "NOTSET" or draw(st.booleans()):
        attrs["auto_pad"] = auto_pad
    if auto_pad == "NOTSET":
        attrs["pads"] = draw(st.lists(st.integers(0, 3), min_size=4, max_size=4))
    if draw(st.booleans()):
        attrs["kernel_shape"] = kernel
    for name in ("strides", "dilations", "group"):  # defaults must equal ONNX's
        if attrs[name] in ([1, 1], 1) and draw(st.booleans()):
            del attrs[name]
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 10)), draw(st.integers(1, 10))
    x_shape, w_shape = (n, group * cg, h, w), (group * mg, cg, *kernel)
    has_bias = draw(st.booleans())
    return x_shape, w_shape, has_bias, attrs, draw(seeds), draw(scales)


@requires_onnx
@given(conv_cases())
def test_conv_matches_reference_and_onnxruntime(case):
    x_shape, w_shape, has_bias, attrs, seed, scale = case
    try:
        window_plan("Conv", x_shape[2:], w_shape[2:], auto_pad=attrs.get("auto_pad", "NOTSET"),
                    pads=attrs.get("pads"), strides=attrs.get("strides"), dilations=attrs.get("dilations"))
    except ValueError:
        assume(False)
    x, w, b = data(seed, x_shape, w_shape, (w_shape[0],), scale=scale)
    b = b if has_bias else None
    ours = conv(x, w, b, **attrs)

    k = w_shape[1] * w_shape[2] * w_shape[3]
    bound = gamma(k + 1) * run_reference("Conv", absf64(x, w, b), attrs)
    assert_within(ours, run_reference("Conv", f64(x, w, b), attrs), bound, "Conv vs exact")
    assert_within(ours, run_reference("Conv", [x, w, b], attrs), 2 * bound, "Conv vs onnx reference")
    if not (attrs.get("auto_pad", "NOTSET").startswith("SAME") and attrs.get("dilations", [1, 1]) != [1, 1]):
        # onnxruntime refuses Conv with SAME_* padding and dilations (measured, 1.32)
        assert_within(ours, run_onnxruntime("Conv", [x, w, b], attrs), 2 * bound, "Conv vs onnxruntime")


def test_conv_negative_same_padding_is_clamped_to_zero():
    # SAME with stride 3 > kernel extent 1 on length 4: out = ceil(4/3) = 2, the padding
    # formula gives (2-1)*3 + 1 - 4 = 0; on length 5 it gives -1, read as 0 (no padding):
    # outputs read x[0] and x[3], as onnx's reference and onnxruntime's Conv do.
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5)
    w = np.ones((1, 1, 1, 1), dtype=np.float32)
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        y = conv(x, w, auto_pad=mode, strides=[1, 3])
        np.testing.assert_array_equal(y.ravel(), [0.0, 3.0])


def test_conv_output_formula_example():
    # 1 channel, 3x3 input 0..8, 2x2 kernel of ones, pads 1 on top/left only, stride 2:
    # windows start at rows/cols -1, 1 -> sums of {0}, {1,2}, {3,6}, {4,5,7,8}.
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    y = conv(x, w, np.array([0.5], np.float32), pads=[1, 1, 0, 0], strides=[2, 2])
    np.testing.assert_array_equal(y[0, 0], [[0.5, 3.5], [9.5, 24.5]])


# ---- Gemm, MatMul -------------------------------------------------------------------------


@st.composite
def gemm_cases(draw):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 40)), draw(st.integers(1, 6))
    attrs = {}
    for name, values in (("alpha", [1.0, 0.5, -2.0, 0.1]), ("beta", [1.0, 0.0, -0.5, 3.0])):
        if draw(st.booleans()):
            attrs[name] = draw(st.sampled_from(values))
    for name in ("transA", "transB"):
        if draw(st.booleans()):
            attrs[name] = draw(st.integers(0, 1))
    a_shape = (k, m) if attrs.get("transA") else (m, k)
    b_shape = (n, k) if attrs.get("transB") else (k, n)
    c_shape = draw(st.sampled_from([None, (), (n,), (1, n), (m, 1), (m, n)]))
    return a_shape, b_shape, c_shape, attrs, draw(seeds), draw(scales)


@requires_onnx
@given(gemm_cases())
def test_gemm_matches_reference_and_onnxruntime(case):
    a_shape, b_shape, c_shape, attrs, seed, scale = case
    a, b = data(seed, a_shape, b_shape, scale=scale)
    c = data(seed + 1, c_shape)[0] if c_shape is not None else None
    ours = gemm(a, b, c, **attrs)

    a64, b64 = absf64(a, b)
    a64 = a64.T if attrs.get("transA") else a64
    b64 = b64.T if attrs.get("transB") else b64
    magnitude = abs(attrs.get("alpha", 1.0)) * (a64 @ b64)
    if c is not None:
        magnitude = magnitude + abs(attrs.get("beta", 1.0)) * np.abs(c.astype(np.float64))
    bound = gamma(a64.shape[1] + 3) * magnitude
    assert_within(ours, run_reference("Gemm", f64(a, b, c), attrs), bound, "Gemm vs exact")
    assert_within(ours, run_reference("Gemm", [a, b, c], attrs), 2 * bound, "Gemm vs onnx reference")
    assert_within(ours, run_onnxruntime("Gemm", [a, b, c], attrs), 2 * bound, "Gemm vs onnxruntime")


@st.composite
def matmul_shapes(draw):
    m, k, n = draw(st.integers(1, 5)), draw(st.integers(1, 30)), draw(st.integers(1, 5))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    a_shape = (k,) if draw(st.integers(0, 4)) == 0 else (*a_batch, m, k)
    b_shape = (k,) if draw(st.integers(0, 4)) == 0 else (*b_batch, k, n)
    return a_shape, b_shape, draw(seeds)


@requires_onnx
@given(matmul_shapes())
def test_matmul_matches_reference_and_onnxruntime(case):
    a_shape, b_shape, seed = case
    a, b = data(seed, a_shape, b_shape)
    ours = matmul(a, b)
    bound = gamma(a_shape[-1]) * np.matmul(*absf64(a, b))
    assert_within(ours, run_reference("MatMul", f64(a, b), {}), bound, "MatMul vs exact")
    assert_within(ours, run_onnxruntime("MatMul", [a, b], {}), 2 * bound, "MatMul vs onnxruntime")


# ---- pools --------------------------------------------------------------------------------


@st.composite
def pool_cases(draw, op: str):
    kernel, strides = draw(pair(1, 4)), draw(pair(1, 3))
    auto_pad = draw(st.sampled_from(AUTO_PAD_MODES))
    attrs = {"kernel_shape": kernel}
    if draw(st.booleans()) or strides != [1, 1]:
        attrs["strides"] = strides
    if auto_pad != "NOTSET" or draw(st.booleans()):
        attrs["auto_pad"] = auto_pad
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4)]
        attrs["ceil_mode"] = draw(st.integers(0, 1))
    if op == "MaxPool":
        attrs["dilations"] = draw(pair(1, 3))
    else:
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return shape, attrs, draw(seeds)


def _pool_valid(shape, attrs) -> bool:
    kernel = attrs["kernel_shape"]
    try:
        plan = window_plan("pool", shape[2:], kernel, auto_pad=attrs.get("auto_pad", "NOTSET"),
                           pads=attrs.get("pads"), strides=attrs.get("strides"),
                           dilations=attrs.get("dilations"), ceil_mode=attrs.get("ceil_mode", 0))
        check_pool_windows("pool", shape[2:], kernel, plan, attrs.get("strides"), attrs.get("dilations"))
    except ValueError:
        return False
    return True


def _same_needs_negative_padding(shape, attrs) -> bool:
    """SAME where the ONNX padding formula is negative (stride > window extent): refquant reads
    it as 0 (see test_pool_negative_same_padding_is_clamped); the oracles disagree there."""
    if not attrs.get("auto_pad", "NOTSET").startswith("SAME"):
        return False
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    return any(
        (-(-n // s) - 1) * s + d * (k - 1) + 1 - n < 0
        for n, s, k, d in zip(shape[2:], strides, attrs["kernel_shape"], dilations)
    )


def naive_pool(x: np.ndarray, op: str, attrs: dict, out_hw, pads) -> np.ndarray:
    """The ONNX definition, one output element at a time, in float64: the taps of window
    (oh, ow) are (oh*sh - top + i*dh, ow*sw - left + j*dw); only taps inside the input count
    for the value; AveragePool divides by the taps inside the input, or, with
    count_include_pad, inside the explicitly padded range."""
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    kh, kw = attrs["kernel_shape"]
    top, left, bottom, right = pads
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out_hw))
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            taps = [(oh * sh - top + i * dh, ow * sw - left + j * dw) for i in range(kh) for j in range(kw)]
            inside = [(r, q) for r, q in taps if 0 <= r < h and 0 <= q < w]
            values = np.stack([x[:, :, r, q].astype(np.float64) for r, q in inside], axis=-1)
            if op == "MaxPool":
                y[:, :, oh, ow] = values.max(axis=-1)
            else:
                padded = [(r, q) for r, q in taps if -top <= r < h + bottom and -left <= q < w + right]
                count = len(padded) if attrs.get("count_include_pad", 0) else len(inside)
                y[:, :, oh, ow] = values.sum(axis=-1) / count
    return y


@requires_onnx
@given(pool_cases("MaxPool"))
def test_max_pool_equals_definition_reference_and_onnxruntime(case):
    shape, attrs, seed = case
    assume(_pool_valid(shape, attrs) and not _same_needs_negative_padding(shape, attrs))
    (x,) = data(seed, shape)
    ours = max_pool(x, **attrs)
    plan = window_plan("MaxPool", shape[2:], attrs["kernel_shape"], auto_pad=attrs.get("auto_pad", "NOTSET"),
                       pads=attrs.get("pads"), strides=attrs.get("strides"), dilations=attrs["dilations"],
                       ceil_mode=attrs.get("ceil_mode", 0))
    np.testing.assert_array_equal(ours, naive_pool(x, "MaxPool", attrs, ours.shape[2:], plan.pads))
    mode, strides, dilations = attrs.get("auto_pad", "NOTSET"), attrs.get("strides", [1, 1]), attrs["dilations"]
    pads = attrs.get("pads", [0, 0, 0, 0])
    # Measured deviations of the oracles from the ONNX spec (onnx 1.23, onnxruntime 1.32):
    # onnxruntime ignores dilations when sizing SAME padding; the reference evaluator's
    # strided/dilated MaxPool sizes SAME_LOWER as floor(size/stride), and its unit
    # stride/dilation MaxPool reads pads as [top, bottom, left, right].
    if not (mode.startswith("SAME") and dilations != [1, 1]):
        np.testing.assert_array_equal(ours, run_onnxruntime("MaxPool", [x], attrs))
    unit = strides == [1, 1] and dilations == [1, 1]
    if not ((mode == "SAME_LOWER" and not unit) or (unit and pads[1] != pads[2])):
        np.testing.assert_array_equal(ours, run_reference("MaxPool", [x], attrs))


@requires_onnx
@given(pool_cases("AveragePool"))
def test_average_pool_matches_reference_and_onnxruntime(case):
    shape, attrs, seed = case
    assume(_pool_valid(shape, attrs) and not _same_needs_negative_padding(shape, attrs))
    (x,) = data(seed, shape)
    ours = average_pool(x, **attrs)
    plan = window_plan("AveragePool", shape[2:], attrs["kernel_shape"], auto_pad=attrs.get("auto_pad", "NOTSET"),
                       pads=attrs.get("pads"), strides=attrs.get("strides"), ceil_mode=attrs.get("ceil_mode", 0))
    k = attrs["kernel_shape"][0] * attrs["kernel_shape"][1]
    bound = gamma(k) * naive_pool(np.abs(x), "AveragePool", attrs, ours.shape[2:], plan.pads)
    assert_within(ours, naive_pool(x, "AveragePool", attrs, ours.shape[2:], plan.pads), bound, "AveragePool vs exact")
    if max(plan.extra_end) < 2:
        # measured: with ceil_mode the reference evaluator puts half of the extra end padding
        # at the beginning, shifting every window (onnxruntime and the definition agree)
        assert_within(ours, run_reference("AveragePool", [x], attrs), 2 * bound, "AveragePool vs reference")
    assert_within(ours, run_onnxruntime("AveragePool", [x], attrs), 2 * bound, "AveragePool vs onnxruntime")


def test_pool_negative_same_padding_is_clamped():
    # kernel 1, stride 3 on length 5: out = 2, padding formula 1*3 + 1 - 5 = -1 -> 0:
    # windows read x[0] and x[3] (TensorFlow's SAME, and our Conv).  onnxruntime refuses
    # this pool ("padding values must be non-negative"); onnx's reference crops instead.
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5)
    for f in (max_pool, average_pool):
        y = f(x, kernel_shape=[1, 1], strides=[1, 3], auto_pad="SAME_UPPER")
        np.testing.assert_array_equal(y.ravel(), [0.0, 3.0])


def test_average_pool_divisor_example():
    # 3x3 input of ones, kernel 2, stride 2, pads 1 all round, ceil_mode 0:
    # windows at rows/cols -1 and 1 cover 1 and 2 input positions per axis.
    x = np.ones((1, 1, 3, 3), dtype=np.float32)
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])
    np.testing.assert_array_equal(average_pool(x, **attrs)[0, 0], np.ones((2, 2)))
    with_pad = average_pool(x, count_include_pad=1, **attrs)[0, 0]
    np.testing.assert_array_equal(with_pad, [[1 / 4, 2 / 4], [2 / 4, 4 / 4]])


def test_pool_rejects_windows_of_padding_only_and_large_pads():
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="smaller than kernel_shape"):
        max_pool(x, kernel_shape=[2, 2], pads=[2, 0, 0, 0])
    with pytest.raises(ValueError, match="covers only padding"):
        # length 1, pads 1 and 1, kernel 2, dilation 2: taps at -1 and 1, neither inside [0, 1)
        max_pool(np.ones((1, 1, 1, 1), np.float32), kernel_shape=[2, 1], pads=[1, 0, 1, 0], dilations=[2, 1])


@requires_onnx
@given(st.lists(st.integers(1, 7), min_size=3, max_size=5), seeds)
def test_global_average_pool_matches_reference_and_onnxruntime(shape, seed):
    (x,) = data(seed, tuple(shape))
    ours = global_average_pool(x)
    bound = gamma(int(np.prod(shape[2:]))) * run_reference("GlobalAveragePool", absf64(x), {})
    assert_within(ours, run_reference("GlobalAveragePool", f64(x), {}), bound, "GAP vs exact")
    assert_within(ours, run_onnxruntime("GlobalAveragePool", [x], {}), 2 * bound, "GAP vs onnxruntime")


# ---- exact operators ----------------------------------------------------------------------

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)


@requires_onnx
@given(shapes, seeds)
def test_relu_equals_oracles(shape, seed):
    (x,) = data(seed, shape)
    ours = relu(x)
    np.testing.assert_array_equal(ours, run_reference("Relu", [x], {}))
    np.testing.assert_array_equal(ours, run_onnxruntime("Relu", [x], {}))


@requires_onnx
@given(shapes, seeds, st.sampled_from(["none", "min", "max", "both"]))
def test_clip_equals_oracles(shape, seed, which):
    x, lo, hi = data(seed, shape, (), ())  # lo > hi happens too: then every value is hi
    lo = lo if which in ("min", "both") else None
    hi = hi if which in ("max", "both") else None
    ours = clip(x, lo, hi)
    np.testing.assert_array_equal(ours, run_reference("Clip", [x, lo, hi], {}))
    np.testing.assert_array_equal(ours, run_onnxruntime("Clip", [x, lo, hi], {}))


def test_clip_min_above_max_gives_max():
    x = np.array([-1.0, 0.5, 3.0], np.float32)
    y = clip(x, np.array(2.0, np.float32), np.array(1.0, np.float32))
    np.testing.assert_array_equal(y, [1.0, 1.0, 1.0])


SPECIAL = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.0, -1.0, 6.0], np.float32)


def clip_by_rule(x, lo, hi):
    """Clip's select rule (refquant.ops.elementwise.clip), element by element in Python."""
    out = []
    for v in x.reshape(-1).tolist():
        v = lo if v < lo else v
        out.append(hi if v > hi else v)
    return np.array(out, np.float32).reshape(x.shape)


@given(st.lists(st.sampled_from(SPECIAL.tolist()) | st.floats(-8, 8, width=32), min_size=0, max_size=40),
       st.sampled_from(SPECIAL[1:].tolist()), st.sampled_from(SPECIAL[1:].tolist()),
       st.sampled_from([(1, False), (2, False), (2, True)]), st.booleans())
def test_clip_selects_bit_for_bit(values, lo, hi, threads_and_pool, in_place):
    """Every bit, signed zeros and NaN payloads included, is the select rule's, on one and two
    threads and with the thread pool forced (grain 0); into a new array and in place (a fused
    activation over its layer's output)."""
    import numba

    from refquant.kernels import grain

    x = np.array(values, np.float32)
    expected = clip_by_rule(x, np.float32(lo), np.float32(hi))
    threads, forced = threads_and_pool
    old_threads, old_grain = numba.get_num_threads(), grain.PARALLEL_GRAIN
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    grain.PARALLEL_GRAIN = 0 if forced else old_grain
    try:
        y = (clip_in_place if in_place else clip)(x, np.array(lo, np.float32), np.array(hi, np.float32))
    finally:
        numba.set_num_threads(old_threads)
        grain.PARALLEL_GRAIN = old_grain
    assert y.dtype == np.float32 and y.shape == x.shape
    assert (y is x) == in_place
    np.testing.assert_array_equal(y.view(np.uint32), expected.view(np.uint32))


def test_in_place_activations_equal_their_float_ops():
    x = np.random.default_rng(3).normal(0, 4, (2, 3, 5)).astype(np.float32)
    for op, args in (("Relu", ()), ("Clip", (np.array(0.0, np.float32), np.array(6.0, np.float32)))):
        expected = FLOAT_OPS[op](x, *args)
        y = x.copy()
        assert IN_PLACE_ACTIVATIONS[op](y, *args) is y
        np.testing.assert_array_equal(y.view(np.uint32), expected.view(np.uint32))
    with pytest.raises(ValueError, match="Clip in place: x must be a writeable C-contiguous float32"):
        clip_in_place(x[:, :, ::2], np.array(0.0, np.float32))


def test_clip_keeps_a_value_equal_to_its_bound_and_nan_bounds_give_nan():
    x = np.array([-0.0, 0.0, np.nan, -3.0], np.float32)
    y = clip(x, np.array(0.0, np.float32), np.array(6.0, np.float32))
    assert np.signbit(y[0]) and not np.signbit(y[1]) and np.isnan(y[2]) and y[3] == 0.0
    assert np.isnan(clip(x, np.array(np.nan, np.float32), None)).all()
    assert np.isnan(clip(x, None, np.array(np.nan, np.float32))).all()


@st.composite
def broadcast_pairs(draw):
    full = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4))
    def variant():
        dims = [1 if draw(st.booleans()) else d for d in full]
        return tuple(dims[draw(st.integers(0, len(dims))):])
    return variant(), variant(), draw(seeds)


@requires_onnx
@given(broadcast_pairs())
def test_add_equals_oracles(case):
    a_shape, b_shape, seed = case
    a, b = data(seed, a_shape, b_shape)
    ours = add(a, b)
    np.testing.assert_array_equal(ours, run_reference("Add", [a, b], {}))
    np.testing.assert_array_equal(ours, run_onnxruntime("Add", [a, b], {}))


@requires_onnx
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_flatten_equals_oracles(shape, draw):
    axis = draw.draw(st.integers(-len(shape), len(shape)))
    (x,) = data(0, tuple(shape))
    ours = flatten(x, axis=axis)
    np.testing.assert_array_equal(ours, run_reference("Flatten", [x], {"axis": axis}))
    np.testing.assert_array_equal(ours, run_onnxruntime("Flatten", [x], {"axis": axis}))


@st.composite
def reshape_cases(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    # target: the same elements regrouped: merge or split runs of the input's dims
    total = int(np.prod(shape))
    target, rest = [], total
    while rest > 1 and len(target) < 4:
        divisors = [d for d in range(2, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divisors))
        target.append(d)
        rest //= d
    target = target or [1]
    target[-1] *= rest
    target = draw(st.permutations(target))
    values = list(target)
    for i in range(len(values)):  # 0 copies the input dim: only where it already agrees
        if i < len(shape) and shape[i] == values[i] and draw(st.booleans()):
            values[i] = 0
    if draw(st.booleans()):
        values[draw(st.integers(0, len(values) - 1))] = -1
    return tuple(shape), np.array(values, dtype=np.int64)


@requires_onnx
@given(reshape_cases())
def test_reshape_equals_oracles(case):
    shape, target = case
    (x,) = data(0, shape)
    ours = reshape(x, target)
    np.testing.assert_array_equal(ours, run_reference("Reshape", [x, target], {}))
    np.testing.assert_array_equal(ours, run_onnxruntime("Reshape", [x, target], {}))


def test_reshape_zero_and_minus_one_rules():
    x = np.zeros((2, 3, 4), np.float32)
    assert reshape(x, np.array([0, -1], np.int64)).shape == (2, 12)
    assert reshape(x, np.array([-1, 0, 2], np.int64)).shape == (4, 3, 2)
    with pytest.raises(ValueError, match="more than one -1"):
        reshape(x, np.array([-1, -1], np.int64))
    with pytest.raises(ValueError, match="24 elements"):
        reshape(x, np.array([5, -1], np.int64))


# ---- Softmax, BatchNormalization ----------------------------------------------------------


@requires_onnx
@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), seeds, st.sampled_from([0.1, 1.0, 10.0, 30.0]), st.data())
def test_softmax_matches_reference_and_onnxruntime(shape, seed, scale, draw):
    axis = draw.draw(st.integers(-len(shape), len(shape) - 1))
    attrs = {"axis": axis} if axis != -1 or draw.draw(st.booleans()) else {}
    (x,) = data(seed, tuple(shape), scale=scale)
    ours = softmax(x, **attrs)
    exact = run_reference("Softmax", f64(x), attrs)
    # relative error: (x - max) rounds by u*|x - max| (an error in exp's argument); numpy's
    # float32 exp is within 2.4 ulp (measured); the float32 sum of n positive terms gamma_n;
    # one division.  Below the normal range exp may flush to zero: absolute 2**-126.
    n = shape[axis]
    d = np.abs(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    bound = (d + n + 8) * U * exact + SMALLEST_NORMAL
    assert_within(ours, exact, bound, "Softmax vs exact")
    assert_within(ours, run_onnxruntime("Softmax", [x], attrs), 2 * bound, "Softmax vs onnxruntime")


@requires_onnx
@given(st.integers(1, 2), st.integers(1, 4), st.lists(st.integers(1, 4), max_size=2), seeds,
       st.sampled_from([None, 1e-5, 1e-3, 0.5]))
def test_batch_normalization_matches_reference_and_onnxruntime(n, c, spatial, seed, epsilon):
    x, scale, bias, mean = data(seed, (n, c, *spatial), (c,), (c,), (c,))
    var = np.random.default_rng(seed).uniform(0.0, 3.0, c).astype(np.float32)
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    ours = batch_normalization(x, scale, bias, mean, var, **attrs)
    # same float32 operations in the same order as the onnx reference evaluator: bit-equal
    np.testing.assert_array_equal(ours, run_reference("BatchNormalization", [x, scale, bias, mean, var], attrs))
    # against exact: ~6 roundings on the normalised term t, one on the final sum
    x64, s64, b64, m64, v64 = f64(x, scale, bias, mean, var)
    per = lambda p: p.reshape((1, c) + (1,) * len(spatial))  # noqa: E731
    eps = float(np.float32(attrs.get("epsilon", 1e-5)))
    t = np.abs(per(s64) * (x64 - per(m64)) / np.sqrt(per(v64) + eps))
    bound = 8 * U * (t + np.abs(per(b64)))
    exact = run_reference("BatchNormalization", f64(x, scale, bias, mean, var), attrs)
    assert_within(ours, exact, bound, "BatchNormalization vs exact")
    # onnxruntime folds first (a = scale/sqrt(var+eps), b' = B - mean*a, y = x*a + b'): its
    # error is relative to |x*a| + |mean*a| + |B|, which cancellation can make >> |y|
    a = np.abs(per(s64)) / np.sqrt(per(v64) + eps)
    ort_bound = 8 * U * ((np.abs(x64) + np.abs(per(m64))) * a + np.abs(per(b64)))
    assert_within(ours, run_onnxruntime("BatchNormalization", [x, scale, bias, mean, var], attrs),
                  bound + ort_bound, "BatchNormalization vs onnxruntime")


# ---- calling convention and argument errors -----------------------------------------------


def test_keyword_defaults_equal_schema_defaults():
    for op_type, fn in FLOAT_OPS.items():
        schema = OP_SCHEMAS[op_type]
        params = inspect.signature(fn).parameters
        keyword = {k: p for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert set(keyword) == set(schema.attributes), op_type
        for name, spec in schema.attributes.items():
            default = keyword[name].default
            expected = inspect.Parameter.empty if spec.required else spec.default
            assert default == expected, (op_type, name, default, expected)
        positional = [p for p in params.values() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                               inspect.Parameter.VAR_POSITIONAL)]
        assert len(positional) == len(schema.inputs), op_type
        assert [p.kind is inspect.Parameter.VAR_POSITIONAL for p in positional] == [s.variadic for s in schema.inputs]
        for p, spec in zip(positional, schema.inputs):
            assert (p.default is None) == spec.optional, (op_type, p.name)


def test_ops_reject_non_float32_with_the_argument_name():
    x64 = np.zeros((1, 1, 3, 3))
    with pytest.raises(TypeError, match=r"Conv: argument 'x' must be float32, got float64"):
        conv(x64, np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(TypeError, match=r"Relu: argument 'x' must be a numpy.ndarray"):
        relu([1.0, 2.0])
    with pytest.raises(TypeError, match=r"Reshape: 'shape' must be a 1-D int64 array"):
        reshape(np.zeros(4, np.float32), np.array([2, 2], np.int32))


def test_ops_reject_inconsistent_shapes_clearly():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"Conv: input has 4 channels and group=2"):
        conv(x, np.zeros((2, 4, 3, 3), np.float32), group=2)
    with pytest.raises(ValueError, match=r"Gemm: inner dimensions differ"):
        gemm(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"Gemm: C of shape \(3,\) does not broadcast to \(2, 5\)"):
        gemm(np.zeros((2, 4), np.float32), np.zeros((4, 5), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"Add: shapes \(2, 3\) and \(4,\) do not broadcast"):
        add(np.zeros((2, 3), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"Softmax: axis 2 is outside"):
        softmax(np.zeros((2, 3), np.float32), axis=2)
    with pytest.raises(ValueError, match=r"explicit pads .* cannot be combined with auto_pad"):
        conv(x, np.zeros((1, 4, 3, 3), np.float32), auto_pad="VALID", pads=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"ceil_mode=1 is only defined with explicit pads"):
        max_pool(x, kernel_shape=[2, 2], auto_pad="SAME_UPPER", ceil_mode=1)
    with pytest.raises(ValueError, match=r"BatchNormalization: only inference mode"):
        z = np.zeros(4, np.float32)
        batch_normalization(x, z, z, z, z + 1, training_mode=1)


# ---- the oracle behaviour spec/model-format.md states ---------------------------------------


@requires_onnx
def test_measured_oracle_deviations_stated_in_the_spec():
    import warnings

    row = lambda n: np.arange(n, dtype=np.float32).reshape(1, 1, 1, n)  # noqa: E731
    # onnxruntime: Conv SAME_* with dilations refused
    with pytest.raises(Exception, match="Dilation not supported"):
        run_onnxruntime("Conv", [row(8), np.ones((1, 1, 1, 2), np.float32)],
                        {"auto_pad": "SAME_UPPER", "dilations": [1, 2]})
    # onnxruntime: MaxPool SAME sized without the dilation: 7 outputs where ONNX gives 8
    attrs = {"kernel_shape": [1, 2], "dilations": [1, 2], "auto_pad": "SAME_UPPER"}
    assert max_pool(row(8), **attrs).shape[-1] == 8
    assert run_onnxruntime("MaxPool", [row(8)], attrs).shape[-1] == 7
    # onnxruntime: pools with a negative SAME padding formula, or a pad >= kernel, refused
    for op in ("MaxPool", "AveragePool"):
        with pytest.raises(Exception, match="padding values must be non-negative"):
            run_onnxruntime(op, [row(5)], {"kernel_shape": [1, 1], "strides": [1, 3], "auto_pad": "SAME_UPPER"})
        with pytest.raises(Exception, match="Pad should be smaller than kernel"):
            run_onnxruntime(op, [np.ones((1, 1, 4, 4), np.float32)], {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]})
    # reference evaluator: strided MaxPool SAME_LOWER sized floor(n/s): 3 outputs, not 4
    attrs = {"kernel_shape": [1, 3], "strides": [1, 2], "auto_pad": "SAME_LOWER"}
    np.testing.assert_array_equal(max_pool(row(7), **attrs).ravel(), [1, 3, 5, 6])
    np.testing.assert_array_equal(run_onnxruntime("MaxPool", [row(7)], attrs).ravel(), [1, 3, 5, 6])
    assert run_reference("MaxPool", [row(7)], attrs).shape[-1] == 3
    # reference evaluator: unit-stride MaxPool reads pads as [top, bottom, left, right]
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    attrs = {"kernel_shape": [2, 2], "pads": [0, 1, 0, 0]}  # one column of padding on the left
    np.testing.assert_array_equal(max_pool(x, **attrs)[0, 0], [[3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(run_onnxruntime("MaxPool", [x], attrs)[0, 0], [[3, 4, 5], [6, 7, 8]])
    assert run_reference("MaxPool", [x], attrs).shape == (1, 1, 3, 2)
    # reference evaluator: negative SAME padding crops (x[1], x[4]); refquant reads x[0], x[3]
    attrs = {"kernel_shape": [1, 1], "strides": [1, 3], "auto_pad": "SAME_UPPER"}
    np.testing.assert_array_equal(run_reference("MaxPool", [row(5)], attrs).ravel(), [1, 4])
    # reference evaluator: AveragePool ceil_mode shifts windows by half the extra end padding
    x = np.array([[[[1.0, 2.0]]]], np.float32)
    attrs = {"kernel_shape": [1, 3], "strides": [1, 3], "pads": [0, 2, 0, 0], "ceil_mode": 1}
    np.testing.assert_array_equal(average_pool(x, **attrs).ravel(), [1, 2])
    np.testing.assert_array_equal(run_onnxruntime("AveragePool", [x], attrs).ravel(), [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its mean of an empty window
        np.testing.assert_array_equal(run_reference("AveragePool", [x], attrs).ravel(), [np.nan, 1])
