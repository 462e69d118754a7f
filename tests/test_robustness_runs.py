"""Issue 14, defect 1: a killed training run says so, leaves only complete files, and resumes.

The end-to-end test starts ``merc train`` in a subprocess on a tiny synthetic corpus, sends
SIGTERM while the second seed trains, and checks the exit status, the one-line message, that
every file present parses completely, and that re-running the same command finishes with the
metrics an uninterrupted run gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_generic_corpus

from merc.cli import main

TRAIN = ["train", "--corpus", "jsonl", "--model", "mlp", "--no-progress"]
EPOCHS = ["train.max_epochs=100", "train.patience=100"]


def _merc(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "merc.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_complete(run: Path) -> None:
    """Every file merc wrote parses completely; no temporary file is left behind."""
    assert not list(run.rglob("*.tmp")), list(run.rglob("*.tmp"))
    for p in run.rglob("*.json"):
        json.loads(p.read_text())
    for p in run.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(p.read_text()), dict), p
    for p in run.rglob("*.ckpt"):
        assert "state_dict" in torch.load(p, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigterm_mid_seed_exits_nonzero_keeps_complete_files_and_resumes(tmp_path):
    corpus = write_generic_corpus(tmp_path / "c", n_train=8, n_test=4)
    run = tmp_path / "run"
    env = dict(os.environ, MERC_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    args = [*TRAIN, "--data-dir", str(corpus), "--out", str(run), *EPOCHS, "seeds=[0, 1]"]
    proc = _merc(args, env)
    deadline = time.monotonic() + 120
    # Seed 0 finished (metrics.json is written last) and seed 1 has started training.
    while not ((run / "seed_0" / "metrics.json").exists() and (run / "seed_1").exists()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "seed 1 finished before the signal; raise train.max_epochs"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err
    assert "SIGTERM" in lines[0] and "finished seeds [0]" in lines[0], lines[0]
    assert "resume" in lines[0]
    assert not (run / "summary.json").exists()
    assert not (run / "seed_1" / "metrics.json").exists()
    _check_complete(run)

    # The same command again: seed 0 is read back, seed 1 trained from scratch.
    again = _merc(args, env)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert "seed 0: finished earlier, reused" in out
    _check_complete(run)
    resumed = json.loads((run / "summary.json").read_text())

    # An uninterrupted run of seed 1 alone gives the same numbers (seeds are independent).
    ref = tmp_path / "ref"
    assert main([*TRAIN, "--data-dir", str(corpus), "--out", str(ref), *EPOCHS, "seeds=[1]"]) == 0
    alone = json.loads((ref / "seed_1" / "metrics.json").read_text())
    seed1 = json.loads((run / "seed_1" / "metrics.json").read_text())
    assert seed1["test"] == alone["test"] and seed1["valid"] == alone["valid"]
    assert resumed["seeds"] == [0, 1]
    assert resumed["test"]["wf1"]["per_seed"][1] == pytest.approx(alone["test"]["wf1"])


def test_interruptible_turns_signals_into_interrupted_and_restores_handlers():
    from merc.training.interrupt import Interrupted, interruptible

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next bytecode boundary
    assert info.value.exit_status == 143 and "SIGTERM" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is before


def test_main_reports_an_interruption_in_one_line_with_128_plus_signum(monkeypatch, capsys):
    import merc.cli as cli

    def killed(args):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "models", killed)
    assert main(["models"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["merc models: interrupted by SIGINT"]


def test_atomic_writes_leave_the_old_file_when_the_write_fails(tmp_path):
    from merc.training.interrupt import Interrupted
    from merc.fileio import atomic_write_bytes, write_json

    target = tmp_path / "summary.json"
    write_json(target, {"ok": 1})

    def boom(f):
        f.write(b'{"half": ')
        raise Interrupted(signal.SIGTERM)

    from merc.fileio import atomic_write

    with pytest.raises(Interrupted):
        atomic_write(target, boom)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    atomic_write_bytes(tmp_path / "x.bin", b"abc")
    assert (tmp_path / "x.bin").read_bytes() == b"abc"


def test_results_are_written_through_the_atomic_writer(tmp_path, monkeypatch):
    """summary.json, metrics.json, config.yaml and best.ckpt all go through merc.fileio (the
    checkpoint via AtomicCheckpointIO), i.e. temp file + os.replace."""
    import merc.fileio as fileio

    written = []
    real = fileio.atomic_write

    def spy(path, write):
        written.append(Path(path).name)
        return real(path, write)

    monkeypatch.setattr(fileio, "atomic_write", spy)
    corpus = write_generic_corpus(tmp_path / "c", n_train=6, n_test=3)
    assert main(["train", "--corpus", "jsonl", "--model", "mlp", "--no-progress",
                 "--data-dir", str(corpus), "--out", str(tmp_path / "run"),
                 "train.max_epochs=2"]) == 0
    for name in ("summary.json", "metrics.json", "config.yaml", "best.ckpt"):
        assert name in written, written
