"""``merc crossval``: speaker-independent cross-validation for corpora without a split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from merc.cli.args import data_args, experiment_config, run_args, variant_arg

HELP = ("speaker-independent cross-validation (leave speakers out) for corpora without a split, "
        "e.g. EmoDB; reports UAR")

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--corpus NAME", "--data-dir DIR", "--model NAME", "--folds K",
              "--seeds N", "--out")

CROSSVAL_EPILOG = (
    "folds: fold k tests speaker group k, validates (checkpoint "
    "selection, early stopping,\ntemperature) on group k+1 (wrapping; "
    "--valid-groups 2: k+1 and k+2) and trains on the\nrest; normalisation is "
    "fitted on the train speakers only.\n"
    "outputs: RUN_DIR/summary.json (UAR, W-F1, acc per fold; mean ± std over "
    "folds;\npooled over folds), RUN_DIR/fold_<k>/fold.json and "
    "RUN_DIR/fold_<k>/seed_<s>/.\nexample:\n"
    "  merc crossval --corpus emodb --data-dir ../shared/data/emodb "
    "\\\n      --audio eGeMAPSv02 --model mlp "
    "--out runs/emodb-mlp")


def add_parser(sub) -> argparse.ArgumentParser:
    cv = sub.add_parser("crossval", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=CROSSVAL_EPILOG)
    data_args(cv, required=True)
    cv.add_argument("--model", help="registered model name (default mlp)")
    variant_arg(cv)
    cv.add_argument("--folds", type=int, help="number of speaker groups (default: one per "
                    "speaker, i.e. leave-one-speaker-out)")
    cv.add_argument("--valid-groups", type=int, default=1, metavar="N",
                    help="speaker groups validating each fold, the N after its test group "
                         "(default 1; 2 doubles the utterances the checkpoint choice and the "
                         "temperature are fitted on)")
    run_args(cv, seeds_help="number of seeds per fold, 0..N-1 (default 1)")
    return cv


def run(args: argparse.Namespace) -> int:
    if args.model is None and not args.config:
        args.model = "mlp"  # one utterance per "dialogue": the no-context classifier
    cfg = experiment_config(args)
    from merc.training.crossval import run_speaker_cv

    progress = next((p for p in (args.progress, cfg.train.progress) if p is not None),
                    sys.stderr.isatty())
    run_speaker_cv(cfg, args.out, folds=args.folds, valid_groups=args.valid_groups,
                   progress=progress)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0
