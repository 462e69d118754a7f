"""DialogueRNN / DialogueGCN ``IEMOCAP_features.pkl`` (the 9-item IEMOCAP feature pickle).

Source: declare-lab/conv-emotion, ``DialogueRNN/dataloader.py`` and ``DialogueGCN/dataloader.py``
(``IEMOCAPDataset``), which unpack it with ``pickle.load(f, encoding='latin1')`` (a Python 2
pickle). The same 9-item layout is read by bc-LSTM-pytorch, MMGCN (hujingwen6666/MMGCN), MM-DFN
and M3Net (feiyuchen7/M3NET); see :mod:`merc.data.mmgcn_pickle`.

On-disk structure: a 9-item list/tuple, in this order::

    0 videoIDs       dict  dialogue id (str, e.g. "Ses01F_impro01") -> [utterance id (str), ...]
    1 videoSpeakers  dict  dialogue id -> ["M" | "F", ...]  (the repos one-hot it as M=[1,0])
    2 videoLabels    dict  dialogue id -> [label index (int), ...]
    3 videoText      dict  dialogue id -> (n, d_text) features   (list of rows or 2-d array)
    4 videoAudio     dict  dialogue id -> (n, d_audio) features
    5 videoVisual    dict  dialogue id -> (n, d_visual) features
    6 videoSentence  dict  dialogue id -> [transcript (str), ...]
    7 trainVid       dialogue ids of the training split (list or set)
    8 testVid        dialogue ids of the test split (list or set)

Every per-dialogue list has one entry per utterance, in turn order. Label indices (docstring of
``IEMOCAPDataset``): ``{'hap': 0, 'sad': 1, 'neu': 2, 'ang': 3, 'exc': 4, 'fru': 5}``.
Dimensions differ between releases of a file with this name and are therefore only checked for
consistency, not against constants: the training scripts declare text 100 (textCNN;
DialogueRNN/DialogueGCN ``D_m = 100``, MMGCN ``feat2dim['textCNN']``), audio 1582 (IS10) and
visual 342 (DenseFace) in MMGCN's ``train.py``, but audio 100 and visual 512 in M3Net's
``train.py`` for its ``IEMOCAP_features.pkl``.

There is no validation split in the file (MMGCN/M3Net hold out the first 10% of ``trainVid``
with a sampler; DialogueGCN's ``train_IEMOCAP.py`` uses ``valid=0.0``):
the corpus comes back with train and test only, ``valid_split="none in file"``, and the engine
calls :func:`merc.data.conversation.ensure_validation_split`. Modalities are named ``text``,
``audio``, ``video``; dialogues in no split list are not loaded (with a warning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from merc.data.conversation import Corpus
from merc.data.iemocap import IEMOCAP_LABELS
from merc.data.pickle_layout import DimCheck, build_corpus, field_feature, unpack_fields
from merc.data.safe_pickle import safe_load_pickle

IEMOCAP_FEATURE_FIELDS = ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio",
                          "videoVisual", "videoSentence", "trainVid", "testVid")
"""Item names of the 9-item pickle, in file order (as the repos unpack them)."""

MODALITY_FIELDS = {"text": "videoText", "audio": "videoAudio", "video": "videoVisual"}
"""Modality name -> the dict field holding its features."""


def load_dialoguernn_iemocap(
    path: str | Path,
    *,
    modalities: Sequence[str] = ("text", "audio", "video"),
    what: str = "DialogueRNN IEMOCAP_features.pkl",
) -> Corpus:
    """Load a DialogueRNN/DialogueGCN-style ``IEMOCAP_features.pkl``.

    Args:
        path: The pickle.
        modalities: Which of ``text``/``audio``/``video`` to load as features (others are
            still unpacked and ignored).
        what: Format name used in arity errors (callers reusing this loader pass their own).

    Returns:
        A validated IEMOCAP :class:`Corpus` (train/test; no official valid split).

    Raises:
        MercInputError: one line naming the file, dialogue, utterance and field.
    """
    path = Path(path).expanduser()
    unknown = [m for m in modalities if m not in MODALITY_FIELDS]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {sorted(MODALITY_FIELDS)}")
    fields = unpack_fields(path, safe_load_pickle(path), IEMOCAP_FEATURE_FIELDS, what)
    dims = DimCheck(path)
    features = {m: field_feature(path, fields, MODALITY_FIELDS[m], dims) for m in modalities}
    return build_corpus(path, fields, name="iemocap", label_field="videoLabels",
                        label_names=IEMOCAP_LABELS, speaker_field="videoSpeakers",
                        sentence_field="videoSentence", id_field="videoIDs",
                        split_fields=[("train", "trainVid"), ("test", "testVid")],
                        features=features)
