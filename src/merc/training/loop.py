"""The pieces every training and evaluation loop shares, written once.

* :func:`masked_loss` -- cross-entropy over the labelled real utterances plus the model's
  ``aux_loss`` (training, validation, test, the efficiency bench's timed steps).
* :func:`make_optimizer` -- AdamW with the weight-decay parameter-group rule
  (:func:`weight_decay_split`, shared with ``merc finetune``); :func:`warmup_schedule` --
  linear warm-up, then constant or linear decay.
* :class:`Predictions` and :func:`evaluate` -- collect labels, predictions (and optionally the
  fused representations) of the labelled real utterances and turn them into the metrics of
  :func:`merc.metrics.classification_metrics`. The Lightning module feeds one
  :class:`Predictions` per stage from its steps; ``merc evaluate``
  (:func:`merc.training.evaluate.evaluate_checkpoint`) and the bench call :func:`evaluate`.

No Lightning here: inference and the bench use it without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from merc.data.collate import IGNORE_INDEX, Batch
from merc.metrics import SelectionMetric, classification_metrics
from merc.models import ModelOutput


def masked_loss(out: ModelOutput, batch: Batch, class_weights: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, ce)``: the class-weighted (optionally label-smoothed) cross-entropy of
    ``out.logits (B, L, C)`` over the utterances with a label (``batch.labels !=
    IGNORE_INDEX``; padding never counts), and that plus ``out.aux_loss``."""
    valid = batch.labels != IGNORE_INDEX
    ce = F.cross_entropy(out.logits[valid], batch.labels[valid], weight=class_weights,
                         label_smoothing=label_smoothing)
    total = ce + out.aux_loss if out.aux_loss is not None else ce
    return total, ce


def no_weight_decay(param: nn.Parameter) -> bool:
    """Whether ``param`` is marked to train without weight decay (``param._no_weight_decay``)."""
    return bool(getattr(param, "_no_weight_decay", False))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, *,
                   betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                   decay_bias_norm: bool = True) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; those marked ``_no_weight_decay = True``
    (an SSM's ``A_log`` and skip ``D``, as in the Mamba reference code: decaying ``A_log`` pulls
    every state's decay rate towards ``A = -1`` and ``D`` towards no skip) get weight decay 0,
    and so does every 1-d parameter (biases, LayerNorm weights) when ``decay_bias_norm`` is False.

    With nothing exempt this is one parameter group in ``model.parameters()`` order, i.e. exactly
    ``AdamW(model.parameters(), ...)``."""
    decayed, exempt = weight_decay_split((p for p in model.parameters() if p.requires_grad),
                                         decay_bias_norm=decay_bias_norm)
    groups: list[dict[str, Any]] = [{"params": decayed}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                             eps=eps)


def weight_decay_split(params: Iterable[nn.Parameter], *, decay_bias_norm: bool = True
                       ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decayed, exempt)``: ``params`` split by the weight-decay rule, each part in the order
    given. Exempt (to train with weight decay 0) are the parameters marked ``_no_weight_decay``
    (:func:`no_weight_decay`) and, when ``decay_bias_norm`` is False, every 1-d parameter
    (biases, LayerNorm weights).

    The one rule behind :func:`make_optimizer` and the fine-tune's optimizer
    (:func:`merc.finetune.fit.build_optimizer`, which splits its encoder and head parameters
    separately, each with its own learning rate)."""
    decayed: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    for p in params:
        (exempt if no_weight_decay(p) or (not decay_bias_norm and p.ndim < 2)
         else decayed).append(p)
    return decayed, exempt


def warmup_schedule(warmup_steps: int, total_steps: int, decay: str = "linear"
                    ) -> Callable[[int], float]:
    """Learning-rate factor of optimiser step ``s`` (for ``LambdaLR``): linear warm-up over
    ``warmup_steps`` (factor ``(s + 1) / warmup_steps``), then ``decay="none"`` holds 1 and
    ``decay="linear"`` falls linearly to 0 at ``total_steps`` (the shape of
    ``transformers.get_linear_schedule_with_warmup``)."""
    warm = max(1, warmup_steps)

    def factor(step: int) -> float:
        up = (step + 1) / warm if warmup_steps else 1.0
        if decay == "none":
            return min(1.0, up)
        return min(up, max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps)))

    return factor


class Predictions:
    """Labels and predictions (and optionally fused representations) of the labelled real
    utterances, accumulated batch by batch."""

    def __init__(self, keep_hidden: bool = False) -> None:
        self.keep_hidden = keep_hidden
        self._true: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._hidden: list[torch.Tensor] = []

    def add(self, batch: Batch, out: ModelOutput) -> None:
        """Record ``out.logits (B, L, C)`` (and ``out.hidden (B, L, H)``) where
        ``batch.labels (B, L)`` holds a label."""
        valid = batch.labels != IGNORE_INDEX
        self._true.append(batch.labels[valid].detach().cpu())
        self._logits.append(out.logits[valid].detach().float().cpu())
        if self.keep_hidden:
            if out.hidden is None:
                raise ValueError("this model returns no hidden states")
            self._hidden.append(out.hidden[valid].detach().cpu())

    def __len__(self) -> int:
        return sum(len(t) for t in self._true)

    @property
    def y_true(self) -> np.ndarray:
        """``(N,)`` class indices."""
        return torch.cat(self._true).numpy() if self._true else np.zeros(0, dtype=np.int64)

    @property
    def y_pred(self) -> np.ndarray:
        """``(N,)`` predicted class indices: the arg-max of :attr:`logits`."""
        return (torch.cat(self._logits).argmax(-1).numpy() if self._logits
                else np.zeros(0, dtype=np.int64))

    @property
    def logits(self) -> np.ndarray:
        """``(N, C)`` logits (float32): what temperature scaling is fitted on."""
        return (torch.cat(self._logits).numpy() if self._logits
                else np.zeros((0, 0), dtype=np.float32))

    @property
    def hidden(self) -> np.ndarray:
        """``(N, H)`` fused representations (``keep_hidden=True`` only)."""
        return torch.cat(self._hidden).numpy()

    def metrics(self, label_names: Sequence[str], selection: SelectionMetric | None = None
                ) -> dict[str, Any]:
        """:func:`~merc.metrics.classification_metrics` of what was recorded (percent),
        with ``selection``'s value under its key when that is not a standard one."""
        return classification_metrics(self.y_true, self.y_pred, list(label_names), selection)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], *, keep_hidden: bool = False
             ) -> Predictions:
    """Run ``model`` in eval mode over ``batches``; :class:`Predictions` of every labelled real
    utterance (``.metrics(label_names)`` for the numbers)."""
    model.eval()
    preds = Predictions(keep_hidden)
    for batch in batches:
        preds.add(batch, model(batch))
    return preds
