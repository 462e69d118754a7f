"""Calibrated confidences: temperature scaling, expected calibration error and the reliability
diagram.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks", Sec. 4.2)
divides every logit vector by one scalar ``T > 0`` before the softmax. ``T`` is fitted on the
**validation** split only, by minimising the negative log-likelihood of the validation labels;
the arg-max (hence every accuracy and F1 figure) is unchanged, only the confidences move. A
network that is over-confident gets ``T > 1``. merc fits it once per trained seed, after the
checkpoint is selected (``train.calibrate``), and stores it in the checkpoint; prediction
divides by it.

Expected calibration error (Naeini et al., 2015; Guo et al., Eq. 3): the predictions are put in
``n_bins`` equal-width bins of confidence (the probability of the predicted class) and
``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``; merc reports it with 15 bins, the number
the temperature-scaling paper uses, as a fraction in [0, 1].

ECE has a sampling floor. Even a perfectly calibrated model shows a positive ECE on a finite
set, because each bin's accuracy is a binomial proportion around its confidence:
:func:`ece_floor` is that expected value. It is about 2% on MELD's 2,610 test utterances,
5% on EmoDB's 535 and 13-15% on one EmoDB speaker's 50. An ECE is evidence of miscalibration only
where it stands clearly above its floor. Reliability tables of disjoint sets, such as the test
speakers of cross-validation folds, pool exactly into the table of their union
(:func:`pool_reliability`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

ECE_BINS = 15
"""Bins of :func:`expected_calibration_error` in every merc report."""

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
"""The fitted temperature is kept inside this range: a split on which the model is always right
would push ``T`` towards 0 (and one on which it is always wrong towards infinity)."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits (N, C) / temperature`` (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels (N,)`` under ``softmax(logits / T)``."""
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-300, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` minimising the NLL of ``labels (N,)`` under
    ``softmax(logits (N, C) / T)``.

    The NLL is convex in ``1 / T`` (a log-sum-exp minus a linear term), so a bounded scalar
    minimisation over ``log T`` (scipy's Brent method) finds the optimum; the result is clamped to
    [:data:`MIN_TEMPERATURE`, :data:`MAX_TEMPERATURE`]. No utterance gives ``T = 1``.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    res = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
                ) -> dict[str, Any]:
    """The reliability table of ``probs (N, C)`` against ``labels (N,)``.

    Returns:
        ``{"ece", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}, ...]}``: ``ece``
        as a fraction; one entry per equal-width confidence bin ``(lo, hi]`` (the first also
        takes confidence 0), ``confidence``/``accuracy`` ``None`` for an empty bin.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    conf = probs.max(axis=-1) if len(probs) else np.zeros(0)
    right = (probs.argmax(axis=-1) == labels) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin b holds confidences in (edges[b], edges[b+1]]; searchsorted(side="left") - 1 does that.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        c = float(conf[sel].mean()) if n else None
        a = float(right[sel].mean()) if n else None
        if n:
            ece += n / len(labels) * abs(a - c)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                     "confidence": c, "accuracy": a})
    return {"ece": float(ece), "bins": bins}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               n_bins: int = ECE_BINS) -> float:
    """ECE of ``probs (N, C)`` against ``labels (N,)`` (a fraction; see the module docstring)."""
    return reliability(probs, labels, n_bins)["ece"]


def pool_reliability(tables: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The reliability table of the union of disjoint prediction sets, from their tables.

    Args:
        tables: One ``bins`` list of :func:`reliability` per set, all with the same bin edges.

    Returns:
        ``{"ece", "bins"}`` as :func:`reliability` would give on the pooled predictions:
        counts add up, and confidence and accuracy are count-weighted means, so this is exact.
    """
    if not tables:
        raise ValueError("pool_reliability needs at least one table")
    edges = [(b["lo"], b["hi"]) for b in tables[0]]
    if any([(b["lo"], b["hi"]) for b in t] != edges for t in tables[1:]):
        raise ValueError("pool_reliability: the tables have different bin edges")
    bins, total = [], sum(b["count"] for t in tables for b in t)
    ece = 0.0
    for i, (lo, hi) in enumerate(edges):
        parts = [t[i] for t in tables if t[i]["count"]]
        n = sum(b["count"] for b in parts)
        c = sum(b["count"] * b["confidence"] for b in parts) / n if n else None
        a = sum(b["count"] * b["accuracy"] for b in parts) / n if n else None
        if n:
            ece += n / total * abs(a - c)
        bins.append({"lo": lo, "hi": hi, "count": n, "confidence": c, "accuracy": a})
    return {"ece": float(ece), "bins": bins}


def ece_floor(bins: list[dict[str, Any]]) -> float:
    """The expected ECE of a *perfectly calibrated* model with this reliability table's shape.

    Each bin ``b`` keeps its count ``n_b`` and mean confidence ``c_b``; a calibrated model's
    right answers in it are ``Binomial(n_b, c_b)``, so its expected ECE is
    ``sum_b n_b / N * E|X_b / n_b - c_b|``, computed exactly from the binomial pmf. (Treating a
    bin's confidences as their mean is the one approximation; a bin is 1/15 wide.) An observed
    ECE near this value is what sampling alone produces.

    Args:
        bins: The ``bins`` of :func:`reliability` (or :func:`pool_reliability`).

    Returns:
        The floor as a fraction; 0 for an empty table.
    """
    from scipy.stats import binom

    total = sum(b["count"] for b in bins)
    floor = 0.0
    for b in bins:
        n = b["count"]
        if not n:
            continue
        c = min(max(float(b["confidence"]), 0.0), 1.0)
        k = np.arange(n + 1)
        floor += n / total * float((binom.pmf(k, n, c) * np.abs(k / n - c)).sum())
    return floor


def calibration_report(temperature: float, logits: np.ndarray, labels: np.ndarray,
                       n_bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE, NLL and reliability tables of ``logits (N, C)`` before (``T = 1``) and after
    dividing by ``temperature``: ``{"ece_before", "ece_after", "ece_floor_after", "nll_before",
    "nll_after", "reliability_before", "reliability_after"}`` (reliability: the ``bins`` of
    :func:`reliability`; ``ece_floor_after``: :func:`ece_floor` of the scaled table)."""
    before = reliability(softmax(logits), labels, n_bins)
    after = reliability(softmax(logits, temperature), labels, n_bins)
    return {"ece_before": before["ece"], "ece_after": after["ece"],
            "ece_floor_after": ece_floor(after["bins"]),
            "nll_before": nll(logits, labels), "nll_after": nll(logits, labels, temperature),
            "reliability_before": before["bins"], "reliability_after": after["bins"]}


def plot_reliability(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Draw the before/after reliability diagram of a :func:`calibration_report` to ``path``
    (PNG or SVG, by suffix): accuracy per confidence bin as bars, the diagonal of perfect
    calibration, ECE in each panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, when in zip(axes, ("before", "after")):
        bins = report[f"reliability_{when}"]
        lo = [b["lo"] for b in bins]
        width = bins[0]["hi"] - bins[0]["lo"]
        acc = [b["accuracy"] or 0.0 for b in bins]
        conf = [b["confidence"] or 0.0 for b in bins]
        ax.bar(lo, acc, width=width, align="edge", color="#4c72b0", edgecolor="white",
               label="accuracy")
        ax.bar(lo, [c - a if b["count"] else 0.0 for c, a, b in zip(conf, acc, bins)],
               bottom=acc, width=width, align="edge", color="#dd8452", alpha=0.45,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{'uncalibrated' if when == 'before' else 'temperature-scaled'}: "
                     f"ECE {100 * report[f'ece_{when}']:.1f}%")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
