"""The ``sys.monitoring`` tracing backend (Python 3.12+).

Theory of operation
===================

The problem.  ``sys.settrace`` (which 3.12 itself implements on top of
``sys.monitoring``) turns on call events for every code object of the
program; a breakpoint in a file the program never runs still costs a Python
call per function call.

The design.  PEP 669 lets a tool ask for events per code object and switch
single locations off.  This backend asks for exactly what the engine's
current stop information needs (see ``_tracing`` for the three modes):

* breakpoints: LINE events, *locally*, on the code objects holding a
  breakpoint line (or starting on one: a function breakpoint).  Code objects
  are found when breakpoints change (the frames on every thread's stack) and,
  for code that starts, resumes (a suspended coroutine) or has an exception
  thrown in later, by PY_START/PY_RESUME/PY_THROW events that look at each
  code object once and switch themselves off for it (``DISABLE``; a
  breakpoint change switches them all on again).  A LINE event on a line without a
  breakpoint switches itself off too.  So a program whose breakpoints are
  somewhere else runs without a single callback once each code object has
  been seen.
* ``step``: every event, globally (the next line of any frame of the task
  may be the stop).
* ``next``/``until``/``return``: LINE, PY_RETURN, PY_YIELD and PY_RESUME
  locally on the one code object being stepped in, plus the global-only
  PY_UNWIND and RAISE (a frame left by an exception).  When that frame
  returns, the engine moves the step to its caller and the backend
  re-arms for ``step``.

Every event is turned into the settrace event the engine's ``dispatch_*``
methods expect (PY_START/PY_RESUME/PY_THROW -> 'call', PY_RETURN/PY_YIELD/
PY_UNWIND -> 'return', RAISE -> 'exception', LINE -> 'line'), so both
backends make the same decisions with the same code.  Events are global to
the process; each callback looks up the calling thread's stepping debugger
(``_steppers``) and serves breakpoints for every thread.

``DISABLE`` switches a location off until ``sys.monitoring.restart_events()``,
so nothing is disabled that a step in some thread could need: lines and
starts are disabled only while no thread steps (lines of trio's own modules
always may be: a step never stops there), and events are restarted whenever
breakpoints change or a step begins after something was disabled.

Known holes.  A ``for`` or ``while`` loop written on one line produces one
LINE event, not one per iteration (settrace reports a line event at every
backward jump).  A breakpoint on a generator expression's line stops in the
generator's frame too, as with pdb; the settrace backend stops there once.
The tool id (``sys.monitoring.DEBUGGER_ID``) may be held by another
debugger (debugpy on 3.12+): then ``select_tracer`` falls back to settrace.
"""

from __future__ import annotations

import atexit
import bdb
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _frames, _instrument, _tracing

if TYPE_CHECKING:
    from ._engine import TaskAwareBdb

monitoring: Any = getattr(sys, "monitoring", None)

TOOL_NAME = "dapper-trio"


_get_ident = threading.get_ident
_getframe = sys._getframe
_hit = _tracing.hit


class MonitoringUnavailable(Exception):
    """``sys.monitoring`` cannot be used (old Python, or the tool id is taken)."""


if monitoring is not None:
    _E = monitoring.events
    DISABLE: Any = monitoring.DISABLE
    STEP_EVENTS = (
        _E.LINE
        | _E.PY_START
        | _E.PY_RESUME
        | _E.PY_THROW
        | _E.PY_RETURN
        | _E.PY_YIELD
        | _E.PY_UNWIND
        | _E.RAISE
    )
    NEXT_LOCAL_EVENTS = _E.LINE | _E.PY_RETURN | _E.PY_YIELD | _E.PY_RESUME
    NEXT_GLOBAL_EVENTS = _E.PY_UNWIND | _E.RAISE
    # (PY_THROW is not a local event: it cannot be switched off per code
    # object, but only a throw() into a suspended generator raises it.)
    DISCOVERY_EVENTS = _E.PY_START | _E.PY_RESUME | _E.PY_THROW
else:  # pragma: no cover - Python < 3.12
    DISABLE = None
    STEP_EVENTS = NEXT_LOCAL_EVENTS = NEXT_GLOBAL_EVENTS = DISCOVERY_EVENTS = 0


def _code_lines(code: types.CodeType) -> frozenset[int]:
    return frozenset(line for _, _, line in code.co_lines() if line is not None)


class MonitoringTracer:
    """Breakpoints as local LINE events; step events only while stepping."""

    name = "monitoring"

    def __init__(self, tool: int | None = None) -> None:
        if monitoring is None:
            raise MonitoringUnavailable("sys.monitoring needs Python 3.12 or newer")
        self.tool: int = monitoring.DEBUGGER_ID if tool is None else tool
        holder = monitoring.get_tool(self.tool)
        if holder is not None:
            raise MonitoringUnavailable(
                f"sys.monitoring tool id {self.tool} is in use by {holder!r}"
            )
        monitoring.use_tool_id(self.tool, TOOL_NAME)
        self._lock = threading.RLock()
        #: Thread ident -> its debugger, while that debugger steps.
        self._steppers: dict[int, TaskAwareBdb] = {}
        #: Canonical file name -> its breakpoint lines.
        self._files: dict[str, frozenset[int]] = {}
        #: Code object -> the breakpoint lines it holds (LINE events on).
        #: Code objects are keyed by id everywhere: equal code objects (the
        #: same function in two files) are different places to stop.
        self._codes: dict[int, types.CodeType] = {}
        #: The same by id (the callbacks' lookups: hashing a code object
        #: costs more than the rest of a LINE callback).
        self._line_sets: dict[int, frozenset[int]] = {}
        #: Code objects starting on a breakpoint line (function breakpoints).
        self._function_codes: set[int] = set()
        #: Code object -> local step events enabled on it.
        self._step_codes: dict[int, tuple[types.CodeType, int]] = {}
        self._global = 0
        #: Conditions compiled into the code (see _breakpoints_changed).
        self._instrumenter = _instrument.CodeInstrumenter()
        self._signature: frozenset[tuple[str, _instrument.Conditions]] = frozenset()
        self._full: dict[str, frozenset[int]] = {}
        self._legacy_codes: dict[int, types.CodeType] = {}
        self._disabled = False  # something returned DISABLE since the last restart
        self._canonic: Callable[[str], str] = lambda name: name
        self._file_of: dict[str, str] = {}
        register = monitoring.register_callback
        register(self.tool, _E.LINE, self._on_line)
        register(self.tool, _E.PY_START, self._on_start)
        register(self.tool, _E.PY_RESUME, self._on_start)
        register(self.tool, _E.PY_THROW, self._on_throw)
        register(self.tool, _E.PY_RETURN, self._on_return)
        register(self.tool, _E.PY_YIELD, self._on_return)
        register(self.tool, _E.PY_UNWIND, self._on_unwind)
        register(self.tool, _E.RAISE, self._on_raise)
        # Events during interpreter shutdown would find this module torn down.
        atexit.register(self._silence)

    def _silence(self) -> None:
        with self._lock:
            self._steppers.clear()
            self._files = {}
            codes = [*self._codes.values()]
            codes += [code for code, _ in self._step_codes.values()]
            for code in codes:
                monitoring.set_local_events(self.tool, code, 0)
            self._codes = {}
            self._line_sets = {}
            self._step_codes = {}
            monitoring.set_events(self.tool, 0)
            self._global = 0

    def close(self) -> None:
        """Give the tool id back (tests)."""
        atexit.unregister(self._silence)
        self._silence()
        with self._lock:
            for event in (
                _E.LINE,
                _E.PY_START,
                _E.PY_RESUME,
                _E.PY_THROW,
                _E.PY_RETURN,
                _E.PY_YIELD,
                _E.PY_UNWIND,
                _E.RAISE,
            ):
                monitoring.register_callback(self.tool, event, None)
            monitoring.free_tool_id(self.tool)

    # -- the Tracer protocol -----------------------------------------------

    def step(self, debugger: TaskAwareBdb, frame: types.FrameType | None) -> None:
        _tracing.register(debugger)
        debugger._ensure_botframe(frame if frame is not None else sys._getframe(1))
        # As with settrace, frames called by *frame* that are running now
        # (the debugger's own, a set_trace() wrapper) report nothing.
        skip: set[types.FrameType] = set()
        node: types.FrameType | None = sys._getframe(1)
        while frame is not None and node is not None and node is not frame:
            skip.add(node)
            node = node.f_back
        debugger._monitoring_skip = skip if node is not None else set()
        debugger._armed_version = debugger._stopinfo_version
        with self._lock:
            self._steppers[_get_ident()] = debugger
            self._apply()

    def run(self, debugger: TaskAwareBdb) -> None:
        _tracing.register(debugger)
        with self._lock:
            if self._compiled_signature(debugger) != self._signature:
                # A condition changed at the prompt (pdb's ``condition``).
                self._breakpoints_changed(debugger)
            if self._steppers.pop(_get_ident(), None) is not None:
                self._apply()

    def stop(self, debugger: TaskAwareBdb) -> None:
        self.run(debugger)

    def breakpoints_changed(self, debugger: TaskAwareBdb) -> None:
        with self._lock:
            self._breakpoints_changed(debugger)

    def _compiled_signature(
        self, debugger: TaskAwareBdb
    ) -> frozenset[tuple[str, _instrument.Conditions]]:
        """What is (to be) compiled in: each file's plain conditional lines."""
        return frozenset(
            (name, _instrument.lone_conditions(name, lines))
            for name, lines in debugger.breaks.items()
            if lines
        )

    def _breakpoints_changed(self, debugger: TaskAwareBdb) -> None:
        self._canonic = debugger.canonic
        self._file_of.clear()
        full = {
            name: frozenset(lines) for name, lines in debugger.breaks.items() if lines
        }
        # Plain conditional breakpoints are compiled into the code, as
        # with the settrace backend: a false condition then costs what
        # the expression costs, not a LINE callback and an eval().
        self._signature = self._compiled_signature(debugger)
        compiled = {
            name: frozenset(line for line, _ in conditions)
            for name, conditions in self._signature
            if conditions
        }
        self._instrumenter.sync(debugger, breaks=compiled)
        fallback = self._instrumenter.fallback_reasons()
        self._instrumenter.legacy_frames_alive(debugger)
        # Frames already running code from before a condition was
        # compiled in are served by LINE events on that old code.
        self._legacy_codes = {
            id(frame.f_code): frame.f_code for frame in debugger._legacy_frames
        }
        self._full = full
        self._files = {}
        for name, lines in full.items():
            left = lines if name in fallback else lines - compiled.get(name, set())
            if left:
                self._files[name] = left
        old = self._codes
        self._codes = {}
        self._line_sets = {}
        self._function_codes = set()
        for code in old.values():
            self._consider(code)
        for code in self._legacy_codes.values():
            self._consider(code)
        for code in self._live_codes():
            self._consider(code)
        for key, code in old.items():
            if key not in self._codes:
                monitoring.set_local_events(self.tool, code, self._step_events(code))
        self._apply(restart=True)

    def compile_module(self, source: str | bytes, filename: str) -> types.CodeType:
        # Conditions compiled in; PY_START finds the module's code objects.
        return self._instrumenter.compile_module(source, filename)

    # -- keeping events in step --------------------------------------------------

    def _canonical(self, filename: str) -> str:
        name = self._file_of.get(filename)
        if name is None:
            name = self._file_of[filename] = self._canonic(filename)
        return name

    def _consider(self, code: types.CodeType) -> None:
        """Switch LINE events on for *code* if it holds a breakpoint line."""
        name = self._canonical(code.co_filename)
        if id(code) in self._legacy_codes:
            lines = self._full.get(name)
        else:
            lines = self._files.get(name)
        if not lines or id(code) in self._codes:
            return
        starts_on = code.co_firstlineno in lines
        held = lines & _code_lines(code)
        if not held and not starts_on:
            return
        self._codes[id(code)] = code
        self._line_sets[id(code)] = lines
        if starts_on:
            self._function_codes.add(id(code))
        monitoring.set_local_events(self.tool, code, _E.LINE | self._step_events(code))

    def _step_events(self, code: types.CodeType) -> int:
        entry = self._step_codes.get(id(code))
        return 0 if entry is None else entry[1]

    def _live_codes(self) -> Iterator[types.CodeType]:
        """Code objects of the breakpoint files that frames are running now.

        Only the frames on every thread's stack: their code is past its
        PY_START.  Any other code object is found when it starts, resumes
        or has an exception thrown in (the discovery events, which a
        breakpoint change re-arms everywhere with ``restart_events``), and
        before its next line runs -- a suspended coroutine included.  The
        heap is not walked: in a debuggee about to start its program that
        walk was most of setting a breakpoint (~10 ms, and more in a big
        program, all of it while the program waits).
        """
        if not self._files:
            return
        wanted = self._files
        for top in sys._current_frames().values():
            node: types.FrameType | None = top
            while node is not None:
                if self._canonical(node.f_code.co_filename) in wanted:
                    yield node.f_code
                node = node.f_back

    def _apply(self, *, restart: bool = False) -> None:
        """Set global and step events from the steppers and breakpoints."""
        step_global = 0
        step_codes: dict[int, tuple[types.CodeType, int]] = {}
        for debugger in self._steppers.values():
            if debugger.stopframe is None:
                step_global |= STEP_EVENTS
                continue
            step_global |= NEXT_GLOBAL_EVENTS
            for frame in (debugger.stopframe, debugger.returnframe):
                if frame is not None and frame is not debugger.botframe:
                    code = frame.f_code
                    step_codes[id(code)] = (code, NEXT_LOCAL_EVENTS)
        for key in self._step_codes.keys() - step_codes.keys():
            code = self._step_codes[key][0]
            monitoring.set_local_events(
                self.tool, code, _E.LINE if key in self._codes else 0
            )
        for key, (code, events) in step_codes.items():
            if self._step_codes.get(key) != (code, events):
                monitoring.set_local_events(
                    self.tool, code, events | (_E.LINE if key in self._codes else 0)
                )
        self._step_codes = step_codes
        wanted = step_global | (DISCOVERY_EVENTS if self._files else 0)
        if wanted != self._global:
            monitoring.set_events(self.tool, wanted)
            self._global = wanted
        if restart or (self._steppers and self._disabled):
            self._disabled = False
            monitoring.restart_events()

    def _first_executable_line(self, code: types.CodeType) -> int | None:
        """Where a function breakpoint on *code* stops, once bdb has seen it."""
        key = (self._canonical(code.co_filename), code.co_firstlineno)
        for bp in bdb.Breakpoint.bplist.get(key, ()):
            first = getattr(bp, "func_first_executable_line", None)
            if bp.funcname == code.co_name and first is not None:
                return int(first)
        return None

    def _disable(self) -> Any:
        """DISABLE for this location, unless some thread is stepping."""
        if self._steppers:
            return None
        self._disabled = True
        return DISABLE

    # -- callbacks (every thread; keep the common paths short) -------------------

    def _dispatch(
        self,
        debugger: TaskAwareBdb,
        method: Callable[..., Any],
        frame: types.FrameType,
        arg: Any,
    ) -> None:
        if frame in debugger._monitoring_skip:
            return
        method(frame, arg)
        if debugger._stopinfo_version != debugger._armed_version:
            self._rearm(debugger, frame)

    def _rearm(self, debugger: TaskAwareBdb, frame: types.FrameType) -> None:
        # The engine moved the step without stopping (e.g. to the caller of
        # a returning frame): report what the new stop info needs, still
        # ignoring the frames ignored so far.
        skip = debugger._monitoring_skip
        debugger._arm(frame)
        debugger._monitoring_skip |= skip

    def _on_line(self, code: types.CodeType, line: int) -> Any:
        lines = self._line_sets.get(id(code))
        if lines is not None and line in lines and not self._steppers:
            # The hot path: a breakpoint line, nobody stepping.
            _hit(_getframe(1), line, True)
            return None
        debugger = self._steppers.get(_get_ident()) if self._steppers else None
        if debugger is not None:
            frame = sys._getframe(1)
            if id(code) not in self._line_sets and _frames.is_hidden_frame(frame):
                self._disabled = True
                return DISABLE  # a step never stops in trio's own code
            if frame in debugger._monitoring_skip:
                return None
            debugger.dispatch_line(frame)
            if debugger._stopinfo_version != debugger._armed_version:
                self._rearm(debugger, frame)
            return None
        if lines is None:
            return self._disable()
        if line in lines:
            _tracing.hit(sys._getframe(1), line, True)
            return None
        if id(code) in self._function_codes:
            first = self._first_executable_line(code)
            if first is None or first == line:
                _tracing.hit(sys._getframe(1), line, True)
                return None
        return self._disable()

    def _on_start(self, code: types.CodeType, offset: int) -> Any:
        if self._files and id(code) not in self._line_sets:
            with self._lock:
                self._consider(code)
        debugger = self._steppers.get(_get_ident())
        if debugger is None:
            return self._disable()
        self._dispatch(debugger, debugger.dispatch_call, sys._getframe(1), None)
        return None

    def _on_throw(self, code: types.CodeType, offset: int, exc: BaseException) -> Any:
        if self._files and id(code) not in self._line_sets:
            with self._lock:
                self._consider(code)
        debugger = self._steppers.get(_get_ident())
        if debugger is not None:
            self._dispatch(debugger, debugger.dispatch_call, sys._getframe(1), None)
        return None

    def _on_return(self, code: types.CodeType, offset: int, value: Any) -> Any:
        debugger = self._steppers.get(_get_ident())
        if debugger is None:
            return self._disable()
        self._dispatch(debugger, debugger.dispatch_return, sys._getframe(1), value)
        return None

    def _on_unwind(self, code: types.CodeType, offset: int, exc: BaseException) -> Any:
        debugger = self._steppers.get(_get_ident())
        if debugger is not None:
            self._dispatch(debugger, debugger.dispatch_return, sys._getframe(1), None)
        return None

    def _on_raise(self, code: types.CodeType, offset: int, exc: BaseException) -> Any:
        debugger = self._steppers.get(_get_ident())
        if debugger is not None:
            self._dispatch(
                debugger,
                debugger.dispatch_exception,
                sys._getframe(1),
                (type(exc), exc, exc.__traceback__),
            )
        return None
