"""DAP breakpoints over bdb's: groups a request replaces, hit counts, logpoints.

bdb keeps breakpoints per (file, line) and decides with conditions alone.
DAP adds three things this module keeps beside them, by bdb's breakpoint
number: the DAP id the client knows the breakpoint by (for
``hitBreakpointIds``), a hit condition (``hitCondition``: stop on the Nth
hit, every Nth...) and a log message (a logpoint prints instead of
stopping).  And a DAP request replaces a whole *group* of breakpoints:
``setBreakpoints`` one file's line breakpoints, ``setFunctionBreakpoints``
every function breakpoint; neither may touch the other's, even in the same
file, so each group remembers the numbers it set.

Thread-safe (one lock): breakpoints are set from the program's trio thread,
the stopped thread or the agent's.
"""

from __future__ import annotations

import bdb
import dataclasses
import os
import re
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from ._dap_functions import SearchPath, resolve
from ._dap_lines import parse_hit_condition


@dataclasses.dataclass
class _Extras:
    """What bdb's Breakpoint does not hold: DAP's id, hit condition, logpoint."""

    hit_test: Callable[[int], bool] | None
    log_message: str | None
    dap_id: int | None
    function: bool
    hits: int = 0


_INTERPOLATION = re.compile(r"\{([^{}]+)\}")
_FUNCTIONS = "functions"


class BreakpointBook:
    """DAP breakpoints over bdb's, in groups that a request replaces whole.

    ``setBreakpoints`` replaces one file's line breakpoints, and
    ``setFunctionBreakpoints`` all function breakpoints; neither touches the
    other's, even in the same file.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._extras: dict[int, _Extras] = {}
        self._groups: dict[str, list[int]] = {}

    def _replace(self, debugger: bdb.Bdb, group: str) -> None:
        for number in self._groups.pop(group, []):
            self._extras.pop(number, None)
            debugger.clear_bpbynumber(number)

    def _add(
        self,
        debugger: bdb.Bdb,
        group: str,
        filename: str,
        line: int,
        spec: Mapping[str, Any],
        funcname: str | None = None,
    ) -> str | None:
        condition = spec.get("condition") or None
        error = debugger.set_break(filename, line, cond=condition, funcname=funcname)
        if error:
            return str(error)
        bp = bdb.Breakpoint.bplist[filename, line][-1]
        hit = spec.get("hitCondition") or None
        dap_id = spec.get("id")
        self._extras[bp.number] = _Extras(
            parse_hit_condition(hit) if hit else None,
            spec.get("logMessage") or None,
            dap_id if type(dap_id) is int else None,
            funcname is not None,
        )
        self._groups.setdefault(group, []).append(bp.number)
        return None

    def set_file(
        self, debugger: bdb.Bdb, path: str, specs: list[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace *path*'s line breakpoints with *specs*; one result per spec."""
        with self._lock:
            filename = debugger.canonic(path)
            group = f"file:{filename}"
            self._replace(debugger, group)
            results = []
            for spec in specs:
                line = int(spec["line"])
                error = self._add(debugger, group, filename, line, spec)
                if error:
                    results.append({"verified": False, "line": line, "message": error})
                else:
                    results.append({"verified": True, "line": line})
            return results

    def set_functions(
        self, debugger: bdb.Bdb, specs: list[Mapping[str, Any]], search: SearchPath
    ) -> list[dict[str, Any]]:
        """Replace every function breakpoint with *specs*; one result per spec."""
        with self._lock:
            self._replace(debugger, _FUNCTIONS)
            results = []
            for spec in specs:
                name = str(spec.get("name", ""))
                try:
                    locations = resolve(name, search)
                except LookupError as exc:
                    results.append({"verified": False, "message": str(exc)})
                    continue
                error = None
                for location in locations:
                    filename = debugger.canonic(location.filename)
                    error = self._add(
                        debugger,
                        _FUNCTIONS,
                        filename,
                        location.line,
                        spec,
                        location.funcname,
                    )
                    if error:
                        break
                first = locations[0]
                result: dict[str, Any] = {
                    "verified": error is None,
                    "line": first.line,
                    "source": {
                        "name": os.path.basename(first.filename),
                        "path": first.filename,
                    },
                }
                if error:
                    result["message"] = error
                results.append(result)
            return results

    def clear(self, debugger: bdb.Bdb) -> None:
        """Remove every breakpoint this book set (the client detached)."""
        with self._lock:
            for group in list(self._groups):
                self._replace(debugger, group)

    def describe(self, number: int | None) -> tuple[bool, int | None]:
        """(is it a function breakpoint, its DAP id) of bdb breakpoint *number*."""
        extras = self._extras.get(number) if number is not None else None
        return (False, None) if extras is None else (extras.function, extras.dap_id)

    def should_stop(
        self, number: int | None, frame: types.FrameType, log: Callable[[str], None]
    ) -> bool:
        """Apply breakpoint *number*'s hit condition and logpoint at *frame*."""
        extras = self._extras.get(number) if number is not None else None
        if extras is None:
            return True
        extras.hits += 1
        if extras.hit_test is not None and not extras.hit_test(extras.hits):
            return False
        if extras.log_message is not None:
            log(_interpolate(extras.log_message, frame) + "\n")
            return False
        return True


def _interpolate(template: str, frame: types.FrameType) -> str:
    def value(match: re.Match[str]) -> str:
        try:
            return str(eval(match.group(1), frame.f_globals, frame.f_locals))
        except Exception as exc:
            return f"<{type(exc).__name__}: {exc}>"

    return _INTERPOLATION.sub(value, template)


__all__ = ["BreakpointBook"]
