"""``merc predict --backend ray``: bulk prediction on Ray Data (the ``ray`` extra, imported only
here and only when asked for)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from merc.errors import MercInputError
from merc.predict.inputs import STDIN, read_inputs


class _RayPredictor:
    """Ray Data ``map_batches`` callable: one model load per actor, then batches of file
    paths -> one row per conversation (its id, source file and result JSON)."""

    def __init__(self, checkpoint: str | None, batch_size: int, on_error: str,
                 allow_outside_media: bool) -> None:
        from merc.predict.predictor import Predictor

        self.predictor = Predictor.from_checkpoint(checkpoint,
                                                   allow_outside_media=allow_outside_media)
        self.batch_size, self.on_error = batch_size, on_error
        self.allow_outside_media = allow_outside_media

    def __call__(self, batch: dict) -> dict:
        report = read_inputs(list(batch["path"]), on_error=self.on_error,
                             allow_outside_media=self.allow_outside_media)
        preds = self.predictor.predict_many(report.conversations, batch_size=self.batch_size)
        rows = {"id": [p.id for p in preds], "source": report.sources,
                "result": [json.dumps(p.to_dict(), ensure_ascii=False, allow_nan=False)
                           for p in preds]}
        # Bad conversations (on_error="skip") travel as rows too, so none is lost silently.
        rows["id"] += [None] * len(report.errors)
        rows["source"] += [None] * len(report.errors)
        rows["result"] += [json.dumps({"error": e}) for e in report.errors]
        return rows


def predict_with_ray(files: Sequence[str], out_dir: str | Path, *,
                     checkpoint: str | None = None, batch_size: int = 32,
                     files_per_batch: int = 16, workers: int = 2, on_error: str = "fail",
                     allow_outside_media: bool = False, address: str | None = None) -> dict:
    """Bulk prediction on Ray Data: ``files`` (conversation files; from :func:`expand_inputs`)
    become a dataset of paths, ``workers`` actors each load the model once and predict
    ``files_per_batch`` files at a time (:class:`_RayPredictor`), and the results are written as
    sharded JSON Lines under ``out_dir`` (one result per line, the ``merc predict`` schema, ids
    kept; a skipped bad conversation as ``{"error": ...}``). Files must be readable from every
    Ray node. Returns counts.
    """
    if STDIN in files:
        raise MercInputError(STDIN, "stdin cannot be spread over Ray workers; give files")
    from merc.raycluster import connect

    ray = connect(address)
    ds = ray.data.from_items([{"path": str(Path(f).resolve())} for f in files])
    results = ds.map_batches(
        _RayPredictor, fn_constructor_args=(checkpoint, batch_size, on_error,
                                            allow_outside_media),
        batch_size=files_per_batch, concurrency=workers, num_cpus=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = 0
    errors = 0
    try:
        # Results stream back to this process, which writes one shard per 1,000 of them.
        for k, shard in enumerate(results.iter_batches(batch_size=1000, batch_format="numpy")):
            text = "".join(r + "\n" for r in shard["result"])
            (out / f"part-{k:05d}.jsonl").write_text(text, encoding="utf-8")
            lines += len(shard["result"])
            errors += sum(1 for i in shard["id"] if i is None)
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, MercInputError):
            raise cause from None
        first = (str(cause or e).strip().splitlines() or [type(e).__name__])[-1]
        raise RuntimeError(f"Ray prediction failed: {first}") from None
    return {"conversations": lines - errors, "errors": errors, "out_dir": str(out)}
