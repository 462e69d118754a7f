"""``merc bench serve``: ``merc serve`` under load, on loopback.

Starts ``merc serve`` in its own process on a free 127.0.0.1 port (the model loaded once, as in
production), waits for ``/healthz``, then runs ``clients`` concurrent clients for ``seconds``
seconds; each posts generated conversations (``utterances`` ordinary sentences, three speakers;
see :func:`merc.bench.predict_speed.synthetic_conversation`) to ``/v1/predict`` back to back.
The run stops by itself; the server is stopped afterwards whatever happens.

Reports requests per second, latency percentiles (p50 / p95 / p99, milliseconds, over every
completed request) and the error count (any status other than 200, or a failed connection), to
``serve_load.csv`` and ``serve_load.md``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
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


def run_serve_bench(out_dir: str | Path = "results", *, clients: int = 4, seconds: float = 20.0,
                    utterances: int = 12, checkpoint: str | None = None,
                    echo=print) -> dict:
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
    log = open(out / "serve_load_server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    try:
        _wait_ready(url, proc, timeout=120)
        convs = [{"id": f"c{k}", "utterances": synthetic_conversation(utterances + k)[k:]}
                 for k in range(32)]
        stop = time.monotonic() + seconds

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=60.0) as http:
                i = k
                while time.monotonic() < stop:
                    body = convs[i % len(convs)]
                    i += clients
                    t0 = time.perf_counter()
                    try:
                        r = http.post("/v1/predict", json=body)
                        ok = r.status_code == 200
                        why = f"HTTP {r.status_code}"
                    except httpx.HTTPError as e:
                        ok, why = False, type(e).__name__
                    dt = time.perf_counter() - t0
                    with lock:
                        (latencies.append(dt) if ok else errors.append(why))

        echo(f"merc serve on {url}: {clients} clients for {seconds:.0f} s, "
             f"{utterances}-utterance conversations")
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
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
           "requests": len(latencies), "errors": len(errors),
           "requests_per_s": len(latencies) / elapsed,
           "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
           "cpus": os.cpu_count()}
    (out / "serve_load.csv").write_text(",".join(row) + "\n"
                                        + ",".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                                   for v in row.values()) + "\n")
    md = ["# merc serve under load", "",
          f"{clients} concurrent clients for {elapsed:.1f} s on loopback, each posting "
          f"{utterances}-utterance text conversations to /v1/predict back to back; "
          f"{os.cpu_count()} CPUs.", "",
          "| requests | errors | requests/s | p50 ms | p95 ms | p99 ms |",
          "|---:|---:|---:|---:|---:|---:|",
          f"| {row['requests']} | {row['errors']} | {row['requests_per_s']:.1f} | "
          f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"]
    if errors:
        md += ["", "Errors: " + json.dumps(sorted(set(errors)))]
    (out / "serve_load.md").write_text("\n".join(md) + "\n")
    echo(md[-1] if not errors else md[-3])
    echo(f"wrote {out / 'serve_load.csv'} and {out / 'serve_load.md'}")
    return row
