"""``refquant golden …``: export, run, verify and conform — the golden-reference workflow.

::

    refquant golden export MODEL DIR [--plan PLAN ...] [--images 4] [--onnx] [--accumulators] [--workers N]
    refquant golden export efficientnet-lite0 DIR [--views PHOTO/VIEW ...] [--calibration 16] [--onnx]
    refquant golden export minilm-l6 DIR [--sentences 4] [--seed 0] [--calibration 21]
    refquant golden export ppocrv4-det|ppocrv4-rec DIR --views IMAGE/R0:R1,C0:C1 ... [--onnx]
    refquant golden export MODEL.onnx DIR --inputs IN.npz [--semantics integer|qdq-float]
    refquant golden run DIR --backend NAME|MODULE|FILE.py -o OUT.npz
    refquant golden verify DIR --outputs OUT.npz|PB_DIR [--policy exact|lsb1] [--manifest-sha256 HEX] [--json]
                           [--html REPORT.html] [--backend-name NAME] [--float-tolerance T]
    refquant golden conform (--backend NAME|MODULE|FILE.py | --command "CMD {in} {out}") [--out DIR]
    refquant golden refresh [DIR]

``verify`` and ``conform`` exit 0 on a pass and 1 on a failure; a damaged golden file (or any
other error) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numba
import numpy as np

from ..compare import photo_data
from ..compare_embeddings import sentence_batches
from ..compare_ocr import OCR_MODELS, ocr_golden_inputs
from ..data import digits_inputs, load_digits
from ..data.photos import PHOTOS, named_views
from ..data.sentences import load_sentences
from ..executor import quantize_model, trace_calibration
from ..golden import POLICIES, export_golden, load_golden, replay, verify
from ..golden.html_report import write_html_report
from ..golden.imported import export_imported_golden
from ..golden.many import ExportJob, export_plan
from ..golden.shipped import GOLDEN_DIR, refresh
from ..graph.io import read_npz_checked
from ..numerics import REQUANT_MODES, dequantize
from ..plan import parse_plan
from ..presentation import SweepProgress
from ..registry import resolve_model
from ..sweep import make_executor
from ..zoo import EMBEDDING_MODELS, REAL_MODELS, load_minilm_tokenizer
from ..zoo.minilm import encode_sentences
from ..zoo.efficientnet_lite import preprocess
from ..testing.backend import CommandBackend, check_backend, require_kernels, resolve_backend
from .args import existing_dir, existing_file, int_at_least
from .engine import add_sweep_arguments

__all__ = ["add_golden_commands"]


def _emit_json(doc) -> None:
    print(json.dumps(doc, indent=1, default=str))


def _export_imported(args) -> int:
    """``golden export MODEL.onnx DIR --inputs IN.npz``: the golden set of an imported quantized model."""
    existing_file("golden export", "MODEL", args.model)
    if not args.inputs:
        raise ValueError("golden export: an .onnx model needs --inputs IN.npz (arrays named after the model's inputs)")
    existing_file("golden export", "--inputs", args.inputs)
    feeds = read_npz_checked(args.inputs, what="inputs")
    gs = export_imported_golden(args.model, feeds, args.dir, semantics=args.semantics, requant=args.requant,
                                backend=args.backend, input_description=f"the arrays of {Path(args.inputs).name}")
    excluded = gs.manifest["imported"]["excluded"]
    summary = {"golden": str(gs.root), "model": args.model, "semantics": args.semantics, "requant": args.requant,
               "layers": len(gs.layers), "excluded": [f"{e['name']} ({e['op']}): {e['reason']}" for e in excluded],
               "files": len(gs.manifest["files"]), "manifest_sha256": gs.manifest_sha256}
    if args.json:
        _emit_json(summary)
    else:
        print(f"wrote golden set {gs.root}: {summary['layers']} integer layers of the imported model, "
              f"{len(excluded)} steps not layers (float or dequantizing), {summary['files']} files "
              f"(manifest sha256 {gs.manifest_sha256})")
    return 0


def _photo_inputs(args):
    """A real ImageNet model's recorded views and calibration views (``refquant.compare.photo_data``:
    never a ``center`` view): ``--views`` as named, else ``--images`` of the 11 ``center`` views
    chosen with ``--seed``."""
    calibration = 16 if args.calibration is None else args.calibration
    if args.views:
        views = named_views(args.views)
    else:
        if args.images > len(PHOTOS):
            raise ValueError(f"golden export: --images {args.images}: a real model records at most {len(PHOTOS)} "
                             f"center views (name others with --views PHOTO/VIEW ...)")
        chosen = sorted(int(i) for i in np.random.default_rng(args.seed).choice(len(PHOTOS), args.images,
                                                                                 replace=False))
        views = named_views([f"{list(PHOTOS)[i]}/center" for i in chosen])
    data = photo_data(calibration, views=1, corruptions=())
    description = (f"photo views {list(views.names)} (refquant.data.photos, preprocessed (v - 127) / 128); "
                   f"calibration: {calibration} non-center views (refquant.compare.photo_data)")
    return preprocess(views.images), data.calibration, description


def _sentence_inputs(args):
    """A sentence-embedding model's recorded batch (``--sentences`` of the shipped set's test
    sentences, chosen with ``--seed``, padded to the longest) and its calibration batches (the
    first ``--calibration`` of the set's 21 calibration sentences, as ``refquant compare`` uses them)."""
    data, tok = load_sentences(), load_minilm_tokenizer()
    n = 4 if args.sentences is None else args.sentences
    if n > len(data.test):
        raise ValueError(f"golden export: --sentences {n}: the sentence set has only {len(data.test)} test sentences")
    chosen = sorted(int(i) for i in np.random.default_rng(args.seed).choice(len(data.test), n, replace=False))
    calibration = len(data.calibration) if args.calibration is None else args.calibration
    if calibration > len(data.calibration):
        raise ValueError(f"golden export: --calibration {calibration}: the sentence set has only "
                         f"{len(data.calibration)} calibration sentences")
    calib, _ = sentence_batches(tok, [s for _, s in data.calibration[:calibration]], 32)
    description = (f"test sentences {chosen} of refquant/data/sentences.json (numpy.random.default_rng({args.seed})"
                   f".choice), one batch padded to the longest; calibration: the first {calibration} calibration "
                   f"sentences")
    return encode_sentences(tok, [data.test[i][1] for i in chosen]), calib, description


def cmd_export(args) -> int:
    if str(args.model).endswith(".onnx"):
        return _export_imported(args)
    if args.inputs:
        raise ValueError("golden export: --inputs is for an imported .onnx model")
    if args.model in OCR_MODELS:
        if args.calibration is not None:
            raise ValueError(f"golden export {args.model}: --calibration counts photo or digit images; an OCR "
                             f"model calibrates on its --views mirrored left-right")
        graph, x, calib, description = ocr_golden_inputs(args.model, args.views or ())
        return _export_registered(args, graph, x, calib, description)
    graph = resolve_model(args.model)
    if args.model in EMBEDDING_MODELS:
        if len(args.plan or ()) > 1 or args.workers or args.scheduler:
            raise ValueError(f"golden export {args.model}: one plan at a time")
        x, calib, description = _sentence_inputs(args)
        return _export_registered(args, graph, x, calib, description)
    if args.sentences is not None:
        raise ValueError(f"golden export: --sentences is for a sentence-embedding model ({', '.join(EMBEDDING_MODELS)})")
    if args.model in REAL_MODELS:
        x, calib, description = _photo_inputs(args)
        return _export_registered(args, graph, x, calib, description)
    if args.views:
        raise ValueError(f"golden export: --views names photo views, for a real ImageNet model "
                         f"({', '.join(REAL_MODELS)}), not {args.model!r}")
    calibration = 32 if args.calibration is None else args.calibration
    digits = load_digits()
    if args.images > len(digits.test):
        raise ValueError(f"golden export: --images {args.images}: the digits test set has only "
                         f"{len(digits.test)} images")
    indices = sorted(int(i) for i in np.random.default_rng(args.seed).choice(len(digits.test), args.images,
                                                                              replace=False))
    x = digits_inputs(graph, digits.test.x[indices])
    calib = digits_inputs(graph, digits.calibration(calibration).x)
    description = (f"digits test set images {indices} (numpy.random.default_rng({args.seed}).choice); "
                   f"calibration: the first {calibration} images of the calibration split")
    return _export_registered(args, graph, x, calib, description)


def _export_registered(args, graph, x, calib, description) -> int:
    plans = args.plan or [f"weights={args.weights} activations={args.activations}"]
    if len(plans) > 1 or args.workers or args.scheduler:
        return _export_many(args, graph, x, calib, plans, description)
    qm = quantize_model(graph, plans[0], calib, requant=args.requant)
    gs = export_golden(qm, x, args.dir, model_name=args.model, backend=args.backend, seed=args.seed,
                       input_description=description, accumulators=args.accumulators, onnx=args.onnx)
    summary = {"golden": str(gs.root), "model": args.model, "plan": str(qm.plan), "requant": args.requant,
               "layers": len(gs.layers), "files": len(gs.manifest["files"]),
               "bytes": sum(e["bytes"] for e in gs.manifest["files"].values()),
               "manifest_sha256": gs.manifest_sha256}
    if args.json:
        _emit_json(summary)
    else:
        print(f"wrote golden set {gs.root}: {summary['layers']} layers, {summary['files']} files, "
              f"{summary['bytes']} bytes (manifest sha256 {gs.manifest_sha256})")
    return 0


def _export_many(args, graph, x, calibration, plans, description) -> int:
    """Several plans: one golden set each under DIR (:mod:`refquant.golden.many`), the calibration
    pass recorded once, the plans run by the executor --workers/--scheduler choose."""
    for plan in plans:
        parse_plan(plan)  # a bad plan is an error before anything runs
    job = ExportJob(graph, args.model, x, trace_calibration(graph, calibration), args.dir, args.requant,
                    args.backend, args.seed, description, args.accumulators, args.onnx,
                    args.threads or numba.get_num_threads())
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    progress = None if args.quiet else SweepProgress(len(plans), unit="sets")
    summaries = [None] * len(plans)
    executor = make_executor(args.workers, args.scheduler)
    try:
        handle = executor.share(job)
        for item in enumerate(plans):
            executor.submit(export_plan, handle, item)
        if progress:
            progress.update(0, "submitted")
        for done, (i, summary) in enumerate(executor.completed(), 1):
            summaries[i] = summary
            if progress:
                progress.update(done, summary["golden"])
    finally:
        executor.close()
    if args.json:
        _emit_json(summaries)
    else:
        for s in summaries:
            print(f"wrote golden set {s['golden']}: {s['layers']} layers, {s['files']} files, {s['bytes']} bytes "
                  f"(manifest sha256 {s['manifest_sha256']})")
    return 0


def _backend_arg(parser) -> None:
    parser.add_argument("--backend", help="a registered backend name (refquant plugins), a module name, "
                                          "or a .py file with the kernel functions")


def cmd_run(args) -> int:
    if not args.backend:
        raise ValueError("golden run: --backend is required")
    existing_dir("golden run", "DIR", args.dir)
    gs = load_golden(args.dir)
    gs.check_files()
    kernels = resolve_backend(args.backend)
    require_kernels(kernels, ("conv2d_requant", "matmul_requant", "conv2d_int32", "matmul_int32"),
                    f"golden run: --backend {args.backend}")
    outputs = replay(gs, kernels, mode=args.requant)
    for out in gs.manifest["outputs"]:  # the float graph outputs: the last layers' integers dequantized
        qp = gs.qparams(gs.layer(out["layer"]), "output")
        outputs[out["name"]] = outputs[out["layer"]] if qp is None else dequantize(outputs[out["layer"]], qp)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.savez(f, **outputs)
    if args.json:
        _emit_json({"golden": str(gs.root), "outputs": str(out), "arrays": sorted(outputs)})
    else:
        print(f"ran {len(gs.layers)} layers of {gs.root} on backend {args.backend} (Conv/Gemm/MatMul on its "
              f"kernels, each from the golden inputs); wrote {out}")
    return 0


def cmd_verify(args) -> int:
    existing_dir("golden verify", "DIR", args.dir)
    existing_file("golden verify", "--outputs", args.outputs)
    report = verify(args.dir, args.outputs, policy=args.policy, manifest_sha256=args.manifest_sha256,
                    backend=args.backend_name, float_tolerance=args.float_tolerance)
    if args.html:
        write_html_report(report, args.html)
    if args.json:
        _emit_json(report.to_dict())
    else:
        print(report.format_text())
    return 0 if report.passed else 1


def cmd_conform(args) -> int:
    if bool(args.backend) == bool(args.command):
        raise ValueError("golden conform: give exactly one of --backend and --command")
    if args.command:
        modes = tuple(args.modes) if args.modes else None
        kernels = CommandBackend(args.command, capabilities={"modes": modes} if modes else None)
    else:
        kernels = resolve_backend(args.backend)
    report = check_backend(kernels, name=args.backend or args.command, ops=args.ops, modes=args.modes,
                           max_examples=args.examples, out_dir=args.out, seed=args.seed,
                           evidence_cases=args.evidence)
    if args.json:
        _emit_json(report.to_dict())
    else:
        print(report)
    return 0 if report.ok else 1


def cmd_refresh(args) -> int:
    root = Path(args.dir) if args.dir else GOLDEN_DIR
    index = refresh(root, progress=None if args.json else (lambda rel: print(f"  {rel}", file=sys.stderr)))
    if args.json:
        _emit_json(index)
    else:
        print(f"wrote {len(index['sets'])} golden sets and {len(index['onnx_operator_cases'])} ONNX operator "
              f"cases under {root}")
    return 0


def _cmd_help(parser):
    def show(args) -> int:
        parser.print_help()
        return 2
    return show


def add_golden_commands(cli) -> None:
    """Add the ``golden`` command group to the ``refquant`` command line."""
    group = cli.command("golden", "golden sets: export, run a backend on one, verify its outputs, conformance")
    group.set_defaults(handler=_cmd_help(group))
    sub = group.add_subparsers(dest="golden_command", metavar="SUBCOMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return p

    p = command("export", "run a quantized model on digits test images (photo views for a real ImageNet "
                          "model) and write its golden set")
    p.add_argument("model", help="a registered model name or a model .json path")
    p.add_argument("dir", help="directory to write (a previous golden set there is replaced)")
    p.add_argument("--plan", nargs="+", default=None,
                   help="a plan string (overrides --weights/--activations); several: one set each, in DIR/NN-PLAN")
    p.add_argument("--weights", default="minmax:8:per-channel")
    p.add_argument("--activations", default="static-minmax:8")
    p.add_argument("--images", type=int_at_least(1), default=4, help="test images to record (default 4)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="chooses the images or sentences (default 0)")
    p.add_argument("--sentences", type=int_at_least(1), default=None,
                   help="a sentence-embedding model (minilm-l6): test sentences to record (default 4)")
    p.add_argument("--views", nargs="+", metavar="PHOTO/VIEW", default=None,
                   help="real ImageNet model: the photo views to record, e.g. chelsea/center coffee/flip "
                        "(default: --images center views chosen with --seed); OCR model: text-image regions "
                        "IMAGE or IMAGE/R0:R1,C0:C1, e.g. page/100:132,0:32 (required)")
    p.add_argument("--calibration", type=int_at_least(1), default=None,
                   help="calibration images: digits 16, 32 or 128 (default 32); a real model's "
                        "non-center photo views, 1..99 (default 16)")
    p.add_argument("--requant", default="float32", choices=REQUANT_MODES)
    p.add_argument("--backend", default="reference", help="kernel backend that computes the set")
    p.add_argument("--accumulators", action="store_true", help="also write every layer's int32 accumulators")
    p.add_argument("--onnx", action="store_true", help="also write the ONNX test-data layout (QOperator model)")
    p.add_argument("--inputs", default=None, help="for a quantized MODEL.onnx (imported): an .npz of its float inputs")
    p.add_argument("--semantics", default="integer", choices=("integer", "qdq-float"),
                   help="for a quantized MODEL.onnx: how a QDQ model is imported (default integer)")
    add_sweep_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar (several plans)")
    p.set_defaults(handler=cmd_export)

    p = command("run", "recompute every layer of a golden set on a backend's kernels; write an outputs .npz")
    p.add_argument("dir", help="golden set directory")
    _backend_arg(p)
    p.add_argument("-o", "--output", required=True, help="outputs .npz to write (arrays named by layer)")
    p.add_argument("--requant", default=None, choices=REQUANT_MODES, help="override the set's requant mode")
    p.set_defaults(handler=cmd_run)

    p = command("verify", "compare a backend's outputs with a golden set, layer by layer, in LSBs")
    p.add_argument("dir", help="golden set directory")
    p.add_argument("--outputs", required=True, help="the backend's outputs: an .npz (arrays named by layer) "
                                                    "or a directory of ONNX output_K.pb files")
    p.add_argument("--policy", default="exact", choices=tuple(POLICIES),
                   help="exact: every integer equal; lsb1: within ±1 LSB (default exact)")
    p.add_argument("--manifest-sha256", metavar="HEX", help="refuse the set unless its manifest has this SHA-256")
    p.add_argument("--float-tolerance", metavar="T", type=float, default=0.0,
                   help="float-island tensors (transformers): accept |backend − golden| <= T · max|golden| of "
                        "the layer (default 0: the same float32 bits)")
    p.add_argument("--html", metavar="REPORT.html", default=None,
                   help="also write the report as one self-contained HTML page (per-layer counts, heat maps of "
                        "where mismatches sit, LSB histograms, each layer's rule; needs matplotlib)")
    p.add_argument("--backend-name", metavar="NAME", default=None,
                   help="who produced --outputs, shown in the report (default: the outputs file)")
    p.set_defaults(handler=cmd_verify)

    p = command("conform", "run the hypothesis operator suite (Conv, MatMul) against the reference kernels")
    _backend_arg(p)
    p.add_argument("--command", default=None, help='a program to run per case: "CMD {in} {out}" ({in}: a '
                                                   "golden case directory, {out}: the .npz to write)")
    p.add_argument("--ops", nargs="+", default=None, choices=("conv", "matmul", "conv_int32", "matmul_int32"))
    p.add_argument("--modes", nargs="+", default=None, choices=REQUANT_MODES)
    p.add_argument("--examples", type=int_at_least(1), default=None,
                   help="cases per operator and mode (default: the hypothesis profile's)")
    p.add_argument("--out", default=None, help="directory for minimal failing cases (golden cases)")
    p.add_argument("--evidence", type=int_at_least(0), default=60,
                   help="after a failure, further cases that the explanation must fit (default 60)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.set_defaults(handler=cmd_conform)

    p = command("refresh", "rewrite the checked-in golden sets (spec/golden) and their index")
    p.add_argument("dir", nargs="?", default=None, help="default: spec/golden of this checkout")
    p.set_defaults(handler=cmd_refresh)
