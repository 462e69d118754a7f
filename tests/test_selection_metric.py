"""``train.metric`` / ``train.ignore_labels``: the validation metric that selects the checkpoint
(DailyDialog-style micro-F1 without the neutral class), computed, logged, selected on, recorded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from merc.config import ExperimentConfig
from merc.training.experiment import run_experiment, run_fingerprint
from merc.metrics import SelectionMetric, classification_metrics
from merc.errors import ConfigError


def _config(corpus_dir, **train):
    cfg = ExperimentConfig()
    cfg.data.corpus = "jsonl"
    cfg.data.data_dir = str(corpus_dir)
    cfg.data.modalities = ["text", "audio"]
    cfg.data.text = "external"
    cfg.model = {"name": "mlp"}
    cfg.train = {"max_epochs": 6, "patience": 6, "batch_size": 4, "lr": 1e-2, **train}
    cfg.seeds = [0]
    return cfg


def test_selection_metric_values_match_sklearn():
    names = ["ang", "hap", "neu"]
    y_true = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    y_pred = np.array([0, 2, 1, 2, 0, 2, 2, 0])
    sel = SelectionMetric("micro_f1", ("neu",))
    assert sel.key == "micro_f1_without_neu"
    assert sel.description == "micro-F1 without neu"
    m = classification_metrics(y_true, y_pred, names, sel)
    assert m[sel.key] == pytest.approx(100 * f1_score(y_true, y_pred, labels=[0, 1],
                                                      average="micro"))
    # The standard keys keep their meaning (every class), whatever selects.
    assert m["wf1"] == classification_metrics(y_true, y_pred, names)["wf1"]
    # Without ignored labels the key is the metric's own; standard ones are not duplicated.
    assert classification_metrics(y_true, y_pred, names, SelectionMetric("micro_f1"))[
        "micro_f1"] == pytest.approx(m["acc"])
    assert set(classification_metrics(y_true, y_pred, names, SelectionMetric())) == set(
        classification_metrics(y_true, y_pred, names))


def test_config_checks_metric_and_ignore_labels():
    with pytest.raises(ConfigError, match=r"^train\.metric: expected one of"):
        ExperimentConfig().with_overrides(["train.metric=f2"])
    with pytest.raises(ConfigError, match=r"^train\.ignore_labels: only F1 metrics"):
        ExperimentConfig().with_overrides(["train.metric=acc", "train.ignore_labels=[neu]"])
    cfg = ExperimentConfig().with_overrides(["train.metric=micro_f1",
                                             "train.ignore_labels=[no_emotion]"])
    assert cfg.train.selection == SelectionMetric("micro_f1", ("no_emotion",))
    # The default is left out of the fingerprint (runs recorded before the option resume);
    # any other choice is in it.
    default = run_fingerprint(ExperimentConfig())["train"]
    assert "metric" not in default and "ignore_labels" not in default
    assert run_fingerprint(cfg)["train"]["ignore_labels"] == ["no_emotion"]


def test_cli_flags_set_the_selection_metric():
    from merc.cli import _experiment_config, _parser

    args = _parser().parse_args(["train", "--out", "x", "--metric", "micro_f1",
                                 "--ignore-labels", "neutral, no_emotion"])
    cfg = _experiment_config(args)
    assert cfg.train.metric == "micro_f1"
    assert cfg.train.ignore_labels == ["neutral", "no_emotion"]


def test_training_selects_on_the_chosen_metric(generic_corpus, tmp_path):
    out = tmp_path / "run"
    lines: list[str] = []
    summary = run_experiment(_config(generic_corpus, metric="micro_f1", ignore_labels=["neu"]),
                             out, progress=False, echo=lines.append)
    key = "micro_f1_without_neu"
    metrics = json.loads((out / "seed_0" / "metrics.json").read_text())
    assert metrics["selection_metric"] == {"metric": "micro_f1", "ignore_labels": ["neu"],
                                           "key": key}
    # The checkpoint is the first epoch with the best logged val_<key> (ModelCheckpoint, mode
    # max, monitor val_<key>), and early stopping watched the same key.
    with open(out / "seed_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val_{key}")]
    per_epoch = {int(r["epoch"]): float(r[f"val_{key}"]) for r in rows
                 if int(r["epoch"]) < metrics["epochs_run"]}
    assert len(per_epoch) == 6
    best = max(per_epoch.values())
    assert metrics["best_epoch"] == min(e for e, v in per_epoch.items() if v == best)
    assert metrics["valid"][key] == pytest.approx(best, abs=1e-3)
    assert summary["selection_metric"]["key"] == key
    assert summary["valid"][key]["per_seed"] == [pytest.approx(metrics["valid"][key])]
    assert summary["test"][key]["mean"] == pytest.approx(metrics["test"][key])
    assert any(line.startswith("seed 0: valid micro-F1 without neu ") for line in lines)
    assert "micro-F1 without neu" in lines[-1] and "the selection metric" in lines[-1]


def test_unknown_ignore_label_is_one_line_naming_the_key(generic_corpus, tmp_path):
    with pytest.raises(ConfigError) as e:
        run_experiment(_config(generic_corpus, metric="micro_f1", ignore_labels=["neutral"]),
                       tmp_path / "run", progress=False, echo=lambda s: None)
    assert str(e.value) == ("train.ignore_labels: 'neutral' is not a label of this corpus; "
                            "its labels: ['ang', 'hap', 'neu']")
    assert not (tmp_path / "run" / "seed_0").exists()  # nothing was trained
