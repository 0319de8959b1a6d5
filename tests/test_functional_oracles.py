"""``refquant.functional`` against onnxruntime and the onnx reference evaluator, on random cases.

Each hypothesis example builds a one-node ONNX model, runs it in onnxruntime (CPU provider,
one thread, graph optimizations off) and in ``onnx.reference.ReferenceEvaluator``, and runs
the same inputs through refquant. The claims, all bit for bit:

* ``requant="float32"`` equals onnxruntime, for every dtype combination onnxruntime
  implements (QLinearMatMul/QLinearConv: u8·u8→u8, u8·s8→u8, s8·s8→s8);
* ``requant="float64"`` equals the onnx reference evaluator, for all eight combinations;
* QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger (no
  requantization) equal both — except where the two disagree with each other, which is
  asserted as the documented difference: float16 division precision, DynamicQuantizeLinear
  of an all-zero input, and onnxruntime's ``saturate=0`` quirks (E4M3FN on [480, 496),
  E5M2 on [61440, 65536)).

Scales are drawn both at random and as powers of two, so that exact .5 ties — where the
float32 and float64 conventions differ when the zero point is odd — really occur.

Where onnxruntime saturates int16 pair sums on this host (x86-64 without AVX-VNNI: uint8 ×
int8 in MatMulInteger/QLinearMatMul/QLinearConv, and ConvInteger of int8 x by uint8 w, which it
computes as w·x; ``refquant.onnx_io.integer_product_probe`` measures each once per session):
u8·s8 MatMulInteger must equal the emulation of that saturation
(``onnx_oracle.saturating_u8s8_matmul``) bit for bit; the others must equal refquant on every
output element where no pair sum can saturate in any pairing order (the elements where one can
are the only ones not compared with onnxruntime; the onnx reference evaluator checks them all).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from onnx_oracle import (  # noqa: E402
    conv_pairs_may_saturate, matmul_pairs_may_saturate, saturating_u8s8_matmul,
)
from refquant.onnx_io import exact_integer_products  # noqa: E402
from refquant import functional as F  # noqa: E402
from refquant.numerics import decode_format, expand_along_axis, float_format  # noqa: E402

BACKENDS = ("reference", "numba")  # the engine's own kernel backends

#: dtype combinations (a/x, b/w, y) onnxruntime 1.x implements for QLinearMatMul / QLinearConv
ort.set_default_logger_severity(4)  # kernels refused on purpose log at ERROR

ORT_QLINEAR_COMBOS = {("uint8", "uint8", "uint8"), ("uint8", "int8", "uint8"), ("int8", "int8", "int8")}
ALL_COMBOS = [(a, b, y) for a in ("uint8", "int8") for b in ("uint8", "int8") for y in ("uint8", "int8")]


# ------------------------------------------------------------------------------ ONNX plumbing

def _feedable(a) -> bool:
    """onnxruntime's Python API takes NumPy's own dtypes only; ml_dtypes arrays become initializers."""
    return a.dtype.kind in "biuf" and not a.dtype.name.startswith("float8")


def _model(op, inputs, out_types, attrs=None, opset=21, cast_outputs_to=None):
    """A one-node model; ``None`` inputs are absent. Optionally each output is Cast (exactly) to
    ``cast_outputs_to`` — for output types onnxruntime's Python API cannot return (int4, E5M2)."""
    names, infos, inits, feeds = [], [], [], {}
    for k, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{k}"
        names.append(name)
        a = np.asarray(a)
        if _feedable(a):
            feeds[name] = a
            infos.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
        else:
            inits.append(numpy_helper.from_array(a, name))
    outs = [f"out{k}" for k in range(len(out_types))]
    nodes = [helper.make_node(op, names, outs, **(attrs or {}))]
    if cast_outputs_to is not None:
        nodes += [helper.make_node("Cast", [o], [o + "_cast"], to=cast_outputs_to) for o in outs]
        outs, out_types = [o + "_cast" for o in outs], [cast_outputs_to] * len(outs)
    graph = helper.make_graph(nodes, op, infos, [helper.make_tensor_value_info(o, t, None)
                                                  for o, t in zip(outs, out_types)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


def _ort_can_conv(attrs) -> bool:
    """onnxruntime refuses dilations with SAME_UPPER/SAME_LOWER ("Dilation not supported")."""
    return not (attrs.get("auto_pad", "NOTSET").startswith("SAME") and max(attrs["dilations"]) > 1)


def _ort_can_quantize(block_size, scale) -> bool:
    """onnxruntime refuses a block_size with a one-element scale ("block_size must be 0 for
    per-tensor quantization"); ONNX's reference (and refquant) treat that as per tensor."""
    return not (block_size and np.size(scale) == 1)


def _ort(model, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _ref(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def _onnx_type(name: str) -> int:
    return F.ONNX_TYPE_CODES[name]


def _lsb(got, want) -> str:
    d = np.abs(np.asarray(got, np.int64) - np.asarray(want, np.int64))
    return f"{int((d != 0).sum())} of {d.size} elements differ, by at most {int(d.max(initial=0))} LSB"


def _saturates_here(ad, bd, op) -> bool:
    """Whether onnxruntime was measured to saturate int16 pair sums of ``ad × bd`` in ``op`` here."""
    return not exact_integer_products(ad, bd, op)


def _assert_same_where(got, want, unsaturated, what):
    """``_assert_same`` on the elements where no int16 pair sum can saturate."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    _assert_same(got[unsaturated], want[unsaturated], f"{what} (where no int16 pair sum saturates)")


def _assert_same(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f":
        same = got.view(f"u{got.itemsize}") == want.view(f"u{want.itemsize}")
        assert same.all(), f"{what}: {int((~same).sum())} of {got.size} values differ in bits"
    else:
        assert np.array_equal(got, want), f"{what}: {_lsb(got, want)}"


# -------------------------------------------------------------------------------- strategies

def _ints(rng, dtype, shape, centre=None, spread=None):
    """Random integers of ``dtype``: anywhere in its range, or within ``spread`` of ``centre``
    (a narrow spread keeps accumulators small, so that a multiplier of 2**-1..2**-4 puts many
    of them on exact .5 ties without saturating)."""
    info = np.iinfo(dtype)
    if spread is None:
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)
    v = np.asarray(centre, np.int64) + rng.integers(-spread, spread + 1, shape)
    return np.clip(v, info.min, info.max).astype(dtype)


def _zp(draw, dtype):
    info = np.iinfo(dtype)
    return np.dtype(dtype).type(draw(st.integers(info.min, info.max)))


@st.composite
def qlinear_scales(draw, dtype=np.float32, m_log2=(-12, -5), pow2=None):
    """``(x_scale, w_scale, y_scale)`` whose multiplier is about 2**j, j in ``m_log2``.

    Powers of two (``pow2``, or half the draws) make the multiplier an exact power of two, so
    acc · m lands on exact .5 ties; the other draws are arbitrary floats."""
    j = draw(st.integers(*m_log2))
    if pow2 or (pow2 is None and draw(st.booleans())):
        ex, ew = draw(st.integers(-8, 0)), draw(st.integers(-8, 0))
        return dtype(2.0**ex), dtype(2.0**ew), dtype(2.0 ** (ex + ew - j))
    xs = draw(st.floats(1e-3, 1.0))
    ws = draw(st.floats(1e-3, 1.0))
    ys = xs * ws * 2.0 ** (-j) * draw(st.floats(0.5, 2.0))
    return dtype(xs), dtype(ws), dtype(ys)


def _column_factors(rng, n, spread):
    """Per-channel scale factors: arbitrary, or powers of two in the tie-seeking narrow regime."""
    return rng.uniform(0.5, 2.0, n) if spread is None else 2.0 ** rng.integers(-1, 2, n)


seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------------ QLinearMatMul

@given(combo=st.sampled_from(ALL_COMBOS), seed=seeds, data=st.data(),
       m=st.integers(1, 6), k=st.integers(1, 48), n=st.integers(1, 6),
       layout=st.sampled_from(["2d", "batched_a", "batched_both", "broadcast_b", "vector_a"]),
       per_column=st.booleans(), scale_dtype=st.sampled_from([np.float32, np.float16]),
       spread=st.sampled_from([None, 1, 3]), backend=st.sampled_from(BACKENDS))
def test_qlinear_matmul_matches_onnxruntime_and_reference(combo, seed, data, m, k, n, layout, per_column,
                                                          scale_dtype, spread, backend):
    ad, bd, yd = (np.dtype(t).type for t in combo)
    rng = np.random.default_rng(seed)
    a_shape, b_shape = {"2d": ((m, k), (k, n)), "batched_a": ((2, m, k), (k, n)),
                        "batched_both": ((3, m, k), (3, k, n)), "broadcast_b": ((2, m, k), (1, k, n)),
                        "vector_a": ((k,), (k, n))}[layout]
    per_column = per_column and len(b_shape) == 2
    za, zy = np.array(_zp(data.draw, ad)), np.array(_zp(data.draw, yd))
    zb = _ints(rng, bd, (n,)) if per_column else np.array(_zp(data.draw, bd))
    a, b = _ints(rng, ad, a_shape, za, spread), _ints(rng, bd, b_shape, zb, spread)
    xs, ws, ys = data.draw(qlinear_scales(scale_dtype, m_log2=(-12, -5) if spread is None else (-4, -1),
                                          pow2=None if spread is None else True))
    ws = (ws * _column_factors(rng, n, spread)).astype(scale_dtype) if per_column else np.array(ws)
    inputs = [a, np.array(xs), za, b, ws, zb, np.array(ys), zy]
    note(f"a {a_shape} b {b_shape} combo {combo} scales {xs!r} {ws!r} {ys!r} zps {za} {zb} {zy}")

    model, feeds = _model("QLinearMatMul", inputs, [_onnx_type(combo[2])])
    want_ref = _ref(model, feeds)[0]
    got64 = F.qlinear_matmul(*inputs, requant="float64", backend=backend)
    _assert_same(got64, want_ref, "requant=float64 vs onnx reference")
    if combo in ORT_QLINEAR_COMBOS:
        got32 = F.qlinear_matmul(*inputs, requant="float32", backend=backend)
        if _saturates_here(ad, bd, "QLinearMatMul"):
            _assert_same_where(got32, _ort(model, feeds)[0], ~matmul_pairs_may_saturate(a, b),
                               "requant=float32 vs onnxruntime")
        else:
            _assert_same(got32, _ort(model, feeds)[0], "requant=float32 vs onnxruntime")


# -------------------------------------------------------------------------------- QLinearConv

@st.composite
def conv_cases(draw):
    """Shapes and attributes of a valid 2-D (sometimes 1-D) convolution."""
    one_d = draw(st.integers(0, 5)) == 0
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    if draw(st.booleans()) and group > 1:
        cin = cout = group  # depthwise
    nd = 1 if one_d else 2
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    strides = [draw(st.integers(1, 2)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nd)]
    spatial = [draw(st.integers(1, 7)) for _ in range(nd)]
    attrs = dict(group=group, kernel_shape=kernel, strides=strides, dilations=dilations)
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, 2)) for _ in range(2 * nd)]
        pads = attrs["pads"]
    else:
        attrs["auto_pad"] = auto_pad
        pads = [0] * (2 * nd)
    for i in range(nd):  # the dilated kernel must fit the padded input
        span = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("NOTSET", "VALID"):
            spatial[i] = max(spatial[i], span - pads[i] - pads[i + nd])
    n = draw(st.integers(1, 2))
    return (n, cin, *spatial), (cout, cin // group, *kernel), attrs


@given(combo=st.sampled_from(ALL_COMBOS), case=conv_cases(), seed=seeds, data=st.data(),
       per_channel=st.booleans(), with_bias=st.booleans(), spread=st.sampled_from([None, 1, 3]),
       backend=st.sampled_from(BACKENDS))
def test_qlinear_conv_matches_onnxruntime_and_reference(combo, case, seed, data, per_channel, with_bias, spread,
                                                        backend):
    xd, wd, yd = (np.dtype(t).type for t in combo)
    x_shape, w_shape, attrs = case
    cout = w_shape[0]
    rng = np.random.default_rng(seed)
    zx, zy = np.array(_zp(data.draw, xd)), np.array(_zp(data.draw, yd))
    zw = _ints(rng, wd, (cout,)) if per_channel else np.array(_zp(data.draw, wd))
    x = _ints(rng, xd, x_shape, zx, spread)
    w = _ints(rng, wd, w_shape, zw.reshape((-1,) + (1,) * (len(w_shape) - 1)), spread)
    log2_k = int(np.log2(np.prod(w_shape[1:]))) // 2
    m_log2 = (-11 - log2_k, -6 - log2_k) if spread is None else (-4, -1)
    xs, ws, ys = data.draw(qlinear_scales(np.float32, m_log2=m_log2, pow2=None if spread is None else True))
    ws = (ws * _column_factors(rng, cout, spread)).astype(np.float32) if per_channel else np.array(ws)
    bias_range = 2**14 if spread is None else 8
    bias = rng.integers(-bias_range, bias_range, cout).astype(np.int32) if with_bias else None
    inputs = [x, np.array(xs), zx, w, ws, zw, np.array(ys), zy, bias]
    note(f"x {x_shape} w {w_shape} {attrs} combo {combo}")

    model, feeds = _model("QLinearConv", inputs, [_onnx_type(combo[2])], attrs, opset=10)
    if not (per_channel and len(x_shape) == 3):  # the onnx reference reshapes per-channel
        # scales for 2-D only (np.expand_dims(w_scale, (0, 2, 3))): wrong shape for 1-D convs
        _assert_same(F.qlinear_conv(*inputs, **attrs, requant="float64", backend=backend), _ref(model, feeds)[0],
                     "requant=float64 vs onnx reference")
    if combo in ORT_QLINEAR_COMBOS and _ort_can_conv(attrs):
        got32 = F.qlinear_conv(*inputs, **attrs, requant="float32", backend=backend)
        if _saturates_here(xd, wd, "QLinearConv"):
            _assert_same_where(got32, _ort(model, feeds)[0], ~conv_pairs_may_saturate(x, w, zx, attrs),
                               "requant=float32 vs onnxruntime")
        else:
            _assert_same(got32, _ort(model, feeds)[0], "requant=float32 vs onnxruntime")


# ------------------------------------------------------------------- MatMulInteger, ConvInteger

@given(ad=st.sampled_from(["uint8", "int8"]), bd=st.sampled_from(["uint8", "int8"]), seed=seeds,
       data=st.data(), m=st.integers(1, 6), k=st.integers(1, 64), n=st.integers(1, 6),
       batched=st.booleans(), per_column=st.booleans(), with_zp=st.booleans(), backend=st.sampled_from(BACKENDS))
def test_matmul_integer_matches_onnxruntime_and_reference(ad, bd, seed, data, m, k, n, batched, per_column, with_zp,
                                                          backend):
    rng = np.random.default_rng(seed)
    a = _ints(rng, ad, (2, m, k) if batched else (m, k))
    b = _ints(rng, bd, (k, n))
    za = np.array(_zp(data.draw, np.dtype(ad).type)) if with_zp else None
    zb = (_ints(rng, bd, (n,)) if per_column else np.array(_zp(data.draw, np.dtype(bd).type))) if with_zp else None
    inputs = [a, b, za, zb]
    model, feeds = _model("MatMulInteger", inputs, [TensorProto.INT32], opset=10)
    got = F.matmul_integer(*inputs, backend=backend)
    exact = (a.astype(np.int64) - (0 if za is None else za)) @ (b.astype(np.int64) - (0 if zb is None else zb))
    _assert_same(got, exact.astype(np.int32), "matmul_integer vs int64 NumPy")
    if _saturates_here(ad, bd, "MatMulInteger") and (ad, bd) == ("uint8", "int8"):
        # onnxruntime is exactly the int16 pair saturation here
        _assert_same(saturating_u8s8_matmul(a, b, za, zb).astype(np.int32), _ort(model, feeds)[0],
                     "int16 pair saturation vs onnxruntime")
    elif _saturates_here(ad, bd, "MatMulInteger"):
        _assert_same_where(got, _ort(model, feeds)[0], ~matmul_pairs_may_saturate(a, b),
                           "matmul_integer vs onnxruntime")
    else:
        _assert_same(got, _ort(model, feeds)[0], "matmul_integer vs onnxruntime")
    _assert_same(got, _ref(model, feeds)[0], "matmul_integer vs onnx reference")


def test_onnxruntime_u8s8_products_are_exact_or_int16_pair_saturated_as_measured():
    """The measured fact, pinned either way. Where the probe finds onnxruntime's uint8 × int8
    products inexact (x86-64 without AVX-VNNI: MLAS ``vpmaddubsw``), ``[255]*4 · [127]*4`` is
    65534 (= 2 · 32767) instead of 129540, and MatMulInteger equals the int16 pair saturation
    emulated in ``onnx_oracle.saturating_u8s8_matmul`` on random operands with zero points
    (scalar and per column), odd K and batches; where the probe finds them exact, onnxruntime
    equals exact int64 arithmetic on the same operands."""
    from refquant.onnx_io import integer_product_probe

    probe = integer_product_probe()[("uint8", "int8")]
    saturates = not exact_integer_products("uint8", "int8", "MatMulInteger")
    a, b = np.full((1, 4), 255, np.uint8), np.full((4, 1), 127, np.int8)
    model, feeds = _model("MatMulInteger", [a, b], [TensorProto.INT32], opset=10)
    assert int(_ort(model, feeds)[0][0, 0]) == (65534 if saturates else 129540)
    assert probe["MatMulInteger"][0] == [65534 if saturates else 129540, 129540]
    rng = np.random.default_rng(20261207)
    for k, shape_a, zps in [(1, (3, 1), None), (2, (3, 2), "scalar"), (7, (2, 4, 7), "column"), (31, (5, 31), "scalar"),
                            (64, (6, 64), "column"), (200, (2, 200), None)]:
        a = rng.integers(0, 256, shape_a).astype(np.uint8)
        b = rng.integers(-128, 128, (k, 5)).astype(np.int8)
        za = None if zps is None else np.array(rng.integers(0, 256), np.uint8)
        zb = {None: None, "scalar": np.array(rng.integers(-128, 128), np.int8),
              "column": rng.integers(-128, 128, 5).astype(np.int8)}[zps]
        model, feeds = _model("MatMulInteger", [a, b, za, zb], [TensorProto.INT32], opset=10)
        got = _ort(model, feeds)[0]
        exact = (a.astype(np.int64) - (0 if za is None else za)) @ (b.astype(np.int64) - (0 if zb is None else zb))
        want = saturating_u8s8_matmul(a, b, za, zb) if saturates else exact
        what = "int16 pair saturation" if saturates else "exact"
        _assert_same(got, want.astype(np.int32), f"K={k}: onnxruntime vs {what}")
        if saturates and k >= 7:
            assert not np.array_equal(got, exact)  # the saturation shows on these operands


@given(xd=st.sampled_from(["uint8", "int8"]), wd=st.sampled_from(["uint8", "int8"]), case=conv_cases(),
       seed=seeds, data=st.data(), per_channel=st.booleans(), with_zp=st.booleans(), backend=st.sampled_from(BACKENDS))
def test_conv_integer_matches_onnxruntime_and_reference(xd, wd, case, seed, data, per_channel, with_zp, backend):
    x_shape, w_shape, attrs = case
    rng = np.random.default_rng(seed)
    x, w = _ints(rng, xd, x_shape), _ints(rng, wd, w_shape)
    zx = np.array(_zp(data.draw, np.dtype(xd).type)) if with_zp else None
    zw = None
    if with_zp:
        zw = _ints(rng, wd, (w_shape[0],)) if per_channel else np.array(_zp(data.draw, np.dtype(wd).type))
    inputs = [x, w, zx, zw]
    model, feeds = _model("ConvInteger", inputs, [TensorProto.INT32], attrs, opset=10)
    got = F.conv_integer(*inputs, **attrs, backend=backend)
    per_channel = with_zp and per_channel
    if not (per_channel and len(x_shape) == 3):  # the onnx reference expands a per-channel
        # w_zero_point to 4-D (np.expand_dims(zp, (1, 2, 3))), which fails for 1-D convs
        _assert_same(got, _ref(model, feeds)[0], "conv_integer vs onnx reference")
    if _ort_can_conv(attrs) and not per_channel:  # onnxruntime: "Non per-tensor quantization
        # is not supported now" for ConvInteger's w_zero_point
        if _saturates_here(xd, wd, "ConvInteger"):
            _assert_same_where(got, _ort(model, feeds)[0], ~conv_pairs_may_saturate(x, w, zx, attrs),
                               "conv_integer vs onnxruntime")
        else:
            _assert_same(got, _ort(model, feeds)[0], "conv_integer vs onnxruntime")


# ----------------------------------------------------------------------------- QuantizeLinear

INT_OUTPUTS = ["uint8", "int8", "uint16", "int16", "uint4", "int4"]
FP8_OUTPUTS = ["float8_e4m3fn", "float8_e5m2"]
#: FP6/FP4: the onnx reference implements them, onnxruntime 1.32's QuantizeLinear does not
SMALL_FLOAT_OUTPUTS = ["float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"]


@st.composite
def quantize_cases(draw, rank=None):
    """``(x_shape, scale_shape, axis, block_size)`` for per-tensor, per-axis and blocked quantization."""
    rank = rank or draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    kind = draw(st.sampled_from(["tensor", "axis", "blocked"]))
    axis = draw(st.integers(-rank, rank - 1))
    if kind == "tensor":
        return shape, (), 1, 0
    if kind == "axis":
        return shape, (shape[axis],), axis, 0
    block = draw(st.integers(1, shape[axis]))
    s_shape = list(shape)
    s_shape[axis] = -(-shape[axis] // block)
    return shape, tuple(s_shape), axis, block


def _x_values(rng, shape, scale_b, zp_range):
    """Random reals, with a quarter of them exact half-integer multiples of the scale (ties)."""
    span = max(abs(zp_range[0]), abs(zp_range[1])) * 1.5 + 2
    x = (rng.uniform(-span, span, shape) * scale_b).astype(np.float32)
    ties = ((rng.integers(-int(span), int(span) + 1, shape) + 0.5) * scale_b).astype(np.float32)
    return np.where(rng.random(shape) < 0.25, ties, x).astype(np.float32)


def _ml(name):
    """The dtype the onnx packages use for an ONNX type (ml_dtypes for those NumPy lacks)."""
    if name in ("int4", "uint4", *FP8_OUTPUTS, *SMALL_FLOAT_OUTPUTS):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


@given(out=st.sampled_from(INT_OUTPUTS + FP8_OUTPUTS + SMALL_FLOAT_OUTPUTS), case=quantize_cases(), seed=seeds,
       pow2=st.booleans(), saturate=st.sampled_from([0, 1]))
def test_quantize_linear_matches_onnxruntime_and_reference(out, case, seed, pow2, saturate):
    x_shape, s_shape, axis, block = case
    rng = np.random.default_rng(seed)
    if pow2:
        scale = (2.0 ** rng.integers(-6, 3, s_shape)).astype(np.float32)
    else:
        scale = rng.uniform(0.01, 2.0, s_shape).astype(np.float32)
    if out in FP8_OUTPUTS + SMALL_FLOAT_OUTPUTS:
        fmt_max = float_format(out).max_finite
        zp_range = (-fmt_max * 1.2, fmt_max * 1.2)
        zp = np.zeros(s_shape, _ml(out))
        zp_store = zp.view(np.uint8)
    else:
        info = ml_dtypes.iinfo(_ml(out))
        zp_range = (info.min, info.max)
        zp_store = rng.integers(info.min, info.max + 1, s_shape).astype(np.int8 if out == "int4" else
                                                                        np.uint8 if out == "uint4" else out)
        zp = zp_store.astype(_ml(out))
    scale_b = expand_along_axis(scale, x_shape, axis, block) if s_shape else scale
    x = _x_values(rng, x_shape, scale_b, zp_range)
    attrs = dict(axis=axis, block_size=block, saturate=saturate)
    got = F.quantize_linear(x, scale, zp_store, **attrs, output_dtype=out)
    model, feeds = _model("QuantizeLinear", [x, scale, zp], [_onnx_type(out)], attrs)

    ref = _ref(model, feeds)[0]
    _assert_same(_comparable(got, out), _comparable(ref, out), "quantize_linear vs onnx reference")

    if out in SMALL_FLOAT_OUTPUTS:
        return
    cast = TensorProto.FLOAT if out in ("int4", "uint4", "float8_e5m2") else None
    if cast is not None:
        model, feeds = _model("QuantizeLinear", [x, scale, zp], [_onnx_type(out)], attrs, cast_outputs_to=cast)
    if not _ort_can_quantize(block, scale):
        return
    o = _ort(model, feeds)[0]
    want = o if cast is None else o.astype(np.float32)
    mine = _comparable(got, out) if cast is None else _decoded(got, out)
    if out in FP8_OUTPUTS and not saturate:
        # onnxruntime's two documented quirks (saturate=0), measured on every float32 there:
        # E4M3FN |x/s| in [480, 496) gives ±448 where rounding (ONNX, ml_dtypes) gives NaN;
        # E5M2 |x/s| in [61440, 65536) gives NaN where rounding gives ±inf
        q = np.abs(x.astype(np.float32) / np.asarray(scale_b, np.float32))
        if out == "float8_e4m3fn":
            quirk = (q >= 480) & (q < 496)
            assert np.all(want[quirk] & 0x7F == 0x7E) and np.all(mine[quirk] & 0x7F == 0x7F)
        else:
            quirk = (q >= 61440) & (q < 65536)
            assert np.all(np.isnan(want[quirk])) and np.all(np.isinf(mine[quirk]))
        mine, want = mine[~quirk], want[~quirk]
    _assert_same(mine, want, "quantize_linear vs onnxruntime")


def _comparable(a, out):
    """Our / the reference's output as plain NumPy: int values or uint8 bit patterns."""
    a = np.asarray(a)
    if a.dtype.name in FP8_OUTPUTS + SMALL_FLOAT_OUTPUTS:
        return a.view(np.uint8)
    if a.dtype.name in ("int4", "uint4"):
        return a.astype(np.int8 if a.dtype.name == "int4" else np.uint8)
    return a


def _decoded(got, out):
    """Our output as the float32 values onnxruntime's Cast to FLOAT gives."""
    return decode_format(got, out) if out in FP8_OUTPUTS else got.astype(np.float32)


@given(case=quantize_cases(), seed=seeds, out=st.sampled_from(["uint8", "int8"]))
def test_quantize_linear_float16_precision_is_onnx_scale_type(case, seed, out):
    """float16 x and scale: refquant's default (division in float16, the scale's type) equals
    the onnx reference; ``precision="float32"`` equals onnxruntime, which widens."""
    x_shape, s_shape, axis, block = case
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.01, 1.0, s_shape).astype(np.float16)
    zp = rng.integers(np.iinfo(out).min, np.iinfo(out).max + 1, s_shape).astype(out)
    x = (rng.standard_normal(x_shape) * 60).astype(np.float16)
    attrs = dict(axis=axis, block_size=block)
    model, feeds = _model("QuantizeLinear", [x, scale, zp], [_onnx_type(out)], attrs)
    _assert_same(F.quantize_linear(x, scale, zp, **attrs), _ref(model, feeds)[0],
                 "quantize_linear float16 vs onnx reference")
    if not _ort_can_quantize(block, scale):
        return
    _assert_same(F.quantize_linear(x, scale, zp, **attrs, precision="float32"), _ort(model, feeds)[0],
                 "quantize_linear precision=float32 vs onnxruntime")


def test_quantize_linear_float32_x_float16_scale_at_opset_23():
    """The other way round: float32 x with a float16 scale (opset 23). onnxruntime divides in
    float16 — refquant's default — and the onnx reference in float32 (``precision="float32"``)."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(20000) * 30).astype(np.float32)
    scale, zp = np.array(0.0999, np.float16), np.array(128, np.uint8)
    model, feeds = _model("QuantizeLinear", [x, scale, zp], [TensorProto.UINT8], opset=23)
    o, r = _ort(model, feeds)[0], _ref(model, feeds)[0]
    _assert_same(F.quantize_linear(x, scale, zp), o, "default (float16 division) vs onnxruntime")
    _assert_same(F.quantize_linear(x, scale, zp, precision="float32"), r, "float32 division vs onnx reference")
    assert (o != r).sum() > 20  # the two oracles really differ here (measured: ~0.7% of elements)


# --------------------------------------------------------------------------- DequantizeLinear

@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # the onnx reference's float16 ±inf
@given(xt=st.sampled_from(["uint8", "int8", "uint16", "int16", "int32", "uint4", "int4"] + FP8_OUTPUTS),
       case=quantize_cases(), seed=seeds, scale_dtype=st.sampled_from([np.float32, np.float16]))
def test_dequantize_linear_matches_onnxruntime_and_reference(xt, case, seed, scale_dtype):
    x_shape, s_shape, axis, block = case
    rng = np.random.default_rng(seed)
    if xt == "int32":
        s_shape, axis, block = (), 1, 0  # int32 is per tensor without a zero point (ONNX)
    scale = rng.uniform(0.001, 2.0, s_shape).astype(scale_dtype)
    if xt in FP8_OUTPUTS:
        bits = rng.integers(0, 256, x_shape).astype(np.uint8)
        bits = np.where(np.isnan(decode_format(bits, xt)), np.uint8(0), bits)  # NaN is NaN in all three
        x_onnx, x_mine, zp_onnx, zp_mine = bits.view(_ml(xt)), bits, None, None
    else:
        info = ml_dtypes.iinfo(_ml(xt)) if xt in ("int4", "uint4") else np.iinfo(xt)
        store = np.int8 if xt == "int4" else np.uint8 if xt == "uint4" else xt
        x_mine = rng.integers(info.min, info.max + 1, x_shape).astype(store)
        zp_mine = None if xt == "int32" else rng.integers(info.min, info.max + 1, s_shape).astype(store)
        x_onnx = x_mine.astype(_ml(xt))
        zp_onnx = None if zp_mine is None else zp_mine.astype(_ml(xt))
    attrs = dict(axis=axis, block_size=block)
    got = F.dequantize_linear(x_mine, scale, zp_mine, **attrs, x_dtype=xt)
    model, feeds = _model("DequantizeLinear", [x_onnx, scale, zp_onnx], [_onnx_type(np.dtype(scale_dtype).name)], attrs)
    _assert_same(got, _ref(model, feeds)[0], "dequantize_linear vs onnx reference")
    if _ort_can_quantize(block, scale):
        _assert_same(got, _ort(model, feeds)[0], "dequantize_linear vs onnxruntime")


# ---------------------------------------------------------------------- DynamicQuantizeLinear

DQL_OUTPUTS = [TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8]

@given(seed=seeds, shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       kind=st.sampled_from(["mixed", "positive", "negative", "constant", "zeros", "ties"]))
def test_dynamic_quantize_linear_matches_onnxruntime_and_reference(seed, shape, kind):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    if kind == "positive":
        x = np.abs(x)
    elif kind == "negative":
        x = -np.abs(x)
    elif kind == "constant":
        x = np.full(shape, x.reshape(-1)[0], np.float32)
    elif kind == "zeros":
        x = np.zeros(shape, np.float32)
    elif kind == "ties":  # range [-25, 38.75]: scale 63.75/255 = 1/4, zero point 100, x/scale on .5
        x = ((rng.integers(-100, 155, shape) + 0.5) / 4).astype(np.float32)
        x.flat[0], x.flat[-1] = -25.0, 38.75
    y, s, z = F.dynamic_quantize_linear(x)
    model, feeds = _model("DynamicQuantizeLinear", [x], DQL_OUTPUTS, opset=11)
    for got, want, what in zip((y, s, z), _ort(model, feeds), ("y", "y_scale", "y_zero_point")):
        _assert_same(got, want, f"dynamic_quantize_linear {what} vs onnxruntime")
    ref = _ref(model, feeds)
    if kind == "zeros":  # documented: the onnx reference divides 1 by 255 there
        assert float(ref[1]) == np.float32(1) / np.float32(255) and float(s) == 1.0
        return
    for got, want, what in zip((y, s, z), ref, ("y", "y_scale", "y_zero_point")):
        _assert_same(got, want, f"dynamic_quantize_linear {what} vs onnx reference")


def test_dynamic_quantize_linear_empty_input_is_onnxruntimes():
    x = np.zeros((0, 3), np.float32)
    y, s, z = F.dynamic_quantize_linear(x)
    model, feeds = _model("DynamicQuantizeLinear", [x], DQL_OUTPUTS, opset=11)
    o = _ort(model, feeds)
    assert y.shape == (0, 3) and float(s) == float(o[1]) == 1.0 and int(z) == int(o[2]) == 0
    with pytest.raises(ValueError):  # the onnx reference has no answer here
        _ref(model, feeds)


# ------------------------------------------------ where the two oracles disagree, each mode wins

def test_odd_zero_point_ties_split_the_oracles_and_each_mode_matches_its_own():
    """m = 1/2 and an odd output zero point: every odd accumulator is an exact tie.
    onnxruntime rounds it to even before adding z_y, the onnx reference after."""
    rng = np.random.default_rng(3)
    a = rng.integers(100, 156, (8, 16)).astype(np.uint8)
    b = rng.integers(100, 156, (16, 8)).astype(np.uint8)
    inputs = [a, np.array(0.5, np.float32), np.array(128, np.uint8), b, np.array(0.25, np.float32),
              np.array(128, np.uint8), np.array(0.25, np.float32), np.array(7, np.uint8)]
    model, feeds = _model("QLinearMatMul", inputs, [TensorProto.UINT8])
    o, r = _ort(model, feeds)[0], _ref(model, feeds)[0]
    assert (o != r).sum() > 10 and np.abs(o.astype(int) - r).max() == 1
    _assert_same(F.qlinear_matmul(*inputs, requant="float32"), o, "float32 vs onnxruntime")
    _assert_same(F.qlinear_matmul(*inputs, requant="float64"), r, "float64 vs onnx reference")

    x = rng.integers(120, 136, (1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(-8, 8, (3, 4, 3, 3)).astype(np.int8)
    inputs = [x, np.array(0.5, np.float32), np.array(128, np.uint8), w, np.array(0.5, np.float32),
              np.array(0, np.int8), np.array(0.5, np.float32), np.array(11, np.uint8)]
    attrs = dict(pads=[1, 1, 1, 1])
    model, feeds = _model("QLinearConv", inputs, [TensorProto.UINT8], attrs, opset=10)
    o, r = _ort(model, feeds)[0], _ref(model, feeds)[0]
    assert (o != r).sum() > 10 and np.abs(o.astype(int) - r).max() == 1
    _assert_same(F.qlinear_conv(*inputs, **attrs, requant="float32"), o, "float32 vs onnxruntime")
    _assert_same(F.qlinear_conv(*inputs, **attrs, requant="float64"), r, "float64 vs onnx reference")


def test_float16_scales_split_the_oracles_and_each_mode_matches_its_own():
    """float16 scales: onnxruntime widens them (multiplier 0.0043494077 in float32), the onnx
    reference multiplies them in float16 (0.0043525696); about 3% of outputs differ by 1."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 32)).astype(np.uint8)
    b = rng.integers(0, 256, (32, 48)).astype(np.uint8)
    h = np.float16
    inputs = [a, np.array(0.0066, h), np.array(113, np.uint8), b, np.array(0.00705, h),
              np.array(114, np.uint8), np.array(0.0107, h), np.array(118, np.uint8)]
    model, feeds = _model("QLinearMatMul", inputs, [TensorProto.UINT8])
    o, r = _ort(model, feeds)[0], _ref(model, feeds)[0]
    assert 50 < (o != r).sum() < 200 and np.abs(o.astype(int) - r).max() == 1  # measured: 92 of 3072
    _assert_same(F.qlinear_matmul(*inputs, requant="float32"), o, "float32 vs onnxruntime")
    _assert_same(F.qlinear_matmul(*inputs, requant="float64"), r, "float64 vs onnx reference")
