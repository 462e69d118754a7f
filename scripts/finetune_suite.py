"""The fine-tuned encoder study behind docs/results.md's "Fine-tuned text encoders" tables (issue G).

For each corpus it runs ``merc finetune`` once per input-format variant, picks the default
context setting on **validation** W-F1 of the fine-tunes (never test), extracts features with
every encoder and trains context models on them with ``merc train --text-encoder ENC``. Each
seed is its own ``merc train ... seeds=[s]`` process so seeds run in parallel; a seed's result
is identical to the same seed inside ``--seeds 5`` (deterministic training, same data).

    python scripts/finetune_suite.py --data ../shared/data --out results/finetune \\
        --jobs 14 --accelerator gpu

Writes ``OUT/finetunes.json`` (every encoder's record: settings, per-epoch validation W-F1 and
seconds), ``OUT/results.jsonl`` (one line per finished ``merc train`` seed, as it finishes),
``OUT/summary.json`` (mean +- std per row, with how many encoder fine-tunes stand behind it) and
``OUT/table.md``. Jobs not started before ``--deadline`` seconds are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Input-format variants: name -> finetune.* overrides (on top of merc's defaults).
VARIANTS = {
    "none": ["finetune.context.past=0", "finetune.context.future=0"],
    "past": ["finetune.context.future=0"],
    "past+future": [],
    "past+future/no-speakers": ["finetune.context.speakers=false"],
    "past+future/top-2-layers": ["finetune.train_layers=2"],
    "past+future/cross-fit-5": ["finetune.cross_fit=5"],
}
# Variants that compete for the default context setting (validation W-F1 of the fine-tunes).
CONTEXT_CHOICES = ["none", "past", "past+future", "past+future/no-speakers"]
MONOLOGUE = {"mosi"}  # one speaker per "dialogue": speaker names and cross-fit are not studied


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--corpora", default="meld,iemocap,mosi")
    p.add_argument("--models", default="bc-lstm,broad-mamba")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ablation-seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--deadline", type=float, default=1e9, help="seconds; later jobs are skipped")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every merc command")
    args = p.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpora = args.corpora.split(",")
    variants = [v for v in args.variants.split(",") if v]
    merc = [sys.executable, "-m", "merc.cli"]
    log = open(out / "log.txt", "a")

    def run(cmd: list[str], name: str) -> int:
        left = args.deadline - (time.time() - t0)
        if left < 20:
            print(f"[skip] {name}: deadline", file=log, flush=True)
            return -1
        start = time.time()
        r = subprocess.run(["timeout", str(int(left)), *cmd], capture_output=True, text=True)
        tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
        print(f"[{r.returncode}] {name} {time.time() - start:.0f}s :: {' | '.join(tail)}",
              file=log, flush=True)
        return r.returncode

    # 1. Fine-tunes, all in parallel.
    ft_jobs = []
    for c in corpora:
        for v in variants:
            if c in MONOLOGUE and v not in ("none", "past", "past+future"):
                continue
            enc = out / "enc" / f"{c}-{v.replace('/', '-').replace('+', '_')}"
            ft_jobs.append((c, v, enc, [*merc, "finetune", "--corpus", c, "--data-dir",
                                        args.data, "--out", str(enc),
                                        f"finetune.accelerator={args.accelerator}",
                                        "finetune.num_threads=1", *VARIANTS[v], *args.extra]))
    # Cross-fitted encoders cost K+1 fine-tunes: they run alongside everything else and their
    # context models are queued last, so the main rows never wait for them.
    pool = ThreadPoolExecutor(args.jobs)
    futures = {j[1]: [] for j in ft_jobs}
    for j in ft_jobs:
        futures[j[1]].append(pool.submit(run, j[3], f"finetune {j[0]} {j[1]}"))
    late = [v for v in variants if "cross-fit" in v]
    for v, fs in futures.items():
        if v not in late:
            for f in fs:
                f.result()
    records = {}

    def collect(jobs) -> list[dict]:
        new = []
        for c, v, enc, _ in jobs:
            path = enc / "merc_encoder.json"
            if path.is_file() and f"{c}|{v}" not in records:
                rec = json.loads(path.read_text())
                t = rec["training"]
                records[f"{c}|{v}"] = {
                    "corpus": c, "variant": v, "encoder": str(enc), "context": rec["context"],
                    "valid_wf1": t["valid_wf1"], "best_epoch": t["best_epoch"],
                    "seconds": t["seconds"], "history": t["history"], "device": t["device"],
                    "cross_fit": (t.get("cross_fit") or {}).get("fold_valid_wf1")}
                new.append(records[f"{c}|{v}"])
        (out / "finetunes.json").write_text(json.dumps(records, indent=2))
        return new

    collect([j for j in ft_jobs if j[1] not in late])

    # 2. The default context setting: best mean validation W-F1 over the dialogue corpora.
    def mean_valid(v: str) -> float:
        vals = [records[f"{c}|{v}"]["valid_wf1"] for c in corpora
                if c not in MONOLOGUE and f"{c}|{v}" in records]
        return statistics.mean(vals) if vals else float("-inf")

    choice = max((v for v in CONTEXT_CHOICES if v in variants), key=mean_valid)
    (out / "choice.json").write_text(json.dumps(
        {"chosen": choice, "mean_valid_wf1": {v: mean_valid(v) for v in CONTEXT_CHOICES
                                              if v in variants}}, indent=2))
    print(f"[choice] {choice}", file=log, flush=True)

    # 3. Features once per encoder (the cache is shared), then the context models.
    def enc_of(c: str, v: str) -> str | None:
        r = records.get(f"{c}|{v}")
        return r["encoder"] if r else None

    def extract(r: dict) -> int:
        return run([*merc, "extract", "--corpus", r["corpus"], "--data-dir", args.data,
                    "--text-encoder", r["encoder"]], f"extract {r['corpus']} {r['variant']}")

    for f in [pool.submit(extract, r) for r in records.values()]:
        f.result()
    train_jobs = []  # (row name, corpus, variant, model, modalities, seed)
    models = args.models.split(",")
    for c in corpora:
        main_v = choice if c not in MONOLOGUE else (choice if choice in VARIANTS and
                                                     f"{c}|{choice}" in records else "past+future")
        for m in models:
            for s in range(args.seeds):
                train_jobs.append((c, main_v, m, None, s))
        if c in MONOLOGUE:
            for s in range(args.seeds):
                train_jobs.append((c, main_v, models[0], "text", s))
    # The frozen bundled MiniLM (MOSI: its shipped text vectors), side by side in the same run.
    train_jobs += [(c, "frozen", m, None, s) for c in corpora for m in models
                   for s in range(args.seeds)]

    def ablations(names) -> list[tuple]:
        return [(c, v, models[0], None, s) for c in corpora for v in names
                if f"{c}|{v}" in records and v != choice for s in range(args.ablation_seeds)]

    train_jobs += ablations([v for v in variants if v not in late])

    def train(job) -> None:
        c, v, m, mods, s = job
        enc = enc_of(c, v)
        if enc is None and v != "frozen":
            return
        name = f"{c}-{v.replace('/', '-').replace('+', '_')}-{m}" + (f"-{mods}" if mods else "")
        run_dir = out / "runs" / name / f"seed{s}"
        cmd = [*merc, "train", "--corpus", c, "--data-dir", args.data, "--model", m,
               "--out", str(run_dir), f"seeds=[{s}]", f"train.accelerator={args.accelerator}",
               *args.extra] + (["--text-encoder", enc] if enc else [])
        if mods:
            cmd += ["--modalities", mods]
        if run(cmd, f"train {name} seed {s}") == 0:
            summ = json.loads((run_dir / "summary.json").read_text())
            line = {"row": name, "corpus": c, "variant": v, "model": m,
                    "modalities": summ["modalities"], "seed": s,
                    "valid_wf1": summ["valid"]["wf1"]["mean"],
                    "test_wf1": summ["test"]["wf1"]["mean"],
                    "test_acc": summ["test"]["acc"]["mean"],
                    "train_seconds": summ["train_seconds"]["mean"]}
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

    pending = [pool.submit(train, j) for j in train_jobs]
    for v in late:
        for f in futures[v]:
            f.result()
    for r in collect([j for j in ft_jobs if j[1] in late]):
        extract(r)
    pending += [pool.submit(train, j) for j in ablations(late)]
    for f in pending:
        f.result()
    pool.shutdown()

    # 4. Mean +- std per row.
    rows: dict[str, list[dict]] = {}
    if (out / "results.jsonl").is_file():
        for line in (out / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows.setdefault(r["row"], []).append(r)
    summary = {}
    for name, rs in sorted(rows.items()):
        rs = sorted(rs, key=lambda r: r["seed"])

        def ms(key: str) -> dict:
            vals = [r[key] for r in rs]
            return {"mean": statistics.mean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "per_seed": vals}

        summary[name] = {"corpus": rs[0]["corpus"], "variant": rs[0]["variant"],
                         "model": rs[0]["model"], "modalities": rs[0]["modalities"],
                         "seeds": [r["seed"] for r in rs],
                         "valid_wf1": ms("valid_wf1"), "test_wf1": ms("test_wf1"),
                         "test_acc": ms("test_acc")}
        rec = records.get(f"{rs[0]['corpus']}|{rs[0]['variant']}")
        folds = len(rec["cross_fit"]) if rec and rec["cross_fit"] else 0
        summary[name]["encoder_finetunes"] = (1 + folds) if rec else 0
        summary[name]["encoder_valid_wf1"] = rec["valid_wf1"] if rec else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    def ft_cell(s: dict) -> str:
        n = s["encoder_finetunes"]
        if not n:
            return "none (frozen features)"
        what = "1 encoder" if n == 1 else f"1 encoder + {n - 1} cross-fit folds"
        return f"{what}, shared by all {len(s['seeds'])} seeds"

    lines = ["| corpus | features (fine-tuned MiniLM) | model | modalities | seeds | encoder "
             "fine-tunes | encoder valid W-F1 | valid W-F1 | test W-F1 | test acc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary.values():
        lines.append(
            f"| {s['corpus']} | {s['variant']} | {s['model']} | {'+'.join(s['modalities'])} | "
            f"{len(s['seeds'])} | {ft_cell(s)} | "
            f"{_num(s['encoder_valid_wf1'])} | {s['valid_wf1']['mean']:.2f} ± "
            f"{s['valid_wf1']['std']:.2f} | {s['test_wf1']['mean']:.2f} ± {s['test_wf1']['std']:.2f}"
            f" | {s['test_acc']['mean']:.2f} ± {s['test_acc']['std']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"[done] {time.time() - t0:.0f}s", file=log, flush=True)
    return 0


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
