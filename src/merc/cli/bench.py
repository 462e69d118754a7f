"""``merc bench``: the papers' tables and efficiency claims, measured (one sub-command each)."""

from __future__ import annotations

import argparse

from merc.cli.args import DATA_DIR_DEFAULT, add_alias, checkpoint_arg, data_dir_arg

HELP = "the papers' tables and efficiency claims, measured"

#: Its lines in the table of `merc --help`, one per benchmark (rendered by args.synopsis).
MAIN_FLAGS = {
    "accuracy": ("--suite", "--data-dir DIR", "--models LIST", "--text-encoder SRC,...",
                 "--jobs N", "--dry-run"),
    "efficiency": ("--data-dir DIR", "--models LIST", "--repeats N", "--out DIR"),
    "predict": ("--checkpoint CKPT", "--utterances N", "--conversations N", "--out DIR"),
    "serve": ("--checkpoint CKPT", "--clients N", "--seconds S", "--out DIR"),
    "video": ("--videos N", "--seconds S", "--size WxH", "--out DIR"),
    "scaling": ("--min-log2 K", "--max-log2 K", "--methods LIST", "--device DEV", "--out DIR"),
    "live": ("--points LIST", "--repeats N", "--out DIR"),
}


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help=HELP,
                       description="Benchmarks written as CSV/Markdown/PNG files under --out.")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="BENCH")
    ba = bsub.add_parser("accuracy", help="models x corpora x variants x seeds, validation-selected "
                         "(Tables 1, 3, 4; Fig. 5-7); resumable")
    ba.add_argument("--suite", choices=("quick", "paper"), default="quick",
                    help="quick: 1 seed; paper: 5 seeds (default quick)")
    data_dir_arg(ba, "folder holding iemocap/, meld/, mosi/ " + DATA_DIR_DEFAULT,
                 deprecated=("--data",))
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
                    "lnorm,paper,causal: plan only their runs (default all; paper and causal: "
                    "the paper suite only)")
    features = ba.add_argument(
        "--text-encoder", dest="features", metavar="SOURCES",
        help="comma-separated text-feature sources; every run that reads text is done once per "
        "source: frozen (the default text features: the bundled MiniLM, MOSI's shipped vectors) "
        "and NAME=ENC_DIR (a `merc finetune` folder; {corpus} in ENC_DIR is replaced by each "
        "corpus' name, e.g. frozen,ft=encoders/{corpus}); default frozen")
    add_alias(ba, "--features", use=features)
    ba.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ba.add_argument("overrides", nargs="*", metavar="section.key=value",
                    help="config overrides for every run, recorded in its config (e.g. "
                    "train.accelerator=gpu)")
    be = bsub.add_parser("efficiency", help="params, FLOPs/dialogue, inference and training time "
                         "per model on the IEMOCAP and MELD test splits")
    data_dir_arg(be, "folder holding iemocap/ and meld/ " + DATA_DIR_DEFAULT,
                 deprecated=("--data",))
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
    checkpoint_arg(bp, help="checkpoint (default: the bundled model)", metavar=None)
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
    checkpoint_arg(bv, help="checkpoint (default: the bundled model)", metavar=None)
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
    bl = bsub.add_parser("live", help="latency of one new utterance in a long live "
                         "conversation: streaming (causal Broad Mamba) vs re-running the model")
    bl.add_argument("--out", default="results", help="output folder (default results)")
    bl.add_argument("--points", default="10,100,1000,10000",
                    help="utterance positions to time (default 10,100,1000,10000)")
    bl.add_argument("--repeats", type=int, default=5, help="timings per point (default 5)")
    bl.add_argument("--dim", type=int, default=384, help="text feature width (default 384)")
    bl.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0: PyTorch's default)")
    return b


def subparsers(b: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each benchmark, by name (for the help table and its test)."""
    action = next(a for a in b._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def table_rows(b: argparse.ArgumentParser):
    """``(command words, parser, main flags)`` per benchmark, for the table in `merc --help`."""
    parsers = subparsers(b)
    return [(f"bench {name}", parsers[name], flags) for name, flags in MAIN_FLAGS.items()]


def run(args: argparse.Namespace) -> int:
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
                        utterances=args.utterances, checkpoint=args.checkpoint)
    elif args.bench == "predict":
        from merc.bench.predict_speed import run_predict_bench, run_throughput_bench

        if args.conversations > 0:
            run_throughput_bench(args.out, n_conversations=args.conversations,
                                 n_utterances=args.utterances, repeats=args.repeats,
                                 checkpoint=args.checkpoint)
        else:
            run_predict_bench(args.out, n_utterances=args.utterances, repeats=args.repeats,
                              checkpoint=args.checkpoint)
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
    elif args.bench == "live":
        from merc.bench.live import run_live_bench

        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        run_live_bench(args.out, points=[int(p) for p in split(args.points)],
                       dim=args.dim, repeats=args.repeats, threads=args.threads)
    else:
        from merc.bench.scaling import run_scaling_bench

        run_scaling_bench(out_dir=args.out, min_log2=args.min_log2, max_log2=args.max_log2,
                          width=args.width, time_budget_s=args.time_budget,
                          memory_budget_gb=args.memory_budget_gb, methods=split(args.methods),
                          device=args.device, threads=args.threads)
    return 0
