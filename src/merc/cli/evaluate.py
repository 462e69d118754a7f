"""``merc evaluate``: score a saved checkpoint (or an end-to-end encoder folder) on a split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from merc.cli.args import add_alias, data_dir_arg
from merc.errors import MercInputError

HELP = "evaluate a saved checkpoint (or an end-to-end encoder folder) on a split"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--checkpoint CKPT|--text-encoder ENC_DIR", "--data-dir DIR", "--split SPLIT",
              "--out FILE")


def add_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("evaluate", help=HELP)
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="CKPT|RUN_DIR",
                       help="a checkpoint (RUN_DIR/seed_<s>/best.ckpt) or a run folder of merc "
                       "train (its best seed on validation, named on stderr)")
    encoder = which.add_argument("--text-encoder", dest="encoder", metavar="ENC_DIR",
                                 help="an end-to-end encoder folder (merc finetune "
                                 "finetune.head=gru): the encoder with its GRU head")
    add_alias(which, "--encoder", use=encoder)
    data_dir_arg(ev, "corpus folder (default: the one recorded in the checkpoint's config or "
                 "the encoder's finetune.yaml)")
    ev.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ev.add_argument("--out", help="write the metrics JSON here")
    ev.add_argument("--predictions", help="write every utterance's gold label, prediction and "
                    "probabilities here (.jsonl: one result per conversation, as merc predict; "
                    ".csv/.parquet: one row per utterance)")
    return ev


def run(args: argparse.Namespace) -> int:
    from merc.training.evaluate import evaluate_checkpoint

    if args.encoder:
        from merc.finetune.run import evaluate_joint

        if args.predictions:
            raise MercInputError(args.encoder, "--predictions needs a --checkpoint",
                                 field="predictions")
        metrics = evaluate_joint(args.encoder, args.split, args.data_dir)
        if not metrics["data"]["matches_training"]:
            print(f"merc evaluate: warning: the train/validation dialogues differ from those "
                  f"{args.encoder} was fine-tuned and selected on", file=sys.stderr)
    else:
        metrics = evaluate_checkpoint(
            args.checkpoint, data_dir=args.data_dir, split=args.split,
            echo=lambda line: print(f"merc evaluate: {line}", file=sys.stderr),
            predictions=args.predictions)
    d = metrics["data"]
    print(f"{d['corpus']} {args.split}: {d['dialogues']} dialogues/{d['utterances']} "
          f"utterances, fingerprint {d['fingerprint']}")
    print(f"{args.split}: W-F1 {metrics['wf1']:.2f}  acc {metrics['acc']:.2f}  "
          f"macro-F1 {metrics['macro_f1']:.2f}  (n={metrics['n']})")
    if "ece" in metrics:
        print(f"{args.split}: ECE (15 bins) {metrics['ece']:.2f}% with the checkpoint's "
              f"temperature {metrics['temperature']:.3f} (uncalibrated "
              f"{metrics['ece_uncalibrated']:.2f}%)")
    for label, f1 in metrics["per_class_f1"].items():
        print(f"  {label:>12s}  F1 {f1:6.2f}  support {metrics['support'][label]}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.out}")
    if args.predictions:
        print(f"wrote {args.predictions}")
    return 0
