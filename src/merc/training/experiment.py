"""The honest loop over seeds: corpus -> cached features -> model -> validation-selected results.

:func:`run_experiment` resolves the config (per-corpus data defaults, the model paper's training
settings for every unset field), prepares the data once (:mod:`merc.training.prepare`), trains each
seed with :func:`merc.training.trainer.train_seed` (the checkpoint with the best validation
selection metric, ``train.metric``, W-F1 by default; test evaluated exactly once on it) and
writes ``summary.json``: mean +- std over seeds, per-seed values kept.
Resuming reuses a finished seed only when its :func:`run_fingerprint` matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from merc._version import __version__
from merc.config import ExperimentConfig, absolute_local_paths
from merc.training.prepare import PreparedData, prepare_data
from merc.training.interrupt import Interrupted
from merc.metrics import collapse_warning, mean_std
from merc.training.provenance import data_block
from merc.training.trainer import train_seed
from merc.errors import MercInputError
from merc.text.record import RECORD_FILE, is_encoder_folder
from merc.fileio import write_json

log = logging.getLogger(__name__)


def summarize(cfg: ExperimentConfig, prepared: PreparedData, results: list[dict]) -> dict:
    """The ``summary.json`` contract: metrics in percent, mean/std/per-seed."""
    labels = prepared.corpus.label_names
    key = cfg.train.selection.key
    test = {k: mean_std([r["test"][k] for r in results])
            for k in dict.fromkeys(("wf1", "acc", "macro_f1", key))}
    test["per_class_f1"] = {lab: mean_std([r["test"]["per_class_f1"][lab] for r in results])
                            for lab in labels}
    summary = {
        "model": cfg.model_name, "corpus": prepared.corpus.name, "modalities": prepared.modalities,
        "seeds": [r["seed"] for r in results], "params": results[0]["params"],
        "valid": {k: mean_std([r["valid"][k] for r in results])
                  for k in dict.fromkeys(("wf1", "acc", key))},
        "test": test,
        # What chose each seed's checkpoint; its mean ± std is under valid[key] and test[key].
        "selection_metric": cfg.train.selection.to_dict(),
        "train_seconds": {k: v for k, v in mean_std([r["train_seconds"] for r in results]).items()
                          if k != "std"},
        "seconds_to_best": {k: v for k, v in mean_std([r["seconds_to_best"] for r in results])
                            .items() if k != "std"},
        "label_names": labels, "valid_split": prepared.corpus.valid_split,
        "feature_spec": {k: v for k, v in prepared.spec.to_dict().items() if k != "stats"},
        "merc_version": __version__, "fingerprint": run_fingerprint(cfg),
        # Corpus, split sizes and per-split fingerprints: `merc compare` refuses other corpora.
        "data": data_block(prepared.corpus),
    }
    calibrated = [r["calibration"] for r in results if r.get("calibration")]
    if calibrated and len(calibrated) == len(results):
        # ECE in percent here, like every other figure of the summary.
        summary["calibration"] = {
            "temperature": mean_std([c["temperature"] for c in calibrated]),
            "bins": calibrated[0]["bins"],
            **{f"{split}_ece_{when}": mean_std([100 * c[split][f"ece_{when}"]
                                                for c in calibrated])
               for split in ("valid", "test") for when in ("before", "after")}}
    return summary


def _ece_note(result: dict) -> str:
    """`` ECE 12.3->3.4% (T 1.52)`` for a calibrated seed's line, else ``""``."""
    c = result.get("calibration")
    if not c:
        return ""
    return (f"  test ECE {100 * c['test']['ece_before']:.1f}->{100 * c['test']['ece_after']:.1f}%"
            f" (T {c['temperature']:.2f})")


def run_fingerprint(cfg: ExperimentConfig) -> dict[str, Any]:
    """What determines a seed's result: every section of the *resolved* config (the model's full
    config included), the merc version and, when ``data.text`` is a merc encoder folder, a digest
    of its record (a re-fine-tuned folder is a new encoder) -- not the seed list, nor the fields a
    section lists in ``NOT_IN_FINGERPRINT`` (cache folder, progress bars), nor those of
    ``FINGERPRINT_IF_SET`` at their default. Resuming reuses a seed only when its stored
    fingerprint equals this one, so a changed default never mixes in."""
    d = cfg.resolved().to_dict()
    for f in type(cfg).__dataclass_fields__.values():
        skip = getattr(type(getattr(cfg, f.name)), "NOT_IN_FINGERPRINT", ())
        if skip == ("*",):  # a section that does not influence training
            d.pop(f.name)
        elif skip:
            d[f.name] = {k: v for k, v in d[f.name].items() if k not in skip}
        for k, default in getattr(type(getattr(cfg, f.name)), "FINGERPRINT_IF_SET", {}).items():
            if d.get(f.name, {}).get(k) == default:
                del d[f.name][k]
    d.pop("seeds", None)
    d["merc_version"] = __version__
    text = (d.get("data") or {}).get("text")
    if is_encoder_folder(text):
        # The folder's path alone would let a resumed run (or the bench) reuse seeds trained on
        # an encoder since fine-tuned again in place; its record changes with every fine-tune.
        record = Path(text).expanduser() / RECORD_FILE
        d["text_encoder_record"] = hashlib.sha256(record.read_bytes()).hexdigest()[:16]
    return json.loads(json.dumps(d))  # plain JSON types, comparable with what was read back


def _finished_seed(seed_dir: Path, fingerprint: dict) -> dict | None:
    """The stored result of a completed seed with the same fingerprint, else ``None``."""
    path = seed_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    # A hand-edited or foreign metrics.json is "not finished" (the seed is retrained), never a
    # KeyError traceback.
    if isinstance(result, dict) and isinstance(result.get("fingerprint"), dict):
        result["fingerprint"] = _absolute_paths(result["fingerprint"])
    if (not isinstance(result, dict) or result.get("fingerprint") != fingerprint
            or not isinstance(result.get("checkpoint"), str)
            or not (seed_dir / result["checkpoint"]).is_file()):
        return None
    return result


def _absolute_paths(fingerprint: dict) -> dict:
    """A stored fingerprint with its local paths made absolute as :meth:`DataConfig.resolved`
    now does: seeds recorded before merc stored absolute paths (same folder, typed relative)
    are still recognised when the command is run again from the same directory."""
    data = fingerprint.get("data")
    if not isinstance(data, dict):
        return fingerprint
    return {**fingerprint, "data": absolute_local_paths(data)}


def check_finite_features(prepared: PreparedData) -> None:
    """Refuse features that would train a NaN model, naming the utterance (one line).

    Loaders check the values they read, but extracted and cached features, and the
    normalisation applied to all of them, enter here; a single NaN row would spread through a
    dialogue model's context to every prediction. Rows an extractor could not compute are
    zero-filled and marked missing before this point, so anything non-finite here is a fault.
    """
    import numpy as np

    corpus = prepared.corpus
    for c in corpus.conversations:
        for m, arr in c.features.items():
            bad = ~np.isfinite(np.asarray(arr, dtype=np.float64))
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                source = getattr(prepared.spec, m, None)
                raise MercInputError(
                    corpus.source, f"non-finite value (NaN/inf) in the {m} features "
                    f"({source}) entering training; a corrupt feature file or cache entry?",
                    dialogue=c.id, utterance=c.utterance_name(i), field=m)


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, *,
                   progress: bool | None = None, echo=print, resume: bool = False) -> dict:
    """Train every seed of ``cfg`` and write ``out_dir/summary.json`` (+ one folder per seed).

    ``cfg`` is not modified: the run uses (and saves as ``config.yaml``) ``cfg.resolved()``, so
    the model paper's training settings fill the unset ``train`` fields here, for the CLI and the
    Python API alike; a value set on purpose always wins.

    Returns the summary dict. ``echo`` receives one human-readable line per finished seed.
    With ``resume``, a seed whose folder already holds a finished result for the same
    :func:`run_fingerprint` is read back instead of retrained (its test split is not re-evaluated).
    """
    # Re-validate: a section edited in Python (cfg.train.lr = "fast") fails here, naming the key.
    cfg = ExperimentConfig.from_dict(cfg.to_dict())
    paper = cfg.paper_train_settings()
    if paper:
        echo(f"{cfg.model_name}: using its paper's training settings "
             + " ".join(f"train.{k}={v}" for k, v in paper.items())
             + " (override any with train.<name>=...)")
    cfg = cfg.resolved()
    out_dir = Path(out_dir)
    if progress is None:
        progress = cfg.train.progress if cfg.train.progress is not None else sys.stderr.isatty()
    # Data-parallel training (train.devices > 1) runs this whole function in every process;
    # only the first prints and writes (Lightning sets the rank from the launcher's env).
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    lead = rank_zero_only.rank == 0
    if not lead:
        echo = lambda line: None  # noqa: E731
    prepared = prepare_data(cfg.data, progress=progress)
    check_finite_features(prepared)
    if not prepared.corpus.label_names:
        # Otherwise the first complaint would be about train.ignore_labels, which is not set.
        raise MercInputError(prepared.corpus.source, "no utterance has a label; training needs "
                             "labelled train, validation and test dialogues", field="label")
    selection = cfg.train.selection
    selection.kept(prepared.corpus.label_names)  # a wrong train.ignore_labels fails right here
    counts = prepared.corpus.counts()
    echo(f"{prepared.corpus.name}: " + ", ".join(
        f"{s} {v['dialogues']} dialogues/{v['utterances']} utterances" for s, v in counts.items())
        + f"; modalities {prepared.modalities} dims {prepared.input_dims}; "
        f"validation {prepared.corpus.valid_split}")
    # Created only now: input that fails to load or validate leaves nothing behind.
    out_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        cfg.save(out_dir / "config.yaml")
    results = []
    fingerprint = run_fingerprint(cfg)

    def chosen(m: dict) -> str:
        # The default (W-F1) lines stay as they were; another selection metric leads each line.
        return ("" if selection.key == "wf1"
                else f"{selection.description} {m[selection.key]:.2f}  ")

    try:
        for seed in cfg.seeds:
            r = _finished_seed(out_dir / f"seed_{seed}", fingerprint) if resume else None
            if r is not None:
                results.append(r)
                echo(f"seed {seed}: finished earlier, reused (valid {chosen(r['valid'])}W-F1 "
                     f"{r['valid']['wf1']:.2f}  test {chosen(r['test'])}W-F1 "
                     f"{r['test']['wf1']:.2f})")
                continue
            r = train_seed(cfg, prepared, seed, out_dir / f"seed_{seed}", progress=progress,
                           fingerprint=fingerprint)
            results.append(r)
            echo(f"seed {seed}: valid {chosen(r['valid'])}W-F1 {r['valid']['wf1']:.2f}  "
                 f"test {chosen(r['test'])}W-F1 {r['test']['wf1']:.2f}  "
                 f"acc {r['test']['acc']:.2f}{_ece_note(r)}  (best epoch {r['best_epoch']}"
                 f"{'' if selection.key == 'wf1' else ' by valid ' + selection.description}, "
                 f"{r['seconds_to_best']:.1f} s to best, {r['train_seconds']:.1f} s total)")
    except Interrupted as e:
        # Each finished seed's folder is complete on disk (atomic writes, metrics.json last).
        done = [r["seed"] for r in results]
        e.progress = (f"finished seeds {done} of {cfg.seeds} in {out_dir}" if done else
                      f"no seed of {cfg.seeds} finished in {out_dir}") \
            + "; re-run the same command to resume from the finished seeds"
        raise
    summary = summarize(cfg, prepared, results)
    warnings = [f"seed {r['seed']}: {w}" for r in results
                if (w := collapse_warning(r["valid"], prepared.corpus.label_names))]
    if warnings:
        summary["warnings"] = warnings
    if lead:
        write_json(out_dir / "summary.json", summary)
    t, v = summary["test"], summary["valid"]
    sel = "" if selection.key == "wf1" else (
        f"{selection.description} {t[selection.key]['mean']:.2f} ± "
        f"{t[selection.key]['std']:.2f} (valid {v[selection.key]['mean']:.2f} ± "
        f"{v[selection.key]['std']:.2f}, the selection metric), ")
    echo(f"{cfg.model_name} on {prepared.corpus.name} ({'+'.join(prepared.modalities)}), "
         f"{len(results)} seed(s), validation-selected: test {sel}W-F1 {t['wf1']['mean']:.2f} ± "
         f"{t['wf1']['std']:.2f}, acc {t['acc']['mean']:.2f} ± {t['acc']['std']:.2f} "
         f"(valid W-F1 {v['wf1']['mean']:.2f} ± {v['wf1']['std']:.2f})"
         + (f"; test ECE {c['test_ece_before']['mean']:.1f}% -> {c['test_ece_after']['mean']:.1f}% "
            f"with the validation-fitted temperature"
            if (c := summary.get("calibration")) else ""))
    for line in warnings if lead else ():
        log.warning("%s", line)
    return summary
