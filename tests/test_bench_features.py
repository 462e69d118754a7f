"""``merc bench accuracy --text-encoder``: every run that reads text once per text-feature source
(frozen default, fine-tuned encoder folders), and tables that say how many encoder fine-tunes
stand behind a row."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from merc.bench.accuracy import BenchRun, plan_runs, run_accuracy_bench
from merc.bench.report import _Results
from merc.bench.suite import FeatureSource, encoder_finetunes, parse_features


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """``root/toy``: a one-epoch, top-layer fine-tune of the bundled MiniLM (a real encoder
    folder, cheap), so that ``ft=root/{corpus}`` finds it for the bench corpus ``toy``."""
    from helpers import write_generic_corpus

    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.finetune.run import FinetuneConfig, finetune_encoder
    from merc.text.input_format import ContextFormat

    data = write_generic_corpus(tmp_path_factory.mktemp("ftcorpus"), n_train=8, n_valid=3,
                                n_test=1)
    corpus = ensure_validation_split(load_corpus("jsonl", data), 0.1, 0)
    root = tmp_path_factory.mktemp("encoders")
    cfg = FinetuneConfig(context=ContextFormat(past=1, future=0, speakers=False, max_tokens=24),
                         train_layers=1, max_epochs=1, batch_size=16, accelerator="cpu")
    finetune_encoder(corpus, cfg, root / "toy", echo=lambda s: None)
    return root



def test_plan_has_every_run_once_per_feature_source(toy_bench, encoders):
    enc = str(encoders / "toy")
    plain = plan_runs(["toy"], ["broad-mamba"])
    runs = plan_runs(["toy"], ["broad-mamba"],
                     features={"toy": [("frozen", None), ("ft", enc)]})
    with_text = [r for r in plain if "text" in r.modalities]
    assert len(runs) == len(plain) + len(with_text)
    # Frozen runs are the plan without the axis (same folders: earlier results resume).
    assert [r.folder for r in runs if r.features == "frozen"] == [r.folder for r in plain]
    ft = [r for r in runs if r.features == "ft"]
    assert {(r.variant, r.modalities) for r in ft} == {(r.variant, r.modalities)
                                                      for r in with_text}
    assert all(r.text == enc and r.folder.endswith("__ft") for r in ft)
    # A run without text is trained once, whatever the sources.
    assert [r.modalities for r in runs if "text" not in r.modalities] == [("audio",)]
    assert len({r.identity for r in runs}) == len({r.folder for r in runs}) == len(runs)


def test_bench_with_a_finetuned_encoder_says_how_many_finetunes(toy_bench, encoders, tmp_path):
    out = tmp_path / "results"
    lines: list[str] = []
    result = run_accuracy_bench("quick", data_dir=toy_bench, out_dir=out, seeds=2,
                                models=["mlp"], tables=["main"], echo=lines.append,
                                features=["frozen", f"ft={encoders}/{{corpus}}"])
    assert not result["failures"], result["failures"]
    assert {r.features for r in result["runs"]} == {"frozen", "ft"}
    assert "with features frozen, ft" in lines[0]
    md = (out / "table1_main.md").read_text()
    assert "| model | features | mod. |" in md
    assert "| mlp | frozen |" in md
    assert "| mlp | ft: 1 encoder fine-tune shared by 2 seeds |" in md
    assert "not repeated per seed" in md
    with open(out / "accuracy.csv") as f:
        rows = {r["features"]: r for r in csv.DictReader(f)}
    assert rows["ft"]["encoder_finetunes"] == "1" and rows["frozen"]["encoder_finetunes"] == ""
    assert rows["ft"]["text_encoder"] == str(encoders / "toy")
    # The fine-tuned run really read the encoder (not the corpus' external vectors).
    summary = json.loads((out / rows["ft"]["run_dir"] / "summary.json").read_text())
    assert summary["feature_spec"]["text"] == str(encoders / "toy")
    frozen = json.loads((out / rows["frozen"]["run_dir"] / "summary.json").read_text())
    assert frozen["feature_spec"]["text"] == "external"
    with open(out / "table1_main.csv") as f:
        assert {r["features"] for r in csv.DictReader(f)} == {"frozen", "ft"}
    assert (out / "confusion" / "toy_mlp_ft.png").exists()


def test_cross_fit_count_and_default_tables(encoders, tmp_path):
    cross = tmp_path / "cross"
    shutil.copytree(encoders / "toy", cross)
    record = json.loads((cross / "merc_encoder.json").read_text())
    record["training"]["cross_fit"] = {"folds": 5, "fold_of": {}}
    (cross / "merc_encoder.json").write_text(json.dumps(record))
    assert encoder_finetunes(str(encoders / "toy")) == 1
    assert encoder_finetunes(str(cross)) == 6
    assert encoder_finetunes(str(tmp_path)) is None  # not a merc encoder folder

    run = BenchRun("toy", "mlp", "full", ("text",), {}, {"main"}, features="cf", text=str(cross))
    frozen = BenchRun("toy", "mlp", "full", ("text",), {}, {"main"})
    res = _Results(tmp_path, [frozen, run], {}, {}, n_seeds=10)
    assert res.feat_md(run) == ["cf: 6 encoder fine-tunes (1 + 5 cross-fit folds) shared by "
                                "10 seeds"]
    assert res.feat_md(frozen) == ["frozen"] and res.feat_csv(run) == ["cf"]
    # Without a features axis the tables have no features column.
    assert not _Results(tmp_path, [frozen], {}, {}, n_seeds=10).axis


def test_features_option_errors_are_one_line(toy_bench, tmp_path):
    assert parse_features(["frozen", "runs/enc-meld", "ft=e/{corpus}"]) == [
        FeatureSource("frozen"), FeatureSource("enc-meld", "runs/enc-meld"),
        FeatureSource("ft", "e/{corpus}")]
    for bad, message in ((["ft=a", "ft=b"], "given twice"), (["frozen=x"], "not 'frozen'"),
                         (["e/{corpus}"], "name this source"), ([], "at least one")):
        with pytest.raises(ValueError, match=message):
            parse_features(bad)
    kw = dict(data_dir=toy_bench, dry_run=True, models=["mlp"])
    with pytest.raises(FileNotFoundError, match=r"--text-encoder ft=.*nope: no such encoder folder"):
        run_accuracy_bench("quick", features=["ft=" + str(tmp_path / "nope")], echo=print, **kw)
    lines: list[str] = []
    plan = run_accuracy_bench("quick", features=["frozen", f"ft={tmp_path}/{{corpus}}-x"],
                              echo=lines.append, **kw)["runs"]
    assert {r.features for r in plan} == {"frozen"}
    assert any("features ft:" in line and "toy runs without it" in line for line in lines)
    with pytest.raises(ValueError, match="data.text= override"):
        run_accuracy_bench("quick", features=[f"ft={tmp_path}"], overrides=["data.text=x"],
                           echo=print, **kw)


def test_cli_features_option(toy_bench, encoders, capsys):
    from merc.cli import main

    argv = ["bench", "accuracy", "--data-dir", str(toy_bench), "--models", "mlp", "--tables", "main",
            "--dry-run", "--text-encoder", f"frozen,ft={encoders}/{{corpus}}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "toy mlp full (text+audio)  [main]" in out
    assert "toy mlp full (text+audio) [ft features]  [main]" in out
    assert main(argv[:-1] + ["ft=/nonexistent/enc"]) == 2
    assert "--text-encoder ft=/nonexistent/enc: no such encoder folder" in capsys.readouterr().err
