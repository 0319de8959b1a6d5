"""``refquant train NAME``: train a shipped architecture, write its model files and card.

Progress (one line per epoch) goes to stderr; the final report to stdout (a table, or JSON
with ``--json``). Files written to ``--out`` (default: the current directory):

* a float run: ``NAME.json``, ``NAME.npz`` and the model card ``NAME.md`` (with the QAT
  comparison of the architecture's recipe, if it declares one);
* a QAT run (``--qat``): ``NAME-qat.json`` and ``NAME-qat.npz`` — the float weights learnt
  under fake quantization, ready for ``quantize_model`` with the same bit widths;
* a run stopped early (``--stop-at K``): only the checkpoint, if ``--checkpoint`` names one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data import load_digits
from ..graph import load_model, save_model
from ..presentation import format_table
from ..train.architectures import ARCHITECTURES
from ..train.card import render_card
from ..train.optim import OPTIMIZERS
from ..train.report import float_accuracies, integer_accuracy, qat_versus_ptq
from ..train.trainer import Trainer, config_for, format_progress
from .args import existing_file, float_in, int_at_least

__all__ = ["add_train_commands", "cmd_train"]


def _progress(prefix: str = ""):
    def show(record: dict) -> None:
        print(prefix + format_progress(record), file=sys.stderr, flush=True)

    return show


def cmd_train(args) -> int:
    data = load_digits()
    if args.resume:
        existing_file("train", "--resume", args.resume)
        trainer = Trainer.resume(args.resume, data)
        if trainer.config.model != args.name:
            raise ValueError(f"checkpoint {args.resume} is a run of {trainer.config.model!r}, not {args.name!r}")
        print(f"refquant train: resuming {args.name} after epoch {trainer.epoch} of "
              f"{trainer.config.epochs} from {args.resume}", file=sys.stderr)
    else:
        config = config_for(args.name, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
                            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                            qat=" ".join(args.qat) if args.qat else None, init=args.init)
        trainer = Trainer(config, data)
    config = trainer.config
    trainer.fit(stop_at=args.stop_at, checkpoint=args.checkpoint, progress=_progress())
    if trainer.epoch < config.epochs:
        where = f"; resume with --resume {args.checkpoint}" if args.checkpoint else ""
        print(f"refquant train: stopped after epoch {trainer.epoch} of {config.epochs}{where}", file=sys.stderr)
        return 0

    out = Path(args.out)
    name = config.model + ("-qat" if config.qat else "")
    graph = trainer.trained_graph()
    graph.name = name
    json_path, npz_path = save_model(graph, out / name)
    saved = load_model(json_path)
    accuracies = float_accuracies(saved, data)
    report = {"model": name, "files": [str(json_path), str(npz_path)], "config": config.to_dict(),
              "history": trainer.history, "float_accuracy": accuracies}
    if config.qat:
        _, report["fake_quant_test_accuracy"] = trainer.evaluate(trainer.x_test, trainer.y_test)
        if args.ptq:
            report["quantized"] = integer_accuracy(saved, " ".join(args.ptq), data)
    else:
        qat = None
        if trainer.arch.qat_check is not None and not args.no_qat_check:
            print(f"refquant train: QAT check of {name} ({trainer.arch.qat_check.qat_plan})", file=sys.stderr)
            qat = qat_versus_ptq(trainer.arch, json_path, data, progress=_progress("  qat "))
            report["qat_check"] = qat
        card = render_card(arch=trainer.arch, config=config, graph=saved, trained=trainer.trained_graph(fold=False),
                           out=args.out, history=trainer.history, accuracies=accuracies, qat=qat)
        card_path = out / f"{name}.md"
        card_path.write_text(card, encoding="utf-8")
        report["files"].append(str(card_path))

    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{name}: wrote {', '.join(report['files'])}")
    rows = [{"dataset": a["dataset"], "images": a["images"], "accuracy": f"{100 * a['accuracy']:.2f}%"}
            for a in accuracies]
    print(format_table(rows))
    if "fake_quant_test_accuracy" in report:
        print(f"fake-quantized forward (test): {100 * report['fake_quant_test_accuracy']:.2f}%")
    if "quantized" in report:
        q = report["quantized"]
        print(f"quantized executor, plan {q['plan']} (test): {100 * q['accuracy']:.2f}%")
    if report.get("qat_check"):
        q = report["qat_check"]
        print(f"4-bit test accuracy: post-training {100 * q['ptq']['accuracy']:.2f}%, "
              f"after QAT {100 * q['qat']['accuracy']:.2f}%  (plan {q['ptq_plan']})")
    return 0


def add_train_commands(cli) -> None:
    """Add ``train`` to the ``refquant`` command line."""
    p = cli.command("train", "train a model (seeded, resumable; bit-reproducible on one machine)")
    p.add_argument("name", choices=sorted(ARCHITECTURES), help="the architecture to train")
    p.add_argument("--epochs", type=int_at_least(1), default=None, help="epochs (default: the model's recipe)")
    p.add_argument("--seed", type=int_at_least(0), default=None, help="seed of the run's generator (default: recipe's)")
    p.add_argument("--batch-size", type=int_at_least(2), default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--lr", type=float_in(0, float("inf"), low_open=True), default=None, help="peak learning rate")
    p.add_argument("--weight-decay", type=float_in(0, 1), default=None)
    p.add_argument("--out", default=".", help="directory for the model files and card (default: .)")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="write a checkpoint (.npz) after every epoch")
    p.add_argument("--stop-at", type=int_at_least(1), default=None, metavar="K",
                   help="stop after epoch K (keeping the schedule of --epochs); resume later with --resume")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue the run a checkpoint recorded")
    p.add_argument("--from", dest="init", default=None, metavar="MODEL",
                   help="start from this model's weights (a registered name or a .json path)")
    p.add_argument("--qat", nargs="+", default=None, metavar="KEY=VALUE",
                   help="quantization-aware training with this plan of QAT quantizers, "
                        "e.g. weights=minmax:4:per-channel activations=ema-minmax:4")
    p.add_argument("--ptq", nargs="+", default=None, metavar="KEY=VALUE",
                   help="after a QAT run, also quantize the result with this post-training plan and report it")
    p.add_argument("--no-qat-check", action="store_true",
                   help="skip the QAT-versus-PTQ comparison a recipe declares (the card then omits it)")
    p.set_defaults(handler=cmd_train)
