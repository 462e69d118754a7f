"""Fine-tuned, context-aware text encoders: the encoder folder, its network and feature extraction.

An *encoder folder* is what ``merc finetune`` writes and what ``--text-encoder ENC_DIR`` accepts
everywhere (``merc train``, ``merc extract``, ``merc bench``, a checkpoint's feature spec and
``merc predict``)::

    ENC_DIR/
      config.json, model.safetensors     # the encoder, in Hugging Face's own layout
      tokenizer.json (+ tokenizer files)  # its tokenizer
      merc_encoder.json                   # EncoderRecord: input format, pooling, special token
                                          # ids, and how it was trained (base model, corpus
                                          # fingerprint, settings, validation W-F1, time)

The record's :class:`~merc.text.input_format.ContextFormat` decides how every utterance is
laid out with its context, and :class:`ContextEncoder` pools the target span; both are used
unchanged for training, extraction and prediction, so the three cannot drift apart.

BERT-family folders (``model_type: bert``, e.g. the bundled all-MiniLM-L6-v2) run on merc's own
:class:`~merc.text.bert.BertEncoder` (no transformers import at prediction time; lower
layers can be frozen and their outputs cached during fine-tuning); any other architecture a user
has locally (RoBERTa, MPNet, ...) runs through ``transformers.AutoModel``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from merc.errors import MercInputError
from merc.text.input_format import EncodedInput
from merc.fileio import file_sha256
from merc.text.record import RECORD_FILE, EncoderRecord

class _HFBackbone(nn.Module):
    """Any local ``transformers`` encoder folder behind :class:`BertEncoder`'s interface."""

    def __init__(self, model_dir: str | Path, dropout: float = 0.0) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        # Load reports and progress bars are noise here; real problems raise.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        cfg = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(cfg, name):
                setattr(cfg, name, dropout)
        self.model = AutoModel.from_pretrained(str(model_dir), config=cfg, local_files_only=True,
                                               add_pooling_layer=False)
        self.dim = int(cfg.hidden_size)
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 512))
        # RoBERTa-style embeddings (RoBERTa, XLM-R, CamemBERT, MPNet, ...) number positions from
        # padding_idx + 1, so padding_idx + 1 rows of the position table are never usable; their
        # embeddings module exposes that ``padding_idx`` (BERT's does not).
        pad = getattr(getattr(self.model, "embeddings", None), "padding_idx", None)
        if isinstance(pad, int):
            self.max_positions -= pad + 1
        self.layers = ()  # no cached-lower-layer training for generic architectures

    @property
    def config(self) -> dict:
        """The model's ``config.json`` content (what a LoRA folder records of its base)."""
        return self.model.config.to_dict()

    def hidden(self, ids, mask, *, start=0, stop=None, h=None):
        if start != 0 or stop is not None or h is not None:
            raise ValueError("partial fine-tuning (train_layers) needs a BERT-family encoder")
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def save_pretrained(self, out_dir: str | Path) -> None:
        self.model.save_pretrained(str(out_dir))


def resolve_base(base: str) -> Path:
    """The local folder of encoder ``base``: the bundled MiniLM's package folder for the
    default, the assembled folder for a short name of :data:`~merc.config.sources.LOCAL_MODELS`
    (``mpnet``), else ``base`` as a path."""
    from merc.config.paths import local_model_dir
    from merc.config.sources import DEFAULT_TEXT_ENCODER, LOCAL_MODELS
    from merc.text.encoder import bundled_model_dir

    if base == DEFAULT_TEXT_ENCODER:
        return bundled_model_dir()
    if base in LOCAL_MODELS:
        return local_model_dir(base)
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise MercInputError(path, "not a local model folder (no config.json); merc never "
                             "downloads weights: give the bundled default "
                             f"{DEFAULT_TEXT_ENCODER!r} or a folder you have",
                             field="finetune.base")
    return path


def _load_adapted(model_dir: Path, dropout: float) -> nn.Module:
    """A LoRA encoder folder: its base model (checked by SHA-256) with the adapter merged in."""
    from safetensors.torch import load_file

    from merc.text.lora import ADAPTER_FILE, merge_adapter

    record = EncoderRecord.load(model_dir)
    info = record.adapter or {}
    if not info:
        raise MercInputError(model_dir / RECORD_FILE, f"the folder holds {ADAPTER_FILE} but its "
                             "record describes no adapter", field="adapter")
    base = resolve_base(record.base_model)
    got = file_sha256(base / "model.safetensors")
    if got != info.get("base_sha256"):
        raise MercInputError(model_dir / RECORD_FILE, f"the adapter was trained on another "
                             f"version of its base model {record.base_model!r} (found {base}, "
                             f"SHA-256 {got[:12]}..., expected {str(info.get('base_sha256'))[:12]}"
                             "...)", field="base_model")
    backbone = _plain_backbone(base, dropout)
    try:
        merge_adapter(backbone, load_file(str(model_dir / ADAPTER_FILE)), float(info["scale"]))
    except (ValueError, KeyError, OSError) as e:
        raise MercInputError(model_dir / ADAPTER_FILE, str(e), field="adapter") from None
    return backbone


def load_backbone(model_dir: str | Path, dropout: float = 0.0) -> nn.Module:
    """The token encoder in ``model_dir``: a LoRA folder's base with its adapter merged in, else
    the folder's own weights (:func:`_plain_backbone`)."""
    from merc.text.lora import ADAPTER_FILE

    model_dir = Path(model_dir)
    if (model_dir / ADAPTER_FILE).is_file():
        return _load_adapted(model_dir, dropout)
    return _plain_backbone(model_dir, dropout)


def _plain_backbone(model_dir: Path, dropout: float) -> nn.Module:
    """merc's BERT port for a BERT folder, else ``transformers.AutoModel``."""
    from merc.text.bert import BertEncoder

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise MercInputError(model_dir / "config.json", f"not a readable model folder: {e}",
                             field="text_encoder") from None
    if (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
            and (model_dir / "model.safetensors").is_file()):
        return BertEncoder(model_dir, dropout=dropout)
    return _HFBackbone(model_dir, dropout=dropout)


class PaddedBatch(NamedTuple):
    """A batch of formatted inputs, each distinct token sequence padded once."""

    ids: torch.Tensor
    """``(R, T)`` long: the distinct sequences (a ``packed`` chunk appears once)."""
    mask: torch.Tensor
    """``(R, T)`` bool, True on real tokens."""
    spans: torch.Tensor
    """``(B, 2)`` long: input ``b``'s target ``[start, end)`` within row ``rows[b]``."""
    rows: torch.Tensor
    """``(B,)`` long: the row of ``ids`` that input ``b`` is pooled from."""
    first: list[int]
    """For each row, the position in the input list of the first input that uses it."""


def pad_inputs(inputs: Sequence[EncodedInput], pad_id: int, device=None) -> PaddedBatch:
    """Right-pad a batch of inputs; inputs that share one ``ids`` list (a ``packed`` chunk) share
    one row, so the encoder runs once per distinct sequence."""
    row_of: dict[int, int] = {}
    rows, first = [], []
    for b, x in enumerate(inputs):
        key = id(x.ids)
        if key not in row_of:
            row_of[key] = len(first)
            first.append(b)
        rows.append(row_of[key])
    width = max(len(inputs[b].ids) for b in first)
    ids = torch.full((len(first), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(first), width), dtype=torch.bool)
    for r, b in enumerate(first):
        n = len(inputs[b].ids)
        ids[r, :n] = torch.tensor(inputs[b].ids, dtype=torch.long)
        mask[r, :n] = True
    spans = torch.tensor([x.target for x in inputs], dtype=torch.long)
    return PaddedBatch(ids.to(device), mask.to(device), spans.to(device),
                       torch.tensor(rows, dtype=torch.long, device=device), first)


def pool_target(h: torch.Tensor, spans: torch.Tensor, pooling: str = "target-mean",
                rows: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per target from ``h (R, T, d)`` and each target's span ``spans (B, 2)``
    (``[start, end)`` within row ``rows[b]``; default row ``b``) -> ``(B, d)``:
    ``target-mean`` averages the span's states; ``first-last`` averages its first and last
    states (DF-ERC's official utterance vector, ``WHULACC/DFERC src/model.py:86-89``)."""
    if pooling == "first-last":
        if rows is None:
            rows = torch.arange(spans.shape[0], device=h.device)
        first = spans[:, 0]
        last = torch.maximum(spans[:, 1] - 1, first)
        return (h[rows, first] + h[rows, last]) / 2
    pos = torch.arange(h.shape[1], device=h.device)
    inside = (pos >= spans[:, :1]) & (pos < spans[:, 1:])                    # (B, T)
    w = inside.to(h.dtype)
    # (B, T) weights applied to row rows[b]: a batched matrix product over the rows' states
    # (one row per input, no gathered copy, when every input has its own row).
    states = h if rows is None else h[rows]
    return torch.bmm(w.unsqueeze(1), states).squeeze(1) / w.sum(1, keepdim=True).clamp(min=1.0)


class ContextEncoder(nn.Module):
    """Backbone + target-span pooling (:func:`pool_target`): formatted inputs -> one vector per
    utterance."""

    def __init__(self, model_dir: str | Path, dropout: float = 0.0,
                 pooling: str = "target-mean") -> None:
        super().__init__()
        self.backbone = load_backbone(model_dir, dropout=dropout)
        self.pooling = pooling

    @property
    def dim(self) -> int:
        return int(self.backbone.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, spans: torch.Tensor,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """``ids, mask (R, T)``, ``spans (B, 2)``, ``rows (B,)`` (default ``arange(B)``) ->
        ``(B, d)`` pooled target vectors (see :class:`PaddedBatch`)."""
        return pool_target(self.backbone.hidden(ids, mask), spans, self.pooling, rows)


def batches_by_length(lengths: Sequence[int], batch_size: int,
                      generator: np.random.Generator | None = None,
                      chunk: int = 50) -> list[np.ndarray]:
    """Index batches of similar length (little padding).

    Without ``generator``: sorted by length (deterministic, for evaluation). With it: shuffled,
    then sorted within chunks of ``chunk * batch_size`` and the batch order shuffled, so batches
    stay random while padding stays small.
    """
    lengths = np.asarray(lengths)
    if generator is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = generator.permutation(len(lengths))
    out = []
    span = chunk * batch_size
    for i in range(0, len(order), span):
        part = order[i:i + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    generator.shuffle(out)
    return out


def input_batches(inputs: Sequence[EncodedInput], batch_size: int,
                  generator: np.random.Generator | None = None) -> list[np.ndarray]:
    """:func:`batches_by_length` over distinct token sequences: the inputs of one ``packed``
    chunk always land in one batch (so the chunk is encoded once), and a batch holds about
    ``batch_size`` inputs."""
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(id(x.ids), []).append(i)
    members = list(groups.values())
    if all(len(m) == 1 for m in members):
        return batches_by_length([len(x.ids) for x in inputs], batch_size, generator)
    # Batches of chunks, sized so that the mean number of inputs per batch is ~batch_size.
    per_chunk = len(inputs) / len(members)
    chunk_batches = batches_by_length([len(inputs[m[0]].ids) for m in members],
                                      max(1, round(batch_size / per_chunk)), generator)
    return [np.asarray([i for c in cb for i in members[c]]) for cb in chunk_batches]


@torch.no_grad()
def encode_inputs(model: ContextEncoder, inputs: Sequence[EncodedInput], pad_id: int,
                  batch_size: int, progress: bool = False) -> np.ndarray:
    """Run ``model`` (in eval mode) over ``inputs`` in length-sorted batches; rows in input
    order, ``(N, d)`` float32."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(inputs), model.dim), dtype=np.float32)
    batches = input_batches(inputs, batch_size)
    for idx in tqdm(batches, desc="encode", disable=not progress or len(batches) < 2,
                    leave=False):
        batch = pad_inputs([inputs[i] for i in idx], pad_id, device)
        with autocast(device):
            v = model(batch.ids, batch.mask, batch.spans, batch.rows)
        out[idx] = v.float().cpu().numpy()
    model.train(was_training)
    return out


def autocast(device: torch.device, enabled: bool | None = None):
    """bf16 autocast on ``device`` when ``enabled`` (default: on CUDA only, so CPU extraction
    and prediction stay float32)."""
    on = device.type == "cuda" if enabled is None else enabled
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 dot-product units (AVX512-BF16 or AMX)."""
    check = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported",
                                                  "_is_amx_tile_supported")]
    return any(f() for f in check if f is not None)


def copy_tokenizer(src: str | Path, dst: str | Path) -> None:
    """Copy the tokenizer files of a model folder."""
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt", "vocab.json", "merges.txt"):
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

