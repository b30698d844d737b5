"""Exception breakpoints: stopping where an exception is raised or escapes.

Theory of operation
===================

The problem.  DAP's exception filters ask for stops the engine does not
make on its own: ``raised`` (where an exception is raised in the user's
code) and ``userUnhandled`` (where one escapes the user's code into trio --
a task's exception on its way to the nursery -- or into another library
that will not hand it back).  ``uncaught`` (it escapes the program) is the
post-mortem, which the engine already makes.  Neither may cost anything
while the filter is off, and a trio program raises ``Cancelled`` and other
exceptions inside trio all the time: none of those is the user's business.

Things that don't work.
* Asking the engine's tracer for 'exception' events: it traces nothing
  while the program runs (breakpoints are compiled into the code, or
  ``sys.monitoring`` LINE events), by design.
* A second ``sys.settrace`` function of our own: there is one per thread,
  and the engine's tracer installs and removes its own at every stop.
* Stopping at every frame an exception passes through: a raise three calls
  deep would stop three times.  Only the first frame of the user's code
  counts: the one where it was raised, or where it came back from library
  code.
* Judging "escapes" by the caller frame being hidden: an exception thrown
  into a ``@contextmanager`` generator leaves it into ``contextlib``, which
  gives it straight back to the user's ``with`` block.  Only a caller in
  trio (or outcome, which trio calls functions through), in ``threading``
  (the thread's end) or in dapper-trio's launcher (the program's end) means
  nobody in the user's code will see it again.

The design.  ``ExceptionWatch`` is told the filters and reports
``(frame, exception, mode)`` to the session, in the program's thread, where
the session stops as for ``breakpoint()``.  Two ways of seeing exceptions:
* on Python 3.12+, ``sys.monitoring`` with a tool id of its own (not the
  engine's): RAISE for ``raised`` and PY_UNWIND for ``userUnhandled``,
  switched on only while a filter asks for them;
* before 3.12, a trace function: the debugger's tracer is wrapped
  (``wrap_tracer``) so that whenever the engine lets the program run, a
  global trace function goes in that hands the user's frames a local one
  for 'exception' and 'return' events only (``f_trace_lines`` off), and
  passes every frame on to whatever the engine's tracer had installed.
  Unwinding is told from a plain return by the opcode at ``f_lasti``.
``trio.Cancelled``, ``GeneratorExit``, ``StopIteration``,
``StopAsyncIteration``, ``SystemExit`` (``sys.exit()``) and the debugger's
own ``DebuggerQuit`` never stop.

Known holes.  Before 3.12, only the threads that run the program's trio
loop (or its main thread) see these filters, a filter switched on while a
non-trio program runs takes effect at its next stop, and a step in progress
hides exceptions of other tasks.  An exception escaping a library callback
(``sorted(key=...)``) into a library that swallows it is not reported as
``userUnhandled``.
"""

from __future__ import annotations

import dis
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _frames, _tasks, _trio_import
from ._engine import DebuggerQuit
from ._repl import leaf_exceptions

if TYPE_CHECKING:
    from ._engine import TaskAwareBdb
    from ._tracing import Tracer

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

#: DAP ``breakMode`` of a stop for each filter.
BREAK_MODES = {
    "raised": "always",
    "uncaught": "unhandled",
    "userUnhandled": "userUnhandled",
}

#: (trio's ``Cancelled`` is one too: see ``_never_stops``.)
_NEVER_STOP = (
    GeneratorExit,
    StopIteration,
    StopAsyncIteration,
    SystemExit,
    DebuggerQuit,
)


def _never_stops(exc: BaseException) -> bool:
    """True for an exception no filter stops at."""
    if isinstance(exc, _NEVER_STOP):
        return True
    # Imported by the program, not here: a program without trio has none.
    trio = _trio_import.loaded()
    return trio is not None and isinstance(exc, trio.Cancelled)


#: Callers that mean "the user's code will not see this exception again".
_ESCAPE_MODULES = frozenset({"trio", "outcome", "threading", "dapper_trio"})

#: (frame, exception, its traceback so far, filter) -> None
Report = Callable[
    [types.FrameType, BaseException, types.TracebackType | None, str], None
]


def is_user_frame(frame: types.FrameType) -> bool:
    """True for the program's own code (not trio's, not a library's)."""
    return not _frames.is_hidden_frame(frame) and not _frames.is_library_code(
        frame.f_code
    )


def _module(frame: types.FrameType) -> str:
    name = frame.f_globals.get("__name__")
    return name.partition(".")[0] if isinstance(name, str) else ""


def raised_here(
    frame: types.FrameType, exc: BaseException, tb: types.TracebackType | None
) -> bool:
    """True if *exc* entered the user's code at *frame*: raised there, or
    come back from library code called there.  *tb* is its traceback so far."""
    if _never_stops(exc) or not is_user_frame(frame):
        return False
    while tb is not None and tb.tb_frame is not frame:
        tb = tb.tb_next
    if tb is None:
        return True
    tb = tb.tb_next
    while tb is not None:
        if is_user_frame(tb.tb_frame):
            return False  # it was the user's code's already, deeper down
        tb = tb.tb_next
    return True


def escapes_to(frame: types.FrameType, exc: BaseException) -> str | None:
    """Where *exc* goes, leaving *frame*, if that leaves the user's code for
    good: ``"trio"``, ``"outcome"``, ``"threading"`` (the thread's end),
    ``"dapper_trio"`` (the program's end) or ``""`` (no caller); else None."""
    if _never_stops(exc) or not is_user_frame(frame):
        return None
    caller = frame.f_back
    while caller is not None and _frames.is_library_code(caller.f_code):
        if _frames.is_hidden_frame(caller):
            break
        caller = caller.f_back  # a library between us and trio: look past it
    if caller is None:
        return ""
    if is_user_frame(caller):
        return None
    module = _module(caller)
    return module if module in _ESCAPE_MODULES else None


class ExceptionWatch:
    """Reports raised and escaping exceptions of the program, per the filters.

    *report* is called in the thread where it happened, with the frame, the
    exception and the filter (``"raised"`` or ``"userUnhandled"``).
    *ignored_thread* says which threads are not the program's (the agent's,
    the adapter's in-process).
    """

    def __init__(self, report: Report, ignored_thread: Callable[[], bool]) -> None:
        self._report = report
        self._ignored_thread = ignored_thread
        self.raised = False
        self.unhandled = False
        self.uncaught = False
        self._monitoring: _MonitoringWatch | None = None
        if sys.version_info >= (3, 12):
            self._monitoring = _MonitoringWatch.create(self)

    @property
    def active(self) -> bool:
        return self.raised or self.unhandled

    @property
    def uses_settrace(self) -> bool:
        return self._monitoring is None

    def set_filters(self, filters: frozenset[str]) -> None:
        """Follow *filters* (``raised``, ``userUnhandled``; others are ignored).

        With the settrace way, call it in the program's thread to start
        watching at once (else it starts when the engine next lets the
        program run).
        """
        self.raised = "raised" in filters
        self.unhandled = "userUnhandled" in filters
        self.uncaught = "uncaught" in filters
        if self._monitoring is not None:
            self._monitoring.apply()
        elif self.active and sys.gettrace() is None:
            sys.settrace(self._global_trace(None))

    def close(self) -> None:
        """Stop watching for good (the session ended)."""
        self.raised = self.unhandled = False
        if self._monitoring is not None:
            self._monitoring.close()
            self._monitoring = None

    # -- what was seen -----------------------------------------------------

    def on_raise(
        self,
        frame: types.FrameType,
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        if self.raised and not self._ignored_thread() and raised_here(frame, exc, tb):
            self._report(frame, exc, tb, "raised")

    def on_unwind(
        self,
        frame: types.FrameType,
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        if not self.unhandled or self._ignored_thread():
            return
        target = escapes_to(frame, exc)
        if target is None or (target == "dapper_trio" and self.uncaught):
            return  # (the program's end: the uncaught filter's stop is next)
        self._report(frame, exc, tb, "userUnhandled")

    # -- the settrace way (Python < 3.12) ------------------------------------

    def wrap_tracer(self, tracer: Tracer) -> Tracer:
        """*tracer*, adding this watch's trace function whenever it lets the
        program run (the settrace way; *tracer* itself otherwise)."""
        if self._monitoring is not None:
            return tracer
        return _WatchingTracer(tracer, self)

    def _global_trace(self, inner: Any) -> Callable[..., Any]:
        watch = self

        def global_trace(frame: types.FrameType, event: str, arg: Any) -> Any:
            local = inner(frame, event, arg) if inner is not None else None
            if not watch.active or not is_user_frame(frame):
                return local
            if local is None:
                frame.f_trace_lines = False
                return watch._local_trace
            return watch._chained(local)

        global_trace.__dapper_trio_watch__ = True  # type: ignore[attr-defined]
        return global_trace

    def _local_trace(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        self._see(frame, event, arg)
        if event == "return":
            # A suspended coroutine may be resumed under the engine's step,
            # which needs its line events.
            frame.f_trace_lines = True
        return frame.f_trace if frame.f_trace is not None else self._local_trace

    def _chained(self, inner: Any) -> Callable[..., Any]:
        def local(frame: types.FrameType, event: str, arg: Any) -> Any:
            self._see(frame, event, arg)
            nonlocal inner
            if inner is not None:
                inner = inner(frame, event, arg)
            return local

        return local

    def _see(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "exception":
            _last_exception[frame] = (arg[1], arg[2])
            self.on_raise(frame, arg[1], arg[2])
        elif event == "return":
            seen = _last_exception.pop(frame, None)
            if seen is not None and arg is None and _unwinding(frame):
                self.on_unwind(frame, *seen)


#: The last exception seen in each frame (and its traceback), until the frame
#: returns.
_last_exception: dict[
    types.FrameType, tuple[BaseException, types.TracebackType | None]
] = {}

_NORMAL_EXITS = frozenset(
    code
    for code in (
        dis.opmap.get("RETURN_VALUE"),
        dis.opmap.get("RETURN_CONST"),
        dis.opmap.get("YIELD_VALUE"),
    )
    if code is not None
)


def _unwinding(frame: types.FrameType) -> bool:
    """True if a 'return' event of *frame* is an exception leaving it."""
    code = frame.f_code.co_code
    lasti = frame.f_lasti
    return not (0 <= lasti < len(code) and code[lasti] in _NORMAL_EXITS)


class _WatchingTracer:
    """The engine's tracer, with the watch's trace function while it runs."""

    def __init__(self, tracer: Tracer, watch: ExceptionWatch) -> None:
        self._tracer = tracer
        self._watch = watch
        self.name = tracer.name

    def step(self, debugger: TaskAwareBdb, frame: types.FrameType | None) -> None:
        if frame is None:
            frame = sys._getframe(2)  # as the tracer itself would pick
        self._tracer.step(debugger, frame)
        node: types.FrameType | None = frame
        while node is not None:  # the watch may have switched lines off
            node.f_trace_lines = True
            node = node.f_back

    def run(self, debugger: TaskAwareBdb) -> None:
        self._tracer.run(debugger)
        if self._watch.active:
            sys.settrace(self._watch._global_trace(sys.gettrace()))

    def stop(self, debugger: TaskAwareBdb) -> None:
        self._tracer.stop(debugger)

    def breakpoints_changed(self, debugger: TaskAwareBdb) -> None:
        self._tracer.breakpoints_changed(debugger)

    def compile_module(self, source: str | bytes, filename: str) -> types.CodeType:
        return self._tracer.compile_module(source, filename)


# -- the sys.monitoring way (Python 3.12+) -------------------------------------

_TOOL_NAME = "dapper-trio exceptions"
_TOOL_IDS = (
    4,
    3,
)  # free by convention: 0 debugger, 1 coverage, 2 profiler, 5 optimizer


class _MonitoringWatch:
    """RAISE and PY_UNWIND events, on a tool id of our own, only when asked."""

    def __init__(self, watch: ExceptionWatch, tool: int) -> None:
        monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 - 3.12+ only
        self._monitoring = monitoring
        self._watch = watch
        self._tool = tool
        events = monitoring.events
        self._raise_event = events.RAISE
        self._unwind_event = events.PY_UNWIND
        monitoring.register_callback(tool, events.RAISE, self._on_raise)
        monitoring.register_callback(tool, events.PY_UNWIND, self._on_unwind)
        self._events = 0

    @classmethod
    def create(cls, watch: ExceptionWatch) -> _MonitoringWatch | None:
        monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 - 3.12+ only
        for tool in _TOOL_IDS:
            try:
                monitoring.use_tool_id(tool, _TOOL_NAME)
            except ValueError:
                continue  # taken
            return cls(watch, tool)
        return None

    def apply(self) -> None:
        wanted = (self._raise_event if self._watch.raised else 0) | (
            self._unwind_event if self._watch.unhandled else 0
        )
        if wanted != self._events:
            self._monitoring.set_events(self._tool, wanted)
            self._events = wanted

    def close(self) -> None:
        monitoring = self._monitoring
        monitoring.set_events(self._tool, 0)
        monitoring.register_callback(self._tool, self._raise_event, None)
        monitoring.register_callback(self._tool, self._unwind_event, None)
        monitoring.free_tool_id(self._tool)

    def _on_raise(self, code: types.CodeType, offset: int, exc: BaseException) -> None:
        self._watch.on_raise(sys._getframe(1), exc, exc.__traceback__)

    def _on_unwind(self, code: types.CodeType, offset: int, exc: BaseException) -> None:
        self._watch.on_unwind(sys._getframe(1), exc, exc.__traceback__)


# -- exceptionInfo ------------------------------------------------------------------


def _type_names(exc: BaseException) -> tuple[str, str]:
    kind = type(exc)
    module = kind.__module__
    full = (
        kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    )
    return kind.__name__, full


def _one_line(exc: BaseException) -> str:
    import traceback

    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _stack_text(exc: BaseException, tb: types.TracebackType | None) -> str:
    import traceback

    return "".join(traceback.format_tb(tb)) if tb is not None else ""


def _details(
    exc: BaseException, tb: types.TracebackType | None, where: str = ""
) -> dict[str, Any]:
    name, full = _type_names(exc)
    details: dict[str, Any] = {
        "message": str(exc) + where,
        "typeName": name,
        "fullTypeName": full,
        "stackTrace": _stack_text(exc, tb),
    }
    return details


def _task_of(tb: types.TracebackType | None) -> str:
    origin = _tasks.REGISTRY.task_for_traceback(tb)
    return f"task {origin[1]!r} (t{origin[0]})" if origin else "task unknown"


def leaves_with_tasks(
    exc: BaseException,
) -> Iterator[tuple[BaseException, types.TracebackType | None, str]]:
    """Each leaf of *exc* (itself if it is no group), its traceback and task."""
    for leaf, tb in leaf_exceptions(exc):
        yield leaf, tb, _task_of(tb)


def exception_info(
    exc: BaseException, mode: str, tb: types.TracebackType | None = None
) -> dict[str, Any]:
    """The body of an ``exceptionInfo`` response for a stop on *exc*.

    *tb* is its traceback so far, if it is still on its way (``raised``).
    For an exception group, ``description`` lists every leaf with the task
    that raised it, and ``details.innerException`` holds one entry per leaf.
    """
    _, full = _type_names(exc)
    details = _details(exc, tb or exc.__traceback__)
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(leaves_with_tasks(exc))
        lines = [_one_line(exc)]
        lines += [f"  {_one_line(leaf)}  [{task}]" for leaf, _, task in leaves]
        details["innerException"] = [
            _details(leaf, tb, f"  [{task}]") for leaf, tb, task in leaves
        ]
        description = "\n".join(lines)
    else:
        description = _one_line(exc)
        if _tasks.REGISTRY.task_for_traceback(tb or exc.__traceback__) is not None:
            description += f"  [{_task_of(tb or exc.__traceback__)}]"
    return {
        "exceptionId": full,
        "description": description,
        "breakMode": mode,
        "details": details,
    }


def on_this_thread(idents: set[int]) -> Callable[[], bool]:
    """A predicate: is the calling thread one of *idents* (a live set)?"""

    def ignored() -> bool:
        return threading.get_ident() in idents

    return ignored
