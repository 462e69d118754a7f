"""Paired significance tests between two multi-seed runs (same seeds, same data)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Compare per-seed scores ``a`` and ``b`` (paired by seed).

    Returns the mean difference ``a - b``, the paired t-test and the Wilcoxon signed-rank test
    p-values (``None`` where undefined: fewer than 2 pairs, or all differences zero).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same number of seeds, got {len(a)} and {len(b)}")
    diff = a - b
    out = {"n": int(len(a)), "mean_diff": float(diff.mean()) if len(a) else None,
           "t_pvalue": None, "wilcoxon_pvalue": None}
    if len(a) >= 2 and np.any(diff != 0):
        out["t_pvalue"] = float(stats.ttest_rel(a, b).pvalue)
        out["wilcoxon_pvalue"] = float(stats.wilcoxon(a, b).pvalue)
    return out
