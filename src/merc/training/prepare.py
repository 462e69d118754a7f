"""From a :class:`~merc.config.DataConfig` to tensors: find the corpus folder, load it, choose and
extract (cached) features, normalise with train-split statistics, batch.

Used by ``merc train`` (:func:`prepare_data`), ``merc crossval`` (:func:`load_configured` +
:func:`extract_features`, normalising per fold), ``merc evaluate`` and the bench, so every command
sees the same corpus, the same modalities and the same features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from merc.config import MODALITIES, DataConfig
from merc.data.collate import DialogueDataset, collate_dialogues
from merc.data.conversation import Corpus, ensure_validation_split
from merc.data.corpora import get_corpus
from merc.errors import MercInputError
from merc.features import FeatureExtractor, FeatureSpec, apply_stats, fit_stats


def resolve_corpus_dir(kind: str, data_dir: str | Path) -> Path:
    """``data_dir`` itself if it holds corpus ``kind``, else ``data_dir/kind`` if that does.

    Raises:
        MercInputError: neither exists, with the registry's hint on what to download.
    """
    entry = get_corpus(kind)
    root = Path(data_dir).expanduser()
    marker = entry.marker
    if root.is_file() or marker is None or (root / marker).exists():
        if root.exists():
            return root
    elif (root / kind / marker).exists():
        return root / kind
    looked = f"looked for {marker} in it and in {root / kind}" if marker else "not found"
    raise MercInputError(
        root, f"no {kind} corpus here ({looked}); point --data-dir or $MERC_DATA_DIR at the "
        f"folder holding it ({entry.hint})")


def load_configured(data: DataConfig) -> Corpus:
    """Find and load ``data.corpus`` with the options its registry entry takes (``label``)."""
    entry = get_corpus(data.corpus)
    options: dict[str, Any] = {"label": data.label} if entry.takes_label else {}
    return entry.loader(resolve_corpus_dir(data.corpus, data.data_dir), **options)


def choose_feature_spec(corpus: Corpus, data: DataConfig) -> FeatureSpec:
    """The feature spec for ``corpus``: ``data.modalities`` if set, else every modality it provides
    (loader-supplied features, transcripts, audio when ``data.audio`` names an openSMILE set
    and the corpus has wav paths, video when ``data.video`` names a video extractor and the
    corpus has video paths).

    Raises:
        MercInputError: audio asked for from wavs without an extractor, or nothing to train on.
    """
    available = set(corpus.feature_modalities)
    if any(u.strip() for c in corpus.conversations for u in c.utterances):
        available.add("text")
    has_wavs = any(c.media.get("audio") for c in corpus.conversations)
    if data.audio != "external" and has_wavs:
        available.add("audio")  # openSMILE can compute it from the wav paths
    if data.video != "external" and any(c.media.get("video") for c in corpus.conversations):
        available.add("video")  # the face extractor can compute it from the video paths
    wants_audio = data.modalities is not None and "audio" in data.modalities
    if (wants_audio and data.audio == "external" and has_wavs
            and "audio" not in corpus.feature_modalities):
        raise MercInputError(corpus.source, "the corpus has wav files but no precomputed audio "
                             "features; choose an extractor, e.g. --audio eGeMAPSv02",
                             field="audio")
    if data.modalities is None and not available:
        hint = " (the corpus has wav paths: e.g. --audio eGeMAPSv02)" if has_wavs else ""
        raise MercInputError(corpus.source, f"no features to train on: no transcripts and no "
                             f"loader-supplied features; choose an audio extractor{hint}",
                             field="modalities")
    return FeatureSpec(**data.sources(sorted(available, key=MODALITIES.index)))


def extract_features(corpus: Corpus, data: DataConfig, *, spec: FeatureSpec | None = None,
                     progress: bool = False) -> tuple[Corpus, FeatureSpec]:
    """``(corpus with features[m] (n, d_m) per conversation, spec)``, *unnormalised*; ``spec``
    defaults to :func:`choose_feature_spec`."""
    spec = spec if spec is not None else choose_feature_spec(corpus, data)
    extractor = FeatureExtractor(spec, cache_dir=data.cache_dir)   # the one feature path
    return extractor.extract(corpus, progress=progress), spec


@dataclass
class PreparedData:
    """A corpus with features extracted and normalised, ready for :class:`DialogueDataset`."""

    corpus: Corpus
    spec: FeatureSpec
    """Feature sources plus the train-split normalisation stats actually applied."""
    modalities: list[str]
    input_dims: dict[str, int]

    @classmethod
    def normalised(cls, corpus: Corpus, spec: FeatureSpec) -> "PreparedData":
        """Standardise ``corpus`` (when ``spec.normalize``) with ``spec.stats``, fitting them on
        split ``train`` first when ``spec`` has none. ``spec`` is updated with the stats."""
        modalities = spec.modalities()
        if spec.normalize:
            if not spec.stats:
                spec.stats = fit_stats(corpus, modalities)
            corpus = apply_stats(corpus, spec.stats)
        dims = corpus.feature_dims()
        return cls(corpus=corpus, spec=spec, modalities=modalities,
                   input_dims={m: dims[m] for m in modalities})


def prepare_data(data: DataConfig, *, spec: FeatureSpec | None = None,
                 progress: bool = True) -> PreparedData:
    """Load the corpus, add a validation split if needed, extract (cached) and normalise features.

    Args:
        data: A resolved :class:`DataConfig` (``data.resolved()``).
        spec: Use this feature spec (and its stored stats) instead of deriving one, e.g. the
            spec saved in a checkpoint; stats are then never refitted.
    """
    corpus = load_configured(data)
    if not corpus.split("test"):
        raise MercInputError(corpus.source, "corpus has no test dialogues; mark some dialogues "
                             "split 'test' (results are always reported on a held-out test set)",
                             field="split")
    corpus = ensure_validation_split(corpus, data.valid_fraction, data.valid_seed)
    corpus, spec = extract_features(corpus, data, spec=spec, progress=progress)
    return PreparedData.normalised(corpus, spec)


def make_loader(prepared: PreparedData, split: str, batch_size: int, *, shuffle: bool = False,
                seed: int = 0, shard: tuple[int, int] | None = None) -> DataLoader:
    """Padded :class:`~merc.data.collate.Batch` es of ``split`` (shuffled with ``seed``).

    ``shard=(world_size, rank)``: data-parallel training; a ``DistributedSampler`` shuffles the
    split with ``seed`` (reshuffled per epoch by the trainer's ``set_epoch``) and gives this
    rank every ``world_size``-th dialogue, so the ranks' batches of one step together are the
    single-process (``world_size=1``) batch of that step."""
    ds = DialogueDataset(prepared.corpus.split(split), prepared.corpus.label_names,
                         prepared.modalities)
    if shard is not None:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=shard[0], rank=shard[1], shuffle=shuffle,
                                     seed=seed, drop_last=False)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler,
                          collate_fn=collate_dialogues, num_workers=0)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      collate_fn=collate_dialogues, num_workers=0)


def balanced_class_weights(corpus: Corpus) -> torch.Tensor:
    """``(C,)`` sklearn 'balanced' weights from train labels: ``n / (C * count_c)``."""
    from sklearn.utils.class_weight import compute_class_weight

    index = corpus.label_index()
    y = np.asarray([index[x] for c in corpus.split("train") for x in c.labels or []])
    present = np.unique(y)
    w = np.ones(len(corpus.label_names))
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.tensor(w, dtype=torch.float32)
