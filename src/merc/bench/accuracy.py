"""``merc bench accuracy``: the seed papers' accuracy tables as one resumable command.

A *suite* is a list of runs (corpus x model x variant x modalities), each trained over the
suite's seeds with :func:`merc.training.experiment.run_experiment` -- validation-selected, test
evaluated once per seed. Runs are planned from :data:`merc.bench.suite.BENCH_CORPORA` (which
corpora, which modality subsets and which ablations apply) and each model's registered variants
(``register_model(..., variants=...)``: its ablation switches); every registered model enters the
main table.

Outputs under ``results/<suite>/`` (how to read them: docs/bench.md):

* ``accuracy.csv`` -- one row per run: ``corpus, model, variant, modalities, seeds, wf1_mean,
  wf1_std, acc_mean, acc_std`` (then extra columns). Stable; scripts may depend on it.
* ``table1_main.{md,csv}`` -- per corpus, every model with per-class F1, W-F1 and accuracy
  (the paper's Table 1).
* ``table3_ablation.{md,csv}`` -- Broad Mamba without PE / BLS / PFM (Table 3) and the other
  models' ablation switches.
* ``table4_modalities.{md,csv}`` -- Broad Mamba on every modality subset (Table 4).
* ``fig5_fusion.{md,csv,png}`` -- fusion strategies add / concat / LMF / PFM (Fig. 5).
* ``fig6_loss_<corpus>.png`` -- training and validation cross-entropy per epoch with and without
  ``L_norm`` (Fig. 6; seed ``seeds[0]``).
* ``fig7_tsne_<corpus>.png`` -- t-SNE of Broad Mamba's fused test representations (Fig. 7).
* ``confusion/<corpus>_<model>.png`` -- test confusion matrices summed over seeds.
* ``significance.{md,csv}`` -- paired t-test and Wilcoxon test of each model against Broad Mamba
  over the shared seeds (p-values need >= 2 seeds; the quick suite has one).
* ``failures.md`` -- every run that failed, with its one-line error (absent when none failed).
* ``runs/<corpus>/<run>/`` -- the ordinary ``merc train`` run folders.

Re-running the command skips every seed already finished with the same configuration (see
:func:`merc.training.experiment.run_fingerprint`) and rebuilds the tables from the run folders.

Features axis (``--text-encoder frozen,ft=encoders/{corpus}``): every planned run that reads text is
done once per text-feature source -- the corpus' default (``frozen``: the bundled MiniLM, MOSI's
shipped vectors) and each fine-tuned encoder folder (``merc finetune``); runs without text are
planned once. The tables then gain a features column that says how many encoder fine-tunes
stand behind a row and that they are shared by the row's seeds.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from merc.bench import suite as bench_suite
from merc.bench.suite import (CORPUS_PLACEHOLDER, FROZEN, FULL, READING_TABLES, REFERENCE_MODEL,
                              parse_features)
from merc.config import ExperimentConfig, default_data_dir

SUITE_SEEDS = {"quick": 1, "paper": 5}
"""Seeds per suite: ``quick`` is a smoke run of every table (and only the reference model's
ablations); ``paper`` is the reportable one."""

QUICK_SKIPS = ("matav",)
"""Models the quick suite leaves out unless ``--models`` names them: MaTAV (3.9M parameters, six
attention layers at width 256, up to the paper's 100 epochs at lr 1e-4) took 7 min 42 s for one
IEMOCAP seed on one CPU core, and MELD is larger: with it the quick suite would overrun its
15-minute budget. The paper suite runs every registered model."""

FUSION_VARIANTS = ("fusion=add", "fusion=concat", "fusion=lmf")
TABLES = ("main", "ablation", "modalities", "fusion", "lnorm", "paper", "causal")
"""What a run can be planned for: Table 1, Table 3, Table 4, Fig. 5, the Fig. 6 L_norm curves,
and merc's two comparisons with each model's default
(:data:`merc.bench.suite.READING_TABLES`)."""


@dataclass
class BenchRun:
    """One planned run; several tables may share it (e.g. the full model)."""

    corpus: str
    model: str
    variant: str
    modalities: tuple[str, ...]
    options: dict[str, Any]
    tables: set[str] = field(default_factory=set)
    features: str = FROZEN
    """Text-feature source (:class:`merc.bench.suite.FeatureSource` name); runs without text
    keep :data:`~merc.bench.suite.FROZEN`."""
    text: str | None = None
    """Encoder folder used as ``data.text`` (``None``: the corpus' default text features)."""

    @property
    def identity(self) -> tuple:
        return (self.corpus, self.model, json.dumps(self.options, sort_keys=True),
                self.modalities, self.features)

    @property
    def folder(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.variant.lower()).strip("-")
        # Frozen-feature runs keep the folder names they had before the features axis existed.
        tail = "" if self.features == FROZEN else f"__{self.features}"
        return f"{self.model}__{slug}__{'+'.join(self.modalities)}{tail}"

    @property
    def label(self) -> str:
        tail = "" if self.features == FROZEN else f" [{self.features} features]"
        return f"{self.corpus} {self.model} {self.variant} ({'+'.join(self.modalities)}){tail}"


def plan_runs(corpora: Sequence[str], models: Sequence[str], *,
              all_ablations: bool = True,
              features: dict[str, list[tuple[str, str | None]]] | None = None) -> list[BenchRun]:
    """All runs of a suite, de-duplicated (a run shared by several tables is trained once).

    ``all_ablations=False`` keeps only the reference model's ablations and leaves out the
    ``paper`` and ``causal`` tables (the quick suite: every other table and plot is still
    written, in 7 min 9 s measured on 2 cores with ``--jobs 2``).

    ``features`` maps a corpus to its text-feature sources ``[(name, encoder folder or None for
    frozen)]`` (default: frozen only): every run that reads text is planned once per source; a
    run without text once, as frozen, whatever the sources."""
    runs: dict[tuple, BenchRun] = {}

    from merc.models import get_entry

    def add(corpus: str, model: str, variant: str, mods: tuple[str, ...], table: str) -> None:
        options = dict(get_entry(model).variants.get(variant, {}))
        run = BenchRun(corpus, model, variant, mods, options)
        run = runs.setdefault(run.identity, run)
        run.tables.add(table)

    for name in corpora:
        bc = bench_suite.BENCH_CORPORA[name]
        mods = bench_suite.default_modalities(bc)
        for model in models:
            add(name, model, FULL, mods, "main")
            variants = get_entry(model).variants
            for ablation in bc.ablations:
                if ablation in variants and (all_ablations or model == REFERENCE_MODEL):
                    add(name, model, FULL, mods, "ablation")
                    add(name, model, ablation, mods, "ablation")
            for table, variant in READING_TABLES.items():
                if variant in variants and all_ablations:     # the paper suite's tables
                    add(name, model, FULL, mods, table)
                    add(name, model, variant, mods, table)
            if model == REFERENCE_MODEL:
                for subset in bc.modality_sets:
                    add(name, model, FULL, subset, "modalities")
                if bc.modality_sets:
                    add(name, model, FULL, mods, "modalities")
                if bc.fusion:
                    add(name, model, FULL, mods, "fusion")
                    for v in FUSION_VARIANTS:
                        add(name, model, v, mods, "fusion")
                if bc.lnorm:
                    add(name, model, FULL, mods, "lnorm")
                    add(name, model, "w/o L_norm", mods, "lnorm")
    planned: list[BenchRun] = []
    for run in runs.values():
        sources = (features or {}).get(run.corpus, [(FROZEN, None)])
        if "text" not in run.modalities:
            planned.append(run)  # the text features cannot change it: trained once
            continue
        for source, folder in sources:
            planned.append(run if source == FROZEN else
                           replace(run, tables=set(run.tables), features=source, text=folder))
    return planned


def run_config(run: BenchRun, data_dir: Path, seeds: int, cache_dir: str | None,
               overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The run's config; the model paper's training settings are filled in by
    :func:`~merc.training.experiment.run_experiment`, so ``overrides`` always win."""
    bc = bench_suite.BENCH_CORPORA[run.corpus]
    settings = {"data": {"corpus": bc.kind, "data_dir": str(data_dir / bc.subdir),
                         "modalities": list(run.modalities), "cache_dir": cache_dir},
                "model": {"name": run.model, **run.options}, "seeds": list(range(seeds)),
                "train": {"progress": False}}
    cfg = ExperimentConfig().with_overrides(list(bc.overrides) + list(overrides),
                                            settings=settings)
    if run.text is not None:  # last: the fine-tuned encoder replaces any default text source
        cfg = cfg.with_overrides(settings={"data": {"text": run.text}})
    return cfg


def _execute(cfg_dict: dict, run_dir: str, label: str = "",
             say: Callable[[str], None] | None = None) -> dict:
    """Worker body (also used in-process): train/resume one run, return its summary.

    Says ``  <label>: started`` and each seed's result line as it comes (a run of 5 seeds can
    take many minutes; the bench's own line only follows the whole run) through ``say``, or
    ``print`` in a worker process (workers share the parent's standard output)."""
    from merc.training.experiment import run_experiment

    say = say or (lambda line: print(line, flush=True))

    def echo(line: str) -> None:
        if line.startswith("seed "):
            say(f"  {label}: {line}")

    say(f"  {label}: started")
    cfg = ExperimentConfig.from_dict(cfg_dict)
    return run_experiment(cfg, run_dir, progress=False, echo=echo, resume=True)


def _execute_seed(cfg_dict: dict, run_dir: str, label: str, seed: int) -> None:
    """Worker body of one (run, seed) task: train (or reuse) that seed in ``run_dir``."""
    _execute({**cfg_dict, "seeds": [seed]}, run_dir, f"{label} seed {seed}")


def _run_seed_tasks_pool(tasks: list, jobs: int) -> dict[tuple, str]:
    """Seed tasks on ``jobs`` local worker processes; returns run identity -> first error."""
    errors: dict[tuple, str] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_execute_seed, cfg.to_dict(), str(run_dir), run.label, seed): run
                   for run, cfg, run_dir, seed in tasks}
        for fut in as_completed(futures):
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - reported with the run, never fatal
                errors.setdefault(futures[fut].identity, _one_line(e))
    return errors


def run_seed_tasks_ray(tasks: list, *, address: str | None = None,
                       echo: Callable[[str], None] = print,
                       task_fn: Callable[..., None] | None = None) -> dict[tuple, str]:
    """Seed tasks as Ray tasks: one CPU each (plus one GPU when the run trains on a GPU).

    Connects to the cluster at ``address``, or starts a local Ray instance (no dashboard) when
    none is given and none is running. A task whose worker process dies is retried by Ray (up
    to twice); an exception in the training code is not retried. Either way the run is
    reported as failed with the error, never dropped. ``task_fn`` replaces the task body
    (tests). Returns run identity -> first error.
    """
    from merc.raycluster import connect

    ray = connect(address)
    body = ray.remote(max_retries=2)(task_fn or _execute_seed)
    refs = {}
    for run, cfg, run_dir, seed in tasks:
        gpu = cfg.train.accelerator in ("gpu", "cuda")
        ref = body.options(num_cpus=1, num_gpus=1 if gpu else 0).remote(
            cfg.to_dict(), str(run_dir), run.label, seed)
        refs[ref] = (run, seed)
    echo(f"ray: {len(refs)} seed task(s) on {ray.cluster_resources().get('CPU', 0):.0f} CPU(s)")
    errors: dict[tuple, str] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        run, seed = refs[done[0]]
        try:
            ray.get(done[0])
            echo(f"  {run.label}: seed {seed} done")
        except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
            cause = getattr(e, "cause", None) or e
            errors.setdefault(run.identity, f"seed {seed}: {_one_line(cause)}")
            echo(f"  {run.label}: seed {seed} FAILED: {_one_line(cause)}")
    return errors


def run_accuracy_bench(suite: str = "quick", *, data_dir: str | Path | None = None,
                       out_dir: str | Path | None = None, seeds: int | None = None,
                       corpora: Sequence[str] | None = None, models: Sequence[str] | None = None,
                       jobs: int = 1, cache_dir: str | None = None,
                       tables: Sequence[str] | None = None,
                       overrides: Sequence[str] = (), dry_run: bool = False,
                       features: Sequence[str] | None = None,
                       backend: str = "local", address: str | None = None,
                       echo: Callable[[str], None] = print) -> dict:
    """Plan, run (or resume) and tabulate a suite. Returns ``{"runs", "failures", "out_dir"}``.

    Args:
        suite: ``quick`` (1 seed) or ``paper`` (5 seeds).
        backend: ``local`` (this machine: in-process, or ``jobs`` worker processes) or ``ray``
            (each (run, seed) a Ray task with its own CPU/GPU request, on the Ray cluster at
            ``address`` or a local one started here; run folders must be on a file system
            every Ray node sees). Both resume finished seeds and write the same tables.
        data_dir: Folder holding the corpora's folders (default ``$MERC_DATA_DIR``).
        out_dir: Output folder (default ``results/<suite>``).
        seeds: Override the suite's seed count (seeds ``0 .. seeds-1``).
        corpora, models: Subsets (default: every corpus of ``bench_suite.BENCH_CORPORA`` whose folder
            exists, and every registered model; the quick suite skips :data:`QUICK_SKIPS`).
        jobs: Runs trained in parallel processes (each single-threaded).
        tables: Keep only the runs of these tables (of :data:`TABLES`; default all).
        overrides: Dotted config overrides applied to every run (recorded in its config).
        dry_run: Only print the plan.
        features: Text-feature sources (see :func:`merc.bench.suite.parse_features`):
            ``frozen`` and ``NAME=ENC_DIR`` (``{corpus}`` in ``ENC_DIR`` is replaced by each
            corpus' name; a corpus without that folder runs frozen only). Default: frozen only,
            exactly the suite without a features axis.
    """
    from merc.models import list_models

    if suite not in SUITE_SEEDS:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SUITE_SEEDS)}")
    n_seeds = seeds if seeds is not None else SUITE_SEEDS[suite]
    if n_seeds < 1:
        raise ValueError("--seeds must be >= 1")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    out = Path(out_dir) if out_dir is not None else Path("results") / suite
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; choose local or ray")
    if address and backend != "ray":
        raise ValueError("--address is for --backend ray")
    registered = list_models()
    if not models:
        models = [m for m in registered if suite != "quick" or m not in QUICK_SKIPS]
    models = list(models)
    unknown = [m for m in models if m not in registered]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; registered: {registered}")
    if corpora:
        bad = [c for c in corpora if c not in bench_suite.BENCH_CORPORA]
        if bad:
            raise ValueError(f"unknown bench corpus {bad}; choose from "
                             f"{sorted(bench_suite.BENCH_CORPORA)}")
        corpora = list(corpora)
    else:
        corpora = [c for c, bc in bench_suite.BENCH_CORPORA.items() if (data_dir / bc.subdir).exists()]
        missing = [c for c in bench_suite.BENCH_CORPORA if c not in corpora]
        if not corpora:
            raise FileNotFoundError(f"{data_dir}: none of {sorted(bench_suite.BENCH_CORPORA)} found; "
                                    "point "
                                    "--data or $MERC_DATA_DIR at the data folder")
        if missing:
            echo(f"not found under {data_dir}, skipped: {', '.join(missing)}")
    sources = _feature_sources(features, corpora, overrides, echo)
    runs = plan_runs(corpora, models, all_ablations=suite != "quick", features=sources)
    if tables:
        bad = sorted(set(tables) - set(TABLES))
        if bad:
            raise ValueError(f"unknown table(s) {bad}; choose from {list(TABLES)}")
        for run in runs:
            run.tables &= set(tables)
        runs = [run for run in runs if run.tables]
    axis = "" if sources is None else " with features " + ", ".join(
        dict.fromkeys(name for per in sources.values() for name, _ in per))
    echo(f"suite {suite}: {len(runs)} runs x {n_seeds} seed(s) on {', '.join(corpora)}{axis} "
         f"-> {out}")
    if dry_run:
        for run in runs:
            echo(f"  {run.label}  [{', '.join(sorted(run.tables))}]")
        return {"runs": runs, "failures": {}, "out_dir": out}

    summaries: dict[tuple, dict] = {}
    failures: dict[tuple, str] = {}
    jobs_todo = []
    for run in runs:
        cfg = run_config(run, data_dir, n_seeds, cache_dir, overrides)
        run_dir = out / "runs" / run.corpus / run.folder
        jobs_todo.append((run, cfg, run_dir))

    def finished(i: int, run: BenchRun, result: dict | None, error: str | None) -> None:
        elapsed = time.perf_counter() - started
        if error is not None:
            failures[run.identity] = error
            echo(f"[{i}/{len(runs)}] FAILED {run.label}: {error} (t+{elapsed:.0f} s)")
        else:
            summaries[run.identity] = result
            t = result["test"]["wf1"]
            echo(f"[{i}/{len(runs)}] {run.label}: test W-F1 {t['mean']:.2f} ± {t['std']:.2f} "
                 f"(valid {result['valid']['wf1']['mean']:.2f}; t+{elapsed:.0f} s)")

    started = time.perf_counter()
    if jobs <= 1 and backend == "local":
        for i, (run, cfg, run_dir) in enumerate(jobs_todo, 1):
            try:
                result, error = _execute(cfg.to_dict(), str(run_dir), run.label, echo), None
            except Exception as e:  # noqa: BLE001 - a failed run is reported, never fatal
                result, error = None, _one_line(e)
            finished(i, run, result, error)
    else:
        # One task per (run, seed), so the seeds of one long run spread over the workers too;
        # then each run's summary is gathered in this process from its finished seeds.
        tasks = [(run, cfg, run_dir, seed) for run, cfg, run_dir in jobs_todo
                 for seed in cfg.seeds]
        if backend == "ray":
            errors = run_seed_tasks_ray(tasks, address=address, echo=echo)
        else:
            errors = _run_seed_tasks_pool(tasks, jobs)
        for i, (run, cfg, run_dir) in enumerate(jobs_todo, 1):
            if run.identity in errors:
                finished(i, run, None, errors[run.identity])
                continue
            try:
                result, error = _execute(cfg.to_dict(), str(run_dir), run.label,
                                         lambda line: None), None
            except Exception as e:  # noqa: BLE001
                result, error = None, _one_line(e)
            finished(i, run, result, error)
    echo(f"trained/resumed {len(runs)} runs in {time.perf_counter() - started:.0f} s")

    from merc.bench.report import write_accuracy_report

    written = write_accuracy_report(out, runs, summaries, failures, n_seeds, echo=echo,
                                    overrides=overrides)
    echo("wrote " + ", ".join(str(p.relative_to(out)) for p in written) + f" in {out}")
    if failures:
        echo(f"{len(failures)} run(s) failed; see {out / 'failures.md'}")
    return {"runs": runs, "summaries": summaries, "failures": failures, "out_dir": out}


def _feature_sources(features: Sequence[str] | None, corpora: Sequence[str],
                     overrides: Sequence[str], echo: Callable[[str], None]
                     ) -> dict[str, list[tuple[str, str | None]]] | None:
    """Per corpus, the ``(name, encoder folder)`` sources of ``--text-encoder`` (``None``: frozen
    only). A folder without ``{corpus}`` must exist; with it, a corpus lacking its folder is
    skipped for that source (said in one line)."""
    if not features:
        return None
    parsed = parse_features(list(features))
    if any(o.startswith("data.text=") for o in overrides) and parsed != [
            bench_suite.FeatureSource(FROZEN)]:
        raise ValueError("--text-encoder and a data.text= override both choose the text features; "
                         "give the encoders with --text-encoder only")
    out: dict[str, list[tuple[str, str | None]]] = {c: [] for c in corpora}
    for source in parsed:
        for corpus in corpora:
            folder = source.folder(corpus)
            if folder is not None and not Path(folder).expanduser().is_dir():
                if CORPUS_PLACEHOLDER not in (source.encoder or ""):
                    raise FileNotFoundError(f"--text-encoder {source.name}={folder}: no such "
                                            "encoder folder")
                echo(f"features {source.name}: {folder} not found, {corpus} runs without it")
                continue
            out[corpus].append((source.name, folder))
    return out


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    loc = f" ({Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(e).__name__}: {msg[0] if msg else ''}{loc}"
