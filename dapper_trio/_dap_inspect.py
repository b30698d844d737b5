"""What a DAP client may ask about a stopped program: stacks, scopes, values.

Runs in the stopped thread (``_dap_debuggee`` hands each request there), so
frames and trio tasks are read where they are coherent.  ``Inspector``
answers stackTrace, scopes, variables, evaluate, setVariable, exceptionInfo
and completions for one ``Stop``; the frame ids and ``variablesReference``
numbers it hands out mean something only until the program resumes
(``forget``).  A frame of a task has a Trio scope (``_dap_trio_scope``);
locals set with ``setVariable`` or a ``repl`` statement are written back into
the frame (``set_local``), so the program goes on with them.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping
from typing import Any

from . import _dap_completions, _dap_exceptions, _dap_sources, _frames, _tasks
from ._dap_variables import NotAssignable, VariableTable, plain_children
from ._repl import TrioPdb

#: The DAP thread id of the program's main thread outside trio (trio tasks
#: are 1, 2...).
MAIN_THREAD_ID = 1_000_000_000


class CommandError(Exception):
    """A request failed; its text is the error response's message."""


@dataclasses.dataclass
class Stop:
    """One stop of the program, as the DAP requests see it."""

    debugger: TrioPdb
    frame: types.FrameType | None
    thread_id: int
    thread_name: str
    stack: list[tuple[types.FrameType, int]]  # outermost first
    #: The exception shown (a group's leaf whose traceback the stack is).
    exception: BaseException | None
    #: The exception the stop is about (the group itself, for a group).
    exception_root: BaseException | None = None
    #: DAP's ``breakMode``: "always", "unhandled" or "userUnhandled".
    break_mode: str = "unhandled"
    #: The exception's traceback so far (it may still be on its way).
    traceback: types.TracebackType | None = None


class Inspector:
    """Answers the inspection requests of the program's stops."""

    def __init__(self, sources: _dap_sources.SourceTable) -> None:
        self.sources = sources
        self.table = VariableTable()
        self._frame_ids: dict[int, tuple[types.FrameType, int, int]] = {}
        self._next_frame_id = 1

    def forget(self) -> None:
        """The program resumes: frame ids and variable references go."""
        self.table.clear()
        self._frame_ids.clear()

    def _stack_of(
        self, stop: Stop, thread_id: int
    ) -> list[tuple[types.FrameType, int]]:
        if thread_id == stop.thread_id:
            return stop.stack
        task = (
            _tasks.REGISTRY.find(str(thread_id)) if thread_id < MAIN_THREAD_ID else None
        )
        if task is None:
            raise CommandError(f"no thread with id {thread_id}")
        stack = _frames.suspended_task_stack(task)
        return [
            entry for entry in stack if not _frames.is_hidden_frame(entry[0])
        ] or stack

    def stack_trace(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        thread_id = arguments["threadId"]
        stack = self._stack_of(stop, thread_id)
        innermost_first = list(reversed(stack))
        start = arguments.get("startFrame") or 0
        levels = arguments.get("levels") or 0
        chosen = innermost_first[start : start + levels if levels > 0 else None]
        frames = []
        for frame, lineno in chosen:
            frame_id = self._next_frame_id
            self._next_frame_id += 1
            self._frame_ids[frame_id] = (frame, lineno, thread_id)
            code = frame.f_code
            frames.append(
                {
                    "id": frame_id,
                    "name": getattr(code, "co_qualname", code.co_name),
                    "source": _dap_sources.describe(code.co_filename, self.sources),
                    "line": lineno,
                    "column": 1,
                }
            )
        return {"stackFrames": frames, "totalFrames": len(innermost_first)}

    def _frame(self, frame_id: Any) -> tuple[types.FrameType, int, int]:
        try:
            return self._frame_ids[frame_id]
        except (KeyError, TypeError):
            raise CommandError(
                f"frameId {frame_id!r} is not valid now (ask stackTrace again)"
            ) from None

    def scopes(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        frame, _, thread_id = self._frame(arguments["frameId"])

        def evaluate(expression: str) -> Any:
            return eval(expression, frame.f_globals, _locals(frame))

        def assign_local(name: str, value: Any) -> None:
            set_local(frame, name, value)

        scopes = [
            {
                "name": "Locals",
                "presentationHint": "locals",
                "variablesReference": self.table.add_mapping(
                    _locals(frame), assign=assign_local, evaluate=evaluate
                ),
                "expensive": False,
            },
            {
                "name": "Globals",
                "variablesReference": self.table.add_mapping(
                    {
                        key: value
                        for key, value in frame.f_globals.items()
                        if key != "__builtins__"
                    },
                    assign=frame.f_globals.__setitem__,
                    evaluate=evaluate,
                ),
                "expensive": False,
            },
        ]
        task = (
            _tasks.REGISTRY.find(str(thread_id)) if thread_id < MAIN_THREAD_ID else None
        )
        if task is not None:
            scopes.append(
                {
                    "name": "Trio",
                    "variablesReference": self.table.add(
                        lambda start, count: plain_children(_trio_view(task))(
                            start, count
                        )
                    ),
                    "expensive": False,
                }
            )
        return {"scopes": scopes}

    def variables(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        reference = arguments["variablesReference"]
        start = arguments.get("start") or 0
        count = arguments.get("count") or None
        try:
            found = self.table.variables(reference, start, count)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        return {"variables": found}

    def set_variable(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        try:
            variable = self.table.assign(
                arguments["variablesReference"], arguments["name"], arguments["value"]
            )
        except (LookupError, NotAssignable) as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            raise CommandError(one_line(exc)) from None
        return {
            key: variable[key]
            for key in (
                "value",
                "type",
                "variablesReference",
                "namedVariables",
                "indexedVariables",
            )
            if key in variable
        }

    def _namespaces(
        self, stop: Stop, frame_id: Any
    ) -> tuple[types.FrameType | None, dict[str, Any], dict[str, Any]]:
        frame = self._frame(frame_id)[0] if frame_id is not None else stop.frame
        if frame is None:
            names = vars(sys.modules["__main__"])
            return None, names, names
        return frame, frame.f_globals, _locals(frame)

    def evaluate(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        expression = arguments["expression"]
        frame, global_names, local_names = self._namespaces(
            stop, arguments.get("frameId")
        )
        try:
            code = compile(expression, "<evaluate>", "eval")
        except SyntaxError:
            if arguments.get("context") != "repl":
                raise
            code = None
        try:
            if code is None:
                before = dict(local_names)
                exec(
                    compile(expression, "<evaluate>", "exec"), global_names, local_names
                )
                if frame is not None and local_names is not global_names:
                    for name, value in local_names.items():
                        if name not in before or before[name] is not value:
                            set_local(frame, name, value)
                return {"result": "", "variablesReference": 0}
            value = eval(code, global_names, local_names)
        except Exception as exc:
            raise CommandError(one_line(exc)) from None

        def evaluate(text: str) -> Any:
            return eval(text, global_names, local_names)

        described = self.table.describe("result", value, expression, evaluate=evaluate)
        return {
            "result": described["value"],
            "type": described["type"],
            "variablesReference": described["variablesReference"],
            **{
                key: described[key]
                for key in ("indexedVariables", "namedVariables")
                if key in described
            },
        }

    def exception_info(
        self, stop: Stop, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        thread_id = arguments["threadId"]
        if thread_id != stop.thread_id or stop.exception_root is None:
            raise CommandError(f"thread {thread_id} is not stopped on an exception")
        return _dap_exceptions.exception_info(
            stop.exception_root, stop.break_mode, stop.traceback
        )

    def completions(self, stop: Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        _, global_names, local_names = self._namespaces(stop, arguments.get("frameId"))
        namespace = {**global_names, **local_names}
        return {
            "targets": _dap_completions.complete(
                arguments["text"], arguments["column"], namespace
            )
        }


def one_line(exc: BaseException) -> str:
    import traceback

    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _locals(frame: types.FrameType) -> dict[str, Any]:
    try:
        return dict(frame.f_locals)
    except Exception:  # pragma: no cover - exotic frames
        return {}


def set_local(frame: types.FrameType, name: str, value: Any) -> None:
    """Set local variable *name* of *frame*, also in its fast locals.

    From 3.13, ``f_locals`` writes through (PEP 667).  Before, it is a
    snapshot: write it, then copy it back into the frame as a trace function
    returning would.
    """
    frame.f_locals[name] = value
    if sys.version_info < (3, 13):
        import ctypes  # here: a debuggee's start-up does not pay for it

        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def _trio_view(task: Any) -> list[tuple[str, object]]:
    """The Trio scope's entries for *task* (trio is imported: a task runs)."""
    from ._dap_trio_scope import trio_view

    return trio_view(task)


__all__ = [
    "MAIN_THREAD_ID",
    "Inspector",
    "Stop",
    "one_line",
    "set_local",
]
