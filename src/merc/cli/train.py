"""``merc train``: train a registered model over seeds; validation-selected test metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from merc.cli.args import data_args, experiment_config, run_args, variant_arg

HELP = "train a model over seeds; validation-selected test metrics"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--corpus NAME", "--data-dir DIR", "--model NAME", "--text-encoder ENC", "--seeds N",
              "--out", "key=value")

TRAIN_EPILOG = """\
precedence: built-in defaults < --config FILE < flags < key=value overrides.
overrides use dotted paths into the config; model options are listed by `merc models`.
outputs: RUN_DIR/summary.json (mean ± std over seeds, per-seed values, metrics in percent),
RUN_DIR/config.yaml (resolved config) and RUN_DIR/seed_<s>/{metrics.json,config.yaml,best.ckpt,
metrics.csv}. The test split is evaluated once per seed, on the checkpoint with the best
validation W-F1 (or the --metric chosen; summary.json names it under "selection_metric").
interrupted (SIGTERM, Ctrl-C): exit status 143 / 130 and one line naming the finished seeds;
every file written is complete, and the same command again reuses those seeds (--no-resume).
examples:
  merc train --corpus iemocap --data-dir ../shared/data/iemocap --model bc-lstm --seeds 5 \\
      --out runs/iemocap-bclstm
  merc train --corpus meld --data-dir ../shared/data --model broad-mamba --variant causal \\
      --seeds 5 --out runs/meld-causal
  merc train --corpus jsonl --data-dir dailydialog/ --metric micro_f1 --ignore-labels no_emotion \\
      --out runs/dd-bclstm
"""


def _train_epilog() -> str:
    import dataclasses
    import typing

    from merc.config import ExperimentConfig, describe_options

    hints = typing.get_type_hints(ExperimentConfig)
    parts = [TRAIN_EPILOG]
    for f in dataclasses.fields(ExperimentConfig):
        if f.name != "model" and dataclasses.is_dataclass(hints[f.name]):  # model: `merc models`
            parts.append(f"\n{f.name} options ({f.name}.KEY=VALUE):\n"
                         + describe_options(hints[f.name], f.name) + "\n")
    parts.append("\nseeds=[0, 1, 2] sets explicit seeds (--seeds N means 0..N-1).\n")
    return "".join(parts)


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_train_epilog())
    data_args(t, required=False)
    t.add_argument("--model", help="registered model name (see `merc models`; default bc-lstm)")
    variant_arg(t)
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse seeds already finished in RUN_DIR with the same config "
                   "fingerprint, e.g. after an interrupted run (default: on)")
    run_args(t, seeds_help="number of seeds, 0..N-1 (default 1)")
    return t


def run(args: argparse.Namespace) -> int:
    cfg = experiment_config(args)  # first: a config error must not wait for Lightning's import
    from merc.training.experiment import run_experiment

    # Resuming is the default: a seed already finished in RUN_DIR with the same fingerprint
    # (same resolved config, merc version, encoder) is read back, so re-running a killed
    # command continues it; --no-resume retrains every seed.
    run_experiment(cfg, args.out, progress=args.progress, resume=args.resume)
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:        # data-parallel: every process runs this command
        print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0
