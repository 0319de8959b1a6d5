"""``refquant run``, ``refquant compare`` and ``refquant results``: quantize models, measure them, read
the results file a sweep wrote."""

from __future__ import annotations

import importlib.util
import json

from ..compare import compare, summary_rows
from ..compare_embeddings import EMBEDDING_ANCHORS, compare_embeddings, embedding_summary_rows
from ..data import digits_inputs, load_digits
from ..executor import peak_working_bytes, quantize_model, run_float
from ..metrics import accuracy
from ..numerics import REQUANT_MODES
from ..plan import parse_plan
from ..presentation import format_table
from ..registry import resolve_model
from ..sweep import make_executor, read_rows, rows_as_csv
from ..zoo import EMBEDDING_MODELS
from .args import int_at_least, int_in_range
from .imported import run_imported

__all__ = ["add_engine_commands", "add_sweep_arguments", "cmd_run", "cmd_compare", "cmd_results"]


def cmd_run(args) -> int:
    """Quantize MODEL with the given strategies, evaluate on the digits test set, show each layer;
    or, for a quantized ``.onnx`` model, run it on ``--inputs`` with its own qparams."""
    if args.model.endswith(".onnx"):
        return run_imported(args)
    if args.inputs or args.outputs:
        raise ValueError("--inputs/--outputs apply to .onnx models; a registered model runs on the digits test set")
    graph = resolve_model(args.model)
    data = load_digits()
    test = data.shifted(args.dataset) if args.dataset != "test" else data.test
    x = digits_inputs(graph, test.x)
    calib = digits_inputs(graph, data.calibration(args.calibration).x)
    plan_text = args.plan or f"weights={args.weights} activations={args.activations}"
    plan = parse_plan(plan_text)
    qm = quantize_model(graph, plan, calib, requant=args.requant)
    float_acc = accuracy(run_float(graph, {graph.inputs[0].name: x})[graph.outputs[0]], test.y)
    result = qm.run(x, backend=args.backend)
    acc = accuracy(result.outputs[graph.outputs[0]], test.y)
    rows = [r.summary() for r in result.records]
    summary = {"model": graph.name, "plan": str(plan), "backend": args.backend, "requant": args.requant,
               "dataset": test.name, "images": int(len(x)), "accuracy": acc, "float_accuracy": float_acc,
               "peak_working_bytes": peak_working_bytes(result.records)}
    if args.json:
        print(json.dumps({"summary": summary, "layers": rows}, indent=1))
        return 0
    print(f"model {graph.name}  plan: {plan}  backend {args.backend}  requant {args.requant}")
    print(f"{test.name}: {len(x)} images  accuracy {acc:.4f}  (float {float_acc:.4f}, "
          f"Δ {100 * (acc - float_acc):+.2f} points)  peak working memory "
          f"{summary['peak_working_bytes']} bytes")
    print(format_table(rows))
    return 0


def cmd_compare(args) -> int:
    """Every strategy combination × bit width × granularity × test set, as one table; on a Dask
    cluster with ``--workers``/``--scheduler``, into a results file with ``--results``."""
    embedding = [m for m in args.models if m in EMBEDDING_MODELS]
    if embedding:
        if args.workers or args.scheduler or args.results:
            raise ValueError(f"compare {', '.join(embedding)}: --workers, --scheduler and --results are not "
                             f"available for sentence-embedding models (they run serially)")
        return _compare_embeddings(args, embedding)
    if args.resume and not args.results:
        raise ValueError("compare: --resume needs --results FILE (the rows to resume from)")
    executor = make_executor(args.workers, args.scheduler)
    try:
        rows = compare(args.models or ["digits-cnn"], bits=args.bits, weights=args.weights,
                       activations=args.activations, granularities=args.granularity, backend=args.backend,
                       calibration=args.calibration, requant=args.requant, progress=not args.quiet,
                       activation_bits=args.activation_bits, views=args.views, severity=args.severity,
                       corruptions=args.corruptions, full_grid=args.full_grid, batch=args.batch,
                       anchors=args.anchors, executor=executor, results=args.results, resume=args.resume,
                       threads=args.threads)
    finally:
        executor.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        print(format_table(summary_rows(rows)))
    return 0


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _compare_embeddings(args, models) -> int:
    """``compare`` of a sentence-embedding model (:mod:`refquant.compare_embeddings`)."""
    if len(models) != len(args.models):
        raise ValueError(f"compare {', '.join(models)} (sentence embeddings) alone, not with {', '.join(set(args.models) - set(models))}")
    anchors = list(args.anchors)
    if not anchors and not args.no_anchors and onnxruntime_available():
        anchors = list(EMBEDDING_ANCHORS)
    rows = []
    for m in models:
        rows += compare_embeddings(m, bits=args.bits, weights=args.weights, activations=args.activations,
                                   granularities=args.granularity, activation_bits=args.activation_bits,
                                   backend=args.backend, requant=args.requant, batch=args.batch, anchors=anchors,
                                   progress=not args.quiet)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        print(format_table(embedding_summary_rows(rows)))
    return 0


def cmd_results(args) -> int:
    """Print a results file's rows: a table, ``--json`` or ``--csv`` (every column)."""
    rows = read_rows(args.file)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.csv:
        print(rows_as_csv(rows), end="")
    else:
        print(format_table(rows, ["model", "plan", "dataset", "accuracy", "top1_agreement", "sqnr_db",
                                  "latency_ms", "refquant_version", "executor", "finished_at"]))
    return 0


def add_sweep_arguments(p) -> None:
    """``--workers``, ``--scheduler`` (where the tasks run), ``--threads`` (Numba threads per task)."""
    p.add_argument("--workers", type=int_at_least(1), default=None, metavar="N",
                   help="run the plans on a local Dask cluster of N worker processes (extra 'cluster')")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the plans on a running Dask cluster, e.g. tcp://host:8786 (extra 'cluster')")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="T",
                   help="Numba threads per plan, under every executor (default: this machine's); the numba "
                        "backend's peak working memory depends on it")


def add_engine_commands(cli) -> None:
    """Add ``compare`` and ``run`` to the ``refquant`` command line."""
    p = cli.command("compare", "compare every strategy combination on the test and shifted sets")
    p.add_argument("models", nargs="*", help="registered model names or .json paths (default digits-cnn)")
    p.add_argument("--bits", type=int_in_range(2, 8), nargs="+", default=None,
                   help="bit widths (default 8 4; a real model: 8)")
    p.add_argument("--activation-bits", type=int_in_range(2, 8), default=None, metavar="B",
                   help="activations' bit width (default: the same as --bits)")
    p.add_argument("--weights", nargs="+", default=None,
                   help="weight strategies (default: all; a real model: minmax mse)")
    p.add_argument("--activations", nargs="+", default=None,
                   help="activation strategies (default: all; a real model: static-minmax static-percentile)")
    p.add_argument("--granularity", nargs="+", default=None, choices=("per-tensor", "per-channel"),
                   help="weight granularities (default both; a real model: per-channel)")
    p.add_argument("--full-grid", action="store_true",
                   help="every registered strategy pair, bits 8 4, both granularities (unless given)")
    p.add_argument("--views", type=int_at_least(1), default=None, metavar="N",
                   help="real models: test on the first N views of every photo (default 1: 11 images)")
    p.add_argument("--severity", type=int, default=None, choices=(1, 2, 3, 4, 5),
                   help="real models: corruption severity of the shifted sets (default 3)")
    p.add_argument("--corruptions", nargs="*", default=None, metavar="NAME",
                   help="real models: the corruptions to run as shifted sets (default: all six)")
    p.add_argument("--batch", type=int_at_least(1), default=None, help="real models: images per run (default 8)")
    p.add_argument("--anchors", nargs="*", default=[], metavar="METHOD",
                   help="add onnxruntime quantize_static rows (per channel, QDQ) calibrated the same way: "
                        "MinMax Entropy Percentile (needs the extra onnx; what onnxruntime computes on this host)")
    p.add_argument("--no-anchors", action="store_true",
                   help="sentence-embedding models: no onnxruntime anchor rows (by default they run when "
                        "onnxruntime is installed: quantize_dynamic, quantize_static-MinMax)")
    p.add_argument("--backend", default="numba", help="kernel backend (default numba)")
    p.add_argument("--requant", default="float32", choices=REQUANT_MODES)
    p.add_argument("--calibration", type=int_at_least(1), default=None,
                   help="calibration images: digits 16, 32 (default) or 128; real models: views (default 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_sweep_arguments(p)
    p.add_argument("--results", default=None, metavar="FILE",
                   help="write every row to this SQLite results file as it finishes")
    p.add_argument("--resume", action="store_true", help="skip the rows already in --results FILE")
    p.set_defaults(handler=cmd_compare)

    p = cli.command("results", "print or export a results file written by compare --results")
    p.add_argument("file", help="a results file (SQLite) written by refquant compare --results")
    p.add_argument("--csv", action="store_true", help="print CSV (every column) instead of a table")
    p.set_defaults(handler=cmd_results)

    p = cli.command("run", "quantize a model and evaluate it, with a per-layer table; or run a quantized .onnx model")
    p.add_argument("model", help="a registered model name, a model .json path, or a quantized .onnx model")
    p.add_argument("--weights", default="minmax:8", help="weight strategy[:bits[:granularity]]")
    p.add_argument("--activations", default="static-minmax:8", help="activation strategy[:bits...]")
    p.add_argument("--plan", default=None, help="a whole plan string (overrides --weights/--activations)")
    p.add_argument("--backend", default="reference", help="kernel backend (reference, numba, …)")
    p.add_argument("--requant", default="float32", choices=REQUANT_MODES)
    p.add_argument("--calibration", type=int, default=32, choices=(16, 32, 128),
                   help="calibration images (default 32)")
    p.add_argument("--dataset", default="test", help="'test' or a shifted test set's name")
    p.add_argument("--inputs", default=None, metavar="IN.npz", help="(.onnx models) the input arrays by name")
    p.add_argument("--outputs", default=None, metavar="OUT.npz", help="(.onnx models) where to write the outputs")
    p.add_argument("--semantics", default="integer", choices=("integer", "qdq-float"),
                   help="(.onnx QDQ models) integer: groups fused as onnxruntime fuses them; qdq-float: as written")
    p.set_defaults(handler=cmd_run)
