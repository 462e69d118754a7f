"""``merc finetune`` and ``merc evaluate --text-encoder``: load the configured corpus, fine-tune an
encoder on it (:func:`run_finetune`), and score an end-to-end folder (``finetune.head=gru``) on
a split (:func:`evaluate_joint`, :func:`score_joint`).

The training itself is :mod:`merc.finetune.fit`; the heads are :mod:`merc.finetune.heads`.
This module still offers the names other code imported from it before the split
(``FinetuneConfig``, ``finetune_encoder``, ``DialogueHead``, ``dialogue_batches``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from merc.config import DataConfig, ExperimentConfig, FinetuneConfig
from merc.data.conversation import Corpus
from merc.errors import MercInputError
from merc.finetune.fit import finetune_encoder, predict_classes
from merc.finetune.heads import HEAD_FILE, DialogueHead, dialogue_batches
from merc.metrics import classification_metrics
from merc.text.record import EncoderRecord, corpus_fingerprint

__all__ = ["run_finetune", "evaluate_joint", "score_joint",
           # re-exported from their new homes, for existing imports
           "FinetuneConfig", "finetune_encoder", "DialogueHead", "dialogue_batches", "HEAD_FILE"]


@torch.no_grad()
def score_joint(folder: str | Path, corpus: Corpus, split: str) -> dict:
    """Metrics (:func:`~merc.metrics.classification_metrics`) of an end-to-end encoder
    folder (``finetune.head=gru``: the encoder and its trained GRU head, one model) on ``split``
    of ``corpus``. Selection happened on validation inside ``merc finetune``; call this on test
    once, after it."""
    from safetensors.torch import load_file

    from merc.text.folder import FinetunedTextEncoder

    folder = Path(folder)
    record = EncoderRecord.load(folder)
    if record.training.get("head") != "gru" or not (folder / HEAD_FILE).is_file():
        raise MercInputError(folder, "not an end-to-end encoder folder (finetune.head=gru with "
                             f"its {HEAD_FILE})", field="head")
    names = list(record.training["label_names"])
    if list(corpus.label_names) != names:
        raise MercInputError(corpus.source, f"labels {list(corpus.label_names)} differ from the "
                             f"encoder's {names}", field="label")
    convs = corpus.split(split)
    if not convs or any(c.labels is None for c in convs):
        raise MercInputError(corpus.source, f"no labelled {split} dialogues to score",
                             field="split")
    # The main encoder for every split (the head was trained on its vectors, never on a
    # cross-fit fold's).
    enc = FinetunedTextEncoder(folder)
    head = DialogueHead(int(record.dim), len(names), 0.0)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    index = corpus.label_index()
    y = np.asarray([index[x] for c in convs for x in c.labels])
    pred = predict_classes(enc._model(None), head, enc.inputs(convs),
                           [len(c.utterances) for c in convs], pad_id=record.pad_id,
                           batch_size=enc.batch_size)
    return classification_metrics(y, pred, names)


def evaluate_joint(folder: str | Path, split: str = "test",
                   data_dir: str | Path | None = None) -> dict:
    """``merc evaluate --text-encoder ENC_DIR``: :func:`score_joint` on ``split`` of the corpus the
    folder was fine-tuned on (its ``finetune.yaml``; ``data_dir`` replaces the recorded folder).
    The result's ``data`` entry names the corpus, the split's size and fingerprint, and whether
    the train + validation dialogues are the ones the encoder was trained and selected on."""
    from merc.training.provenance import data_block

    folder = Path(folder)
    saved = folder / "finetune.yaml"
    if not saved.is_file():
        raise MercInputError(saved, "missing: it names the corpus the encoder was fine-tuned on "
                             "(merc finetune writes it)", field="data")
    cfg = ExperimentConfig.load(saved)
    if data_dir is not None:
        cfg = cfg.with_overrides([], settings={"data": {"data_dir": str(data_dir)}})
    corpus = _load_corpus(cfg.data.resolved())
    metrics = score_joint(folder, corpus, split)
    current = data_block(corpus)
    metrics["data"] = {"corpus": current["corpus"], "split": split, **current["splits"][split],
                       "matches_training": corpus_fingerprint(corpus.conversations)
                       == EncoderRecord.load(folder).training.get("corpus_fingerprint")}
    return metrics


def _load_corpus(data: DataConfig) -> Corpus:
    """The (resolved) ``data`` config's corpus with the validation split ``merc train`` uses
    (same ``valid_fraction``/``valid_seed``)."""
    from merc.data.conversation import ensure_validation_split
    from merc.training.prepare import load_configured

    return ensure_validation_split(load_configured(data), data.valid_fraction, data.valid_seed)


def run_finetune(cfg: ExperimentConfig, out_dir: str | Path, *,
                 echo: Callable[[str], None] = print,
                 progress: bool | None = None) -> EncoderRecord:
    """``merc finetune``: load ``cfg.data``'s corpus (with the validation split ``merc train``
    will use: same ``valid_fraction``/``valid_seed``), fine-tune per ``cfg.finetune`` and write
    the encoder folder ``out_dir`` (plus ``finetune.yaml``, the resolved config)."""
    data = cfg.data.resolved()
    ctx = cfg.finetune.context
    if ctx.future == 0 and ctx.layout == "packed":
        # future=0 is how one asks for a past-only encoder; packing still shares one input
        # between consecutive utterances (tests/test_finetune.py shows it), so say so up front.
        echo("note: the packed layout lets an utterance attend to later ones of its packed run "
             "even with context.future=0; for a past-only encoder (merc predict --live, "
             "/v1/live) use finetune.context.layout=window")
    corpus = _load_corpus(data)
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    record = finetune_encoder(corpus, cfg.finetune, out_dir, echo=echo, progress=progress)
    Path(out_dir, "finetune.yaml").write_text(yaml.safe_dump(
        {"data": asdict(data), "finetune": cfg.finetune.to_dict()}, sort_keys=False))
    return record
