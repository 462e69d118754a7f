"""``merc models``: list the registered models and their options."""

from __future__ import annotations

import argparse
import json

HELP = "list registered models and their options, or the pretrained zoo (--pretrained)"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--pretrained", "--params", "--dims", "--classes N")


def add_parser(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("models", help=HELP)
    m.add_argument("--params", action="store_true",
                   help="also count parameters for --dims/--classes")
    m.add_argument("--dims", default="text=384,audio=8",
                   help="input dims for --params (default text=384,audio=8: MiniLM + IEMOCAP audio)")
    m.add_argument("--classes", type=int, default=6, help="classes for --params (default 6)")
    m.add_argument("--pretrained", action="store_true",
                   help="list merc's pretrained models instead: name, labels, modalities, "
                        "training data and licence, validation and test figures, calibration "
                        "(use a name as --checkpoint NAME)")
    m.add_argument("--json", action="store_true", help="with --pretrained: the cards as JSON")
    return m


def _pm(m: dict | None) -> str:
    return "-" if not m else f"{m['mean']:.2f} ± {m['std']:.2f}"


def describe_pretrained(card: dict) -> list[str]:
    """The lines ``merc models --pretrained`` prints for one zoo card."""
    v, t, shipped, cal = card["valid"], card["test"], card["shipped"], card.get("calibration")
    metric = card.get("metric", "wf1")
    name = {"wf1": "W-F1", "uar": "UAR"}.get(metric, metric)
    lines = [f"{card['name']:24s} {card['summary']}",
             f"    labels ({len(card['labels'])}): {', '.join(card['labels'])}",
             f"    modalities: {', '.join(card['modalities'])}"
             + (f"   needs: {card['needs']} (make mpnet)" if card.get("needs") else ""),
             f"    data: {card['data_short']}; licence: {card['licence_short']}",
             f"    {card['protocol']}: validation {name} {_pm(v.get(metric))}, test {name} "
             f"{_pm(t.get(metric))}; shipped {shipped['which']}: validation W-F1 "
             f"{shipped['valid']:.2f}, test W-F1 {shipped['test']:.2f}"]
    if cal:
        lines.append(f"    test ECE (15 bins) {cal['test_ece_before']:.1f}% uncalibrated -> "
                     f"{cal['test_ece_after']:.1f}% with its validation-fitted temperature "
                     f"{cal['temperature']:.2f}")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        from merc.pretrained import list_pretrained

        cards = [m.card for m in list_pretrained()]
        if args.json:
            print(json.dumps(cards, indent=2, ensure_ascii=False))
            return 0
        for card in cards:
            print("\n".join(describe_pretrained(card)))
        print("use one with: merc predict CONVERSATION --checkpoint NAME; its card: "
              "python -c \"import merc.pretrained as p; print(p.model_card('NAME'))\"")
        return 0

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
