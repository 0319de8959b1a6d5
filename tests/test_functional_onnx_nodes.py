"""The onnx package's own backend node test cases, run through ``refquant.functional``.

The cases are those of ``onnx/backend/test/case/node/`` for QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear, QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger. Some onnx
wheels ship them as files (``onnx/backend/test/data/node/test_*/model.onnx`` and
``test_data_set_0/*.pb``); the installed one may not, so they are built here by onnx's own
case generator (the code that writes those files, seeded the same way), then serialized and
read back with ``onnx.load_model_from_string`` and ``onnx.numpy_helper`` exactly as the files
would be. Each case's node attributes become keyword arguments, its inputs positional ones,
and every output must equal the expected one bit for bit (float outputs compared by bit
pattern, so NaN and -0.0 count).

DynamicQuantizeLinear's ``*_expanded`` cases are the same data run through ONNX's function
body; refquant runs them as the operator itself.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("ml_dtypes")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refquant import functional as F  # noqa: E402

_CASE_MODULES = ("quantizelinear", "dequantizelinear", "dynamicquantizelinear", "qlinearconv",
                 "qlinearmatmul", "convinteger", "matmulinteger")
_FUNCTIONS = {
    "QuantizeLinear": F.quantize_linear,
    "DequantizeLinear": F.dequantize_linear,
    "DynamicQuantizeLinear": F.dynamic_quantize_linear,
    "QLinearConv": F.qlinear_conv,
    "QLinearMatMul": F.qlinear_matmul,
    "ConvInteger": F.conv_integer,
    "MatMulInteger": F.matmul_integer,
}


def _node_cases() -> dict:
    """``{case name: (model, inputs, outputs)}`` for the seven operators."""
    import onnx.backend.test.case.node as node_cases

    for name in _CASE_MODULES:  # importing a case module runs its exporters, which record cases
        importlib.import_module(f"{node_cases.__name__}.{name}")
    cases = {}
    for case in node_cases._NodeTestCases:
        ops = {n.op_type for n in case.model.graph.node}
        if not (ops & set(_FUNCTIONS)) and not case.name.startswith("test_dynamicquantizelinear"):
            continue
        model = onnx.load_model_from_string(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        cases[case.name] = (model, [_read(a) for a in inputs], [_read(a) for a in outputs])
    return cases


def _read(a) -> np.ndarray:
    """A tensor as a ``.pb`` file would give it: serialized, parsed, ``numpy_helper.to_array``."""
    proto = a if isinstance(a, TensorProto) else numpy_helper.from_array(np.asarray(a))
    parsed = TensorProto()
    parsed.ParseFromString(proto.SerializeToString())
    return numpy_helper.to_array(parsed)


CASES = _node_cases()


def _bits(a: np.ndarray) -> np.ndarray:
    """Comparable form: bit patterns of floats and float formats, values of int4/int2."""
    a = np.asarray(a)
    if a.dtype.name in ("int4", "int2"):
        return a.astype(np.int8)
    if a.dtype.name in ("uint4", "uint2"):
        return a.astype(np.uint8)
    if a.dtype.kind == "f" or a.dtype.kind == "V":
        return a.view(f"u{a.dtype.itemsize}")
    return a


def _run(model, inputs, **options):
    graph = model.graph
    if len(graph.node) == 1:
        node = graph.node[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        present = iter(inputs)
        args = [next(present) if name else None for name in node.input]
        if node.op_type not in ("QLinearConv", "QLinearMatMul"):
            options.pop("requant")
        return _FUNCTIONS[node.op_type](*args, **attrs, **options)
    # an expanded function body: the operator is the one the case is named after
    assert graph.name.startswith("test_dynamicquantizelinear"), graph.name
    return F.dynamic_quantize_linear(*inputs, backend=options["backend"])


def test_all_seven_operators_have_cases():
    ops = {n.op_type for m, _, _ in CASES.values() for n in m.graph.node if len(m.graph.node) == 1}
    assert ops == set(_FUNCTIONS)
    assert len(CASES) >= 45


def _requant_modes(name):
    """QLinear cases run in both float modes: their numbers hold for onnxruntime and the onnx
    reference alike; other cases have no requantization."""
    return ["float32", "float64"] if name.startswith("test_qlinear") else ["float32"]


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("name, requant", [(n, m) for n in sorted(CASES) for m in _requant_modes(n)])
def test_onnx_backend_node_case(name, requant, backend):
    model, inputs, expected = CASES[name]
    got = _run(model, inputs, requant=requant, backend=backend)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        want = _bits(e)
        have = _bits(g)
        assert have.shape == want.shape, f"output {k}: shape {have.shape} != {want.shape}"
        assert have.dtype == want.dtype, f"output {k}: dtype {have.dtype} != {want.dtype}"
        np.testing.assert_array_equal(have, want, err_msg=f"output {k} of {name}")
