"""What the registries above the config hand in: model config classes and corpus defaults.

The config layer imports nothing of merc above it. The model registry
(:func:`merc.models.registry.register_model`) and the corpus registry
(:func:`merc.data.corpora.register_corpus`) call :func:`register_model_config` and
:func:`register_corpus_defaults` as each entry is registered, so that a config can name a model
or a corpus, check it and fill its defaults without knowing the code behind it.

The built-in entries register when their package is first imported. A config built before that
(``ExperimentConfig()`` straight from the Python API) asks for them by module name through
:func:`_load_builtin` -- the one place where the config reaches up, as a plugin loader does,
without a static import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

_BUILTIN = {"model": "merc.models", "corpus": "merc.data.corpora"}
"""Module whose import registers the built-in models / corpora."""

_MODELS: dict[str, tuple[type, dict[str, Any]]] = {}
"""Model name -> (its config dataclass, the training settings its paper prescribes)."""


@dataclass(frozen=True)
class CorpusDefaults:
    """A corpus' defaults for the :class:`~merc.config.DataConfig` fields left unset."""

    modalities: tuple[str, ...] | None
    """Default ``data.modalities``; ``None`` = every modality the corpus provides."""
    text: str
    """Default ``data.text``: an encoder name, or ``external`` for the corpus' own vectors."""


_CORPORA: dict[str, CorpusDefaults] = {}


def _load_builtin(kind: str) -> None:
    importlib.import_module(_BUILTIN[kind])


def register_model_config(name: str, config_cls: type, train_defaults: dict[str, Any]) -> None:
    """Called by the model registry for every model it registers."""
    _MODELS[name] = (config_cls, dict(train_defaults))


def model_names() -> list[str]:
    """Registered model names, sorted."""
    if not _MODELS:
        _load_builtin("model")
    return sorted(_MODELS)


def model_config_class(name: str) -> tuple[type, dict[str, Any]]:
    """``(config dataclass, paper training settings)`` of model ``name``.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    if name not in _MODELS:
        _load_builtin("model")
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {model_names()}") from None


def register_corpus_defaults(name: str, modalities: tuple[str, ...] | None, text: str) -> None:
    """Called by the corpus registry for every corpus it registers."""
    _CORPORA[name] = CorpusDefaults(modalities, text)


def corpus_names() -> list[str]:
    """Registered corpus names, in registration order."""
    if not _CORPORA:
        _load_builtin("corpus")
    return list(_CORPORA)


def corpus_defaults() -> dict[str, dict[str, Any]]:
    """Per-corpus defaults for :class:`~merc.config.DataConfig` fields left unset:
    ``{corpus: {"modalities": [...] | None, "text": ...}}``."""
    return {name: {"modalities": list(d.modalities) if d.modalities else None, "text": d.text}
            for name in corpus_names() for d in [_CORPORA[name]]}
