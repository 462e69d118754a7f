"""Where predictions go: a JSONL stream (one result per line, ``-`` = stdout), a folder of one
JSON file per conversation, a flat table of utterances (CSV, or Parquet through pandas), each
result carrying the conversation's id and each utterance's id (and its ``gold`` label when the
input had one)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from merc.errors import MercInputError
from merc.predict.inputs import STDIN


def safe_name(conversation_id: str) -> str:
    """A file name for a conversation id (path separators and odd characters replaced)."""
    name = re.sub(r"[^\w.\-]+", "_", conversation_id).strip("._") or "conversation"
    return name[:120]


def unique_name(conversation_id: str, taken: set[str]) -> str:
    """:func:`safe_name` of ``conversation_id``, with ``_2``, ``_3``... when two ids map to one
    name; the name is added to ``taken``."""
    name = stem = safe_name(conversation_id)
    k = 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name


def folder_files(folder: str | Path, conversation_ids: Iterable[str]) -> list[Path]:
    """The files :class:`ResultWriter` writes in ``folder`` for these ids, in order."""
    taken: set[str] = set()
    return [Path(folder) / f"{unique_name(str(i), taken)}.json" for i in conversation_ids]


def _identity(path: str | Path) -> tuple[Path, tuple[int, int] | None]:
    """``path`` resolved (symlinks, ``./``, ``..``) and, when it exists, its (device, inode):
    two names of one file share one or the other (hard links share only the inode)."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):          # a symlink loop
        resolved = Path(os.path.abspath(path))
    try:
        st = os.stat(path)
        return resolved, (st.st_dev, st.st_ino)
    except OSError:                          # does not exist (yet)
        return resolved, None


def check_outputs(outputs: Sequence[tuple[str, str | Path]], inputs: Sequence[str]) -> None:
    """Refuse, before anything is written, an output that would overwrite an input or that
    another output names too.

    Args:
        outputs: ``(flag, path)`` pairs (``--out``, ``--table``, ... and one per file of
            ``--out-dir``); ``-`` (stdout) is skipped.
        inputs: Every file read: conversation files and ``@LIST`` files (``-`` skipped).

    Raises:
        MercInputError: naming the output, its flag and the input (or other output) it meets.
    """
    by_path: dict[Path, str] = {}
    by_inode: dict[tuple[int, int], str] = {}
    for name in inputs:
        if name != STDIN:
            resolved, inode = _identity(name)
            by_path.setdefault(resolved, name)
            if inode is not None:
                by_inode.setdefault(inode, name)
    written: dict[Path, str] = {}
    for flag, out in outputs:
        if str(out) == STDIN:
            continue
        resolved, inode = _identity(out)
        hit = by_path.get(resolved) or (by_inode.get(inode) if inode is not None else None)
        if hit is not None:
            raise MercInputError(out, f"is the input {hit}; writing it would destroy the "
                                 "input (choose another path)", field=flag)
        if resolved in written:
            raise MercInputError(out, f"{written[resolved]} writes this file too; give each "
                                 "output its own path", field=flag)
        written[resolved] = flag


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
        """One conversation's result (:meth:`merc.predict.results.Prediction.to_dict`)."""
        if self._jsonl is not None:
            # allow_nan=False: a NaN probability is an error, never invalid JSON.
            self._jsonl.write(json.dumps(result, ensure_ascii=False, allow_nan=False) + "\n")
        if self.folder is not None:
            from merc.fileio import write_json

            name = unique_name(result["id"], self._names)   # two ids, one file name: _2
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
