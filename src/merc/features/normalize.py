"""Per-dimension standardisation fitted on the training split only.

Statistics come from train utterances whose feature is present (zero-filled placeholders would
drag the mean towards 0), so validation/test values never influence them. They are plain lists
so that they can be stored in :attr:`FeatureSpec.stats` and in checkpoints, and inference
applies the identical transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from merc.data.conversation import Corpus
from merc.errors import MercInputError

MIN_STD = 1e-6
"""Standard deviations below this are treated as constant dimensions and replaced by 1."""


def fit_stats(corpus: Corpus, modalities: Iterable[str]) -> dict[str, dict[str, list[float]]]:
    """Mean and standard deviation per feature dimension over the train split.

    Args:
        corpus: Corpus with ``features[m]`` ``(n, d_m)`` in its train conversations.
        modalities: Modalities to fit.

    Returns:
        ``{m: {"mean": [d_m floats], "std": [d_m floats]}}``. ``std`` is the population std; a
        (near-)constant dimension (std < :data:`MIN_STD`) gets std 1, as in scikit-learn's
        ``StandardScaler``: its train values map to 0 and a different value at test time is
        only shifted, not multiplied by 10^6.

    Raises:
        MercInputError: no train utterance has a present feature for a modality.
    """
    train = corpus.split("train")
    stats: dict[str, dict[str, list[float]]] = {}
    for m in modalities:
        blocks = []
        for c in train:
            if m not in c.features:
                raise MercInputError(corpus.source, f"no {m} features to fit normalisation on",
                                     dialogue=c.id, field=m)
            x = np.asarray(c.features[m])
            mask = c.feature_present.get(m)
            blocks.append(x if mask is None else x[np.asarray(mask, dtype=bool)])
        rows = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0))
        if rows.shape[0] == 0:
            raise MercInputError(corpus.source, "no train utterance has this feature, cannot fit "
                                 "normalisation statistics", field=m)
        # float64 accumulation: float32 sums over thousands of rows lose digits.
        rows = rows.astype(np.float64, copy=False)
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        std = np.where(std < MIN_STD, 1.0, std)
        stats[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


def apply_stats(corpus: Corpus, stats: dict[str, dict[str, list[float]]]) -> Corpus:
    """Standardise ``(x - mean) / std`` every modality in ``stats``, in every split.

    Utterances whose feature is absent (``feature_present`` False) are set to 0, i.e. the train
    mean, so placeholders stay neutral. Modalities not in ``stats`` are left unchanged.

    Returns:
        A new corpus with new float32 feature arrays; the input is not modified.

    Raises:
        MercInputError: a conversation lacks a modality in ``stats`` or its dimension differs
            from the statistics' (e.g. a checkpoint trained on other features).
    """
    params = {m: (np.asarray(s["mean"], dtype=np.float64), np.asarray(s["std"], dtype=np.float64))
              for m, s in stats.items()}
    new_convs = []
    for c in corpus.conversations:
        features = dict(c.features)
        for m, (mean, std) in params.items():
            if m not in c.features:
                raise MercInputError(corpus.source, f"no {m} features to normalise",
                                     dialogue=c.id, field=m)
            x = np.asarray(c.features[m])
            if x.ndim != 2 or x.shape[1] != mean.shape[0]:
                raise MercInputError(corpus.source, f"feature shape {x.shape} does not match the "
                                     f"{mean.shape[0]}-d normalisation statistics",
                                     dialogue=c.id, field=m)
            z = ((x - mean) / std).astype(np.float32)
            mask = c.feature_present.get(m)
            if mask is not None:
                z[~np.asarray(mask, dtype=bool)] = 0.0
            features[m] = z
        new_convs.append(replace(c, features=features))
    return replace(corpus, conversations=new_convs)
