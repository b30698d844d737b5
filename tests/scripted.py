"""A scripted front end for the engine: the REPL's decisions without a terminal.

``ScriptedDebugger`` is to ``_engine.TaskAwareBdb`` what ``TrioPdb`` is, minus
pdbpp and the terminal.  Every stop is recorded as a ``Stop`` (why, which task,
which function and line, which trace event) and answered with the next command
of a script, by calling the same ``set_*`` methods pdb's ``do_step``,
``do_next``, ``do_return``, ``do_until``, ``do_continue`` and ``do_quit`` call.
When the script runs out, the program continues.

A test builds a small trio program, runs it with ``ScriptedDebugger.run`` and
asserts the exact transcript of stops, e.g.::

    [("enter", "main", "main", "dbg.set_trace()"),
     ("line", "main", "main", "await trio.sleep(0)"), ...]

Lines are identified by their source text (without a trailing comment), so
transcripts read like a session at the terminal and survive edits above them.
Lines a test needs by number carry a ``# mark: NAME`` comment (``line_of``).
"""

from __future__ import annotations

import dataclasses
import linecache
import os
import re
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

import trio

from dapper_trio import _engine, _frames, _trio_internals

#: A scripted command: pdb's spelling (``"step"``, ``"next"``, ``"return"``,
#: ``"until 42"``, ``"continue"``, ``"quit"``), or a callable given the
#: debugger and the stop frame that issues commands itself.
Command = str | Callable[["ScriptedDebugger", types.FrameType], None]

#: Where stepping off the end of the main task stops: in the caller of
#: ``trio.run`` (``ScriptedDebugger.run`` itself), outside any task.
AFTER_RUN = ("line", None, "run", "return result")

#: A bound on stops per run, so a wrong decision cannot loop forever.
MAX_STOPS = 200

TRIO_DIR = os.path.dirname(os.path.realpath(trio.__file__))

_COMMENT = re.compile(r"\s+#.*$")


def line_of(path: str, mark: str) -> int:
    """The number of the line of *path* that ends with ``# mark: <mark>``."""
    needle = f"# mark: {mark}"
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.rstrip().endswith(needle):
                return number
    raise LookupError(f"no line marked {mark!r} in {path}")


def source_text(filename: str, lineno: int) -> str:
    """The stripped source line, without a trailing comment."""
    return _COMMENT.sub("", linecache.getline(filename, lineno).strip())


@dataclasses.dataclass(frozen=True)
class Stop:
    """One stop: what a person at the terminal would see in the header line."""

    #: "enter" (set_trace, pause_suspended), "line", "call", "return" or
    #: "exception".
    event: str
    #: The last dotted part of the stop task's name; None outside trio.
    task: str | None
    #: The code object's name (the function).
    function: str
    #: The stripped source line, without its comment.
    text: str
    lineno: int
    filename: str
    #: ``stop_reason`` as the engine set it ("step", "breakpoint 1", ...).
    reason: str
    #: The return value of a "return" stop, the exception of an "exception" stop.
    value: Any
    #: The stop task itself (None outside trio).
    task_object: trio.lowlevel.Task | None

    def entry(self) -> tuple[str, str | None, str, str]:
        """(event, task, function, text): the comparable part of a stop."""
        return (self.event, self.task, self.function, self.text)


def short_task_name(task: trio.lowlevel.Task | None) -> str | None:
    """``"A"`` for a task named ``A``, ``"main"`` for ``test_x.<locals>.main``."""
    if task is None:
        return None
    if task.name.startswith("<"):
        return task.name  # trio's own, e.g. <TrioToken.run_sync_soon task>
    return task.name.rpartition(".")[2]


class ScriptedDebugger(_engine.TaskAwareBdb):
    """The engine with a front end that follows a script instead of a person."""

    def __init__(
        self,
        script: Iterable[Command] = (),
        *,
        policy: Callable[[Stop], str] | None = None,
    ) -> None:
        """*script* answers the first stops; then *policy* (default: continue)."""
        super().__init__()
        self.script: list[Command] = list(script)
        self.policy = policy
        self.stops: list[Stop] = []
        self._event = ""
        self._value: Any = None
        self._waiting_for_program = False
        self.reset()

    # -- what a run looks like ------------------------------------------------

    def transcript(self) -> list[tuple[str, str | None, str, str]]:
        """Every stop as (event, task, function, source text)."""
        return [stop.entry() for stop in self.stops]

    def tasks_stopped_in(self) -> set[str | None]:
        return {stop.task for stop in self.stops}

    # -- running a program ------------------------------------------------------

    def run(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        start: Literal["run", "step", "continue"] = "run",
        instruments: Sequence[trio.abc.Instrument] = (),
    ) -> Any:
        """``trio.run(async_fn, *args)`` under this debugger.

        *start* says how debugging begins, as ``_launcher.run_program`` does:
        ``"run"`` without tracing (the program stops where it calls
        ``dbg.set_trace()``, like ``dapper_trio.breakpoint()``, or where a
        pause is requested), ``"step"`` at the first line of the program
        (``dapper-trio run``), ``"continue"`` at breakpoints only
        (``dapper-trio run -c``).
        Tracing is removed afterwards, whatever happens.
        """
        previous = sys.gettrace()
        here = sys._getframe()
        # As _launcher.run_program: nothing above the runner is the program's.
        self.botframe = here
        try:
            if start == "step":
                self._waiting_for_program = True
                self._follow(None)
                self._set_stopinfo(None, None)
                self.start_tracing(here)
            elif start == "continue":
                self.set_continue()
                self._arm(here)
            result = trio.run(async_fn, *args, instruments=list(instruments))
            return result  # noqa: RET504 - stepping after trio.run lands here
        finally:
            sys.settrace(previous)
            self._untrace(here)

    def _untrace(self, frame: types.FrameType | None) -> None:
        # start_tracing gives every user frame up the stack (pytest's too) a
        # local trace function; take ours back so no later test sees it.
        while frame is not None:
            if getattr(frame.f_trace, "__self__", None) is self:
                frame.f_trace = None
            frame = frame.f_back

    def set_trace(self) -> None:
        """Stop at the caller's current line, as ``DebugSession.pause_here``."""
        frame = sys._getframe(1)
        self.stop_task = _trio_internals.current_task_or_none()
        self.stop_reason = "set_trace"
        self._event, self._value = "enter", None
        self.enter_live(frame)
        if self.quitting:
            raise _engine.DebuggerQuit

    def pause_suspended(self, task: trio.lowlevel.Task) -> None:
        """Stop on *task*'s await chain, as ``DebugSession._pause_idle_loop``."""
        found = _frames.innermost_user_frame(_frames.suspended_task_stack(task))
        assert found is not None, f"{task.name} has no user frame to stop on"
        self.stop_task = task
        self.stop_reason = "interrupted (Ctrl-C) while the trio loop was idle"
        self._event, self._value = "enter", None
        self.enter_suspended(found[0])

    # -- bdb's hooks, as TrioPdb implements them ---------------------------------

    def user_line(self, frame: types.FrameType) -> None:
        self._stop(frame, "line", None)

    def user_call(self, frame: types.FrameType, argument_list: Any) -> None:
        self._stop(frame, "call", None)

    def user_return(self, frame: types.FrameType, return_value: Any) -> None:
        self._stop(frame, "return", return_value)

    def user_exception(self, frame: types.FrameType, exc_info: Any) -> None:
        self._stop(frame, "exception", exc_info[1])

    def _stop(self, frame: types.FrameType, event: str, value: Any) -> None:
        if self._waiting_for_program:
            # As TrioPdb's _wait_for_mainpyfile: the runner is not the program.
            if frame.f_code.co_filename == __file__:
                return
            self._waiting_for_program = False
        self.stop_task = _trio_internals.current_task_or_none()
        self._event, self._value = event, value
        self.interaction(frame, None)

    def interaction(self, frame: types.FrameType | None, traceback: Any) -> None:
        assert frame is not None
        filename = frame.f_code.co_filename
        lineno = frame.f_lineno
        self.stops.append(
            Stop(
                event=self._event,
                task=short_task_name(self.stop_task),
                function=frame.f_code.co_name,
                text=source_text(filename, lineno),
                lineno=lineno,
                filename=filename,
                reason=self.stop_reason,
                value=self._value,
                task_object=self.stop_task,
            )
        )
        if len(self.stops) >= MAX_STOPS:
            self.set_quit()
            return
        if self.script:
            command = self.script.pop(0)
        elif self.policy is not None:
            command = self.policy(self.stops[-1])
        else:
            command = "continue"
        if callable(command):
            command(self, frame)
        else:
            self.do(command, frame)

    def do(self, command: str, frame: types.FrameType) -> None:
        """Run one pdb command the way pdb's do_* method does."""
        verb, _, argument = command.partition(" ")
        if verb == "step":
            self.set_step()
        elif verb == "next":
            self.set_next(frame)
        elif verb == "return":
            self.set_return(frame)
        elif verb == "until":
            self.set_until(frame, int(argument) if argument else None)
        elif verb == "continue":
            self.set_continue()
        elif verb == "quit":
            self.set_quit()
        else:
            raise ValueError(f"unknown scripted command {command!r}")

    def do_clear(self, arg: str) -> None:
        # bdb calls this for temporary breakpoints.
        self.clear_bpbynumber(arg)


def in_trio(stop: Stop) -> bool:
    """True if *stop* is in one of trio's (or outcome's, sniffio's...) frames."""
    return os.path.realpath(stop.filename).startswith(TRIO_DIR + os.sep)
