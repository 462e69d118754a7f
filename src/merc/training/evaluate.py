"""``merc evaluate``: a saved checkpoint on a split of the corpus it was trained on, with its own
feature spec (extractors and train-split statistics), so the numbers match what ``merc train``
reported for that seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from merc.checkpoint import LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from merc.errors import MercInputError


def prepare_for_checkpoint(loaded: LoadedCheckpoint, *, data_dir: str | None = None,
                           progress: bool = False):
    """The corpus the checkpoint was trained on, with the checkpoint's own feature spec
    (extractors and train-split statistics): a :class:`merc.training.prepare.PreparedData`.

    Raises:
        MercInputError: the corpus' label map differs from the checkpoint's.
    """
    import dataclasses

    from merc.training.prepare import prepare_data

    data = loaded.config.data
    if data_dir is not None:
        data = dataclasses.replace(data, data_dir=data_dir)
    prepared = prepare_data(data.resolved(), spec=loaded.feature_spec, progress=progress)
    if prepared.corpus.label_names != loaded.label_names:
        raise MercInputError(loaded.path, f"label map {loaded.label_names} does not "
                             f"match the corpus' {prepared.corpus.label_names}",
                             field="label_names")
    return prepared


def evaluate_checkpoint(checkpoint: str | Path, *, data_dir: str | None = None,
                        split: str = "test", progress: bool = False,
                        echo: Callable[[str], None] | None = None,
                        predictions: str | Path | None = None) -> dict:
    """Metrics (percent) of a saved checkpoint -- or of a ``merc train`` run folder's best seed on
    validation (:func:`merc.checkpoint.resolve_checkpoint`) -- on ``split`` of the corpus it was
    trained on.

    The checkpoint's own feature spec is applied, so the numbers match what ``merc train``
    reported for that seed (the run's selection metric included, under its key). The result's
    ``data`` entry names the corpus and the evaluated split's size and fingerprint.

    Args:
        echo: Receives one line naming the seed picked from a run folder, and one when the split
            differs from the one recorded at training time (or the checkpoint predates that
            record); default: standard error.
        predictions: Also write every utterance's gold label, prediction and probabilities
            here: ``.jsonl`` (one result per conversation, the ``merc predict`` schema) or a
            ``.csv`` / ``.parquet`` table (one row per utterance).

    Raises:
        MercInputError: ``split`` holds the checkpoint's training dialogues (swapped splits).
    """
    import sys

    from merc.training.prepare import make_loader
    from merc.training.loop import evaluate
    from merc.training.provenance import check_evaluation_data, data_block

    say = echo or (lambda line: print(line, file=sys.stderr))
    # A run folder is resolved as merc predict and merc serve resolve it (its best seed on
    # validation, never on test), and the choice is said: which weights were scored matters.
    path, why = resolve_checkpoint(checkpoint)
    if why:
        say(why)
    loaded = load_checkpoint(path)
    prepared = prepare_for_checkpoint(loaded, data_dir=data_dir, progress=progress)
    current = data_block(prepared.corpus)
    note = check_evaluation_data(loaded.data, current, split, loaded.path)
    if note:
        say(note)
    preds = evaluate(loaded.model, make_loader(prepared, split, 16))
    metrics = preds.metrics(loaded.label_names, loaded.config.train.selection)
    # Calibration of the confidences prediction reports (percent, 15 bins): with the
    # checkpoint's validation-fitted temperature, and of the raw softmax.
    from merc.calibration import expected_calibration_error, softmax

    if len(preds):
        metrics["ece"] = 100 * expected_calibration_error(
            softmax(preds.logits, loaded.temperature), preds.y_true)
        metrics["ece_uncalibrated"] = 100 * expected_calibration_error(
            softmax(preds.logits), preds.y_true)
        metrics["temperature"] = loaded.temperature
    metrics["data"] = {"corpus": current["corpus"], "split": split, **current["splits"][split],
                       # None: an older checkpoint, nothing recorded to compare with.
                       "matches_training": None if not loaded.data else note is None}
    if predictions is not None:
        write_split_predictions(loaded, prepared, split, predictions)
    return metrics


def write_split_predictions(loaded: LoadedCheckpoint, prepared, split: str,
                            path: str | Path) -> None:
    """Per-utterance gold, prediction and probabilities of ``split`` (see
    :func:`evaluate_checkpoint`), conversation by conversation in the corpus' order."""
    from merc.predict.writers import ResultWriter
    from merc.training.prepare import make_loader
    from merc.predict.results import batch_predictions

    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise MercInputError(path, "predictions go to a .jsonl, .csv or .parquet file",
                             field="--predictions")
    writer = ResultWriter(jsonl=path if suffix == ".jsonl" else None,
                          table=path if suffix != ".jsonl" else None)
    convs = iter(prepared.corpus.split(split))       # the loader keeps this order
    loaded.model.eval()
    for batch in make_loader(prepared, split, 16):
        for pred in batch_predictions(
                loaded.model, batch, [next(convs) for _ in range(batch.mask.shape[0])],
                label_names=loaded.label_names, model=loaded.config.model_name,
                checkpoint=str(loaded.path), modalities=prepared.modalities,
                temperature=loaded.temperature):
            writer.add(pred.to_dict())
    writer.close()
