"""Fine-tuned context-aware text encoders: input formatting, a tiny fine-tune, and the round trip
through feature extraction, the feature cache, training and ``merc predict``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from merc.text.input_format import ContextFormat, InputFormatter
from merc.text.encoder import bundled_model_dir

CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


TEXTS = ["hello there my friend how are you doing on this fine day", "fine", "I am so angry at "
         "you right now!", "why?", "", "because you forgot the oven and the kitchen is on fire"]
SPEAKERS = ["Ana", "Ben", "Ana", "Ben", "Ana", "Ben"]


@pytest.mark.parametrize("past,future,budget", [(0, 0, 8), (2, 0, 16), (3, 2, 20), (5, 5, 64),
                                                (1, 3, 12), (4, 1, 9)])
def test_truncation_never_cuts_the_target(tokenizer, past, future, budget):
    fmt = ContextFormat(past=past, future=future, speakers=True, max_tokens=budget,
                        layout="window")
    f = InputFormatter(tokenizer, fmt, cls_id=CLS, sep_id=SEP)
    pieces = f.pieces(TEXTS, SPEAKERS)
    for i, x in enumerate(f.conversation(TEXTS, SPEAKERS)):
        s, e = x.target
        assert x.ids[0] == CLS and x.ids[-1] == SEP
        if pieces[i]:
            assert x.ids[s:e] == pieces[i]              # the whole target, untouched
        else:
            assert e - s == 1 and x.ids[s] == SEP        # empty utterance: its separator
        # The budget binds whenever the target itself fits in it.
        if len(pieces[i]) + 4 <= budget:
            assert len(x.ids) <= budget
    assert f.truncated_targets == 0


def test_far_context_is_dropped_first(tokenizer):
    """With room for part of the context, the nearest utterances are kept whole and only the
    farthest kept one is cut (at its far end)."""
    fmt = ContextFormat(past=4, future=0, speakers=True, max_tokens=22,  # names on purpose
                        layout="window")
    f = InputFormatter(tokenizer, fmt, cls_id=CLS, sep_id=SEP)
    x = f.conversation(TEXTS, SPEAKERS)[3]               # target "Ben: why?"
    text = _decode(tokenizer, x.ids)
    assert "ana : i am so angry at you right now!" in text       # nearest past, whole
    assert "hello" not in text                                    # farthest past, dropped
    assert text.index("angry") < text.index("why")
    assert _decode(tokenizer, x.ids[x.target[0]:x.target[1]]) == "ben : why?"
    # No speakers: names vanish from the input, the target span is the bare text.
    g = InputFormatter(tokenizer, replace(fmt, speakers=False), cls_id=CLS, sep_id=SEP)
    y = g.conversation(TEXTS, SPEAKERS)[3]
    assert "ana" not in _decode(tokenizer, y.ids) and _decode(
        tokenizer, y.ids[y.target[0]:y.target[1]]) == "why?"


def test_future_context_and_no_context_layouts(tokenizer):
    f = InputFormatter(tokenizer, ContextFormat(past=1, future=1, speakers=True, max_tokens=128,
                                                layout="window"), cls_id=CLS, sep_id=SEP)
    x = f.conversation(TEXTS, SPEAKERS)[1]
    assert _decode(tokenizer, x.ids).split(" [SEP] ")[1] == "ben : fine"
    first = f.conversation(TEXTS, SPEAKERS)[0]           # no past: starts with the target
    assert first.target[0] == 1
    alone = InputFormatter(tokenizer, ContextFormat(past=0, future=0, layout="window"),
                           cls_id=CLS, sep_id=SEP)
    assert [len(x.ids) for x in alone.conversation(["a b", "c"], ["A", "B"])] == [
        2 + len(p) for p in alone.pieces(["a b", "c"], ["A", "B"])]


def test_a_past_only_window_never_reads_ahead_and_packing_does(tokenizer):
    """The live path's encoder input (window layout, future=0): utterance i's input is the same
    whether or not later utterances exist. The packed layout shares one input between
    consecutive utterances, so an earlier one sees later ones: live prediction refuses it."""
    def inputs(layout, n):
        f = InputFormatter(tokenizer, ContextFormat(past=2, future=0, max_tokens=64,
                                                    layout=layout), cls_id=CLS, sep_id=SEP)
        return [x.ids for x in f.conversation(TEXTS[:n], SPEAKERS[:n])]

    whole = inputs("window", len(TEXTS))
    for n in range(1, len(TEXTS)):
        assert inputs("window", n) == whole[:n]
    packed = inputs("packed", len(TEXTS))
    assert any(inputs("packed", n) != packed[:n] for n in range(1, len(TEXTS)))


@pytest.mark.parametrize("layout", ["window", "packed"])
def test_a_target_longer_than_the_model_is_counted(tokenizer, layout):
    f = InputFormatter(tokenizer, ContextFormat(past=2, max_tokens=16, layout=layout),
                       cls_id=CLS, sep_id=SEP, max_positions=32)
    xs = f.conversation(["word " * 100, "short"], ["A", "B"])
    assert len(xs[0].ids) <= 32 and f.truncated_targets == 1
    assert len(xs[1].ids) <= 16


@pytest.mark.parametrize("past,future,budget", [(0, 0, 16), (2, 1, 24), (4, 1, 40),
                                                (4, 1, 512), (8, 8, 30)])
def test_packed_layout_keeps_every_target_whole_and_shares_chunks(tokenizer, past, future,
                                                                 budget):
    """``packed``: consecutive targets share one input (the same ids list), each pooled from its
    own whole piece; context is the nearest utterances outside the run; the budget binds."""
    fmt = ContextFormat(past=past, future=future, speakers=True, max_tokens=budget,
                        layout="packed")
    f = InputFormatter(tokenizer, fmt, cls_id=CLS, sep_id=SEP)
    pieces = f.pieces(TEXTS, SPEAKERS)
    xs = f.conversation(TEXTS, SPEAKERS)
    assert len(xs) == len(TEXTS)
    chunks: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        s, e = x.target
        assert x.ids[0] == CLS and x.ids[-1] == SEP
        if pieces[i]:
            assert x.ids[s:e] == pieces[i] and x.ids[e] == SEP
        else:
            assert e - s == 1 and x.ids[s] == SEP
        if len(pieces[i]) + 2 <= budget:
            assert len(x.ids) <= budget
        chunks.setdefault(id(x.ids), []).append(i)
    runs = list(chunks.values())
    assert [i for r in runs for i in r] == list(range(len(TEXTS)))     # consecutive runs
    assert all(r == list(range(r[0], r[-1] + 1)) for r in runs)
    if budget >= 512:
        assert len(runs) == 1                                           # one chunk: no context
        assert len(xs[0].ids) == 1 + sum(len(p) + 1 for p in pieces)
    for r in runs[1:]:
        x = xs[r[0]]
        before = x.ids[1:x.target[0]]                                   # the past context
        if past and budget - sum(len(pieces[i]) + 1 for i in r) > 2:
            prev = pieces[r[0] - 1]
            # Nearest past utterance: whole, or cut at its far end (its last tokens kept).
            assert before and before[-1] == SEP
            tail = before[:-1][-len(prev):] if prev else []
            assert prev[len(prev) - len(tail):] == tail
        if not past:
            assert before == []
    assert f.truncated_targets == 0


def test_packed_chunks_are_encoded_once_and_pooled_per_target(tiny_encoder):
    """A packed chunk is one row of the batch; each target's vector is the mean of its own span
    of that row's states (checked against the chunk encoded alone)."""
    from merc.text.backbone import ContextEncoder, encode_inputs, pad_inputs

    _, out, _, _ = tiny_encoder
    tok = __import__("tokenizers").Tokenizer.from_file(str(out / "tokenizer.json"))
    f = InputFormatter(tok, ContextFormat(past=2, future=1, max_tokens=24, layout="packed"),
                       cls_id=CLS, sep_id=SEP)
    xs = f.conversation(TEXTS, SPEAKERS)
    n_chunks = len({id(x.ids) for x in xs})
    assert 1 < n_chunks < len(xs)
    batch = pad_inputs(xs, 0)
    assert batch.ids.shape[0] == n_chunks and batch.rows.tolist() == sorted(batch.rows.tolist())
    model = ContextEncoder(out).eval()
    got = encode_inputs(model, xs, 0, batch_size=2)
    for i, x in enumerate(xs):
        with torch.no_grad():
            h = model.backbone.hidden(torch.tensor([x.ids]),
                                      torch.ones(1, len(x.ids), dtype=torch.bool))[0]
        s, e = x.target
        np.testing.assert_allclose(got[i], h[s:e].mean(0).numpy(), atol=1e-5)


@pytest.mark.parametrize("bad", [{"past": -1}, {"max_tokens": 4}, {"speakers": "yes"},
                                 {"future": 1.5}, {"layout": "dialogue"}])
def test_context_format_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="context\\."):
        ContextFormat(**bad)


# --- a tiny fine-tune on a synthetic text corpus ---------------------------------------------

WORDS = {"joy": ["wonderful", "great news", "so happy", "we won"],
         "anger": ["furious", "so angry", "how dare you", "I hate this"],
         "neutral": ["the bus leaves at nine", "ok", "it is on the table", "see you"]}


def write_text_corpus(root: Path, n_train: int = 10, n_valid: int = 4, n_test: int = 4,
                      seed: int = 0) -> Path:
    """A generic-format corpus with transcripts only (no feature files): the label is written
    in the words, so a fine-tune has something to learn."""
    rng = np.random.default_rng(seed)
    labels = sorted(WORDS)
    lines = []
    for d, split in enumerate(["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test):
        utts = []
        for i in range(int(rng.integers(3, 6))):
            lab = labels[int(rng.integers(len(labels)))]
            phrase = WORDS[lab][int(rng.integers(len(WORDS[lab])))]
            utts.append({"utterance_id": f"d{d}_{i}", "speaker": ["Ana", "Ben"][i % 2],
                         "text": f"{phrase}, said {i}", "label": lab})
        lines.append(json.dumps({"dialogue_id": f"d{d}", "split": split, "utterances": utts}))
    root.mkdir(parents=True, exist_ok=True)
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A one-epoch, top-layer fine-tune of the bundled MiniLM on the synthetic corpus."""
    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.finetune import FinetuneConfig, finetune_encoder

    root = write_text_corpus(tmp_path_factory.mktemp("corpus"))
    corpus = ensure_validation_split(load_corpus("jsonl", root), 0.1, 0)
    out = tmp_path_factory.mktemp("enc") / "enc"
    lines: list[str] = []
    cfg = FinetuneConfig(context=ContextFormat(past=2, future=1, speakers=True, max_tokens=40),
                         train_layers=1,
                         max_epochs=2, patience=2, batch_size=8, lr=5e-4, accelerator="cpu")
    record = finetune_encoder(corpus, cfg, out, echo=lines.append)
    return root, out, record, lines


def test_finetune_changes_the_encoder_and_records_how(tiny_encoder):
    from safetensors.torch import load_file

    root, out, record, lines = tiny_encoder
    base = load_file(str(bundled_model_dir() / "model.safetensors"))
    tuned = load_file(str(out / "model.safetensors"))
    assert set(tuned) >= {k for k in base if k != "embeddings.position_ids"}
    top, bottom = "encoder.layer.5.output.dense.weight", "encoder.layer.0.output.dense.weight"
    assert not torch.equal(base[top], tuned[top])          # the trained layer moved
    assert torch.equal(base[bottom], tuned[bottom])        # frozen layers did not
    saved = json.loads((out / "merc_encoder.json").read_text())
    assert saved["context"] == {"past": 2, "future": 1, "speakers": True, "max_tokens": 40,
                                "layout": "packed"}                # the default layout
    # A record written before layouts existed was a window record and still loads as one.
    from merc.text.record import EncoderRecord

    del saved["context"]["layout"]
    legacy = out.parent / "legacy"
    legacy.mkdir(exist_ok=True)
    (legacy / "merc_encoder.json").write_text(json.dumps(saved))
    assert EncoderRecord.load(legacy).context.layout == "window"
    t = saved["training"]
    assert t["corpus"] == "corpus0" and len(t["corpus_fingerprint"]) == 64
    assert t["settings"]["train_layers"] == 1 and t["label_names"] == ["anger", "joy", "neutral"]
    assert 0 <= t["valid_wf1"] <= 100 and len(t["history"]) == 2 and t["seconds"] > 0
    assert record.dim == 384 and (out / "tokenizer.json").is_file()
    assert any("valid W-F1" in line for line in lines)


def test_encoder_folder_loads_in_transformers(tiny_encoder):
    """The folder is a plain Hugging Face BERT folder: other tools can read it."""
    from transformers import AutoModel

    from merc.text.backbone import ContextEncoder

    _, out, _, _ = tiny_encoder
    hf = AutoModel.from_pretrained(str(out), local_files_only=True).eval()
    ours = ContextEncoder(out).eval()
    ids = torch.tensor([[CLS, 7592, 2088, SEP]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        mine = ours.backbone.hidden(ids, mask)
    torch.testing.assert_close(mine, ref, atol=2e-5, rtol=1e-4)


def test_extraction_cache_and_predict_use_identical_inputs(tiny_encoder, tmp_path, monkeypatch):
    """Features extracted for training equal those ``merc predict`` computes for the same
    conversation; the cache key changes when the encoder folder changes."""
    from merc.data import load_corpus
    from merc.features import FeatureSpec, build_features
    from merc.data.conversation import Corpus
    from merc.features.extractor import FeatureExtractor
    from merc.text.folder import FinetunedTextEncoder

    root, out, _, _ = tiny_encoder
    corpus = load_corpus("jsonl", root)
    spec = FeatureSpec(text=str(out), normalize=False)
    calls = []
    real = FinetunedTextEncoder.encode
    monkeypatch.setattr(FinetunedTextEncoder, "encode",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    cache = tmp_path / "cache"
    first = build_features(corpus, spec, cache, progress=False)
    build_features(corpus, spec, cache, progress=False)
    assert len(calls) == 1                                   # second run: a cache hit
    conv = first.conversations[-1]
    # Prediction's settings: no cache, one conversation on its own.
    alone = Corpus("predict", [corpus.conversations[-1]], corpus.label_names, source="predict")
    predicted = FeatureExtractor(spec, cache=False).extract(alone).conversations[0] \
        .features["text"]
    np.testing.assert_allclose(predicted, conv.features["text"], atol=1e-5)
    n = len(calls)
    # Another encoder in the same place (re-fine-tuned): new key, recomputed.
    copy = tmp_path / "enc2"
    import shutil

    shutil.copytree(out, copy)
    build_features(corpus, FeatureSpec(text=str(copy), normalize=False), cache, progress=False)
    assert len(calls) == n + 1
    rec = json.loads((copy / "merc_encoder.json").read_text())
    rec["context"]["past"] = 0
    (copy / "merc_encoder.json").write_text(json.dumps(rec))
    again = build_features(corpus, FeatureSpec(text=str(copy), normalize=False), cache,
                           progress=False)
    assert len(calls) == n + 2
    assert not np.allclose(again.conversations[-1].features["text"], conv.features["text"])


def test_first_last_pooling_by_hand_and_followed_from_the_record(tiny_encoder, tmp_path):
    """``first-last`` (DF-ERC's official pooling) averages the target span's first and last
    states; the record's pooling is what extraction uses."""
    import shutil

    from merc.data import load_corpus
    from merc.text.folder import FinetunedTextEncoder
    from merc.text.backbone import pool_target

    h = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)      # row 0: 0..4, row 1: 5..9
    spans = torch.tensor([[1, 4], [2, 3]])                               # [start, end)
    torch.testing.assert_close(pool_target(h, spans, "first-last")[:, 0],
                               torch.tensor([(1 + 3) / 2, 7.0]))         # a 1-token span: itself
    torch.testing.assert_close(pool_target(h, spans)[:, 0], torch.tensor([2.0, 7.0]))

    root, out, _, _ = tiny_encoder
    conv = load_corpus("jsonl", root).conversations[:1]
    copy = tmp_path / "enc-fl"
    shutil.copytree(out, copy)
    rec = json.loads((copy / "merc_encoder.json").read_text())
    rec["pooling"] = "first-last"
    (copy / "merc_encoder.json").write_text(json.dumps(rec))
    enc = FinetunedTextEncoder(copy)
    got = enc.encode(conv)
    x = enc.inputs(conv)[0]
    model = enc._model(None)
    with torch.no_grad():
        states = model.backbone.hidden(torch.tensor([x.ids]),
                                       torch.ones(1, len(x.ids), dtype=torch.bool))[0]
    start, end = x.target
    np.testing.assert_allclose(got[0], ((states[start] + states[end - 1]) / 2).numpy(),
                               atol=1e-5)
    assert not np.allclose(got, FinetunedTextEncoder(out).encode(conv))
    with pytest.raises(ValueError, match="finetune.pooling: expected one of"):
        from merc.config import ExperimentConfig

        ExperimentConfig().with_overrides(["finetune.pooling=cls"])


def test_extraction_warns_about_targets_longer_than_the_encoder(tiny_encoder, caplog):
    from merc.data.conversation import Conversation
    from merc.text.folder import FinetunedTextEncoder

    _, out, _, _ = tiny_encoder
    conv = Conversation(id="long", split="test", speakers=["A", "B"],
                        utterances=["word " * 600, "short"])
    with caplog.at_level("WARNING"):
        FinetunedTextEncoder(out).encode([conv])
    assert "1 of 2 utterances are longer than the encoder's 512 positions" in caplog.text


def test_a_broken_encoder_record_is_one_clear_line(tmp_path):
    from merc.errors import MercInputError
    from merc.text.folder import FinetunedTextEncoder

    (tmp_path / "merc_encoder.json").write_text("{\"version\": 1}")
    with pytest.raises(MercInputError) as e:
        FinetunedTextEncoder(tmp_path)
    assert "merc_encoder.json" in str(e.value) and "\n" not in str(e.value)


def test_cross_fit_embeds_train_dialogues_with_the_encoder_that_never_saw_them(tmp_path):
    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.finetune import FinetuneConfig, finetune_encoder
    from merc.features import FeatureSpec, build_features
    from merc.text.folder import FinetunedTextEncoder

    # No official validation split: it is carved from train, so its dialogues sit between
    # train dialogues in corpus order (the fingerprint must not depend on that order).
    root = write_text_corpus(tmp_path / "corpus", n_train=8, n_valid=0, n_test=2)
    corpus = ensure_validation_split(load_corpus("jsonl", root), 0.25, 1)
    splits = [c.split for c in corpus.conversations]
    assert splits.index("valid") < max(i for i, s in enumerate(splits) if s == "train")
    cfg = FinetuneConfig(context=ContextFormat(past=1, future=0, max_tokens=24), train_layers=1,
                         max_epochs=1, batch_size=8, lr=1e-3, cross_fit=2, accelerator="cpu")
    out = tmp_path / "enc"
    record = finetune_encoder(corpus, cfg, out, echo=lambda line: None)
    fold_of = record.training["cross_fit"]["fold_of"]
    assert sorted(fold_of) == sorted(str(c.id) for c in corpus.split("train"))
    assert sorted(set(fold_of.values())) == [0, 1]
    assert all((out / "folds" / str(k) / "model.safetensors").is_file() for k in (0, 1))
    enc = FinetunedTextEncoder(out)
    folds = enc.cross_fit_folds(corpus.conversations)
    assert [f is not None for f in folds] == [c.split == "train" for c in corpus.conversations]
    # Another corpus (or a changed one) never gets fold encoders.
    other = [replace(c, utterances=[t + "!" for t in c.utterances]) for c in corpus.conversations]
    assert enc.cross_fit_folds(other) == [None] * len(other)
    feats = build_features(corpus, FeatureSpec(text=str(out), normalize=False), tmp_path / "c",
                           progress=False)
    main_only = enc.encode([replace(c, split="test") for c in corpus.conversations])
    rows = np.cumsum([0] + [len(c) for c in corpus.conversations])
    for i, c in enumerate(feats.conversations):
        same = np.allclose(c.features["text"], main_only[rows[i]:rows[i + 1]], atol=1e-5)
        assert same == (c.split != "train"), (c.id, c.split)


def test_cli_finetune_train_predict_round_trip(tmp_path, capsys):
    """`merc finetune` -> `merc train --text-encoder ENC` -> `merc predict` with the checkpoint:
    the checkpoint's feature spec names the folder and predict formats inputs as training did."""
    from merc.cli import main

    root = write_text_corpus(tmp_path / "corpus", n_train=8, n_valid=3, n_test=3)
    enc, run = tmp_path / "enc", tmp_path / "run"
    assert main(["finetune", "--corpus", "jsonl", "--data-dir", str(root), "--out", str(enc),
                 "finetune.max_epochs=1", "finetune.train_layers=1", "finetune.batch_size=8",
                 "finetune.context.max_tokens=32", "finetune.accelerator=cpu"]) == 0
    assert "use it with --text-encoder" in capsys.readouterr().out
    assert (enc / "finetune.yaml").is_file()
    assert main(["train", "--corpus", "jsonl", "--data-dir", str(root), "--text-encoder",
                 str(enc), "--model", "bc-lstm", "--out", str(run), "train.max_epochs=2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["feature_spec"]["text"] == str(enc)
    talk = tmp_path / "talk.jsonl"
    talk.write_text("\n".join(json.dumps(u) for u in [
        {"speaker": "Ana", "text": "we won, so happy"}, {"speaker": "Ben", "text": "how dare you"},
    ]) + "\n")
    out = tmp_path / "pred.json"
    assert main(["predict", str(talk), "--checkpoint", str(run / "seed_0" / "best.ckpt"), "--out",
                 str(out), "--quiet"]) == 0
    pred = json.loads(out.read_text())
    assert [u["speaker"] for u in pred["utterances"]] == ["Ana", "Ben"]
    assert set(pred["labels"]) == {"anger", "joy", "neutral"}


@pytest.mark.parametrize("override,key", [("finetune.context.past=-1", "finetune.context.past"),
                                          ("finetune.context.bogus=1", "finetune.context.bogus"),
                                          ("finetune.lr=abc", "finetune.lr"),
                                          ("finetune.head=lstm", "finetune.head")])
def test_cli_finetune_config_errors_come_first(tmp_path, capsys, override, key):
    from merc.cli import main

    assert main(["finetune", "--corpus", "meld", "--data-dir", str(tmp_path / "absent"),
                 "--out", str(tmp_path / "enc"), override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and key in err and not (tmp_path / "enc").exists()


def test_any_local_hugging_face_folder_fine_tunes(tmp_path):
    """A non-BERT folder (a tiny random RoBERTa with its own tokenizer, built offline) goes
    through transformers.AutoModel: fine-tune, record its special tokens, extract."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import RobertaConfig, RobertaModel

    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.finetune import FinetuneConfig, finetune_encoder
    from merc.text.folder import FinetunedTextEncoder

    root = write_text_corpus(tmp_path / "corpus", n_train=6, n_valid=2, n_test=2)
    corpus = ensure_validation_split(load_corpus("jsonl", root), 0.1, 0)
    words = sorted({w for c in corpus.conversations for t in c.utterances
                    for w in t.replace(",", " ,").split()} | {"Ana", "Ben", ":"})
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    base = tmp_path / "tiny-roberta"
    base.mkdir()
    tok.save(str(base / "tokenizer.json"))
    (base / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, pad_token_id=1,
                               max_position_embeddings=80)).save_pretrained(str(base))
    cfg = FinetuneConfig(base=str(base), max_epochs=1, batch_size=8, lr=1e-3,
                         context=ContextFormat(past=1, future=1, max_tokens=32), accelerator="cpu")
    record = finetune_encoder(corpus, cfg, tmp_path / "enc", echo=lambda line: None)
    assert (record.cls_id, record.sep_id, record.pad_id) == (0, 2, 1)
    assert record.max_positions == 80 - 2 and record.dim == 32
    feats = FinetunedTextEncoder(tmp_path / "enc").encode(corpus.conversations)
    assert feats.shape == (sum(len(c) for c in corpus.conversations), 32)
    assert np.isfinite(feats).all()
    with pytest.raises(Exception, match="BERT-family"):
        finetune_encoder(corpus, replace(cfg, train_layers=1), tmp_path / "enc2",
                         echo=lambda line: None)


def test_position_limit_of_generic_folders_excludes_the_padding_offset(tmp_path):
    """RoBERTa-style embeddings (here MPNet, whose padding index is fixed at 1) number positions
    from padding_idx + 1, so two rows of the position table are unusable; BERT numbers from 0."""
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    from merc.text.backbone import _HFBackbone

    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=40)
    MPNetModel(MPNetConfig(**small)).save_pretrained(str(tmp_path / "mpnet"))
    BertModel(BertConfig(**small)).save_pretrained(str(tmp_path / "bert"))
    mpnet = _HFBackbone(tmp_path / "mpnet")
    assert mpnet.max_positions == 40 - 2
    ids = torch.full((1, mpnet.max_positions), 5)
    assert mpnet.hidden(ids, torch.ones_like(ids, dtype=torch.bool)).shape == (1, 38, 16)
    with pytest.raises(IndexError):        # one more token runs off the position table
        ids = torch.full((1, mpnet.max_positions + 1), 5)
        mpnet.hidden(ids, torch.ones_like(ids, dtype=torch.bool))
    assert _HFBackbone(tmp_path / "bert").max_positions == 40


# --- LoRA adapters ------------------------------------------------------------------------------

def test_lora_update_by_hand_and_merge_equals_the_parametrized_encoder():
    """``W = W0 + (alpha/r) B A``; B = 0 at start (the base function exactly); merging the
    trained update into plain weights computes what the parametrized encoder computes."""
    from merc.text.lora import (LowRankUpdate, TARGETS, add_adapters, adapter_state,
                                    merge_adapter)
    from merc.text.bert import BertEncoder

    up = LowRankUpdate(3, 2, rank=1, alpha=4.0)
    with torch.no_grad():
        w0 = torch.arange(6.0).view(3, 2)
        torch.testing.assert_close(up(w0), w0)                          # B = 0
        up.A.copy_(torch.tensor([[1.0, 2.0]]))
        up.B.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))
    torch.testing.assert_close(up(w0), w0 + 4.0 * torch.tensor([[1.0, 2.0], [0, 0], [-1, -2]]))

    ids = torch.tensor([[CLS, 7592, 2088, SEP], [CLS, 2088, SEP, 0]])
    mask = ids != 0
    base = BertEncoder(bundled_model_dir()).eval()
    tuned = BertEncoder(bundled_model_dir()).eval()
    with torch.no_grad():
        ref = base.hidden(ids, mask)
    add_adapters(tuned, rank=2, alpha=4.0)
    assert {n for n, p in tuned.named_parameters() if p.requires_grad} == {
        f"layers.{i}.{t.rpartition('.')[0] + '.' if '.' in t else ''}parametrizations."
        f"{t.rpartition('.')[2]}.0.{m}" for i in range(6) for t in TARGETS for m in "AB"}
    with torch.no_grad():
        torch.testing.assert_close(tuned.hidden(ids, mask), ref)        # unchanged at start
        for p in tuned.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
        want = tuned.hidden(ids, mask)
    merged = BertEncoder(bundled_model_dir()).eval()
    merge_adapter(merged, adapter_state(tuned), scale=2.0)
    with torch.no_grad():
        got = merged.hidden(ids, mask)
    assert not torch.allclose(got, ref, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="does not match"):
        merge_adapter(merged, {"layers.0.linear1.weight.lora_A": torch.zeros(1)}, 1.0)


def test_lora_packed_fine_tune_writes_a_small_folder_that_round_trips(tmp_path, capsys,
                                                                      monkeypatch):
    """`merc finetune` with LoRA and the packed layout writes only the adapter; the folder
    extracts features, trains a context model and predicts; another base is refused."""
    from merc.cli import main
    from merc.errors import MercInputError
    from merc.text.folder import FinetunedTextEncoder
    from merc.text.encoder import TextEncoder

    root = write_text_corpus(tmp_path / "corpus", n_train=8, n_valid=3, n_test=3)
    enc, run = tmp_path / "enc", tmp_path / "run"
    assert main(["finetune", "--corpus", "jsonl", "--data-dir", str(root), "--out", str(enc),
                 "finetune.max_epochs=1", "finetune.lora_rank=4", "finetune.batch_size=8",
                 "finetune.context.layout=packed", "finetune.context.max_tokens=48",
                 "finetune.accelerator=cpu"]) == 0
    assert "LoRA rank 4" in capsys.readouterr().out
    assert (enc / "adapter.safetensors").is_file() and not (enc / "model.safetensors").exists()
    assert (enc / "adapter.safetensors").stat().st_size < 1_000_000
    from safetensors.torch import load_file

    adapter = load_file(str(enc / "adapter.safetensors"))
    assert all(bool(v.abs().sum() > 0) for k, v in adapter.items() if k.endswith("lora_B"))
    rec = json.loads((enc / "merc_encoder.json").read_text())
    assert rec["adapter"]["rank"] == 4 and len(rec["adapter"]["base_sha256"]) == 64
    assert rec["context"]["layout"] == "packed"
    from merc.data import load_corpus

    convs = load_corpus("jsonl", root).conversations[:2]
    feats = FinetunedTextEncoder(enc).encode(convs)
    frozen = TextEncoder().encode([t for c in convs for t in c.utterances])
    assert feats.shape == frozen.shape and np.isfinite(feats).all()
    assert main(["train", "--corpus", "jsonl", "--data-dir", str(root), "--text-encoder",
                 str(enc), "--model", "bc-lstm", "--out", str(run), "train.max_epochs=1"]) == 0
    talk = tmp_path / "talk.jsonl"
    talk.write_text(json.dumps({"speaker": "Ana", "text": "we won, so happy"}) + "\n")
    out = tmp_path / "pred.json"
    assert main(["predict", str(talk), "--checkpoint", str(run / "seed_0" / "best.ckpt"), "--out",
                 str(out), "--quiet"]) == 0
    first = json.loads(out.read_text())
    assert len(first["utterances"]) == 1
    # A checkpoint may name an encoder folder beside it as "./NAME" (how the bundled model
    # ships its encoder): resolved against the checkpoint's folder, not the working directory.
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(enc, bundle / "enc")
    ckpt = torch.load(run / "seed_0" / "best.ckpt", weights_only=True)
    ckpt["merc"]["feature_spec"]["text"] = "./enc"
    torch.save(ckpt, bundle / "model.ckpt")
    monkeypatch.chdir(tmp_path / "corpus")
    assert main(["predict", str(talk), "--checkpoint", str(bundle / "model.ckpt"), "--out",
                 str(out), "--quiet"]) == 0
    again = json.loads(out.read_text())["utterances"][0]
    assert again["probs"] == pytest.approx(first["utterances"][0]["probs"])
    rec["adapter"]["base_sha256"] = "0" * 64
    (enc / "merc_encoder.json").write_text(json.dumps(rec))
    with pytest.raises(MercInputError, match="another version of its base model"):
        FinetunedTextEncoder(enc).encode(convs)


def test_lora_needs_all_layers():
    from merc.config import ExperimentConfig

    with pytest.raises(ValueError, match="finetune.lora_rank: LoRA adapts every layer"):
        ExperimentConfig().with_overrides(["finetune.lora_rank=8", "finetune.train_layers=2"])


def test_dialogue_head_by_hand_keeps_dialogues_apart():
    """The end-to-end head: a bidirectional GRU per dialogue, the classifier on [v ; state]."""
    from merc.finetune.heads import DialogueHead

    torch.manual_seed(0)
    head = DialogueHead(8, 3, dropout=0.0).eval()
    v = torch.randn(7, 8)
    with torch.no_grad():
        out = head(v, [3, 4])
        assert out.shape == (7, 3)
        ctx, _ = head.gru(v[:3].unsqueeze(0))                    # dialogue 0 alone, unpadded
        torch.testing.assert_close(out[:3], head.out(torch.cat([v[:3], ctx[0]], -1)))
        torch.testing.assert_close(out, torch.cat([head(v[:3], [3]), head(v[3:], [4])]))
        moved = v.clone()
        moved[3:] += 1.0                                         # dialogue 1 changes ...
        torch.testing.assert_close(head(moved, [3, 4])[:3], out[:3])   # ... dialogue 0 does not
        later = v.clone()
        later[2] += 1.0                                          # the future reaches the past
        assert not torch.allclose(head(later, [3, 4])[0], out[0])


def test_dialogue_batches_hold_whole_dialogues():
    from merc.finetune.heads import dialogue_batches

    sizes = [3, 0, 5, 2, 9, 1]
    starts = np.cumsum([0] + sizes)
    assert [part for _, part in dialogue_batches(sizes, 6)] == [[3, 5], [2, 9], [1]]
    for gen in (None, np.random.default_rng(1), np.random.default_rng(2)):
        batches = dialogue_batches(sizes, 6, gen)
        assert sorted(np.concatenate([idx for idx, _ in batches])) == list(range(20))
        assert all(sum(part) >= 6 for _, part in batches[:-1])
        for idx, part in batches:
            pos = 0
            for n in part:                      # each dialogue whole, in its own order
                assert idx[pos] in starts and list(idx[pos:pos + n]) == list(
                    range(idx[pos], idx[pos] + n))
                assert n in [sizes[d] for d in range(len(sizes)) if starts[d] == idx[pos]]
                pos += n
            assert pos == len(idx)


def test_end_to_end_head_trains_with_the_encoder_and_scores_as_selected(tmp_path, capsys):
    """finetune.head=gru: encoder and GRU head train together on whole dialogues; the folder
    keeps the head, `merc evaluate --encoder` reproduces the selection figure on validation and
    scores test, and the folder is still an ordinary --text-encoder."""
    from safetensors.torch import load_file

    from merc.cli import main
    from merc.finetune.run import evaluate_joint
    from merc.text.folder import FinetunedTextEncoder

    root = write_text_corpus(tmp_path / "corpus", n_train=8, n_valid=3, n_test=3)
    enc = tmp_path / "enc"
    assert main(["finetune", "--corpus", "jsonl", "--data-dir", str(root), "--out", str(enc),
                 "finetune.head=gru", "finetune.max_epochs=2", "finetune.batch_size=8",
                 "finetune.context.max_tokens=32", "finetune.accelerator=cpu"]) == 0
    assert f"merc evaluate --text-encoder {enc}" in capsys.readouterr().out
    record = json.loads((enc / "merc_encoder.json").read_text())["training"]
    assert record["head"] == "gru" and record["settings"]["head"] == "gru"
    head = load_file(str(enc / "head.safetensors"))
    assert {"gru.weight_ih_l0", "gru.weight_ih_l0_reverse", "out.weight"} <= set(head)
    base = load_file(str(bundled_model_dir() / "model.safetensors"))
    tuned = load_file(str(enc / "model.safetensors"))
    key = "encoder.layer.0.output.dense.weight"
    assert not torch.equal(base[key], tuned[key])          # end to end: the bottom layer moved

    valid = evaluate_joint(enc, "valid")
    assert valid["wf1"] == pytest.approx(record["valid_wf1"], abs=1e-6)
    assert valid["data"]["matches_training"] and valid["data"]["split"] == "valid"
    out = tmp_path / "test.json"
    assert main(["evaluate", "--text-encoder", str(enc), "--split", "test", "--out", str(out)]) == 0
    assert "test: W-F1" in capsys.readouterr().out
    test = json.loads(out.read_text())
    corpus_lines = (root / "conversations.jsonl").read_text().splitlines()
    n_test = sum(len(json.loads(line)["utterances"]) for line in corpus_lines
                 if json.loads(line)["split"] == "test")
    assert test["n"] == n_test and 0 <= test["wf1"] <= 100
    from merc.data import load_corpus

    convs = load_corpus("jsonl", root).split("test")
    assert FinetunedTextEncoder(enc).encode(convs).shape == (n_test, 384)


def test_evaluate_encoder_refuses_a_folder_without_a_joint_head(tiny_encoder, tmp_path, capsys):
    from merc.cli import main
    from merc.data import load_corpus
    from merc.finetune.run import score_joint
    from merc.errors import MercInputError

    root, out, _, _ = tiny_encoder
    with pytest.raises(MercInputError, match="not an end-to-end encoder folder"):
        score_joint(out, load_corpus("jsonl", root), "test")
    assert main(["evaluate", "--text-encoder", str(out)]) == 2          # no finetune.yaml beside it
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "finetune.yaml" in err


def _tiny_mpnet(folder: Path) -> Path:
    """A randomly initialised 2-layer MPNet folder (transformers' own class and layout) with
    the bundled MiniLM's tokenizer: a stand-in for all-mpnet-base-v2 that runs in seconds."""
    import shutil

    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=130)
    MPNetModel(cfg, add_pooling_layer=False).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (bundled_model_dir() / name).is_file():
            shutil.copy(bundled_model_dir() / name, folder / name)
    return folder


def test_lora_on_a_transformers_encoder_round_trips(tmp_path, monkeypatch, capsys):
    """LoRA over a non-BERT base (MPNet through transformers.AutoModel): every linear of its
    layers is adapted, the folder holds only the adapter, and loading merges it into the base
    found by its short name (``mpnet`` -> $MERC_MODELS_DIR/all-mpnet-base-v2)."""
    from safetensors.torch import load_file

    from merc.cli import main
    from merc.text.backbone import ContextEncoder, load_backbone
    from merc.text.lora import adapted_weights

    monkeypatch.setenv("MERC_MODELS_DIR", str(tmp_path / "models"))
    root = write_text_corpus(tmp_path / "corpus", n_train=8, n_valid=3, n_test=3)
    enc = tmp_path / "enc"
    args = ["finetune", "--corpus", "jsonl", "--data-dir", str(root), "--out", str(enc),
            "--base", "mpnet", "finetune.max_epochs=1", "finetune.lora_rank=2",
            "finetune.batch_size=8", "finetune.context.max_tokens=48", "finetune.accelerator=cpu"]
    assert main(args) != 0          # not assembled yet: one line naming the command
    err = capsys.readouterr().err.strip()
    assert "make mpnet" in err and len(err.splitlines()) == 1
    base = _tiny_mpnet(tmp_path / "models" / "all-mpnet-base-v2")
    assert main(args) == 0
    adapter = load_file(str(enc / "adapter.safetensors"))
    plain = load_backbone(base)
    assert len(adapted_weights(plain)) == 2 * 6          # q, k, v, o and both FFN linears
    assert set(adapter) == {f"{k}.lora_{m}" for k in adapted_weights(plain) for m in "AB"}
    rec = json.loads((enc / "merc_encoder.json").read_text())
    assert rec["base_model"] == "mpnet" and not (enc / "model.safetensors").exists()
    merged = ContextEncoder(enc).backbone
    ids = torch.tensor([[CLS, 7592, 2088, SEP]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        moved = (merged.hidden(ids, mask) - plain.eval().hidden(ids, mask)).abs().max()
    assert moved > 1e-4                                 # the adapter is applied


def test_distillation_loss_by_hand():
    from merc.finetune.distill import distillation_loss

    torch.manual_seed(0)
    s, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    t = torch.softmax(torch.randn(6, 3) / 2.0, -1)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, y, t, temperature=2.0, weight=0.0), ce)
    # The teacher equal to the softened student: the KL term vanishes.
    same = torch.softmax(s / 2.0, -1)
    assert torch.allclose(distillation_loss(s, y, same, temperature=2.0, weight=0.5), 0.5 * ce)
    kl = (t * (t.log() - torch.log_softmax(s / 2.0, -1))).sum(-1).mean()
    assert torch.allclose(distillation_loss(s, y, t, temperature=2.0, weight=1.0), 4.0 * kl,
                          atol=1e-6)


def test_finetune_with_a_teacher_uses_its_soft_targets(tiny_encoder, tmp_path):
    """finetune.teacher: the teacher folder's linear head predicts every train utterance in the
    teacher's own layout; the student's record keeps the settings; a teacher on other labels
    is one line."""
    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.errors import MercInputError
    from merc.finetune import FinetuneConfig, finetune_encoder
    from merc.finetune.distill import teacher_probs
    from merc.text.folder import FinetunedTextEncoder

    root, teacher, _, _ = tiny_encoder
    corpus = ensure_validation_split(load_corpus("jsonl", root), 0.1, 0)
    train = corpus.split("train")
    soft = teacher_probs(teacher, train, corpus.label_names, 2.0)
    n = sum(len(c) for c in train)
    assert soft.shape == (n, 3) and np.allclose(soft.sum(1), 1, atol=1e-5)
    # The teacher's vectors through its head, by hand.
    from safetensors.torch import load_file

    v = torch.from_numpy(FinetunedTextEncoder(teacher).encode(train))
    w = load_file(str(teacher / "head.safetensors"))
    by_hand = torch.softmax((v @ w["1.weight"].T + w["1.bias"]) / 2.0, -1).numpy()
    np.testing.assert_allclose(soft, by_hand, atol=1e-5)
    lines: list[str] = []
    cfg = FinetuneConfig(context=ContextFormat(past=1, future=0, max_tokens=40), train_layers=1,
                         max_epochs=1, batch_size=8, lr=5e-4, accelerator="cpu",
                         teacher=str(teacher), distill_weight=0.7)
    record = finetune_encoder(corpus, cfg, tmp_path / "student", echo=lines.append)
    assert any(f"soft targets of {n} train utterances" in line for line in lines)
    assert record.training["settings"]["teacher"] == str(teacher)
    other = corpus.__class__(name=corpus.name, conversations=corpus.conversations,
                             label_names=["a", "b", "c"], source=corpus.source)
    with pytest.raises(MercInputError, match="trained on labels"):
        teacher_probs(teacher, train, other.label_names, 2.0)
