"""``merc bench serve``: ``merc serve`` under load, on loopback.

Starts ``merc serve`` in its own process on a free 127.0.0.1 port (the model loaded once, as in
production; ``max_queue`` sets its ``--max-queue``, default the server's), waits for
``/healthz``, then runs ``clients`` concurrent clients for ``seconds`` seconds; each posts
generated conversations (``utterances`` ordinary sentences, three speakers; see
:func:`merc.bench.predict_speed.synthetic_conversation`) to ``/v1/predict`` back to back. A
client refused with 503 (the server's queue is full) waits the ``Retry-After`` it is given, as
a well-behaved client does, plus up to 50 % random jitter (clients retrying at once would spend
the cores the model needs on refusals, and in step they would arrive as one burst). The run
stops by itself; the server is stopped afterwards whatever happens.

Reports, to ``serve_load.csv`` and ``serve_load.md``: accepted requests (200) per second and
their latency percentiles (p50 / p95 / p99, milliseconds), the requests refused with 503 (and
how fast the refusal came: p99 ms), and the error count (any other status, or a failed
connection), kept apart from the 503s.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from merc.bench.predict_speed import synthetic_conversation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"merc serve exited with status {proc.returncode} before it was "
                               "ready")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"merc serve was not ready after {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation (numpy's default)."""
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


async def _load(url: str, convs: list[dict], clients: int, seconds: float,
                latencies: list[float], refusals: list[float], errors: list[str]) -> None:
    """``clients`` concurrent clients posting ``convs`` back to back until ``seconds`` pass.

    Tasks on one event loop, not threads: 64 client threads fighting for the bench process's
    GIL on a 2-core machine added up to a second to the latencies they measured."""
    import httpx

    stop = time.monotonic() + seconds
    pool = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=pool) as http:

        async def client(k: int) -> None:
            # Jitter on the Retry-After wait, as well-behaved clients add: refused clients
            # retrying on the same tick would reach the server as one burst each second.
            jitter = random.Random(k)
            i = k
            while time.monotonic() < stop:
                body = convs[i % len(convs)]
                i += clients
                t0 = time.perf_counter()
                wait = 0.0
                try:
                    r = await http.post("/v1/predict", json=body)
                    status, why = r.status_code, f"HTTP {r.status_code}"
                    if status == 503:
                        wait = float(r.headers.get("retry-after", "1"))
                except (httpx.HTTPError, ValueError) as e:
                    status, why = 0, type(e).__name__
                dt = time.perf_counter() - t0
                if status == 200:
                    latencies.append(dt)
                elif status == 503:
                    refusals.append(dt)
                else:
                    errors.append(why)
                if wait:
                    wait *= 1 + jitter.random() / 2
                    await asyncio.sleep(max(0.0, min(wait, stop - time.monotonic())))

        await asyncio.gather(*(client(k) for k in range(clients)))


def run_serve_bench(out_dir: str | Path = "results", *, clients: int = 4, seconds: float = 20.0,
                    utterances: int = 12, checkpoint: str | None = None,
                    max_queue: int | None = None, echo=print) -> dict:
    """Load-test ``merc serve``; writes ``serve_load.csv`` / ``.md``; returns the row."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)     # not one line per request
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "merc.cli", "serve", "--port", str(port)]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    if max_queue is not None:
        cmd += ["--max-queue", str(max_queue)]
    log = open(out / "serve_load_server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    latencies: list[float] = []     # accepted (200) requests
    refusals: list[float] = []      # 503: the server's queue was full
    errors: list[str] = []
    try:
        _wait_ready(url, proc, timeout=120)
        bound = httpx.get(url + "/healthz", timeout=5.0).json().get("max_queue")
        convs = [{"id": f"c{k}", "utterances": synthetic_conversation(utterances + k)[k:]}
                 for k in range(32)]
        echo(f"merc serve on {url}: {clients} clients for {seconds:.0f} s, "
             f"{utterances}-utterance conversations, max queue {bound}")
        started = time.monotonic()
        asyncio.run(_load(url, convs, clients, seconds, latencies, refusals, errors))
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    ms = [1000 * x for x in latencies]
    row = {"clients": clients, "seconds": round(elapsed, 2), "utterances": utterances,
           "max_queue": bound, "requests": len(latencies), "rejected_503": len(refusals),
           "errors": len(errors), "requests_per_s": len(latencies) / elapsed,
           "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
           "reject_p99_ms": percentile([1000 * x for x in refusals], 99),
           "cpus": os.cpu_count()}
    (out / "serve_load.csv").write_text(",".join(row) + "\n"
                                        + ",".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                                   for v in row.values()) + "\n")
    reject_ms = f"{row['reject_p99_ms']:.0f}" if refusals else "-"
    md = ["# merc serve under load", "",
          f"{clients} concurrent clients for {elapsed:.1f} s on loopback, each posting "
          f"{utterances}-utterance text conversations to /v1/predict back to back (after a 503, "
          f"waiting its Retry-After plus up to 50 % jitter); server --max-queue {bound}; "
          f"{os.cpu_count()} CPUs. Latencies are of the accepted (200) requests.", "",
          "| accepted | 503 | errors | accepted/s | p50 ms | p95 ms | p99 ms | 503 p99 ms |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| {row['requests']} | {row['rejected_503']} | {row['errors']} | "
          f"{row['requests_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
          f"{row['p99_ms']:.0f} | {reject_ms} |"]
    if errors:
        md += ["", "Errors: " + json.dumps(sorted(set(errors)))]
    (out / "serve_load.md").write_text("\n".join(md) + "\n")
    echo(md[-1] if not errors else md[-3])
    echo(f"wrote {out / 'serve_load.csv'} and {out / 'serve_load.md'}")
    return row
