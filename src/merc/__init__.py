"""merc: Multimodal Emotion Recognition in Conversation.

``from merc import Predictor`` is the entry point for prediction; it is imported on first use
(PEP 562), so ``import merc`` stays light and the package root imports none of its layers.
"""

from merc._version import __version__

__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str):
    if name in ("Prediction", "Predictor"):
        from merc.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
