"""Model registry in the style of timm: ``@register_model`` + ``create_model(name, ...)``.

Every model is an ``nn.Module`` whose constructor takes ``input_dims`` (modality -> feature
dim, from the data), ``num_classes`` and its typed config dataclass (a
:class:`merc.config.ModelConfig`, whose ``__post_init__`` checks the allowed values); it never
knows dataset names. **Adding a model variant (ablation) is one entry in the ``variants`` of the
model's ``@register_model``** in its own file.
``forward(batch)`` takes a :class:`merc.data.collate.Batch` and returns a :class:`ModelOutput`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from merc.config import GENERIC_TRAIN, ModelConfig, build_model_config
from merc.config.registry import register_model_config


@dataclass
class ModelOutput:
    """What every model returns.

    Attributes:
        logits: ``(B, L, C)`` class scores; padded positions are ignored by the engine.
        aux_loss: Scalar added to the classification loss (e.g. a regulariser), or ``None``.
        hidden: ``(B, L, H)`` final utterance representation (for t-SNE plots), or ``None``.
        modality_weights: Modality -> ``(B, L)`` per-utterance fusion weight, or ``None`` for
            models without learned modality weighting.
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    modality_weights: dict[str, torch.Tensor] | None = None


@dataclass
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type[ModelConfig]
    description: str = ""
    train_defaults: dict[str, Any] = field(default_factory=dict)
    """Training settings (``TrainConfig`` fields) the model's paper prescribes; they fill the
    fields the user left unset (:meth:`merc.config.ExperimentConfig.resolved`)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named variants (ablations, alternatives): variant name -> model options. The bench plans
    its ablation tables from them and the registry test runs every one."""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type[ModelConfig], *,
                   train_defaults: Mapping[str, Any] | None = None,
                   variants: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a model under ``name`` with its config dataclass.

    Args:
        config_cls: A :class:`merc.config.ModelConfig` dataclass (its ``name`` is set here).
        train_defaults: Optimiser/schedule settings the model's paper prescribes (e.g. MaTAV's
            batch 64, lr 1e-4); keys of :data:`merc.config.GENERIC_TRAIN`.
        variants: Variant name -> model options, e.g. ``{"w/o PFM": {"fusion": "add"}}``;
            each is validated when it is built (the registry test, tests/test_models.py, builds
            every one), not at import: validating every model's variants there cost prediction
            a third of a second of start-up.
    """
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise TypeError(f"model {name!r}: config class must subclass merc.config.ModelConfig")
    bad = sorted(set(train_defaults or {}) - set(GENERIC_TRAIN))
    if bad:
        raise ValueError(f"model {name!r}: train_defaults {bad} are not among the settings a "
                         f"paper may prescribe ({sorted(GENERIC_TRAIN)})")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (cls.__doc__ or "").strip().splitlines()
        config_cls.name = name
        _REGISTRY[name] = ModelEntry(name, cls, config_cls, doc[0] if doc else "",
                                     dict(train_defaults or {}),
                                     {v: dict(o) for v, o in (variants or {}).items()})
        # Hand the config layer what it needs to parse `model.name=...` (it cannot import us).
        register_model_config(name, config_cls, dict(train_defaults or {}))
        cls.model_name = name
        return cls

    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}") from None


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The model's config dataclass with ``overrides`` applied, validated (a wrong key or value
    raises :class:`merc.config.ConfigError` naming ``model.<key>``)."""
    return build_model_config({**dict(overrides or {}), "name": name})


def create_model(model: str | ModelConfig, input_dims: Mapping[str, int], num_classes: int,
                 config: ModelConfig | None = None, **overrides) -> nn.Module:
    """Build a registered model: from its config (``create_model(cfg.model, dims, C)``, how the
    engine and checkpoints do it) or from its name plus options.

    Args:
        model: A model config dataclass (it names the model), or a registered model name.
        input_dims: Modality -> feature dimension, e.g. ``{"text": 384, "audio": 8}``.
        num_classes: Number of output classes.
        config: With a name: a config instance (default: the model's defaults + ``overrides``).
    """
    if isinstance(model, ModelConfig):
        config, name = model, model.name
    else:
        name = model
    entry = get_entry(name)
    if config is None:
        config = make_config(name, overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not input_dims:
        raise ValueError(f"model {name!r} needs at least one input modality")
    return entry.cls(dict(input_dims), int(num_classes), config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
