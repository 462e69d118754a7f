"""Loading merc checkpoints safely (``torch.load(weights_only=True)``: no code can run) and
resolving a run folder to its best seed. Below training and prediction, which both use it;
evaluating a checkpoint on a split is :mod:`merc.training.evaluate`.

Deliberately free of Lightning: prediction loads checkpoints without importing the trainer.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from merc.config import ExperimentConfig
from merc.errors import MercInputError
from merc.features.spec import FeatureSpec
from merc.models import create_model

CHECKPOINT_KEY = "merc"
"""Key under which checkpoints store config, label map, feature spec, dims and merc version."""


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with everything needed to feed it."""

    model: nn.Module
    config: ExperimentConfig
    """The (resolved) experiment config the model was trained with."""
    label_names: list[str]
    input_dims: dict[str, int]
    feature_spec: FeatureSpec
    """Feature sources and the train-split normalisation statistics."""
    merc_version: str
    path: Path | None = None
    """The file it was loaded from."""
    data: dict | None = None
    """The corpus it was trained on (:func:`merc.training.provenance.data_block`); ``None`` in
    checkpoints written before merc recorded it."""
    temperature: float = 1.0
    """Softmax temperature fitted on the validation split (:mod:`merc.calibration`); 1.0 for
    a checkpoint trained with ``train.calibrate=false`` or before merc calibrated."""


def resolve_checkpoint(path: str | Path) -> tuple[Path, str | None]:
    """A checkpoint file, the best seed of a ``merc train`` run folder, or the checkpoint of a
    pretrained model named ``path`` (:mod:`merc.pretrained`; a file or folder of that name
    wins).

    A folder is a run: among its ``seed_<s>/`` with both ``best.ckpt`` and ``metrics.json``, the
    seed with the highest *validation* selection metric (the run's ``train.metric``, W-F1 by
    default) is chosen -- never by test. Returns the checkpoint path and, for a folder, one line
    saying which seed was picked and why (``None`` for a file).

    Raises:
        MercInputError: a folder without finished seeds, or an unreadable ``metrics.json``.
    """
    import json

    from merc.pretrained import get_pretrained, is_pretrained_name

    if is_pretrained_name(path):
        model = get_pretrained(str(path))
        model.require_available()
        return model.checkpoint, None
    path = Path(path)
    if not path.exists() and not path.suffix and len(path.parts) == 1:
        from merc.pretrained import pretrained_names

        raise MercInputError(str(path), f"no such file, folder or pretrained model; merc's zoo "
                             f"has {pretrained_names()} (merc models --pretrained)",
                             field="checkpoint")
    if not path.is_dir():
        return path, None
    scored = []
    for seed_dir in sorted(path.glob("seed_*")):
        ckpt, metrics = seed_dir / "best.ckpt", seed_dir / "metrics.json"
        if not (ckpt.is_file() and metrics.is_file()):
            continue
        try:
            m = json.loads(metrics.read_text())
            key = (m.get("selection_metric") or {}).get("key", "wf1")
            scored.append((float(m["valid"][key]), seed_dir.name, ckpt, key))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise MercInputError(metrics, f"cannot read the seed's validation score ({e})",
                                 field="valid") from None
    if not scored:
        raise MercInputError(path, "a folder, but not a merc run with a finished seed "
                             "(no seed_<s>/best.ckpt with metrics.json); give a checkpoint file "
                             "or a run folder of merc train")
    best = max(scored, key=lambda t: t[0])             # ties: the first seed in name order
    others = ", ".join(f"{name} {score:.2f}" for score, name, _, _ in scored)
    return best[2], (f"{path}: using {best[1]} (best validation {best[3]} {best[0]:.2f} of "
                     f"{len(scored)} seed(s): {others})")


def _load_failure(e: Exception) -> str:
    """merc's one-line reason for a checkpoint ``torch.load(weights_only=True)`` refused.

    Never torch's own message for a refused pickle: it advises re-running with
    ``weights_only=False``, i.e. executing whatever the file asks for -- the one thing a crafted
    checkpoint wants. A file written by ``merc train`` holds only tensors and plain data."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "weights only" in text.lower():
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it asks for {found.group(1)})" if found else ""
        return (f"refused: the file holds Python objects other than tensors and plain "
                f"data{what}; a checkpoint written by merc train never does, and loading it "
                "could run code")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if "weights_only" in first:              # belt and braces: never relay that advice
        first = ""
    return (f"cannot read as a torch checkpoint ({type(e).__name__}"
            f"{': ' + first[:200] if first else ''}); damaged, truncated or not a checkpoint")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint written by ``merc train`` (one ``seed_*/best.ckpt``).

    Checkpoints of earlier merc versions load too: their config is a plain dict of the same
    sections, parsed and validated here like a YAML file.
    """
    path = Path(path)
    if not path.exists():
        raise MercInputError(path, "checkpoint not found")
    if path.is_dir():
        raise MercInputError(path, "is a folder; give a checkpoint file (seed_<s>/best.ckpt), "
                             "or resolve a run folder with merc.checkpoint.resolve_checkpoint")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on stderr; the outcome is reported below.
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types; report them uniformly
        raise MercInputError(path, _load_failure(e)) from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise MercInputError(path, "not a merc checkpoint (no 'merc' metadata)", field="merc")
    meta = ckpt[CHECKPOINT_KEY]
    if not isinstance(meta, dict):
        raise MercInputError(path, "not a merc checkpoint ('merc' metadata is not a mapping)",
                             field="merc")
    for key in ("config", "label_names", "input_dims", "feature_spec"):
        if key not in meta:
            raise MercInputError(path, "missing from the checkpoint's metadata (not written by "
                                 "merc train, or edited)", field=f"merc.{key}")
    try:
        config = ExperimentConfig.from_dict(meta["config"])
    except ValueError as e:
        raise MercInputError(path, f"stored config: {e}", field="config") from None
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise MercInputError(path, "not a mapping of weights", field="state_dict")
    state = {k.removeprefix("model."): v for k, v in state.items()
             if isinstance(k, str) and k.startswith("model.")}
    for name, tensor in state.items():
        # NaN/inf weights predict NaN probabilities for every utterance; refuse them here, the
        # one place weights enter, rather than write "confidence": NaN.
        if (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
                and not bool(torch.isfinite(tensor).all())):
            raise MercInputError(path, "non-finite weights (NaN/inf): the model diverged or "
                                 "the file was damaged", field=f"state_dict.model.{name}")
    try:
        dims = {str(k): int(v) for k, v in dict(meta["input_dims"]).items()}
        model = create_model(config.model, dims, len(meta["label_names"]))
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        # load_state_dict lists every missing/unexpected/mis-shaped tensor over many lines.
        first = " ".join(str(e).split())
        if len(first) > 300:
            first = first[:300] + "..."
        raise MercInputError(path, f"weights do not match the stored config "
                             f"({config.model_name}): {first}", field="state_dict") from None
    temperature = meta.get("temperature", 1.0)
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not 0 < temperature < float("inf")):
        raise MercInputError(path, f"expected a positive finite number, got {temperature!r}",
                             field="merc.temperature")
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    if isinstance(spec.text, str) and spec.text.startswith(("./", "../")):
        # An encoder folder shipped with the checkpoint (the zoo's: ``./encoder`` beside it, or
        # ``../<model>/encoder`` when two zoo models share one adapter): relative to the
        # checkpoint's own folder, never to the working directory.
        spec.text = str((Path(path).parent / spec.text).resolve())
    return LoadedCheckpoint(model=model.eval(), config=config,
                            label_names=list(meta["label_names"]),
                            input_dims=dict(meta["input_dims"]),
                            feature_spec=spec,
                            merc_version=meta.get("merc_version", "unknown"), path=path,
                            data=meta.get("data"), temperature=float(temperature))
