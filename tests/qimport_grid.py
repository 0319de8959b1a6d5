"""Quantize the shipped digits models with onnxruntime's own tool and compare refquant's import
bit for bit with the oracle that is exact on this host. Used by ``tests/test_onnx_qimport.py``
(a subset of images) and, as a command, for the table in ``spec/onnx-import.md``::

    .venv/bin/python tests/qimport_grid.py [--images 599] [--models digits-cnn ...] [--calibration MinMax ...]

prints the markdown table (stdout) and, on stderr, the date, wall time, CPU and onnxruntime
version and whether onnxruntime multiplies u8×s8 exactly here (:func:`host_line`).

Oracles (``oracle_for``):

* ``integer`` semantics — onnxruntime with graph optimizations on (``ORT_ENABLE_ALL``) and the
  session option ``session.qdqisint8allowed=1`` (without it onnxruntime's
  ``QDQS8ToU8Transformer`` rewrites int8 activations to uint8 on x86, which makes the products
  u8×s8), *if* ``integer_product_probe`` says onnxruntime multiplies every dtype pair the model
  multiplies exactly on this host (refquant requant ``float32``); otherwise the onnx reference
  evaluator on the model's standard-operator form (:func:`standard_onnx`; refquant requant
  ``float64``);
* ``qdq-float`` semantics — onnxruntime with optimizations off (every Q/DQ and float op as
  written), exact on any host (no integer products).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from refquant.data import digits_inputs, load_digits
from refquant.host import cpu_model
from refquant.onnx_io import exact_integer_products, export_float
from refquant.onnx_io.qimport import import_quantized
from refquant.registry import resolve_model

MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
#: activation × weight types: uint8 asymmetric × uint8, int8 symmetric × int8, uint8 × int8 (the default)
ACTIVATIONS = {"u8u8": ("QUInt8", "QUInt8", False), "s8s8": ("QInt8", "QInt8", True),
               "u8s8": ("QUInt8", "QInt8", False)}
CALIBRATIONS = ("MinMax", "Entropy", "Percentile")
CALIBRATION_IMAGES = 32

_DIGITS = None
_CACHE = os.path.join(tempfile.gettempdir(), f"refquant-qimport-{os.getuid()}")


def digits():
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    return _DIGITS


def float_model(name: str) -> str:
    os.makedirs(_CACHE, exist_ok=True)
    path = os.path.join(_CACHE, f"{name}.float.onnx")
    if not os.path.exists(path):
        tmp = f"{path[:-5]}.{os.getpid()}.tmp.onnx"
        export_float(resolve_model(name)).save(tmp)
        os.replace(tmp, path)
    return path


def quantized_model(name: str, form: str, granularity: str, act: str, calibration: str = "MinMax") -> str:
    """onnxruntime's ``quantize_static`` (``form`` qoperator|qdq, ``granularity`` tensor|channel),
    or ``quantize_dynamic`` for ``form="dynamic"``; cached by configuration."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = os.path.join(_CACHE, f"{name}.{form}.{granularity}.{act}.{calibration}.onnx")
    if os.path.exists(path):
        return path
    final, path = path, f"{path[:-5]}.{os.getpid()}.tmp.onnx"  # written, then renamed: other runs may share the cache
    src = float_model(name)
    if form == "dynamic":
        quantize_dynamic(src, path, weight_type=getattr(QuantType, ACTIVATIONS[act][1]),
                         per_channel=granularity == "channel")
        os.replace(path, final)
        return final
    graph = resolve_model(name)
    x = digits_inputs(graph, digits().calibration(CALIBRATION_IMAGES).x).astype(np.float32)
    return write_quantize_static(src, path, final, graph.inputs[0].name, x, 8, form, granularity, act, calibration)


def write_quantize_static(src: str, tmp: str, final: str, input_name: str, x: np.ndarray, batch: int, form: str,
                          granularity: str, act: str, calibration: str) -> str:
    """onnxruntime's ``quantize_static`` of ``src`` calibrated on ``x`` in batches of ``batch``,
    written to ``tmp`` and renamed to ``final`` (other runs may share the cache)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    a, w, symmetric = ACTIVATIONS[act]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: x[i:i + batch]} for i in range(0, len(x), batch)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(src, tmp, Reader(), quant_format=QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ,
                    per_channel=granularity == "channel", activation_type=getattr(QuantType, a),
                    weight_type=getattr(QuantType, w), calibrate_method=getattr(CalibrationMethod, calibration),
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    os.replace(tmp, final)
    return final


def product_pairs(model) -> set:
    """The (input dtype, weight dtype) pairs of every integer product in an imported model."""
    pairs = set()
    for s in model.steps:
        if s.op in ("QLinearConv", "QLinearMatMul", "QGemm"):
            w = model.consts.get(s.inputs[3])
            x_zp = model.consts.get(s.inputs[2])
            if w is not None and x_zp is not None:
                pairs.add((np.asarray(x_zp).dtype.name, np.asarray(w).dtype.name,
                          "QLinearConv" if s.op == "QLinearConv" else "MatMulInteger"))
        elif s.op in ("MatMulInteger", "ConvInteger"):
            w = model.consts.get(s.inputs[1])
            pairs.add(("uint8", np.asarray(w).dtype.name if w is not None else "uint8", s.op))
    return pairs


def oracle_for(model, semantics: str):
    """``(run(feeds) → first output, label, requant mode)`` of the exact oracle for this imported
    model on this host (module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if semantics == "qdq-float":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        label = "onnxruntime, optimizations off"
    else:
        bad = [p for p in product_pairs(model) if not exact_integer_products(p[0], p[1], p[2])]
        if bad:
            run, label = reference_evaluator_oracle(model)
            pairs = ", ".join(sorted({f"{a}x{b}" for a, b, _ in bad}))
            return run, f"{label} (onnxruntime inexact here for {pairs})", "float64"
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.qdqisint8allowed", "1")
        label = "onnxruntime, optimizations on"
    session = ort.InferenceSession(model.source, options, providers=["CPUExecutionProvider"])
    return (lambda feeds: session.run(None, feeds)[0]), label, "float32"


def standard_onnx(model):
    """The imported ``integer`` steps as an ONNX model of standard operators only, for the onnx
    reference evaluator (which has no ``com.microsoft`` operators): ``QGemm`` as a 1×1
    ``QLinearConv`` on ``[M, K, 1, 1]``; ``QLinearAdd`` and ``QLinearGlobalAveragePool`` as their
    MLAS rules written in float32 ONNX operators (``Cast``, ``Mul``, ``Add``, ``ReduceSum``,
    ``QuantizeLinear`` with scale 1) — those rules are checked against onnxruntime's kernels on
    random operands separately. The integer products are the reference evaluator's own
    (its requantization is refquant's ``float64`` mode). Opset 21."""
    from onnx import helper as h

    consts = dict(model.consts)
    nodes, extra = [], {}

    def const(name, value):
        extra[name] = np.asarray(value)
        return name

    for s in model.steps:
        i = s.inputs + [""] * 9
        if s.op == "QGemm":
            if s.attrs.get("transA", 0) or float(s.attrs.get("alpha", 1.0)) != 1.0 or not i[7]:
                raise ValueError(f"{s.name}: QGemm form not expressible for the reference evaluator")
            w = np.asarray(consts[i[3]])
            w = w if s.attrs.get("transB", 0) else w.T
            wname = const(f"{s.name}.W4", np.ascontiguousarray(w)[:, :, None, None])
            x4 = f"{s.name}.x4"
            nodes.append(h.make_node("Unsqueeze", [i[0], const(f"{s.name}.axes", np.array([2, 3], np.int64))], [x4]))
            y4 = f"{s.name}.y4"
            conv_in = [x4, i[1], i[2], wname, i[4], i[5], i[7], i[8]] + ([i[6]] if i[6] else [])
            nodes.append(h.make_node("QLinearConv", conv_in, [y4]))
            nodes.append(h.make_node("Squeeze", [y4, f"{s.name}.axes"], s.outputs))
        elif s.op == "QLinearAdd":
            f32 = lambda v: np.float32(np.asarray(consts[v], np.float32).reshape(-1)[0])  # noqa: E731
            ra, rb = np.float32(f32(i[1]) / f32(i[6])), np.float32(f32(i[4]) / f32(i[6]))
            za, zb, zc = (int(np.asarray(consts[t]).reshape(-1)[0]) for t in (i[2], i[5], i[7]))
            f = np.float32(np.float32(zc) - np.float32(np.float32(ra * np.float32(za)) + np.float32(rb * np.float32(zb))))
            n = s.name
            nodes += [h.make_node("Cast", [i[0]], [f"{n}.af"], to=1), h.make_node("Cast", [i[3]], [f"{n}.bf"], to=1),
                      h.make_node("Mul", [f"{n}.af", const(f"{n}.ra", ra)], [f"{n}.ar"]),
                      h.make_node("Mul", [f"{n}.bf", const(f"{n}.rb", rb)], [f"{n}.br"]),
                      h.make_node("Add", [const(f"{n}.f", f), f"{n}.ar"], [f"{n}.s1"]),
                      h.make_node("Add", [f"{n}.s1", f"{n}.br"], [f"{n}.s2"]),
                      h.make_node("QuantizeLinear", [f"{n}.s2", const(f"{n}.one", np.float32(1)),
                                                     const(f"{n}.z0", np.zeros((), np.asarray(consts[i[7]]).dtype))],
                                  s.outputs)]
        elif s.op == "QLinearConcat":
            # the lookup table is quantize-linear(dequantize-linear(code)) per input: the same in
            # standard operators (a copied input included: the round trip leaves it unchanged)
            parts = []
            for k in range(2, len(s.inputs), 3):
                d = f"{s.name}.dq{k}"
                nodes.append(h.make_node("DequantizeLinear", [t for t in s.inputs[k:k + 3] if t], [d]))
                parts.append(d)
            nodes.append(h.make_node("Concat", parts, [f"{s.name}.cat"], axis=s.attrs["axis"]))
            nodes.append(h.make_node("QuantizeLinear", [f"{s.name}.cat", i[0], i[1]], s.outputs))
        elif s.op == "QLinearGlobalAveragePool" and not s.attrs.get("channels_last", 0):
            n = s.name
            # m = float32(s_x / float32(s_y · float32(n))), n = the spatial size, computed in the graph
            nodes += [h.make_node("Shape", [i[0]], [f"{n}.shape"], start=2),
                      h.make_node("ReduceProd", [f"{n}.shape"], [f"{n}.n"], keepdims=0),
                      h.make_node("Cast", [f"{n}.n"], [f"{n}.nf"], to=1),
                      h.make_node("Mul", [i[3], f"{n}.nf"], [f"{n}.den"]),
                      h.make_node("Div", [i[1], f"{n}.den"], [f"{n}.m"]),
                      h.make_node("Cast", [i[0]], [f"{n}.xi"], to=6),
                      h.make_node("Sub", [f"{n}.xi", f"{n}.zx"], [f"{n}.c"]),
                      h.make_node("ReduceSum", [f"{n}.c", const(f"{n}.axes", np.array([2, 3], np.int64))], [f"{n}.acc"]),
                      h.make_node("Cast", [f"{n}.acc"], [f"{n}.accf"], to=1),
                      h.make_node("Mul", [f"{n}.accf", f"{n}.m"], [f"{n}.y"]),
                      h.make_node("QuantizeLinear", [f"{n}.y", const(f"{n}.one", np.float32(1)), i[4]], s.outputs)]
            extra[f"{n}.zx"] = np.asarray(consts[i[2]]).astype(np.int32)
        else:
            nodes.append(h.make_node(s.op, s.inputs, s.outputs, domain=s.domain or None,
                                     **{k: v for k, v in s.attrs.items() if not k.startswith("_")}))
    return nodes, extra


def reference_evaluator_oracle(model):
    """``(run(feeds) → output, label)``: :func:`standard_onnx` in the onnx reference evaluator."""
    from onnx import helper as h, numpy_helper as nh
    from onnx.reference import ReferenceEvaluator

    nodes, extra = standard_onnx(model)
    used = {t for n in nodes for t in n.input}
    inits = [nh.from_array(np.asarray(v), name=k) for k, v in {**model.consts, **extra}.items() if k in used]
    ins = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(np.dtype(d)), shape) for n, d, shape in model.inputs]
    outs = [h.make_tensor_value_info(n, model.output_types.get(n, 1), None) for n in model.outputs]
    m = h.make_model(h.make_graph(nodes, "standard", ins, outs, inits), opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    ev = ReferenceEvaluator(m)
    return (lambda feeds: ev.run(None, feeds)[0]), "onnx reference evaluator (standard-op form), requant float64"


def compare(path: str, semantics: str, images: int, backends=("reference",)) -> dict:
    """Run refquant and the oracle on the first ``images`` digits test images; one row."""
    name = os.path.basename(path).split(".")[0]
    m = import_quantized(path, semantics=semantics)
    graph = resolve_model(name)
    x = digits_inputs(graph, digits().test.x[:images]).astype(np.float32)
    run, label, mode = oracle_for(m, semantics)
    row = {"model": os.path.basename(path)[:-5], "semantics": semantics, "oracle": label, "images": images,
           "requant": mode}
    want = run({m.inputs[0][0]: x})
    for b in backends:
        got = m.run({m.inputs[0][0]: x}, backend=b, requant=mode).outputs[m.outputs[0]]
        same = np.all(got == want, axis=tuple(range(1, got.ndim)))
        row[f"bit_exact[{b}]"] = int(same.sum())
    row["bit_exact"] = min(v for k, v in row.items() if k.startswith("bit_exact["))
    return row


def grid(models=MODELS, forms=("qoperator", "qdq"), granularities=("tensor", "channel"),
         acts=("u8u8", "s8s8", "u8s8"), calibrations=("MinMax",)):
    for name in models:
        for form in forms:
            for gran in granularities:
                for act in acts:
                    for cal in calibrations:
                        yield name, form, gran, act, cal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=599)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--calibration", nargs="+", default=["MinMax"])
    p.add_argument("--acts", nargs="+", default=list(ACTIVATIONS))
    p.add_argument("--backends", nargs="+", default=["reference", "numba"])
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print("| model | form | granularity | activations×weights | calibration | semantics | oracle | requant | bit-exact images |")
    print("|---|---|---|---|---|---|---|---|---|")
    configs = list(grid(args.models, acts=args.acts, calibrations=args.calibration))
    configs += [(n, "dynamic", g, "u8u8", "-") for n in args.models if n == "digits-mlp" for g in ("tensor",)]
    configs += [(n, "dynamic", g, "u8s8", "-") for n in args.models if n == "digits-mlp" for g in ("tensor",)]
    for name, form, gran, act, cal in configs:
        path = quantized_model(name, form, gran, act, cal)
        for sem in ("integer", "qdq-float") if form == "qdq" else ("integer",):
            try:
                r = compare(path, sem, args.images, tuple(args.backends))
                exact = f"{r['bit_exact']}/{args.images}"
            except Exception as exc:  # noqa: BLE001 - a row says what failed
                r, exact = {"oracle": "-", "requant": "-"}, f"error: {exc}"
            print(f"| {name} | {form} | {gran} | {act} | {cal} | {sem} | {r['oracle']} | {r['requant']} | {exact} |",
                  flush=True)
    print(host_line(time.perf_counter() - t0), file=sys.stderr)
    return 0


def host_line(seconds: float) -> str:
    """Where and how fast the table was measured (printed on stderr after the table)."""
    import onnx
    import onnxruntime

    cpu = cpu_model()
    return (f"{time.strftime('%Y-%m-%d', time.gmtime())}: {seconds:.0f} s wall, {cpu}, {os.cpu_count()} cores, "
            f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, onnxruntime u8xs8 exact: "
            f"{exact_integer_products('uint8', 'int8')}")


if __name__ == "__main__":
    sys.exit(main())
