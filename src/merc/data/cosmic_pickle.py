"""COSMIC pickles: RoBERTa feature pickles and the plain text pickles they were built from.

Source: declare-lab/conv-emotion ``COSMIC/``. The structures below are those written by
``feature-extraction/roberta_feature_extract_{iemocap,meld}.py`` (``pickle.dump([...])``) and
unpacked by ``erc-training/dataloader.py`` (``IEMOCAPRobertaCometDataset``,
``MELDRobertaCometDataset``, ``pickle.load(f, encoding='latin1')``). Note the split order in
every COSMIC file: **train, test, valid** (test before valid).

``iemocap_features_roberta.pkl`` -- a 10-item list::

    0 speakers   dict dialogue id (str) -> ["M" | "F", ...]
    1 labels     dict dialogue id -> [label index (int), ...]
    2 roberta1   dict dialogue id -> [1-d float32 array (1024,), ...]   last RoBERTa layer
    3 roberta2   dict ...                                                second-to-last layer
    4 roberta3   dict ...                                                third-to-last layer
    5 roberta4   dict ...                                                fourth-to-last layer
    6 sentences  dict dialogue id -> [transcript (str), ...]
    7 trainIds   list of dialogue ids
    8 testIds    list of dialogue ids
    9 validIds   list of dialogue ids

``meld_features_roberta.pkl`` -- an 11-item list::

    0 speakers          dict dialogue id (int) -> [one-hot party vector, ...]
    1 emotion_labels    dict dialogue id -> [label index, ...]
    2 sentiment_labels  dict dialogue id -> [label index, ...]
    3-6 roberta1..4     as above (1024-d CLS vectors of the last four layers)
    7 sentences         dict dialogue id -> [transcript (str), ...]
    8 trainIds, 9 testIds, 10 validIds   lists of dialogue ids

``robertaK[d]`` is a list with one 1-d vector per utterance: the extractor stores
``feat[-K][:, 0, :]`` (the ``<s>`` token of the K-th layer from the top) of a fine-tuned
RoBERTa-large. COSMIC's main model (``--mode1 2``, the default in ``train_iemocap.py`` and
``train_meld.py``) uses the **mean of roberta1..4**; ``mode1 0`` concatenates them and
``mode1 3..6`` pick one. Hence ``text_layers=(1, 2, 3, 4)``, ``text_combine="mean"`` by default.

The plain text pickles those scripts read (``roberta_init_*.py``):

* ``iemocap.pkl``: ``[speakers, labels, sentences, train_ids, test_ids, valid_ids]`` (6 items;
  108/31/12 dialogues, 7433 utterances). A byte-identical copy is
  ``shared/data/iemocap/iemocap_cosmic.pkl``.
* ``meld.pkl``: ``[speakers, emotion_labels, sentiment_labels, sentences, train_ids, test_ids,
  valid_ids]`` (7 items).

Label maps. IEMOCAP: ``{'hap': 0, 'sad': 1, 'neu': 2, 'ang': 3, 'exc': 4, 'fru': 5}`` (docstring
of ``IEMOCAPRobertaCometDataset``). MELD emotion: ``neutral 0, surprise 1, fear 2, sadness 3,
joy 4, disgust 5, anger 6`` and sentiment ``neutral 0, positive 1, negative 2``: COSMIC's MELD
docstring is empty, so these come from the same lab's declare-lab/dialogue-understanding
``roberta-end-to-end/datasets/meld/meld_{emotion,sentiment}.mapping`` and agree with COSMIC's
MELD class weights (smallest weight for class 0, the majority ``neutral``; largest for 2 and 5,
``fear``/``disgust``). MELD speakers are one-hot vectors (the dataloader feeds them straight to
``torch.FloatTensor``); they become ``"speaker<k>"``.

The official validation split is kept (``valid_split="official"``). The text feature is named
``text``; the text pickles carry no features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from merc.data.conversation import Corpus
from merc.data.iemocap import IEMOCAP_LABELS
from merc.data.meld import MELD_EMOTIONS, MELD_SENTIMENTS
from merc.data.pickle_layout import (
    DimCheck,
    FeatureReader,
    build_corpus,
    entry,
    feature_matrix,
    require_dict,
    unpack_fields,
)
from merc.data.safe_pickle import safe_load_pickle
from merc.errors import MercInputError

ROBERTA_LAYERS = ("roberta1", "roberta2", "roberta3", "roberta4")
IEMOCAP_ROBERTA_FIELDS = ("speakers", "labels", *ROBERTA_LAYERS, "sentences", "trainIds",
                          "testIds", "validIds")
MELD_ROBERTA_FIELDS = ("speakers", "emotion_labels", "sentiment_labels", *ROBERTA_LAYERS,
                       "sentences", "trainIds", "testIds", "validIds")
IEMOCAP_TEXT_FIELDS = ("speakers", "labels", "sentences", "train_ids", "test_ids", "valid_ids")
MELD_TEXT_FIELDS = ("speakers", "emotion_labels", "sentiment_labels", "sentences", "train_ids",
                    "test_ids", "valid_ids")

_ROBERTA = {"iemocap": IEMOCAP_ROBERTA_FIELDS, "meld": MELD_ROBERTA_FIELDS}
_TEXT = {"iemocap": IEMOCAP_TEXT_FIELDS, "meld": MELD_TEXT_FIELDS}


def load_cosmic_roberta(
    path: str | Path,
    *,
    dataset: str | None = None,
    text_layers: Sequence[int] = (1, 2, 3, 4),
    text_combine: str = "mean",
    label: str = "emotion",
) -> Corpus:
    """Load ``iemocap_features_roberta.pkl`` or ``meld_features_roberta.pkl``.

    Args:
        dataset: ``"iemocap"`` (10 items) or ``"meld"`` (11 items); ``None`` infers it from the
            number of items.
        text_layers: Which of ``roberta1``..``roberta4`` (1 = last layer) make the ``text``
            feature.
        text_combine: ``"mean"`` (COSMIC's default ``mode1 2``; dim 1024) or ``"concat"``
            (``mode1 0`` for all four; dim 1024 x layers).
        label: MELD only: ``"emotion"`` (7 classes) or ``"sentiment"`` (3 classes).
    """
    path = Path(path).expanduser()
    layers = check_text_layers(text_layers, text_combine)
    obj = safe_load_pickle(path)
    dataset = _dataset(path, obj, dataset, _ROBERTA, "COSMIC RoBERTa pickle")
    fields = unpack_fields(path, obj, _ROBERTA[dataset],
                           f"COSMIC {dataset}_features_roberta.pkl")
    text = roberta_text_reader(path, fields, layers, text_combine, DimCheck(path))
    return _build(path, fields, dataset, label, {"text": text})


def load_cosmic_text(path: str | Path, *, dataset: str | None = None,
                     label: str = "emotion") -> Corpus:
    """Load COSMIC's plain ``iemocap.pkl`` (6 items) or ``meld.pkl`` (7 items): no features.

    Args:
        dataset: ``"iemocap"``, ``"meld"`` or ``None`` (inferred from the number of items).
        label: MELD only: ``"emotion"`` or ``"sentiment"``.
    """
    path = Path(path).expanduser()
    obj = safe_load_pickle(path)
    dataset = _dataset(path, obj, dataset, _TEXT, "COSMIC text pickle")
    fields = unpack_fields(path, obj, _TEXT[dataset], f"COSMIC {dataset}.pkl")
    return _build(path, fields, dataset, label, {})


def check_text_layers(text_layers: Sequence[int], text_combine: str) -> tuple[int, ...]:
    """Validate the ``text_layers``/``text_combine`` options (a caller error: ``ValueError``)."""
    layers = tuple(text_layers)
    if not layers or any(not isinstance(k, int) or isinstance(k, bool) or k not in (1, 2, 3, 4)
                         for k in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"text_layers must be distinct RoBERTa layers from 1..4, got "
                         f"{text_layers!r}")
    if text_combine not in ("mean", "concat"):
        raise ValueError(f"text_combine must be 'mean' or 'concat', got {text_combine!r}")
    return layers


def roberta_text_reader(path: Path, fields: Mapping[str, object], layers: Sequence[int],
                        combine: str, dims: DimCheck) -> FeatureReader:
    """Reader combining the chosen ``robertaK`` dicts of ``fields`` into one ``(n, d)`` matrix."""
    mappings = [(f"roberta{k}", require_dict(path, fields, f"roberta{k}")) for k in layers]

    def read(vid: object, n: int) -> np.ndarray:
        mats = [dims(name, vid, feature_matrix(path, entry(path, m, name, vid), vid, name, n))
                for name, m in mappings]
        if len(mats) == 1:
            return mats[0]
        if combine == "concat":
            return np.concatenate(mats, axis=1)
        first = mats[0].shape[1]
        for (name, _), mat in zip(mappings, mats):
            if mat.shape[1] != first:
                raise MercInputError(path, f"cannot average layers of different dims "
                                     f"({mat.shape[1]} vs {first} in {mappings[0][0]})",
                                     dialogue=vid, field=name)
        return np.mean(mats, axis=0, dtype=np.float64).astype(np.float32)
    return read


def _dataset(path: Path, obj: object, dataset: str | None, layouts: Mapping[str, tuple],
             what: str) -> str:
    if dataset is not None:
        if dataset not in layouts:
            raise ValueError(f"dataset must be one of {sorted(layouts)}, got {dataset!r}")
        return dataset
    n = len(obj) if isinstance(obj, (list, tuple)) else None
    for name, names in layouts.items():
        if n == len(names):
            return name
    expected = " or ".join(f"{len(v)} ({k})" for k, v in layouts.items())
    got = f"{n} items" if n is not None else type(obj).__name__
    raise MercInputError(path, f"not a {what}: expected a list of {expected} items, got {got}",
                         field="pickle")


def _build(path: Path, fields: Mapping[str, object], dataset: str, label: str,
           features: Mapping[str, FeatureReader]) -> Corpus:
    if dataset == "iemocap":
        if label != "emotion":
            raise ValueError("IEMOCAP pickles have emotion labels only (label='emotion')")
        label_field, names = "labels", IEMOCAP_LABELS
    elif label in ("emotion", "sentiment"):
        label_field = f"{label}_labels"
        names = MELD_EMOTIONS if label == "emotion" else MELD_SENTIMENTS
    else:
        raise ValueError(f"label must be 'emotion' or 'sentiment', got {label!r}")
    splits = [k for k in fields if k.lower().startswith(("train", "test", "valid"))]
    # File order is train, test, valid; emit train, valid, test (the corpus convention).
    ordered = sorted(splits, key=lambda k: ("train", "valid", "test").index(_split_of(k)))
    return build_corpus(path, fields, name=dataset, label_field=label_field, label_names=names,
                        speaker_field="speakers", sentence_field="sentences",
                        split_fields=[(_split_of(k), k) for k in ordered], features=features)


def _split_of(field: str) -> str:
    return next(s for s in ("train", "valid", "test") if field.lower().startswith(s))
