"""Conformance kit for kernel backends: does your Conv/MatMul do exactly what refquant's does?

A *backend* is a module with refquant's kernel signatures (:mod:`refquant.kernels.reference`):
``conv2d_requant(x, w, x_zero_point, w_zero_point, bias, rq, *, strides, pads, dilations,
group, name)`` and ``matmul_requant(a, w, a_zero_point, w_zero_point, bias, rq, *, name)``
(``rq`` a :class:`~refquant.numerics.Requantizer`), optionally ``conv2d_int32`` and
``matmul_int32``. Register it through the ``register_backends`` hook, or hand the module
in. A backend that is a program, not a module, is wrapped by :class:`CommandBackend`.

::

    from refquant.testing.backend import check_backend
    report = check_backend(my_kernels, out_dir="failures/")
    print(report)                       # one line per (operator, requant mode)
    report.raise_for_failures()

For every operator and requant mode the backend claims, hypothesis generates cases —
shapes, strides, pads, dilations, groups, zero points (per channel for the weights),
per-channel scales, int32 biases, fused Relu/Relu6, and scales that are powers of two half
of the time, which put many products exactly on rounding ties — and compares the backend's
integers with the reference kernels'. On the first difference hypothesis shrinks the case to
a minimal one; the kit reports its first bad element with both values, the accumulator,
the requant mode or broken rule that reproduces the backend's integers
(:func:`refquant.golden.explain.explain_requantization`), and writes the case as a golden
case: ``refquant golden verify DIR/CASE --outputs DIR/CASE.backend.npz`` reproduces it.

What a backend supports is declared in an optional module attribute ``CAPABILITIES``::

    CAPABILITIES = {"modes": ("float32",),                   # requant modes (default: all four)
                    "dtypes": [("uint8", "int8", "uint8")],  # (input, weight, output) dtypes
                    "weight_zero_points": True,              # nonzero weight zero points
                    "ops": ("conv", "matmul"),               # + "conv_int32", "matmul_int32"
                    "limitations": ["(uint8, int8, uint8) not offered: ..."]}  # reported, not tested

``limitations`` are sentences the report carries as declared limitations (what the backend
leaves out of the other entries and why, e.g. a dtype combination its arithmetic cannot do
exactly on this host); they change nothing the kit tests.

The kit needs ``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

import importlib
import importlib.util
import random
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import registry
from .._version import __version__
from ..golden.explain import combine_explanations, explain_requantization
from ..golden.export import requantization_constants
from ..golden.manifest import FORMAT, format_version_of
from ..golden.writer import GoldenWriter, write_golden_files
from ..kernels import reference
from ..numerics import REQUANT_MODES, QParams, int_format, make_requantizer
from ..presentation import format_table

__all__ = ["KernelCase", "SuiteResult", "BackendReport", "CommandBackend", "check_backend", "resolve_backend",
           "write_kernel_case", "kernel_cases", "shrink_to_element", "DTYPE_COMBOS", "OPS"]

OPS = ("conv", "matmul", "conv_int32", "matmul_int32")
DTYPE_COMBOS = tuple((a, b, y) for a in ("uint8", "int8") for b in ("uint8", "int8") for y in ("uint8", "int8"))
_KERNEL = {"conv": "conv2d_requant", "matmul": "matmul_requant", "conv_int32": "conv2d_int32",
           "matmul_int32": "matmul_int32"}


def _hypothesis():
    try:
        import hypothesis
        import hypothesis.strategies as st
    except ImportError:
        raise ImportError("the backend conformance kit needs hypothesis: pip install 'refquant[test]'") from None
    return hypothesis, st


# ------------------------------------------------------------------------------------ cases

@dataclass(frozen=True, eq=False)
class KernelCase:
    """One kernel call: integer operands, zero points, bias, scales, requant mode, attributes."""

    op: str  # one of OPS
    x: np.ndarray
    w: np.ndarray  # OIHW (conv) or [N, K] (matmul)
    x_zero_point: int
    w_zero_point: np.ndarray  # one per output channel
    bias: np.ndarray | None
    x_scale: float
    w_scale: np.ndarray  # float32, one or one per output channel
    y_scale: float
    y_zero_point: int
    y_dtype: str
    mode: str
    activation: str | None
    attrs: dict = field(default_factory=dict)

    @property
    def conv(self) -> bool:
        return self.op.startswith("conv")

    @property
    def requantizes(self) -> bool:
        return not self.op.endswith("_int32")

    def requantizer(self):
        return make_requantizer(np.float32(self.x_scale), self.w_scale, np.float32(self.y_scale),
                                np.array(self.y_zero_point, self.y_dtype), self.y_dtype, mode=self.mode,
                                activation=self.activation)

    def run(self, kernels) -> np.ndarray:
        """The kernel's output on this case (``kernels`` a backend module)."""
        fn = getattr(kernels, _KERNEL[self.op])
        args = (self.x, self.w, self.x_zero_point, self.w_zero_point, self.bias)
        if self.requantizes:
            args += (self.requantizer(),)
        return fn(*args, name=f"case.{self.op}", **self.attrs) if self.conv else fn(*args, name=f"case.{self.op}")

    def qparams(self) -> tuple:
        """``(x, w, y)`` :class:`QParams`; the weight's per output channel when its scales or
        zero points differ between channels."""
        x_qp = QParams(np.float32(self.x_scale), self.x_zero_point, int_format(self.x.dtype.name), name="x")
        if self.w_scale.size > 1 or np.unique(self.w_zero_point).size > 1:
            w_qp = QParams(np.broadcast_to(self.w_scale, self.w_zero_point.shape),
                           self.w_zero_point.astype(np.int32), int_format(self.w.dtype.name), axis=0, name="w")
        else:
            w_qp = QParams(self.w_scale.reshape(-1)[0], int(self.w_zero_point[0]), int_format(self.w.dtype.name),
                           name="w")
        return x_qp, w_qp, QParams(np.float32(self.y_scale), self.y_zero_point, int_format(self.y_dtype), name="y")

    def accumulators(self) -> np.ndarray:
        fn = reference.conv2d_int32 if self.conv else reference.matmul_int32
        return fn(self.x, self.w, self.x_zero_point, self.w_zero_point, self.bias, **self.attrs)

    def describe(self) -> str:
        zw = np.unique(self.w_zero_point)
        ws = np.unique(self.w_scale)
        parts = [f"{self.op}: x {self.x.dtype.name}{list(self.x.shape)} z_x={self.x_zero_point}",
                 f"w {self.w.dtype.name}{list(self.w.shape)} z_w={zw.tolist() if zw.size > 1 else int(zw[0])}",
                 "no bias" if self.bias is None else f"bias {self.bias.tolist() if self.bias.size <= 4 else '[…]'}"]
        if self.requantizes:
            parts += [f"s_x={self.x_scale:.9g} s_w={ws.tolist() if ws.size > 1 else float(ws[0])} "
                      f"s_y={self.y_scale:.9g}", f"y {self.y_dtype} z_y={self.y_zero_point}",
                      f"mode {self.mode}", f"activation {self.activation}"]
        if self.attrs:
            parts.append(" ".join(f"{k}={v}" for k, v in self.attrs.items()))
        return ", ".join(parts)


def kernel_cases(op: str, mode: str, *, dtypes=DTYPE_COMBOS, weight_zero_points: bool = True,
                 ties: bool = False):
    """A hypothesis strategy of :class:`KernelCase` for ``op`` in requant ``mode``.

    ``ties=True`` draws only the tie-rich kind: operands near their zero points, power-of-two
    scales with ``m`` = 1/2 or 1/4, and an output zero point mid-range, so ties of both signs
    show in the output instead of saturating.
    """
    _, st = _hypothesis()

    def random_scales(draw, n: int):
        return [draw(st.floats(float(np.float32(1e-4)), 1.0, width=32)) for _ in range(n)]

    @st.composite
    def build(draw):
        xd, wd, yd = draw(st.sampled_from(list(dtypes)))
        xi, wi, yi = (np.iinfo(np.dtype(d)) for d in (xd, wd, yd))
        if op.startswith("conv"):
            group, cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
            kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
            dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
            pads = [draw(st.integers(0, 2)) for _ in range(4)]
            h_min = max(1, (kh - 1) * dilations[0] + 1 - pads[0] - pads[2])
            w_min = max(1, (kw - 1) * dilations[1] + 1 - pads[1] - pads[3])
            h, wd_ = draw(st.integers(h_min, h_min + 4)), draw(st.integers(w_min, w_min + 4))
            x_shape = (draw(st.integers(1, 2)), group * cin_g, h, wd_)
            w_shape = (group * cout_g, cin_g, kh, kw)
            attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
        else:
            m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 40)), draw(st.integers(1, 5))
            x_shape, w_shape, attrs = (m, k), (n, k), {}
        c_out = w_shape[0]
        per_channel = draw(st.booleans())
        zx = draw(st.integers(int(xi.min), int(xi.max)))
        # Half the cases keep operands within ±2 of their zero points: small accumulators, so
        # the output range needs a multiplier near 1/2 — and products land on ties often.
        small = ties or draw(st.booleans())
        if small:
            x_lo, x_hi = max(int(xi.min), zx - 2), min(int(xi.max), zx + 2)
            zw, w_lo, w_hi = [0], max(int(wi.min), -2), 2
            bias_bound = 16
        else:
            x_lo, x_hi, w_lo, w_hi, bias_bound = int(xi.min), int(xi.max), int(wi.min), int(wi.max), 2**16
            n_zw = c_out if per_channel else 1
            zw = [draw(st.integers(int(wi.min), int(wi.max))) for _ in range(n_zw)] if weight_zero_points else [0]
        # operand values come from a drawn seed: cheap to generate, and the kit shrinks a failure
        # itself (to the one output element that differs), so element-wise shrinking is not needed
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x = rng.integers(x_lo, x_hi + 1, x_shape).astype(xd)
        w = rng.integers(w_lo, w_hi + 1, w_shape).astype(wd)
        bias = rng.integers(-bias_bound, bias_bound + 1, c_out).astype(np.int32) if draw(st.booleans()) else None
        zw = np.broadcast_to(np.array(zw, np.int64), (c_out,)).astype(wd)
        # scales that use the output range, as calibrated ones do: m ≈ 64 / max|acc|
        fn = reference.conv2d_int32 if op.startswith("conv") else reference.matmul_int32
        try:
            amax = max(1, int(np.abs(fn(x, w, zx, zw, bias, **attrs).astype(np.int64)).max(initial=1)))
        except OverflowError:
            amax = 2**31
        if ties or draw(st.booleans()):  # powers of two: acc · m is exact, and ties are common
            sx = 2.0 ** -draw(st.integers(0, 8))
            sw = [2.0 ** -draw(st.integers(0, 8)) for _ in range(c_out if per_channel else 1)]
            if small:  # m = 1/2 or 1/4: every odd accumulator (or 1 in 2) is a tie
                e = draw(st.integers(1, 2))
            else:
                e = max(1, int(np.ceil(np.log2(amax / 64))) + draw(st.integers(-1, 2)))
            sy = sx * sw[0] * 2.0 ** e  # m = 2**-e for the first channel
        else:
            sx = random_scales(draw, 1)[0]
            sw = random_scales(draw, c_out if per_channel else 1)
            sy = sx * sw[0] * amax / 64 * draw(st.floats(0.5, 2.0))
        return KernelCase(op, x, w, zx, zw, bias, float(np.float32(sx)), np.array(sw, np.float32), float(np.float32(sy)),
                          draw(st.integers(int(yi.min) + 64, int(yi.max) - 64) if ties else
                               st.integers(int(yi.min), int(yi.max))), yd, mode,
                          draw(st.sampled_from([None, "relu", "relu6"])), attrs)

    return build()


# ---------------------------------------------------------------------------------- outcome

def _difference(case: KernelCase, kernels) -> dict | None:
    """``None`` when the backend agrees with the reference (or the case is invalid for the
    reference itself), else what differs."""
    try:
        expected = case.run(reference)
    except (OverflowError, ValueError):
        return None  # the reference refuses it (accumulator or fixed-point overflow): not a case
    try:
        got = np.asarray(kernels.run_case(case) if hasattr(kernels, "run_case") else case.run(kernels))
    except Exception as exc:  # noqa: BLE001 — whatever the backend raises is its answer
        return {"kind": "raised", "message": f"raised {type(exc).__name__}: {exc}", "expected": expected}
    if got.shape != expected.shape:
        return {"kind": "shape", "message": f"returned shape {list(got.shape)}, expected {list(expected.shape)}",
                "expected": expected, "got": got}
    if got.dtype != expected.dtype:
        return {"kind": "dtype", "message": f"returned dtype {got.dtype.name}, expected {expected.dtype.name}",
                "expected": expected, "got": got}
    if not np.array_equal(got, expected):
        return {"kind": "values", "expected": expected, "got": got}
    return None


def _window(start: int, k: int, dilation: int, size: int):
    """``(lo, hi, pad_begin, pad_end)``: the input rows a kernel window from ``start`` reads, and
    the padding left on each side; ``None`` when the window touches no input row."""
    last = start + (k - 1) * dilation
    lo, hi = max(start, 0), min(last, size - 1)
    if lo > hi:
        return None
    return lo, hi, max(0, -start), max(0, last - (size - 1))


def shrink_to_element(case: KernelCase, index) -> KernelCase:
    """The smallest case computing output element ``index`` of ``case`` exactly as ``case`` does.

    Matmul: row ``m`` of ``x`` and row ``n`` of ``w`` (its bias, zero point and scale). Conv:
    image ``n``, output channel ``o`` with the input channels of its group, and the input
    rows and columns its window reads (stride 1, padding kept where the window reads it), so
    the output is 1×1. Accumulator and requantization of that element are unchanged. Returns
    ``case`` itself when a window reads only padding.
    """
    sl = (lambda a, c: a[c:c + 1] if a is not None else None)
    if not case.conv:
        m, n = index
        c = n if case.w_scale.size > 1 else 0
        return KernelCase(case.op, case.x[m:m + 1], case.w[n:n + 1], case.x_zero_point, sl(case.w_zero_point, n),
                          sl(case.bias, n), case.x_scale, case.w_scale[c:c + 1], case.y_scale, case.y_zero_point,
                          case.y_dtype, case.mode, case.activation, dict(case.attrs))
    n, o, oy, ox = index
    a = case.attrs
    (sh, sw), (dh, dw), (t, l, _, _), group = a["strides"], a["dilations"], a["pads"], a["group"]
    c_out, cg, kh, kw = case.w.shape
    rows = _window(oy * sh - t, kh, dh, case.x.shape[2])
    cols = _window(ox * sw - l, kw, dw, case.x.shape[3])
    if rows is None or cols is None:
        return case
    g = o // (c_out // group)
    x = case.x[n:n + 1, g * cg:(g + 1) * cg, rows[0]:rows[1] + 1, cols[0]:cols[1] + 1]
    c = o if case.w_scale.size > 1 else 0
    attrs = {"strides": [1, 1], "pads": [rows[2], cols[2], rows[3], cols[3]], "dilations": [dh, dw], "group": 1}
    return KernelCase(case.op, np.ascontiguousarray(x), case.w[o:o + 1], case.x_zero_point, sl(case.w_zero_point, o),
                      sl(case.bias, o), case.x_scale, case.w_scale[c:c + 1], case.y_scale, case.y_zero_point,
                      case.y_dtype, case.mode, case.activation, attrs)


def _explanation(case: KernelCase, got: np.ndarray) -> dict:
    x_qp, w_qp, y_qp = case.qparams()
    return explain_requantization(case.accumulators(), got, x_qp, w_qp, y_qp, case.activation, case.bias, case.mode)


def _evidence(strategy, kernels, found: KernelCase, count: int, seed: int) -> dict:
    """The requant modes and rules that reproduce the backend on ``found`` *and* on ``count``
    more generated cases (:func:`refquant.golden.explain.combine_explanations`)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    cases = [found]

    @hseed(seed + 1)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case):
        cases.append(case)

    collect()
    explanations = []
    for case in cases:
        try:
            case.run(reference)
            got = np.asarray(kernels.run_case(case) if hasattr(kernels, "run_case") else case.run(kernels))
            explanations.append(_explanation(case, got))
        except Exception:  # noqa: BLE001 — an invalid or refused case is no evidence either way
            continue
    return combine_explanations(explanations, found.mode)


def _describe_difference(case: KernelCase, diff: dict, evidence: dict | None) -> tuple[str, dict]:
    """One paragraph about a failing case, and the first bad element as a dict."""
    if diff["kind"] != "values":
        return diff["message"], {}
    expected, got = diff["expected"], diff["got"]
    bad = np.argwhere(expected != got)
    i = tuple(int(v) for v in bad[0])
    first = {"index": list(i), "reference": expected[i].item(), "backend": got[i].item()}
    text = (f"{len(bad)} of {expected.size} outputs differ; first at {i}: reference {first['reference']}, "
            f"backend {first['backend']}")
    if case.requantizes:
        acc = case.accumulators()
        rq = case.requantizer()
        product = float(np.float32(acc[i]) * rq.multiplier[i[1] % rq.multiplier.size])
        first.update(accumulator=int(acc[i]), acc_times_multiplier=product)
        text += f" (accumulator {int(acc[i])}, float32(acc)·m = {product!r})"
        e = evidence or _explanation(case, got)
        first.update(matching_modes=e["matching_modes"], matching_rules=e["matching_rules"])
        text += f": {e['text']}"
    else:
        text += ": the exact accumulator is Σ (x - z_x)(w - z_w) + bias"
    return text, first


def write_kernel_case(case: KernelCase, directory, backend_output=None, *, with_output: bool = True):
    """Write ``case`` as a golden case: an ``Input`` layer (the integer input as given) and one
    Conv or MatMul layer, with the reference's output; ``backend_output`` goes next to it as
    ``DIRECTORY.backend.npz`` (array ``case``). Returns the loaded golden set."""
    w = GoldenWriter()
    op = "Conv" if case.conv else "MatMul"
    x_qp, w_qp, y_qp = case.qparams()
    if not case.requantizes:
        raise ValueError("write_kernel_case: only requantizing cases (conv, matmul) are golden cases")
    tensors = {"weight": w.tensor("01.case.weight.npy", case.w, "weight", op)}
    if case.bias is not None:
        tensors["bias"] = w.tensor("01.case.bias.npy", case.bias, "bias")
    if with_output:
        tensors["output"] = w.tensor("01.case.output.npy", case.run(reference), "output")
    layers = [
        {"index": 0, "name": "x", "op": "Input", "kernel": "input", "inputs": [], "attributes": {}, "operands": None,
         "constants": {}, "fused_activation": None, "timing": None, "activation_strategy": None,
         "qparams": {"input": None, "weight": None, "output": x_qp.to_dict()},
         "tensors": {"output": w.tensor("00.x.output.npy", case.x, "input")}},
        {"index": 1, "name": "case", "op": op, "kernel": "fused", "inputs": ["x"],
         "attributes": {k: v for k, v in case.attrs.items()}, "operands": None, "constants": {},
         "fused_activation": case.activation, "timing": None, "activation_strategy": None,
         "qparams": {"input": x_qp.to_dict(), "weight": w_qp.to_dict(), "output": y_qp.to_dict()},
         "requantization": requantization_constants(x_qp, w_qp, y_qp, case.mode, case.activation),
         "tensors": tensors},
    ]
    manifest = {"format": FORMAT, "format_version": format_version_of(layers), "refquant_version": __version__,
                "model": {"name": f"kernel case ({case.op})", "graph_sha256": None}, "plan": None,
                "requant": case.mode, "backend": "reference", "seed": None,
                "inputs": {"description": case.describe(), "graph_inputs": []},
                "layers": layers, "outputs": [], "onnx": None}
    gs = write_golden_files(directory, manifest, w)
    if backend_output is not None:
        np.savez(Path(directory).with_suffix(".backend.npz"), case=np.asarray(backend_output))
    return gs


# --------------------------------------------------------------------------------- backends

class CommandBackend:
    """A backend that is a program: ``command`` contains ``{in}`` and ``{out}``.

    For each case the kit writes a golden case directory *without* its expected output
    (``{in}``: ``manifest.json`` + the ``Input`` layer's integers and the ``case`` layer's
    weight and bias ``.npy`` files, qparams, attributes, requant mode and requantizer
    constants in the manifest) and runs the command; the program writes an ``.npz`` to
    ``{out}`` holding the ``case`` layer's integer output, named ``case`` (or as its only
    array). ``refquant golden run {in} --backend NAME -o {out}`` is such a program.
    Requantizing operators only.
    """

    def __init__(self, command: str, *, timeout: float = 120.0, capabilities: dict | None = None):
        if "{in}" not in command or "{out}" not in command:
            raise ValueError(f"backend command must contain {{in}} and {{out}}, got {command!r}")
        self.command, self.timeout = command, timeout
        self.CAPABILITIES = dict(capabilities or {}, ops=("conv", "matmul"))
        self.__name__ = f"command {command!r}"

    def run_case(self, case: KernelCase) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="refquant-case-") as tmp:
            case_dir, out = Path(tmp) / "case", Path(tmp) / "out.npz"
            write_kernel_case(case, case_dir, with_output=False)
            argv = [t.replace("{in}", str(case_dir)).replace("{out}", str(out)) for t in shlex.split(self.command)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
            if done.returncode != 0:
                raise RuntimeError(f"{argv[0]} exited with {done.returncode}: {done.stderr.strip()[-400:]}")
            with np.load(out, allow_pickle=False) as z:
                key = "case" if "case" in z.files else (z.files[0] if len(z.files) == 1 else None)
                if key is None:
                    raise ValueError(f"{out}: expected an array named 'case', found {z.files}")
                return z[key]


def resolve_backend(spec: str):
    """A backend module from a registered backend name, a dotted module name, or a ``.py`` path."""
    if spec in registry.backends():
        return registry.get_backend(spec)
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"backend module file {path} not found")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
        return _with_kernels(module, spec)
    try:
        module = importlib.import_module(spec)
    except ImportError as exc:
        known = ", ".join(sorted(registry.backends()))
        raise ValueError(f"backend {spec!r} is neither a registered backend ({known}) nor an importable "
                         f"module ({exc})") from None
    return _with_kernels(module, spec)


def _with_kernels(module, spec: str):
    """``module`` if it defines at least one kernel function (or ``run_case``), else an error."""
    names = sorted(set(_KERNEL.values()))
    if not any(callable(getattr(module, n, None)) for n in names) and not hasattr(module, "run_case"):
        known = ", ".join(sorted(registry.backends()))
        raise ValueError(f"backend {spec!r}: module {module.__name__!r} defines none of the kernel functions "
                         f"{', '.join(names)} (nor run_case); registered backends: {known}")
    return module


def require_kernels(module, names, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if ``module`` lacks any of the functions ``names``."""
    missing = [n for n in names if not callable(getattr(module, n, None))]
    if missing:
        raise ValueError(f"{what}: the backend lacks {', '.join(f'{n}()' for n in missing)}")


# ----------------------------------------------------------------------------------- report

@dataclass
class SuiteResult:
    """One operator in one requant mode."""

    op: str
    mode: str
    examples: int = 0  # cases generated before the first failure (or in all, when none failed)
    passed: bool = True
    case: str = ""
    message: str = ""
    first_bad: dict = field(default_factory=dict)
    case_dir: str | None = None

    def row(self) -> dict:
        return {"op": self.op, "mode": self.mode, "cases": self.examples, "result": "ok" if self.passed else "FAIL"}


@dataclass
class BackendReport:
    backend: str
    results: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (op, mode, reason)
    limitations: list = field(default_factory=list)  # declared by the backend (CAPABILITIES)

    @property
    def failures(self) -> list:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def cases(self) -> int:
        return sum(r.examples for r in self.results)

    def raise_for_failures(self) -> None:
        if self.failures:
            raise AssertionError(str(self))

    def to_dict(self) -> dict:
        return {"backend": self.backend, "ok": self.ok, "cases": self.cases,
                "results": [asdict(r) for r in self.results],
                "skipped": [{"op": o, "mode": m, "reason": why} for o, m, why in self.skipped],
                "limitations": list(self.limitations)}

    def __str__(self) -> str:
        lines = [f"backend {self.backend}: {len(self.results)} operator/mode suites, {self.cases} cases, "
                 f"{len(self.results) - len(self.failures)} passed, {len(self.failures)} failed",
                 format_table([r.row() for r in self.results])]
        for r in self.failures:
            lines += [f"  FAIL {r.op} ({r.mode}): minimal case {r.case}", f"       {r.message}"]
            if r.case_dir:
                lines.append(f"       written to {r.case_dir} (refquant golden verify {r.case_dir} "
                             f"--outputs {r.case_dir}.backend.npz)")
        for op, mode, why in self.skipped:
            lines.append(f"  skipped {op} ({mode}): {why}")
        for why in self.limitations:
            lines.append(f"  declared limitation: {why}")
        return "\n".join(lines)


def check_backend(kernels, *, name: str | None = None, ops=None, modes=None, max_examples: int | None = None,
                  out_dir=None, seed: int = 0, evidence_cases: int = 60) -> BackendReport:
    """Run the operator suite on the backend module ``kernels`` (see the module docstring).

    ``ops`` and ``modes`` narrow what the backend's ``CAPABILITIES`` declare; ``max_examples``
    defaults to the active hypothesis profile's. Minimal failing cases are written under
    ``out_dir`` (when given) as ``OP-MODE/``. A difference is explained by what reproduces the
    backend's integers on the failing case and on ``evidence_cases`` more generated cases.
    """
    hypothesis, st = _hypothesis()
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.errors import NoSuchExample

    caps = dict(getattr(kernels, "CAPABILITIES", {}) or {})
    name = name or getattr(kernels, "__name__", repr(kernels))
    runs_cases = hasattr(kernels, "run_case")
    available = [op for op in OPS if hasattr(kernels, _KERNEL[op]) or (runs_cases and op in ("conv", "matmul"))]
    ops = [op for op in (ops or caps.get("ops") or available) if op in available]
    claimed = tuple(caps.get("modes", REQUANT_MODES))
    modes = [m for m in (modes or REQUANT_MODES)]
    dtypes = [tuple(c) for c in caps.get("dtypes", DTYPE_COMBOS)]
    n = max_examples or settings().max_examples
    report = BackendReport(name, limitations=[str(v) for v in caps.get("limitations", ())])
    for op in ops:
        for mode in modes if not op.endswith("_int32") else ["float32"]:
            if mode not in claimed:
                report.skipped.append((op, mode, f"the backend declares modes {', '.join(claimed)}"))
                continue
            result = SuiteResult(op, "-" if op.endswith("_int32") else mode)
            counter = {"n": 0, "failed": False}

            def fails(case, counter=counter):
                if not counter["failed"]:
                    counter["n"] += 1
                bad = _difference(case, kernels) is not None
                counter["failed"] |= bad
                return bad

            zero_points = caps.get("weight_zero_points", True)
            strategy = kernel_cases(op, mode, dtypes=dtypes, weight_zero_points=zero_points)
            # hypothesis generates; shrinking is the kit's own: to the first differing element
            config = settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                              suppress_health_check=list(HealthCheck))
            try:
                found = hypothesis.find(strategy, fails, settings=config, random=_random(seed))
            except NoSuchExample:
                result.examples = counter["n"]
                report.results.append(result)
                continue
            result.examples, result.passed = counter["n"], False
            minimal, diff = found, _difference(found, kernels)
            if diff["kind"] == "values":
                index = tuple(int(v) for v in np.argwhere(diff["expected"] != diff["got"])[0])
                small = shrink_to_element(found, index)
                small_diff = _difference(small, kernels)
                if small_diff is not None:
                    minimal, diff = small, small_diff
            result.case = minimal.describe()
            evidence = (_evidence(st.one_of(strategy, kernel_cases(op, mode, dtypes=dtypes, ties=True,
                                                                   weight_zero_points=zero_points)),
                                  kernels, found, evidence_cases, seed)
                        if diff["kind"] == "values" and minimal.requantizes else None)
            result.message, result.first_bad = _describe_difference(minimal, diff, evidence)
            if out_dir is not None and minimal.requantizes:
                case_dir = Path(out_dir) / f"{op}-{result.mode}"
                write_kernel_case(minimal, case_dir, diff.get("got"))
                result.case_dir = str(case_dir)
            report.results.append(result)
    return report


def _random(seed: int):
    return random.Random(seed)
