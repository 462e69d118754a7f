"""Config YAML: the safe loader, without aliases or duplicate keys, with a depth limit, and
with YAML 1.2's plain scalars instead of YAML 1.1's surprises."""

from __future__ import annotations

import re
from typing import Any

import yaml

from merc.errors import ConfigError

YAML_MAX_DEPTH = 32
"""Deepest nesting accepted in a config file or override value (configs nest three levels)."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags that build objects) that also refuses what a config never
    needs and an attacker uses:

    * aliases (``*a``): a 500-byte "billion laughs" file expands to gigabytes while being
      constructed; refusing them at composition costs nothing and nothing legitimate is lost;
    * nesting deeper than :data:`YAML_MAX_DEPTH`: ``[`` x 100000 would otherwise exhaust the
      composer's recursion (a ``RecursionError`` traceback);
    * a key given twice in one mapping: YAML's "last wins" silently drops the first value.

    Plain (unquoted) scalars are typed as in YAML 1.2's core schema, not PyYAML's YAML 1.1 (see
    :data:`_RESOLVERS`): ``5e-4`` is a float (1.1 reads it as a *string*, which pydantic then
    coerced), while ``0x10``, ``010``, ``1:30``, ``yes``/``no``/``on``/``off`` and dates stay
    strings (1.1 reads 16, 8, 90, booleans and dates), so strict typing refuses them by name
    instead of silently using a number nobody wrote.
    """

    yaml_implicit_resolvers: dict = {}

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in merc configs",
                event.start_mark)
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {YAML_MAX_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the earlier value would be silently "
                    "dropped)", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_RESOLVERS = [
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", "~nN"),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    # Decimal only, no leading zero: "010" (YAML 1.1: octal 8) and "0x10" (16) stay strings.
    ("tag:yaml.org,2002:int", r"[-+]?(?:0|[1-9][0-9]*)", "-+0123456789"),
    # Exponents without a dot ("5e-4", "1e3") are floats, as in YAML 1.2 and Python.
    ("tag:yaml.org,2002:float", r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)"
     r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
]
"""(tag, pattern, first characters) of the plain scalars that are not strings, in the order
they are tried (an int before a float)."""

for _tag, _pattern, _first in _RESOLVERS:
    _ConfigLoader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"),
                                        list(_first) + ([""] if _pattern.endswith("|") else []))


def load_yaml(text: str, source: str) -> Any:
    """Parse config YAML with :class:`_ConfigLoader`.

    Raises:
        ConfigError: one line ``source: <what is wrong> (line L, column C)``.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(source, f"invalid YAML: {problem}{where}") from None
    except RecursionError:  # belt and braces: the depth limit should have caught it
        raise ConfigError(source, "invalid YAML: nested too deeply") from None

