"""Classification metrics for ERC, computed with scikit-learn on real (unpadded) utterances."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           label_names: Sequence[str]) -> dict:
    """W-F1, accuracy, macro F1 and per-class F1 (all in percent) plus the confusion matrix.

    Args:
        y_true, y_pred: ``(N,)`` class indices of the N real utterances.
        label_names: Class names, index ``i`` = class ``i``.

    Returns:
        ``{"wf1", "acc", "macro_f1", "per_class_f1": {label: f1}, "confusion": [[...]],
        "support": {label: count}, "n": N}``. ``confusion[i][j]`` counts true ``i`` predicted ``j``.
    """
    labels = list(range(len(label_names)))
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "wf1": 100.0 * f1_score(y_true, y_pred, labels=labels, average="weighted",
                                zero_division=0),
        "acc": 100.0 * accuracy_score(y_true, y_pred),
        "macro_f1": 100.0 * f1_score(y_true, y_pred, labels=labels, average="macro",
                                     zero_division=0),
        "per_class_f1": {name: 100.0 * float(f) for name, f in zip(label_names, per_class)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "support": {name: int((y_true == i).sum()) for i, name in enumerate(label_names)},
        "n": int(len(y_true)),
    }


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the sample std (ddof=1), 0 for a single seed."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "per_seed": [float(v) for v in arr]}
