"""Where data lives by default, and the rule that makes a run's local paths absolute."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "MERC_DATA_DIR"
"""Environment variable naming the data folder (default: ``../shared/data`` beside the checkout)."""


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



MODELS_DIR_ENV = "MERC_MODELS_DIR"
"""Environment variable naming the folder of locally assembled encoders (default
``~/.cache/merc/models``)."""


def models_dir() -> Path:
    """``$MERC_MODELS_DIR`` or ``~/.cache/merc/models``: where ``make mpnet`` puts the encoders of
    :data:`merc.config.sources.LOCAL_MODELS`."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "~/.cache/merc/models").expanduser()


def local_model_dir(name: str) -> Path:
    """The folder of the locally assembled encoder ``name`` (``"mpnet"``).

    Raises:
        MercInputError: it has not been assembled here; the message says the command.
    """
    from merc.config.sources import LOCAL_MODELS
    from merc.errors import MercInputError

    folder = models_dir() / LOCAL_MODELS[name]
    if not (folder / "model.safetensors").is_file():
        raise MercInputError(folder, f"the {name} encoder ({LOCAL_MODELS[name]}) is not "
                             f"assembled on this machine; run `make mpnet` in a merc checkout "
                             f"(or scripts/get_mpnet.sh {folder}) once, or set "
                             f"{MODELS_DIR_ENV} to the folder that holds it",
                             field="text_encoder")
    return folder


def default_data_dir() -> Path:
    """``$MERC_DATA_DIR`` or ``../shared/data`` relative to the current directory."""
    return Path(os.environ.get(DATA_DIR_ENV, "../shared/data"))

