"""One seed of the honest loop with Lightning: train, keep the checkpoint with the best validation
selection metric (``train.metric``, W-F1 by default; ``ModelCheckpoint``), stop early on it
(``EarlyStopping``), then evaluate the test split exactly once on that checkpoint. Used by
``merc train`` (per seed) and ``merc crossval`` (per fold and seed)."""

from __future__ import annotations

import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from merc.checkpoint import CHECKPOINT_KEY
from merc.config import ConfigError, ExperimentConfig
from merc.training.loop import Predictions
from merc.training.prepare import PreparedData, balanced_class_weights, make_loader
from merc.training.provenance import data_block
from merc.fileio import atomic_write_bytes, write_json
from merc.models import count_parameters



def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written through :func:`merc.fileio.atomic_write_bytes`.

    Lightning's own save goes through an fsspec transaction whose temporary file may live on
    another file system (then the final move is a copy a kill can cut short); a temporary file
    beside the checkpoint and :func:`os.replace` leave either the old or the new complete file.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options are not supported by merc's checkpoint writer")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


class EpochClock(Callback):
    """Wall time at the end of each validation, to report time-to-best-checkpoint."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.at_epoch: dict[int, float] = {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.at_epoch[trainer.current_epoch] = time.perf_counter() - self.start


def calibrate_checkpoint(path: Path, valid: Predictions, test: Predictions, *,
                         write: bool = True) -> dict[str, Any]:
    """Fit the softmax temperature of the selected checkpoint ``path`` on its validation logits
    (never test), store it in the checkpoint's merc metadata (``temperature``) and report
    calibration before and after it.

    Args:
        valid, test: The selected checkpoint's predictions on the two splits (logits and labels).
        write: Rewrite the checkpoint (only one process of a data-parallel run does).

    Returns:
        ``{"temperature", "bins", "valid": {...}, "test": {...}}``, each split's entry the
        :func:`merc.calibration.calibration_report` (ECE as a fraction, NLL, reliability bins).
    """
    from merc.calibration import ECE_BINS, calibration_report, fit_temperature

    temperature = fit_temperature(valid.logits, valid.y_true)
    if write:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ckpt[CHECKPOINT_KEY]["temperature"] = temperature
        AtomicCheckpointIO().save_checkpoint(ckpt, path)
    return {"temperature": temperature, "bins": ECE_BINS,
            "valid": calibration_report(temperature, valid.logits, valid.y_true),
            "test": calibration_report(temperature, test.logits, test.y_true)}


def train_seed(cfg: ExperimentConfig, prepared: PreparedData, seed: int, seed_dir: Path,
               *, progress: bool, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one seed, select on the validation selection metric (``cfg.train.selection``),
    evaluate test once; write ``seed_dir``.

    Args:
        cfg: A *resolved* config (:meth:`ExperimentConfig.resolved`): every training value set.
        fingerprint: Stored in ``metrics.json`` so a resumed run can recognise the seed.

    Returns:
        The ``metrics.json`` dict: ``seed, best_epoch, epochs_run, train_seconds,
        seconds_to_best, params, valid, test, checkpoint, fingerprint, selection_metric, data``
        (:func:`merc.training.provenance.data_block`) and, with ``train.calibrate``,
        ``calibration`` (:func:`calibrate_checkpoint`).

    Raises:
        ConfigError: ``train.ignore_labels`` names a label the corpus does not have.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from merc.training.module import ERCModule

    selection = cfg.train.selection
    selection.kept(prepared.corpus.label_names)  # a wrong ignore label fails before training
    quiet_lightning()
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    seed_dir.mkdir(parents=True, exist_ok=True)
    # A finished result of an earlier run goes first: from here on the folder must not claim a
    # result whose checkpoint is being replaced (a kill mid-seed leaves it unfinished).
    (seed_dir / "metrics.json").unlink(missing_ok=True)
    for stale in seed_dir.glob("best*.ckpt"):
        stale.unlink(missing_ok=True)  # a re-run must not select a previous run's checkpoint
    L.seed_everything(seed, workers=True, verbose=False)
    tc = cfg.train
    corpus = prepared.corpus
    weights = balanced_class_weights(corpus) if tc.class_weights else None
    data = data_block(corpus)  # lets `merc evaluate` recognise swapped or changed splits
    module = ERCModule(cfg, corpus.label_names, prepared.input_dims, class_weights=weights,
                       meta={"feature_spec": prepared.spec.to_dict(), "corpus": corpus.name,
                             "valid_split": corpus.valid_split, "seed": seed, "data": data})
    monitor = f"val_{selection.key}"
    checkpoint = ModelCheckpoint(dirpath=seed_dir, filename="best", monitor=monitor,
                                 mode="max", save_top_k=1, save_weights_only=True,
                                 enable_version_counter=False)
    stopper = EarlyStopping(monitor=monitor, mode="max", patience=tc.patience)
    clock = EpochClock()
    try:
        trainer = L.Trainer(
            max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices,
            num_nodes=tc.num_nodes, strategy=tc.strategy,
            # merc shards the train split itself and keeps validation/test whole on every rank
            # (make_loader): Lightning's own sampler would score each rank on its shard.
            use_distributed_sampler=False,
            deterministic=tc.deterministic, callbacks=[checkpoint, stopper, clock],
            logger=CSVLogger(seed_dir, name="", version=""), enable_progress_bar=progress,
            enable_model_summary=False, gradient_clip_val=tc.grad_clip or None,
            num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=seed_dir,
            plugins=[AtomicCheckpointIO()])
    except MisconfigurationException as e:
        # e.g. train.accelerator=gpu on a machine without one: the user's choice, not a bug.
        raise ConfigError("train.accelerator", f"{tc.accelerator!r} is not usable here: "
                          f"{str(e).strip().splitlines()[0]}") from None
    distributed = tc.strategy != "auto" or tc.devices > 1 or tc.num_nodes > 1
    train_loader = make_loader(prepared, "train", tc.batch_size, shuffle=True, seed=seed,
                               shard=(trainer.world_size, trainer.global_rank)
                               if distributed else None)
    valid_loader = make_loader(prepared, "valid", tc.batch_size)
    t0 = time.perf_counter()
    trainer.fit(module, train_loader, valid_loader)
    train_seconds = time.perf_counter() - t0
    best_path = checkpoint.best_model_path
    if not best_path:
        raise RuntimeError(f"seed {seed}: no checkpoint was selected (did validation run?)")
    best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=True)["epoch"])
    # Selected model's full validation metrics, then the one and only test evaluation.
    trainer.validate(module, valid_loader, ckpt_path=best_path, verbose=False)
    valid_metrics = module.last_metrics["val"]
    trainer.test(module, make_loader(prepared, "test", tc.batch_size), ckpt_path=best_path,
                 verbose=False)
    test_metrics = module.last_metrics["test"]
    calibration = (calibrate_checkpoint(Path(best_path), module.last_predictions["val"],
                                        module.last_predictions["test"],
                                        write=trainer.is_global_zero)
                   if tc.calibrate else None)
    result = {
        "seed": seed, "best_epoch": best_epoch, "epochs_run": trainer.current_epoch,
        "train_seconds": train_seconds,
        "seconds_to_best": clock.at_epoch.get(best_epoch, train_seconds),
        "params": count_parameters(module.model), "valid": valid_metrics, "test": test_metrics,
        "checkpoint": str(Path(best_path).name), "fingerprint": fingerprint,
        "selection_metric": selection.to_dict(), "data": data,
    }
    if calibration is not None:
        result["calibration"] = calibration
        if trainer.is_global_zero:
            from merc.calibration import plot_reliability

            plot_reliability(calibration["test"], seed_dir / "reliability.png",
                             title=f"seed {seed}, test split")
    # config.yaml first, metrics.json last: metrics.json is what marks the seed finished.
    if trainer.is_global_zero:          # every rank holds the same result; one writes it
        cfg.save(seed_dir / "config.yaml")
        write_json(seed_dir / "metrics.json", result)
    return result
