"""What features a model was trained on: stored in every checkpoint so inference can redo it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from merc.config.sources import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER,  # noqa: F401
                                  EXTERNAL, VIDEO_DEFAULT_FPS, VIDEO_EXTRACTORS,
                                  parse_video_source)

TEXT_KINDS = ("external", "bundled", "folder", "sentence-transformers")
"""What a text source can be (:attr:`TextSource.kind`)."""


@dataclass(frozen=True)
class TextSource:
    """``FeatureSpec.text`` parsed once: which kind of encoder a text source names.

    ``external``: the corpus' own vectors; ``bundled``: the bundled all-MiniLM-L6-v2;
    ``folder``: a ``merc finetune`` encoder folder (context-aware, its record says how it was
    trained); ``sentence-transformers``: any other model name or local path.
    """

    kind: str
    name: str
    """The source as written (a folder's path as stored in the spec)."""

    @classmethod
    def parse(cls, value: str) -> "TextSource":
        from merc.text.record import is_encoder_folder  # reads the folder's record file

        kind = ("external" if value == EXTERNAL else
                "bundled" if value == DEFAULT_TEXT_ENCODER else
                "folder" if is_encoder_folder(value) else "sentence-transformers")
        return cls(kind, value)


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

    def is_external(self, modality: str) -> bool:
        """Whether ``modality`` uses the vectors the corpus loader supplied."""
        return getattr(self, modality) == EXTERNAL

    @property
    def text_source(self) -> TextSource | None:
        """:attr:`text` parsed (``None`` when text is not used)."""
        return None if self.text is None else TextSource.parse(self.text)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(**d)
