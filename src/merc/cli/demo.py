"""``merc demo``: the bundled model on an example conversation, with its timeline (offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("the main job: predict the emotions of an example conversation with the bundled model "
        "and draw its timeline (offline)")

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--out DIR",)


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("demo", help=HELP)
    d.add_argument("--out", default="merc-demo", help="folder for result.json, timeline.html "
                   "and timeline.png (default merc-demo)")
    return d


def run(args: argparse.Namespace) -> int:
    from merc.cli.predict import write_prediction
    from merc.predict.predictor import Predictor
    from merc.pretrained import example_conversation
    from merc.predict.timeline import format_table

    conversation = example_conversation()
    print(f"merc demo: the bundled model on {conversation.name} (written for this demo)\n")
    pred = Predictor.from_checkpoint().predict(conversation)
    print(format_table(pred))
    out = Path(args.out)
    written = write_prediction(pred, str(out / "result.json"), str(out / "timeline.html"),
                               str(out / "timeline.png"))
    print("\nwrote " + ", ".join(written))
    print("next: merc predict YOUR_CONVERSATION.jsonl --html timeline.html  (format: "
          "merc predict --help)")
    return 0
