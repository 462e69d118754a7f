"""``merc bench live``: the cost of one new utterance in a long live conversation.

One conversation of ``max(points)`` utterances of random ``dim``-d text features (MiniLM's 384
by default) goes through the causal Broad Mamba (``model.causal=true``, merc's default widths,
eval mode, randomly initialised: the cost does not depend on the weights) in two ways:

``stream``
    :meth:`~merc.models.broad_mamba.BroadMamba.step` once per utterance from the fixed-size
    state (what ``Predictor.session()`` and ``merc predict --live`` run).
``rerun``
    what a finished-conversation model must do for each new utterance: the whole forward pass
    over the conversation so far.

At each point ``N`` (default 10, 100, 1,000, 10,000) the latency of utterance ``N`` is the
median over ``repeats`` timings (stream: the steps ``N - repeats + 1 .. N``; rerun: ``repeats``
forward passes over the first ``N`` utterances), with min and max. The text encoder's cost (one
utterance, or one short window of them, per step in both cases) is the same at every ``N`` and
is not included. Outputs: ``live.csv`` and ``live.md`` in ``out_dir``.
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import torch

from merc.data.collate import Batch
from merc.models import create_model

POINTS = (10, 100, 1000, 10000)


def run_live_bench(out_dir: str | Path, *, points=POINTS, dim: int = 384, repeats: int = 5,
                   threads: int = 1, echo=print) -> list[dict]:
    """Measure (module docstring) and write ``live.csv`` / ``live.md``; returns the rows."""
    if threads > 0:
        torch.set_num_threads(threads)
    points = sorted(int(p) for p in points)
    if not points or points[0] < repeats:
        raise ValueError(f"every point must be >= --repeats ({repeats}), got {points}")
    torch.manual_seed(0)
    model = create_model("broad-mamba", {"text": dim}, 7, causal=True).eval()
    x = torch.randn(1, points[-1], dim)
    step_seconds: list[float] = []
    state = model.init_stream()
    with torch.no_grad():
        for t in range(points[-1]):
            t0 = time.perf_counter()
            model.step({"text": x[:, t]}, state)
            step_seconds.append(time.perf_counter() - t0)
    rows = []
    for n in points:
        stream = step_seconds[n - repeats:n]
        rerun = []
        batch = Batch(features={"text": x[:, :n]}, mask=torch.ones(1, n, dtype=torch.bool),
                      speakers=torch.zeros(1, n, dtype=torch.long),
                      labels=torch.full((1, n), -100))
        with torch.no_grad():
            model(batch)                                   # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(batch)
                rerun.append(time.perf_counter() - t0)
        for how, values in (("stream", stream), ("rerun", rerun)):
            rows.append({"method": how, "utterance": n,
                         "ms_median": 1000 * statistics.median(values),
                         "ms_min": 1000 * min(values), "ms_max": 1000 * max(values),
                         "repeats": len(values)})
        echo(f"utterance {n}: stream {rows[-2]['ms_median']:.2f} ms, rerun "
             f"{rows[-1]['ms_median']:.2f} ms (medians of {repeats})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "live.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    first = {r["method"]: r["ms_median"] for r in rows if r["utterance"] == points[0]}
    lines = ["| utterance | stream ms (median [min-max]) | rerun ms (median [min-max]) | "
             "stream / stream at first point |", "|---|---|---|---|"]
    for n in points:
        s, r = (next(x for x in rows if x["method"] == m and x["utterance"] == n)
                for m in ("stream", "rerun"))
        lines.append(f"| {n:,} | {s['ms_median']:.2f} [{s['ms_min']:.2f}-{s['ms_max']:.2f}] | "
                     f"{r['ms_median']:.2f} [{r['ms_min']:.2f}-{r['ms_max']:.2f}] | "
                     f"{s['ms_median'] / first['stream']:.2f} |")
    (out / "live.md").write_text(
        f"Causal Broad Mamba, {dim}-d text features, {threads or 'default'} thread(s); "
        f"latency of utterance N, medians of {repeats}.\n\n" + "\n".join(lines) + "\n")
    echo(f"wrote {out / 'live.csv'} and {out / 'live.md'}")
    return rows
