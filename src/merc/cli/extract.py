"""``merc extract``: extract and cache features for a corpus."""

from __future__ import annotations

import argparse
import sys
import time

from merc.cli.args import data_args, experiment_config

HELP = "extract and cache features for a corpus"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--corpus NAME", "--data-dir DIR", "--modalities LIST", "--text-encoder ENC",
              "--audio SET")


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("extract", help=HELP)
    data_args(e, required=True)
    return e


def run(args: argparse.Namespace) -> int:
    from merc.config import ExperimentConfig
    from merc.training.prepare import prepare_data

    args.model, args.seeds, args.overrides, args.config = None, None, [], None
    cfg: ExperimentConfig = experiment_config(args)
    t0 = time.perf_counter()
    prepared = prepare_data(cfg.data.resolved(), progress=sys.stderr.isatty())
    dims = ", ".join(f"{m} {d}-d" for m, d in prepared.input_dims.items())
    n = sum(len(c) for c in prepared.corpus.conversations)
    print(f"{prepared.corpus.name}: {n} utterances, features {dims} "
          f"({time.perf_counter() - t0:.2f} s)")
    return 0
