"""``merc`` command line: a thin layer over typed functions in :mod:`merc.training` and friends.

Every sub-command parses arguments into the typed config and calls one library function; no
training logic lives here. One module per command (``merc.cli.train``, ``merc.cli.predict``,
...), each with ``HELP``, ``MAIN_FLAGS`` (its line in the table of ``merc --help``),
``add_parser(subparsers)`` and ``run(args) -> int``; the options several commands share are in
:mod:`merc.cli.args`. Heavy libraries (torch, lightning, sentence-transformers, matplotlib,
fastapi, ray) are imported only inside the ``run`` that needs them: building the parser stays
cheap.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from merc import __version__
from merc.cli import (bench, compare, crossval, demo, evaluate, extract, finetune, models,
                      predict, serve, train)
from merc.cli.args import experiment_config as _experiment_config  # noqa: F401 (tests use it)
from merc.cli.args import synopsis
from merc.errors import MercInputError

#: The commands in the order of `merc --help`.
MODULES = {"train": train, "finetune": finetune, "extract": extract, "evaluate": evaluate,
           "predict": predict, "serve": serve, "models": models, "compare": compare,
           "bench": bench, "crossval": crossval, "demo": demo}

#: What runs each command (looked up at call time: tests replace entries).
COMMANDS = {name: module.run for name, module in MODULES.items()}


def _commands_table(parsers: dict[str, argparse.ArgumentParser]) -> str:
    """The epilog of `merc --help`: every command with its main flags, one line each, rendered
    from the sub-parsers themselves (args.synopsis fails on a flag they do not have)."""
    rows = []
    for name, module in MODULES.items():
        if hasattr(module, "table_rows"):
            rows += module.table_rows(parsers[name])
        else:
            rows.append((name, parsers[name], module.MAIN_FLAGS))
    width = max(len(words) for words, _, _ in rows)
    lines = [f"  {words:<{width}}  {synopsis(parser, flags)}" for words, parser, flags in rows]
    return ("commands and their main flags (`merc COMMAND --help` lists them all):\n"
            + "\n".join(lines) + "\n"
            "vocabulary: --model NAME is a registered model (`merc models`); --checkpoint is a "
            "trained\nmodel (a best.ckpt or a run folder); --text-encoder is the text encoder; "
            "--data-dir the data\nfolder. Older spellings (predict/serve --model, evaluate "
            "--encoder, bench --features, --data)\nstill work, with a warning.\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="merc", description="Multimodal Emotion Recognition in "
                                "Conversation: train, evaluate and compare models honestly.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"merc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {name: module.add_parser(sub) for name, module in MODULES.items()}
    p.epilog = _commands_table(parsers)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from merc.training.interrupt import Interrupted, interruptible

    try:
        with interruptible():
            return COMMANDS[args.command](args)
    except Interrupted as e:
        # One line and 128 + signum (143 SIGTERM, 130 Ctrl-C): a scheduler or `&&` chain must
        # not take a killed run for a finished one. What is on disk is complete (atomic writes).
        print(f"merc {args.command}: {e}", file=sys.stderr)
        return e.exit_status
    except BrokenPipeError:
        # The reader went away (`merc models | head -1`): not merc's error. Point stdout at
        # /dev/null so that the interpreter's final flush does not raise (and print) it again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + 13  # as if killed by SIGPIPE, like other Unix filters
    except (MercInputError, ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"merc {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (OSError, RecursionError, MemoryError) as e:
        # Input problems that are not ValueErrors: an unreadable/forbidden path, input nested
        # deeper than Python recurses, input too large. Programming errors (TypeError,
        # KeyError, ...) still end in a traceback, and -v shows one for these too.
        if args.verbose:
            raise
        what = {RecursionError: "input nested too deeply", MemoryError: "input too large"}
        print(f"merc {args.command}: error: "
              f"{what.get(type(e)) or _one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """``str(e)`` on one line (a library message may span several), cut to a sane length."""
    text = " ".join(str(e).split())
    return text if len(text) <= 500 else text[:500] + "..."
