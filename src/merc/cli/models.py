"""``merc models``: list the registered models and their options."""

from __future__ import annotations

import argparse
import json

HELP = "list registered models and their options"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--params", "--dims", "--classes N")


def add_parser(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("models", help=HELP)
    m.add_argument("--params", action="store_true",
                   help="also count parameters for --dims/--classes")
    m.add_argument("--dims", default="text=384,audio=8",
                   help="input dims for --params (default text=384,audio=8: MiniLM + IEMOCAP audio)")
    m.add_argument("--classes", type=int, default=6, help="classes for --params (default 6)")
    return m


def run(args: argparse.Namespace) -> int:
    from merc.config import describe_options
    from merc.models import count_parameters, create_model, get_entry, list_models

    dims = {}
    if args.params:
        for item in args.dims.split(","):
            k, _, v = item.partition("=")
            dims[k.strip()] = int(v)
    for name in list_models():
        entry = get_entry(name)
        line = f"{name:14s} {entry.description}"
        if args.params:
            n = count_parameters(create_model(name, dims, args.classes))
            line += f"  [{n:,} params]"
        print(line)
        if entry.train_defaults:
            # JSON values (no spaces in lists): each item can be pasted as an override.
            print("    training defaults (its paper's or official code's): "
                  + " ".join(f"train.{k}={json.dumps(v, separators=(',', ':'))}"
                             for k, v in entry.train_defaults.items()))
        for variant, options in entry.variants.items():
            print(f"    variant {variant!r}: "
                  + " ".join(f"model.{k}={v}" for k, v in options.items()))
        print(describe_options(entry.config_cls, "model", indent=4))
    if args.params:
        print(f"(parameters counted for dims {dims}, {args.classes} classes)")
    return 0
