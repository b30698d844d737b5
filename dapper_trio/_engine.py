"""A bdb that understands trio tasks: stepping follows one task.

Theory of operation
===================

The problem.  bdb decides where to stop from frames alone.  In a trio program
every task is a chain of coroutine frames driven by trio's scheduler, and the
settrace events those frames produce lie about what happens to them:

* a coroutine that suspends at ``await`` reports a 'return' event, and a
  'call' event when trio resumes it;
* between the two, other tasks run, and in bdb's step mode (``stopframe is
  None``) the first line of *any* task stops the debugger;
* when a stepped coroutine really returns to trio, bdb's "stop in the caller"
  lands in trio's scheduler or in whichever task runs next.

pdb therefore stops in other tasks after ``step``, shows ``--Call--`` each
time a coroutine is resumed, and ``next`` at the end of a coroutine runs the
program to completion.

Things that don't work.  Filtering by thread (debugpy's approach) is useless:
all tasks share the trio thread.  Filtering by "frame is below the stop frame"
fails because a resumed coroutine's ``f_back`` chain runs through trio's
scheduler, not its logical caller.  Skipping trio's modules alone (bdb's
``skip``) still stops in other tasks' user code.

The design.  Every stop decision is made against the task that was stopped
in (``_step_task``): ``stop_here`` is false for any frame that runs in another
task.  Frames are never judged by ``f_back``; the task comes from trio's run
context, which is exact inside a trace callback.  Suspension and resumption
events are recognised from the opcode at ``f_lasti`` (see ``_frames``) and
ignored, so ``next`` over ``await trio.sleep(1)`` stops at the next line of the
same coroutine after trio resumes it, ``step`` never shows ``--Call--`` for a
resumption, and a really returning coroutine hands stepping to its awaiting
caller in the same task.  When the stepped task itself finishes, stepping
moves to its parent task (or, for the main task, to whatever runs after
``trio.run``).  Breakpoints are checked in every task, so another task's
breakpoint still stops while stepping, and the stop says which task it is.

Hidden frames (``_frames.is_hidden_frame``) are never line-traced: their
'call' events return None and they never get ``f_trace`` from us, so trio's
scheduler loop runs at full speed while a user steps.

Known holes.  settrace is per thread, so breakpoints set from the trio thread
do not fire in worker threads until they call ``set_trace()`` themselves.
A coroutine driven by hand with ``coro.send()`` outside trio is followed by
thread, not task.  ``breakpoint()`` inside a C callback sees no task.
"""

from __future__ import annotations

import bdb
import sys
import types
from typing import TYPE_CHECKING, Any

from . import _breakpoints, _frames, _instrument, _tracing, _trio_internals

if TYPE_CHECKING:
    import trio


class DebuggerQuit(BaseException):
    """Raised into the program when the user quits the debugger.

    It is a BaseException (like KeyboardInterrupt) so that ``except Exception``
    in the program does not swallow it; trio unwinds every task, running
    ``finally`` blocks and ``async with`` exits, and dapper-trio reports one
    line instead of a traceback.
    """


class _AnyTask:
    """Sentinel: stepping is not tied to a task (stopped outside trio)."""

    def __repr__(self) -> str:
        return "ANY_TASK"


ANY_TASK: Any = _AnyTask()


class TaskAwareBdb(bdb.Bdb):
    """bdb with stop decisions restricted to one trio task.

    Meant to come first in the bases of a pdb/pdbpp subclass: it overrides
    only the dispatch and stop logic and the stack builder, and leaves every
    ``user_*`` hook and command to the front end.
    """

    #: The task (or ANY_TASK) that stepping follows.
    _step_task: Any = ANY_TASK
    #: The task the current stop happened in (None outside trio).
    stop_task: trio.lowlevel.Task | None = None
    #: Why the current stop happened, for the front end's header line.
    stop_reason: str = ""
    #: A reason that overrides "step" for the next stop (e.g. Ctrl-C).
    _next_reason: str | None = None
    #: A generator/coroutine frame an exception is passing through: its next
    #: 'return' event is a real return, although f_lasti is still on the
    #: yield the exception was thrown in at (gen.close(), gen.throw(), a
    #: @contextmanager whose with-body raised).
    _unwinding: types.FrameType | None = None
    #: True while this debugger's REPL runs: breakpoints reached by code the
    #: user runs from the prompt do not stop (as with pdb).
    _in_repl = False
    #: True while the settrace backend traces this thread for a step.
    _settrace_stepping = False
    #: Files the trace function must see while the program just runs (the
    #: breakpoints the tracer could not serve otherwise); None: every file
    #: with breakpoints.
    _trace_only: frozenset[str] | None = None
    #: Bumped at every change of the stop info (what the tracer must report).
    _stopinfo_version = 0
    #: (frame, line) where dispatch_line last stopped, until the next line
    #: event: the breakpoint hook compiled into that line then runs, and
    #: must not stop a second time.
    _stopped_at: tuple[types.FrameType, int] | None = None
    #: The last line event dispatch_line saw (see there).
    _last_line: tuple[types.FrameType, int] | None = None
    #: The last LINE event that decided a breakpoint (see hit_breakpoint).
    _line_event: tuple[types.FrameType, int, int] | None = None
    _line_event_lasti = -1
    #: The stop info version the tracer was last armed for.
    _armed_version = -1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Frames running code that predates one of their breakpoints, traced
        #: through f_trace for as long as they live (settrace backend).
        self._legacy_frames: set[types.FrameType] = set()
        #: Frames the monitoring backend ignores during this step.
        self._monitoring_skip: set[types.FrameType] = set()

    @property
    def tracer(self) -> _tracing.Tracer:
        """This process's tracing backend (``_tracing``)."""
        return _tracing.current_tracer()

    def _take_reason(self, default: str) -> str:
        reason = self._next_reason
        self._next_reason = None
        return reason or default

    if TYPE_CHECKING:
        # Provided by the front end (pdb's REPL); declared for type checking
        # only, since a stub here would shadow pdb's through the MRO.
        def interaction(
            self, frame: types.FrameType | None, traceback: Any
        ) -> None: ...

    def _set_stopinfo(
        self,
        stopframe: types.FrameType | None,
        returnframe: types.FrameType | None,
        stoplineno: int = 0,
    ) -> None:
        # bdb's own (private, so untyped in typeshed); same four assignments.
        self.stopframe = stopframe
        self.returnframe = returnframe
        self.quitting = False
        self.stoplineno = stoplineno
        self._stopinfo_version += 1
        self._recompute_stepping()

    def _recompute_stepping(self) -> None:
        # Precomputed for the tracer's hot path (see trace_dispatch); redone
        # whenever the stop info or the base frame changes.
        self._is_stepping = not (
            self.stoplineno == -1
            and self.returnframe is None
            and self.stopframe is self.botframe
        )

    _is_stepping = True

    def trace_dispatch(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        # Hot path while the program just runs (continue, breakpoints set):
        # a call into a file without breakpoints costs two dict lookups.
        if event == "call" and not self._is_stepping and self.botframe is not None:
            filename = frame.f_code.co_filename
            canonic = self.fncache.get(filename) or self.canonic(filename)
            only = self._trace_only
            if canonic not in (self.breaks if only is None else only):
                return None
        return super().trace_dispatch(frame, event, arg)

    # -- stop decisions --------------------------------------------------

    def _in_step_task(self) -> bool:
        wanted = self._step_task
        if wanted is ANY_TASK:
            # Any task -- but inside a trio run, only while a task runs: code
            # trio's scheduler runs between task steps is not the program's.
            return (
                _trio_internals.current_task_or_none() is not None
                or not _trio_internals.in_trio_thread()
            )
        return _trio_internals.current_task_or_none() is wanted

    def stop_here(self, frame: types.FrameType) -> bool:
        if frame is self.stopframe:
            if self.stoplineno == -1:
                return False
            if not frame.f_lineno >= self.stoplineno:
                return False
        elif self.stopframe is not None:
            return False
        if not _frames.is_step_target(frame):
            return False
        return self._in_step_task()

    def _stepping(self) -> bool:
        return self._is_stepping

    # -- dispatch ----------------------------------------------------------

    def dispatch_line(self, frame: types.FrameType) -> Any:
        self._stopped_at = None
        line = frame.f_lineno
        last = self._last_line
        self._last_line = (frame, line)
        if last is not None and last[0] is frame and last[1] == line:
            hooked = _instrument.conditional_lines.get(id(frame.f_code))
            if hooked is not None and line in hooked[1]:
                # A second line event for the same pass: the jumps of a
                # condition compiled into this line (3.10/3.11 report a jump
                # within a line as a line event).
                return self.trace_dispatch
        if frame is self._unwinding:
            self._unwinding = None  # the exception was caught in this frame
        if _frames.is_hidden_frame(frame) and not self.break_anywhere(frame):
            return None
        if self.stop_here(frame):
            self.stop_reason = self._take_reason("step")
            self._stopped_at = (frame, frame.f_lineno)
            self.user_line(frame)
            self._arm(frame)
            self._raise_if_quitting()
        elif self.break_here(frame):
            self._next_reason = None
            self.stop_reason = self._breakpoint_reason()
            self._stopped_at = (frame, frame.f_lineno)
            self.user_line(frame)
            self._arm(frame)
            self._raise_if_quitting()
        return self.trace_dispatch

    def dispatch_call(self, frame: types.FrameType, arg: Any) -> Any:
        if self.botframe is None:
            # First call since reset(): the debugger's base frame.
            self.botframe = frame.f_back
            self._recompute_stepping()
            return self.trace_dispatch
        interesting = (
            self._stepping()
            and _frames.is_step_target(frame)
            and (
                frame is self.stopframe
                or frame is self.returnframe
                or self.stopframe is None
            )
            and self._in_step_task()
        )
        if not interesting and not self.break_anywhere(frame):
            return None
        if _frames.is_resumption(frame):
            # A coroutine picking up after an await: not a call.
            return self.trace_dispatch
        if interesting and self.stop_here(frame):
            self.stop_reason = self._take_reason("step")
            self.user_call(frame, arg)
            self._arm(frame)
            self._raise_if_quitting()
        return self.trace_dispatch

    def dispatch_return(self, frame: types.FrameType, arg: Any) -> Any:
        if frame is self._unwinding:
            self._unwinding = None  # an exception ends it: a real return
        elif _frames.is_suspension(frame):
            # Suspended at an await/yield: trio will resume it later.
            return self.trace_dispatch
        if frame is self.returnframe or self.stop_here(frame):
            self.stop_reason = self._take_reason("return")
            try:
                self.frame_returning = frame
                self.user_return(frame, arg)
            finally:
                self.frame_returning = None
            self._arm(frame)
            self._raise_if_quitting()
        if (
            frame is self.stopframe and self.stoplineno != -1
        ) or frame is self.returnframe:
            # The frame we were nexting/returning in is gone: keep stepping in
            # its caller, within the same task.
            self._set_stopinfo(None, None)
        if self.stopframe is None and self._in_step_task():
            if self._step_task is not ANY_TASK:
                self._maybe_leave_task(frame)
            # The caller may have run untraced until now (bdb issue #13183).
            caller = frame.f_back
            if caller is not None and not _frames.is_hidden_frame(caller):
                caller.f_trace = self.trace_dispatch
        return self.trace_dispatch

    def dispatch_exception(self, frame: types.FrameType, arg: Any) -> Any:
        exc_type, _, exc_tb = arg
        if (
            _frames.is_coroutine_code(frame.f_code)
            and exc_type in (StopIteration, GeneratorExit)
            and exc_tb is None
        ):
            # Internal StopIteration of an await completing: not user-visible.
            return self.trace_dispatch
        if _frames.is_coroutine_code(frame.f_code):
            self._unwinding = frame
        if self.stop_here(frame):
            self.stop_reason = self._take_reason("exception")
            self.user_exception(frame, arg)
            self._arm(frame)
            self._raise_if_quitting()
        return self.trace_dispatch

    def _maybe_leave_task(self, frame: types.FrameType) -> None:
        task = self._step_task
        if task is ANY_TASK or task.coro.cr_frame is not frame:
            return
        # The task we were stepping is finishing: follow its parent.
        nursery = task.parent_nursery
        parent = nursery.parent_task if nursery is not None else None
        if parent is None or _trio_internals.is_system_task(parent):
            self._step_task = ANY_TASK
        else:
            self._step_task = parent

    def _breakpoint_reason(self) -> str:
        number = getattr(self, "currentbp", None)
        return f"breakpoint {number}" if number else "breakpoint"

    #: Called instead of raising DebuggerQuit where raising would hurt trio
    #: (its scheduler, or one of its system tasks).
    quit_without_raising: Any = None

    def _raise_if_quitting(self) -> None:
        if not self.quitting:
            return
        if _trio_internals.in_trio_thread():
            task = _trio_internals.current_task_or_none()
            if (task is None or _trio_internals.is_system_task(task)) and (
                self.quit_without_raising is not None
            ):
                self.quit_without_raising()
                return
        raise DebuggerQuit

    # -- commands that set where to stop next ----------------------------

    def _follow(self, task: Any) -> None:
        self._step_task = ANY_TASK if task is None else task

    def set_step(self) -> None:
        self._follow(self.selected_task())
        super().set_step()

    def set_next(self, frame: types.FrameType) -> None:
        self._follow(self.selected_task())
        self._trace_frame(frame)
        super().set_next(frame)

    def set_until(self, frame: types.FrameType, lineno: int | None = None) -> None:
        self._follow(self.selected_task())
        self._trace_frame(frame)
        super().set_until(frame, lineno)

    def set_return(self, frame: types.FrameType) -> None:
        self._follow(self.selected_task())
        self._trace_frame(frame)
        # Stop at this frame's real return (--Return--), for plain functions
        # and coroutines alike; suspensions in between are ignored.
        self._set_stopinfo(frame, frame, -1)

    def _trace_frame(self, frame: types.FrameType) -> None:
        if not _frames.is_hidden_frame(frame):
            frame.f_trace = self.trace_dispatch

    def selected_task(self) -> trio.lowlevel.Task | None:
        """The task the next stepping command applies to (the stopped one)."""
        return self.stop_task

    def set_continue(self) -> None:
        # bdb's also removes the trace function when there are no
        # breakpoints; here the tracer decides that when it is armed (_arm).
        self._set_stopinfo(self.botframe, None, -1)

    # -- breakpoints -----------------------------------------------------

    def break_here(self, frame: types.FrameType) -> bool:
        # bdb's, with conditions compiled once (_breakpoints.effective).
        filename = self.canonic(frame.f_code.co_filename)
        lines = self.breaks.get(filename)
        if not lines:
            return False
        lineno = frame.f_lineno
        if lineno not in lines:
            lineno = frame.f_code.co_firstlineno
            if lineno not in lines:
                return False
        bp, flag = _breakpoints.effective(filename, lineno, frame)
        if bp is None:
            return False
        self.currentbp = bp.number
        if flag and bp.temporary:
            self.do_clear(str(bp.number))
        return True

    def hit_breakpoint(
        self, frame: types.FrameType, *, line_event: bool = False
    ) -> None:
        """*frame* reached a line holding a breakpoint, outside the trace
        function (an instrumented line's hook, or a ``sys.monitoring`` LINE
        event if *line_event*): stop there if the breakpoint applies, as
        ``dispatch_line`` would."""
        if self._in_repl or self.quitting:
            return
        if sys.gettrace() is not None and frame.f_trace == self.trace_dispatch:
            return  # this frame is traced: dispatch_line sees the line
        # Line events for this pass that follow are duplicates (dispatch_line).
        self._last_line = (frame, frame.f_lineno)
        seen = self._line_event
        here = (frame, frame.f_lineno, _instrument.generation)
        same = (
            seen is not None
            and seen[0] is frame
            and seen[1] == here[1]
            and seen[2] == here[2]
        )
        if line_event:
            if (
                same
                and frame.f_lasti > self._line_event_lasti
                and here[1]
                in _instrument.conditional_lines.get(id(frame.f_code), ((), ()))[1]
            ):
                return  # a second LINE event for the same pass (see dispatch_line)
            self._line_event = here
            self._line_event_lasti = frame.f_lasti
        elif same:
            # Old code still running with LINE events on (monitoring): the
            # LINE event of this pass decided already.
            return
        stopped_at = self._stopped_at
        if stopped_at is not None:
            self._stopped_at = None
            if stopped_at[0] is frame and stopped_at[1] == frame.f_lineno:
                # The line event of this very line stopped already (a step
                # landed here); its hook runs after the user went on.
                return
        self._ensure_botframe(frame)
        if not self.break_here(frame):
            return
        self._next_reason = None
        self.stop_reason = self._breakpoint_reason()
        self._in_repl = True
        try:
            self.user_line(frame)
        finally:
            self._in_repl = False
        self._arm(frame)
        self._raise_if_quitting()

    def _breakpoints_changed(self) -> None:
        _tracing.forget_conditions()
        self.tracer.breakpoints_changed(self)

    def set_break(self, *args: Any, **kwargs: Any) -> Any:
        result = super().set_break(*args, **kwargs)
        self._breakpoints_changed()
        return result

    def clear_break(self, *args: Any, **kwargs: Any) -> Any:
        result = super().clear_break(*args, **kwargs)
        self._breakpoints_changed()
        return result

    def clear_bpbynumber(self, *args: Any, **kwargs: Any) -> Any:
        result = super().clear_bpbynumber(*args, **kwargs)
        self._breakpoints_changed()
        return result

    def clear_all_file_breaks(self, *args: Any, **kwargs: Any) -> Any:
        result = super().clear_all_file_breaks(*args, **kwargs)
        self._breakpoints_changed()
        return result

    def clear_all_breaks(self, *args: Any, **kwargs: Any) -> Any:
        result = super().clear_all_breaks(*args, **kwargs)
        self._breakpoints_changed()
        return result

    # -- telling the tracer what to report ---------------------------------

    def _arm(self, frame: types.FrameType | None) -> None:
        """Have the tracer report what the current stop info needs.

        Called after every stop (the user's command has set the stop info)
        and whenever the stop info changes outside a stop.
        """
        tracer = self.tracer
        self._armed_version = self._stopinfo_version
        if self.quitting:
            tracer.stop(self)
        elif self._is_stepping:
            tracer.step(self, frame)
        else:
            tracer.run(self)

    def start_tracing(self, frame: types.FrameType | None) -> None:
        """Trace finely so stepping works from *frame* on (a step is armed).

        Only user frames get a local trace function; trio's scheduler frames
        stay untraced.
        """
        self._ensure_botframe(frame)
        self.tracer.step(self, frame)

    def _ensure_botframe(self, frame: types.FrameType | None) -> None:
        if self.botframe is not None:
            return
        node = frame if frame is not None else sys._getframe(1)
        while node.f_back is not None:
            node = node.f_back
        self.botframe = node
        self._recompute_stepping()

    # A stop entered directly (not from a tracer callback) runs the REPL with
    # this debugger's tracing switched off, as it is inside a callback;
    # afterwards the tracer is armed for whatever the command asks.

    def enter_live(self, frame: types.FrameType) -> None:
        """Stop at *frame*, which is running on this thread (set_trace & co)."""
        self.tracer.stop(self)
        self._ensure_botframe(frame)
        self._interact(frame)
        self._arm(frame)

    def enter_suspended(self, frame: types.FrameType) -> None:
        """Stop on a suspended coroutine *frame* of ``stop_task`` (idle pause)."""
        self.tracer.stop(self)
        here = sys._getframe(1)
        self._ensure_botframe(here)
        self._interact(frame)
        self._arm(here)

    def _interact(self, frame: types.FrameType) -> None:
        self._in_repl = True
        try:
            self.interaction(frame, None)
        finally:
            self._in_repl = False

    def request_pause(self, frame: types.FrameType | None, *, task: Any) -> None:
        """Stop at the next user line in *task* (or any task): Ctrl-C."""
        self._next_reason = "interrupted (Ctrl-C)"
        self._follow(task)
        self._set_stopinfo(None, None)
        self.start_tracing(frame)

    def cancel_pause(self) -> None:
        """Forget an unserved pause request."""
        self._next_reason = None
        self.set_continue()
        self._arm(None)

    def task_stack(
        self, frame: types.FrameType | None, tb: types.TracebackType | None
    ) -> tuple[list[tuple[types.FrameType, int]], int]:
        """bdb's get_stack, but a task's stack ends at the task's root frame."""
        if tb is not None and frame is None:
            stack = _without_leading_hidden(list(_frames.iter_traceback(tb)))
            return stack, max(0, len(stack) - 1)
        if tb is not None and tb.tb_frame is frame:
            tb = tb.tb_next
        task = self.stop_task
        if (
            frame is not None
            and task is not None
            and task is not _trio_internals.current_task_or_none()
        ):
            # Stopped on another (suspended) task: show its await chain.
            stack = _frames.suspended_task_stack(task)
            frames = [entry[0] for entry in stack]
            if frame in frames:
                del stack[frames.index(frame) + 1 :]
            else:
                stack = [(frame, frame.f_lineno)]
        elif frame is not None and task is not None and task.coro.cr_frame is not None:
            stack = _frames.running_task_stack(frame, task)
            if stack and stack[0][0] is not task.coro.cr_frame:
                # Not actually inside that task's chain (e.g. a worker thread).
                stack = self._thread_stack(frame)
        elif frame is not None:
            stack = self._thread_stack(frame)
        else:
            stack = []
        index = max(0, len(stack) - 1)
        stack.extend(_frames.iter_traceback(tb))
        return stack, index

    def _thread_stack(
        self, frame: types.FrameType
    ) -> list[tuple[types.FrameType, int]]:
        stack = []
        node: types.FrameType | None = frame
        while node is not None:
            stack.append((node, node.f_lineno))
            if node is self.botframe:
                break
            node = node.f_back
        stack.reverse()
        return _without_leading_hidden(stack)


def _without_leading_hidden(
    stack: list[tuple[types.FrameType, int]],
) -> list[tuple[types.FrameType, int]]:
    """Drop the frames above the program's first frame (launcher, runpy).

    They are not the program's, so they are left out of the stack rather than
    hidden in it (no "N frames hidden" line for them at every stop).
    """
    for index, (frame, _) in enumerate(stack):
        if not _frames.is_hidden_frame(frame):
            return stack[index:]
    return stack
