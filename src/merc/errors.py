"""Errors raised for bad user input.

Every loader reports a problem as one line naming the file, the dialogue/utterance and the
field, so a user can go straight to the offending record. Nothing is silently dropped.
"""

from __future__ import annotations

from pathlib import Path


class MercInputError(ValueError):
    """A malformed or inconsistent input file.

    The message is always a single line of the form
    ``<file>: dialogue <id>[, utterance <id>], field <name>: <what is wrong>``.
    """

    def __init__(
        self,
        file: str | Path | None,
        message: str,
        *,
        dialogue: object | None = None,
        utterance: object | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.dialogue = dialogue
        self.utterance = utterance
        self.field = field
        parts = []
        if dialogue is not None:
            parts.append(f"dialogue {dialogue}")
        if utterance is not None:
            parts.append(f"utterance {utterance}")
        if field is not None:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        prefix = self.file or "<input>"
        text = f"{prefix}: {where}: {message}" if where else f"{prefix}: {message}"
        # One line, always: embedded newlines from e.g. repr() of user text are escaped.
        super().__init__(text.replace("\n", "\\n"))


class ConfigError(ValueError):
    """A wrong config value; ``str(e)`` is one line ``"key: message"`` naming the full key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.message = key, message

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key inside section ``prefix`` (``context`` -> ``model.context``)."""
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)
