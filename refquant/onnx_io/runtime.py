"""The optional ONNX dependencies, imported on use, and onnxruntime sessions set up one way.

``onnx`` and ``onnxruntime`` are the optional extra ``onnx`` (``pip install 'refquant[onnx]'``);
nothing else in refquant imports them. Every session refquant opens runs on the CPU
provider with one intra-op and one inter-op thread and graph optimizations disabled, so what
runs is the graph as written: no node fusion, no constant folding, a fixed summation order
inside each kernel.
"""

from __future__ import annotations

__all__ = ["require_onnx", "require_onnxruntime", "ort_session", "run_onnxruntime"]

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
