"""What ``dapper-trio dap`` checks and answers before a program runs.

``initialize``'s capabilities, ``launch``'s arguments, and the breakpoints
of ``setBreakpoints``: plain functions with no trio, shared by the server
(``_dap_server``) and by the answers the adapter gives before it has
imported trio (``_dap_early``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

from . import _dap_lines
from ._dap_requests import Arguments, RequestError, json_type
from ._spawn import startup_variables

#: The filters of ``setExceptionBreakpoints``, as ``initialize`` lists them
#: (``_dap_exceptions`` implements them in the program).
FILTERS: list[dict[str, Any]] = [
    {
        "filter": "raised",
        "label": "Raised Exceptions",
        "description": "Stop where an exception is raised in your code "
        "(never for trio.Cancelled or sys.exit()).",
        "default": False,
    },
    {
        "filter": "uncaught",
        "label": "Uncaught Exceptions",
        "description": "Stop when an exception escapes the program.",
        "default": True,
    },
    {
        "filter": "userUnhandled",
        "label": "User Uncaught Exceptions",
        "description": "Stop where an exception escapes your code into trio "
        "(a task's exception, before its nursery sees it).",
        "default": False,
    },
]
KNOWN_FILTERS = frozenset(entry["filter"] for entry in FILTERS)

CAPABILITIES: dict[str, Any] = {
    "supportsConfigurationDoneRequest": True,
    "supportsFunctionBreakpoints": True,
    "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True,
    "supportsLogPoints": True,
    "supportsEvaluateForHovers": True,
    "supportsSetVariable": True,
    "supportsCompletionsRequest": True,
    "completionTriggerCharacters": ["."],
    "supportsExceptionInfoRequest": True,
    "supportsLoadedSourcesRequest": True,
    "supportsDelayedStackTraceLoading": True,
    "supportsTerminateRequest": True,
    "supportTerminateDebuggee": True,
    "supportsCancelRequest": True,
    "exceptionBreakpointFilters": FILTERS,
}
"""What ``initialize`` advertises: exactly what this adapter implements."""


# -- breakpoints ---------------------------------------------------------------


def _check_condition(spec: Mapping[str, Any]) -> str | None:
    """Why *spec*'s condition or hit condition cannot work (None if they can)."""
    condition = spec.get("condition")
    if condition:
        try:
            compile(condition, "<condition>", "eval")
        except SyntaxError as exc:
            return f"condition {condition!r} is not an expression: {exc.msg}"
    hit = spec.get("hitCondition")
    if hit:
        try:
            _dap_lines.parse_hit_condition(hit)
        except ValueError as exc:
            return str(exc)
    return None


def _spec_strings(
    command: str, entry: Mapping[str, Any], keys: tuple[str, ...]
) -> dict[str, Any]:
    spec = {key: entry[key] for key in keys if entry.get(key) is not None}
    for key, value in spec.items():
        if not isinstance(value, str):
            raise RequestError(
                f"{command}: {key!r} must be a string, not {json_type(value)}"
            )
    return spec


def check_breakpoints(
    path: str, requested: list[Any], first_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check ``setBreakpoints`` entries against *path*'s source.

    Returns (the response's Breakpoint objects, the specs to set in the
    debuggee).  A line without code, a condition that does not compile or a
    hit condition that does not parse makes that breakpoint unverified, with
    a message; it is not set.
    """
    try:
        lines: frozenset[int] | None = _dap_lines.file_code_lines(path)
        problem = ""
    except _dap_lines.SourceUnavailable as exc:
        lines, problem = None, str(exc)
    results: list[dict[str, Any]] = []
    specs: list[dict[str, Any]] = []
    for offset, entry in enumerate(requested):
        if not isinstance(entry, dict) or not isinstance(entry.get("line"), int):
            raise RequestError(
                "setBreakpoints: each breakpoint needs an integer 'line'"
            )
        line = entry["line"]
        result: dict[str, Any] = {
            "id": first_id + offset,
            "verified": False,
            "line": line,
            "source": {"path": path, "name": os.path.basename(path)},
        }
        results.append(result)
        spec = _spec_strings(
            "setBreakpoints", entry, ("condition", "hitCondition", "logMessage")
        )
        if lines is None:
            result["message"] = problem
            continue
        if line not in lines:
            result["message"] = f"line {line} of {os.path.basename(path)} holds no code"
            continue
        problem_here = _check_condition(spec)
        if problem_here is not None:
            result["message"] = problem_here
            continue
        result["verified"] = True
        specs.append({"line": line, "id": result["id"], **spec})
    return results, specs


def check_function_breakpoints(
    requested: list[dict[str, Any]], first_id: int
) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    """Check ``setFunctionBreakpoints`` entries (their names are looked up later).

    Returns (the response's Breakpoint objects, (index in it, spec) for each
    spec to look up and set).  A condition that does not compile or a hit
    condition that does not parse makes that breakpoint unverified.
    """
    results: list[dict[str, Any]] = []
    specs: list[tuple[int, dict[str, Any]]] = []
    for offset, entry in enumerate(requested):
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RequestError(
                "setFunctionBreakpoints: each breakpoint needs a non-empty 'name'"
            )
        spec = {
            "name": name,
            "id": first_id + offset,
            **_spec_strings(
                "setFunctionBreakpoints", entry, ("condition", "hitCondition")
            ),
        }
        result: dict[str, Any] = {"id": first_id + offset, "verified": False}
        results.append(result)
        problem = _check_condition(spec)
        if problem is not None:
            result["message"] = problem
            continue
        specs.append((offset, spec))
    return results, specs


def breakpoints_requested(arguments: Arguments) -> tuple[str, list[Any]]:
    """``setBreakpoints``'s source path (absolute, normalized) and entries."""
    source = arguments.mapping("source")
    path = source.get("path")
    if not isinstance(path, str) or not path:
        raise RequestError("setBreakpoints: 'source' needs a 'path' (a string)")
    requested = arguments.raw.get("breakpoints")
    if requested is None:
        requested = [{"line": line} for line in arguments.raw.get("lines") or []]
    if not isinstance(requested, list):
        raise RequestError("setBreakpoints: 'breakpoints' must be an array")
    path = os.path.normpath(path)
    if not os.path.isabs(path):
        raise RequestError(f"setBreakpoints: source path {path!r} is not absolute")
    return path, requested


def exception_filters(filters: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``setExceptionBreakpoints``: the filters to set, and the answer."""
    return [name for name in filters if name in KNOWN_FILTERS], {
        "breakpoints": [
            {"verified": True}
            if name in KNOWN_FILTERS
            else {"verified": False, "message": f"unknown filter {name!r}"}
            for name in filters
        ]
    }


# -- launch --------------------------------------------------------------------


class Launch:
    """What ``launch`` asked for, checked (see ``_dap_server.parse_launch``)."""

    def __init__(
        self,
        *,
        target: dict[str, Any],
        cwd: str,
        env: dict[str, str | None],
        stop_on_entry: bool,
        python: list[str] | None,
        in_process: bool,
        transport: Literal["unix", "tcp"],
    ) -> None:
        self.target = target
        self.cwd = cwd
        self.env = env
        self.stop_on_entry = stop_on_entry
        self.python = python or [sys.executable]
        self.default_python = python is None
        self.in_process = in_process
        self.transport = transport


def parse_launch(arguments: Arguments) -> Launch:
    """Check what ``launch`` asked for."""
    program = arguments.string("program")
    module = arguments.string("module")
    if (program is None) == (module is None):
        raise RequestError("launch: give exactly one of 'program' and 'module'")
    cwd = arguments.string("cwd") or os.getcwd()
    if not os.path.isdir(cwd):
        raise RequestError(f"launch: 'cwd' {cwd!r} is not a directory")
    cwd = os.path.abspath(cwd)
    if program is not None:
        path = os.path.join(cwd, program)
        if not os.path.isfile(path):
            raise RequestError(f"launch: program {program!r} does not exist (in {cwd})")
        target: dict[str, Any] = {"kind": "script", "name": os.path.abspath(path)}
    else:
        target = {"kind": "module", "name": module}
    target["args"] = arguments.strings("args")
    env = arguments.mapping("env")
    for key, value in env.items():
        if value is not None and not isinstance(value, str):
            raise RequestError(f"launch: env[{key!r}] must be a string or null")
    in_process = arguments.boolean("inProcess")
    transport = arguments.string("ipcTransport") or "unix"
    if transport not in ("unix", "tcp"):
        raise RequestError(
            f'launch: \'ipcTransport\' must be "unix" or "tcp", not {transport!r}'
        )
    python_value = arguments.raw.get("python")
    python: list[str] | None
    if python_value is None:
        python = None
    elif isinstance(python_value, str):
        python = [python_value]
    else:
        python = arguments.strings("python")
        if not python:
            raise RequestError("launch: 'python' must not be empty")
    if in_process and python is not None:
        raise RequestError(
            "launch: 'python' cannot be used with 'inProcess' (the program runs"
            " in the adapter's own interpreter)"
        )
    if in_process and "ipcTransport" in arguments.raw:
        raise RequestError(
            "launch: 'ipcTransport' cannot be used with 'inProcess' (there is no IPC)"
        )
    return Launch(
        target=target,
        cwd=cwd,
        env=env,
        stop_on_entry=arguments.boolean("stopOnEntry"),
        python=python,
        in_process=in_process,
        transport="tcp" if transport == "tcp" else "unix",
    )


def spare_fits(launch: Launch) -> bool:
    """Whether the spare debuggee can run *launch* as a fresh process would.

    Not if it names another interpreter, or if its ``env`` sets a variable
    read at the interpreter's start-up (``_spawn.startup_variables``).
    """
    return (
        launch.default_python
        and not launch.in_process
        and not startup_variables(launch.env)
    )


def launch_env(launch: Launch) -> dict[str, str]:
    """The environment a launched program runs with: the adapter's, with
    unbuffered output, and *launch*'s ``env`` on top (None unsets)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in launch.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


__all__ = [
    "CAPABILITIES",
    "FILTERS",
    "KNOWN_FILTERS",
    "Launch",
    "breakpoints_requested",
    "check_breakpoints",
    "check_function_breakpoints",
    "exception_filters",
    "launch_env",
    "parse_launch",
    "spare_fits",
]
