"""Knowledge distillation for ``merc finetune`` (``finetune.teacher=ENC``): a larger fine-tuned
encoder's predictions become soft targets for a smaller one.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", Sec. 2: the
student matches the teacher's class distribution softened by a temperature ``T`` as well as the
gold label, with the soft term multiplied by ``T^2`` so that its gradients keep the scale of
the hard term's when ``T`` changes::

    loss = (1 - w) * CE(student_logits, gold) + w * T^2 * KL(softmax(t / T) || softmax(s / T))

The teacher is a ``merc finetune`` folder trained on the same labels with the ``linear`` head
(saved in the folder as ``head.safetensors``); it reads every train utterance in *its own*
input layout (its record's context format and tokenizer), once, before the first epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from merc.errors import MercInputError
from merc.finetune.heads import HEAD_FILE, _logits, make_head


def teacher_probs(folder: str | Path, conversations: Sequence, label_names: Sequence[str],
                  temperature: float, *, progress: bool = False) -> np.ndarray:
    """``(N, C)`` float32 probabilities ``softmax(teacher_logits / temperature)`` of every
    utterance of ``conversations``, conversation by conversation in order (the order of
    the fine-tune's train inputs).

    Raises:
        MercInputError: ``folder`` is not an encoder folder, was trained on other labels, or
            holds no linear head (fine-tuned with ``finetune.head=gru``, or before merc kept
            the linear head).
    """
    from safetensors.torch import load_file

    from merc.text.folder import FinetunedTextEncoder

    folder = Path(folder).expanduser()
    encoder = FinetunedTextEncoder(folder)
    training = encoder.record.training
    names = list(training.get("label_names") or [])
    if names != list(label_names):
        raise MercInputError(folder, f"the teacher was trained on labels {names}, the student "
                             f"on {list(label_names)}", field="finetune.teacher")
    if training.get("head", "linear") != "linear" or not (folder / HEAD_FILE).is_file():
        raise MercInputError(folder, f"the teacher holds no linear head ({HEAD_FILE}); "
                             "fine-tune it again with this merc (finetune.head=linear)",
                             field="finetune.teacher")
    vectors = torch.from_numpy(encoder.encode(list(conversations), progress=progress))
    head = make_head("linear", vectors.shape[1], len(names), dropout=0.0).eval()
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    with torch.no_grad():
        logits = _logits(head, vectors, None)
    return torch.softmax(logits / temperature, dim=-1).numpy().astype(np.float32)


def distillation_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, *,
                      temperature: float, weight: float,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of the module docstring: ``logits (B, C)`` of the student, gold ``y (B,)``
    (class-weighted cross-entropy, as without a teacher), the teacher's softened probabilities
    ``soft (B, C)``; ``weight`` is ``w``."""
    hard = F.cross_entropy(logits, y, weight=class_weights)
    kd = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft, reduction="batchmean")
    return (1.0 - weight) * hard + weight * temperature ** 2 * kd
