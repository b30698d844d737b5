"""Deciding whether a breakpoint stops: bdb's rules, conditions compiled once.

bdb keeps its breakpoints (``bdb.Breakpoint``) globally and decides with
``bdb.effective()``, which ``eval()``s a condition *string* at every hit --
compiling it each time.  A conditional breakpoint on a hot line then costs a
compile per execution.  ``effective()`` here applies exactly bdb's rules
(enabled, function-name breakpoints, hit and ignore counts, a condition that
raises counts as true but does not delete a temporary breakpoint) with each
condition compiled once and cached by its text.
"""

from __future__ import annotations

import bdb
import types
from typing import Any

_compiled: dict[str, types.CodeType | None] = {}


def condition_code(condition: str) -> types.CodeType | None:
    """*condition* compiled (once per text); None if it does not compile."""
    try:
        return _compiled[condition]
    except KeyError:
        pass
    try:
        code: types.CodeType | None = compile(
            condition, "<breakpoint condition>", "eval"
        )
    except SyntaxError:
        code = None  # evaluated (and reported as an error) by eval below
    _compiled[condition] = code
    return code


def effective(
    filename: str, lineno: int, frame: types.FrameType
) -> tuple[bdb.Breakpoint, bool] | tuple[None, None]:
    """Which breakpoint at (filename, lineno) stops *frame*, and may a
    temporary one be deleted: ``bdb.effective`` with compiled conditions."""
    possibles = bdb.Breakpoint.bplist.get((filename, lineno), ())
    for bp in possibles:
        if not bp.enabled:
            continue
        if not bdb.checkfuncname(bp, frame):
            continue
        bp.hits += 1
        if not bp.cond:
            if bp.ignore > 0:
                bp.ignore -= 1
                continue
            return bp, True
        code = condition_code(bp.cond)
        try:
            value: Any = eval(
                code if code is not None else bp.cond, frame.f_globals, frame.f_locals
            )
        except Exception:
            # As bdb: a condition that raises stops, but never deletes a
            # temporary breakpoint.
            return bp, False
        if value:
            if bp.ignore > 0:
                bp.ignore -= 1
            else:
                return bp, True
    return None, None
