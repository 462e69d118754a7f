"""Help text from the config dataclasses' attribute docstrings (``--help``, ``merc models``)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (for ``--help``/``merc models``).

    Attribute docstrings are not kept at run time, so they are read from the class source.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe_options(cls: type, prefix: str, indent: int = 2, width: int = 100) -> str:
    """``prefix.field=default`` lines, each followed by its wrapped docstring.

    A field left unset (``None``) that ``cls.FALLBACKS`` resolves shows that value too."""
    docs = field_docs(cls)
    fallbacks = getattr(cls, "FALLBACKS", {})
    lines = []
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        shown = (f"unset (-> the model's paper value, else {fallbacks[f.name]!r})"
                 if default is None and f.name in fallbacks else repr(default))
        lines.append(f"{' ' * indent}{prefix}.{f.name}={shown}")
        if f.name in docs:
            lines += textwrap.wrap(docs[f.name], width, initial_indent=" " * (indent + 4),
                                   subsequent_indent=" " * (indent + 4))
    return "\n".join(lines)

