"""Fine-tuning one text encoder on a corpus's utterance labels, with context.

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
states, in-memory selection of the best epoch and a Hugging Face folder as output. What it
shares with ``merc train`` comes from there: the weight-decay rule of the optimizer groups
(:func:`merc.training.loop.weight_decay_split`), the warm-up schedule
(:func:`merc.training.loop.warmup_schedule`) and the metrics
(:func:`merc.metrics.classification_metrics`).

:func:`_fit_one` runs these steps, one function each: :func:`_device_and_precision`,
:func:`_build` (tokenizer, encoder, inputs, head), :func:`_restrict_training` (partial
fine-tuning or LoRA), :func:`_cache_lower_states`, :func:`build_optimizer` and
:func:`_schedule`, then per epoch :func:`_epoch_batches`, :func:`_train_epoch`,
:func:`_valid_wf1` and :meth:`_Best.offer`; at the end :func:`_write_folder` and
:func:`_make_record`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from merc._version import __version__
from merc.config import FinetuneConfig
from merc.data.conversation import Corpus
from merc.errors import MercInputError
from merc.fileio import file_sha256
from merc.finetune.distill import distillation_loss, teacher_probs
from merc.finetune.heads import HEAD_FILE, _head_predict, _logits, dialogue_batches, make_head
from merc.metrics import classification_metrics
from merc.text.backbone import (ContextEncoder, autocast, copy_tokenizer, cpu_has_fast_bf16,
                                encode_inputs, input_batches, now_iso, pad_inputs, pool_target,
                                resolve_base)
from merc.text.input_format import EncodedInput, InputFormatter
from merc.text.lora import ADAPTER_FILE, adapter_state, add_adapters, load_adapter_state
from merc.text.record import EncoderRecord, corpus_fingerprint, load_tokenizer
from merc.training.loop import warmup_schedule, weight_decay_split


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
    """Cross-entropy weights ``(n_classes,)`` from train label indices ``y (N,)``; mean 1 over
    present classes (``kind``: ``sqrt``, ``inverse`` or ``none`` -> ``None``)."""
    if kind == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes)
    w[present] = (counts[present].sum() / counts[present]) ** (0.5 if kind == "sqrt" else 1.0)
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class SplitInputs:
    """One split's encoder inputs, utterance after utterance, dialogue after dialogue."""

    x: list[EncodedInput]
    """One formatted input per utterance (``N`` in all)."""
    y: np.ndarray
    """``(N,)`` int64 label indices."""
    sizes: list[int]
    """Utterances per dialogue (summing to ``N``)."""
    states: list[torch.Tensor] | None = None
    """Partial fine-tuning only: each input's cached lower-layer outputs ``(T_i, d)`` float16
    (the inputs of one ``packed`` chunk share one tensor); else ``None``."""


def _split_inputs(corpus: Corpus, split: str, formatter: InputFormatter) -> SplitInputs:
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
    return SplitInputs(inputs, np.asarray(labels, dtype=np.int64), sizes)


@dataclass
class _Fit:
    """What one fine-tune trains and scores: the model, the inputs and the settings derived
    from the base folder (filled by :func:`_build`, :func:`_restrict_training` and
    :func:`_cache_lower_states`)."""

    base_dir: Path
    cls_id: int
    sep_id: int
    pad_id: int
    encoder: ContextEncoder
    head: nn.Module
    formatter: InputFormatter
    train: SplitInputs
    valid: SplitInputs
    n_classes: int
    weights: torch.Tensor | None
    """``(n_classes,)`` cross-entropy weights, or ``None``."""
    n_layers: int = 0
    frozen: int = 0
    """Lower layers frozen and cached (0: none)."""
    lora: bool = False
    cache_seconds: float = 0.0
    soft: torch.Tensor | None = None
    """``(N_train, n_classes)`` teacher probabilities at the distillation temperature
    (``finetune.teacher``), else ``None``."""

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone


@dataclass
class _Best:
    """The best epoch so far: its validation W-F1 and its weights, copied to the CPU."""

    wf1: float = -1.0
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None
    """The backbone's state dict, or the LoRA adapter's (:func:`merc.text.lora.adapter_state`)."""
    head: dict[str, torch.Tensor] | None = None

    def offer(self, wf1: float, epoch: int, fit: _Fit) -> bool:
        """Keep epoch ``epoch`` if its ``wf1`` beats the best so far (strictly); whether it
        did."""
        if not wf1 > self.wf1:
            return False
        self.wf1, self.epoch = wf1, epoch
        self.state = (adapter_state(fit.backbone) if fit.lora else
                      {k: v.detach().to("cpu", copy=True)
                       for k, v in fit.backbone.state_dict().items()})
        self.head = {k: v.detach().to("cpu", copy=True) for k, v in fit.head.state_dict().items()}
        return True


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
    t_start = time.perf_counter()
    if not corpus.split("train") or not corpus.split("valid"):
        raise MercInputError(corpus.source, "fine-tuning needs train and validation dialogues",
                             field="split")
    device, bf16 = _device_and_precision(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    fit = _build(corpus, cfg, device, echo, tag)
    if cfg.teacher:
        t0 = time.perf_counter()
        fit.soft = torch.from_numpy(teacher_probs(cfg.teacher, corpus.split("train"),
                                                  corpus.label_names, cfg.distill_temperature,
                                                  progress=progress))
        echo(f"{tag}teacher {cfg.teacher}: soft targets of {len(fit.soft)} train utterances at "
             f"T={cfg.distill_temperature:g}, weight {cfg.distill_weight:g} "
             f"({time.perf_counter() - t0:.0f} s)")
    _restrict_training(fit, cfg)
    _cache_lower_states(fit, device)
    params, opt = build_optimizer(fit.encoder, fit.head, cfg, lora=fit.lora)
    sched = _schedule(opt, cfg, steps_per_epoch=len(_epoch_batches(cfg, fit.train, None)))
    echo(f"{tag}fine-tuning {cfg.base} on {corpus.name}: {len(fit.train.x)} train / "
         f"{len(fit.valid.x)} valid utterances, {fit.n_classes} classes, input "
         f"{cfg.context.describe()}, {_trained_part(cfg, fit.frozen, fit.n_layers)}, "
         f"device {device.type}{' (bf16)' if bf16 else ''}")
    best = _Best()
    history = []
    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        loss = _train_epoch(fit, cfg, opt, sched, params, _epoch_batches(cfg, fit.train, rng),
                            device, bf16, desc=f"{tag}epoch {epoch}", progress=progress)
        train_seconds = time.perf_counter() - t0
        wf1 = _valid_wf1(fit, cfg, corpus.label_names)
        history.append({"epoch": epoch, "train_loss": loss, "valid_wf1": wf1,
                        "seconds": time.perf_counter() - t0, "train_seconds": train_seconds})
        improved = best.offer(wf1, epoch, fit)
        echo(f"{tag}epoch {epoch}: train loss {loss:.4f}  valid W-F1 {wf1:.2f}"
             f"{'  (best)' if improved else ''}  {history[-1]['seconds']:.1f} s")
        if epoch - best.epoch >= cfg.patience:
            break
    adapter = _write_folder(fit, cfg, best, Path(out_dir))
    seconds = time.perf_counter() - t_start
    record = _make_record(corpus, cfg, fit, best, history, adapter, device, bf16, seconds)
    record.save(out_dir)
    echo(f"{tag}selected epoch {best.epoch} (valid W-F1 {best.wf1:.2f}); wrote {out_dir} "
         f"in {seconds:.0f} s")
    return record


def _device_and_precision(cfg: FinetuneConfig) -> tuple[torch.device, bool]:
    """The device to train on and whether to train under bf16 autocast (``finetune.precision``,
    ``finetune.accelerator``); applies ``finetune.num_threads``."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device("cuda" if cfg.accelerator in ("gpu", "auto")
                          and torch.cuda.is_available() else "cpu")
    if cfg.accelerator == "gpu" and device.type != "cuda":
        raise MercInputError("finetune.accelerator", "gpu requested but no CUDA device is visible",
                             field="accelerator")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (
        device.type == "cuda" or cpu_has_fast_bf16()))
    return device, bf16


def _build(corpus: Corpus, cfg: FinetuneConfig, device: torch.device,
           echo: Callable[[str], None], tag: str) -> _Fit:
    """Load the base encoder and its tokenizer, format the train and validation inputs, and
    make the head ``d -> n_classes`` and the class weights ``(n_classes,)``. Every parameter
    still trains (:func:`_restrict_training` comes next)."""
    base_dir = resolve_base(cfg.base)
    tokenizer = load_tokenizer(base_dir)
    cls_id, sep_id, pad_id = special_ids(base_dir, tokenizer)
    encoder = ContextEncoder(base_dir, dropout=cfg.dropout, pooling=cfg.pooling).to(device)
    formatter = InputFormatter(tokenizer, cfg.context, cls_id=cls_id, sep_id=sep_id,
                               max_positions=encoder.backbone.max_positions)
    train = _split_inputs(corpus, "train", formatter)
    valid = _split_inputs(corpus, "valid", formatter)
    if formatter.truncated_targets:
        echo(f"{tag}warning: {formatter.truncated_targets} utterances are longer than the "
             f"encoder's {encoder.backbone.max_positions} positions and were cut")
    n_classes = len(corpus.label_names)
    head = make_head(cfg.head, encoder.dim, n_classes, cfg.dropout).to(device)
    weights = class_weight_vector(train.y, n_classes, cfg.class_weights)
    return _Fit(base_dir=base_dir, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id,
                encoder=encoder, head=head, formatter=formatter, train=train, valid=valid,
                n_classes=n_classes, weights=weights)


def _restrict_training(fit: _Fit, cfg: FinetuneConfig) -> None:
    """Partial fine-tuning (``train_layers=k``: freeze the embeddings and all but the top ``k``
    layers; sets ``fit.frozen``) or LoRA (``lora_rank=r``: freeze every weight, add rank-``r``
    updates; sets ``fit.lora``)."""
    backbone = fit.backbone
    fit.n_layers = n_layers = len(backbone.layers)
    if cfg.train_layers is not None and not n_layers:
        raise MercInputError(cfg.base, "train_layers needs a BERT-family encoder; use "
                             "train_layers=null (full fine-tune)", field="finetune.train_layers")
    if cfg.train_layers is not None and cfg.train_layers < n_layers:
        fit.frozen = n_layers - cfg.train_layers
        for p in backbone.parameters():
            p.requires_grad_(False)
        for layer in backbone.layers[fit.frozen:]:
            for p in layer.parameters():
                p.requires_grad_(True)
    fit.lora = cfg.lora_rank > 0
    if fit.lora:
        try:
            add_adapters(backbone, cfg.lora_rank, cfg.lora_alpha)
        except ValueError as e:
            raise MercInputError(cfg.base, f"{e}; use lora_rank=0 (full fine-tune)",
                                 field="finetune.lora_rank") from None


def _cache_lower_states(fit: _Fit, device: torch.device) -> None:
    """Under partial fine-tuning, run the frozen lower layers once over the train and
    validation inputs and keep their outputs (``SplitInputs.states``: ``(T_i, d)`` float16 per
    input) and the time it took (``fit.cache_seconds``); nothing otherwise."""
    if not fit.frozen:
        return
    t0 = time.perf_counter()
    fit.train.states = _lower_states(fit.backbone, fit.train.x, fit.frozen, fit.pad_id, device)
    fit.valid.states = _lower_states(fit.backbone, fit.valid.x, fit.frozen, fit.pad_id, device)
    fit.cache_seconds = time.perf_counter() - t0


def build_optimizer(encoder: nn.Module, head: nn.Module, cfg: FinetuneConfig, *, lora: bool
                    ) -> tuple[list[nn.Parameter], torch.optim.AdamW]:
    """``(params, optimizer)``: the trainable parameters (encoder's, then head's) and AdamW
    over them.

    The encoder (and a ``linear`` head) train at ``lr`` (``lora_lr`` under LoRA), a ``gru``
    head at ``head_lr``. Each of these two parts is split by the weight-decay rule ``merc
    train`` uses (:func:`merc.training.loop.weight_decay_split` with ``decay_bias_norm=False``:
    biases and LayerNorm weights, and parameters marked ``_no_weight_decay``, train without
    weight decay), giving up to four groups: encoder decayed, encoder exempt, head decayed,
    head exempt (empty ones left out)."""
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    lr = cfg.lora_lr if lora else cfg.lr
    own = {id(p) for p in head.parameters()} if cfg.head == "gru" else set()
    groups: list[dict[str, Any]] = []
    for part, part_lr in (([p for p in params if id(p) not in own], lr),
                          ([p for p in params if id(p) in own], cfg.head_lr)):
        decayed, exempt = weight_decay_split(part, decay_bias_norm=False)
        groups += [{"params": decayed, "lr": part_lr, "weight_decay": cfg.weight_decay},
                   {"params": exempt, "lr": part_lr, "weight_decay": 0.0}]
    return params, torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _schedule(opt: torch.optim.Optimizer, cfg: FinetuneConfig, steps_per_epoch: int
              ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first ``warmup`` fraction of all ``max_epochs`` epochs' steps,
    then linear decay to 0 (:func:`merc.training.loop.warmup_schedule`)."""
    total = steps_per_epoch * cfg.max_epochs
    warm = max(1, int(cfg.warmup * total))
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(warm, total, "linear"))


def _epoch_batches(cfg: FinetuneConfig, train: SplitInputs,
                   generator: np.random.Generator | None
                   ) -> list[tuple[np.ndarray, list[int] | None]]:
    """One epoch's training batches, shuffled with ``generator`` (``None``: in order, to count
    the steps). Each: the indices of its inputs in ``train.x`` and, for the ``gru`` head, the
    utterance count of each of its (whole) dialogues (:func:`dialogue_batches`); for the
    ``linear`` head, length-sorted input batches (:func:`~merc.text.backbone.input_batches`)
    and ``None``."""
    if cfg.head == "gru":
        return dialogue_batches(train.sizes, cfg.batch_size, generator)
    return [(idx, None) for idx in input_batches(train.x, cfg.batch_size, generator)]


def _train_epoch(fit: _Fit, cfg: FinetuneConfig, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, params: list[nn.Parameter],
                 steps: list[tuple[np.ndarray, list[int] | None]], device: torch.device,
                 bf16: bool, *, desc: str, progress: bool) -> float:
    """One pass over ``steps`` (:func:`_epoch_batches`) in train mode: per batch of ``B``
    inputs, logits ``(B, n_classes)`` (:func:`_batch_logits`), class-weighted cross-entropy
    against labels ``(B,)``, gradients clipped to norm 1 over ``params``, an AdamW step and a
    schedule step. Returns the mean train loss per utterance."""
    from tqdm.auto import tqdm

    fit.encoder.train()
    fit.head.train()
    weight = None if fit.weights is None else fit.weights.to(device)
    total_loss, n_seen = 0.0, 0
    for idx, sizes in tqdm(steps, desc=desc, unit="step", leave=False, disable=not progress):
        y = torch.as_tensor(fit.train.y[idx], device=device)
        logits = _batch_logits(fit, cfg, idx, sizes, device, bf16)
        if fit.soft is None:
            loss = F.cross_entropy(logits, y, weight=weight)
        else:
            loss = distillation_loss(logits, y, fit.soft[idx].to(device),
                                     temperature=cfg.distill_temperature,
                                     weight=cfg.distill_weight, class_weights=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        total_loss += float(loss.detach()) * len(idx)
        n_seen += len(idx)
    return total_loss / max(n_seen, 1)


def _batch_logits(fit: _Fit, cfg: FinetuneConfig, idx: np.ndarray, sizes: list[int] | None,
                  device: torch.device, bf16: bool) -> torch.Tensor:
    """Float32 logits ``(B, n_classes)`` of train inputs ``idx (B,)`` (``sizes``: their
    dialogues' utterance counts, ``gru`` head only). The ``R`` distinct token rows are padded to
    ``(R, T)``; under partial fine-tuning the cached lower-layer states ``(R, T, d)`` enter the
    trained top layers, else the whole encoder runs; each target span is pooled to ``v (B, d)``
    and the head maps it to logits (bf16 autocast when ``bf16``)."""
    batch = pad_inputs([fit.train.x[i] for i in idx], fit.pad_id, device)
    with autocast(device, bf16):
        if fit.frozen:
            h = _pad_states([fit.train.states[idx[b]] for b in batch.first], device)
            h = fit.backbone.hidden(None, batch.mask, start=fit.frozen, h=h)
            v = pool_target(h, batch.spans, cfg.pooling, batch.rows)
        else:
            v = fit.encoder(batch.ids, batch.mask, batch.spans, batch.rows)
        return _logits(fit.head, v, sizes)


def _valid_wf1(fit: _Fit, cfg: FinetuneConfig, label_names: list[str]) -> float:
    """Validation W-F1 (percent; :func:`merc.metrics.classification_metrics`, the figure
    ``merc train`` selects on) of the model as it stands (:func:`predict_classes`)."""
    pred = predict_classes(fit.encoder, fit.head, fit.valid.x, fit.valid.sizes,
                           pad_id=fit.pad_id, batch_size=cfg.eval_batch_size,
                           states=fit.valid.states, frozen=fit.frozen)
    return float(classification_metrics(fit.valid.y, pred, list(label_names))["wf1"])


def _write_folder(fit: _Fit, cfg: FinetuneConfig, best: _Best, out_dir: Path
                  ) -> dict[str, Any] | None:
    """Load the best epoch's weights and write the encoder folder ``out_dir``: the whole
    backbone (``model.safetensors`` + ``config.json``) or, under LoRA, only the adapter
    (:data:`~merc.text.lora.ADAPTER_FILE`); the head (:data:`HEAD_FILE`); the tokenizer
    files. Stale files of another kind of fine-tune are removed. Returns the record's
    ``adapter`` entry (``None`` without LoRA)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = fit.backbone
    adapter = None
    if fit.lora:
        from safetensors.torch import save_file

        load_adapter_state(backbone, best.state)
        save_file(best.state, str(out_dir / ADAPTER_FILE), metadata={"format": "pt"})
        (out_dir / "model.safetensors").unlink(missing_ok=True)  # a stale full encoder
        (out_dir / "config.json").write_text(json.dumps(backbone.config, indent=2))
        adapter = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha,
                   "scale": cfg.lora_alpha / cfg.lora_rank,
                   "base_sha256": file_sha256(fit.base_dir / "model.safetensors")}
    else:
        backbone.load_state_dict(best.state)
        (out_dir / ADAPTER_FILE).unlink(missing_ok=True)
        backbone.save_pretrained(out_dir)
    from safetensors.torch import save_file

    # Both heads are kept: the gru head to score the joint model, the linear one to serve as a
    # distillation teacher (merc.finetune.distill).
    save_file(best.head, str(out_dir / HEAD_FILE), metadata={"format": "pt"})
    copy_tokenizer(fit.base_dir, out_dir)
    return adapter


def _make_record(corpus: Corpus, cfg: FinetuneConfig, fit: _Fit, best: _Best,
                 history: list[dict[str, Any]], adapter: dict[str, Any] | None,
                 device: torch.device, bf16: bool, seconds: float) -> EncoderRecord:
    """The folder's ``merc_encoder.json``: how to format inputs and pool, and how the encoder
    was trained (settings, data, the per-epoch history and the selected epoch)."""
    return EncoderRecord(
        context=cfg.context, cls_id=fit.cls_id, sep_id=fit.sep_id, pad_id=fit.pad_id,
        max_positions=int(fit.backbone.max_positions), dim=int(fit.encoder.dim),
        pooling=cfg.pooling, base_model=cfg.base, adapter=adapter,
        training={
            "settings": cfg.to_dict(), "head": cfg.head, "n_classes": fit.n_classes,
            "corpus": corpus.name,
            "corpus_fingerprint": corpus_fingerprint(corpus.conversations),
            "train_dialogues": sorted(str(c.id) for c in corpus.split("train")),
            "label_names": list(corpus.label_names), "valid_split": corpus.valid_split,
            "best_epoch": best.epoch, "valid_wf1": best.wf1, "history": history,
            "cache_seconds": fit.cache_seconds, "seconds": seconds, "device": device.type,
            "precision": "bf16" if bf16 else "32",
            "truncated_targets": fit.formatter.truncated_targets,
            "merc_version": __version__, "created": now_iso()})


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
def predict_classes(encoder: ContextEncoder, head: nn.Module, inputs: list[EncodedInput],
                    sizes: list[int], *, pad_id: int, batch_size: int,
                    states: list[torch.Tensor] | None = None, frozen: int = 0) -> np.ndarray:
    """``(N,)`` argmax class of each of ``inputs`` (eval mode): the encoder's pooled target
    vectors ``(N, d)``, then the head (``sizes``: utterances per dialogue, which the ``gru``
    head needs). With ``frozen`` lower layers, their cached ``states`` (``(T_i, d)`` per input)
    enter the upper layers instead of the tokens.

    The one prediction loop of ``merc finetune``: validation after every epoch
    (:func:`_valid_wf1`) and :func:`merc.finetune.run.score_joint` both call it.
    :func:`merc.training.loop.evaluate` does not fit: it runs a context model over collated
    feature batches (``Batch`` of ``(B, L, ...)`` padded dialogues), while this runs a token
    encoder over formatted inputs (cached lower-layer states under partial fine-tuning) and
    then a head over whole dialogues. What both share is the scoring:
    :func:`merc.metrics.classification_metrics` of the predictions."""
    encoder.eval()
    head.eval()
    device = next(head.parameters()).device
    if not frozen:
        v = torch.from_numpy(encode_inputs(encoder, inputs, pad_id, batch_size)).to(device)
    else:
        v = torch.zeros((len(inputs), encoder.dim), device=device)
        for idx in input_batches(inputs, batch_size):
            batch = pad_inputs([inputs[i] for i in idx], pad_id, device)
            with autocast(device):
                h = encoder.backbone.hidden(None, batch.mask, start=frozen,
                                            h=_pad_states([states[idx[b]] for b in batch.first],
                                                          device))
                v[torch.as_tensor(idx, device=device)] = pool_target(
                    h, batch.spans, encoder.pooling, batch.rows).float()
    return _head_predict(head, v, sizes)
