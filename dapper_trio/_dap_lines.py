"""Checking DAP breakpoints before they are set: code lines, hit conditions.

An editor lets a person click any line, blank and comment lines included; a
breakpoint there would never stop, and the person would wait for nothing.
The adapter therefore answers ``setBreakpoints`` with ``verified: false``
and a message for every line that holds no code.  This is decided from the
source alone, in the adapter (no trio, no debuggee): compile the file and
collect the line numbers every code object in it reports.  A
``hitCondition`` is checked here too (``parse_hit_condition``), so a typo in
one is reported at once instead of silently never (or always) stopping.
"""

from __future__ import annotations

import io
import operator
import re
import types
from collections.abc import Callable, Iterator


class SourceUnavailable(Exception):
    """The file cannot be read or compiled; its lines cannot be checked."""


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def code_lines(source: str | bytes, filename: str = "<source>") -> frozenset[int]:
    """The line numbers of *source* on which a line event can happen.

    Raises ``SourceUnavailable`` if *source* does not compile.
    """
    try:
        module = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise SourceUnavailable(f"{filename} does not compile: {exc}") from exc
    lines: set[int] = set()
    for code in _code_objects(module):
        for _, _, line in code.co_lines():
            if line is not None and line > 0:
                lines.add(line)
    return frozenset(lines)


def file_code_lines(filename: str) -> frozenset[int]:
    """``code_lines`` of the file *filename*.

    Raises ``SourceUnavailable`` if it cannot be read or compiled.
    """
    try:
        with io.open_code(filename) as file:
            source = file.read()
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {filename}: {exc.strerror}") from exc
    return code_lines(source, filename)


_HIT_CONDITION = re.compile(r"\s*(==|>=|<=|>|<|%)?\s*(\d+)\s*")
_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "%": lambda hits, n: n > 0 and hits % n == 0,
}


def parse_hit_condition(text: str) -> Callable[[int], bool]:
    """A test of the hit count for a DAP ``hitCondition`` (debugpy's syntax).

    ``"N"`` or ``"==N"`` stops on the Nth hit, ``">=N"``, ``">N"``, ``"<N"``,
    ``"<=N"`` compare, ``"%N"`` stops on every Nth hit.  Hits are counted
    only when the breakpoint's condition (if any) is true.  Raises
    ``ValueError`` for anything else.
    """
    match = _HIT_CONDITION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"hit condition {text!r} is not N, ==N, >N, >=N, <N, <=N or %N"
        )
    compare = _OPERATORS[match.group(1) or "=="]
    number = int(match.group(2))
    return lambda hits: compare(hits, number)
