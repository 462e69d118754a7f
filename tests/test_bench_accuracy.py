"""``merc bench accuracy`` on a tiny synthetic corpus: planning, tables, plots, resumption."""

from __future__ import annotations

import csv
import json

import pytest

from merc.bench import suite
from merc.bench.accuracy import plan_runs, run_accuracy_bench
from merc.bench.suite import BenchCorpus
from merc.bench.report import ACCURACY_COLUMNS


@pytest.fixture
def toy_bench(tmp_path, monkeypatch):
    """A data folder with one generic corpus registered as bench corpus ``toy``."""
    from helpers import write_generic_corpus

    data = tmp_path / "data"
    write_generic_corpus(data / "toy", n_train=10, n_valid=3, n_test=4)
    toy = BenchCorpus("jsonl", "toy", modalities=("text", "audio"),
                      modality_sets=(("text",),),
                      ablations=("w/o PE", "w/o BLS", "w/o PFM", "w/o Mamba", "w/o MEC", "w/o DDM",
                                 "w/o CFM", "w/o CRM"),
                      fusion=True, lnorm=True,
                      overrides=("data.text=external", "train.max_epochs=2", "train.patience=1"))
    monkeypatch.setattr(suite, "BENCH_CORPORA", {"toy": toy})
    return data


def _quiet(_line: str) -> None:
    pass


def test_plan_shares_runs_between_tables(toy_bench):
    runs = plan_runs(["toy"], ["bc-lstm", "broad-mamba"])
    full = [r for r in runs if r.model == "broad-mamba" and r.variant == "full"
            and r.modalities == ("text", "audio")]
    assert len(full) == 1, "the full model is trained once for every table it appears in"
    assert full[0].tables == {"main", "ablation", "modalities", "fusion", "lnorm", "paper",
                              "causal"}
    variants = {r.variant for r in runs if r.model == "broad-mamba"}
    assert {"w/o PE", "w/o BLS", "w/o PFM", "fusion=concat", "fusion=lmf",
            "w/o L_norm"} <= variants
    # "w/o PFM" and "fusion=add" are the same model; planned once.
    add = [r for r in runs if r.options == {"fusion": "add"}]
    assert len(add) == 1 and add[0].tables == {"ablation", "fusion"}
    # bc-LSTM's default run serves Table 1 and sits beside its causal variant.
    assert [r for r in runs if r.model == "bc-lstm"][0].tables == {"main", "causal"}
    assert len({r.folder for r in runs}) == len(runs)
    # The quick suite keeps only the reference model's ablations.
    full_plan = {r.variant for r in plan_runs(["toy"], ["matav"]) if r.model == "matav"}
    quick_plan = {r.variant for r in plan_runs(["toy"], ["matav"], all_ablations=False)}
    assert {"w/o Mamba", "w/o MEC", "paper"} <= full_plan and quick_plan == {"full"}


def test_paper_and_causal_tables_set_each_reading_beside_the_default(toy_bench, tmp_path):
    import csv

    out = tmp_path / "results"
    result = run_accuracy_bench("paper", data_dir=toy_bench, out_dir=out, seeds=2,
                                models=["broad-mamba"], tables=["paper", "causal"],
                                echo=_quiet)
    assert not result["failures"] and len(result["runs"]) == 3     # full, paper, causal
    for table, variant in (("paper", "paper"), ("causal", "causal")):
        rows = list(csv.DictReader((out / f"table_{table}.csv").open()))
        assert [r["variant"] for r in rows] == ["full", variant]
        base, other = rows
        assert base["delta_wf1"] == "" and other["against"] == "full"
        assert float(other["delta_valid_wf1"]) == pytest.approx(
            float(other["valid_wf1_mean"]) - float(base["valid_wf1_mean"]))
        md = (out / f"table_{table}.md").read_text()
        assert "valid W-F1" in md and "Seeds per run: 2" in md


def test_bench_writes_every_table_and_resumes(toy_bench, tmp_path, monkeypatch):
    out = tmp_path / "results"
    kw = dict(data_dir=toy_bench, out_dir=out, seeds=2, models=["mlp", "broad-mamba"],
              echo=_quiet)
    result = run_accuracy_bench("quick", **kw)
    assert not result["failures"]
    for name in ("accuracy.csv", "table1_main.md", "table1_main.csv", "table3_ablation.md",
                 "table3_ablation.csv", "table4_modalities.md", "table4_modalities.csv",
                 "fig5_fusion.md", "fig5_fusion.csv", "fig5_fusion.png", "significance.md",
                 "significance.csv", "fig6_loss_toy.png", "fig7_tsne_toy.png",
                 "confusion/toy_mlp.png", "confusion/toy_broad-mamba.png"):
        assert (out / name).exists(), name
        assert (out / name).stat().st_size > 0, name
    assert not (out / "failures.md").exists()

    with open(out / "accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:len(ACCURACY_COLUMNS)] == ACCURACY_COLUMNS
    assert len(rows) == len(result["runs"])
    for row in rows:
        assert row["status"] == "ok" and row["seeds"] == "2"
        assert 0 <= float(row["wf1_mean"]) <= 100
    # The CSV agrees with the run's own summary.json.
    mlp = next(r for r in rows if r["model"] == "mlp")
    summary = json.loads((out / mlp["run_dir"] / "summary.json").read_text())
    assert float(mlp["wf1_mean"]) == pytest.approx(summary["test"]["wf1"]["mean"], abs=1e-4)
    sig = (out / "significance.csv").read_text().splitlines()
    assert len(sig) == 2 and sig[1].startswith("toy,mlp,broad-mamba,2,")
    labels = summary["label_names"]
    assert all(lab in (out / "table1_main.md").read_text() for lab in labels)
    assert "w/o BLS" in (out / "table3_ablation.md").read_text()

    # Re-running trains nothing: every seed is reused.
    from merc.training import experiment

    def no_training(*a, **k):
        raise AssertionError("a finished seed was retrained")

    monkeypatch.setattr(experiment, "train_seed", no_training)
    again = run_accuracy_bench("quick", **kw)
    assert not again["failures"]
    with open(out / "accuracy.csv") as f:
        assert [r["wf1_mean"] for r in csv.DictReader(f)] == [r["wf1_mean"] for r in rows]


def test_changed_config_is_retrained_and_failures_are_reported(toy_bench, tmp_path,
                                                               monkeypatch):
    out = tmp_path / "results"
    kw = dict(data_dir=toy_bench, out_dir=out, seeds=1, models=["mlp"], echo=_quiet)
    run_accuracy_bench("quick", **kw)
    from merc.training import experiment

    calls = []
    real = experiment.train_seed

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(experiment, "train_seed", counting)
    run_accuracy_bench("quick", overrides=["train.lr=0.002"], **kw)
    assert calls, "a different configuration must not reuse the old result"

    def broken(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(experiment, "train_seed", broken)
    lines: list[str] = []
    result = run_accuracy_bench("quick", overrides=["train.lr=0.003"], data_dir=toy_bench,
                                out_dir=out, seeds=1, models=["mlp"], echo=lines.append)
    assert len(result["failures"]) == 1
    assert any("FAILED" in line and "RuntimeError: boom" in line for line in lines)
    report = (out / "failures.md").read_text()
    assert "toy mlp full" in report and "boom" in report and "second line" not in report
    with open(out / "accuracy.csv") as f:
        row = next(csv.DictReader(f))
    assert row["status"].startswith("failed: RuntimeError: boom") and row["wf1_mean"] == ""


def test_bad_arguments_are_clear(toy_bench, tmp_path):
    with pytest.raises(ValueError, match="unknown suite"):
        run_accuracy_bench("huge", data_dir=toy_bench, echo=_quiet)
    with pytest.raises(ValueError, match="unknown model"):
        run_accuracy_bench("quick", data_dir=toy_bench, models=["nope"], echo=_quiet)
    with pytest.raises(ValueError, match="unknown bench corpus"):
        run_accuracy_bench("quick", data_dir=toy_bench, corpora=["imdb"], echo=_quiet)
    with pytest.raises(FileNotFoundError, match="none of"):
        run_accuracy_bench("quick", data_dir=tmp_path / "empty", echo=_quiet)
    with pytest.raises(ValueError, match="unknown table"):
        run_accuracy_bench("quick", data_dir=toy_bench, tables=["table9"], echo=_quiet)


def test_quick_suite_skips_heavy_models_unless_named(toy_bench):
    quick = run_accuracy_bench("quick", data_dir=toy_bench, dry_run=True, echo=_quiet)["runs"]
    paper = run_accuracy_bench("paper", data_dir=toy_bench, dry_run=True, echo=_quiet)["runs"]
    named = run_accuracy_bench("quick", data_dir=toy_bench, models=["matav"], dry_run=True,
                               echo=_quiet)["runs"]
    assert "matav" not in {r.model for r in quick} and "df-erc" in {r.model for r in quick}
    assert "matav" in {r.model for r in paper} and {r.model for r in named} == {"matav"}


def test_tables_filter_plans_only_their_runs(toy_bench):
    plan = run_accuracy_bench("paper", data_dir=toy_bench, models=["broad-mamba", "df-erc"],
                              tables=["main", "ablation"], dry_run=True, echo=_quiet)["runs"]
    assert all(r.tables <= {"main", "ablation"} and r.tables for r in plan)
    variants = {(r.model, r.variant) for r in plan}
    assert ("broad-mamba", "fusion=concat") not in variants
    assert {("df-erc", v) for v in ("full", "w/o DDM", "w/o CFM", "w/o CRM")} <= variants
    assert all(r.modalities == ("text", "audio") for r in plan)


def test_no_import_cycle_in_bench():
    """accuracy runs the suite and imports report; report and efficiency read the shared plan
    (merc.bench.suite), never accuracy."""
    import inspect

    from merc.bench import efficiency, report

    for module in (report, efficiency):
        assert "merc.bench.accuracy" not in inspect.getsource(module), module.__name__



def test_each_run_reports_its_start_and_seeds_as_they_finish(generic_corpus, tmp_path):
    from merc.bench.accuracy import _execute
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.data.corpus, cfg.data.data_dir, cfg.data.text = "jsonl", str(generic_corpus), "external"
    cfg.data.modalities = ["text", "audio"]
    cfg.model = {"name": "mlp"}
    cfg.train.max_epochs, cfg.seeds = 2, [0, 1]
    lines: list[str] = []
    _execute(cfg.to_dict(), str(tmp_path / "run"), "toy mlp", lines.append)
    assert lines[0] == "  toy mlp: started"
    assert [x.split(":")[1].strip() for x in lines[1:]] == ["seed 0", "seed 1"]


def _numbers(out) -> list[tuple]:
    with open(out / "accuracy.csv") as f:
        return [(r["corpus"], r["model"], r["variant"], r["seeds"], r["wf1_mean"], r["wf1_std"],
                 r["valid_wf1_mean"]) for r in csv.DictReader(f)]



def test_seed_tasks_on_local_workers_and_on_ray_give_the_same_tables(toy_bench, tmp_path):
    """One task per (run, seed): in-process, on 2 local worker processes, and on a local Ray
    instance (2 CPUs, no dashboard) the numbers are the same; a task whose worker dies is
    retried by Ray, and a task that fails is reported in failures.md, never lost."""
    ray = pytest.importorskip("ray")
    kw = dict(data_dir=toy_bench, seeds=2, models=["mlp"], tables=["main"], echo=_quiet)
    run_accuracy_bench("quick", out_dir=tmp_path / "serial", **kw)
    run_accuracy_bench("quick", out_dir=tmp_path / "pool", jobs=2, **kw)
    marker = tmp_path / "died-once"

    def dies_once_then_fails_on_seed_1(cfg_dict, run_dir, label, seed):
        import os

        from merc.bench.accuracy import _execute_seed

        if seed == 1 and not marker.exists():
            marker.touch()
            os._exit(3)                           # the worker process is killed: Ray retries
        if seed == 1 and "crash" in run_dir:
            raise RuntimeError("seed 1 cannot train")
        _execute_seed(cfg_dict, run_dir, label, seed)

    from merc.bench import accuracy

    real = accuracy.run_seed_tasks_ray
    accuracy.run_seed_tasks_ray = lambda tasks, **k: real(
        tasks, task_fn=dies_once_then_fails_on_seed_1, **k)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_accuracy_bench("quick", out_dir=tmp_path / "ray", backend="ray", **kw)
        assert marker.exists() and not result["failures"]        # died once, retried, done
        assert _numbers(tmp_path / "ray") == _numbers(tmp_path / "serial") \
            == _numbers(tmp_path / "pool")
        lines: list[str] = []
        result = run_accuracy_bench("quick", out_dir=tmp_path / "crash", backend="ray",
                                    **{**kw, "echo": lines.append})
        assert len(result["failures"]) == 1
        assert "seed 1: RuntimeError: seed 1 cannot train" in (
            tmp_path / "crash" / "failures.md").read_text()
        assert any("FAILED" in line for line in lines)
    finally:
        accuracy.run_seed_tasks_ray = real
        ray.shutdown()


def test_ablation_table_alone_finds_its_full_model(toy_bench, tmp_path):
    out = tmp_path / "abl"
    result = run_accuracy_bench("paper", data_dir=toy_bench, out_dir=out, seeds=1,
                                models=["df-erc"], tables=["ablation"], echo=_quiet)
    assert not result["failures"]
    text = (out / "table3_ablation.md").read_text()
    assert "w/o CRM" in text and "full" in text and not (out / "table1_main.md").exists()
