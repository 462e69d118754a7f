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
        cmd += ["--checkpoint", checkpoint]
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


# ----------------------------------------------------------------------------- many conversations

_API_LOOP = """
import json, sys, time
from pathlib import Path
from merc import Predictor
files = sorted(Path(sys.argv[1]).glob("*.jsonl"))[: int(sys.argv[3])]
p = Predictor.from_checkpoint(sys.argv[2] if sys.argv[2] != "-" else None)
p.predict(files[0])                                   # encoder loaded, caches warm
t0 = time.perf_counter()
n = sum(len(p.predict(f).utterances) for f in files)
print(json.dumps({"seconds": time.perf_counter() - t0, "utterances": n}))
"""

_BARE_ENCODER = """
import json, sys, time
from pathlib import Path
from merc.text.bert import MiniLMEncoder
from merc.text.encoder import bundled_model_dir
texts = [json.loads(line)["text"] for f in sorted(Path(sys.argv[1]).glob("*.jsonl"))
         for line in f.read_text().splitlines() if line.strip()]
enc = MiniLMEncoder(bundled_model_dir())
enc.encode(texts[:64])                                # weights loaded, caches warm
t0 = time.perf_counter()
enc.encode(texts)
print(json.dumps({"seconds": time.perf_counter() - t0, "utterances": len(texts)}))
"""


def write_conversation_folder(folder: Path, n_conversations: int, n_utterances: int) -> int:
    """``n_conversations`` files of ``n_utterances`` generated utterances each (different
    conversations: the sentence pattern is shifted per file); returns the utterance count."""
    folder.mkdir(parents=True, exist_ok=True)
    base = synthetic_conversation(n_utterances + n_conversations)
    for k in range(n_conversations):
        utts = base[k:k + n_utterances]
        (folder / f"conv_{k:05d}.jsonl").write_text("".join(json.dumps(u) + "\n" for u in utts))
    return n_conversations * n_utterances


def run_throughput_bench(out_dir: str | Path = "results", *, n_conversations: int = 1000,
                         n_utterances: int = 20, repeats: int = 3, sample: int = 20,
                         checkpoint: str | None = None, with_ray: bool | None = None,
                         echo=print) -> list[dict]:
    """Utterances per second of four ways to predict many text conversations, side by side.

    * ``merc predict DIR`` -- one process for the whole folder (batched), whole command;
    * one ``merc predict FILE`` process per file -- on ``sample`` files (it is ~seconds a file);
    * the per-conversation API loop -- ``Predictor.predict`` on each of ``sample * 5`` files,
      encoder already loaded;
    * the bare text encoder -- MiniLM on all utterances in one call, weights already loaded:
      the floor (everything else is overhead);
    * with Ray installed (``with_ray``, default: when importable), ``merc predict DIR --backend
      ray --workers 2``, whole command: what Ray Data's start and per-actor model loads cost
      on one machine.

    Each round runs all four in a rotated order (so all meet the same machine load); ratios are
    taken within a round. Writes ``predict_throughput.csv`` / ``.md``.
    """
    if with_ray is None:
        import importlib.util

        with_ray = importlib.util.find_spec("ray") is not None
    out = Path(out_dir)
    folder = out / f"predict_many_{n_conversations}x{n_utterances}"
    total = write_conversation_folder(folder, n_conversations, n_utterances)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    model = ["--checkpoint", checkpoint] if checkpoint else []
    files = sorted(folder.glob("*.jsonl"))

    def batch_dir() -> tuple[float, int]:
        t = _whole_command([sys.executable, "-m", "merc.cli", "predict", str(folder), "--quiet",
                            "--out", str(out / "predict_many_result.jsonl"), *model], env)
        return t, total

    def per_file() -> tuple[float, int]:
        t0 = time.perf_counter()
        for f in files[:sample]:
            subprocess.run([sys.executable, "-m", "merc.cli", "predict", str(f), "--quiet",
                            "--out", str(out / "predict_one_result.json"), *model],
                           check=True, capture_output=True, env=env)
        return time.perf_counter() - t0, len(files[:sample]) * n_utterances

    def in_process(script: str, *args: str) -> tuple[float, int]:
        res = subprocess.run([sys.executable, "-c", script, str(folder), *args], check=True,
                             capture_output=True, text=True, env=env)
        d = json.loads(res.stdout.strip().splitlines()[-1])
        return d["seconds"], d["utterances"]

    def ray_dir() -> tuple[float, int]:
        t = _whole_command([sys.executable, "-m", "merc.cli", "predict", str(folder), "--quiet",
                            "--backend", "ray", "--workers", "2", "--out-dir",
                            str(out / "predict_many_ray"), *model], env)
        return t, total

    ways = {"merc predict DIR (one process, batched)": batch_dir,
            "merc predict FILE, one process per file": per_file,
            "Predictor.predict per conversation (API loop)":
                lambda: in_process(_API_LOOP, checkpoint or "-", str(sample * 5)),
            "bare text encoder, one call": lambda: in_process(_BARE_ENCODER)}
    if with_ray:
        # Whole command: Ray's start, 2 actors each importing merc and loading the model.
        ways["merc predict DIR --backend ray --workers 2 (whole command)"] = ray_dir
    names = list(ways)
    rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(max(1, repeats)):
        for k in names[r % len(names):] + names[:r % len(names)]:
            seconds, n = ways[k]()
            rates[k].append(n / seconds)
            echo(f"round {r + 1}: {k}: {n / seconds:.0f} utterances/s")
    batch, api, bare = names[0], names[2], names[3]
    ratio_api = [b / a for b, a in zip(rates[batch], rates[api])]
    ratio_bare = [e / b for e, b in zip(rates[bare], rates[batch])]
    rows = [{"measure": k, "utterances_per_s": statistics.median(v), "min": min(v),
             "max": max(v), "repeats": len(v)} for k, v in rates.items()]
    with open(out / "predict_throughput.csv", "w") as f:
        f.write("measure,utterances_per_s,min,max,repeats,conversations,utterances_each\n")
        f.writelines(f"{r['measure']},{r['utterances_per_s']:.1f},{r['min']:.1f},{r['max']:.1f},"
                     f"{r['repeats']},{n_conversations},{n_utterances}\n" for r in rows)
        f.write(f"batched / API loop,{statistics.median(ratio_api):.2f},{min(ratio_api):.2f},"
                f"{max(ratio_api):.2f},{len(ratio_api)},,\n")
        f.write(f"bare encoder / batched (time ratio),{statistics.median(ratio_bare):.2f},"
                f"{min(ratio_bare):.2f},{max(ratio_bare):.2f},{len(ratio_bare)},,\n")
    md = [f"# Predicting {n_conversations} text conversations of {n_utterances} utterances", "",
          f"{repeats} rounds, the ways in a rotated order each round; median [min–max] "
          f"utterances per second. CPUs: {os.cpu_count()}. One process per file was run on "
          f"{sample} files and the API loop on {sample * 5} (rates, not totals).", "",
          "| way | utterances/s | min–max |", "|---|---:|---:|"]
    md += [f"| {r['measure']} | {r['utterances_per_s']:.0f} | {r['min']:.0f}–{r['max']:.0f} |"
           for r in rows]
    md += ["", f"Batched over the API loop: {statistics.median(ratio_api):.2f}× "
           f"[{min(ratio_api):.2f}–{max(ratio_api):.2f}] (target ≥ 3). The batched command's time "
           f"over the bare encoder's: {statistics.median(ratio_bare):.2f}× "
           f"[{min(ratio_bare):.2f}–{max(ratio_bare):.2f}] (target ≤ 1.3; it includes process "
           "start, imports, reading and checking the files, the model and writing results)."]
    if with_ray:
        ray_way = names[4]
        ratio_ray = [b / r for b, r in zip(rates[batch], rates[ray_way])]
        md += ["", f"Ray Data on this one machine (2 actors) takes "
               f"{statistics.median(ratio_ray):.2f}× [{min(ratio_ray):.2f}–{max(ratio_ray):.2f}] "
               "the batched command's time: Ray's start and one model load per actor are "
               "overhead that only pays off with more machines."]
        with open(out / "predict_throughput.csv", "a") as f:
            f.write(f"ray / batched (time ratio),{statistics.median(ratio_ray):.2f},"
                    f"{min(ratio_ray):.2f},{max(ratio_ray):.2f},{len(ratio_ray)},,\n")
    (out / "predict_throughput.md").write_text("\n".join(md) + "\n")
    echo("\n".join(md[-1:]))
    echo(f"wrote {out / 'predict_throughput.csv'} and {out / 'predict_throughput.md'}")
    return rows
