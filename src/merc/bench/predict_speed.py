"""``merc bench predict``: how long ``merc predict`` takes on a new conversation.

Two measurements of the same work, side by side:

* **whole command** -- ``merc predict CONV --quiet --out r.json`` in a fresh Python process, wall
  time from start to exit (interpreter start, imports, checkpoint and text-encoder load, text
  encoding, model forward, JSON written): what a user waits for.
* **phases, in one process** -- imports, ``Predictor.from_checkpoint`` (checkpoint load), the
  first ``predict`` (text-encoder load + encoding + forward) and a second ``predict`` of the same
  conversation (encoder already loaded: the cost per further conversation in the Python API).

The conversation is generated here: ``n`` utterances of ordinary sentences alternating between
three speakers, text only. The whole command and the phase process are each run ``repeats``
times, alternating (so both meet the same machine load); every measure is reported as the
median with its min and max.
Output: ``predict_speed.csv`` (``measure, seconds, seconds_min, seconds_max, repeats,
n_utterances, threads``; ``seconds`` is the median) and ``.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

_OPENERS = ["I honestly thought", "Did you hear that", "It's been a long day, but", "No way,",
            "Look,", "Sorry, I just feel like", "Wow,", "Okay, so", "Well,", "I can't believe"]
_MIDDLES = ["the meeting moved to Friday", "you kept the tickets", "the dog ate my sandwich",
            "we finally got the apartment", "nobody called me back", "the train was cancelled",
            "she said yes", "the printer is broken again", "they loved the cake",
            "I lost my keys"]
_ENDINGS = [".", "!", "?", "...", ". Seriously.", ", which is great.", ", and I'm furious.",
            ". Whatever.", ", can you imagine?", ". I'm so relieved."]


def synthetic_conversation(n: int) -> list[dict]:
    """``n`` utterances (speaker, text) with varied, deterministic sentences."""
    speakers = ["Ana", "Ben", "Chloe"]
    return [{"speaker": speakers[i % 3],
             "text": f"{_OPENERS[i % 10]} {_MIDDLES[(i * 3) % 10]}{_ENDINGS[(i * 7) % 10]}"}
            for i in range(n)]


_PHASES = """
import json, sys, time
t0 = time.perf_counter()
import torch
from merc import Predictor
t1 = time.perf_counter()
p = Predictor.from_checkpoint(sys.argv[2] if sys.argv[2] != "-" else None)
t2 = time.perf_counter()
p.predict(sys.argv[1])
t3 = time.perf_counter()
p.predict(sys.argv[1])
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load_checkpoint": t2 - t1,
                  "first_predict (encoder load + encode + forward)": t3 - t2,
                  "next_predict (encode + forward)": t4 - t3,
                  "threads": torch.get_num_threads()}))
"""


def _whole_command(cmd: list[str], env: dict) -> float:
    """Wall seconds of one ``merc predict`` in a fresh process."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def _phases(conv: Path, checkpoint: str | None, env: dict) -> dict[str, float]:
    """One run of the phase timings in a fresh process (``threads`` included)."""
    res = subprocess.run([sys.executable, "-c", _PHASES, str(conv), checkpoint or "-"],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_predict_bench(out_dir: str | Path = "results", *, n_utterances: int = 100,
                      repeats: int = 5, checkpoint: str | None = None,
                      echo=print) -> list[dict]:
    """Time ``merc predict`` on an ``n_utterances`` text-only conversation; write the tables."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    repeats = max(1, repeats)
    conv = out / f"predict_bench_{n_utterances}.jsonl"
    conv.write_text("".join(json.dumps(r) + "\n" for r in synthetic_conversation(n_utterances)))
    cmd = [sys.executable, "-m", "merc.cli", "predict", str(conv), "--quiet",
           "--out", str(out / "predict_bench_result.json")]
    if checkpoint:
        cmd += ["--model", checkpoint]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    _whole_command(cmd, env)  # warm the OS file cache
    times: dict[str, list[float]] = {"whole command": []}
    threads = None
    for _ in range(repeats):  # alternating: both measurements see the same machine load
        times["whole command"].append(_whole_command(cmd, env))
        phases = _phases(conv, checkpoint, env)
        threads = phases.pop("threads")
        for k, v in phases.items():
            times.setdefault(k, []).append(v)
    rows = [{"measure": k, "seconds": statistics.median(v), "seconds_min": min(v),
             "seconds_max": max(v), "repeats": len(v), "n_utterances": n_utterances,
             "threads": threads} for k, v in times.items()]
    with open(out / "predict_speed.csv", "w") as f:
        f.write("measure,seconds,seconds_min,seconds_max,repeats,n_utterances,threads\n")
        f.writelines(f"{r['measure']},{r['seconds']:.3f},{r['seconds_min']:.3f},"
                     f"{r['seconds_max']:.3f},{r['repeats']},{n_utterances},{threads}\n"
                     for r in rows)
    md = [f"# merc predict on a {n_utterances}-utterance text-only conversation", "",
          f"{repeats} runs of the whole command and {repeats} of the phases, each in a fresh "
          f"process, alternating; median [min–max]. torch threads: {threads}; CPUs: "
          f"{os.cpu_count()}.", "",
          "| measure | seconds, median | min–max |", "|---|---:|---:|"]
    md += [f"| {r['measure']} | {r['seconds']:.2f} | {r['seconds_min']:.2f}–"
           f"{r['seconds_max']:.2f} |" for r in rows]
    (out / "predict_speed.md").write_text("\n".join(md) + "\n")
    for r in rows:
        echo(f"{r['measure']:>50s}: {r['seconds']:.2f} s [{r['seconds_min']:.2f}–"
             f"{r['seconds_max']:.2f}]")
    echo(f"wrote {out / 'predict_speed.csv'} and {out / 'predict_speed.md'}")
    return rows
