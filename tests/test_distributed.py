"""Data-parallel training on Lightning DDP (issue S, item 1): two CPU processes (gloo) give the
single-process run's numbers epoch by epoch, and only rank 0 prints and writes.

Why the numbers can match exactly: with ``train.strategy=ddp`` merc shards the train split with
a ``DistributedSampler`` (seeded, reshuffled per epoch), so at every step the two ranks' batches
of ``batch_size`` dialogues together are the single process's batch of ``2 * batch_size``; with
equal-length, fully labelled dialogues each rank's mean loss is over the same number of
utterances, so DDP's average of the two gradients equals the single process's gradient; dropout
is off (each rank would draw its own masks). What remains is float rounding of the all-reduce.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from helpers import write_generic_corpus


def _train(corpus, out, devices: int, batch: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "merc.cli", "train", "--corpus", "jsonl", "--data-dir",
           str(corpus), "--text-encoder", "external", "--modalities", "text,audio",
           "--model", "mlp", "--seeds", "1", "--out", str(out), "model.dropout=0.0",
           "train.max_epochs=4", "train.patience=10", "train.lr=0.01", "train.strategy=ddp",
           f"train.devices={devices}", f"train.batch_size={batch}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)


def _per_epoch(run) -> dict[str, list[float]]:
    rows = list(csv.DictReader((run / "seed_0" / "metrics.csv").open()))
    return {key: [float(r[key]) for r in rows if r.get(key)]
            for key in ("train_loss", "val_wf1", "val_loss")}


def test_two_process_ddp_matches_one_process_epoch_by_epoch(tmp_path):
    corpus = write_generic_corpus(tmp_path / "corpus", n_train=16, n_valid=4, n_test=4,
                                  length=5, signal=0.6)
    _train(corpus, tmp_path / "one", devices=1, batch=4)
    two = _train(corpus, tmp_path / "two", devices=2, batch=2)
    a, b = _per_epoch(tmp_path / "one"), _per_epoch(tmp_path / "two")
    assert len(a["val_wf1"]) == len(b["val_wf1"]) >= 4
    assert a["val_wf1"] == b["val_wf1"]            # the selection metric, epoch by epoch
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["valid"]["wf1"]["per_seed"] == s1["valid"]["wf1"]["per_seed"]
    assert s2["test"]["wf1"]["per_seed"] == s1["test"]["wf1"]["per_seed"]
    # Only rank 0 speaks and writes: one result line and one "wrote", though two processes ran
    # the command.
    assert two.stdout.count("seed 0: valid W-F1") == 1
    assert two.stdout.count("wrote ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "config.yaml", "seed_0", "summary.json"]
