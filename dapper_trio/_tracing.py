"""Tracing backends: what the interpreter is told to report, and when.

Theory of operation
===================

The problem.  A debugger with breakpoints set somewhere the program never
goes should cost nothing, and one that is stepping should see every line of
the task it follows.  ``sys.settrace`` makes the interpreter call a Python
function on every function call of every frame for as long as it is
installed: a breakpoint anywhere costs 5-15x on call-heavy code (stdlib pdb,
pdbpp and debugpy on 3.11 all sit there).

Things that don't work.  A global trace function that returns None for
frames without breakpoints still pays one Python call per function call (the
"settrace floor", 4-5x).  Setting ``f_trace`` on frames without a global
trace function does nothing: CPython consults ``f_trace`` only while a
global one is installed in that thread.

The design.  The engine (``_engine.TaskAwareBdb``) makes every stop decision
and never talks to the interpreter itself: after each stop, and whenever its
stop information changes, it asks its backend to *arm* one of three modes:

* ``step(debugger, frame)`` -- fine-grained events, for as long as a
  step/next/return/until (or a Ctrl-C pause) is in progress;
* ``run(debugger)`` -- breakpoints only: the program runs at full speed
  except where a breakpoint is;
* ``stop(debugger)`` -- nothing (quitting).

Two backends implement them:

* ``SettraceTracer`` (every Python; the default on 3.10/3.11): steps use
  ``sys.settrace``; breakpoints use ``_instrument.CodeInstrumenter``, which
  compiles a hook call into instrumented copies of the functions holding a
  breakpoint line, so that no trace function runs at all while the program
  just runs (see that module).  Frames already running old code when a
  breakpoint is set get ``f_trace`` and a no-op global trace function, only
  for as long as they live.
* ``MonitoringTracer`` (3.12+, the default there; ``_monitoring``): LINE
  events only on code objects holding a breakpoint, call/return/resume events
  only during a step and only for what the step needs.

``DAPPER_TRIO_TRACER=settrace|monitoring`` chooses one; the test suite runs
on 3.12 with each.

Known holes.  ``sys.settrace`` is per thread: with the settrace backend a
thread already running old code when a breakpoint is set in it does not see
that breakpoint until it calls the function again (new calls run the
instrumented code).
"""

from __future__ import annotations

import bdb
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from . import _breakpoints, _frames, _instrument

if TYPE_CHECKING:
    from ._engine import TaskAwareBdb

#: Environment variable choosing the backend.
TRACER_ENV = "DAPPER_TRIO_TRACER"


class Tracer(Protocol):
    """What a tracing backend does for the engine (see the module comment)."""

    name: str

    def step(self, debugger: TaskAwareBdb, frame: types.FrameType | None) -> None: ...

    def run(self, debugger: TaskAwareBdb) -> None: ...

    def stop(self, debugger: TaskAwareBdb) -> None: ...

    def breakpoints_changed(self, debugger: TaskAwareBdb) -> None: ...

    def compile_module(self, source: str | bytes, filename: str) -> types.CodeType: ...


# -- which debugger a breakpoint reached in some thread belongs to -------------

_local = threading.local()

#: Makes the debugger of a thread that reaches a breakpoint before it has
#: one (set by the debug session: its per-thread debuggers share breakpoints).
debugger_factory: Callable[[], TaskAwareBdb] | None = None


def register(debugger: TaskAwareBdb) -> None:
    """*debugger* is the one of the calling thread (it was just armed)."""
    _local.debugger = debugger


def debugger_of_this_thread() -> TaskAwareBdb | None:
    """The calling thread's debugger: the last one armed here, or a new one."""
    debugger: TaskAwareBdb | None = getattr(_local, "debugger", None)
    if debugger is None and debugger_factory is not None:
        debugger = debugger_factory()
        _local.debugger = debugger
    return debugger


#: (id of code, line) -> the code object (keeping that id unique), the one
#: conditional breakpoint there, its condition's text and compiled code; or
#: None where the full rules must run.  Cleared whenever breakpoints are set
#: or cleared (``forget_conditions``).
_Lone = tuple[types.CodeType, bdb.Breakpoint, str, types.CodeType]
_conditions: dict[tuple[int, int], _Lone | None] = {}


def forget_conditions() -> None:
    """Breakpoints changed: look conditions up again."""
    _conditions.clear()


def _lone_condition(debugger: TaskAwareBdb, frame: types.FrameType) -> _Lone | None:
    key = (debugger.canonic(frame.f_code.co_filename), frame.f_lineno)
    found = bdb.Breakpoint.bplist.get(key, ())
    if len(found) != 1:
        return None
    bp = found[0]
    if not bp.cond or bp.funcname or bp.temporary:
        return None
    compiled = _breakpoints.condition_code(bp.cond)
    return None if compiled is None else (frame.f_code, bp, bp.cond, compiled)


def hit(frame: types.FrameType, line: int, line_event: bool = False) -> None:
    """A breakpoint line was reached outside any trace function.

    The common case of a conditional breakpoint on a hot line whose
    condition is false is decided here, before the engine's full rules
    (bdb's ``effective``), which then decide every other case.
    """
    key = (id(frame.f_code), frame.f_lineno)
    try:
        lone = _conditions[key]
    except KeyError:
        debugger = debugger_of_this_thread()
        if debugger is None:
            return
        lone = _conditions[key] = _lone_condition(debugger, frame)
    if lone is not None:
        _, bp, text, compiled = lone
        if bp.enabled and bp.cond is text and not bp.ignore:
            try:
                value = eval(compiled, frame.f_globals, frame.f_locals)
            except Exception:
                value = True  # bdb: a condition that raises stops
            if not value:
                bp.hits += 1
                return
    debugger = debugger_of_this_thread()
    if debugger is not None:
        debugger.hit_breakpoint(frame, line_event=line_event)


_instrument.handler = hit


#: A thread, and how to run a function there soon.
ProgramThread = tuple[int, Callable[[Callable[[], None]], object]]
#: The thread running the program's trio loop (the session sets it while a
#: trio run is on), or the program's main thread outside trio where the
#: session can reach it (``DebugSession.outside_trio``).
program_thread: ProgramThread | None = None


class _LegacyOnly:
    """The global trace function while only frames already running old code
    need tracing (they have ``f_trace``): every new frame runs untraced, and
    once those frames are gone it removes itself (checked every
    ``CHECK_EVERY`` calls, cheaply)."""

    CHECK_EVERY = 20_000

    def __init__(self, tracer: SettraceTracer, debugger: TaskAwareBdb) -> None:
        self._tracer = tracer
        self._debugger = debugger
        self._calls = 0

    def __call__(self, frame: types.FrameType, event: str, arg: object) -> None:
        self._calls += 1
        if self._calls >= self.CHECK_EVERY:
            self._calls = 0
            if not self._tracer.instrumenter.legacy_frames_alive(self._debugger):
                sys.settrace(None)


class SettraceTracer:
    """Steps with ``sys.settrace``; breakpoints compiled into the code."""

    name = "settrace"

    def __init__(self) -> None:
        from ._instrument import CodeInstrumenter

        self.instrumenter = CodeInstrumenter()
        self._local = threading.local()

    def step(self, debugger: TaskAwareBdb, frame: types.FrameType | None) -> None:
        register(debugger)
        debugger._settrace_stepping = True
        node: types.FrameType | None = frame if frame is not None else sys._getframe(2)
        debugger._ensure_botframe(node)
        while node is not None:
            if not _frames.is_hidden_frame(node):
                node.f_trace = debugger.trace_dispatch
            node = node.f_back
        # A frame to next/return in may be a suspended coroutine of another
        # task (``task ID`` then ``next``): it gets its trace function now.
        for target in (debugger.stopframe, debugger.returnframe):
            if target is not None and not _frames.is_hidden_frame(target):
                target.f_trace = debugger.trace_dispatch
        sys.settrace(debugger.trace_dispatch)

    def run(self, debugger: TaskAwareBdb) -> None:
        register(debugger)
        debugger._settrace_stepping = False
        self.instrumenter.sync(debugger)
        fallback = self.instrumenter.fallback_reasons()
        debugger._trace_only = frozenset(fallback)
        legacy = self.instrumenter.legacy_frames_alive(debugger)
        # Frames of this thread still traced from a step are left alone by
        # the trace function from now on, except those that must be.
        node: types.FrameType | None = sys._getframe(1)
        while node is not None:
            if (
                getattr(node.f_trace, "__self__", None) is debugger
                and node not in debugger._legacy_frames
            ):
                node.f_trace = None
            node = node.f_back
        if fallback:
            # Breakpoints in code that could not be instrumented: the
            # engine's trace function, whose fast path skips other files.
            sys.settrace(debugger.trace_dispatch)
        elif legacy:
            sys.settrace(_LegacyOnly(self, debugger))
        else:
            sys.settrace(None)

    def stop(self, debugger: TaskAwareBdb) -> None:
        debugger._settrace_stepping = False
        sys.settrace(None)

    def breakpoints_changed(self, debugger: TaskAwareBdb) -> None:
        self.instrumenter.sync(debugger)
        target = program_thread
        if (
            debugger._legacy_frames
            and target is not None
            and target[0] != threading.get_ident()
        ):
            # Set from another thread (an editor's request) while coroutines
            # of the trio thread are suspended in old code: trace them there
            # (sys.settrace only reaches the calling thread).
            try:
                target[1](lambda: self._trace_legacy_here(debugger))
            except RuntimeError:  # trio.RunFinishedError: the run ended
                pass

    def _trace_legacy_here(self, setter: TaskAwareBdb) -> None:
        mine = debugger_of_this_thread() or setter
        if mine is not setter:
            for frame in setter._legacy_frames:
                frame.f_trace = mine.trace_dispatch
            mine._legacy_frames |= setter._legacy_frames
            setter._legacy_frames.clear()
        if sys.gettrace() is None and self.instrumenter.legacy_frames_alive(mine):
            sys.settrace(_LegacyOnly(self, mine))

    def compile_module(self, source: str | bytes, filename: str) -> types.CodeType:
        return self.instrumenter.compile_module(source, filename)


_tracer: Tracer | None = None
_tracer_lock = threading.Lock()


def current_tracer() -> Tracer:
    """This process's backend, chosen on first use (``select_tracer``)."""
    global _tracer
    tracer = _tracer
    if tracer is None:
        with _tracer_lock:
            if _tracer is None:
                _tracer = select_tracer()
            tracer = _tracer
    return tracer


def select_tracer() -> Tracer:
    """The backend for this process (``DAPPER_TRIO_TRACER`` or the default)."""
    wanted = os.environ.get(TRACER_ENV, "").strip().lower()
    monitoring_possible = sys.version_info >= (3, 12)
    if wanted not in ("", "settrace", "monitoring"):
        raise ValueError(
            f"{TRACER_ENV}={wanted!r}: expected 'settrace' or 'monitoring'"
        )
    if wanted == "monitoring" and not monitoring_possible:
        raise ValueError(f"{TRACER_ENV}=monitoring needs Python 3.12 or newer")
    if wanted == "settrace" or not monitoring_possible:
        return SettraceTracer()
    from ._monitoring import MonitoringTracer, MonitoringUnavailable

    try:
        return MonitoringTracer()
    except MonitoringUnavailable as exc:
        print(f"[dapper-trio] {exc}; using sys.settrace", file=sys.stderr)
        return SettraceTracer()
