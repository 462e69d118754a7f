"""Typed config (YAML, overrides) and the thin CLI over it."""

from __future__ import annotations

import json

import pytest

from merc.cli import main
from merc.config import GENERIC_TRAIN, ExperimentConfig, TrainConfig
from merc.features import FeatureSpec


def test_config_roundtrip_and_overrides(tmp_path):
    cfg = ExperimentConfig()
    cfg = cfg.with_overrides(["train.lr=5e-4", "model.hidden_size=64", "data.modalities=[text]",
                              "seeds=[1, 2]", "train.class_weights=true"])
    assert cfg.train.lr == 5e-4 and cfg.model.hidden_size == 64
    assert cfg.data.modalities == ["text"] and cfg.seeds == [1, 2] and cfg.train.class_weights
    path = tmp_path / "c.yaml"
    cfg.save(path)
    again = ExperimentConfig.load(path)
    assert again == cfg


@pytest.mark.parametrize("bad,match", [
    (["train.lr=fast"], "train.lr: expected float, got 'fast'"),
    (["train.nope=1"], r"train.nope: unknown option; known: \['max_epochs'"),
    (["lr=1"], "section.key=value"),
    (["foo.bar=1"], "unknown config section"),
    (["seeds=3"], "seeds: expected a non-empty list"),
    (["train.max_epochs=true"], "train.max_epochs: expected int, got True"),
    (["model.hidden_size=1e3"], "model.hidden_size: expected int, got 1000.0"),
    (["model.name=broad-mamba", "model.context=bogus"],
     r"model.context: expected one of \['bissm', 'selective'\], got 'bogus'"),
    (["model.name=matav", "model.attn_heads=3"], r"model.attn_heads: must divide proj_dim"),
    (["data.corpus=nope"], "data.corpus: expected one of"),
    (["data.modalities=[text, smell]"], "data.modalities: expected a non-empty subset"),
])
def test_bad_overrides_are_clear(bad, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig().with_overrides(bad)


def test_bad_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {corpus: meld}\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown config section"):
        ExperimentConfig.load(path)


def test_defaults_per_corpus():
    d = ExperimentConfig().data
    d.corpus = "mosi"
    r = d.resolved()
    assert r.modalities == ["text", "audio", "video"] and r.text == "external"
    d.corpus = "meld"
    assert FeatureSpec(**d.resolved().sources()).modalities() == ["text"]


def test_cli_train_evaluate_compare(generic_corpus, tmp_path, capsys):
    common = ["--corpus", "jsonl", "--data-dir", str(generic_corpus), "--modalities",
              "text,audio", "--text-encoder", "external", "--seeds", "2", "train.max_epochs=4",
              "train.batch_size=4", "model.hidden_size=8"]
    assert main(["train", "--model", "mlp", "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["train", "--model", "bc-lstm", "--out", str(tmp_path / "b"), *common]) == 0
    out = capsys.readouterr().out
    assert "validation-selected: test W-F1" in out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["model"] == "bc-lstm" and summary["seeds"] == [0, 1]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "b" / "seed_1" / "best.ckpt"),
                 "--out", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["wf1"] == pytest.approx(summary["test"]["wf1"]["per_seed"][1], abs=1e-6)
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a")]) == 0
    assert "paired over seeds [0, 1]" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["train", "--corpus", "meld", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "no meld corpus" in err
    code = main(["train", "--corpus", "meld", "--model", "nope", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown model 'nope'" in capsys.readouterr().err


def test_cli_models_lists_registry(capsys):
    assert main(["models", "--params"]) == 0
    out = capsys.readouterr().out
    for name in ("mlp", "bc-lstm", "transformer"):
        assert name in out
    assert "params]" in out and "model.hidden_size=" in out
    assert "LSTM hidden size per direction" in out  # each option's docstring is shown


def test_cli_train_help_documents_every_option(capsys):
    import dataclasses

    from merc.config import DataConfig, TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for cls, prefix in ((DataConfig, "data"), (TrainConfig, "train")):
        for f in dataclasses.fields(cls):
            assert f"{prefix}.{f.name}=" in out
    assert "Fraction of train dialogues held out" in out


def test_cli_extract_second_run_uses_cache(generic_corpus, capsys):
    args = ["extract", "--corpus", "jsonl", "--data-dir", str(generic_corpus),
            "--modalities", "audio"]
    assert main(args) == 0 and main(args) == 0
    assert "audio 3-d" in capsys.readouterr().out


def test_model_train_defaults_yield_to_explicit_settings(tmp_path):
    from merc.bench.accuracy import BenchRun, run_config
    from merc.cli import _experiment_config, _parser
    from merc.models import get_entry
    from merc.models.matav import PAPER_TRAIN

    assert get_entry("matav").train_defaults == PAPER_TRAIN
    assert get_entry("bc-lstm").train_defaults == {}
    cfg = ExperimentConfig()
    cfg.model = {"name": "matav"}                # the README's Python API
    assert cfg.paper_train_settings() == PAPER_TRAIN
    t = cfg.resolved().train
    assert (t.lr, t.batch_size, t.weight_decay, t.max_epochs) == (1e-4, 64, 1e-5, 100)
    cfg.train.lr = 3e-3                          # set on purpose in Python: wins
    assert cfg.resolved().train.lr == 3e-3 and cfg.resolved().train.batch_size == 64

    # An override and a config file's train section both win over the paper's values.
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: matav}\ntrain: {batch_size: 8}\n")
    args = _parser().parse_args(["train", "--config", str(path), "--corpus", "iemocap",
                                 "--out", str(tmp_path), "train.lr=0.003"])
    t = _experiment_config(args).resolved().train
    assert (t.lr, t.batch_size, t.weight_decay) == (0.003, 8, 1e-5)
    # Other models keep the generic defaults.
    args = _parser().parse_args(["train", "--corpus", "iemocap", "--model", "bc-lstm",
                                 "--out", str(tmp_path)])
    assert _experiment_config(args).resolved().train == TrainConfig().resolved()
    assert TrainConfig().resolved().lr == GENERIC_TRAIN["lr"]

    run = BenchRun("iemocap", "matav", "full", ("text", "audio"), {})
    t = run_config(run, tmp_path, 1, None, overrides=["train.max_epochs=3"]).resolved().train
    assert (t.lr, t.batch_size, t.max_epochs) == (1e-4, 64, 3)


@pytest.mark.parametrize("bad,key", [(["--model", "bc-lstm", "model.hidden_size=1e3"],
                                      "model.hidden_size: expected int, got 1000.0"),
                                     (["--model", "broad-mamba", "model.context=bogus"],
                                      "model.context: expected one of")])
def test_config_errors_come_first_in_one_line(tmp_path, capsys, bad, key):
    """A wrong option exits 2 with one line naming its key, before any data is read (the data
    folder does not even exist). (No wall-clock bound: a timed unit test fails on a busy machine;
    that the check precedes any data work is shown by the missing folder and the absent run.)"""
    code = main(["train", "--corpus", "iemocap", "--data-dir", str(tmp_path / "nonexistent"),
                 "--out", str(tmp_path / "R"), *bad])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and key in err, err
    assert not (tmp_path / "R").exists()


def test_variant_flag_sets_the_registered_options_and_overrides_win(tmp_path, capsys):
    import argparse

    from merc.cli.args import experiment_config
    from merc.models import get_entry

    def cfg(*argv, model="broad-mamba"):
        args = argparse.Namespace(config=None, corpus="iemocap", data_dir=None, text=None,
                                  audio=None, video=None, cache_dir=None, modalities=None,
                                  model=model, variant="paper", seeds=None, overrides=list(argv))
        return experiment_config(args)

    paper = cfg()
    for key, value in get_entry("broad-mamba").variants["paper"].items():
        assert getattr(paper.model, key) == value
    assert cfg("model.pe_scale=0.5").model.pe_scale == 0.5          # key=value still wins
    code = main(["train", "--corpus", "iemocap", "--data-dir", str(tmp_path / "none"),
                 "--model", "mlp", "--variant", "paper", "--out", str(tmp_path / "R")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not a variant of mlp" in err, err


def test_cli_and_python_api_resolve_the_same_config(generic_corpus, tmp_path, capsys):
    """The README's Python API (``cfg.model = {"name": "matav"}``) and ``merc train`` run with the
    same resolved config, the paper's training settings included."""
    from merc.training.experiment import run_experiment

    small = {"proj_dim": 8, "attn_heads": 2, "attn_layers": 1, "attn_ffn": 0, "fused_dim": 8,
             "d_model": 8, "queue_size": 16}
    assert main(["train", "--corpus", "jsonl", "--data-dir", str(generic_corpus),
                 "--text-encoder", "external", "--model", "matav", "--out", str(tmp_path / "cli"),
                 "train.max_epochs=1", *(f"model.{k}={v}" for k, v in small.items())]) == 0
    assert "using its paper's training settings" in capsys.readouterr().out

    cfg = ExperimentConfig()
    cfg.data.corpus, cfg.data.data_dir, cfg.data.text = "jsonl", str(generic_corpus), "external"
    cfg.model = {"name": "matav", **small}
    cfg.train.max_epochs = 1
    run_experiment(cfg, tmp_path / "api", echo=lambda line: None)

    cli, api = ((tmp_path / d / "config.yaml").read_text() for d in ("cli", "api"))
    assert cli == api
    saved = ExperimentConfig.load(tmp_path / "api" / "config.yaml")
    assert (saved.train.lr, saved.train.batch_size, saved.train.max_epochs) == (1e-4, 64, 1)
    assert cfg.train.lr is None                  # run_experiment does not modify its argument


def test_corpus_choices_and_defaults_come_from_the_registry():
    from merc.cli import _parser
    from merc.config import corpus_defaults
    from merc.data.corpora import get_corpus, list_corpora

    train = next(a for a in _parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "corpus")
    assert list(train.choices) == list_corpora()
    assert corpus_defaults()["mosi"] == {"modalities": ["text", "audio", "video"],
                                         "text": "external"}
    assert get_corpus("meld").takes_label and not get_corpus("iemocap").takes_label
