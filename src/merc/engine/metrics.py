"""Classification metrics for ERC, computed with scikit-learn on real (unpadded) utterances."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           label_names: Sequence[str]) -> dict:
    """W-F1, accuracy, macro F1, UAR and per-class F1 (all in percent) plus the confusion matrix.

    Args:
        y_true, y_pred: ``(N,)`` class indices of the N real utterances.
        label_names: Class names, index ``i`` = class ``i``.

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
    return {
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
