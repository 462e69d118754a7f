"""The honest loop: corpus -> cached features -> model -> validation-selected, multi-seed results.

For every seed: train with Lightning, keep the checkpoint with the best validation W-F1
(``ModelCheckpoint``), stop early on it (``EarlyStopping``), then evaluate the test split exactly
once on that checkpoint. ``summary.json`` reports mean +- std over seeds and keeps per-seed values.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import merc
from merc.config import DataConfig, ExperimentConfig
from merc.data import CORPUS_LOADERS, Corpus, ensure_validation_split, load_corpus
from merc.data.collate import IGNORE_INDEX, DialogueDataset, collate_dialogues
from merc.engine.metrics import classification_metrics, mean_std
from merc.errors import MercInputError
from merc.features import FeatureSpec, apply_stats, build_features, fit_stats
from merc.models import count_parameters

log = logging.getLogger(__name__)

# What identifies a corpus folder, to accept both ``data`` and ``data/<corpus>`` as --data-dir.
_MARKERS = {"iemocap": "conversations.jsonl", "mosi": "conversations.jsonl",
            "meld": "train_sent_emo.csv", "jsonl": "conversations.jsonl",
            "emodb": "labels.csv"}


def resolve_corpus_dir(kind: str, data_dir: str | Path) -> Path:
    """``data_dir`` itself if it holds corpus ``kind``, else ``data_dir/kind`` if that does.

    Raises:
        MercInputError: neither exists, with a hint on what to download.
    """
    root = Path(data_dir).expanduser()
    marker = _MARKERS.get(kind)
    if root.is_file() or marker is None or (root / marker).exists():
        if root.exists():
            return root
    elif (root / kind / marker).exists():
        return root / kind
    raise MercInputError(
        root, f"no {kind} corpus here (looked for {marker} in it and in {root / kind}); "
        f"point --data-dir or $MERC_DATA_DIR at the folder holding it ({_download_hint(kind)})")


def _download_hint(kind: str) -> str:
    return {
        "meld": "MELD's train/dev/test_sent_emo.csv from the declare-lab/MELD release",
        "iemocap": "conversations.jsonl + audio_librosa8.csv as described in docs/data.md",
        "mosi": "conversations.jsonl + text/audio/video.npz as described in docs/data.md",
        "emodb": "labels.csv + wav/ as described in docs/data.md (EmoDB section)",
    }.get(kind, "see docs/data.md for the generic JSONL format")


@dataclass
class PreparedData:
    """A corpus with features extracted and normalised, ready for :class:`DialogueDataset`."""

    corpus: Corpus
    spec: FeatureSpec
    """Feature sources plus the train-split normalisation stats actually applied."""
    modalities: list[str]
    input_dims: dict[str, int]


def prepare_data(data: DataConfig, *, spec: FeatureSpec | None = None,
                 progress: bool = True) -> PreparedData:
    """Load the corpus, add a validation split if needed, extract (cached) and normalise features.

    Args:
        data: A resolved :class:`DataConfig` (``data.resolved()``).
        spec: Use this feature spec (and its stored stats) instead of deriving one, e.g. the
            spec saved in a checkpoint; stats are then never refitted.
    """
    loader = CORPUS_LOADERS.get(data.corpus)
    takes_label = loader is not None and "label" in inspect.signature(loader).parameters
    options: dict[str, Any] = {"label": data.label} if takes_label else {}
    corpus = load_corpus(data.corpus, resolve_corpus_dir(data.corpus, data.data_dir), **options)
    if not corpus.split("test"):
        raise MercInputError(corpus.source, "corpus has no test dialogues; mark some dialogues "
                             "split 'test' (results are always reported on a held-out test set)",
                             field="split")
    corpus = ensure_validation_split(corpus, data.valid_fraction, data.valid_seed)
    if spec is None:
        available = set(corpus.feature_modalities)
        if any(u.strip() for c in corpus.conversations for u in c.utterances):
            available.add("text")
        if data.audio != "external" and any(c.media.get("audio") for c in corpus.conversations):
            available.add("audio")  # openSMILE can compute it from the wav paths
        spec = data.feature_spec(sorted(available, key=["text", "audio", "video"].index))
    corpus = build_features(corpus, spec, data.cache_dir, progress=progress)
    modalities = spec.modalities()
    if spec.normalize:
        if not spec.stats:
            spec.stats = fit_stats(corpus, modalities)
        corpus = apply_stats(corpus, spec.stats)
    return PreparedData(corpus=corpus, spec=spec, modalities=modalities,
                        input_dims={m: corpus.feature_dims()[m] for m in modalities})


def make_loader(prepared: PreparedData, split: str, batch_size: int, *, shuffle: bool = False,
                seed: int = 0) -> DataLoader:
    ds = DialogueDataset(prepared.corpus.split(split), prepared.corpus.label_names,
                         prepared.modalities)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      collate_fn=collate_dialogues, num_workers=0)


def balanced_class_weights(corpus: Corpus) -> torch.Tensor:
    """sklearn's 'balanced' weights from train labels: ``n / (C * count_c)``."""
    from sklearn.utils.class_weight import compute_class_weight

    index = corpus.label_index()
    y = np.asarray([index[x] for c in corpus.split("train") for x in c.labels or []])
    present = np.unique(y)
    w = np.ones(len(corpus.label_names))
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.tensor(w, dtype=torch.float32)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")


def train_seed(cfg: ExperimentConfig, prepared: PreparedData, seed: int, seed_dir: Path,
               *, progress: bool) -> dict[str, Any]:
    """Train one seed, select on validation W-F1, evaluate test once; write ``seed_dir``."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from merc.engine.module import ERCModule

    _quiet_lightning()
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    seed_dir.mkdir(parents=True, exist_ok=True)
    for stale in seed_dir.glob("best*.ckpt"):
        stale.unlink()  # a re-run must not select a previous run's checkpoint
    L.seed_everything(seed, workers=True, verbose=False)
    tc = cfg.train
    corpus = prepared.corpus
    weights = balanced_class_weights(corpus) if tc.class_weights else None
    meta = {"config": cfg.to_dict(), "label_names": corpus.label_names,
            "input_dims": prepared.input_dims, "feature_spec": prepared.spec.to_dict(),
            "corpus": corpus.name, "valid_split": corpus.valid_split, "seed": seed}
    module = ERCModule(meta, class_weights=weights)

    class EpochClock(Callback):
        """Wall time at the end of each validation, to report time-to-best-checkpoint."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.at_epoch: dict[int, float] = {}

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.at_epoch[trainer.current_epoch] = time.perf_counter() - self.start

    checkpoint = ModelCheckpoint(dirpath=seed_dir, filename="best", monitor="val_wf1",
                                 mode="max", save_top_k=1, save_weights_only=True,
                                 enable_version_counter=False)
    stopper = EarlyStopping(monitor="val_wf1", mode="max", patience=tc.patience)
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=1,
        deterministic=tc.deterministic, callbacks=[checkpoint, stopper, clock],
        logger=CSVLogger(seed_dir, name="", version=""), enable_progress_bar=progress,
        enable_model_summary=False, gradient_clip_val=tc.grad_clip or None,
        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=seed_dir)
    train_loader = make_loader(prepared, "train", tc.batch_size, shuffle=True, seed=seed)
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
    result = {
        "seed": seed, "best_epoch": best_epoch, "epochs_run": trainer.current_epoch,
        "train_seconds": train_seconds,
        "seconds_to_best": clock.at_epoch.get(best_epoch, train_seconds),
        "params": count_parameters(module.model), "valid": valid_metrics, "test": test_metrics,
        "checkpoint": str(Path(best_path).name), "fingerprint": run_fingerprint(cfg),
    }
    (seed_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    cfg.save(seed_dir / "config.yaml")
    return result


def summarize(cfg: ExperimentConfig, prepared: PreparedData, results: list[dict]) -> dict:
    """The ``summary.json`` contract: metrics in percent, mean/std/per-seed."""
    labels = prepared.corpus.label_names
    test = {k: mean_std([r["test"][k] for r in results]) for k in ("wf1", "acc", "macro_f1")}
    test["per_class_f1"] = {lab: mean_std([r["test"]["per_class_f1"][lab] for r in results])
                            for lab in labels}
    return {
        "model": cfg.model_name, "corpus": prepared.corpus.name, "modalities": prepared.modalities,
        "seeds": [r["seed"] for r in results], "params": results[0]["params"],
        "valid": {"wf1": mean_std([r["valid"]["wf1"] for r in results]),
                  "acc": mean_std([r["valid"]["acc"] for r in results])},
        "test": test,
        "train_seconds": {k: v for k, v in mean_std([r["train_seconds"] for r in results]).items()
                          if k != "std"},
        "seconds_to_best": {k: v for k, v in mean_std([r["seconds_to_best"] for r in results])
                            .items() if k != "std"},
        "label_names": labels, "valid_split": prepared.corpus.valid_split,
        "feature_spec": {k: v for k, v in prepared.spec.to_dict().items() if k != "stats"},
        "merc_version": merc.__version__, "fingerprint": run_fingerprint(cfg),
    }


def run_fingerprint(cfg: ExperimentConfig) -> dict[str, Any]:
    """What determines a seed's result: data, the *fully resolved* model config, training and the
    merc version -- not the seed list, the cache folder or progress bars. Resuming reuses a seed
    only when its stored fingerprint equals this one, so a changed default never mixes in."""
    from dataclasses import asdict

    from merc.models import make_config

    d = cfg.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k != "cache_dir"}
    d["train"] = {k: v for k, v in d["train"].items() if k != "progress"}
    d["model"] = {"name": cfg.model_name, **asdict(make_config(cfg.model_name, cfg.model_options))}
    d.pop("seeds", None)
    d["merc_version"] = merc.__version__
    return json.loads(json.dumps(d))  # plain JSON types, comparable with what was read back


def _finished_seed(seed_dir: Path, fingerprint: dict) -> dict | None:
    """The stored result of a completed seed with the same fingerprint, else ``None``."""
    path = seed_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if result.get("fingerprint") != fingerprint or not (seed_dir / result["checkpoint"]).exists():
        return None
    return result


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, *,
                   progress: bool | None = None, echo=print, resume: bool = False) -> dict:
    """Train every seed of ``cfg`` and write ``out_dir/summary.json`` (+ one folder per seed).

    Returns the summary dict. ``echo`` receives one human-readable line per finished seed.
    With ``resume``, a seed whose folder already holds a finished result for the same
    :func:`run_fingerprint` is read back instead of retrained (its test split is not re-evaluated).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.data = cfg.data.resolved()
    if progress is None:
        progress = cfg.train.progress if cfg.train.progress is not None else sys.stderr.isatty()
    prepared = prepare_data(cfg.data, progress=progress)
    counts = prepared.corpus.counts()
    echo(f"{prepared.corpus.name}: " + ", ".join(
        f"{s} {v['dialogues']} dialogues/{v['utterances']} utterances" for s, v in counts.items())
        + f"; modalities {prepared.modalities} dims {prepared.input_dims}; "
        f"validation {prepared.corpus.valid_split}")
    cfg.save(out_dir / "config.yaml")
    results = []
    fingerprint = run_fingerprint(cfg)
    for seed in cfg.seeds:
        r = _finished_seed(out_dir / f"seed_{seed}", fingerprint) if resume else None
        if r is not None:
            results.append(r)
            echo(f"seed {seed}: finished earlier, reused (valid W-F1 {r['valid']['wf1']:.2f}  "
                 f"test W-F1 {r['test']['wf1']:.2f})")
            continue
        r = train_seed(cfg, prepared, seed, out_dir / f"seed_{seed}", progress=progress)
        results.append(r)
        echo(f"seed {seed}: valid W-F1 {r['valid']['wf1']:.2f}  test W-F1 {r['test']['wf1']:.2f}  "
             f"acc {r['test']['acc']:.2f}  (best epoch {r['best_epoch']}, "
             f"{r['seconds_to_best']:.1f} s to best, {r['train_seconds']:.1f} s total)")
    summary = summarize(cfg, prepared, results)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    t, v = summary["test"], summary["valid"]
    echo(f"{cfg.model_name} on {prepared.corpus.name} ({'+'.join(prepared.modalities)}), "
         f"{len(results)} seed(s), validation-selected: test W-F1 {t['wf1']['mean']:.2f} ± "
         f"{t['wf1']['std']:.2f}, acc {t['acc']['mean']:.2f} ± {t['acc']['std']:.2f} "
         f"(valid W-F1 {v['wf1']['mean']:.2f} ± {v['wf1']['std']:.2f})")
    return summary


@torch.no_grad()
def predict_split(model: torch.nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` over the labelled real utterances of ``loader``."""
    model.eval()
    ys, ps = [], []
    for batch in loader:
        logits = model(batch).logits
        valid = batch.labels != IGNORE_INDEX
        ys.append(batch.labels[valid])
        ps.append(logits[valid].argmax(-1))
    return torch.cat(ys).numpy(), torch.cat(ps).numpy()


def evaluate_checkpoint(checkpoint: str | Path, *, data_dir: str | None = None,
                        split: str = "test", progress: bool = False) -> dict:
    """Evaluate a saved checkpoint on ``split`` of the corpus it was trained on.

    The checkpoint's own feature spec (extractors and train-split statistics) is applied, so the
    numbers match what ``merc train`` reported for that seed.
    """
    from merc.engine.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    data = DataConfig(**loaded.config["data"])
    if data_dir is not None:
        data.data_dir = data_dir
    prepared = prepare_data(data.resolved(), spec=loaded.feature_spec, progress=progress)
    if prepared.corpus.label_names != loaded.label_names:
        raise MercInputError(checkpoint, f"label map {loaded.label_names} does not match the "
                             f"corpus' {prepared.corpus.label_names}", field="label_names")
    y_true, y_pred = predict_split(loaded.model, make_loader(prepared, split, 16))
    return classification_metrics(y_true, y_pred, loaded.label_names)
