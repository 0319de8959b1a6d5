"""Every backward against central finite differences in float64.

The backward functions run in float64 here (they take the dtype of their inputs). The
function that is differentiated numerically is an **independent float64 forward** written in
this file from the ONNX definitions (windows by fancy indexing, not the engine's im2col), and
each test first checks that it agrees with the engine's float32 forward, so the derivative is
of the same function. For the ops written for training (BatchNormalization in training mode,
softmax cross-entropy) the numerical derivative is of the engine's own float64 forward, and the
forward itself is checked against the onnx reference evaluator and SciPy.

With ``L(p) = sum(dy * f(p))`` for a random ``dy``, the check compares ``dL/dp`` from the
backward with ``(L(p + h e) - L(p - h e)) / 2h`` on up to 60 coordinates ``e`` and on two random
directions. Tolerances, and why:

* linear and bilinear ops (Conv, Gemm, MatMul, Add, AveragePool, GlobalAveragePool, Flatten,
  Reshape): the central difference of a function linear in the perturbed argument is exact in
  exact arithmetic, so only float64 rounding of ``L`` remains, about ``1e-16 · sum|terms| / h``
  ≈ 1e-11 with ``h = 1e-3``; we require ``|fd - g| <= 1e-7 · (1 + |g|)``.
* piecewise-linear ops (Relu, MaxPool): exact too as long as no ``x ± h`` crosses a kink; the
  inputs are distinct multiples of 1/16 (offset away from 0), ``h = 1e-3``, so none does.
  Same tolerance.
* smooth nonlinear ops (training BatchNormalization, softmax cross-entropy): truncation error
  ``h²/6 · |f'''|`` ≈ 2e-10 · |f'''| and rounding ≈ 1e-16 · |L| / h with ``h = 1e-5``; with
  batch variances kept ≥ 0.1, we require ``|fd - g| <= 1e-6 · (1 + |g|)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import log_softmax as scipy_log_softmax

from refquant.graph import GraphBuilder
from refquant.ops import (
    add,
    average_pool,
    conv,
    flatten,
    gemm,
    global_average_pool,
    matmul,
    max_pool,
    relu,
    reshape,
)
from refquant.ops.batchnorm import batch_normalization_train, batch_normalization_train_backward
from refquant.ops.conv import conv_backward
from refquant.ops.elementwise import add_backward, relu_backward
from refquant.ops.gemm import gemm_backward, matmul_backward
from refquant.ops.padding import AUTO_PAD_MODES, check_pool_windows, window_plan
from refquant.ops.pool import average_pool_backward, global_average_pool_backward, max_pool_backward
from refquant.ops.shape import flatten_backward, reshape_backward, reshape_target
from refquant.train.autodiff import backward, forward, trainable_parameters
from refquant.train.loss import log_softmax, softmax_cross_entropy, softmax_cross_entropy_backward

LINEAR_TOL = 1e-7
SMOOTH_TOL = 1e-6
seeds = st.integers(0, 2**32 - 1)
pair = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=2, max_size=2)  # noqa: E731


# ---- independent float64 forwards (ONNX definitions) --------------------------------------------


def _padded(x, plan, value):
    top, left, bottom, right = plan.pads
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom + plan.extra_end[0], w + left + right + plan.extra_end[1]), value)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _tap(xpad, plan, i, j, strides, dilations):
    """xpad[n, c, oh*sh + i*dh, ow*sw + j*dw] for all (oh, ow), by fancy indexing."""
    (sh, sw), (dh, dw) = strides or (1, 1), dilations or (1, 1)
    rows = i * dh + sh * np.arange(plan.out[0])
    cols = j * dw + sw * np.arange(plan.out[1])
    return xpad[:, :, rows[:, None], cols[None, :]]


def conv64(x, w, b=None, *, group=1, auto_pad="NOTSET", pads=None, strides=None, dilations=None):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    plan = window_plan("Conv", (h, wd), (kh, kw), auto_pad=auto_pad, pads=pads, strides=strides,
                       dilations=dilations)
    xpad = _padded(x, plan, 0.0)
    y = np.zeros((n, m, *plan.out))
    mg = m // group
    for g in range(group):
        xs = xpad[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", _tap(xs, plan, i, j, strides, dilations),
                                                       w[g * mg:(g + 1) * mg, :, i, j])
    return y if b is None else y + b[None, :, None, None]


def max_pool64(x, *, kernel_shape, auto_pad="NOTSET", ceil_mode=0, dilations=None, pads=None, strides=None):
    plan = window_plan("MaxPool", x.shape[2:], tuple(kernel_shape), auto_pad=auto_pad, pads=pads,
                       strides=strides, dilations=dilations, ceil_mode=ceil_mode)
    xpad = _padded(x, plan, -np.inf)
    taps = [_tap(xpad, plan, i, j, strides, dilations) for i in range(kernel_shape[0]) for j in range(kernel_shape[1])]
    return np.max(np.stack(taps), axis=0)


def average_pool64(x, *, kernel_shape, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, pads=None,
                   strides=None):
    plan = window_plan("AveragePool", x.shape[2:], tuple(kernel_shape), auto_pad=auto_pad, pads=pads,
                       strides=strides, ceil_mode=ceil_mode)
    # the divisor by counting ones: over the input only, or over the input and its declared pads
    ones = np.ones((1, 1) + x.shape[2:])
    top, left, bottom, right = plan.pads
    counted = _padded(ones, plan, 1.0 if count_include_pad else 0.0)
    if count_include_pad:
        h, w = counted.shape[2:]
        counted[:, :, h - plan.extra_end[0]:, :] = 0.0
        counted[:, :, :, w - plan.extra_end[1]:] = 0.0
    xpad = _padded(x, plan, 0.0)
    pairs = [(i, j) for i in range(kernel_shape[0]) for j in range(kernel_shape[1])]
    total = sum(_tap(xpad, plan, i, j, strides, None) for i, j in pairs)
    count = sum(_tap(counted, plan, i, j, strides, None) for i, j in pairs)
    return total / count


def gemm64(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):  # noqa: N803
    y = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return y if c is None or beta == 0.0 else y + beta * c


ORACLE64 = {
    "Conv": conv64,
    "Gemm": gemm64,
    "MatMul": np.matmul,
    "Relu": lambda x: np.maximum(x, 0.0),
    "MaxPool": max_pool64,
    "AveragePool": average_pool64,
    "GlobalAveragePool": lambda x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
    "Add": lambda a, b: a + b,
    "Flatten": lambda x, axis=1: x.reshape(math.prod(x.shape[:axis % x.ndim if axis < 0 else axis]), -1),
    "Reshape": lambda x, shape: x.reshape(reshape_target(x.shape, shape)),
}


# ---- the finite-difference check ----------------------------------------------------------------


def check_gradient(loss, args: list, grads: list, *, h: float, tol: float, seed: int, what: str) -> None:
    """Compare ``grads[k]`` with central differences of ``loss(*args)`` for every array arg k."""
    rng = np.random.default_rng(seed)
    for k, (a, g) in enumerate(zip(args, grads)):
        if g is None:
            continue
        assert g.shape == a.shape and g.dtype == np.float64, f"{what}: gradient {k} is {g.dtype}{g.shape}"

        def at(delta):
            moved = list(args)
            moved[k] = a + delta
            return loss(*moved)

        flat = range(a.size) if a.size <= 60 else rng.choice(a.size, 60, replace=False)
        for idx in flat:
            e = np.zeros(a.size)
            e[idx] = h
            e = e.reshape(a.shape)
            fd = (at(e) - at(-e)) / (2 * h)
            exact = g.reshape(-1)[idx]
            assert abs(fd - exact) <= tol * (1 + abs(exact)), \
                f"{what}: d/d arg{k}[{np.unravel_index(idx, a.shape)}]: backward {exact!r}, finite difference {fd!r}"
        for _ in range(2):
            v = rng.standard_normal(a.shape)
            fd = (at(h * v) - at(-h * v)) / (2 * h)
            exact = float((g * v).sum())
            scale = float(np.abs(g * v).sum())
            assert abs(fd - exact) <= tol * (1 + scale), \
                f"{what}: directional derivative of arg{k}: backward {exact!r}, finite difference {fd!r}"


def dot_loss(f, dy):
    return lambda *args: float((dy * f(*args)).sum())


def assert_forward_agrees(ours32, oracle64, what: str):
    """The float64 oracle is the function the engine computes (to float32 rounding)."""
    scale = 1.0 + float(np.abs(oracle64).max(initial=0.0))
    np.testing.assert_allclose(ours32.astype(np.float64), oracle64, rtol=0, atol=2e-5 * scale, err_msg=what)


def distinct_grid(rng, shape):
    """Distinct values (k + 1/2) / 16, randomly placed: no ties, no zeros, gaps of 1/16."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n // 2 + 0.5) / 16.0).reshape(shape)


# ---- Conv -----------------------------------------------------------------------------------------


@given(seed=seeds, n=st.integers(1, 2), cg=st.integers(1, 3), mg=st.integers(1, 3), group=st.integers(1, 3),
       size=pair(1, 7), kernel=pair(1, 3), strides=pair(1, 3), dilations=pair(1, 2),
       pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), auto_pad=st.sampled_from(AUTO_PAD_MODES),
       bias=st.booleans())
def test_conv_backward(seed, n, cg, mg, group, size, kernel, strides, dilations, pads, auto_pad, bias):
    attrs = dict(group=group, strides=strides, dilations=dilations, auto_pad=auto_pad,
                 pads=pads if auto_pad == "NOTSET" else None)
    try:
        window_plan("Conv", tuple(size), tuple(kernel), auto_pad=auto_pad, pads=attrs["pads"],
                    strides=strides, dilations=dilations)
    except ValueError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * group, *size))
    w = rng.standard_normal((mg * group, cg, *kernel))
    b = rng.standard_normal(mg * group) if bias else None
    y = conv64(x, w, b, **attrs)
    assert_forward_agrees(conv(*[None if a is None else a.astype(np.float32) for a in (x, w, b)], **attrs), y,
                          "Conv forward")
    dy = rng.standard_normal(y.shape)
    grads = conv_backward(dy, x, w, b, **attrs)
    check_gradient(dot_loss(lambda *p: conv64(*p, **attrs), dy), [x, w] + ([b] if bias else []),
                   list(grads[:2]) + ([grads[2]] if bias else []), h=1e-3, tol=LINEAR_TOL, seed=seed, what="Conv")
    assert (grads[2] is None) == (not bias)


# ---- Gemm, MatMul ---------------------------------------------------------------------------------


@given(seed=seeds, m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5), trans_a=st.integers(0, 1),
       trans_b=st.integers(0, 1), alpha=st.sampled_from([1.0, 0.5, -2.0]), beta=st.sampled_from([1.0, 0.0, 3.0]),
       c_kind=st.sampled_from(["none", "row", "1xN", "full", "column", "scalar"]))
def test_gemm_backward(seed, m, k, n, trans_a, trans_b, alpha, beta, c_kind):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    c_shape = {"none": None, "row": (n,), "1xN": (1, n), "full": (m, n), "column": (m, 1), "scalar": ()}[c_kind]
    c = None if c_shape is None else rng.standard_normal(c_shape)
    attrs = dict(alpha=alpha, beta=beta, transA=trans_a, transB=trans_b)
    y = gemm64(a, b, c, **attrs)
    assert_forward_agrees(gemm(*[None if t is None else np.asarray(t, np.float32) for t in (a, b, c)], **attrs), y,
                          "Gemm forward")
    dy = rng.standard_normal(y.shape)
    da, db, dc = gemm_backward(dy, a, b, c, **attrs)
    args, grads = [a, b], [da, db]
    if c is not None:
        args.append(c)
        grads.append(dc)
        if beta == 0.0:
            assert not dc.any()
    else:
        assert dc is None
    check_gradient(dot_loss(lambda *p: gemm64(*p, **attrs), dy), args, grads, h=1e-3, tol=LINEAR_TOL, seed=seed,
                   what="Gemm")


matmul_shapes = st.sampled_from([
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)), ((1, 2, 3), (4, 3, 2)), ((2, 1, 2, 3), (3, 3, 2)), ((4, 2, 3), (4, 3, 1)),
])


@given(seed=seeds, shapes=matmul_shapes)
def test_matmul_backward(seed, shapes):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes)
    y = np.matmul(a, b)
    assert_forward_agrees(matmul(a.astype(np.float32), b.astype(np.float32)), y, "MatMul forward")
    dy = rng.standard_normal(y.shape)
    grads = matmul_backward(dy, a, b)
    check_gradient(dot_loss(np.matmul, dy), [a, b], list(grads), h=1e-3, tol=LINEAR_TOL, seed=seed, what="MatMul")


# ---- Relu, Add ------------------------------------------------------------------------------------


@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_relu_backward(seed, shape):
    rng = np.random.default_rng(seed)
    x = distinct_grid(rng, shape)
    assert_forward_agrees(relu(x.astype(np.float32)), np.maximum(x, 0), "Relu forward")
    dy = rng.standard_normal(x.shape)
    (dx,) = relu_backward(dy, x)
    check_gradient(dot_loss(lambda t: np.maximum(t, 0.0), dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed,
                   what="Relu")


def test_relu_backward_at_zero_is_zero():
    (dx,) = relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]))
    assert dx.tolist() == [0.0, 0.0, 1.0]


@st.composite
def broadcast_pair(draw):
    out = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))

    def operand():
        keep = draw(st.integers(0, len(out)))
        dims = out[len(out) - keep:]
        return tuple(1 if draw(st.booleans()) else d for d in dims)

    return operand(), operand()


@given(seed=seeds, shapes=broadcast_pair())
def test_add_backward_with_broadcasting(seed, shapes):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes)
    y = a + b
    assert_forward_agrees(add(np.asarray(a, np.float32), np.asarray(b, np.float32)), y, "Add forward")
    dy = rng.standard_normal(y.shape)
    da, db = add_backward(dy, a, b)
    assert da.shape == a.shape and db.shape == b.shape
    check_gradient(dot_loss(np.add, dy), [a, b], [da, db], h=1e-3, tol=LINEAR_TOL, seed=seed, what="Add")


# ---- pools ----------------------------------------------------------------------------------------


def _pool_case(size, kernel, strides, pads, auto_pad, ceil_mode, dilations=None):
    pads = pads if auto_pad == "NOTSET" else None
    ceil_mode = ceil_mode if auto_pad == "NOTSET" else 0
    try:
        plan = window_plan("Pool", tuple(size), tuple(kernel), auto_pad=auto_pad, pads=pads, strides=strides,
                           dilations=dilations, ceil_mode=ceil_mode)
        check_pool_windows("Pool", tuple(size), tuple(kernel), plan, strides, dilations)
    except ValueError:
        assume(False)
    return pads, ceil_mode


pool_args = dict(seed=seeds, n=st.integers(1, 2), c=st.integers(1, 3), size=pair(1, 7), kernel=pair(1, 3),
                 strides=pair(1, 3), pads=st.lists(st.integers(0, 2), min_size=4, max_size=4),
                 auto_pad=st.sampled_from(AUTO_PAD_MODES), ceil_mode=st.integers(0, 1))


@given(dilations=pair(1, 2), **pool_args)
def test_max_pool_backward(seed, n, c, size, kernel, strides, pads, auto_pad, ceil_mode, dilations):
    pads, ceil_mode = _pool_case(size, kernel, strides, pads, auto_pad, ceil_mode, dilations)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, auto_pad=auto_pad, ceil_mode=ceil_mode,
                 dilations=dilations)
    rng = np.random.default_rng(seed)
    x = distinct_grid(rng, (n, c, *size))
    y = max_pool64(x, **attrs)
    assert_forward_agrees(max_pool(x.astype(np.float32), **attrs), y, "MaxPool forward")
    dy = rng.standard_normal(y.shape)
    (dx,) = max_pool_backward(dy, x, **attrs)
    check_gradient(dot_loss(lambda t: max_pool64(t, **attrs), dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed,
                   what="MaxPool")


def test_max_pool_backward_ties_go_to_the_first_tap():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    (dx,) = max_pool_backward(np.array([[[[5.0]]]]), x, kernel_shape=[2, 2])
    assert dx.tolist() == [[[[0.0, 5.0], [0.0, 0.0]]]]


@given(count_include_pad=st.integers(0, 1), **pool_args)
def test_average_pool_backward(seed, n, c, size, kernel, strides, pads, auto_pad, ceil_mode, count_include_pad):
    pads, ceil_mode = _pool_case(size, kernel, strides, pads, auto_pad, ceil_mode)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, auto_pad=auto_pad, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, *size))
    y = average_pool64(x, **attrs)
    assert_forward_agrees(average_pool(x.astype(np.float32), **attrs), y, "AveragePool forward")
    dy = rng.standard_normal(y.shape)
    (dx,) = average_pool_backward(dy, x, **attrs)
    check_gradient(dot_loss(lambda t: average_pool64(t, **attrs), dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed,
                   what="AveragePool")


@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=3, max_size=4))
def test_global_average_pool_backward(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    f = ORACLE64["GlobalAveragePool"]
    assert_forward_agrees(global_average_pool(x.astype(np.float32)), f(x), "GlobalAveragePool forward")
    dy = rng.standard_normal(f(x).shape)
    (dx,) = global_average_pool_backward(dy, x)
    check_gradient(dot_loss(f, dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed, what="GlobalAveragePool")


# ---- Flatten, Reshape ---------------------------------------------------------------------------


@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_flatten_backward(seed, shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = flatten(x.astype(np.float32), axis=axis)
    dy = rng.standard_normal(y.shape)
    (dx,) = flatten_backward(dy, x, axis=axis)
    f = ORACLE64["Flatten"]
    assert np.array_equal(y, f(x, axis).astype(np.float32))
    check_gradient(dot_loss(lambda t: f(t, axis), dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed, what="Flatten")


@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_reshape_backward(seed, shape, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    target = np.array(data.draw(st.sampled_from([[-1], [1, -1], [0, -1], [-1, 1], [x.size]])), np.int64)
    f = ORACLE64["Reshape"]
    assert np.array_equal(reshape(x.astype(np.float32), target), f(x, target).astype(np.float32))
    dy = rng.standard_normal(f(x, target).shape)
    dx, dshape = reshape_backward(dy, x, target)
    assert dshape is None
    check_gradient(dot_loss(lambda t: f(t, target), dy), [x], [dx], h=1e-3, tol=LINEAR_TOL, seed=seed,
                   what="Reshape")


# ---- BatchNormalization in training mode -----------------------------------------------------


@given(seed=seeds, shape=st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 2, 1, 3), (5, 1), (2, 4, 3, 1)]),
       momentum=st.sampled_from([0.9, 0.5, 0.0]))
def test_batch_normalization_train_backward(seed, shape, momentum):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    axes = (0,) + tuple(range(2, x.ndim))
    assume(x.var(axis=axes).min() > 0.1)
    c = shape[1]
    scale, bias = rng.standard_normal(c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    attrs = dict(epsilon=1e-5, momentum=momentum)
    y, _, _ = batch_normalization_train(x, scale, bias, mean, var, **attrs)
    dy = rng.standard_normal(y.shape)
    dx, dscale, dbias, dmean, dvar = batch_normalization_train_backward(dy, x, scale, bias, mean, var, **attrs)
    assert dmean is None and dvar is None
    f = lambda *p: batch_normalization_train(*p, mean, var, **attrs)[0]  # noqa: E731
    check_gradient(dot_loss(f, dy), [x, scale, bias], [dx, dscale, dbias], h=1e-5, tol=SMOOTH_TOL, seed=seed,
                   what="BatchNormalization (training)")


def test_batch_normalization_train_matches_the_onnx_reference_evaluator():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    params = [rng.standard_normal(3).astype(np.float32) for _ in range(3)] + [rng.uniform(0.5, 2, 3).astype(np.float32)]
    names = ["x", "scale", "bias", "mean", "var"]
    node = helper.make_node("BatchNormalization", names, ["y", "rm", "rv"], epsilon=1e-5, momentum=0.8,
                            training_mode=1)
    infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip(names, [x, *params])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm", "rv")]
    model = helper.make_model(helper.make_graph([node], "bn", infos, outs),
                              opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    expected = ReferenceEvaluator(model).run(None, dict(zip(names, [x, *params])))
    ours = batch_normalization_train(x, *params, epsilon=1e-5, momentum=0.8)
    assert onnx is not None
    for what, a, b in zip(("y", "running_mean", "running_var"), ours, expected):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=what)


# ---- softmax cross-entropy ----------------------------------------------------------------------


@given(seed=seeds, n=st.integers(1, 5), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_softmax_cross_entropy_backward(seed, n, k, scale):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * scale
    t = rng.integers(0, k, n)
    expected = -scipy_log_softmax(z, axis=1)[np.arange(n), t].mean()
    assert abs(softmax_cross_entropy(z, t) - expected) <= 1e-12 * (1 + abs(expected))
    g = softmax_cross_entropy_backward(z, t)
    check_gradient(lambda q: softmax_cross_entropy(q, t), [z], [g], h=1e-5, tol=SMOOTH_TOL, seed=seed,
                   what="softmax cross-entropy")


def test_log_softmax_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4]], np.float32)
    out = log_softmax(z)
    assert np.isfinite(out).all() and out[0, 0] == 0.0 and out[0, 1] == -1e4
    assert softmax_cross_entropy(z, np.array([0])) == 0.0


@pytest.mark.parametrize("labels, message", [(np.array([3]), r"\[0, 3\)"), (np.array([0.5]), "integers"),
                                             (np.array([0, 1]), "one per row")])
def test_softmax_cross_entropy_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(np.zeros((1, 3), np.float32), labels)


# ---- argument checks ------------------------------------------------------------------------------


def test_backward_rejects_a_gradient_of_the_wrong_shape():
    x, w = np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"Conv backward: the output gradient has shape \(1, 2, 4, 4\), "
                                         r"but the forward output has shape \(1, 2, 2, 2\)"):
        conv_backward(np.zeros((1, 2, 4, 4)), x, w)


def test_backward_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="Relu backward: argument 'x' is float32 but the others are float64"):
        relu_backward(np.zeros(2), np.zeros(2, np.float32))


# ---- the graph backward: the same checks through a whole graph ---------------------------------


def _residual_graph(rng):
    """conv–BN(train)–relu, a residual Add (one tensor read twice), max-pool, GAP, flatten, Gemm."""
    b = GraphBuilder("g")
    x = b.input("x", ["N", 2, 5, 5])
    h = b.relu(b.conv(x, rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), pads=[1, 1, 1, 1]))
    r = b.batch_normalization(b.conv(h, rng.standard_normal((3, 3, 3, 3)), None, pads=[1, 1, 1, 1]),
                              rng.standard_normal(3), rng.standard_normal(3), np.zeros(3), np.ones(3))
    h = b.relu(b.add(h, r))
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    h = b.flatten(b.global_average_pool(h))
    y = b.gemm(h, rng.standard_normal((4, 3)), rng.standard_normal(4), transB=1)
    return b.build(y)


def test_graph_backward_matches_finite_differences_of_the_whole_loss():
    rng = np.random.default_rng(3)
    g = _residual_graph(rng)
    x = rng.standard_normal((3, 2, 5, 5))
    labels = np.array([0, 3, 1])
    params = dict(g.initializers)
    wanted = trainable_parameters(g)
    assert set(wanted) == set(params) - {n.inputs[i] for n in g.nodes if n.op_type == "BatchNormalization"
                                         for i in (3, 4)}

    def loss(*values):
        p = dict(params, **dict(zip(wanted, values)))
        logits = forward(g, p, {"x": x}, training=True, ops=ORACLE64).values[g.outputs[0]]
        return softmax_cross_entropy(logits, labels)

    tape = forward(g, params, {"x": x}, training=True, ops=ORACLE64)
    logits = tape.values[g.outputs[0]]
    grads = backward(g, tape, {g.outputs[0]: softmax_cross_entropy_backward(logits, labels)})
    assert set(tape.running) == {n.inputs[i] for n in g.nodes if n.op_type == "BatchNormalization" for i in (3, 4)}
    check_gradient(loss, [params[k] for k in wanted], [grads[k] for k in wanted], h=1e-6, tol=1e-5, seed=0,
                   what="graph")


def test_graph_backward_names_an_op_without_a_backward():
    b = GraphBuilder("g")
    y = b.softmax(b.gemm(b.input("x", ["N", 2]), np.ones((2, 2), np.float32), transB=1), name="sm")
    g = b.build(y)
    tape = forward(g, dict(g.initializers), {"x": np.ones((1, 2), np.float32)}, training=True)
    with pytest.raises(ValueError, match="node 'sm' \\(Softmax\\): training has no backward for 'Softmax'"):
        backward(g, tape, {y: np.ones((1, 2), np.float32)})
