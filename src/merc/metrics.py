"""Classification metrics for ERC, computed with scikit-learn on real (unpadded) utterances."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from merc.errors import ConfigError

METRIC_NAMES = {"wf1": "W-F1", "micro_f1": "micro-F1", "macro_f1": "macro-F1", "acc": "accuracy"}
"""The metrics that may select a checkpoint (``train.metric``) and how they are printed."""

_F1_AVERAGE = {"wf1": "weighted", "micro_f1": "micro", "macro_f1": "macro"}


@dataclass(frozen=True)
class SelectionMetric:
    """The validation metric that selects the checkpoint and drives early stopping
    (``train.metric`` and ``train.ignore_labels``).

    ``ignore_labels`` leave classes out of the F1 average, as DailyDialog's convention (micro-F1
    without ``no_emotion``): scikit-learn's ``f1_score(labels=kept, average=...)``, so an
    utterance of an ignored class predicted as a kept class still counts as a false positive.
    """

    metric: str = "wf1"
    ignore_labels: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Metrics-dict key and logged name (``val_<key>``): the metric's own name, or e.g.
        ``micro_f1_without_neutral`` -- never reusing a standard key (``wf1`` stays the W-F1 over
        every class in every table)."""
        if not self.ignore_labels:
            return self.metric
        return f"{self.metric}_without_" + "_".join(
            re.sub(r"[^0-9A-Za-z]+", "-", lab).strip("-") for lab in self.ignore_labels)

    @property
    def description(self) -> str:
        """``micro-F1 without neutral`` (for the printed lines)."""
        name = METRIC_NAMES[self.metric]
        return f"{name} without {', '.join(self.ignore_labels)}" if self.ignore_labels else name

    def to_dict(self) -> dict:
        return {"metric": self.metric, "ignore_labels": list(self.ignore_labels),
                "key": self.key}

    def kept(self, label_names: Sequence[str]) -> list[int]:
        """Class indices the F1 average keeps.

        Raises:
            ConfigError: ``train.ignore_labels`` names a label the corpus does not have, or
                leaves none (labels are only known once the data is loaded, hence checked here).
        """
        names = list(label_names)
        unknown = [lab for lab in self.ignore_labels if lab not in names]
        if unknown:
            raise ConfigError("train.ignore_labels", f"{unknown[0]!r} is not a label of this "
                              f"corpus; its labels: {names}")
        kept = [i for i, lab in enumerate(names) if lab not in self.ignore_labels]
        if not kept:
            raise ConfigError("train.ignore_labels", f"leaves no label to score; the corpus has "
                              f"{names}")
        return kept

    def value(self, y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> float:
        """The metric in percent."""
        if self.metric == "acc":  # TrainConfig refuses ignore_labels with acc
            return 100.0 * accuracy_score(y_true, y_pred)
        return 100.0 * float(f1_score(y_true, y_pred, labels=self.kept(label_names),
                                      average=_F1_AVERAGE[self.metric], zero_division=0))


DEFAULT_SELECTION = SelectionMetric()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           label_names: Sequence[str],
                           selection: SelectionMetric | None = None) -> dict:
    """W-F1, accuracy, macro F1, UAR and per-class F1 (all in percent) plus the confusion matrix.

    Args:
        y_true, y_pred: ``(N,)`` class indices of the N real utterances.
        label_names: Class names, index ``i`` = class ``i``.
        selection: A selection metric whose :attr:`SelectionMetric.key` is not one of the
            standard keys (``micro_f1``, ``macro_f1_without_neutral``, ...) is added under it.

    Returns:
        ``{"wf1", "acc", "macro_f1", "uar", "per_class_f1": {label: f1}, "confusion": [[...]],
        "support": {label: count}, "n": N}``. ``confusion[i][j]`` counts true ``i`` predicted ``j``.
        ``uar`` (unweighted average recall) is :func:`uar_from_confusion` of that matrix.
    """
    labels = list(range(len(label_names)))
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    out = {
        "wf1": 100.0 * f1_score(y_true, y_pred, labels=labels, average="weighted",
                                zero_division=0),
        "acc": 100.0 * accuracy_score(y_true, y_pred),
        "macro_f1": 100.0 * f1_score(y_true, y_pred, labels=labels, average="macro",
                                     zero_division=0),
        "uar": uar_from_confusion(confusion),
        "per_class_f1": {name: 100.0 * float(f) for name, f in zip(label_names, per_class)},
        "confusion": confusion.tolist(),
        "support": {name: int((y_true == i).sum()) for i, name in enumerate(label_names)},
        "n": int(len(y_true)),
    }
    if selection is not None and selection.key not in out:
        out[selection.key] = selection.value(y_true, y_pred, label_names)
    return out


def uar_from_confusion(confusion: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Unweighted average recall in percent from a ``(C, C)`` confusion matrix (rows = true class).

    The mean of the per-class recalls ``confusion[c, c] / confusion[c].sum()`` over the classes
    that occur in ``y_true`` (row sum > 0), each class counting equally whatever its size. This
    equals scikit-learn's ``balanced_accuracy_score``, and ``recall_score(average="macro")``
    when every class occurs; a class absent from the test set is skipped, not scored 0. Chance
    level is ``100 / C``. Returns 0.0 for an empty matrix.
    """
    cm = np.asarray(confusion, dtype=float)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    return 100.0 * float((np.diag(cm)[present] / support[present]).mean())


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the sample std (ddof=1), 0 for a single seed."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "per_seed": [float(v) for v in arr]}


def collapse_warning(metrics: dict, label_names: Sequence[str]) -> str | None:
    """A one-line warning when a selected checkpoint has (nearly) collapsed, else ``None``.

    Read from its *validation* metrics (:func:`classification_metrics`): it predicts a single
    class, or its macro-F1 is at most 1.5x the ``100 / C`` of a uniform guess -- the signs of a
    model that learned the label prior, not the task (too high a learning rate, a wrong label
    column, features that carry nothing). Test is not looked at.
    """
    confusion = np.asarray(metrics.get("confusion") or [])
    if confusion.ndim != 2 or not confusion.size:
        return None
    predicted = confusion.sum(axis=0)
    used = [label_names[j] for j in np.flatnonzero(predicted)]
    if len(used) == 1:
        return (f"the selected checkpoint predicts only {used[0]!r} on validation: the model "
                "collapsed to one class (check the learning rate, the labels and the features)")
    chance = 100.0 / len(label_names)
    if len(label_names) > 2 and metrics.get("macro_f1", 100.0) <= 1.5 * chance:
        return (f"validation macro-F1 {metrics['macro_f1']:.1f} is near chance (uniform guess "
                f"{chance:.1f} over {len(label_names)} classes); the model predicts "
                f"{len(used)} of them")
    return None
