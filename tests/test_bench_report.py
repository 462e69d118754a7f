"""Bench tables say what they are (issue 14, defect 8): overrides and seed counts in every
table, no ``± 0.00`` for one seed, no empty tables, readable figures. Built from fabricated run
folders, so no training is needed."""

from __future__ import annotations

import csv
import json

import pytest

from merc.bench import suite
from merc.bench.accuracy import plan_runs
from merc.bench.report import label_kind, write_accuracy_report
from merc.bench.suite import BenchCorpus
from merc.config import ExperimentConfig

LABELS = ["negative", "positive"]  # MOSI's two labels: the smallest confusion matrix


@pytest.fixture
def toy(monkeypatch):
    """A bench corpus planned for Table 1, 3 and the L_norm curves only: no modality subsets,
    no fusion comparison."""
    corpus = BenchCorpus("jsonl", "toy", modalities=("text", "audio"), ablations=("w/o PE",),
                         overrides=("data.text=external",))
    monkeypatch.setattr(suite, "BENCH_CORPORA", {"toy": corpus})


def _m(values):
    mean = sum(values) / len(values)
    std = 0.0 if len(values) == 1 else 1.5  # what mean_std gives one seed: 0
    return {"mean": mean, "std": std, "per_seed": list(values)}


def _fake_runs(out, seeds):
    """Plan the toy suite and write each run's summary and seed metrics by hand."""
    runs = plan_runs(["toy"], ["mlp", "broad-mamba"])
    summaries = {}
    for i, run in enumerate(runs):
        scores = [60.0 + i * (k + 1) for k in range(seeds)]  # differences vary: a defined t-test
        s = {"seeds": list(range(seeds)), "params": 100, "label_names": LABELS,
             "test": {"wf1": _m(scores), "acc": _m(scores), "macro_f1": _m(scores),
                      "per_class_f1": {lab: _m(scores) for lab in LABELS}},
             "valid": {"wf1": _m(scores)}, "seconds_to_best": {"mean": 1.0}}
        summaries[run.identity] = s
        d = out / "runs" / run.corpus / run.folder
        for k in range(seeds):
            (d / f"seed_{k}").mkdir(parents=True)
            (d / f"seed_{k}" / "metrics.json").write_text(json.dumps(
                {"test": {"confusion": [[5, 2], [1, 7]]}, "checkpoint": "best.ckpt",
                 "epochs_run": 1}))
    return runs, summaries


def test_tables_carry_overrides_and_seeds_and_no_spread_for_one_seed(toy, tmp_path):
    out = tmp_path / "results"
    runs, summaries = _fake_runs(out, seeds=1)
    lines: list[str] = []
    write_accuracy_report(out, runs, summaries, {}, 1, echo=lines.append,
                          overrides=["train.max_epochs=5"])
    for name in ("table1_main.md", "table3_ablation.md", "significance.md"):
        text = (out / name).read_text()
        assert "`train.max_epochs=5`" in text and "Seeds per run: 1" in text, name
        assert "± 0.00" not in text and "± n/a" in text or name == "significance.md", name
    for name in ("accuracy.csv", "table1_main.csv", "table3_ablation.csv", "significance.csv"):
        with open(out / name) as f:
            rows = list(csv.DictReader(f))
        assert rows and all("train.max_epochs=5" in r["overrides"] for r in rows), name
        assert all(r.get("seeds", r.get("n")) == "1" for r in rows), name
        for col in ("std", "wf1_std", "acc_std"):
            assert all(r[col] == "" for r in rows if col in r), (name, col)
    # Nothing planned for Table 4 and Fig. 5: no header-only files, one line each says why.
    for name in ("table4_modalities", "fig5_fusion"):
        assert not list(out.glob(f"{name}.*")), name
        assert any(line.startswith(f"{name}: not written: no runs planned") for line in lines)


def test_several_seeds_keep_their_spread(toy, tmp_path):
    out = tmp_path / "results"
    runs, summaries = _fake_runs(out, seeds=3)
    write_accuracy_report(out, runs, summaries, {}, 3, echo=lambda _: None)
    text = (out / "table1_main.md").read_text()
    assert "± 1.50" in text and "n/a" not in text and "Overrides: `data.text=external` (toy" in text


def test_two_label_confusion_figure_is_readable(toy, tmp_path):
    from PIL import Image

    out = tmp_path / "results"
    runs, summaries = _fake_runs(out, seeds=1)
    write_accuracy_report(out, runs, summaries, {}, 1, echo=lambda _: None)
    width, height = Image.open(out / "confusion" / "toy_mlp.png").size
    assert width >= 400 and height >= 400, (width, height)  # was 275 x 220 with a cut title


@pytest.mark.parametrize("corpus,label,kind", [
    ("mosi", "emotion", "sentiment"), ("meld", "sentiment", "sentiment"),
    ("meld", "emotion", "emotion"), ("iemocap", "emotion", "emotion"),
    ("jsonl", "emotion", "label")])
def test_tsne_legend_names_the_label_kind(tmp_path, corpus, label, kind):
    cfg = ExperimentConfig()
    cfg.data.corpus, cfg.data.label = corpus, label
    cfg.save(tmp_path / "config.yaml")
    assert label_kind(tmp_path / "config.yaml") == kind
    assert label_kind(tmp_path / "missing.yaml") == "label"
