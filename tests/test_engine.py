"""End-to-end training on a tiny synthetic corpus: selection on validation, test once, outputs."""

from __future__ import annotations

import json

import pytest
import torch

from merc.config import ExperimentConfig
from merc.engine.checkpoint import evaluate_checkpoint, load_checkpoint
from merc.engine.experiment import run_experiment
from merc.engine.metrics import classification_metrics, mean_std
from merc.engine.stats import paired_test
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
    with pytest.raises(MercInputError, match="cannot load checkpoint safely"):
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
