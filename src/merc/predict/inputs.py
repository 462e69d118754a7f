"""What ``merc predict`` reads: files, folders, ``-`` (stdin) and lists of inputs, every
conversation validated; a bad one is reported as one line (file, line, dialogue, utterance,
field) and either stops everything (``on_error="fail"``) or is skipped and counted
(``"skip"``) -- never dropped silently."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
