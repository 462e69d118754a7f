"""Where predictions go: a JSONL stream (one result per line, ``-`` = stdout), a folder of one
JSON file per conversation, a flat table of utterances (CSV, or Parquet through pandas), each
result carrying the conversation's id and each utterance's id (and its ``gold`` label when the
input had one)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from merc.errors import MercInputError
from merc.predict.inputs import STDIN


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
        """One conversation's result (:meth:`merc.predict.results.Prediction.to_dict`)."""
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
