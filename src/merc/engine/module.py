"""The Lightning wrapper: loss, optimiser and validation/test metrics around any registered model."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

import merc
from merc.data.collate import IGNORE_INDEX, Batch
from merc.engine.checkpoint import CHECKPOINT_KEY
from merc.engine.metrics import classification_metrics
from merc.models import ModelOutput, create_model


class ERCModule(L.LightningModule):
    """Trains a registered model with masked cross-entropy (+ the model's ``aux_loss``).

    Validation W-F1 is logged as ``val_wf1`` each epoch (the selection metric); ``test`` metrics
    are computed once on the selected checkpoint and kept in :attr:`test_metrics`.

    Args:
        meta: Everything needed to rebuild the model without the training code: ``config``
            (the experiment config dict), ``label_names``, ``input_dims``, ``feature_spec``.
        class_weights: Optional ``(C,)`` cross-entropy weights.
    """

    def __init__(self, meta: dict[str, Any], class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.meta = dict(meta, merc_version=merc.__version__)
        cfg = meta["config"]
        self.model = create_model(cfg["model"]["name"], meta["input_dims"],
                                  len(meta["label_names"]),
                                  **{k: v for k, v in cfg["model"].items() if k != "name"})
        self.train_cfg = cfg["train"]
        self.register_buffer("class_weights", class_weights if class_weights is not None
                             else torch.ones(len(meta["label_names"])), persistent=False)
        self._outputs: dict[str, list] = {"val": [], "test": []}
        self.last_metrics: dict[str, dict] = {}

    def forward(self, batch: Batch) -> ModelOutput:
        return self.model(batch)

    def _loss(self, batch: Batch, out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        valid = batch.labels != IGNORE_INDEX
        ce = F.cross_entropy(out.logits[valid], batch.labels[valid], weight=self.class_weights)
        total = ce + out.aux_loss if out.aux_loss is not None else ce
        return total, ce

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        loss, ce = self._loss(batch, out)
        n = int(batch.mask.sum())
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_ce", ce, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        out = self(batch)
        loss, ce = self._loss(batch, out)
        n = int(batch.mask.sum())
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log(f"{stage}_ce", ce, on_step=False, on_epoch=True, batch_size=n)
        valid = batch.labels != IGNORE_INDEX
        self._outputs[stage].append((batch.labels[valid].cpu(), out.logits[valid].argmax(-1).cpu()))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _epoch_metrics(self, stage: str) -> None:
        pairs = self._outputs[stage]
        self._outputs[stage] = []
        if not pairs:
            return
        y_true = torch.cat([p[0] for p in pairs]).numpy()
        y_pred = torch.cat([p[1] for p in pairs]).numpy()
        metrics = classification_metrics(y_true, y_pred, self.meta["label_names"])
        self.last_metrics[stage] = metrics
        self.log(f"{stage}_wf1", metrics["wf1"], prog_bar=True)
        self.log(f"{stage}_acc", metrics["acc"])

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.train_cfg["lr"],
                                 weight_decay=self.train_cfg["weight_decay"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only plain Python types: the file must load with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = _plain(self.meta)


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays inside nested containers to plain Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
