"""What ``merc predict`` reads: files, folders, ``-`` (stdin) and lists of inputs, every
conversation validated; a bad one is reported as one line (file, line, dialogue, utterance,
field) and either stops everything (``on_error="fail"``) or is skipped and counted
(``"skip"``) -- never dropped silently.

``@LIST`` is expanded here, not by argparse: argparse's ``fromfile_prefix_chars`` read each
line as a command-line *argument*, so a line ``--allow-outside-media`` switched the media guard
off, a file named ``-x.jsonl`` became an option, and a list naming itself recursed until
Python gave up. Here every line is an input path, nothing else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from merc.data.conversation import Conversation
from merc.data.conversation_file import iter_conversations, not_a_file_reason
from merc.errors import MercInputError

log = logging.getLogger(__name__)

STDIN = "-"
"""The input name that reads JSON Lines of conversations from standard input."""

LIST_PREFIX = "@"
"""``@LIST`` names a text file listing one input per line."""

SUFFIXES = (".jsonl", ".json")
"""Files a folder input contributes."""

RESULT_FILE = ("is a merc prediction result (it has 'model', 'labels' and utterances with "
               "'probs'), not a conversation; give the conversation file it was predicted from")


def list_files(inputs: Sequence[str]) -> list[str]:
    """The ``@LIST`` files named in ``inputs`` (inputs too: an output must never overwrite one)."""
    return [item[len(LIST_PREFIX):] for item in inputs if item.startswith(LIST_PREFIX)]


def expand_inputs(inputs: Sequence[str], *,
                  warn: Callable[[str], None] | None = None) -> list[str]:
    """Files, folders, ``-`` and ``@LIST`` -> the list of files to read (``-`` kept as is), in
    order.

    ``@LIST`` is a UTF-8 text file naming one input per line: a file or a folder, relative to
    the current directory (as on the command line, and as argparse's expansion did before).
    Blank lines and lines starting with ``#`` are skipped; every other line is a path, taken as
    written (never an option: ``--quiet`` on a line is a file called ``--quiet``). Lists do not
    nest, and ``-`` is for the command line only.

    A folder contributes its ``.jsonl``/``.json`` files, sorted, except merc's own prediction
    results (an earlier ``--out-dir`` or ``--out`` inside it): those are skipped and counted in
    one line through ``warn`` (default: a logged warning), never silently.

    Raises:
        MercInputError: an input that does not exist or is not a regular file (a device such as
            ``/dev/zero``, a pipe), a folder with no conversation file, a merc result named as
            an input, ``-`` given twice, or a bad ``@LIST`` line (naming the list and the line).
    """
    out: list[str] = []
    skipped: list[str] = []
    for item in inputs:
        if item == STDIN:
            if STDIN in out:
                raise MercInputError(STDIN, "stdin given twice")
            out.append(STDIN)
        elif item.startswith(LIST_PREFIX):
            for entry, where in _read_list(item[len(LIST_PREFIX):]):
                _expand_one(entry, out, skipped, where)
        else:
            _expand_one(item, out, skipped, None)
    if skipped:
        line = (f"skipped {len(skipped)} file(s) in the input folders that are merc prediction "
                f"results, not conversations (first: {skipped[0]})")
        (warn or log.warning)(line)
    return out


def _read_list(name: str) -> list[tuple[str, tuple[Path, int]]]:
    """The inputs an ``@LIST`` file names, each with (list file, line number)."""
    path = Path(name)
    if not name:
        raise MercInputError(LIST_PREFIX, "names no list file (write @FILE, or ./@FILE for a "
                             "conversation file whose name starts with @)")
    if not path.is_file():                   # never open /dev/zero or a pipe: read forever
        raise MercInputError(path, not_a_file_reason(path, "list of inputs"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MercInputError(path, f"cannot read the list of inputs as UTF-8 text "
                             f"({type(e).__name__})") from None
    entries = []
    # "\n" only (with "\r\n" line ends): str.splitlines() would also split a path at
    # characters such as U+2028, which file names may hold.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(LIST_PREFIX):
            # Refused rather than followed: a list naming itself (or a cycle) cannot happen, and
            # one level is all a list of files needs.
            raise MercInputError(path, f"line {lineno}: {line!r} names another list; lists of "
                                 "inputs do not nest (name its files here, or give both lists "
                                 "on the command line; ./@NAME for a file starting with @)")
        if line == STDIN:
            raise MercInputError(path, f"line {lineno}: '-' (stdin) can only be given on the "
                                 "command line")
        entries.append((line, (path, lineno)))
    if not entries:
        raise MercInputError(path, "the list of inputs names no input (only blank lines and "
                             "# comments)")
    return entries


def _expand_one(item: str, out: list[str], skipped: list[str],
                where: tuple[Path, int] | None) -> None:
    """Add the files of input ``item`` (from ``where``: list file and line, or the command line)
    to ``out``; merc results found in a folder go to ``skipped``."""
    def bad(message: str) -> MercInputError:
        if where is None:
            return MercInputError(item, message)
        return MercInputError(where[0], f"line {where[1]}: {item!r}: {message}")

    path = Path(item)
    if path.is_dir():
        found, results = [], []
        for p in sorted(path.rglob("*"), key=str):
            if p.suffix.lower() in SUFFIXES and p.is_file():
                (results if is_prediction_result(p) else found).append(str(p))
        if not found:
            raise bad("folder holds no .jsonl or .json conversation file"
                      + (f" ({len(results)} merc prediction result(s) skipped)"
                         if results else ""))
        out.extend(found)
        skipped.extend(results)
    elif path.is_file():
        if is_prediction_result(path):
            raise bad(RESULT_FILE)
        out.append(str(path))
    else:
        raise bad(not_a_file_reason(path, "conversation file"))


def is_prediction_result(path: Path) -> bool:
    """Whether ``path`` holds merc prediction results (:meth:`Prediction.to_dict`, one object,
    or one per line) rather than conversations: an object with ``model``, ``labels`` and
    ``utterances`` whose first utterance has ``probs``. Only the first record is looked at; a
    file that cannot be read or parsed is not a result (the reader then reports it)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16)
            if '"probs"' not in head:        # cheap: every result names probs early
                return False
            if path.suffix.lower() == ".jsonl":
                first = (head + f.readline()).lstrip().split("\n", 1)[0]
            else:
                first = head + f.read()
        obj = json.loads(first)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if isinstance(obj, dict) and {"model", "labels", "utterances"} <= set(obj):
        utts = obj["utterances"]
        return bool(utts) and isinstance(utts, list) and isinstance(utts[0], dict) \
            and "probs" in utts[0]
    return False


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
