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



def default_data_dir() -> Path:
    """``$MERC_DATA_DIR`` or ``../shared/data`` relative to the current directory."""
    return Path(os.environ.get(DATA_DIR_ENV, "../shared/data"))

