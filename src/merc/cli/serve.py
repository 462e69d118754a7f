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
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    return sv


def run(args: argparse.Namespace) -> int:
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
    serve(args.checkpoint, host=args.host, port=args.port, device=args.device)
    return 0
