"""``merc finetune``: fine-tune a text encoder on a corpus's utterance labels, with context.

The recipe (COSMIC's first stage, with EmoBERTa's context-in-the-input): train dialogues become
encoder inputs as :mod:`merc.text.input_format` lays them out (consecutive utterances
packed into one input with past and future context around the run, or one window per
utterance; speaker names optional), each target span's mean output state
goes through dropout and a linear head, and cross-entropy (class weights: inverse square root of
the train frequency by default) trains encoder and head with AdamW, linear warm-up then linear
decay. After every epoch the validation split is encoded and scored (weighted F1); the epoch with
the best validation W-F1 is kept and training stops after ``patience`` epochs without a gain.
Test is never touched: the encoder is a feature extractor, judged later through the context
model that uses it.

Partial fine-tuning (``train_layers=k``): only the top ``k`` layers train; the frozen lower
layers run once per input and their outputs are cached (float16), so each epoch costs ``k``
layers forward and backward instead of all of them -- the CPU setting. LoRA (``lora_rank=r``):
every weight matrix stays frozen and a rank-``r`` update trains instead
(:mod:`merc.text.lora`); the folder then holds only that update.

The loop is plain PyTorch rather than a Lightning ``Trainer``: it needs the cached lower-layer
states, in-memory selection of the best epoch and a Hugging Face folder as output, and it is
short.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

import merc
from merc.data.conversation import Corpus
from merc.errors import MercInputError
from merc.config import DataConfig, ExperimentConfig, FinetuneConfig
from merc.text.input_format import EncodedInput, InputFormatter
from merc.text.backbone import (ContextEncoder, EncoderRecord, _autocast, copy_tokenizer,
                                     corpus_fingerprint, cpu_has_fast_bf16, encode_inputs,
                                     input_batches, load_tokenizer, now_iso, pad_inputs,
                                     pool_target, resolve_base)
from merc.text.lora import ADAPTER_FILE
from merc.fileio import file_sha256
from merc.training.loop import warmup_schedule

log = logging.getLogger(__name__)


def special_ids(folder: Path, tokenizer) -> tuple[int, int, int]:
    """``(start, separator, pad)`` token ids of the folder's tokenizer: BERT's
    ``[CLS]/[SEP]/[PAD]`` or RoBERTa's ``<s>/</s>/<pad>``, read from its special-token files."""
    names: dict[str, Any] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            d = json.loads((folder / fname).read_text())
        except (OSError, ValueError):
            continue
        for k, v in d.items():
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                names.setdefault(k, v)

    def first(*keys: str, default: str) -> int:
        for k in keys:
            if k in names and tokenizer.token_to_id(names[k]) is not None:
                return int(tokenizer.token_to_id(names[k]))
        tid = tokenizer.token_to_id(default)
        if tid is None:
            raise MercInputError(folder, f"tokenizer has no {keys[0]} token", field="tokenizer")
        return int(tid)

    return (first("cls_token", "bos_token", default="[CLS]"),
            first("sep_token", "eos_token", default="[SEP]"),
            first("pad_token", default="[PAD]"))


def class_weight_vector(y: np.ndarray, n_classes: int, kind: str) -> torch.Tensor | None:
    """Cross-entropy weights from train label indices ``y``; mean 1 over present classes."""
    if kind == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes)
    w[present] = (counts[present].sum() / counts[present]) ** (0.5 if kind == "sqrt" else 1.0)
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


def _split_inputs(corpus: Corpus, split: str, formatter: InputFormatter
                  ) -> tuple[list[EncodedInput], np.ndarray, list[int]]:
    """Every utterance's input and label index, dialogue after dialogue, and the utterance
    count of each dialogue."""
    index = corpus.label_index()
    inputs: list[EncodedInput] = []
    labels: list[int] = []
    sizes: list[int] = []
    for c in corpus.split(split):
        if c.labels is None:
            raise MercInputError(corpus.source, f"{split} dialogue has no labels; fine-tuning "
                                 "needs labelled train and validation splits", dialogue=c.id,
                                 field="label")
        inputs += formatter.conversation(c.utterances, c.speakers)
        labels += [index[x] for x in c.labels]
        sizes.append(len(c.utterances))
    return inputs, np.asarray(labels, dtype=np.int64), sizes


HEAD_FILE = "head.safetensors"
"""The trained ``gru`` head in an encoder folder (``finetune.head=gru``)."""


class DialogueHead(nn.Module):
    """The end-to-end context head (``finetune.head=gru``): a bidirectional GRU over each
    dialogue's utterance vectors; the classifier reads every utterance's own vector beside its
    GRU state (bc-LSTM's shape, Poria et al. 2017, on a GRU), so the encoder is trained through a
    context model instead of a per-utterance classifier (issue G item 3b).

    Args:
        dim: Utterance vector width ``d``.
        n_classes: Output classes.
        dropout: Dropout on ``[v ; GRU state]`` before the classifier.
    """

    def __init__(self, dim: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim + 2 * (dim // 2), n_classes)

    def forward(self, v: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """``v (B, d)``: the utterance vectors of whole dialogues laid end to end, ``sizes``
        their utterance counts (summing to ``B``) -> ``(B, n_classes)`` logits. No dialogue sees
        another's utterances (packed sequences: no padding enters the GRU)."""
        lengths = torch.as_tensor(sizes)
        padded = nn.utils.rnn.pad_sequence(list(torch.split(v, list(sizes))), batch_first=True)
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True,
                                                   enforce_sorted=False)
        ctx, _ = self.gru(packed)
        ctx, _ = nn.utils.rnn.pad_packed_sequence(ctx, batch_first=True,
                                                  total_length=padded.shape[1])
        real = (torch.arange(padded.shape[1]) < lengths[:, None]).to(v.device)   # (D, L)
        return self.out(self.dropout(torch.cat([v, ctx[real]], -1)))


def _logits(head: nn.Module, v: torch.Tensor, sizes: list[int] | None) -> torch.Tensor:
    """Float32 logits of ``head`` (the GRU head runs outside autocast: float32 recurrence)."""
    if isinstance(head, DialogueHead):
        with torch.autocast(v.device.type, enabled=False):
            return head(v.float(), sizes)
    return head(v).float()


def dialogue_batches(sizes: list[int], batch_size: int,
                     generator: np.random.Generator | None = None
                     ) -> list[tuple[np.ndarray, list[int]]]:
    """Batches of whole dialogues for the ``gru`` head: dialogues (shuffled with ``generator``)
    are added to a batch until it holds at least ``batch_size`` utterances (a longer dialogue is
    a batch of its own). Each batch: the indices of its utterances in the flat input list, and
    the utterance count of each of its dialogues."""
    starts = np.cumsum([0] + list(sizes))
    order = (np.arange(len(sizes)) if generator is None else generator.permutation(len(sizes)))
    groups: list[list[int]] = [[]]
    filled = 0
    for d in order:
        if not sizes[d]:
            continue
        if filled >= batch_size:
            groups.append([])
            filled = 0
        groups[-1].append(int(d))
        filled += sizes[d]
    return [(np.concatenate([np.arange(starts[d], starts[d + 1]) for d in g]),
             [sizes[d] for d in g]) for g in groups if g]


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return 100.0 * float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def finetune_encoder(corpus: Corpus, cfg: FinetuneConfig, out_dir: str | Path, *,
                     echo: Callable[[str], None] = print,
                     progress: bool = False) -> EncoderRecord:
    """Fine-tune ``cfg.base`` on ``corpus``'s train split, select on validation W-F1, write the
    encoder folder ``out_dir`` and return its record.

    With ``cfg.cross_fit = K``, K more encoders are fine-tuned, each without one fold of the
    train dialogues, into ``out_dir/folds/<k>``; feature extraction then embeds each train
    dialogue of this corpus with the encoder that never saw it
    (:meth:`~merc.text.folder.FinetunedTextEncoder.cross_fit_folds`).

    Args:
        corpus: A loaded corpus with ``train`` and ``valid`` splits (labels required).
        cfg: Settings.
        out_dir: The encoder folder to write (created; an existing record is replaced).
        echo: Receives one line per epoch.
    """
    t_start = time.perf_counter()
    record = _fit_one(corpus, cfg, Path(out_dir), echo, "", progress)
    if cfg.cross_fit:
        train_ids = [str(c.id) for c in corpus.split("train")]
        if len(set(train_ids)) != len(train_ids):
            raise MercInputError(corpus.source, "cross-fitting needs unique train dialogue ids",
                                 field="dialogue_id")
        if len(train_ids) < cfg.cross_fit:
            raise MercInputError(corpus.source, f"cross_fit={cfg.cross_fit} folds but only "
                                 f"{len(train_ids)} train dialogues", field="finetune.cross_fit")
        order = np.random.default_rng(cfg.seed).permutation(len(train_ids))
        fold_of = {train_ids[i]: int(k % cfg.cross_fit) for k, i in enumerate(order)}
        fold_wf1 = []
        for k in range(cfg.cross_fit):
            keep = [c for c in corpus.conversations
                    if not (c.split == "train" and fold_of[str(c.id)] == k)]
            sub = _fit_one(replace(corpus, conversations=keep), cfg,
                           Path(out_dir) / "folds" / str(k), echo, f"fold {k}: ", progress)
            fold_wf1.append(sub.training["valid_wf1"])
        record.training["cross_fit"] = {"folds": cfg.cross_fit, "fold_of": fold_of,
                                        "fold_valid_wf1": fold_wf1}
    record.training["seconds"] = time.perf_counter() - t_start
    record.save(out_dir)
    return record


def _fit_one(corpus: Corpus, cfg: FinetuneConfig, out_dir: Path, echo: Callable[[str], None],
             tag: str, progress: bool = False) -> EncoderRecord:
    """One fine-tune (no cross-fitting): train, select on validation, write ``out_dir``;
    ``progress``: a bar over each epoch's steps (an epoch is minutes on a CPU)."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if not corpus.split("train") or not corpus.split("valid"):
        raise MercInputError(corpus.source, "fine-tuning needs train and validation dialogues",
                             field="split")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device("cuda" if cfg.accelerator in ("gpu", "auto")
                          and torch.cuda.is_available() else "cpu")
    if cfg.accelerator == "gpu" and device.type != "cuda":
        raise MercInputError("finetune.accelerator", "gpu requested but no CUDA device is visible",
                             field="accelerator")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (
        device.type == "cuda" or cpu_has_fast_bf16()))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base_dir = resolve_base(cfg.base)
    tokenizer = load_tokenizer(base_dir)
    cls_id, sep_id, pad_id = special_ids(base_dir, tokenizer)
    encoder = ContextEncoder(base_dir, dropout=cfg.dropout, pooling=cfg.pooling).to(device)
    backbone = encoder.backbone
    formatter = InputFormatter(tokenizer, cfg.context, cls_id=cls_id, sep_id=sep_id,
                               max_positions=backbone.max_positions)
    train_x, train_y, train_sizes = _split_inputs(corpus, "train", formatter)
    valid_x, valid_y, valid_sizes = _split_inputs(corpus, "valid", formatter)
    if formatter.truncated_targets:
        echo(f"{tag}warning: {formatter.truncated_targets} utterances are longer than the "
             f"encoder's {backbone.max_positions} positions and were cut")
    n_classes = len(corpus.label_names)
    head = (DialogueHead(encoder.dim, n_classes, cfg.dropout) if cfg.head == "gru" else
            nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(encoder.dim, n_classes))).to(device)
    weights = class_weight_vector(train_y, n_classes, cfg.class_weights)

    # Partial fine-tuning: freeze embeddings + lower layers, cache their outputs once.
    n_layers = len(backbone.layers)
    frozen = 0
    if cfg.train_layers is not None and not n_layers:
        raise MercInputError(cfg.base, "train_layers needs a BERT-family encoder; use "
                             "train_layers=null (full fine-tune)", field="finetune.train_layers")
    if cfg.train_layers is not None and cfg.train_layers < n_layers:
        frozen = n_layers - cfg.train_layers
        for p in backbone.parameters():
            p.requires_grad_(False)
        for layer in backbone.layers[frozen:]:
            for p in layer.parameters():
                p.requires_grad_(True)
    lora = cfg.lora_rank > 0
    if lora:
        from merc.text.lora import add_adapters, adapter_state, load_adapter_state
        from merc.text.bert import BertEncoder

        if not isinstance(backbone, BertEncoder):
            raise MercInputError(cfg.base, "LoRA (lora_rank) needs a BERT-family encoder; use "
                                 "lora_rank=0 (full fine-tune)", field="finetune.lora_rank")
        add_adapters(backbone, cfg.lora_rank, cfg.lora_alpha)
    cache_t0 = time.perf_counter()
    train_h = _lower_states(backbone, train_x, frozen, pad_id, device) if frozen else None
    valid_h = _lower_states(backbone, valid_x, frozen, pad_id, device) if frozen else None
    cache_seconds = time.perf_counter() - cache_t0 if frozen else 0.0

    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    lr = cfg.lora_lr if lora else cfg.lr
    own = {id(p) for p in head.parameters()} if cfg.head == "gru" else set()
    groups = []
    for part, part_lr in (([p for p in params if id(p) not in own], lr),
                          ([p for p in params if id(p) in own], cfg.head_lr)):
        groups += [{"params": [p for p in part if p.ndim >= 2], "lr": part_lr,
                    "weight_decay": cfg.weight_decay},
                   {"params": [p for p in part if p.ndim < 2], "lr": part_lr,
                    "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)

    def plan(generator: np.random.Generator | None) -> list[tuple[np.ndarray, list[int] | None]]:
        if cfg.head == "gru":
            return dialogue_batches(train_sizes, cfg.batch_size, generator)
        return [(idx, None) for idx in input_batches(train_x, cfg.batch_size, generator)]

    steps_per_epoch = len(plan(None))
    total = steps_per_epoch * cfg.max_epochs
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(warm, total, "linear"))

    echo(f"{tag}fine-tuning {cfg.base} on {corpus.name}: {len(train_x)} train / {len(valid_x)} valid "
         f"utterances, {n_classes} classes, input {cfg.context.describe()}, "
         f"{_trained_part(cfg, frozen, n_layers)}, "
         f"device {device.type}{' (bf16)' if bf16 else ''}")
    best = {"wf1": -1.0, "epoch": -1, "state": None}
    history = []
    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        encoder.train()
        head.train()
        total_loss, n_seen = 0.0, 0
        steps = plan(rng)
        for idx, sizes in tqdm(steps, desc=f"{tag}epoch {epoch}", unit="step", leave=False,
                               disable=not progress):
            batch = pad_inputs([train_x[i] for i in idx], pad_id, device)
            y = torch.as_tensor(train_y[idx], device=device)
            with _autocast(device, bf16):
                if frozen:
                    h = _pad_states([train_h[idx[b]] for b in batch.first], device)
                    h = backbone.hidden(None, batch.mask, start=frozen, h=h)
                    v = pool_target(h, batch.spans, cfg.pooling, batch.rows)
                else:
                    v = encoder(batch.ids, batch.mask, batch.spans, batch.rows)
                logits = _logits(head, v, sizes)
            loss = F.cross_entropy(logits, y, weight=None if weights is None
                                   else weights.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            n_seen += len(idx)
        train_seconds = time.perf_counter() - t0
        pred = _predict(encoder, head, valid_x, valid_h, frozen, pad_id, cfg.eval_batch_size,
                        valid_sizes)
        wf1 = _weighted_f1(valid_y, pred)
        history.append({"epoch": epoch, "train_loss": total_loss / max(n_seen, 1),
                        "valid_wf1": wf1, "seconds": time.perf_counter() - t0,
                        "train_seconds": train_seconds})
        improved = wf1 > best["wf1"]
        if improved:
            best = {"wf1": wf1, "epoch": epoch,
                    "state": adapter_state(backbone) if lora else
                    {k: v.detach().to("cpu", copy=True) for k, v in backbone.state_dict().items()},
                    "head": {k: v.detach().to("cpu", copy=True)
                             for k, v in head.state_dict().items()}}
        echo(f"{tag}epoch {epoch}: train loss {history[-1]['train_loss']:.4f}  valid W-F1 {wf1:.2f}"
             f"{'  (best)' if improved else ''}  {history[-1]['seconds']:.1f} s")
        if epoch - best["epoch"] >= cfg.patience:
            break
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = None
    if lora:
        from safetensors.torch import save_file

        load_adapter_state(backbone, best["state"])
        save_file(best["state"], str(out_dir / ADAPTER_FILE), metadata={"format": "pt"})
        (out_dir / "model.safetensors").unlink(missing_ok=True)  # a stale full encoder
        (out_dir / "config.json").write_text(json.dumps(backbone.config, indent=2))
        adapter = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha,
                   "scale": cfg.lora_alpha / cfg.lora_rank,
                   "base_sha256": file_sha256(base_dir / "model.safetensors")}
    else:
        backbone.load_state_dict(best["state"])
        (out_dir / ADAPTER_FILE).unlink(missing_ok=True)
        backbone.save_pretrained(out_dir)
    if cfg.head == "gru":
        from safetensors.torch import save_file

        save_file(best["head"], str(out_dir / HEAD_FILE), metadata={"format": "pt"})
    else:
        (out_dir / HEAD_FILE).unlink(missing_ok=True)  # a stale head of an earlier fine-tune
    copy_tokenizer(base_dir, out_dir)
    seconds = time.perf_counter() - t_start
    record = EncoderRecord(
        context=cfg.context, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id,
        max_positions=int(backbone.max_positions), dim=int(encoder.dim), pooling=cfg.pooling,
        base_model=cfg.base, adapter=adapter,
        training={
            "settings": cfg.to_dict(), "head": cfg.head, "n_classes": n_classes,
            "corpus": corpus.name,
            "corpus_fingerprint": corpus_fingerprint(corpus.conversations),
            "train_dialogues": sorted(str(c.id) for c in corpus.split("train")),
            "label_names": list(corpus.label_names), "valid_split": corpus.valid_split,
            "best_epoch": best["epoch"], "valid_wf1": best["wf1"], "history": history,
            "cache_seconds": cache_seconds, "seconds": seconds, "device": device.type,
            "precision": "bf16" if bf16 else "32",
            "truncated_targets": formatter.truncated_targets,
            "merc_version": merc.__version__, "created": now_iso()})
    record.save(out_dir)
    echo(f"{tag}selected epoch {best['epoch']} (valid W-F1 {best['wf1']:.2f}); wrote {out_dir} "
         f"in {seconds:.0f} s")
    return record


def _trained_part(cfg: FinetuneConfig, frozen: int, n_layers: int) -> str:
    if cfg.lora_rank:
        return f"LoRA rank {cfg.lora_rank}"
    return "full" if not frozen else f"top {n_layers - frozen} of {n_layers} layers"


@torch.no_grad()
def _lower_states(backbone, inputs: list[EncodedInput], stop: int, pad_id: int,
                  device: torch.device, batch_size: int = 128) -> list[torch.Tensor]:
    """Outputs of the frozen embeddings + layers ``[0, stop)`` per input, ``(T_i, d)`` float16
    on ``device`` (eval mode: the frozen part runs without dropout); the inputs of one
    ``packed`` chunk share one tensor."""
    was = backbone.training
    backbone.eval()
    out: list[torch.Tensor | None] = [None] * len(inputs)
    for idx in input_batches(inputs, batch_size):
        batch = pad_inputs([inputs[i] for i in idx], pad_id, device)
        h = backbone.hidden(batch.ids, batch.mask, stop=stop)
        for b, i in enumerate(idx):
            r = int(batch.rows[b])
            out[i] = (out[idx[batch.first[r]]] if b != batch.first[r]
                      else h[r, :len(inputs[i].ids)].to(torch.float16))
    backbone.train(was)
    return out  # type: ignore[return-value]


def _pad_states(states: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Right-pad cached ``(T_i, d)`` states to ``(B, T, d)`` float32."""
    return nn.utils.rnn.pad_sequence(states, batch_first=True).to(device, torch.float32)


@torch.no_grad()
def _predict(encoder: ContextEncoder, head: nn.Module, inputs: list[EncodedInput],
             states: list[torch.Tensor] | None, frozen: int, pad_id: int,
             batch_size: int, sizes: list[int]) -> np.ndarray:
    """Argmax class of every input (eval mode); ``sizes``: utterances per dialogue."""
    encoder.eval()
    head.eval()
    device = next(head.parameters()).device
    if not frozen:
        v = torch.from_numpy(encode_inputs(encoder, inputs, pad_id, batch_size)).to(device)
    else:
        v = torch.zeros((len(inputs), encoder.dim), device=device)
        for idx in input_batches(inputs, batch_size):
            batch = pad_inputs([inputs[i] for i in idx], pad_id, device)
            with _autocast(device):
                h = encoder.backbone.hidden(None, batch.mask, start=frozen,
                                            h=_pad_states([states[idx[b]] for b in batch.first],
                                                          device))
                v[torch.as_tensor(idx, device=device)] = pool_target(
                    h, batch.spans, encoder.pooling, batch.rows).float()
    return _head_predict(head, v, sizes)


def _head_predict(head: nn.Module, v: torch.Tensor, sizes: list[int]) -> np.ndarray:
    """Argmax of ``head`` over utterance vectors ``v (N, d)`` of dialogues of ``sizes``."""
    if not isinstance(head, DialogueHead):
        return _logits(head, v, None).argmax(-1).cpu().numpy()
    return np.concatenate([_logits(head, v[idx], part).argmax(-1).cpu().numpy()
                           for idx, part in dialogue_batches(sizes, 512)])


@torch.no_grad()
def score_joint(folder: str | Path, corpus: Corpus, split: str) -> dict:
    """Metrics (:func:`~merc.metrics.classification_metrics`) of an end-to-end encoder
    folder (``finetune.head=gru``: the encoder and its trained GRU head, one model) on ``split``
    of ``corpus``. Selection happened on validation inside ``merc finetune``; call this on test
    once, after it."""
    from safetensors.torch import load_file

    from merc.metrics import classification_metrics
    from merc.text.folder import EncoderRecord, FinetunedTextEncoder

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
    v = torch.from_numpy(encode_inputs(enc._model(None), enc.inputs(convs), record.pad_id,
                                       enc.batch_size))
    head = DialogueHead(int(record.dim), len(names), 0.0)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    head.eval()
    index = corpus.label_index()
    y = np.asarray([index[x] for c in convs for x in c.labels])
    pred = _head_predict(head, v, [len(c.utterances) for c in convs])
    return classification_metrics(y, pred, names)


def evaluate_joint(folder: str | Path, split: str = "test",
                   data_dir: str | Path | None = None) -> dict:
    """``merc evaluate --encoder ENC_DIR``: :func:`score_joint` on ``split`` of the corpus the
    folder was fine-tuned on (its ``finetune.yaml``; ``data_dir`` replaces the recorded folder).
    The result's ``data`` entry names the corpus, the split's size and fingerprint, and whether
    the train + validation dialogues are the ones the encoder was trained and selected on."""
    from merc.training.provenance import data_block
    from merc.text.folder import EncoderRecord

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
    corpus = _load_corpus(data)
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    record = finetune_encoder(corpus, cfg.finetune, out_dir, echo=echo, progress=progress)
    Path(out_dir, "finetune.yaml").write_text(yaml.safe_dump(
        {"data": asdict(data), "finetune": cfg.finetune.to_dict()}, sort_keys=False))
    return record
