"""``refquant inspect MODEL.onnx`` and ``refquant run MODEL.onnx --inputs IN.npz --outputs OUT.npz``:
quantized ONNX models (QOperator or QDQ, as onnxruntime's tool writes them) imported with their
own qparams (:mod:`refquant.onnx_io.qimport`).

Bad input — a missing or unknown input name, a wrong dtype or shape, a pickled ``.npz`` — is one
clear line on stderr and exit code 2 (the ``ValueError`` the ``refquant`` entry point reports);
nothing is written. The outputs are written only after the whole run succeeded.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from ..executor import peak_working_bytes
from ..onnx_io.qimport import SEMANTICS, import_quantized
from ..presentation import format_table, print_rows

__all__ = ["add_imported_commands", "cmd_inspect", "run_imported", "load_npz"]


def _short(qp) -> str:
    if not qp:
        return "-"
    if "per_channel" in qp:
        return f"{qp['dtype']} per-channel({qp['per_channel']})"
    return f"{qp['dtype']} s={qp['scale']:.4g} z={qp['zero_point']}"


def cmd_inspect(args) -> int:
    """Each step of a quantized ONNX model: format (integer / float island / boundary /
    unsupported), qparams, the onnxruntime rule it follows, the nodes it was fused from."""
    m = import_quantized(args.model, semantics=args.semantics)
    rows = m.describe()
    if args.json:
        print(json.dumps({"model": args.model, "form": m.form, "semantics": m.semantics,
                          "inputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in m.inputs],
                          "outputs": m.outputs, "unsupported": m.unsupported(), "layers": rows}, indent=1))
        return 0
    print(f"{args.model}: {m.form} model, {len(rows)} steps ({m.semantics} semantics)  inputs: "
          + ", ".join(f"{n} {d}{s}" for n, d, s in m.inputs))
    table = [{"step": r["name"], "op": r["op"], "format": r["format"],
              "input": " | ".join(map(_short, r["inputs"])) if "inputs" in r else _short(r.get("input")),
              "weight": _short(r.get("weight")), "output": _short(r.get("output")),
              "fused from": ", ".join(r["fused_from"]) if len(r["fused_from"]) > 1 else ""} for r in rows]
    print(format_table(table))
    if m.unsupported():
        print(f"unsupported: {', '.join(m.unsupported())}")
    return 0


def load_npz(path: str) -> dict:
    """The arrays of an ``.npz`` file, without unpickling anything (ValueError otherwise)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (pickled arrays are refused)") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None


def run_imported(args) -> int:
    """``refquant run MODEL.onnx``: run an imported quantized model on ``--inputs``."""
    if not args.inputs:
        raise ValueError("running an .onnx model needs --inputs IN.npz")
    m = import_quantized(args.model, semantics=args.semantics)
    if m.unsupported():
        raise ValueError(f"{args.model}: unsupported operator(s): {', '.join(m.unsupported())}")
    feeds = m.check_feeds(load_npz(args.inputs))
    result = m.run(feeds, backend=args.backend, requant=args.requant)
    if args.outputs:
        d = os.path.dirname(os.path.abspath(args.outputs))
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=d)
        os.close(fd)
        try:
            np.savez(tmp, **result.outputs)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, args.outputs)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    rows = [{"step": r.name, "op": r.op, "kernel": r.kernel, "output_bytes": r.buffers.get("output", 0),
             "ms": round(r.seconds * 1e3, 3)} for r in result.records]
    summary = {"model": args.model, "form": m.form, "semantics": m.semantics, "backend": args.backend,
               "requant": args.requant, "outputs": {k: list(np.shape(v)) for k, v in result.outputs.items()},
               "written": args.outputs, "peak_working_bytes": peak_working_bytes(result.records)}
    if args.json:
        print(json.dumps({"summary": summary, "layers": rows}, indent=1))
        return 0
    print(f"{args.model}: {m.form} model, {m.semantics} semantics, backend {args.backend}, requant {args.requant}"
          + (f" -> {args.outputs}" if args.outputs else ""))
    print_rows(rows)
    return 0


def add_imported_commands(cli) -> None:
    """Add ``inspect`` to the ``refquant`` command line (``run`` takes .onnx models itself)."""
    p = cli.command("inspect", "show each step of a quantized ONNX model: format, qparams, unsupported")
    p.add_argument("model", help="a QOperator or QDQ .onnx model")
    p.add_argument("--semantics", default="integer", choices=SEMANTICS,
                   help="integer (QDQ groups fused as onnxruntime fuses them) or qdq-float (as written)")
    p.set_defaults(handler=cmd_inspect)
