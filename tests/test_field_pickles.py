"""Loaders for the field's feature pickles, on tiny synthetic files with the real structures.

Each builder below writes exactly the layout documented in the loader's module docstring
(dicts keyed by dialogue id, per-utterance lists, split lists), dumped with protocol 2 as the
original (often Python 2) files are. No real data is copied; one test reads the real COSMIC
IEMOCAP pickle from ../shared/data when it is present.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from merc.data.conversation import ensure_validation_split
from merc.data.cosmic_pickle import load_cosmic_roberta, load_cosmic_text
from merc.data.dialoguernn_pickle import load_dialoguernn_iemocap
from merc.data.mmgcn_pickle import load_m3net, load_meld_features_raw, load_mmgcn_iemocap
from merc.errors import MercInputError

IEMOCAP = ["hap", "sad", "neu", "ang", "exc", "fru"]
MELD = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SENTIMENT = ["neutral", "positive", "negative"]

# dialogue id -> (split, number of utterances)
IEMO_DIALOGUES = {
    "Ses01F_impro01": ("train", 3), "Ses01M_script01_1": ("train", 2),
    "Ses02F_impro02": ("train", 4), "Ses04M_impro05": ("valid", 2),
    "Ses05F_impro01": ("test", 3), "Ses05M_script02_2": ("test", 2),
}
MELD_DIALOGUES = {0: ("train", 3), 1: ("train", 2), 2: ("train", 4), 7: ("valid", 2),
                  3: ("test", 3), 4: ("test", 2)}


def _dump(tmp_path: Path, obj, name: str) -> Path:
    p = tmp_path / name
    with open(p, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return p


def _ids(dialogues, split):
    return [d for d, (s, _) in dialogues.items() if s == split]


def _labels(vid_index: int, n: int, k: int) -> list[int]:
    return [(vid_index + i) % k for i in range(n)]


def _onehot(i: int, width: int = 9) -> list[float]:
    v = [0.0] * width
    v[i % width] = 1.0
    return v


def _error(excinfo: pytest.ExceptionInfo, path: Path, *parts: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    assert str(path) in text, text
    for part in parts:
        assert part in text, text
    return text


# ---------------------------------------------------------------- DialogueRNN IEMOCAP 9-tuple

def iemocap_features(dt=3, da=4, dv=5, seed=0):
    """[videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
    trainVid, testVid]; the file has no valid list, so the valid dialogue joins train."""
    rng = np.random.default_rng(seed)
    ids, spk, lab, text, audio, vis, sent = {}, {}, {}, {}, {}, {}, {}
    for j, (vid, (_, n)) in enumerate(IEMO_DIALOGUES.items()):
        ids[vid] = [f"{vid}_{'FM'[i % 2]}{i:03d}" for i in range(n)]
        spk[vid] = ["F" if i % 2 == 0 else "M" for i in range(n)]
        lab[vid] = _labels(j, n, 6)
        # Three storage forms the loader must accept: list of 1-d arrays, 2-d array, lists.
        text[vid] = [rng.standard_normal(dt).astype(np.float32) for _ in range(n)]
        audio[vid] = rng.standard_normal((n, da))
        vis[vid] = rng.standard_normal((n, dv)).tolist()
        sent[vid] = [f"line {i} of {vid}" for i in range(n)]
    train = _ids(IEMO_DIALOGUES, "train") + _ids(IEMO_DIALOGUES, "valid")
    test = set(_ids(IEMO_DIALOGUES, "test"))  # a set: order must not depend on hashing
    return [ids, spk, lab, text, audio, vis, sent, train, test]


def test_dialoguernn_iemocap_loads(tmp_path):
    items = iemocap_features()
    p = _dump(tmp_path, items, "IEMOCAP_features.pkl")
    corpus = load_dialoguernn_iemocap(p)
    assert corpus.name == "iemocap" and corpus.label_names == IEMOCAP
    assert [c.id for c in corpus.split("train")] == items[7]
    assert [c.id for c in corpus.split("test")] == sorted(items[8])
    assert corpus.split("valid") == [] and corpus.valid_split == "none in file"
    assert corpus.feature_dims() == {"text": 3, "audio": 4, "video": 5}
    conv = corpus.split("train")[0]
    vid = conv.id
    assert conv.speakers == ["F", "M", "F"]
    assert conv.labels == [IEMOCAP[i] for i in items[2][vid]]
    assert conv.utterances == items[6][vid] and conv.utterance_ids == items[0][vid]
    for m, field in (("text", 3), ("audio", 4), ("video", 5)):
        assert conv.features[m].dtype == np.float32 and conv.features[m].flags.c_contiguous
        np.testing.assert_allclose(conv.features[m], np.asarray(items[field][vid]), rtol=1e-6)
    carved = ensure_validation_split(corpus, fraction=0.25, seed=0)
    assert len(carved.split("valid")) == 1 and len(carved.split("test")) == 2


def test_dialoguernn_modalities_and_mmgcn_alias(tmp_path):
    p = _dump(tmp_path, iemocap_features(), "IEMOCAP_features.pkl")
    assert load_dialoguernn_iemocap(p, modalities=("text",)).feature_modalities == ["text"]
    a, b = load_dialoguernn_iemocap(p), load_mmgcn_iemocap(p)
    assert a.content_hash() == b.content_hash()
    with pytest.raises(ValueError):
        load_dialoguernn_iemocap(p, modalities=("smell",))


def _set(items, index, vid, value):
    items[index][vid] = value
    return items


IEMO_BAD = [
    # (case, mutate(items) -> object to pickle, dialogue or None, field, utterance or None, text)
    ("arity", lambda it: it[:8], None, "pickle", None, "expected 9 items"),
    ("not a list", lambda it: dict(enumerate(it)), None, "pickle", None, "9-item list/tuple"),
    ("field not a dict", lambda it: it[:4] + [[1, 2]] + it[5:], None, "videoAudio", None,
     "dict keyed by dialogue id"),
    ("split not a list", lambda it: it[:7] + ["Ses01F_impro01"] + it[8:], None, "trainVid", None,
     "list of dialogue ids"),
    ("missing from dict", lambda it: (it[4].pop("Ses05F_impro01"), it)[1], "Ses05F_impro01",
     "videoAudio", None, "missing from this dict"),
    ("missing labels", lambda it: (it[2].pop("Ses02F_impro02"), it)[1], "Ses02F_impro02",
     "videoLabels", None, "missing"),
    ("speaker length", lambda it: _set(it, 1, "Ses01F_impro01", ["F", "M"]), "Ses01F_impro01",
     "videoSpeakers", None, "2 entries for 3 utterances"),
    ("sentence length", lambda it: _set(it, 6, "Ses01M_script01_1", ["a", "b", "c"]),
     "Ses01M_script01_1", "videoSentence", None, "3 entries for 2 utterances"),
    ("utterance id length", lambda it: _set(it, 0, "Ses01M_script01_1", ["x"]),
     "Ses01M_script01_1", "videoIDs", None, "1 entry for 2 utterances"),
    ("text rows", lambda it: _set(it, 3, "Ses05F_impro01", [np.zeros(3, np.float32)] * 2),
     "Ses05F_impro01", "videoText", None, "2 feature rows for 3 utterances"),
    ("audio rows", lambda it: _set(it, 4, "Ses05F_impro01", np.zeros((4, 4))),
     "Ses05F_impro01", "videoAudio", None, "4 feature rows for 3 utterances"),
    ("ragged row", lambda it: _set(it, 3, "Ses01F_impro01", [np.zeros(3), np.zeros(2),
                                                              np.zeros(3)]),
     "Ses01F_impro01", "videoText", "#1", "length 2"),
    ("dim across dialogues", lambda it: _set(it, 4, "Ses05M_script02_2", np.zeros((2, 7))),
     "Ses05M_script02_2", "videoAudio", None, "feature dim 7 differs from 4"),
    ("nan", lambda it: (it[5]["Ses02F_impro02"][2].__setitem__(1, float("nan")), it)[1],
     "Ses02F_impro02", "videoVisual", "#2", "non-finite"),
    ("inf", lambda it: (it[4]["Ses01F_impro01"].__setitem__((0, 0), np.inf), it)[1],
     "Ses01F_impro01", "videoAudio", "#0", "non-finite"),
    ("non-numeric features", lambda it: _set(it, 3, "Ses01F_impro01", ["a", "b", "c"]),
     "Ses01F_impro01", "videoText", "#0", "numeric"),
    ("label index", lambda it: _set(it, 2, "Ses05M_script02_2", [0, 6]), "Ses05M_script02_2",
     "videoLabels", "#1", "unknown label index 6"),
    ("negative label", lambda it: _set(it, 2, "Ses05M_script02_2", [-1, 0]),
     "Ses05M_script02_2", "videoLabels", "#0", "unknown label index -1"),
    ("label type", lambda it: _set(it, 2, "Ses05M_script02_2", [0, "ang"]), "Ses05M_script02_2",
     "videoLabels", "#1", "not an integer"),
    ("empty dialogue", lambda it: _set(it, 2, "Ses05M_script02_2", []), "Ses05M_script02_2",
     "videoLabels", None, "empty dialogue"),
    ("speaker type", lambda it: _set(it, 1, "Ses01M_script01_1", ["F", None]),
     "Ses01M_script01_1", "videoSpeakers", "#1", "speaker name or one-hot"),
    ("sentence type", lambda it: _set(it, 6, "Ses01M_script01_1", ["ok", 5]),
     "Ses01M_script01_1", "videoSentence", "#1", "expected a string"),
    ("in two splits", lambda it: it[:8] + [it[8] | {"Ses01F_impro01"}], "Ses01F_impro01",
     "testVid", None, "listed in both trainVid and testVid"),
    ("listed twice", lambda it: it[:7] + [it[7] + ["Ses01F_impro01"]] + it[8:],
     "Ses01F_impro01", "trainVid", None, "listed twice"),
]


@pytest.mark.parametrize("case,mutate,dialogue,field,utterance,text", IEMO_BAD,
                         ids=[c[0] for c in IEMO_BAD])
def test_dialoguernn_iemocap_bad_input(tmp_path, case, mutate, dialogue, field, utterance, text):
    p = _dump(tmp_path, mutate(iemocap_features()), "IEMOCAP_features.pkl")
    with pytest.raises(MercInputError) as err:
        load_dialoguernn_iemocap(p)
    parts = [f"field '{field}'", text]
    if dialogue is not None:
        parts.append(f"dialogue {dialogue}")
    if utterance is not None:
        parts.append(f"utterance {utterance}")
    _error(err, p, *parts)


def test_no_training_dialogues(tmp_path):
    items = iemocap_features()
    items[7] = []
    p = _dump(tmp_path, items, "IEMOCAP_features.pkl")
    with pytest.raises(MercInputError, match="no training dialogues"), \
            pytest.warns(UserWarning, match="in no split list"):
        load_dialoguernn_iemocap(p)


def test_unlisted_dialogue_warns(tmp_path):
    items = iemocap_features()
    items[7] = items[7][:-1]
    p = _dump(tmp_path, items, "IEMOCAP_features.pkl")
    with pytest.warns(UserWarning, match="1 dialogue"):
        corpus = load_dialoguernn_iemocap(p)
    assert len(corpus.conversations) == len(IEMO_DIALOGUES) - 1


# ---------------------------------------------------------------- MELD feature pickles

def meld_items(variant="mmgcn", dt=6, da=3, dv=4, seed=1):
    """MMGCN (10 items) or DialogueRNN/bc-LSTM (9 items) MELD_features_raw layout."""
    rng = np.random.default_rng(seed)
    ids, spk, emo, text, audio, vis, sent, senti = {}, {}, {}, {}, {}, {}, {}, {}
    for j, (vid, (_, n)) in enumerate(MELD_DIALOGUES.items()):
        ids[vid] = list(range(n))
        spk[vid] = [_onehot(i % 2 + j) for i in range(n)]
        emo[vid] = _labels(j, n, 7)
        senti[vid] = _labels(j, n, 3)
        text[vid] = rng.standard_normal((n, dt)).astype(np.float32)
        audio[vid] = [rng.standard_normal(da) for _ in range(n)]
        vis[vid] = rng.standard_normal((n, dv)).astype(np.float32)
        sent[vid] = [f"Friends line {i}" for i in range(n)]
    train = _ids(MELD_DIALOGUES, "train") + _ids(MELD_DIALOGUES, "valid")
    test = _ids(MELD_DIALOGUES, "test")
    if variant == "mmgcn":
        return [ids, spk, emo, text, audio, vis, sent, train, test, {"anything": [1, 2]}]
    return [ids, spk, emo, text, audio, sent, train, test, senti]


def test_mmgcn_meld_loads(tmp_path):
    items = meld_items("mmgcn")
    corpus = load_meld_features_raw(_dump(tmp_path, items, "MELD_features_raw1.pkl"))
    assert corpus.name == "meld" and corpus.label_names == MELD
    assert [c.id for c in corpus.split("train")] == ["0", "1", "2", "7"]
    assert [c.id for c in corpus.split("test")] == ["3", "4"]
    assert corpus.feature_dims() == {"audio": 3, "text": 6, "video": 4}
    conv = corpus.split("train")[1]
    assert conv.speakers == ["speaker1", "speaker2"]
    assert conv.labels == [MELD[i] for i in items[2][1]]
    assert conv.utterances == ["Friends line 0", "Friends line 1"]
    np.testing.assert_array_equal(conv.features["video"], items[5][1])


def test_dialoguernn_meld_loads_sentiment(tmp_path):
    items = meld_items("dialoguernn")
    p = _dump(tmp_path, items, "MELD_features_raw.pkl")
    emotion = load_meld_features_raw(p)
    assert emotion.feature_modalities == ["audio", "text"]
    assert emotion.conversations[0].labels == [MELD[i] for i in items[2][0]]
    sentiment = load_meld_features_raw(p, label="sentiment")
    assert sentiment.label_names == SENTIMENT
    assert sentiment.conversations[0].labels == [SENTIMENT[i] for i in items[8][0]]
    with pytest.raises(ValueError):
        load_meld_features_raw(p, modalities=("video",))


def test_meld_bad_input(tmp_path):
    mm = _dump(tmp_path, meld_items("mmgcn"), "MELD_features_raw1.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(mm, label="sentiment")
    _error(err, mm, "emotion labels only", "field 'videoLabels'")

    iemo = _dump(tmp_path, iemocap_features(), "IEMOCAP_features.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(iemo)
    _error(err, iemo, "IEMOCAP_features.pkl layout", "field 'pickle'")

    items = meld_items("mmgcn")
    items[1][2][1] = [0.0] * 9
    p = _dump(tmp_path, items, "bad_speaker.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(p)
    _error(err, p, "dialogue 2", "utterance #1", "field 'videoSpeakers'", "not one-hot")

    items = meld_items("mmgcn")
    items[2][3] = [0, 7, 1]
    p = _dump(tmp_path, items, "bad_label.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(p)
    _error(err, p, "dialogue 3", "utterance #1", "field 'videoLabels'", "unknown label index 7")

    items = meld_items("mmgcn")
    del items[5][4]
    p = _dump(tmp_path, items, "missing_visual.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(p)
    _error(err, p, "dialogue 4", "field 'videoVisual'", "missing")

    p = _dump(tmp_path, meld_items("mmgcn")[:8], "eight.pkl")
    with pytest.raises(MercInputError) as err:
        load_meld_features_raw(p)
    _error(err, p, "expected 10 items", "field 'pickle'")


# ---------------------------------------------------------------- COSMIC RoBERTa / text pickles

def roberta_layers(dialogues, d=8, seed=2):
    rng = np.random.default_rng(seed)
    layers = [{}, {}, {}, {}]
    for vid, (_, n) in dialogues.items():
        for layer in layers:
            # As the extractor stores them: a list of 1-d float32 rows per dialogue.
            layer[vid] = [row for row in rng.standard_normal((n, d)).astype(np.float32)]
    return layers


def iemocap_roberta(d=8):
    spk, lab, sent = {}, {}, {}
    for j, (vid, (_, n)) in enumerate(IEMO_DIALOGUES.items()):
        spk[vid] = ["M" if i % 2 else "F" for i in range(n)]
        lab[vid] = _labels(j + 1, n, 6)
        sent[vid] = [f"roberta line {i}" for i in range(n)]
    r1, r2, r3, r4 = roberta_layers(IEMO_DIALOGUES, d)
    # File order: train, TEST, valid.
    return [spk, lab, r1, r2, r3, r4, sent, _ids(IEMO_DIALOGUES, "train"),
            _ids(IEMO_DIALOGUES, "test"), _ids(IEMO_DIALOGUES, "valid")]


def meld_roberta(d=8):
    spk, emo, senti, sent = {}, {}, {}, {}
    for j, (vid, (_, n)) in enumerate(MELD_DIALOGUES.items()):
        spk[vid] = [_onehot(i) for i in range(n)]
        emo[vid] = _labels(j + 2, n, 7)
        senti[vid] = _labels(j, n, 3)
        sent[vid] = [f"meld line {i}" for i in range(n)]
    r1, r2, r3, r4 = roberta_layers(MELD_DIALOGUES, d, seed=3)
    return [spk, emo, senti, r1, r2, r3, r4, sent, _ids(MELD_DIALOGUES, "train"),
            _ids(MELD_DIALOGUES, "test"), _ids(MELD_DIALOGUES, "valid")]


def test_cosmic_iemocap_roberta_splits_and_layers(tmp_path):
    items = iemocap_roberta()
    p = _dump(tmp_path, items, "iemocap_features_roberta.pkl")
    corpus = load_cosmic_roberta(p)
    assert corpus.valid_split == "official"
    for split in ("train", "valid", "test"):
        assert [c.id for c in corpus.split(split)] == _ids(IEMO_DIALOGUES, split)
    assert [c.split for c in corpus.conversations] == ["train"] * 3 + ["valid"] + ["test"] * 2
    conv = corpus.split("test")[0]
    vid = conv.id
    assert conv.labels == [IEMOCAP[i] for i in items[1][vid]]
    assert conv.speakers == items[0][vid] and conv.utterances == items[6][vid]
    layers = [np.stack(items[2 + k][vid]) for k in range(4)]
    np.testing.assert_allclose(conv.features["text"], np.mean(layers, axis=0), rtol=1e-6)

    last = load_cosmic_roberta(p, text_layers=(1,)).split("test")[0].features["text"]
    np.testing.assert_array_equal(last, layers[0])
    cat = load_cosmic_roberta(p, text_layers=(2, 4), text_combine="concat")
    np.testing.assert_array_equal(cat.split("test")[0].features["text"],
                                  np.hstack([layers[1], layers[3]]))
    assert cat.feature_dims() == {"text": 16}
    for bad in [(), (0,), (1, 1), (5,)]:
        with pytest.raises(ValueError):
            load_cosmic_roberta(p, text_layers=bad)
    with pytest.raises(ValueError):
        load_cosmic_roberta(p, text_combine="sum")


def test_cosmic_meld_roberta_labels(tmp_path):
    items = meld_roberta()
    p = _dump(tmp_path, items, "meld_features_roberta.pkl")
    corpus = load_cosmic_roberta(p)  # dataset inferred from 11 items
    assert corpus.name == "meld" and corpus.label_names == MELD
    assert [c.id for c in corpus.split("valid")] == ["7"]
    conv = corpus.split("train")[0]
    assert conv.labels == [MELD[i] for i in items[1][0]]
    assert conv.speakers == ["speaker0", "speaker1", "speaker2"]
    senti = load_cosmic_roberta(p, dataset="meld", label="sentiment")
    assert senti.split("train")[0].labels == [SENTIMENT[i] for i in items[2][0]]


def test_cosmic_bad_input(tmp_path):
    p = _dump(tmp_path, iemocap_roberta()[:9], "nine.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, "not a COSMIC RoBERTa pickle", "got 9 items", "field 'pickle'")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p, dataset="iemocap")
    _error(err, p, "expected 10 items")

    items = iemocap_roberta()
    del items[4]["Ses04M_impro05"]  # roberta3 lacks a valid dialogue
    p = _dump(tmp_path, items, "missing_layer.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, "dialogue Ses04M_impro05", "field 'roberta3'", "missing")
    # A layer that is not selected is not needed.
    assert load_cosmic_roberta(p, text_layers=(1, 2)).split("valid")

    items = iemocap_roberta()
    items[2]["Ses05M_script02_2"] = items[2]["Ses05M_script02_2"][:1]
    p = _dump(tmp_path, items, "short_layer.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, "dialogue Ses05M_script02_2", "field 'roberta1'", "1 feature rows for 2")

    items = iemocap_roberta()
    items[3]["Ses01F_impro01"][1] = np.full(8, np.nan, dtype=np.float32)
    p = _dump(tmp_path, items, "nan_layer.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, "dialogue Ses01F_impro01", "utterance #1", "field 'roberta2'", "non-finite")

    items = iemocap_roberta()
    items[1]["Ses04M_impro05"] = [2, 9]
    p = _dump(tmp_path, items, "bad_label.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, "dialogue Ses04M_impro05", "utterance #1", "field 'labels'", "index 9")

    items = iemocap_roberta()
    items[9] = items[9] + [items[8][0]]  # a test dialogue also listed as valid
    p = _dump(tmp_path, items, "leak.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_roberta(p)
    _error(err, p, f"dialogue {items[8][0]}", "field 'testIds'", "listed in both")


def test_cosmic_text_pickles(tmp_path):
    full = iemocap_roberta()
    text_items = [full[0], full[1], full[6], full[7], full[8], full[9]]
    corpus = load_cosmic_text(_dump(tmp_path, text_items, "iemocap.pkl"))
    assert corpus.counts() == {"train": {"dialogues": 3, "utterances": 9},
                               "valid": {"dialogues": 1, "utterances": 2},
                               "test": {"dialogues": 2, "utterances": 5}}
    assert corpus.feature_modalities == [] and corpus.valid_split == "official"

    m = meld_roberta()
    meld = load_cosmic_text(_dump(tmp_path, [m[0], m[1], m[2], m[7], m[8], m[9], m[10]],
                                  "meld.pkl"), label="sentiment")
    assert meld.name == "meld" and meld.label_names == SENTIMENT

    p = _dump(tmp_path, text_items[:5], "five.pkl")
    with pytest.raises(MercInputError) as err:
        load_cosmic_text(p)
    _error(err, p, "got 5 items", "field 'pickle'")


# ---------------------------------------------------------------- M3Net pairing

def test_m3net_iemocap_uses_roberta_text(tmp_path):
    feats = iemocap_features()
    rob = iemocap_roberta()
    fp = _dump(tmp_path, feats, "IEMOCAP_features.pkl")
    rp = _dump(tmp_path, rob, "iemocap_features_roberta.pkl")
    corpus = load_m3net(fp, rp)
    # Speakers, labels and splits come from the multimodal pickle (no valid list there).
    assert corpus.split("valid") == []
    conv = corpus.split("train")[0]
    vid = conv.id
    assert conv.labels == [IEMOCAP[i] for i in feats[2][vid]]
    layers = [np.stack(rob[2 + k][vid]) for k in range(4)]
    np.testing.assert_allclose(conv.features["text"], np.mean(layers, axis=0), rtol=1e-6)
    np.testing.assert_allclose(conv.features["audio"], feats[4][vid], rtol=1e-6)
    assert corpus.feature_dims() == {"audio": 4, "text": 8, "video": 5}

    del rob[5]["Ses05F_impro01"]
    rp2 = _dump(tmp_path, rob, "broken_roberta.pkl")
    with pytest.raises(MercInputError) as err:
        load_m3net(fp, rp2)
    _error(err, rp2, "dialogue Ses05F_impro01", "field 'roberta4'", "missing")


def test_m3net_meld(tmp_path):
    fp = _dump(tmp_path, meld_items("mmgcn"), "MELD_features_raw1.pkl")
    rp = _dump(tmp_path, meld_roberta(), "meld_features_roberta.pkl")
    corpus = load_m3net(fp, rp, dataset="meld", text_layers=(1, 2), text_combine="concat")
    assert corpus.feature_dims() == {"audio": 3, "text": 16, "video": 4}
    assert [c.id for c in corpus.split("test")] == ["3", "4"]


# ---------------------------------------------------------------- the real COSMIC IEMOCAP pickle

def _shared_data() -> Path:
    env = os.environ.get("MERC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.real_data
def test_real_cosmic_iemocap_pickle():
    path = _shared_data() / "iemocap" / "iemocap_cosmic.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    corpus = load_cosmic_text(path)
    counts = corpus.counts()
    assert {s: counts[s]["dialogues"] for s in counts} == {"train": 108, "valid": 12, "test": 31}
    assert sum(c["utterances"] for c in counts.values()) == 7433
    assert corpus.label_names == IEMOCAP and corpus.valid_split == "official"
    assert {s for c in corpus.conversations for s in c.speakers} == {"M", "F"}
    # The JSONL beside it holds the same dialogues, texts and labels (label map check).
    jsonl = path.with_name("conversations.jsonl")
    if jsonl.is_file():
        by_id = {c.id: c for c in corpus.conversations}
        with open(jsonl, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                conv = by_id[rec["dialogue_id"]]
                assert conv.split == rec["split"]
                assert conv.labels == [u["label"] for u in rec["utterances"]]
                assert conv.utterances == [u["text"] for u in rec["utterances"]]
