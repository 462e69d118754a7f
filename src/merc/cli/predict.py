"""``merc predict``: predict each utterance's emotion in conversations (locally or on Ray)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from merc.cli.args import checkpoint_arg
from merc.errors import MercInputError

HELP = "predict each utterance's emotion in conversations"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("inputs", "--checkpoint", "--out FILE", "--out-dir DIR", "--backend")

PREDICT_EPILOG = """\
inputs: conversation files, folders (every *.jsonl / *.json below them, sorted; merc's own
result files there are skipped, and counted), '-' (JSON Lines of conversations on stdin), or
@LIST (a UTF-8 text file naming one file or folder per line, relative to the current directory;
blank lines and # comments skipped; a line is always a path, never an option; lists do not nest).
a conversation file is .jsonl with one utterance per line, .json {"id": ..., "utterances": [...]},
or .jsonl with one conversation object per line -- merc's own corpus file is accepted as it is
(dialogue_id, split, utterance_id, label). Each utterance {"speaker": "...", "text": "...",
"audio": "optional.wav", "id": "optional", "label": "optional gold"} in turn order (paths relative
to the file; text at most 5000 characters; no key twice). The checkpoint's feature spec decides
what is extracted.
outputs: --out X.json (one conversation) or X.jsonl / '-' (one result per line);
--out-dir DIR (one JSON per conversation); --table X.csv|X.parquet (one row per utterance).
A result: {"id", "model", "checkpoint", "labels", "modalities", "utterances": [{"id", "speaker",
"text", "label", "confidence", "probs": {label: p}, "modality_weights": {modality: w} | null,
"gold" (when the input had a label)}], "warnings": [...] (when there are any, e.g. gold labels
the model does not know)}; utterances without an id are u0, u1, ...
outputs never overwrite an input: one naming an input (symlinks and ../ resolved) is refused.
progress: a bar on a terminal; otherwise a line every 10 s on stderr (none with --quiet).
examples:
  merc predict talk.jsonl --out talk.json --html talk.html --png talk.png
  merc predict calls/ --checkpoint runs/meld-bm --out results.jsonl --table results.csv
  cat many.jsonl | merc predict - --out - --quiet
  transcriber | merc predict --live --checkpoint runs/meld-causal   # one line per utterance
"""


def add_parser(sub) -> argparse.ArgumentParser:
    # No fromfile_prefix_chars: argparse would read each @LIST line as an argument (an option
    # line switches flags, a list naming itself recurses); merc.predict.inputs expands @LIST.
    pr = sub.add_parser("predict", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=PREDICT_EPILOG)
    pr.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="conversation files, folders, '-' (stdin) or @LIST (see below)")
    checkpoint_arg(pr, help="checkpoint (RUN_DIR/seed_<s>/best.ckpt) or a run folder "
                   "(its best seed on validation); default: the bundled Broad Mamba MELD "
                   "text model")
    pr.add_argument("--out", help="results: .json (one conversation), .jsonl or '-' (stdout; "
                    "one result per conversation per line)")
    pr.add_argument("--out-dir", help="write one <conversation id>.json per conversation here")
    pr.add_argument("--table", help="write one row per utterance here (.csv or .parquet)")
    pr.add_argument("--html", help="write a self-contained HTML timeline here (one conversation)")
    pr.add_argument("--png", help="write a timeline picture (PNG) here (one conversation)")
    pr.add_argument("--batch-size", type=int, default=32,
                    help="conversations per forward pass and per text-encoder call (default 32)")
    pr.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    pr.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local (this process) or ray (Ray Data: the files spread over "
                    "--workers actors, one model load each; needs --out-dir, written as "
                    "sharded JSON Lines; the ray extra)")
    pr.add_argument("--workers", type=int, default=2, help="with --backend ray: actors "
                    "(default 2)")
    pr.add_argument("--address", help="with --backend ray: the Ray cluster to join (default: a "
                    "local Ray instance)")
    pr.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                    help="a bad conversation stops everything (fail, default) or is reported "
                    "and skipped (skip); the summary counts both")
    pr.add_argument("--quiet", action="store_true",
                    help="print nothing but errors (needs an output file)")
    pr.add_argument("--live", action="store_true",
                    help="one live conversation on stdin: each JSON line is one utterance, "
                    "and its prediction is written (one JSON line, flushed) as soon as it is "
                    "made; needs a causal model (merc train --variant causal, or the zoo's "
                    "meld-emotion-live)")
    pr.add_argument("--allow-outside-media", action="store_true",
                    help="let audio/video paths point outside the conversation file's folder "
                    "(absolute, '..', symlinks out); refused by default")
    return pr


def write_prediction(pred, out: str | None, html: str | None, png: str | None) -> list[str]:
    """Write one prediction as JSON (``out``), an HTML timeline and a PNG; the paths written."""
    from merc.fileio import write_json
    from merc.predict.timeline import render_html, render_png

    written = []
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        # allow_nan=False: a NaN probability is an error to report, never invalid JSON.
        write_json(out, pred.to_dict(), ensure_ascii=False)
        written.append(out)
    if html:
        written.append(str(render_html(pred, html)))
    if png:
        written.append(str(render_png(pred, png)))
    return written


PROGRESS_EVERY_S = 10.0
"""Seconds between the plain progress lines printed when stderr is not a terminal (a log file,
a CI job): IEMOCAP's 7,433 utterances took 3 minutes on a CPU without a word before."""


def _progress_lines(t0: float):
    """``report(done, total)`` for :meth:`Predictor.predict_stream`: one plain line on stderr
    at most every :data:`PROGRESS_EVERY_S` seconds, none for the last chunk (the summary
    follows)."""
    last = [t0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            print(f"merc predict: predicted {done}/{total} utterances "
                  f"({100 * done // max(total, 1)}%), {now - t0:.0f} s", file=sys.stderr,
                  flush=True)
    return report


def _outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [(flag, value) for flag, value in (("--out", args.out), ("--table", args.table),
                                              ("--html", args.html), ("--png", args.png))
            if value]


def run(args: argparse.Namespace) -> int:
    from merc.predict.inputs import STDIN, expand_inputs, list_files, read_inputs
    from merc.predict.predictor import Predictor
    from merc.predict.results import unknown_gold_labels
    from merc.predict.timeline import format_table
    from merc.predict.writers import ResultWriter, check_outputs, folder_files

    if args.live:
        return _predict_live(args)
    if not args.inputs:
        raise ValueError("give at least one INPUT (a file, folder, '-' or @LIST), or --live")
    outputs = [args.out, args.out_dir, args.table, args.html, args.png]
    if args.quiet and not any(outputs):
        raise ValueError("--quiet without --out, --out-dir, --table, --html or --png would "
                         "compute predictions and write them nowhere")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.backend == "ray":
        return _predict_ray(args)

    def say(line: str) -> None:          # stdout carries the results with --out -
        if not args.quiet:
            print(line, file=sys.stderr if args.out == STDIN else sys.stdout)

    def warn(line: str) -> None:
        print(line, file=sys.stderr)

    files = expand_inputs(args.inputs, warn=lambda line: warn(f"warning: {line}"))
    # An output naming an input (or a list of inputs) would destroy it: refused before
    # anything is read or written; --out-dir's file names are known once the ids are.
    inputs = files + list_files(args.inputs)
    check_outputs(_outputs(args), inputs)
    if args.out_dir and Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise MercInputError(args.out_dir, "exists and is not a folder", field="--out-dir")
    # Every conversation (media paths included) is checked before the model is loaded: a bad
    # file fails in a fraction of a second.
    report = read_inputs(files, on_error=args.on_error,
                         allow_outside_media=args.allow_outside_media, warn=warn)
    convs = report.conversations
    if not convs:
        raise ValueError(f"no conversation to predict ({len(report.errors)} skipped as bad "
                         "input)")
    many = len(convs) > 1
    if many and (args.html or args.png):
        raise ValueError(f"--html/--png draw one conversation; the inputs hold {len(convs)} "
                         "(use --out-dir or --table for many)")
    if many and args.out and args.out != STDIN and not args.out.endswith(".jsonl"):
        raise ValueError(f"--out {args.out}: the inputs hold {len(convs)} conversations; give a "
                         ".jsonl file (one result per line), '-' or --out-dir")
    if args.out_dir:
        check_outputs([("--out-dir", str(f)) for f in folder_files(args.out_dir,
                                                                  (c.id for c in convs))]
                      + _outputs(args), inputs)
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device,
                                          allow_outside_media=args.allow_outside_media)
    for kind in ("audio", "video"):
        unused = [c.id for c in convs if kind in predictor.unused_media(c)]
        if unused:
            warn(f"warning: {len(unused)} conversation(s) name {kind} files (e.g. {unused[0]}) "
                 f"that this model does not use (it reads {', '.join(predictor.modalities)}); "
                 f"they were checked but are ignored")
    foreign = [w for c in convs if (w := predictor.language_warning(c))]
    if foreign:
        warn(f"warning: {foreign[0]}" + (f" (and {len(foreign) - 1} more conversation(s))"
                                         if len(foreign) > 1 else ""))
    # Said once, before the (possibly long) run; each result also carries it in "warnings".
    gold = unknown_gold_labels([(c.id, c.utterance_name(i), g) for c in convs
                                for i, g in enumerate(c.labels or ())], predictor.label_names)
    if gold:
        warn(f"warning: {gold}")
    single_json = not many and args.out and args.out != STDIN and not args.out.endswith(".jsonl")
    writer = ResultWriter(jsonl=None if single_json else args.out, folder=args.out_dir,
                          table=args.table)
    # The Predictor owns chunking, batching and the progress bar; this loop only writes. Off a
    # terminal a bar is noise in a log, so plain lines report progress instead.
    tty = sys.stderr.isatty()
    bar = tty and (not many or not args.quiet)
    n_utt = sum(len(c) for c in convs)
    t0 = time.perf_counter()
    lines = _progress_lines(t0) if not tty and not args.quiet else None
    preds = []
    for pred in predictor.predict_stream(convs, batch_size=args.batch_size, progress=bar,
                                         report=lines):
        writer.add(pred.to_dict())
        if not many:
            preds = [pred]
    seconds = time.perf_counter() - t0
    written = writer.close()
    if not many:
        if not args.quiet and args.out != STDIN:
            print(format_table(preds[0]))
        written = write_prediction(preds[0], args.out if single_json else None, args.html,
                                   args.png) + written
    for path in written:
        say(f"wrote {path}")
    skipped = f"; {len(report.errors)} skipped as bad input" if report.errors else ""
    say(f"predicted {len(convs)} conversation(s), {n_utt} utterances in {seconds:.1f} s "
        f"({n_utt / max(seconds, 1e-9):.0f} utterances/s){skipped}")
    return 0


def _predict_live(args: argparse.Namespace) -> int:
    """``merc predict --live``: utterances on stdin, one prediction per line on ``--out``
    (default stdout) as each arrives; a bad line is one error line (``--on-error skip`` goes
    on)."""
    import json

    from merc.predict.predictor import Predictor

    if args.inputs not in ([], ["-"]):
        raise ValueError("--live reads one conversation from stdin; give no INPUT (or '-')")
    if args.out_dir or args.table or args.html or args.png or args.backend != "local":
        raise ValueError("--live writes JSON Lines to --out (default stdout) only")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device,
                                          allow_outside_media=args.allow_outside_media)
    session = predictor.session()
    out = sys.stdout if args.out in (None, "-") else open(args.out, "w", encoding="utf-8")
    errors = 0
    try:
        for lineno, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            try:
                u = session.add_line(line, lineno)
            except MercInputError as e:
                if args.on_error == "fail":
                    raise
                errors += 1
                print(f"merc predict: skipped: {e}", file=sys.stderr, flush=True)
                continue
            row = {"conversation": session.id, "index": session.count - 1, **u.to_dict()}
            out.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if not args.quiet:
        print(f"merc predict: {session.count} utterance(s) predicted live"
              + (f", {errors} skipped as bad input" if errors else ""), file=sys.stderr)
    return 0


def _predict_ray(args: argparse.Namespace) -> int:
    import re

    from merc.predict.inputs import expand_inputs, list_files
    from merc.predict.ray import predict_with_ray

    if not args.out_dir or args.out or args.table or args.html or args.png:
        raise ValueError("--backend ray writes sharded JSON Lines: give --out-dir DIR (and "
                         "none of --out, --table, --html, --png)")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    files = expand_inputs(args.inputs,
                          warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    # Ray writes OUT_DIR/part-00000.jsonl, ...: an input of that name there would be overwritten.
    out_dir = Path(args.out_dir).resolve()
    for name in files + list_files(args.inputs):
        if (name != "-" and re.fullmatch(r"part-\d+\.jsonl", Path(name).name)
                and Path(name).resolve().parent == out_dir):
            raise MercInputError(args.out_dir, f"holds the input {name}, which the Ray shards "
                                 "would overwrite (choose another folder)", field="--out-dir")
    t0 = time.perf_counter()
    res = predict_with_ray(files, args.out_dir, checkpoint=args.checkpoint,
                           batch_size=args.batch_size, workers=args.workers,
                           on_error=args.on_error, allow_outside_media=args.allow_outside_media,
                           address=args.address)
    if not args.quiet:
        skipped = f"; {res['errors']} skipped as bad input" if res["errors"] else ""
        print(f"predicted {res['conversations']} conversation(s) from {len(files)} file(s) on "
              f"Ray in {time.perf_counter() - t0:.1f} s{skipped}; wrote {res['out_dir']}/"
              "part-*.jsonl")
    return 0
