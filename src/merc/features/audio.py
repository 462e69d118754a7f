"""Utterance-level acoustic functionals with openSMILE.

One fixed-length vector per wav file: ``eGeMAPSv02`` (88-d, the Geneva minimalistic acoustic
parameter set) or ``ComParE_2016`` (6373-d). openSMILE ships its own binary and config files in
the ``opensmile`` wheel, so it needs no network; it is imported only when audio is actually
extracted, and only in the worker process that runs it.

**Checked headers.** openSMILE segfaults on some wavs whose header is valid but absurd (a sample
rate of 1 Hz; 2^31-1 Hz first takes 3.9 GB and then dies in ``smileMath_csplint_init()``), so
every file's header is read with libsndfile (``soundfile.info``: the library openSMILE's reader
uses, so both see the same values) before openSMILE sees the file. A file is refused with a
one-line :class:`~merc.errors.MercInputError` naming the file, dialogue, utterance and field
``audio`` when

* its sample rate is outside :data:`MIN_RATE` .. :data:`MAX_RATE` (4 kHz, below telephone
  speech, to 192 kHz, the highest common studio rate);
* it has more than :data:`MAX_CHANNELS` channels (8: a 7.1 recording; the features are computed
  on the mono mixdown, so more channels add no information, only memory);
* it lasts more than ``max_seconds`` (default :data:`DEFAULT_MAX_SECONDS`, 10 minutes per
  utterance; raise it with the environment variable ``MERC_MAX_AUDIO_SECONDS`` or
  ``OpenSmileExtractor(max_seconds=...)``; ``inf`` lifts the cap).

The sample width needs no check of its own: libsndfile refuses bit depths it cannot decode (PCM
of 0 or 64 bits: "unimplemented format"), which is reported as unreadable audio. A file of zero
frames is not refused: like any wav too short for openSMILE's windows it yields a NaN row, which
the pipeline marks missing. Files libsndfile cannot parse are left to openSMILE's reader
(``audiofile``), which decodes formats other than wav/flac/ogg/mp3 with ffmpeg when installed,
or reports them unreadable.

**Crash isolation.** openSMILE runs in a persistent worker process
(:class:`~merc.features.isolation.IsolatedWorker`, started on the first extraction and reused by
later ones), so a crash in its native code that a header check cannot foresee becomes a one-line
error naming the file ("openSMILE crashed on this file"), and the next extraction gets a fresh
worker. The features are the ones the calling process would compute (same openSMILE call, same
float32 conversion; ``isolate=False`` runs it in-process).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import math
import os
from collections.abc import Sequence

import numpy as np

from merc.errors import MercInputError
from merc.features.isolation import WorkerCrash, WorkerStartError, make_worker, worker_state
from merc.features.spec import AUDIO_OPENSMILE_SETS

log = logging.getLogger(__name__)

LEVELS = ("functionals",)
"""Supported feature levels: one vector per file. (Low-level descriptors give a variable
number of frames per utterance, which the utterance-level models here do not consume.)"""

MIN_RATE, MAX_RATE = 4_000, 192_000
"""Accepted sample rates, Hz (inclusive)."""

MAX_CHANNELS = 8
"""Most channels accepted in one file (see the module docstring)."""

DEFAULT_MAX_SECONDS = 600.0
"""Longest accepted utterance, seconds, unless ``MERC_MAX_AUDIO_SECONDS`` or ``max_seconds``
says otherwise."""

MAX_SECONDS_ENV = "MERC_MAX_AUDIO_SECONDS"
"""Environment variable that sets the longest accepted utterance, in seconds."""


# ---------------------------------------------------------------------------------------------
# Worker side: these run in the worker process (or in the caller with isolate=False).
# ---------------------------------------------------------------------------------------------

def _make_smile(feature_set: str):
    import opensmile

    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set),
        feature_level=opensmile.FeatureLevel.Functionals,
        mixdown=True,
    )


def _smile_dim(feature_set: str) -> int:
    """The feature dimension; run first in every new worker, so it also loads openSMILE."""
    return len(worker_state(_make_smile, feature_set).feature_names)


def _smile_file(feature_set: str, path: str) -> tuple:
    """openSMILE functionals of one file, as an outcome (never raising for the file):
    ``("ok", values (d,))``, ``("nonfinite",)`` (NaN/inf samples) or ``("error", type name,
    first line of the message)``."""
    smile = worker_state(_make_smile, feature_set)
    if not _finite_samples(path):
        return ("nonfinite",)
    try:
        values = smile.process_file(os.fspath(path)).to_numpy()
    except Exception as e:
        # libsndfile raises LibsndfileError (a RuntimeError) for non-audio or truncated files;
        # openSMILE itself raises on malformed signals.
        return ("error", type(e).__name__, str(e).splitlines()[0] if str(e) else
                type(e).__name__)
    return ("ok", values.reshape(-1))


def _finite_samples(path: str | os.PathLike) -> bool:
    """False when a floating-point audio file holds NaN/inf samples (integer PCM cannot)."""
    import soundfile as sf

    try:
        info = sf.info(os.fspath(path))
        if info.subtype not in ("FLOAT", "DOUBLE"):
            return True
        data, _ = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception:  # unreadable: process_file reports it, naming the record
        return True
    return bool(np.isfinite(data).all())


# ---------------------------------------------------------------------------------------------
# Caller side
# ---------------------------------------------------------------------------------------------

def check_audio_header(path: str | os.PathLike, *, max_seconds: float = DEFAULT_MAX_SECONDS,
                       origin: tuple[object, object] | None = None) -> None:
    """Refuse a file whose header openSMILE cannot safely be given (module docstring).

    Reads only the header (``soundfile.info``). A file libsndfile cannot parse passes: the
    extractor's reader reports it (or decodes it with ffmpeg).

    Raises:
        MercInputError: sample rate, channel count or duration out of range; one line naming
            ``path``, the ``origin`` ``(dialogue, utterance)`` and field ``audio``.
    """
    import soundfile as sf

    try:
        info = sf.info(os.fspath(path))
    except Exception:
        return
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        problem = (f"sample rate {info.samplerate} Hz in its header; expected {MIN_RATE} to "
                   f"{MAX_RATE} Hz (a corrupt header, or not a recording of speech)")
    elif not 1 <= info.channels <= MAX_CHANNELS:
        problem = (f"{info.channels} channels; expected 1 to {MAX_CHANNELS} (mix the recording "
                   "down first: the features are computed on its mono mixdown)")
    elif info.frames / info.samplerate > max_seconds:
        problem = (f"lasts {info.frames / info.samplerate:.1f} s; the limit is {max_seconds:g} s "
                   f"per utterance (raise it with {MAX_SECONDS_ENV}=SECONDS or "
                   "OpenSmileExtractor(max_seconds=...))")
    else:
        return
    dialogue, utterance = origin if origin is not None else (None, None)
    raise MercInputError(path, problem, dialogue=dialogue, utterance=utterance, field="audio")


def max_audio_seconds(max_seconds: float | None = None) -> float:
    """``max_seconds``, else ``$MERC_MAX_AUDIO_SECONDS``, else :data:`DEFAULT_MAX_SECONDS`.

    Raises:
        MercInputError: not a positive number (``inf`` is allowed: no cap).
    """
    where, raw = ("OpenSmileExtractor.max_seconds", max_seconds) if max_seconds is not None \
        else (MAX_SECONDS_ENV, os.environ.get(MAX_SECONDS_ENV, "").strip() or None)
    if raw is None:
        return DEFAULT_MAX_SECONDS
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not value > 0:                                  # NaN fails too
        raise MercInputError(where, f"must be a positive number of seconds (inf: no limit), "
                             f"got {raw!r}")
    return value


class OpenSmileExtractor:
    """openSMILE functionals for a list of wav files.

    Args:
        feature_set: One of :data:`~merc.features.spec.AUDIO_OPENSMILE_SETS`.
        level: ``"functionals"`` (the only level supported).
        max_seconds: Longest accepted file, seconds; default ``$MERC_MAX_AUDIO_SECONDS`` or
            10 minutes (module docstring).
        isolate: Run openSMILE in a worker process (default), so that a crash in its native
            code is an error for that file instead of the end of this process; ``False`` runs
            it here (same features, no start-up cost, no protection).

    Multi-channel files are mixed down to mono; the file's own sampling rate is used. The
    worker starts on the first extraction (about 2 s: an interpreter plus openSMILE) and is
    reused by later calls, and by the other openSMILE extractors alive at the same time;
    :meth:`close` stops it (so do exit and the garbage collection of the last of them).
    """

    name = "opensmile"
    """Extractor name used in cache keys."""

    _task = staticmethod(_smile_file)
    """``task(feature_set, path) -> outcome``, run in the worker: a seam for tests that
    simulate a crash (the worker, a fresh interpreter, does not see monkeypatches, but it does
    import the function this attribute names)."""

    def __init__(self, feature_set: str = "eGeMAPSv02", level: str = "functionals", *,
                 max_seconds: float | None = None, isolate: bool = True) -> None:
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
        self.max_seconds = max_audio_seconds(max_seconds)
        self._worker = make_worker("openSMILE", isolate=isolate)
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"OpenSmileExtractor({self.feature_set!r}, level={self.level!r})"

    def settings(self) -> dict:
        """Everything that determines the features, for the cache key; imports nothing heavy.

        (``max_seconds`` and ``isolate`` are not in it: they refuse files or move the work to
        another process, but never change a feature.)"""
        try:
            version = importlib.metadata.version("opensmile")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"feature_set": self.feature_set, "level": self.level, "mixdown": True,
                "opensmile": version}

    def close(self) -> None:
        """Stop the worker process (shared with the other live openSMILE extractors; the next
        extraction starts a new one)."""
        self._worker.close()

    def _start(self) -> int:
        """The feature dimension; on the first call, openSMILE is loaded in the worker."""
        if self._dim is None:
            if importlib.util.find_spec("opensmile") is None:
                raise MercInputError("FeatureSpec.audio", "openSMILE features need the "
                                     "opensmile package: pip install opensmile")
            try:
                self._dim = int(self._worker.call(functools.partial(_smile_dim,
                                                                    self.feature_set)))
            except WorkerCrash:
                raise WorkerStartError(f"openSMILE ended its worker process while loading "
                                       f"{self.feature_set}") from None
        return self._dim

    @property
    def dim(self) -> int:
        """Feature dimension (88 for eGeMAPSv02, 6373 for ComParE_2016); starts the worker."""
        return self._start()

    def extract(self, paths: Sequence[str | os.PathLike], progress: bool = True, *,
                origins: Sequence[tuple[object, object]] | None = None) -> np.ndarray:
        """Compute one functionals vector per file.

        Every file is checked (exists, sane header: :func:`check_audio_header`) before any is
        analysed, so a bad file late in a long list fails at once.

        Args:
            paths: ``n`` wav (or other libsndfile-readable) files.
            progress: Show a tqdm bar over files.
            origins: Optional ``(dialogue, utterance)`` per path, used only to name the record in
                error messages.

        Returns:
            float32 array ``(n, d)``. A file too short for openSMILE's analysis windows yields a
            row with NaNs; the caller decides how to treat it (the pipeline marks it missing).

        Raises:
            MercInputError: a file is missing, unreadable, has an absurd header or crashed
                openSMILE; names the file and, with ``origins``, the dialogue and utterance,
                field ``audio``.
        """
        def origin(i: int) -> tuple[object, object]:
            return origins[i] if origins is not None else (None, None)

        for i, path in enumerate(paths):
            dialogue, utterance = origin(i)
            if not os.path.isfile(path):
                raise MercInputError(path, "audio file not found", dialogue=dialogue,
                                     utterance=utterance, field="audio")
            check_audio_header(path, max_seconds=self.max_seconds, origin=(dialogue, utterance))
        dim = self._start()
        out = np.empty((len(paths), dim), dtype=np.float32)
        if not paths:
            return out
        from tqdm.auto import tqdm

        def take(i: int, outcome: tuple) -> None:
            dialogue, utterance = origin(i)
            if outcome[0] == "nonfinite":
                # openSMILE casts samples to int16, so NaN/inf become full-scale garbage with
                # finite features that would reach the model (and, through a dialogue model's
                # context, every other utterance). The row becomes missing, like a failed one.
                # The file's name only: a resolved server path is never echoed (issue 14).
                log.warning("%s: dialogue %s, utterance %s, field 'audio': NaN/inf samples; "
                            "this utterance's audio is treated as missing",
                            os.path.basename(paths[i]), dialogue, utterance)
                out[i] = np.nan
            elif outcome[0] == "error":
                raise MercInputError(paths[i], f"unreadable audio ({outcome[1]}: {outcome[2]})",
                                     dialogue=dialogue, utterance=utterance, field="audio")
            else:
                out[i] = outcome[1]
            bar.update(1)

        bar = tqdm(total=len(paths), desc=f"openSMILE {self.feature_set}", unit="file",
                   disable=not progress or len(paths) < 2)
        try:
            # Chunks of 8: few round trips, and a bar that moves per file all the same.
            self._worker.map(functools.partial(self._task, self.feature_set),
                             [os.fspath(p) for p in paths], chunk_size=8, on_result=take)
        except WorkerCrash as crash:
            dialogue, utterance = origin(crash.index)
            raise MercInputError(paths[crash.index], f"openSMILE crashed on this file ({crash.how} "
                                 "in native code); it is not a usable wav", dialogue=dialogue,
                                 utterance=utterance, field="audio") from None
        finally:
            bar.close()
        return out
