"""DAP ``completions``: what may follow the text typed in the debug console.

The client sends the line typed so far and the cursor's column; the answer
is the names that complete the dotted name ending at the cursor: ``wor``
gives ``worker``, ``self.ha`` gives ``self.handle``.  Names come from the
frame's locals, its globals, the builtins and Python's keywords; after a
dot, from ``dir()`` of the object the dotted name before it refers to,
which is looked up by names and attributes only -- nothing is called but
attribute getters (properties, ``__getattr__``), as in any debugger's
hover.  Names starting with ``_`` are offered only once ``_`` is typed.

This module touches only Python values; it runs in whichever thread the
program is stopped on (or, while the program runs, reads ``__main__``).
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import re
import types
from collections.abc import Mapping
from typing import Any

#: Most items one answer carries.
MAX_ITEMS = 500

_DOTTED_NAME = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_]*\s*\.\s*)*[A-Za-z_]?[A-Za-z0-9_]*$"
)


def _kind(value: object) -> str:
    if isinstance(value, types.ModuleType):
        return "module"
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return "variable"


def _lookup(path: list[str], namespace: Mapping[str, Any]) -> object:
    """The object a dotted name refers to; ``LookupError`` if there is none."""
    head, *rest = path
    if head in namespace:
        value = namespace[head]
    elif hasattr(builtins, head):
        value = getattr(builtins, head)
    else:
        raise LookupError(head)
    for name in rest:
        try:
            value = getattr(value, name)
        except Exception:
            raise LookupError(name) from None
    return value


def complete(
    text: str, column: int, namespace: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """DAP ``CompletionItem`` objects for *text* with the cursor at *column*.

    *column* is 1-based (the cursor before the first character is 1); one
    past the end is the end of the text.  Each item's ``start`` (1-based) and
    ``length`` say which characters of *text* it replaces.
    """
    cursor = max(0, min(column - 1, len(text)))
    before = text[:cursor]
    match = _DOTTED_NAME.search(before)
    token = match.group(0) if match else ""
    parts = [part.strip() for part in token.split(".")]
    typed = parts[-1]
    start = cursor - len(typed) + 1
    candidates: dict[str, str] = {}
    if len(parts) > 1:
        try:
            owner = _lookup(parts[:-1], namespace)
        except LookupError:
            return []
        try:
            names = dir(owner)
        except Exception:
            return []
        for name in names:
            try:
                kind = _kind(getattr(owner, name))
            except Exception:
                kind = "field"
            candidates[name] = "field" if kind == "variable" else kind
    else:
        for name, value in namespace.items():
            candidates[str(name)] = _kind(value)
        for name in dir(builtins):
            candidates.setdefault(name, _kind(getattr(builtins, name)))
        for name in keyword.kwlist:
            candidates.setdefault(name, "keyword")
    private = typed.startswith("_")
    chosen = sorted(
        name
        for name in candidates
        if name.startswith(typed) and (private or not name.startswith("_"))
    )[:MAX_ITEMS]
    return [
        {
            "label": name,
            "text": name,
            "type": candidates[name],
            "start": start,
            "length": len(typed),
        }
        for name in chosen
    ]
