"""Checking config values: one-line :class:`ConfigError` naming ``section.key``.

Why pydantic (v2) for the type checks: it is a well-kept library, and
``pydantic.TypeAdapter(SomeDataclass)`` validates *plain stdlib dataclasses* without rewriting
them, so the dataclasses keep their attribute docstrings (read by
:func:`merc.config.help.field_docs` for ``--help`` and ``merc models``),
``dataclasses.asdict``/``replace`` keep working, and checkpoints keep storing plain dicts that
``torch.load(weights_only=True)`` accepts.

What pydantic's lax mode would let through is refused here first, field by field
(:func:`_check_value`): a value must already have its field's type -- no ``"3"`` -> 3, no
``3.0`` -> 3, no ``true`` -> 1 (the YAML loader, :mod:`merc.config.yaml_loader`, types plain
scalars as YAML 1.2 does, so ``5e-4`` arrives as a float and ``0x10`` as a string). pydantic's
own strict mode cannot be used: on a stdlib dataclass it demands an *instance*, not the mapping a
YAML file gives. Every number must also be finite and of a size no setting needs
(:data:`INT_LIMIT`, :data:`FLOAT_LIMIT`): beyond them torch and numpy overflow with a traceback.
Unknown keys are refused with the list of known ones (pydantic ignores extra keys of stdlib
dataclasses).
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



INT_LIMIT = 2**31 - 1
"""Largest magnitude of an integer setting: the C ``int`` of torch and numpy arguments (thread
counts, sizes); no setting needs more (epochs and patience have lower bounds of their own)."""

FLOAT_LIMIT = 1e6
"""Largest magnitude of a real-valued setting (rates, weights, clipping): no setting needs more,
and past it losses and updates overflow (learning rates have lower bounds of their own)."""


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


def _wrong_type(key: str, expected: str, value: Any) -> ConfigError:
    hint = (" (a string: write numbers unquoted and in decimal, e.g. 3, 0.001 or 5e-4)"
            if isinstance(value, str) and expected in ("int", "float") else "")
    return ConfigError(key, f"expected {expected}, got {_short(value)}{hint}")


def _check_value(hint: Any, value: Any, key: str, *, sizes: bool = False) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``value`` already is of type ``hint``
    (no coercion) and finite; with ``sizes``, unless it is within :data:`INT_LIMIT` /
    :data:`FLOAT_LIMIT` (a second pass, after the section's own bounds, which say more: ``lr``
    names its own, far lower, limit).

    Types other than bool, int, float, str, lists, optionals and nested config dataclasses are
    left to pydantic."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        first: ConfigError | None = None
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_value(option, value, key, sizes=sizes)
            except ConfigError as e:
                first = first or e
        if first is not None:
            raise first
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise _wrong_type(key, "bool", value)
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(key, "int", value)
        if sizes and abs(value) > INT_LIMIT:
            raise ConfigError(key, f"expected an integer between {-INT_LIMIT} and {INT_LIMIT}, "
                              f"got {_short(value)}")
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _wrong_type(key, "float", value)
        # NaN/inf pass every `>= 0` bound written as `require(not (x < 0))` and never make
        # sense as a setting; refused here for every section and model at once.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value}")
        if sizes and abs(value) > FLOAT_LIMIT:      # int or float: compared exactly
            raise ConfigError(key, f"expected a number between {-FLOAT_LIMIT:,.0f} and "
                              f"{FLOAT_LIMIT:,.0f}, got {_short(value)}")
    elif hint is str:
        if not isinstance(value, str):
            raise _wrong_type(key, "str", value)
    elif origin is list:
        if not isinstance(value, (list, tuple)):      # a Python tuple loses nothing as a list
            raise _wrong_type(key, "a list", value)
        (item,) = typing.get_args(hint) or (Any,)
        for i, v in enumerate(value):
            _check_value(item, v, f"{key}.{i}", sizes=sizes)
    elif dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        nested = typing.get_type_hints(hint)
        for name, v in value.items():
            if name in nested:
                _check_value(nested[name], v, f"{key}.{name}", sizes=sizes)


def validate_section(cls: type, values: Any, section: str):
    """Build dataclass ``cls`` from ``values`` (a mapping of its fields), type-checked.

    Raises:
        ConfigError: one line naming ``section.key``: an unknown key, a value of the wrong type
            (``train.lr: expected float, got '0x10'``) or one refused by the class'
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
        _check_value(hints[k], v, f"{section}.{k}")
    try:
        built = _adapter(cls).validate_python(dict(values))
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
    for k, v in values.items():
        _check_value(hints[k], v, f"{section}.{k}", sizes=True)
    return built

