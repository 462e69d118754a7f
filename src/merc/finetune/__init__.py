"""``merc finetune``: fine-tune a context-aware text encoder on a corpus's utterance labels.

* :mod:`merc.finetune.heads` -- the classifier heads (``finetune.head``: ``linear`` or the
  end-to-end :class:`DialogueHead`) and their prediction helpers.
* :mod:`merc.finetune.fit` -- the training of one encoder (:func:`finetune_encoder`), with
  optimizer groups, schedule and metrics shared with ``merc train``.
* :mod:`merc.finetune.run` -- the commands: :func:`run_finetune` (``merc finetune``),
  :func:`evaluate_joint` / :func:`score_joint` (``merc evaluate --text-encoder``).
"""

from merc.config import FinetuneConfig
from merc.finetune.fit import (build_optimizer, class_weight_vector, finetune_encoder,
                               predict_classes, special_ids)
from merc.finetune.heads import HEAD_FILE, DialogueHead, dialogue_batches, make_head
from merc.finetune.run import evaluate_joint, run_finetune, score_joint

__all__ = ["run_finetune", "evaluate_joint", "score_joint", "finetune_encoder", "FinetuneConfig",
           "DialogueHead", "make_head", "dialogue_batches", "HEAD_FILE", "predict_classes",
           "build_optimizer", "class_weight_vector", "special_ids"]
