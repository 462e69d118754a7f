"""merc: Multimodal Emotion Recognition in Conversation."""

__version__ = "0.2.0"

from merc.predict.predictor import Prediction, Predictor  # noqa: E402  (light: torch loads lazily)

__all__ = ["Prediction", "Predictor", "__version__"]
