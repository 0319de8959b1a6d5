"""``spec/reading-order.md`` cannot drift: every file and function it names exists, the path
is about a thousand lines, and every number of its worked example is what refquant computes.

The worked example is the fenced block after ``<!-- worked-example -->``: one line per
quantity, ``NAME = how it is computed = VALUE`` (the text after the last ``=`` is a Python
literal). The first lines give the layer and the data; :func:`compute_example` builds that
one-layer model, quantizes and runs it with refquant, recomputes every quantity, and the test
asserts each equals the value written — float32 values exactly (the doc prints the shortest
decimal that reads back as the same float32).
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from refquant.executor import quantize_bias, quantize_model, run_float
from refquant.graph import GraphBuilder
from refquant.kernels import reference
from refquant.numerics import make_requantizer, quantize, requantize

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "spec" / "reading-order.md"

#: ``path::name`` in backquotes: a file of the repository and a function, class, ``Class.method``
#: or ``__doc__`` (the module docstring) in it
REFERENCE = re.compile(r"`((?:refquant|plugins)/[\w/]+\.py)::([\w.]+)`")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the code it names

@lru_cache(maxsize=None)
def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"))


def definition_lines(path: str, name: str) -> range:
    """The lines of ``name`` in ``path`` (decorators included); KeyError if there is none."""
    tree = _tree(path)
    if name == "__doc__":
        first = tree.body[0] if tree.body else None
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            raise KeyError(f"{path} has no module docstring")
        return range(first.lineno, first.end_lineno + 1)
    scope = tree.body
    node = None
    for part in name.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise KeyError(f"{path} defines no {name}")
        scope = node.body
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return range(start, node.end_lineno + 1)


def references() -> list[tuple[str, str]]:
    return REFERENCE.findall(doc_text())


def test_the_reading_order_names_code_that_exists():
    refs = references()
    assert len(refs) >= 30, refs
    problems = []
    for path, name in refs:
        if not (ROOT / path).is_file():
            problems.append(f"{path}: no such file")
            continue
        try:
            definition_lines(path, name)
        except KeyError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def reading_lines() -> dict[str, set[int]]:
    """File → the set of lines the reading order names (overlaps counted once)."""
    out: dict[str, set[int]] = {}
    for path, name in references():
        out.setdefault(path, set()).update(definition_lines(path, name))
    return out


def test_the_reading_order_is_about_a_thousand_lines():
    total = sum(len(lines) for lines in reading_lines().values())
    assert 700 <= total <= 1300, f"the reading order names {total} lines"


def test_the_reading_order_reaches_each_stage():
    """Plan → quantize_model → lowering → weight, bias, kernel, requantization → a table entry → a strategy."""
    files = set(reading_lines())
    for path in ("refquant/plan.py", "refquant/executor/quantized.py", "refquant/executor/traverse.py",
                 "refquant/numerics/qparams.py", "refquant/numerics/quantize.py", "refquant/kernels/reference.py",
                 "refquant/numerics/requant.py", "refquant/executor/integer_ops.py",
                 "plugins/refquant_static/weights.py", "plugins/refquant_static/activations.py",
                 "plugins/refquant_static/observers.py"):
        assert path in files, path


# ------------------------------------------------------------------------------ the worked example

def example_block() -> list[tuple[str, str]]:
    """``(name, value text)`` for every line of the worked example, in order."""
    m = re.search(r"<!-- worked-example -->\s*```[a-z]*\n(.*?)```", doc_text(), re.S)
    assert m, "spec/reading-order.md has no <!-- worked-example --> block"
    rows = []
    for line in m.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, _ = line.partition(" = ")
        assert sep, f"worked example line without ' = ': {line!r}"
        rows.append((name.strip(), line.rpartition("= ")[2].strip()))
    return rows


def example_values() -> dict:
    return {name: ast.literal_eval(value) for name, value in example_block()}


GIVEN = ("W", "b", "x_calib", "x", "plan")


def compute_example(given: dict) -> dict:
    """Every quantity of the worked example, recomputed with refquant from the given ones."""
    w = np.asarray(given["W"], np.float32)
    b = np.asarray(given["b"], np.float32)
    n_out, n_in = w.shape
    builder = GraphBuilder("worked-example")
    inp = builder.input("x", ["N", n_in, 1, 1])
    out = builder.conv(inp, w.reshape(n_out, n_in, 1, 1), b, name="conv")
    graph = builder.build(out)
    x_calib = np.asarray(given["x_calib"], np.float32).reshape(-1, n_in, 1, 1)
    x = np.asarray(given["x"], np.float32).reshape(1, n_in, 1, 1)

    qm = quantize_model(graph, given["plan"], x_calib)
    result = qm.run(x, keep=True)
    input_record, conv_record = result.records
    layer = qm.layers["conv"]
    x_qp, w_qp, y_qp = input_record.output_qparams, conv_record.weight_qparams, conv_record.output_qparams

    # the executor's own path, step by step, with the functions it calls
    q_x = quantize(x, x_qp)
    q_b = quantize_bias(layer.bias, x_qp.scale, w_qp.scale)
    acc = reference.conv2d_int32(q_x, layer.weight.values, int(x_qp.zero_point), w_qp.zero_point, q_b)
    rq = make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, mode=qm.requant)
    q_y = requantize(acc, rq, channel_axis=1)
    fixed = make_requantizer(x_qp.scale, w_qp.scale, y_qp.scale, y_qp.zero_point, y_qp.fmt, mode="fixed-point")
    y_hat = result.outputs[out].reshape(-1)
    y_float = run_float(graph, {"x": x})[out].reshape(-1)

    # what the executor ran is what was recomputed
    np.testing.assert_array_equal(conv_record.q_output, q_y)
    assert conv_record.kernel == "fused" and qm.requant == "float32"

    # the accumulator by hand, in Python integers
    q_w = layer.weight.values.reshape(n_out, n_in).astype(int).tolist()
    z_x = int(x_qp.zero_point)
    by_hand = [sum((int(q) - z_x) * q_w[c][k] for k, q in enumerate(q_x.reshape(-1))) + int(q_b[c])
               for c in range(n_out)]
    assert by_hand == acc.reshape(-1).tolist()

    s_xw = np.float32(x_qp.scale) * np.float32(w_qp.scale)
    return {
        "s_x": np.float32(x_qp.scale),
        "z_x": int(x_qp.zero_point),
        "x / s_x": (x.reshape(-1) / np.float32(x_qp.scale)).astype(np.float32),
        "q_x": q_x.reshape(-1),
        "s_w": np.float32(w_qp.scale),
        "W / s_w": (w / np.float32(w_qp.scale)).astype(np.float32),
        "q_w": layer.weight.values.reshape(n_out, n_in),
        "s_x * s_w": np.float32(s_xw),
        "b / (s_x * s_w)": (b / np.float32(s_xw)).astype(np.float32),
        "q_b": q_b,
        "acc": acc.reshape(-1),
        "acc * (s_x * s_w)": (acc.reshape(-1).astype(np.float32) * np.float32(s_xw)).astype(np.float32),
        "y_calib": run_float(graph, {"x": x_calib})[out].reshape(len(x_calib), n_out),
        "s_y": np.float32(y_qp.scale),
        "z_y": int(y_qp.zero_point),
        "M": np.float32(rq.multiplier[0]),
        "acc * M": (acc.reshape(-1).astype(np.float32) * rq.multiplier[0]).astype(np.float32),
        "q_y": q_y.reshape(-1),
        "y_hat": y_hat,
        "y_float": y_float,
        "y_hat - y_float": (y_hat - y_float).astype(np.float32),
        "Q, e": [int(fixed.q_multiplier[0]), int(fixed.shift[0])],
        "q_y (fixed-point)": requantize(acc, fixed, channel_axis=1).reshape(-1),
    }


def _same(written, computed) -> bool:
    c = np.asarray(computed)
    w = np.asarray(written, dtype=np.float32 if c.dtype.kind == "f" else np.int64)
    if c.dtype.kind == "f":
        c = c.astype(np.float32)
    return w.shape == c.shape and bool(np.all(w == c))


def test_the_worked_example_gives_every_quantity_once():
    names = [name for name, _ in example_block()]
    assert len(names) == len(set(names)), names
    computed = compute_example(example_values())
    assert set(names) == set(GIVEN) | set(computed), set(names) ^ (set(GIVEN) | set(computed))


@pytest.fixture(scope="module")
def example():
    written = example_values()
    return written, compute_example(written)


@pytest.mark.parametrize("name", [n for n, _ in example_block() if n not in GIVEN])
def test_the_worked_example_number(example, name):
    written, computed = example
    assert _same(written[name], computed[name]), (
        f"{name}: spec/reading-order.md says {written[name]!r}, refquant computes "
        f"{np.asarray(computed[name]).tolist()!r}")


def test_the_printed_floats_read_back_exactly():
    """Each float in the example is printed as the shortest decimal of its float32."""
    written = example_values()
    computed = compute_example(written)
    for name, value in computed.items():
        c = np.asarray(value)
        if c.dtype.kind == "f":
            shortest = [float(str(v)) for v in c.astype(np.float32).reshape(-1)]
            assert np.asarray(written[name], np.float64).reshape(-1).tolist() == shortest, name
