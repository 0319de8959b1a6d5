"""A kernel backend that runs refquant's Conv/MatMul through onnxruntime — ``float32`` mode only.

Same signatures as :mod:`refquant.kernels.reference` for ``conv2d_requant`` and
``matmul_requant`` (``conv2d_int32``/``matmul_int32`` raise a ValueError: onnxruntime's QLinear
operators never expose the accumulators, so dynamic strategies need another backend); each call runs a one-node ``QLinearConv`` or ``QLinearMatMul`` model in
an onnxruntime session (CPU, one thread, graph optimizations disabled; sessions are cached
per operator, dtypes and attributes). onnxruntime requantizes one way — refquant's
``float32`` mode — so a requantizer in any other mode is refused with a ValueError.

How a :class:`~refquant.numerics.Requantizer` becomes ONNX inputs: onnxruntime computes the
multiplier as ``float32(float32(x_scale · w_scale) / y_scale)``; with ``x_scale = y_scale = 1``
and ``w_scale = m`` (the requantizer's float32 multiplier, per output channel) that is ``m``
exactly. The fused clamp ``[lo, hi]`` (Relu/Relu6, or a format narrower than 8 bits) is a
``Clip`` node after the QLinear node. ``QLinearMatMul`` has no bias input, so a matmul with a
bias runs as a 1×1 ``QLinearConv`` (the same accumulator and requantization).

onnxruntime implements the dtype combinations (input, weight, output) (uint8, uint8, uint8),
(uint8, int8, uint8) and (int8, int8, int8) — :data:`CAPABILITIES` says so to the
conformance kit, measured on this host: on x86-64 without AVX-VNNI (AVX2 only, e.g. AMD Zen 3)
onnxruntime's MLAS multiplies uint8 by int8 with ``vpmaddubsw``, which saturates every pair sum
``x[k]·w[k] + x[k+1]·w[k+1]`` to int16. Where :func:`~refquant.onnx_io.integer_product_probe`
measures that, (uint8, int8, uint8) is left out of ``CAPABILITIES["dtypes"]`` and named under
``CAPABILITIES["limitations"]`` (the kit reports it as a declared limitation), and the kernels
refuse uint8 × int8 with a ValueError naming the measured quirk rather than return integers
that are not refquant's. It does not check int32 accumulator overflow (refquant raises; here the
result would wrap), so it is not a backend for models near that limit.

Register it for the executor and the command line with the ``register_backends`` hook this
module implements: ``refquant.plugins.register_plugin(ort_backend, "onnxruntime")``.
"""

from __future__ import annotations

import sys

import numpy as np

from ..hookspecs import hookimpl
from ..kernels.reference import check_operands
from .runtime import exact_integer_products, ort_session, require_onnx, u8s8_saturation_note

__all__ = ["CAPABILITIES", "capabilities", "conv2d_requant", "matmul_requant", "conv2d_int32", "matmul_int32",
           "register_backends"]

_DECLARED = {
    "modes": ("float32",),
    "dtypes": [("uint8", "uint8", "uint8"), ("uint8", "int8", "uint8"), ("int8", "int8", "int8")],
    "weight_zero_points": True,
    "ops": ("conv", "matmul"),
}
_sessions: dict = {}
_capabilities: dict = {}


def capabilities() -> dict:
    """What this backend does exactly on this host: the dtype combinations onnxruntime
    implements, less (uint8, int8, uint8) where the probe measures int16 pair saturation (then
    named under ``"limitations"``). Measured on first use; without onnxruntime, the declaration."""
    if not _capabilities:
        caps = dict(_DECLARED, dtypes=list(_DECLARED["dtypes"]), limitations=[])
        try:
            exact = _u8s8_exact()
        except ImportError:
            exact = True
        if not exact:

            caps["dtypes"].remove(("uint8", "int8", "uint8"))
            caps["limitations"].append(f"(uint8, int8, uint8) not offered: {u8s8_saturation_note()}")
        _capabilities.update(caps)
    return _capabilities


def _u8s8_exact() -> bool:
    """uint8 × int8 exact in the two operators this backend runs (measured once per process)."""

    return all(exact_integer_products("uint8", "int8", op) for op in ("QLinearConv", "QLinearMatMul"))


def __getattr__(name):  # CAPABILITIES is measured on first access (PEP 562)
    if name == "CAPABILITIES":
        return capabilities()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _refuse_saturating(x, w, name):
    if x.dtype == np.uint8 and w.dtype == np.int8 and not _u8s8_exact():

        raise ValueError(f"{name}: uint8 x int8 is not offered on this host: {u8s8_saturation_note()}")


def _session(op: str, dtypes: tuple, per_channel: bool, with_bias: bool, attrs: tuple):
    key = (op, dtypes, per_channel, with_bias, attrs)
    if key not in _sessions:
        onnx = require_onnx()
        h = onnx.helper
        xd, wd, yd = (h.np_dtype_to_tensor_dtype(np.dtype(d)) for d in dtypes)
        f32, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
        types = {"x": xd, "x_scale": f32, "x_zero_point": xd, "w": wd, "w_scale": f32, "w_zero_point": wd,
                 "y_scale": f32, "y_zero_point": yd, "B": i32, "lo": yd, "hi": yd}
        names = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"]
        if with_bias:
            names.append("B")
        inputs = [h.make_tensor_value_info(n, types[n], None) for n in names + ["lo", "hi"]]
        qop = "QLinearConv" if op == "conv" else "QLinearMatMul"
        nodes = [h.make_node(qop, names, ["y_unclipped"], **{k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in attrs}),
                 h.make_node("Clip", ["y_unclipped", "lo", "hi"], ["y"])]
        graph = h.make_graph(nodes, f"refquant-{qop}", inputs, [h.make_tensor_value_info("y", yd, None)])
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
        model.ir_version = 8
        _sessions[key] = ort_session(model)
    return _sessions[key]


def _run(op, x, w, x_zero_point, w_zero_point, bias, rq, attrs, name):
    if rq.mode != "float32":
        raise ValueError(f"{name}: onnxruntime requantizes in refquant's 'float32' mode only, not {rq.mode!r}")
    n_out = w.shape[0]
    za, zw, _ = check_operands(x, w, x_zero_point, w_zero_point, bias, n_out, name)
    _refuse_saturating(x, w, name)
    rq = rq.for_channels(n_out) if rq.channels != n_out else rq
    if np.unique(rq.zero_point).size != 1 or np.unique(rq.lo).size != 1 or np.unique(rq.hi).size != 1:
        raise ValueError(f"{name}: onnxruntime takes one output zero point per tensor")
    per_channel = n_out > 1
    yd = rq.out_dtype
    feeds = {"x": np.ascontiguousarray(x), "x_scale": np.array(1, np.float32), "x_zero_point": np.asarray(za, x.dtype),
             "w": np.ascontiguousarray(w), "w_scale": np.ascontiguousarray(rq.multiplier, np.float32),
             "w_zero_point": zw.astype(w.dtype), "y_scale": np.array(1, np.float32),
             "y_zero_point": np.asarray(rq.zero_point[0], yd), "lo": np.asarray(rq.lo[0], yd),
             "hi": np.asarray(rq.hi[0], yd)}
    if bias is not None:
        feeds["B"] = np.asarray(bias, np.int32)
    dtypes = (x.dtype.name, w.dtype.name, yd.name)
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
    sess = _session(op, dtypes, per_channel, bias is not None, key)
    return sess.run(["y"], feeds)[0]


def conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq, *, strides=None, pads=None, dilations=None,
                   group=1, auto_pad="NOTSET", name="conv"):
    """``requantize(conv2d_int32(...))`` by onnxruntime's QLinearConv (``float32`` mode)."""
    x, w = np.asarray(x), np.asarray(w)
    attrs = {"strides": tuple(strides or (1, 1)), "dilations": tuple(dilations or (1, 1)), "group": int(group)}
    if auto_pad not in (None, "", "NOTSET"):
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = tuple(pads or (0, 0, 0, 0))
    return _run("conv", x, w, x_zero_point, w_zero_point, bias, rq, {k: list(v) if isinstance(v, tuple) else v
                                                                       for k, v in attrs.items()}, name)


def matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq, *, name="matmul"):
    """``requantize(matmul_int32(...))`` by QLinearMatMul (a 1×1 QLinearConv when there is a bias)."""
    a, w = np.asarray(a), np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"{name}: expected a [M, K] and w [N, K] with equal K, got {a.shape} and {w.shape}")
    if bias is None:
        return _run_matmul(a, w, a_zero_point, w_zero_point, rq, name)
    y = _run("conv", a[:, :, None, None], w[:, :, None, None], a_zero_point, w_zero_point, bias, rq,
             {"kernel_shape": [1, 1]}, name)
    return y[:, :, 0, 0]


def _run_matmul(a, w, a_zero_point, w_zero_point, rq, name):
    """QLinearMatMul takes ``b`` as ``[K, N]``: the weight transposed."""
    n_out = w.shape[0]
    za, zw, _ = check_operands(a, w, a_zero_point, w_zero_point, None, n_out, name)
    if rq.mode != "float32":
        raise ValueError(f"{name}: onnxruntime requantizes in refquant's 'float32' mode only, not {rq.mode!r}")
    _refuse_saturating(a, w, name)
    rq = rq.for_channels(n_out) if rq.channels != n_out else rq
    yd = rq.out_dtype
    feeds = {"x": np.ascontiguousarray(a), "x_scale": np.array(1, np.float32), "x_zero_point": np.asarray(za, a.dtype),
             "w": np.ascontiguousarray(w.T), "w_scale": np.ascontiguousarray(rq.multiplier, np.float32),
             "w_zero_point": zw.astype(w.dtype), "y_scale": np.array(1, np.float32),
             "y_zero_point": np.asarray(rq.zero_point[0], yd), "lo": np.asarray(rq.lo[0], yd),
             "hi": np.asarray(rq.hi[0], yd)}
    sess = _session("matmul", (a.dtype.name, w.dtype.name, yd.name), n_out > 1, False, ())
    return sess.run(["y"], feeds)[0]


def _no_accumulators(name):
    raise ValueError(f"{name}: the onnxruntime backend offers requantizing kernels only (QLinearConv, "
                     f"QLinearMatMul); int32 accumulators, which dynamic activation strategies need, come "
                     f"from the 'reference' or 'numba' backend")


def conv2d_int32(x, w, x_zero_point=0, w_zero_point=0, bias=None, *, name="conv", **_):
    """Not offered: raises ValueError (see :func:`_no_accumulators`)."""
    _no_accumulators(name)


def matmul_int32(a, w, a_zero_point=0, w_zero_point=0, bias=None, *, name="matmul"):
    """Not offered: raises ValueError (see :func:`_no_accumulators`)."""
    _no_accumulators(name)


@hookimpl
def register_backends(register):
    register("onnxruntime", sys.modules[__name__])
