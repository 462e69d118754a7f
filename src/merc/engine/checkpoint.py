"""Loading merc checkpoints safely (``torch.load(weights_only=True)``: no code can run).

Deliberately free of Lightning: inference loads checkpoints without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from merc.errors import MercInputError
from merc.features.spec import FeatureSpec
from merc.models import create_model

CHECKPOINT_KEY = "merc"
"""Key under which checkpoints store config, label map, feature spec, dims and merc version."""


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with everything needed to feed it."""

    model: nn.Module
    config: dict[str, Any]
    """The experiment config the model was trained with (plain dict)."""
    label_names: list[str]
    input_dims: dict[str, int]
    feature_spec: FeatureSpec
    """Feature sources and the train-split normalisation statistics."""
    merc_version: str


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint written by ``merc train`` (one ``seed_*/best.ckpt``)."""
    path = Path(path)
    if not path.exists():
        raise MercInputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types; report them uniformly
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MercInputError(path, f"cannot load checkpoint safely: {first}") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise MercInputError(path, "not a merc checkpoint (no 'merc' metadata)", field="merc")
    meta = ckpt[CHECKPOINT_KEY]
    cfg = meta["config"]
    model = create_model(cfg["model"]["name"], meta["input_dims"], len(meta["label_names"]),
                         **{k: v for k, v in cfg["model"].items() if k != "name"})
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    model.load_state_dict(state)
    return LoadedCheckpoint(model=model.eval(), config=cfg, label_names=list(meta["label_names"]),
                            input_dims=dict(meta["input_dims"]),
                            feature_spec=FeatureSpec.from_dict(meta["feature_spec"]),
                            merc_version=meta.get("merc_version", "unknown"))
