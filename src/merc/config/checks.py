"""Checking config values: one-line :class:`ConfigError` naming ``section.key``.

Why pydantic (v2) for the type checks: it is a well-kept library, and
``pydantic.TypeAdapter(SomeDataclass)`` validates *plain stdlib dataclasses* without rewriting
them, so the dataclasses keep their attribute docstrings (read by
:func:`merc.config.help.field_docs` for ``--help`` and ``merc models``),
``dataclasses.asdict``/``replace`` keep working, and checkpoints keep storing plain dicts that
``torch.load(weights_only=True)`` accepts. Two adjustments on top of pydantic's lax mode: a YAML
bool given for a number is refused (lax mode reads ``true`` as 1), and unknown keys are refused
with the list of known ones (pydantic ignores extra keys of stdlib dataclasses).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from merc.errors import ConfigError


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error line quotes the value, not 28 MB."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"



def require(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``key: message`` unless ``ok`` (for ``__post_init__`` checks)."""
    if not ok:
        raise ConfigError(key, message)


def require_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    require(value in choices, key, f"expected one of {list(choices)}, got {_short(value)}")


_EXPECTED = {"int_parsing": "int", "int_type": "int", "int_from_float": "int",
             "float_parsing": "float", "float_type": "float", "bool_parsing": "bool",
             "bool_type": "bool", "string_type": "str", "list_type": "a list",
             "dict_type": "a mapping"}
"""pydantic error type -> what the field expects, for the one-line message."""


@functools.cache
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and args:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return "a list"
    return getattr(hint, "__name__", str(hint))


def _accepts_bool(hint: Any) -> bool:
    if hint in (bool, Any):
        return True
    return any(_accepts_bool(a) for a in typing.get_args(hint))


def validate_section(cls: type, values: Any, section: str):
    """Build dataclass ``cls`` from ``values`` (a mapping of its fields), type-checked.

    Raises:
        ConfigError: one line naming ``section.key``: an unknown key, a value of the wrong type
            (``model.hidden_size: expected int, got '1e3'``) or one refused by the class'
            ``__post_init__``.
    """
    from pydantic import ValidationError

    if not isinstance(values, Mapping):
        raise ConfigError(section, f"expected a mapping of options, got {_short(values)}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}", f"unknown option; known: {known}")
    hints = typing.get_type_hints(cls)
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping):
            nested = [f.name for f in dataclasses.fields(hints[k])]
            extra = [n for n in v if n not in nested]
            if extra:  # pydantic ignores unknown keys of nested stdlib dataclasses too
                raise ConfigError(f"{section}.{k}.{extra[0]}", f"unknown option; known: {nested}")
        if isinstance(v, bool) and not _accepts_bool(hints[k]):
            raise ConfigError(f"{section}.{k}", f"expected {_type_name(hints[k])}, got {_short(v)}")
    for k, v in values.items():
        # NaN/inf pass every `>= 0` bound written as `require(not (x < 0))` and never make
        # sense as a setting; refused here for every section and model at once.
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{section}.{k}", f"expected a finite number, got {v}")
    try:
        return _adapter(cls).validate_python(dict(values))
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause.under(section) from None
        key = ".".join([section, *(str(p) for p in err["loc"])])
        if err["type"] in _EXPECTED:
            raise ConfigError(key, f"expected {_EXPECTED[err['type']]}, got "
                              f"{_short(err['input'])}") from None
        raise ConfigError(key, err["msg"].removeprefix("Value error, ")) from None

