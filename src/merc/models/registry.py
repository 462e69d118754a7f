"""Model registry in the style of timm: ``@register_model`` + ``create_model(name, ...)``.

Every model is an ``nn.Module`` whose constructor takes ``input_dims`` (modality -> feature
dim, from the data), ``num_classes`` and a typed config dataclass; it never knows dataset names.
``forward(batch)`` takes a :class:`merc.data.collate.Batch` and returns a :class:`ModelOutput`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


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
    config_cls: type
    description: str = ""
    train_defaults: dict[str, Any] = field(default_factory=dict)
    """Training settings (``TrainConfig`` fields) the model's paper prescribes; they replace the
    generic defaults unless the user sets them
    (:meth:`merc.config.ExperimentConfig.apply_model_train_defaults`)."""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, *, train_defaults: Mapping[str, Any] | None = None
                   ) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a model under ``name`` with its config dataclass.

    ``train_defaults``: optimiser/schedule settings the model's paper prescribes (e.g. MaTAV's
    batch 64, lr 1e-4), applied in place of the generic ``TrainConfig`` defaults."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, cls, config_cls, doc[0] if doc else "",
                                     dict(train_defaults or {}))
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


def make_config(name: str, overrides: Mapping[str, Any] | None = None):
    """The model's config dataclass with ``overrides`` applied (unknown keys are an error)."""
    cfg_cls = get_entry(name).config_cls
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(overrides or {}) - known
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for model {name!r}; "
                         f"known: {sorted(known)}")
    return cfg_cls(**dict(overrides or {}))


def create_model(name: str, input_dims: Mapping[str, int], num_classes: int,
                 config=None, **overrides) -> nn.Module:
    """Build registered model ``name``.

    Args:
        input_dims: Modality -> feature dimension, e.g. ``{"text": 384, "audio": 8}``.
        num_classes: Number of output classes.
        config: A config dataclass instance (default: the model's defaults + ``overrides``).
    """
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
