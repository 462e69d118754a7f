"""Per-utterance features: what to use (:class:`FeatureSpec`), the one extractor that computes them
for training and prediction (:class:`FeatureExtractor`), where they are cached, and train-only
standardisation.

Importing this package is cheap: sentence-transformers/torch and openSMILE are imported only
when a feature actually has to be computed (a cache miss).
"""

from merc.features.audio import OpenSmileExtractor
from merc.features.cache import FeatureCache
from merc.features.normalize import apply_stats, fit_stats
from merc.features.extractor import FeatureExtractor, build_features
from merc.features.spec import DEFAULT_TEXT_ENCODER, FeatureSpec
from merc.text.encoder import TextEncoder

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "FeatureExtractor",
    "FeatureCache",
    "FeatureSpec",
    "OpenSmileExtractor",
    "TextEncoder",
    "apply_stats",
    "build_features",
    "fit_stats",
]
