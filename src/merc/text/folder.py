"""Utterance vectors from a ``merc finetune`` encoder folder, each utterance formatted with its
dialogue context exactly as in fine-tuning (light: no torch import until vectors are computed,
so a feature-cache hit stays cheap). The folder's record is :mod:`merc.text.record`.

See :mod:`merc.text.backbone` for the folder layout and the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merc.text.input_format import EncodedInput, InputFormatter
from merc.text.record import (RECORD_FILE, EncoderRecord,  # noqa: F401  (re-exported)
                              corpus_fingerprint, is_encoder_folder, load_tokenizer)

log = logging.getLogger(__name__)


class FinetunedTextEncoder:
    """Extract utterance vectors with a merc encoder folder (context-aware).

    Args:
        folder: The encoder folder (``merc finetune --out``).
        batch_size: Inputs per forward pass (does not change the vectors beyond float rounding).
        device: Torch device; default CUDA when available, else CPU.
    """

    name = "merc-context-encoder"
    """Extractor name used in cache keys."""
    contextual = True
    """Reads whole dialogues (see :func:`merc.features.extractor.text_encoder`)."""

    def __init__(self, folder: str | Path, batch_size: int = 64, device: str | None = None):
        self.folder = Path(folder).expanduser()
        self.record = EncoderRecord.load(self.folder)
        self.batch_size = int(batch_size)
        self.device = device
        self._models: dict[int | None, Any] = {}
        self.formatter = InputFormatter(load_tokenizer(self.folder), self.record.context,
                                        cls_id=self.record.cls_id, sep_id=self.record.sep_id,
                                        max_positions=self.record.max_positions)

    @property
    def dim(self) -> int:
        return int(self.record.dim)

    def settings(self) -> dict:
        """What determines the vectors, for the cache key: the record and the folder's files
        (path, size, mtime), so a re-fine-tuned folder never reuses old features."""
        return {"record": json.loads((self.folder / RECORD_FILE).read_text()),
                "folder": str(self.folder.resolve()),
                "files": sorted([str(f.relative_to(self.folder)), f.stat().st_size,
                                 f.stat().st_mtime_ns]
                                for f in self.folder.rglob("*") if f.is_file())}

    def _model(self, fold: int | None):
        """The main encoder (``fold=None``) or cross-fit fold ``fold``'s, loaded once, in eval
        mode, on ``device`` (default CUDA when available)."""
        if fold not in self._models:
            import torch

            from merc.text.backbone import ContextEncoder

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            path = self.folder if fold is None else self.folder / "folds" / str(fold)
            self._models[fold] = ContextEncoder(path, pooling=self.record.pooling).to(device).eval()
        return self._models[fold]

    def inputs(self, conversations: Sequence[Any]) -> list[EncodedInput]:
        """Formatted inputs of every utterance, conversation by conversation, in order
        (``conversations``: objects with ``utterances`` and ``speakers``)."""
        out: list[EncodedInput] = []
        for c in conversations:
            out += self.formatter.conversation(c.utterances, c.speakers)
        return out

    def cross_fit_folds(self, conversations: Sequence[Any]) -> list[int | None]:
        """Per conversation: the cross-fit fold whose encoder must embed it, or ``None`` for the
        main encoder.

        A train dialogue of the very corpus the encoder was fine-tuned on (same fingerprint of
        its train + valid splits) is embedded by the fold encoder that never saw it; everything
        else (valid, test, other corpora, new conversations) by the main encoder.
        """
        info = self.record.training.get("cross_fit") or {}
        fold_of = info.get("fold_of") or {}
        if not fold_of:
            return [None] * len(conversations)
        if corpus_fingerprint(conversations) != self.record.training.get("corpus_fingerprint"):
            if any(str(c.id) in fold_of for c in conversations
                   if getattr(c, "split", None) == "train"):
                log.warning("%s: cross-fitted encoder, but these train/valid dialogues differ "
                            "from the ones it was fine-tuned on (another validation split?); "
                            "every dialogue is embedded by the main encoder", self.folder)
            return [None] * len(conversations)
        return [fold_of.get(str(c.id)) if c.split == "train" else None for c in conversations]

    def encode(self, conversations: Sequence[Any], progress: bool = False) -> np.ndarray:
        """``(N, d)`` float32 vectors of all utterances of ``conversations`` (objects with
        ``utterances``, ``speakers``, and for cross-fitting ``id`` and ``split``), in order."""
        from merc.text.backbone import encode_inputs

        folds = self.cross_fit_folds(conversations)
        bounds = np.cumsum([0] + [len(c.utterances) for c in conversations])
        out = np.zeros((int(bounds[-1]), self.dim), dtype=np.float32)
        cut_before = self.formatter.truncated_targets
        for fold in dict.fromkeys(folds):
            members = [i for i, f in enumerate(folds) if f == fold]
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in members])
            inputs = self.inputs([conversations[i] for i in members])
            model = self._model(fold)
            out[rows] = encode_inputs(model, inputs, self.record.pad_id, self.batch_size,
                                      progress)
        cut = self.formatter.truncated_targets - cut_before
        if cut:  # context is always dropped first: only targets longer than the encoder remain
            log.warning("%s: %d of %d utterances are longer than the encoder's %d positions and "
                        "were cut", self.folder, cut, len(out), self.record.max_positions)
        return out
