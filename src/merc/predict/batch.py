"""Predicting many conversations: inputs in, one result per conversation out, ids kept.

``merc predict`` is a thin layer over this module:

* :func:`expand_inputs` -- files, folders (searched recursively for ``*.jsonl`` / ``*.json``,
  in sorted order) and ``-`` (stdin: JSON Lines of conversation objects);
* :func:`read_inputs` -- every conversation of every input, validated; a bad conversation is
  reported as one line (file, line, dialogue, utterance, field) and either stops everything
  (``on_error="fail"``) or is skipped and counted (``"skip"``) -- never dropped silently;
* :class:`ResultWriter` -- a JSONL stream (one result per line, ``-`` = stdout), a folder of one
  JSON file per conversation, and a flat table of utterances (CSV, or Parquet through pandas),
  each result carrying the conversation's id and each utterance's id (and its ``gold`` label
  when the input had one).

The predictions themselves come from :meth:`merc.predict.predictor.Predictor.predict_many`, which
encodes a whole chunk of conversations in one text-encoder call and batches them per forward
pass.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merc.data.conversation import Conversation
from merc.data.conversation_file import iter_conversations
from merc.errors import MercInputError

STDIN = "-"
"""The input name that reads JSON Lines of conversations from standard input."""

SUFFIXES = (".jsonl", ".json")
"""Files a folder input contributes."""


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, folders and ``-`` -> the list of files to read (``-`` kept as is), in order.

    Raises:
        MercInputError: an input that does not exist, a folder with no ``.jsonl``/``.json``
            file, or ``-`` given twice.
    """
    out: list[str] = []
    for item in inputs:
        if item == STDIN:
            if STDIN in out:
                raise MercInputError(STDIN, "stdin given twice")
            out.append(STDIN)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise MercInputError(path, "folder holds no .jsonl or .json conversation file")
            out.extend(found)
        elif path.is_file():
            out.append(str(path))
        else:
            raise MercInputError(path, "conversation file not found")
    return out


@dataclass
class ReadReport:
    """What :func:`read_inputs` found."""

    conversations: list[Conversation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """One line per skipped conversation."""
    sources: list[str] = field(default_factory=list)
    """The file each conversation came from (``-`` for stdin)."""


def read_inputs(files: Sequence[str], *, on_error: str = "fail",
                allow_outside_media: bool = False,
                warn: Callable[[str], None] | None = None) -> ReadReport:
    """Read every conversation of ``files`` (from :func:`expand_inputs`).

    Args:
        on_error: ``fail`` raises the first bad conversation's :class:`MercInputError`;
            ``skip`` reports it through ``warn`` and goes on (it is counted in ``errors``).
        allow_outside_media: Let media paths leave their file's folder (see
            :mod:`merc.data.conversation_file`).

    Raises:
        MercInputError: with ``on_error="fail"``, the first problem; always, a duplicate
            conversation id (results are keyed by it).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    report = ReadReport()
    seen: dict[str, str] = {}
    for name in files:
        stream = sys.stdin if name == STDIN else None
        try:
            items = list(iter_conversations("<stdin>" if stream else name, stream=stream,
                                            allow_outside_media=allow_outside_media))
        except MercInputError as e:
            items = [e]
        for item in items:
            if isinstance(item, MercInputError):
                if on_error == "fail":
                    raise item
                report.errors.append(str(item))
                if warn:
                    warn(f"skipped: {item}")
                continue
            if item.id in seen:
                raise MercInputError(name, f"conversation id {item.id!r} also in "
                                     f"{seen[item.id]}; results are keyed by id, so ids must "
                                     "be unique", dialogue=item.id, field="id")
            seen[item.id] = name
            report.conversations.append(item)
            report.sources.append(name)
    return report


def safe_name(conversation_id: str) -> str:
    """A file name for a conversation id (path separators and odd characters replaced)."""
    name = re.sub(r"[^\w.\-]+", "_", conversation_id).strip("._") or "conversation"
    return name[:120]


class ResultWriter:
    """Writes results as they come: a JSONL stream, a folder of JSON files, a flat table.

    Args:
        jsonl: Path of the JSONL stream, ``-`` for stdout, or ``None``.
        folder: Folder for one ``<id>.json`` per conversation, or ``None``.
        table: ``.csv`` or ``.parquet`` path of one row per utterance, or ``None``.
    """

    def __init__(self, *, jsonl: str | None = None, folder: str | None = None,
                 table: str | None = None) -> None:
        self.table = table
        self.folder = Path(folder) if folder else None
        self._rows: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self.written: list[str] = []
        self._jsonl: io.TextIOBase | None = None
        if table and Path(table).suffix.lower() not in (".csv", ".parquet"):
            raise MercInputError(table, "the table must end in .csv or .parquet", field="--table")
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
        if jsonl == STDIN:
            self._jsonl = sys.stdout
        elif jsonl:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(jsonl, "w", encoding="utf-8")
            self.written.append(jsonl)

    def add(self, result: dict[str, Any]) -> None:
        """One conversation's result (:meth:`merc.predict.predictor.Prediction.to_dict`)."""
        if self._jsonl is not None:
            # allow_nan=False: a NaN probability is an error, never invalid JSON.
            self._jsonl.write(json.dumps(result, ensure_ascii=False, allow_nan=False) + "\n")
        if self.folder is not None:
            from merc.fileio import write_json

            name = safe_name(result["id"])
            stem, k = name, 1
            while name in self._names:           # two ids that map to one file name
                k += 1
                name = f"{stem}_{k}"
            self._names.add(name)
            write_json(self.folder / f"{name}.json", result, ensure_ascii=False)
        if self.table:
            self._rows.extend(utterance_rows(result))

    def close(self) -> list[str]:
        """Flush and close; returns what was written."""
        if self._jsonl is not None and self._jsonl is not sys.stdout:
            self._jsonl.close()
        elif self._jsonl is sys.stdout:
            sys.stdout.flush()
        if self.folder is not None:
            self.written.append(f"{self.folder}/ ({len(self._names)} files)")
        if self.table:
            write_table(self._rows, self.table)
            self.written.append(self.table)
        return self.written


def utterance_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of one result: ``conversation, utterance, speaker, text, gold, label,
    confidence, p_<label>...`` (``gold`` empty where the input had none)."""
    rows = []
    for u in result["utterances"]:
        row = {"conversation": result["id"], "utterance": u["id"], "speaker": u["speaker"],
               "text": u["text"], "gold": u.get("gold"), "label": u["label"],
               "confidence": u["confidence"]}
        row.update({f"p_{lab}": p for lab, p in u["probs"].items()})
        rows.append(row)
    return rows


def write_table(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """CSV (stdlib) or Parquet (pandas + pyarrow, imported only here) of ``rows``."""
    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if path.suffix.lower() == ".parquet":
        try:
            import pandas as pd
        except ImportError:
            raise MercInputError(path, "writing Parquet needs pandas and pyarrow "
                                 "(pip install pandas pyarrow); or use a .csv table",
                                 field="--table") from None
        pd.DataFrame(rows, columns=columns).to_parquet(path, index=False)
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------ Ray Data

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
