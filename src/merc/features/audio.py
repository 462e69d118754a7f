"""Utterance-level acoustic functionals with openSMILE.

One fixed-length vector per wav file: ``eGeMAPSv02`` (88-d, the Geneva minimalistic acoustic
parameter set) or ``ComParE_2016`` (6373-d). openSMILE ships its own binary and config files in
the ``opensmile`` wheel, so it needs no network; it is imported only when audio is actually
extracted.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence

import numpy as np

from merc.errors import MercInputError
from merc.features.spec import AUDIO_OPENSMILE_SETS

log = logging.getLogger(__name__)

LEVELS = ("functionals",)
"""Supported feature levels: one vector per file. (Low-level descriptors give a variable
number of frames per utterance, which the utterance-level models here do not consume.)"""


class OpenSmileExtractor:
    """openSMILE functionals for a list of wav files.

    Args:
        feature_set: One of :data:`~merc.features.spec.AUDIO_OPENSMILE_SETS`.
        level: ``"functionals"`` (the only level supported).

    Multi-channel files are mixed down to mono; the file's own sampling rate is used.
    """

    name = "opensmile"
    """Extractor name used in cache keys."""

    def __init__(self, feature_set: str = "eGeMAPSv02", level: str = "functionals") -> None:
        if feature_set not in AUDIO_OPENSMILE_SETS:
            raise MercInputError("FeatureSpec.audio",
                                 f"unknown openSMILE feature set {feature_set!r}; expected one of "
                                 f"{list(AUDIO_OPENSMILE_SETS)} or 'external'")
        if level not in LEVELS:
            raise MercInputError("FeatureSpec.audio",
                                 f"unsupported openSMILE level {level!r}; expected one of "
                                 f"{list(LEVELS)}")
        self.feature_set = feature_set
        self.level = level
        self._smile = None

    def __repr__(self) -> str:
        return f"OpenSmileExtractor({self.feature_set!r}, level={self.level!r})"

    def settings(self) -> dict:
        """Everything that determines the features, for the cache key; imports nothing heavy."""
        try:
            version = importlib.metadata.version("opensmile")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"feature_set": self.feature_set, "level": self.level, "mixdown": True,
                "opensmile": version}

    def _load(self):
        if self._smile is None:
            try:
                import opensmile
            except ImportError:
                raise MercInputError("FeatureSpec.audio",
                                     "openSMILE features need the opensmile package: "
                                     "pip install opensmile") from None
            self._smile = opensmile.Smile(
                feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                feature_level=opensmile.FeatureLevel.Functionals,
                mixdown=True,
            )
        return self._smile

    @property
    def dim(self) -> int:
        """Feature dimension (88 for eGeMAPSv02, 6373 for ComParE_2016)."""
        return len(self._load().feature_names)

    def extract(self, paths: Sequence[str | os.PathLike], progress: bool = True, *,
                origins: Sequence[tuple[object, object]] | None = None) -> np.ndarray:
        """Compute one functionals vector per file.

        Args:
            paths: ``n`` wav (or other libsndfile-readable) files.
            progress: Show a tqdm bar over files.
            origins: Optional ``(dialogue, utterance)`` per path, used only to name the record in
                error messages.

        Returns:
            float32 array ``(n, d)``. A file too short for openSMILE's analysis windows yields a
            row with NaNs; the caller decides how to treat it (the pipeline marks it missing).

        Raises:
            MercInputError: a file is missing or unreadable; names the file and, with
                ``origins``, the dialogue and utterance, field ``audio``.
        """
        smile = self._load()
        if not paths:
            return np.zeros((0, self.dim), dtype=np.float32)
        from tqdm.auto import tqdm

        out = np.empty((len(paths), self.dim), dtype=np.float32)
        for i, path in enumerate(tqdm(paths, desc=f"openSMILE {self.feature_set}", unit="file",
                                      disable=not progress or len(paths) < 2)):
            dialogue, utterance = origins[i] if origins is not None else (None, None)
            if not os.path.isfile(path):
                raise MercInputError(path, "audio file not found", dialogue=dialogue,
                                     utterance=utterance, field="audio")
            if not _finite_samples(path):
                # openSMILE casts samples to int16, so NaN/inf become full-scale garbage with
                # finite features that would reach the model (and, through a dialogue model's
                # context, every other utterance). The row becomes missing, like a failed one.
                # The file's name only: a resolved server path is never echoed (issue 14).
                log.warning("%s: dialogue %s, utterance %s, field 'audio': NaN/inf samples; "
                            "this utterance's audio is treated as missing",
                            os.path.basename(path), dialogue, utterance)
                out[i] = np.nan
                continue
            try:
                values = smile.process_file(os.fspath(path)).to_numpy()
            except Exception as e:
                # libsndfile raises LibsndfileError (a RuntimeError) for non-audio or truncated
                # files; openSMILE itself raises on malformed signals. Report which record.
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise MercInputError(path, f"unreadable audio ({type(e).__name__}: {msg})",
                                     dialogue=dialogue, utterance=utterance,
                                     field="audio") from e
            out[i] = values.reshape(-1)
        return out


def _finite_samples(path: str | os.PathLike) -> bool:
    """False when a floating-point audio file holds NaN/inf samples (integer PCM cannot)."""
    import soundfile as sf

    try:
        info = sf.info(os.fspath(path))
        if info.subtype not in ("FLOAT", "DOUBLE"):
            return True
        data, _ = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception:  # unreadable: process_file below reports it, naming the record
        return True
    return bool(np.isfinite(data).all())
