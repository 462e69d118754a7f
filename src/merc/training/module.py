"""The Lightning wrapper: loss, optimiser and validation/test metrics around any registered model."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from merc._version import __version__
from merc.config import ExperimentConfig
from merc.data.collate import Batch
from merc.checkpoint import CHECKPOINT_KEY
from merc.training.loop import Predictions, make_optimizer, masked_loss, warmup_schedule
from merc.models import ModelOutput, create_model


class ERCModule(L.LightningModule):
    """Trains a registered model with masked cross-entropy (+ the model's ``aux_loss``).

    Every metric of :func:`merc.metrics.classification_metrics` is computed per epoch on
    validation and once on test; the selection metric (``config.train.selection``) is logged as
    ``val_<key>`` (``val_wf1`` by default); the last values are kept in :attr:`last_metrics`
    (``{"val": {...}, "test": {...}}``).

    Args:
        config: The *resolved* experiment config (every training value set).
        label_names: Class names, index order.
        input_dims: Modality -> feature dimension.
        meta: More to store in the checkpoint beside the config, label map and dims (the
            feature spec, corpus name, ...; plain Python values).
        class_weights: Optional ``(C,)`` cross-entropy weights.
    """

    def __init__(self, config: ExperimentConfig, label_names: list[str],
                 input_dims: dict[str, int], *, meta: dict[str, Any] | None = None,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.label_names = list(label_names)
        self.meta = {**(meta or {}), "config": config.to_dict(), "label_names": self.label_names,
                     "input_dims": dict(input_dims), "merc_version": __version__}
        self.model = create_model(config.model, input_dims, len(self.label_names))
        self.register_buffer("class_weights", class_weights if class_weights is not None
                             else torch.ones(len(self.label_names)), persistent=False)
        self._predictions: dict[str, Predictions] = {"val": Predictions(),
                                                     "test": Predictions()}
        self.last_metrics: dict[str, dict] = {}
        self.last_predictions: dict[str, Predictions] = {}
        """The last finished stage's :class:`Predictions` (logits and labels), per stage."""
        self.selection = config.train.selection

    def forward(self, batch: Batch) -> ModelOutput:
        return self.model(batch)

    def _step(self, batch: Batch, stage: str) -> tuple[ModelOutput, torch.Tensor]:
        out = self(batch)
        # Smoothing shapes the training target only; validation losses stay the plain NLL.
        smoothing = self.config.train.label_smoothing if stage == "train" else 0.0
        loss, ce = masked_loss(out, batch, self.class_weights, smoothing)
        n = int(batch.mask.sum())
        sync = self._distributed()
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=sync)
        self.log(f"{stage}_ce", ce, on_step=False, on_epoch=True, batch_size=n, sync_dist=sync)
        return out, loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._predictions["val"].add(batch, self._step(batch, "val")[0])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._predictions["test"].add(batch, self._step(batch, "test")[0])

    def _epoch_metrics(self, stage: str) -> None:
        preds, self._predictions[stage] = self._predictions[stage], Predictions()
        if not len(preds):
            return
        metrics = preds.metrics(self.label_names, self.selection)
        self.last_metrics[stage] = metrics
        self.last_predictions[stage] = preds
        # Data-parallel: every rank scored the whole split (make_loader), so the values are
        # equal; syncing (a mean of equal numbers) only states that to Lightning.
        sync = self._distributed()
        self.log(f"{stage}_wf1", metrics["wf1"], prog_bar=True, sync_dist=sync)
        self.log(f"{stage}_acc", metrics["acc"], sync_dist=sync)
        if self.selection.key not in ("wf1", "acc"):
            self.log(f"{stage}_{self.selection.key}", metrics[self.selection.key],
                     sync_dist=sync)

    def _distributed(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    def configure_optimizers(self):
        t = self.config.train
        opt = make_optimizer(self.model, t.lr, t.weight_decay, betas=t.adam_betas,
                             eps=t.adam_eps, decay_bias_norm=t.decay_bias_norm)
        if not t.warmup_steps and t.lr_decay == "none":
            return opt                  # constant learning rate: no scheduler at all
        # The whole run's step count (max_epochs x batches per epoch): early stopping may end
        # training before the rate reaches 0, as in the official code the schedule follows.
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_schedule(t.warmup_steps, total, t.lr_decay))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

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
