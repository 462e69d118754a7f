"""The experiment config (:class:`ExperimentConfig`: sections ``data``, ``model``, ``train``,
``finetune`` and a seed list), built from a dict, a YAML file, or ``section.key=value``
overrides, and validated section by section."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merc.config.checks import _short, validate_section
from merc.config.registry import model_config_class
from merc.config.sections import DataConfig, FinetuneConfig, ModelConfig, TrainConfig
from merc.config.yaml_loader import load_yaml
from merc.errors import ConfigError


def build_model_config(value: Any) -> ModelConfig:
    """The registered model's config dataclass from ``{"name": ..., **options}`` (or a name, or an
    instance, returned as is), validated like every other section."""
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
        config_cls, _ = model_config_class(name)
    except ValueError as e:
        raise ConfigError("model.name", str(e)) from None
    return validate_section(config_cls, options, "model")


def model_to_dict(model: ModelConfig) -> dict[str, Any]:
    """``{"name": ..., **options}``: a model config as it is written to YAML and checkpoints."""
    return {"name": model.name, **asdict(model)}


MAX_SEEDS = 1000
"""Most training seeds one run may list: each is a full training run."""

MAX_SEED = 2**32 - 1
"""Largest seed: numpy and Lightning take seeds in [0, 2**32 - 1]."""


def _check_seeds(value: Any) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise ConfigError("seeds", f"expected a non-empty list of integers, got {_short(value)}")
    if len(value) > MAX_SEEDS:
        raise ConfigError("seeds", f"expected at most {MAX_SEEDS} seeds (each is a training "
                          f"run), got {len(value)}")
    bad = next((s for s in value if not 0 <= s <= MAX_SEED), None)
    if bad is not None:
        raise ConfigError("seeds", f"expected seeds in [0, {MAX_SEED}] (what numpy and "
                          f"Lightning accept), got {_short(bad)}")
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
        _, paper = model_config_class(self.model_name)
        return {k: v for k, v in paper.items() if getattr(self.train, k) is None}

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

