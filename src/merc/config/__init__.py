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

Where things live: :mod:`~merc.config.sections` (the sections), :mod:`~merc.config.experiment`
(:class:`ExperimentConfig`, overrides), :mod:`~merc.config.checks` (type and value checks),
:mod:`~merc.config.yaml_loader`, :mod:`~merc.config.help` (help text from docstrings),
:mod:`~merc.config.paths`, :mod:`~merc.config.sources` (feature source names),
:mod:`~merc.config.context` (the fine-tuned encoder's input layout) and
:mod:`~merc.config.registry` (what the model and corpus registries hand in: this package imports
nothing of merc above it).

Adding a config section: write its dataclass in :mod:`~merc.config.sections` and add one field to
:class:`ExperimentConfig`;
parsing, overrides (``section.key=value``), YAML, checkpoints, the run fingerprint and
``merc train --help`` all iterate over the sections.
"""

from merc.config.checks import require, require_choice, validate_section
from merc.config.context import LAYOUTS, POOLINGS, ContextFormat
from merc.config.experiment import (ExperimentConfig, build_model_config, merge_config,
                                    model_to_dict, parse_overrides)
from merc.config.help import describe_options, field_docs
from merc.config.paths import DATA_DIR_ENV, absolute_local_paths, default_data_dir
from merc.config.registry import (corpus_defaults, corpus_names, model_config_class, model_names,
                                  register_corpus_defaults, register_model_config)
from merc.config.sections import (FINETUNE_HEADS, GENERIC_TRAIN, LR_DECAYS, MODALITIES,
                                  SELECTION_METRICS, TRAIN_ACCELERATORS, TRAIN_STRATEGIES,
                                  DataConfig, FinetuneConfig, ModelConfig, TrainConfig)
from merc.config.sources import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER, VIDEO_DEFAULT_FPS,
                                 VIDEO_EXTRACTORS, parse_video_source)
from merc.config.yaml_loader import YAML_MAX_DEPTH, load_yaml
from merc.errors import ConfigError

__all__ = [
    "AUDIO_OPENSMILE_SETS", "DATA_DIR_ENV", "DEFAULT_TEXT_ENCODER", "FINETUNE_HEADS",
    "GENERIC_TRAIN", "LAYOUTS", "LR_DECAYS", "MODALITIES", "POOLINGS", "SELECTION_METRICS",
    "TRAIN_ACCELERATORS", "TRAIN_STRATEGIES", "VIDEO_DEFAULT_FPS", "VIDEO_EXTRACTORS",
    "YAML_MAX_DEPTH", "ConfigError", "ContextFormat", "DataConfig", "ExperimentConfig",
    "FinetuneConfig", "ModelConfig", "TrainConfig", "absolute_local_paths", "build_model_config",
    "corpus_defaults", "corpus_names", "default_data_dir", "describe_options", "field_docs",
    "load_yaml", "merge_config", "model_config_class", "model_names", "model_to_dict",
    "parse_overrides", "parse_video_source", "register_corpus_defaults", "register_model_config",
    "require", "require_choice", "validate_section",
]
