"""Prediction: a trained model on new conversations.

* :mod:`~merc.predict.predictor` -- :class:`Predictor` (a checkpoint plus the one feature path;
  chunking, batching and progress for one or a million conversations);
* :mod:`~merc.predict.results` -- :class:`Prediction`, the output schema;
* :mod:`~merc.predict.inputs` / :mod:`~merc.predict.writers` -- what ``merc predict`` reads and
  writes; :mod:`~merc.predict.timeline` -- the table, HTML and PNG of one conversation;
* :mod:`~merc.predict.ray` -- bulk prediction on Ray Data; :mod:`~merc.predict.serve` -- the HTTP
  API and its web page.
"""

from merc.predict.predictor import Predictor
from merc.predict.results import Prediction, UtterancePrediction

__all__ = ["Prediction", "Predictor", "UtterancePrediction"]
