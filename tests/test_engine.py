"""End-to-end training on a tiny synthetic corpus: selection on validation, test once, outputs."""

from __future__ import annotations

import json
import os

import pytest
import torch

from merc.config import ExperimentConfig
from merc.checkpoint import load_checkpoint
from merc.training.evaluate import evaluate_checkpoint
from merc.training.experiment import run_experiment
from merc.metrics import classification_metrics, mean_std
from merc.training.stats import paired_test
from merc.errors import MercInputError


def _config(corpus_dir, model="bc-lstm", seeds=(0, 1), epochs=8):
    cfg = ExperimentConfig()
    cfg.data.corpus = "jsonl"
    cfg.data.data_dir = str(corpus_dir)
    cfg.data.modalities = ["text", "audio"]
    cfg.data.text = "external"
    cfg.model = {"name": model, "hidden_size": 16}
    cfg.train.max_epochs = epochs
    cfg.train.patience = 3
    cfg.train.batch_size = 4
    cfg.train.lr = 1e-2
    cfg.seeds = list(seeds)
    return cfg


def test_run_experiment_writes_contract(generic_corpus, tmp_path):
    out = tmp_path / "run"
    summary = run_experiment(_config(generic_corpus), out, progress=False, echo=lambda s: None)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("model", "corpus", "modalities", "seeds", "params", "valid", "test",
                "train_seconds"):
        assert key in on_disk
    assert on_disk["seeds"] == [0, 1]
    assert on_disk["modalities"] == ["text", "audio"]
    assert set(on_disk["test"]) >= {"wf1", "acc", "macro_f1", "per_class_f1"}
    assert set(on_disk["test"]["per_class_f1"]) == {"ang", "hap", "neu"}
    assert len(on_disk["test"]["wf1"]["per_seed"]) == 2
    # The features carry the label: a trained model must beat chance by a wide margin.
    assert on_disk["test"]["wf1"]["mean"] > 60
    # No official valid split in this corpus: a seeded split of train dialogues was used.
    assert on_disk["valid_split"].startswith("seeded")
    for s in (0, 1):
        seed_dir = out / f"seed_{s}"
        assert (seed_dir / "best.ckpt").exists() and (seed_dir / "config.yaml").exists()
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        assert metrics["test"]["wf1"] == pytest.approx(on_disk["test"]["wf1"]["per_seed"][s])
        assert (seed_dir / "metrics.csv").exists()  # loss curves


def test_selected_checkpoint_reproduces_test_metrics(generic_corpus, tmp_path):
    out = tmp_path / "run"
    summary = run_experiment(_config(generic_corpus, seeds=(3,)), out, progress=False,
                             echo=lambda s: None)
    ckpt = out / "seed_3" / "best.ckpt"
    raw = torch.load(ckpt, weights_only=True)  # plain data only: safe to load
    meta = raw["merc"]
    assert meta["label_names"] == ["ang", "hap", "neu"]
    assert meta["feature_spec"]["audio"] == "external" and meta["feature_spec"]["stats"]
    assert meta["config"]["model"]["name"] == "bc-lstm" and "merc_version" in meta
    metrics = evaluate_checkpoint(ckpt)
    assert metrics["wf1"] == pytest.approx(summary["test"]["wf1"]["mean"], abs=1e-6)
    loaded = load_checkpoint(ckpt)
    assert loaded.input_dims == {"text": 6, "audio": 3}
    # The typed config comes back, resolved exactly as the run saved it.
    assert isinstance(loaded.config, ExperimentConfig)
    assert loaded.config == ExperimentConfig.load(out / "seed_3" / "config.yaml")
    assert loaded.config.model.hidden_size == 16 and loaded.config.train.lr == 1e-2

    # A checkpoint in the format of merc before the typed config (a model dict holding only the
    # options that were set) loads to the same typed config and predictions.
    raw["merc"]["config"]["model"] = {"name": "bc-lstm", "hidden_size": 16}
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    assert load_checkpoint(old).config == loaded.config
    assert evaluate_checkpoint(old)["wf1"] == metrics["wf1"]


def test_bundled_checkpoint_loads_with_a_typed_config():
    """The bundled model was written before the typed config; it must keep loading."""
    from merc.pretrained import bundled_checkpoint

    loaded = load_checkpoint(bundled_checkpoint())
    assert isinstance(loaded.config, ExperimentConfig)
    assert loaded.config.model_name == "broad-mamba" and loaded.config.data.corpus == "meld"
    assert loaded.config.train.lr is not None  # old checkpoints stored resolved settings


def test_same_seed_is_reproducible(generic_corpus, tmp_path):
    a = run_experiment(_config(generic_corpus, seeds=(0,), epochs=3), tmp_path / "a",
                       progress=False, echo=lambda s: None)
    b = run_experiment(_config(generic_corpus, seeds=(0,), epochs=3), tmp_path / "b",
                       progress=False, echo=lambda s: None)
    assert a["test"]["wf1"]["per_seed"] == b["test"]["wf1"]["per_seed"]


def test_load_checkpoint_rejects_non_merc_and_code(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(MercInputError, match="not a merc checkpoint"):
        load_checkpoint(plain)
    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "pwned"
    torch.save({"merc": {}, "state_dict": {}, "x": _Evil(marker)}, evil)
    with pytest.raises(MercInputError, match="refused: the file holds Python objects"):
        load_checkpoint(evil)
    assert not marker.exists()


class _Evil:
    """Unpickling this would run a shell command (creating ``marker``)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_metrics_and_stats():
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert m["acc"] == 75.0
    assert m["per_class_f1"]["c"] == 100.0
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["wf1"] == pytest.approx(100 * (2 * (2 / 3) + 2 / 3 + 1) / 4)
    s = mean_std([60.0, 62.0, 64.0])
    assert s["mean"] == 62.0 and s["std"] == pytest.approx(2.0)
    assert mean_std([5.0])["std"] == 0.0
    p = paired_test([70, 71, 72, 73, 74], [60, 61.5, 61, 63, 62])
    assert p["mean_diff"] > 0 and p["t_pvalue"] < 0.01
    assert paired_test([1.0, 2.0], [1.0, 2.0])["t_pvalue"] is None
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_test([1, 2], [1])


def test_corpus_without_test_split_is_refused(tmp_path):
    from helpers import write_generic_corpus

    corpus = write_generic_corpus(tmp_path / "c", n_train=6, n_test=0)
    with pytest.raises(MercInputError, match="no test dialogues"):
        run_experiment(_config(corpus), tmp_path / "run", progress=False, echo=lambda s: None)


def test_warmup_schedule_and_optimizer_settings_by_hand():
    from torch import nn

    from merc.training.loop import make_optimizer, warmup_schedule

    f = warmup_schedule(4, 10, "linear")
    # Warm-up (s + 1) / 4 for the first 4 steps, then (10 - s) / (10 - 4) down to 0.
    assert [round(f(s), 4) for s in range(11)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 0.8333, 0.6667, 0.5, 0.3333, 0.1667, 0.0]
    g = warmup_schedule(2, 10, "none")
    assert [g(s) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert warmup_schedule(0, 10, "none")(0) == 1.0
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    opt = make_optimizer(model, 1e-3, 0.01, betas=(0.9, 0.84), eps=1e-7, decay_bias_norm=False)
    decayed, exempt = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert len(exempt["params"]) == 3 and exempt["weight_decay"] == 0.0
    assert decayed["betas"] == (0.9, 0.84) and decayed["eps"] == 1e-7
    # The default keeps one group: exactly AdamW(model.parameters(), ...).
    assert len(make_optimizer(model, 1e-3, 0.01).param_groups) == 1


def test_label_smoothing_shapes_the_training_loss_only():
    from merc.data.collate import IGNORE_INDEX
    from merc.models import ModelOutput
    from merc.training.loop import masked_loss

    logits = torch.tensor([[[4.0, 0.0, -2.0], [0.5, 1.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])  # the padded third position never counts

    class _Batch:
        pass

    batch = _Batch()
    batch.labels = labels
    out = ModelOutput(logits=logits)
    plain, _ = masked_loss(out, batch)
    smooth, _ = masked_loss(out, batch, label_smoothing=0.2)
    # By hand: target 0.8 on the gold class + 0.2 / 3 on every class.
    logp = torch.log_softmax(logits[0, :2], -1)
    target = torch.full((2, 3), 0.2 / 3) + 0.8 * torch.nn.functional.one_hot(labels[0, :2], 3)
    assert smooth.item() == pytest.approx(-(target * logp).sum(-1).mean().item(), rel=1e-6)
    assert plain.item() == pytest.approx(-logp[[0, 1], [0, 1]].mean().item(), rel=1e-6)
    from merc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.label_smoothing: expected \[0, 1\)"):
        ExperimentConfig.from_dict({"train": {"label_smoothing": 1.0}})


def test_training_with_warmup_and_linear_decay(generic_corpus, tmp_path):
    cfg = _config(generic_corpus, seeds=(0,), epochs=3)
    cfg.train.warmup_steps = 2
    cfg.train.lr_decay = "linear"
    cfg.train.adam_betas = [0.9, 0.84]
    out = tmp_path / "run"
    summary = run_experiment(cfg, out, progress=False, echo=lambda s: None)
    assert summary["test"]["wf1"]["mean"] > 40
    t = ExperimentConfig.load(out / "seed_0" / "config.yaml").train
    assert (t.warmup_steps, t.lr_decay, t.adam_betas) == (2, "linear", [0.9, 0.84])
    t = load_checkpoint(out / "seed_0" / "best.ckpt").config.train
    assert (t.warmup_steps, t.lr_decay, t.adam_betas) == (2, "linear", [0.9, 0.84])


def test_run_paths_are_absolute_so_evaluate_works_from_elsewhere(generic_corpus, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(generic_corpus.parent)
    cfg = _config(generic_corpus.name, seeds=(0,), epochs=2)      # relative, as typed
    out = tmp_path / "run"
    run_experiment(cfg, out, progress=False, echo=lambda s: None)
    saved = ExperimentConfig.load(out / "seed_0" / "config.yaml").data.data_dir
    assert saved == os.path.abspath(generic_corpus)
    assert load_checkpoint(out / "seed_0" / "best.ckpt").config.data.data_dir == saved
    monkeypatch.chdir(tmp_path)                                  # somewhere else entirely
    metrics = evaluate_checkpoint(out / "seed_0" / "best.ckpt", progress=False)
    assert 0 <= metrics["wf1"] <= 100


def test_collapsed_model_is_flagged_from_validation(generic_corpus, tmp_path, caplog):
    from merc.metrics import collapse_warning

    labels = ["ang", "hap", "neu"]
    one_class = {"confusion": [[0, 0, 5], [0, 0, 3], [0, 0, 9]], "macro_f1": 20.0}
    assert "predicts only 'neu'" in collapse_warning(one_class, labels)
    weak = {"confusion": [[1, 0, 4], [0, 0, 3], [1, 0, 8]], "macro_f1": 40.0}
    assert "near chance" in collapse_warning(weak, labels)
    healthy = {"confusion": [[4, 0, 1], [0, 3, 0], [1, 0, 8]], "macro_f1": 85.0}
    assert collapse_warning(healthy, labels) is None
    # In a run: a seed whose selected checkpoint collapsed is named in the log and the summary.
    out = tmp_path / "run"
    cfg = _config(generic_corpus, seeds=(0,), epochs=2)
    run_experiment(cfg, out, progress=False, echo=lambda s: None)
    metrics_path = out / "seed_0" / "metrics.json"
    m = json.loads(metrics_path.read_text())
    n = sum(map(sum, m["valid"]["confusion"]))
    m["valid"]["confusion"] = [[0, 0, 0], [0, 0, 0], [0, 0, n]]
    metrics_path.write_text(json.dumps(m))
    summary = run_experiment(cfg, out, progress=False, echo=lambda s: None, resume=True)
    assert summary["warnings"] == [f"seed 0: {collapse_warning(m['valid'], ['ang', 'hap', 'neu'])}"]
    assert "collapsed to one class" in caplog.text


def test_compare_spells_out_the_difference_and_cautions_with_few_seeds(tmp_path, capsys):
    from merc.cli import main

    for name, wf1 in (("a", [60.0, 62.0, 64.0]), ("b", [59.0, 61.0, 60.0])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"model": name, "corpus": "meld", "seeds": [0, 1, 2],
             "test": {"wf1": {"mean": sum(wf1) / 3, "std": 1.0, "per_seed": wf1}}}))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["compare", a, b]) == 0
    captured = capsys.readouterr()
    assert f"mean diff {a} − {b} +2.00" in captured.out
    assert "only 3 shared seed(s)" in captured.err


def test_evaluate_writes_per_utterance_predictions(generic_corpus, tmp_path):
    import csv

    out = tmp_path / "run"
    run_experiment(_config(generic_corpus, seeds=(0,), epochs=3), out, progress=False,
                   echo=lambda s: None)
    ckpt = out / "seed_0" / "best.ckpt"
    metrics = evaluate_checkpoint(ckpt, predictions=tmp_path / "p.jsonl")
    results = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    utts = [u for r in results for u in r["utterances"]]
    assert len(utts) == metrics["n"] == metrics["data"]["utterances"]
    assert all(u["gold"] in r["labels"] for r in results for u in r["utterances"])
    acc = 100 * sum(u["gold"] == u["label"] for u in utts) / len(utts)
    assert acc == pytest.approx(metrics["acc"])          # the same predictions as the metrics
    evaluate_checkpoint(ckpt, predictions=tmp_path / "p.csv")
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [(r["conversation"], r["utterance"], r["gold"], r["label"]) for r in rows] == [
        (res["id"], u["id"], u["gold"], u["label"]) for res in results for u in res["utterances"]]


def test_seeds_recorded_with_relative_paths_still_resume(generic_corpus, tmp_path, monkeypatch):
    """Runs written before merc stored absolute paths keep their seeds (same folder)."""
    from merc.training import experiment

    monkeypatch.chdir(generic_corpus.parent)
    cfg = _config(generic_corpus.name, seeds=(0,), epochs=2)
    out = tmp_path / "run"
    run_experiment(cfg, out, progress=False, echo=lambda s: None)
    path = out / "seed_0" / "metrics.json"
    m = json.loads(path.read_text())
    m["fingerprint"]["data"]["data_dir"] = generic_corpus.name      # as older merc stored it
    path.write_text(json.dumps(m))
    calls = []
    monkeypatch.setattr(experiment, "train_seed", lambda *a, **k: calls.append(1))
    run_experiment(cfg, out, progress=False, echo=lambda s: None, resume=True)
    assert not calls
