"""Per-utterance features: what to use (:class:`FeatureSpec`), how to compute it (text encoder,
openSMILE), where it is cached, and train-only standardisation.

Importing this package is cheap: sentence-transformers/torch and openSMILE are imported only
when a feature actually has to be computed (a cache miss).
"""

from merc.features.audio import OpenSmileExtractor
from merc.features.cache import FeatureCache
from merc.features.normalize import apply_stats, fit_stats
from merc.features.extractor import build_features
from merc.features.spec import DEFAULT_TEXT_ENCODER, FeatureSpec
from merc.text.encoder import TextEncoder

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "FeatureCache",
    "FeatureSpec",
    "OpenSmileExtractor",
    "TextEncoder",
    "apply_stats",
    "build_features",
    "fit_stats",
]
