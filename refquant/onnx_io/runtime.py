"""The optional ONNX dependencies, imported on use, and onnxruntime sessions set up one way.

``onnx`` and ``onnxruntime`` are the optional extra ``onnx`` (``pip install 'refquant[onnx]'``);
nothing else in refquant imports them. Every session refquant opens runs on the CPU
provider with one intra-op and one inter-op thread and graph optimizations disabled, so what
runs is the graph as written: no node fusion, no constant folding, a fixed summation order
inside each kernel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["require_onnx", "require_onnxruntime", "ort_session", "run_onnxruntime", "integer_product_probe",
           "exact_integer_products", "u8s8_saturation_note"]

_EXTRA = "pip install 'refquant[onnx]'"


def require_onnx():
    """The ``onnx`` module, or an ImportError naming the optional extra."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"this needs the optional 'onnx' extra (the onnx package): {_EXTRA}") from None
    return onnx


def require_onnxruntime():
    """The ``onnxruntime`` module, or an ImportError naming the optional extra."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"this needs the optional 'onnx' extra (the onnxruntime package): {_EXTRA}") from None
    return onnxruntime


def ort_session(model, *, optimize: bool = False, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` for ``model`` (ModelProto, bytes or a path).

    CPU provider, ``threads`` intra-op threads (default 1), one inter-op thread, graph
    optimizations disabled unless ``optimize`` (then ``ORT_ENABLE_ALL``).
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    if not isinstance(source, bytes):
        source = str(source)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnxruntime(model, feeds: dict, *, optimize: bool = False, outputs=None) -> dict:
    """Run ``model`` on ``feeds``; ``{output name: array}`` for ``outputs`` (default: all)."""
    sess = ort_session(model, optimize=optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


#: (a, b) dtype pairs of the integer products the probe measures, and the ops it measures them in
PROBED_PAIRS = (("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8"))
#: QLinearConv's dtype combinations in onnxruntime: (x, w) with the output in x's type
_QLINEAR_PAIRS = (("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"))

_probe_cache: dict = {}


def _one_node(op: str, feeds: dict, out_dtype, opset: int):

    onnx = require_onnx()
    h = onnx.helper
    graph = h.make_graph([h.make_node(op, list(feeds), ["y"])], "probe",
                         [h.make_tensor_value_info(k, h.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                          for k, v in feeds.items()],
                         [h.make_tensor_value_info("y", h.np_dtype_to_tensor_dtype(np.dtype(out_dtype)), None)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    return ort_session(model).run(None, feeds)[0]


def integer_product_probe() -> dict:
    """Whether the installed onnxruntime computes 8-bit integer products exactly on this host.

    Measured once per process, on the CPU provider as :func:`ort_session` opens it. For every
    ``(a, b)`` in :data:`PROBED_PAIRS`: ``MatMulInteger`` of ``a = [A]*4`` by ``b = [B]*4`` and a
    2×2 ``ConvInteger`` of the same values, with ``A``, ``B`` the dtypes' extremes (both signs of
    the product where one is signed), and for the pairs ``QLinearConv`` implements, a 2×2
    ``QLinearConv`` whose int32 bias cancels the exact accumulator (so the output is
    ``y_zero_point`` exactly when the accumulator is exact). The convolutions have two output
    channels (onnxruntime's depthwise kernel, taken for one, is exact). Every pair sum
    ``a[k]·b[k] + a[k+1]·b[k+1]`` there exceeds int16.

    Returns ``{(a, b): {"exact": bool, "ops": {op: exact}, op: [[got, expected], ...], ...}}``.
    onnxruntime 1.32 on x86-64 without AVX-VNNI (AVX2 only, e.g. AMD Zen 3) multiplies u8 by s8
    with ``vpmaddubsw``, which saturates each pair sum to int16: ``[255]*4 · [127]*4`` gives
    65534 instead of 129540 (and ConvInteger of int8 x by uint8 w, which it computes as w·x,
    saturates too); with VNNI or AMX it is exact.
    """
    if "result" in _probe_cache:
        return _probe_cache["result"]

    result = {}
    for ad, bd in PROBED_PAIRS:
        entry = {"exact": True, "ops": {}}
        signed = np.iinfo(ad).min < 0 or np.iinfo(bd).min < 0
        for negative in (False, True) if signed else (False,):
            # |a|, |b| at their largest, the product of the sign asked for
            av = int(np.iinfo(ad).max) if np.iinfo(ad).min == 0 else -128
            bv = int(np.iinfo(bd).max) if np.iinfo(bd).min == 0 else -128
            if (av * bv < 0) != negative:
                if bv < 0:
                    bv = 127
                elif av < 0:
                    av = 127
                else:
                    continue
            a, b = np.full((1, 4), av, ad), np.full((4, 1), bv, bd)
            exact = int(a.astype(np.int64).ravel() @ b.astype(np.int64).ravel())
            x, w = a.reshape(1, 1, 2, 2), np.tile(b.reshape(1, 1, 2, 2), (2, 1, 1, 1))
            runs = [("MatMulInteger", lambda: _one_node("MatMulInteger", {"a": a, "b": b}, np.int32, 10), exact),
                    ("ConvInteger", lambda: _one_node("ConvInteger", {"x": x, "w": w}, np.int32, 10), exact)]
            if (ad, bd) in _QLINEAR_PAIRS:
                zy = 128 if ad == "uint8" else 0
                feeds = {"x": x, "x_scale": np.array(1, np.float32), "x_zero_point": np.array(0, ad), "w": w,
                         "w_scale": np.array(1, np.float32), "w_zero_point": np.array(0, bd),
                         "y_scale": np.array(1, np.float32), "y_zero_point": np.array(zy, ad),
                         "B": np.array([-exact, -exact], np.int32)}
                runs.append(("QLinearConv", lambda feeds=feeds: _one_node("QLinearConv", feeds, ad, 13), zy))
            for op, run, want in runs:
                try:
                    got = int(run().ravel()[0])  # channel 0
                except Exception:  # noqa: BLE001 - an op onnxruntime does not implement for the pair
                    continue
                entry.setdefault(op, []).append([got, want])
                entry["ops"][op] = entry["ops"].get(op, True) and got == want
        entry["exact"] = all(entry["ops"].values())
        result[(ad, bd)] = entry
    _probe_cache["result"] = result
    return result


def exact_integer_products(a_dtype="uint8", b_dtype="int8", op: str | None = None) -> bool:
    """Whether onnxruntime computes ``a_dtype × b_dtype`` products exactly on this host, in
    ``op`` (``MatMulInteger``, ``ConvInteger``, ``QLinearConv``) or in every probed op
    (:func:`integer_product_probe`; a pair or op not probed counts as exact). ``QLinearMatMul``
    multiplies as ``MatMulInteger`` does."""

    key = (np.dtype(a_dtype).name, np.dtype(b_dtype).name)
    entry = integer_product_probe().get(key)
    if entry is None:
        return True
    if op is None:
        return entry["exact"]
    return entry["ops"].get({"QLinearMatMul": "MatMulInteger"}.get(op, op), True)


def u8s8_saturation_note() -> str:
    """One sentence naming the measured quirk (for skip reasons and declared limitations)."""
    import onnxruntime

    entry = integer_product_probe()[("uint8", "int8")]
    got, exact = entry["MatMulInteger"][0]
    return (f"onnxruntime {onnxruntime.__version__} on this CPU (x86-64 without AVX-VNNI: MLAS u8s8 uses "
            f"vpmaddubsw) saturates each u8·s8 pair sum to int16: MatMulInteger [255]*4 · [127]*4 = "
            f"{got}, exact {exact}")
