"""``merc serve``: serve a trained model over HTTP with a web page (FastAPI)."""

from __future__ import annotations

import argparse
import sys

from merc.cli.args import checkpoint_arg

HELP = "serve a model over HTTP with a web page (FastAPI)"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("--checkpoint", "--host ADDR", "--port N", "--device DEV")


def add_parser(sub) -> argparse.ArgumentParser:
    sv = sub.add_parser("serve", help=HELP)
    checkpoint_arg(sv, help="checkpoint or run folder (default: the bundled model)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port, 1..65535 (default 8000)")
    sv.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    sv.add_argument("--max-queue", type=int, default=None, metavar="N",
                    help="requests admitted to the model at once, running and waiting; more "
                         "answer 503 with Retry-After at once (default 4: under 1 s of waiting "
                         "on 2 cores for 20-utterance conversations; raise it on more cores)")
    sv.add_argument("--max-live", type=int, default=None, metavar="N",
                    help="live conversations (/v1/live WebSockets) open at once; the next "
                         "answers 503 (default 8)")
    sv.add_argument("--live-idle", type=float, default=None, metavar="SECONDS",
                    help="close a live conversation silent this long (default 300)")
    sv.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                    help="a web origin (e.g. http://localhost:3000) whose pages may call the "
                         "API (CORS); repeatable. By default only the server's own page may")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a Host name to answer besides localhost, 127.0.0.1, [::1] and --host "
                         "(e.g. the machine's LAN name when binding 0.0.0.0); repeatable")
    return sv


def run(args: argparse.Namespace) -> int:
    try:
        from merc.predict.serve import check_host, check_origin, check_port, serve
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"merc serve needs the serve extra ({e.name} is missing): "
                         "pip install 'merc[serve]'") from None
    # Checked before the model loads (seconds), each refusal one line naming the flag.
    check_port(args.port, "--port")
    if args.max_queue is not None and args.max_queue < 1:
        raise ValueError(f"--max-queue {args.max_queue}: must be >= 1")
    if args.max_live is not None and args.max_live < 1:
        raise ValueError(f"--max-live {args.max_live}: must be >= 1")
    if args.live_idle is not None and not args.live_idle > 0:
        raise ValueError(f"--live-idle {args.live_idle}: must be > 0 seconds")
    origins = [check_origin(o, "--allow-origin") for o in args.allow_origin]
    hosts = [check_host(h, "--allow-host") for h in args.allow_host]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"merc serve: binding to {args.host}: anyone who can reach this address can use "
              "the model", file=sys.stderr)
    # Only the options given: their defaults live in one place, serve() and Limits.
    given = {"allow_origins": origins, "allow_hosts": hosts, "max_queue": args.max_queue,
             "max_live": args.max_live, "live_idle": args.live_idle}
    serve(args.checkpoint, host=args.host, port=args.port, device=args.device,
          **{k: v for k, v in given.items() if v})
    return 0
