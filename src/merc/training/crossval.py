"""Speaker-independent cross-validation for corpora without an official split (EmoDB).

Protocol. The corpus' speakers are sorted and split into groups: one speaker per group
(leave-one-speaker-out, the default) or ``folds`` groups filled round-robin (sorted speaker
``i`` goes to group ``i % folds``). Fold ``k`` tests on group ``k``; the *next* group in that
order (``k + 1``, wrapping around to the first), or the next ``valid_groups`` groups, is the
validation set used for checkpoint selection, early stopping and the temperature; all other
groups train. One validation speaker is the most training data; two give the checkpoint choice
and the temperature twice the utterances and a second voice (a temperature fitted on one
speaker tracks how hard that speaker is: docs/results.md, "EmoDB's calibration"). No speaker
is ever in two roles of the same fold, and every utterance is tested exactly once per seed.

Honesty. Features are extracted once, unnormalised, for the whole corpus (a cached, label-free
transform of each wav on its own). Standardisation statistics are then fitted per fold on that
fold's *train speakers only* and applied to its validation and test speakers. Each fold and seed
is trained by :func:`merc.training.trainer.train_seed`, exactly like ``merc train``: the
checkpoint with the best validation W-F1 is kept and the test speakers are evaluated once on it.

Reporting (all in percent). UAR, the unweighted average recall (mean per-class recall, chance
``100 / C``), W-F1, accuracy and macro F1 of every fold; ``test`` holds their mean ± sample std
over folds (each fold's value averaged over seeds first), ``per_seed`` the same per seed, and
``pooled`` the metrics of the confusion matrix summed over all folds of a seed (every utterance
once), as mean ± std over seeds. With ``train.calibrate`` (the default) each fold's temperature
is fitted on its validation speakers; ``calibration`` pools the folds' reliability tables per
seed (:func:`merc.calibration.pool_reliability`): ECE over every utterance of the corpus, each
predicted by a model that never heard its speaker, before and after the temperature, with the
ECE a perfectly calibrated model would show on as many predictions
(:func:`merc.calibration.ece_floor`). One speaker's 50 utterances give ECE a floor near 15%;
the pooled figure is the one to read.

Output layout::

    out_dir/summary.json, out_dir/config.yaml
    out_dir/fold_<k>/fold.json                 speakers and utterance counts of fold k
    out_dir/fold_<k>/seed_<s>/                 as a ``merc train`` seed folder
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from merc._version import __version__
from merc.config import ExperimentConfig
from merc.data import Corpus
from merc.training.prepare import PreparedData, extract_features, load_configured
from merc.training.experiment import run_fingerprint
from merc.metrics import uar_from_confusion
from merc.training.trainer import train_seed
from merc.fileio import write_json
from merc.errors import MercInputError
from merc.features import FeatureSpec

METRICS = ("uar", "wf1", "acc", "macro_f1")
"""Metrics reported per fold and aggregated over folds (percent)."""


@dataclass(frozen=True)
class SpeakerFold:
    """One fold: which speakers test, validate and train. The three sets are disjoint."""

    index: int
    test: tuple[str, ...]
    valid: tuple[str, ...]
    train: tuple[str, ...]

    def role(self, speaker: str) -> str:
        """The split (``train``/``valid``/``test``) of ``speaker`` in this fold."""
        if speaker in self.test:
            return "test"
        if speaker in self.valid:
            return "valid"
        return "train"


def make_speaker_folds(speakers: Sequence[str], folds: int | None = None,
                       valid_groups: int = 1) -> list[SpeakerFold]:
    """Deterministic speaker folds (see the module docstring for the protocol).

    Args:
        speakers: Speaker names (repeats allowed; order does not matter).
        folds: ``None`` for leave-one-speaker-out, else the number of speaker groups
            (``valid_groups + 2`` <= ``folds`` <= number of speakers).
        valid_groups: How many groups validate each fold: the ones following the test group.

    Returns:
        One :class:`SpeakerFold` per group, fold ``k`` testing group ``k`` and validating on
        groups ``(k + 1) % n_groups`` ... ``(k + valid_groups) % n_groups``.

    Raises:
        ValueError: too few speakers for a test, a validation and a train group, or ``folds``
            or ``valid_groups`` out of range.
    """
    names = sorted(set(speakers))
    if valid_groups < 1:
        raise ValueError(f"valid_groups must be >= 1, got {valid_groups}")
    least = valid_groups + 2
    if len(names) < least:
        raise ValueError(f"speaker cross-validation with {valid_groups} validation group(s) "
                         f"needs at least {least} speakers (test, validation, train), found "
                         f"{len(names)}: {names}")
    n_groups = len(names) if folds is None else folds
    if not least <= n_groups <= len(names):
        raise ValueError(f"folds must be between {least} and the number of speakers "
                         f"({len(names)}), got {folds}")
    groups = [tuple(names[i::n_groups]) for i in range(n_groups)]
    out = []
    for k, test in enumerate(groups):
        valid = tuple(sorted(s for j in range(1, valid_groups + 1)
                             for s in groups[(k + j) % n_groups]))
        train = tuple(s for s in names if s not in test and s not in valid)
        out.append(SpeakerFold(index=k, test=test, valid=valid, train=train))
    return out


def conversation_speakers(corpus: Corpus) -> dict[str, str]:
    """Dialogue id -> its single speaker.

    Raises:
        MercInputError: a dialogue has more than one speaker (its utterances could not be
            assigned to one fold), naming the dialogue.
    """
    out = {}
    for c in corpus.conversations:
        found = sorted(set(c.speakers))
        if len(found) != 1:
            raise MercInputError(corpus.source, f"speaker cross-validation needs one speaker per "
                                 f"dialogue, found {found}", dialogue=c.id, field="speaker")
        out[c.id] = found[0]
    return out


def assign_fold(corpus: Corpus, fold: SpeakerFold, speaker_of: dict[str, str]) -> Corpus:
    """A copy of ``corpus`` whose conversations' splits are their speaker's role in ``fold``.

    Conversations are copied with :func:`dataclasses.replace`; feature arrays are shared, not
    copied. Any split the loader assigned is overridden.
    """
    convs = [replace(c, split=fold.role(speaker_of[c.id])) for c in corpus.conversations]
    note = (f"speaker fold {fold.index}: valid speakers {list(fold.valid)}, test speakers "
            f"{list(fold.test)}")
    return replace(corpus, conversations=convs, valid_split=note)


def prepare_fold(corpus: Corpus, spec: FeatureSpec, fold: SpeakerFold,
                 speaker_of: dict[str, str]) -> PreparedData:
    """Splits for ``fold`` plus standardisation fitted on the fold's train speakers only.

    Args:
        corpus: Output of :func:`merc.training.prepare.extract_features` (unnormalised features
            ``(n, d_m)``).
        spec: Its feature spec; not modified (a copy carries this fold's statistics).

    Returns:
        A :class:`PreparedData` for :func:`merc.training.trainer.train_seed`.
    """
    # fit_stats reads split "train" only, which here is exactly the fold's train speakers.
    return PreparedData.normalised(assign_fold(corpus, fold, speaker_of), replace(spec, stats={}))


def metrics_from_confusion(confusion: np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """UAR, accuracy, W-F1 and macro F1 (percent) of a ``(C, C)`` confusion matrix (rows true).

    Matches :func:`merc.metrics.classification_metrics` on the same predictions; used for
    the pooled metrics over all folds.
    """
    cm = np.asarray(confusion, dtype=float)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    n = cm.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"uar": uar_from_confusion(cm),
            "wf1": 100.0 * float((f1 * support).sum() / n) if n else 0.0,
            "acc": 100.0 * float(tp.sum() / n) if n else 0.0,
            "macro_f1": 100.0 * float(f1.mean()) if len(f1) else 0.0}


def _over(values: Sequence[float], key: str) -> dict[str, Any]:
    """``{"mean", "std", key: values}`` with the sample std (ddof=1; 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, key: [float(v) for v in arr]}


def run_speaker_cv(cfg: ExperimentConfig, out_dir: str | Path, *, folds: int | None = None,
                   valid_groups: int = 1, progress: bool = False,
                   echo: Callable[[str], None] = print) -> dict:
    """Speaker-independent cross-validation of ``cfg``'s model; writes ``out_dir/summary.json``.

    Args:
        cfg: Experiment config: corpus, features, model, training options and ``cfg.seeds``
            (every fold is trained once per seed). The corpus' own splits are ignored, and so
            are ``data.valid_fraction``/``data.valid_seed`` (validation is a speaker group).
        out_dir: Run folder (layout in the module docstring).
        folds: ``None`` = leave-one-speaker-out; else the number of speaker groups.
        valid_groups: Speaker groups validating each fold (:func:`make_speaker_folds`).
        progress: Progress bars for feature extraction and training.
        echo: Receives one line per finished fold and a final summary line.

    Returns:
        The summary dict written to ``summary.json`` (see the module docstring).

    Raises:
        MercInputError: a corpus or feature problem, a dialogue with several speakers.
        ValueError: fewer than 3 speakers or ``folds`` out of range.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = ExperimentConfig.from_dict(cfg.to_dict()).resolved()  # validated; paper settings filled
    progress = bool(progress)
    corpus, spec = extract_features(load_configured(cfg.data), cfg.data, progress=progress)
    speaker_of = conversation_speakers(corpus)
    plan = make_speaker_folds(list(speaker_of.values()), folds, valid_groups)
    protocol = ("leave-one-speaker-out" if all(len(f.test) == 1 for f in plan)
                else f"{len(plan)} speaker groups")
    if valid_groups > 1:
        protocol += f", {valid_groups} validation groups"
    labels = corpus.label_names
    n_utt = sum(len(c) for c in corpus.conversations)
    echo(f"{corpus.name}: {n_utt} utterances, {len(set(speaker_of.values()))} speakers; "
         f"modalities {spec.modalities()} dims {corpus.feature_dims()}; {protocol}, "
         f"{len(plan)} folds x {len(cfg.seeds)} seed(s)")
    cfg.save(out_dir / "config.yaml")
    fingerprint = run_fingerprint(cfg)

    fold_records: list[dict[str, Any]] = []
    pooled = {s: np.zeros((len(labels), len(labels)), dtype=np.int64) for s in cfg.seeds}
    tables: dict[int, list[dict[str, Any]]] = {s: [] for s in cfg.seeds}
    params = None
    for fold in plan:
        prepared = prepare_fold(corpus, spec, fold, speaker_of)
        fold_dir = out_dir / f"fold_{fold.index}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        counts = {s: v["utterances"] for s, v in prepared.corpus.counts().items()}
        info = {"fold": fold.index, "test_speakers": list(fold.test),
                "valid_speakers": list(fold.valid), "train_speakers": list(fold.train),
                "utterances": counts}
        write_json(fold_dir / "fold.json", info)
        runs = []
        for seed in cfg.seeds:
            r = train_seed(cfg, prepared, seed, fold_dir / f"seed_{seed}", progress=progress,
                           fingerprint=fingerprint)
            params = r["params"]
            pooled[seed] += np.asarray(r["test"]["confusion"], dtype=np.int64)
            if r.get("calibration"):
                tables[seed].append(r["calibration"])
            runs.append({"seed": seed, "best_epoch": r["best_epoch"],
                         "train_seconds": r["train_seconds"],
                         "valid": {k: r["valid"][k] for k in METRICS},
                         "test": {k: r["test"][k] for k in METRICS}})
        test = {k: float(np.mean([r["test"][k] for r in runs])) for k in METRICS}
        valid = {k: float(np.mean([r["valid"][k] for r in runs])) for k in METRICS}
        fold_records.append({**info, "test": test, "valid": valid, "per_seed": runs})
        seeds_note = f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""
        echo(f"fold {fold.index + 1}/{len(plan)}: test {','.join(fold.test)} "
             f"({counts['test']} utt), valid {','.join(fold.valid)}: UAR {test['uar']:.2f}  "
             f"W-F1 {test['wf1']:.2f}  acc {test['acc']:.2f}  (valid UAR {valid['uar']:.2f}; "
             f"best epoch {', '.join(str(r['best_epoch']) for r in runs)}){seeds_note}")

    per_seed = []
    for i, seed in enumerate(cfg.seeds):
        row: dict[str, Any] = {"seed": seed}
        for k in METRICS:
            row[k] = _over([f["per_seed"][i]["test"][k] for f in fold_records], "per_fold")
        row["pooled"] = metrics_from_confusion(pooled[seed])
        row["pooled_confusion"] = pooled[seed].tolist()
        if len(tables[seed]) == len(plan):
            row["calibration"] = pooled_calibration(tables[seed])
        per_seed.append(row)
    summary = {
        "model": cfg.model_name, "corpus": corpus.name, "modalities": spec.modalities(),
        "protocol": protocol, "n_folds": len(plan), "seeds": list(cfg.seeds), "params": params,
        "label_names": labels, "chance_uar": 100.0 / len(labels),
        "valid_groups": valid_groups,
        "selection": f"per fold and seed: checkpoint with the best validation "
                     f"{cfg.train.selection.description} (validation = the next "
                     f"{'speaker group' if valid_groups == 1 else f'{valid_groups} speaker groups'}), "
                     "early stopping on it; test evaluated once",
        "selection_metric": cfg.train.selection.to_dict(),
        "normalisation": "fitted per fold on the train speakers only" if spec.normalize
                         else "none",
        "test": {k: _over([f["test"][k] for f in fold_records], "per_fold") for k in METRICS},
        "valid": {k: _over([f["valid"][k] for f in fold_records], "per_fold")
                  for k in ("uar", "wf1")},
        "pooled": {k: _over([r["pooled"][k] for r in per_seed], "per_seed") for k in METRICS},
        "per_seed": per_seed,
        **({"calibration": {f"{split}_{k}": _over([r["calibration"][split][k] for r in per_seed],
                                                  "per_seed")
                            for split in ("valid", "test")
                            for k in ("ece_before", "ece_after", "ece_floor_after")}}
           if all("calibration" in r for r in per_seed) else {}),
        "folds": fold_records,
        "train_seconds": float(sum(r["train_seconds"] for f in fold_records
                                   for r in f["per_seed"])),
        "feature_spec": {k: v for k, v in spec.to_dict().items() if k != "stats"},
        "merc_version": __version__, "fingerprint": fingerprint,
    }
    write_json(out_dir / "summary.json", summary)  # atomic: a kill never leaves half a file
    t, p = summary["test"], summary["pooled"]
    echo(f"{cfg.model_name} on {corpus.name} ({'+'.join(spec.modalities())}), {protocol}, "
         f"{len(plan)} folds x {len(cfg.seeds)} seed(s): test UAR {t['uar']['mean']:.2f} ± "
         f"{t['uar']['std']:.2f} over folds (pooled {p['uar']['mean']:.2f}), W-F1 "
         f"{t['wf1']['mean']:.2f} ± {t['wf1']['std']:.2f}, acc {t['acc']['mean']:.2f} ± "
         f"{t['acc']['std']:.2f}; chance UAR {summary['chance_uar']:.2f}")
    if "calibration" in summary:
        c = summary["calibration"]
        echo(f"test ECE pooled over the folds, raw -> temperature-scaled: "
             f"{100 * c['test_ece_before']['mean']:.2f}% -> {100 * c['test_ece_after']['mean']:.2f}% "
             f"(mean over seeds; a perfectly calibrated model would show "
             f"{100 * c['test_ece_floor_after']['mean']:.2f}% on {n_utt} utterances)")
    return summary


def pooled_calibration(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One seed's calibration over all folds, from each fold's
    :func:`merc.calibration.calibration_report` (fractions).

    Returns:
        ``{"valid"|"test": {"ece_before", "ece_after", "ece_floor_after", "reliability_before",
        "reliability_after"}}``: the folds' reliability tables pooled (each utterance counted
        once), and their ECE.
    """
    from merc.calibration import ece_floor, pool_reliability

    out: dict[str, dict[str, Any]] = {}
    for split in ("valid", "test"):
        before = pool_reliability([r[split]["reliability_before"] for r in reports])
        after = pool_reliability([r[split]["reliability_after"] for r in reports])
        out[split] = {"ece_before": before["ece"], "ece_after": after["ece"],
                      "ece_floor_after": ece_floor(after["bins"]),
                      "reliability_before": before["bins"], "reliability_after": after["bins"]}
    return out
