"""The debuggee of ``dapper-trio dap``: the program, with a DAP front end.

Theory of operation
===================

The problem.  A DAP client inspects a stopped program -- threads, stacks,
variables, evaluate -- and every one of those must be computed where the
frames are: in the program's process, and for trio objects in the program's
trio thread.  But that thread is the one that is stopped: it sits in the
engine's ``interaction()`` hook, inside a trace callback, and nothing else
may run the program's trio loop meanwhile.

Things that don't work.
* Answering from another thread of the debuggee: frames and trio tasks are
  only coherent in the thread that runs them, and ``f_locals`` of a running
  frame read from elsewhere is a race.
* Returning from ``interaction()`` to serve a request and coming back: the
  engine arms the tracer on return; the program would run.
* Talking to the adapter from the stopped thread with its own sockets: a
  trio loop cannot run in a thread that is inside another trio run's task.

The design.  As for ``dapper-trio run`` (``_debuggee``), the connection to
the adapter lives in an *agent thread* with its own trio run.  A stop opens
the ``StopPort``: the stopped thread blocks on the port's queue and serves
the commands the agent puts there (stackTrace, scopes, variables, evaluate,
setBreakpoints...), one at a time, handing each result back to the agent
with ``TrioToken.run_sync_soon``; a resuming command (continue, next,
stepIn, stepOut, quit) sets the engine's stop info the way pdb's commands do
and closes the port, which fails whatever is still queued with "not
stopped".  Requests that need no stopped thread are answered by the agent
itself: ``threads`` from a table the session's trio instrument keeps
(spawned and exited tasks, which also become DAP ``thread`` events), and
``pause`` by delivering SIGINT to the program's main thread, where the
session turns it into a pause -- at the next line of the running task, or on
the main task's await chain when the trio loop is idle (see ``_session``).
``setBreakpoints`` while the program runs is applied in the program's trio
thread (``run_sync_soon`` on the program's token) when trio runs, else in
the agent thread.

Events for the adapter (stopped, continued, thread, output of logpoints)
may be posted from any thread: ``DapAgent.post_event`` queues them on the
agent's loop without blocking, in order.

Known holes.  Only one thread is stopped at a time: a second thread reaching
a breakpoint waits until the first resumes.  Stepping commands step the
stopped task, whichever thread the client names.  An ``evaluate`` cannot be
interrupted (a ``cancel`` from the client abandons the wait, not the code).
A pause while the program is in a blocking call outside trio (``time.sleep``)
happens when the call returns.  Breakpoints set while a non-trio program
runs are applied from the agent thread.
"""

from __future__ import annotations

import bdb
import dataclasses
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import outcome
import trio

from . import _frames, _session, _tasks, _trio_internals
from ._dap_lines import parse_hit_condition
from ._dap_server import ADAPTER_ENV
from ._dap_variables import VariableTable, plain_children
from ._ipc import Address, UnknownMethod, connect
from ._launcher import LaunchError, RunOptions, Target, run_program
from ._repl import TrioPdb, leaf_exceptions
from ._session import DebugSession, SessionInstrument

#: The DAP thread id of the program's OS main thread (trio tasks are 1, 2...).
MAIN_THREAD_ID = 1_000_000_000
#: How long the debuggee waits for its configuration from the adapter.
CONFIG_TIMEOUT = 60.0
#: A pause request not served within this many seconds may be sent again.
PAUSE_RETRY_SECONDS = 1.5

#: Commands that the stopped thread serves.
RESUMING = frozenset({"continue", "next", "stepIn", "stepOut", "quit"})


class NotStopped(Exception):
    """A request that needs a stopped program came while it runs."""


class CommandError(Exception):
    """A request failed; its text is the error response's message."""


# -- the stopped thread's mailbox ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
    """One request for the stopped thread, and how to hand its result back."""

    name: str
    arguments: Mapping[str, Any]
    deliver: Callable[[outcome.Outcome[Any]], None]


class StopPort:
    """Where the agent leaves commands for the stopped thread (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.stopped = False
        self.lost = False

    def open(self) -> None:
        with self._lock:
            self.stopped = True

    def submit(self, command: Command) -> bool:
        """Queue *command* if the program is stopped; False if it runs."""
        with self._lock:
            if not self.stopped:
                return False
            self._queue.put(command)
            return True

    def take(self) -> Command | None:
        """Wait for the next command; None once the adapter is gone."""
        while not self.lost:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
        return None

    def close(self) -> None:
        """The program resumes: fail every command still queued."""
        with self._lock:
            self.stopped = False
            pending = []
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        for command in pending:
            command.deliver(outcome.Error(NotStopped("the program is running")))

    def connection_lost(self) -> None:
        self.lost = True


# -- threads -------------------------------------------------------------------


class ThreadTable:
    """The program's DAP threads: its live trio tasks, or its main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[int, str] = {}
        self.in_trio = False
        self.trio_token: trio.lowlevel.TrioToken | None = None

    def add(self, number: int, name: str) -> None:
        with self._lock:
            self._tasks[number] = name

    def remove(self, number: int) -> bool:
        with self._lock:
            return self._tasks.pop(number, None) is not None

    def trio_started(self, token: trio.lowlevel.TrioToken) -> None:
        with self._lock:
            self.in_trio = True
            self.trio_token = token

    def trio_finished(self) -> None:
        with self._lock:
            self.in_trio = False
            self.trio_token = None
            self._tasks.clear()

    def listing(self, extra: tuple[int, str] | None = None) -> list[dict[str, Any]]:
        """DAP ``Thread`` objects; *extra* (the stopped thread) is always listed."""
        with self._lock:
            entries = dict(self._tasks)
            if not self.in_trio:
                entries[MAIN_THREAD_ID] = "MainThread"
        if extra is not None:
            entries.setdefault(*extra)
        return [{"id": key, "name": entries[key]} for key in sorted(entries)]


class ThreadsInstrument(SessionInstrument):
    """The session's instrument, also reporting trio tasks as DAP threads."""

    session: DapSession

    def __init__(self, session: DapSession) -> None:
        super().__init__(session)
        self.session = session

    def before_run(self) -> None:
        super().before_run()
        self.session.threads.trio_started(trio.lowlevel.current_trio_token())

    def after_run(self) -> None:
        super().after_run()
        self.session.threads.trio_finished()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        super().task_spawned(task)
        if task.name.startswith("<") or _trio_internals.is_system_task(task):
            return
        number = _tasks.REGISTRY.id_of(task)
        self.session.threads.add(number, task.name)
        self.session.agent.post_event(
            "thread", {"reason": "started", "threadId": number}
        )

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        super().task_exited(task)
        number = _tasks.REGISTRY.id_of(task)
        if self.session.threads.remove(number):
            self.session.agent.post_event(
                "thread", {"reason": "exited", "threadId": number}
            )


# -- breakpoints ---------------------------------------------------------------


@dataclasses.dataclass
class _Extras:
    """What bdb's Breakpoint does not hold: DAP's hit condition and logpoint."""

    hit_test: Callable[[int], bool] | None
    log_message: str | None
    hits: int = 0


_INTERPOLATION = re.compile(r"\{([^{}]+)\}")


class BreakpointBook:
    """DAP breakpoints over bdb's: one ``setBreakpoints`` replaces a file's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._extras: dict[int, _Extras] = {}

    def set_file(
        self, debugger: bdb.Bdb, path: str, specs: list[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace *path*'s breakpoints with *specs*; one result per spec."""
        with self._lock:
            filename = debugger.canonic(path)
            for bp in [
                bp
                for (name, _), bps in list(bdb.Breakpoint.bplist.items())
                if name == filename
                for bp in bps
            ]:
                self._extras.pop(bp.number, None)
            if filename in debugger.breaks:
                debugger.clear_all_file_breaks(filename)
            results = []
            for spec in specs:
                line = int(spec["line"])
                condition = spec.get("condition") or None
                error = debugger.set_break(filename, line, cond=condition)
                if error:
                    results.append({"verified": False, "line": line, "message": error})
                    continue
                bp = bdb.Breakpoint.bplist[filename, line][-1]
                hit = spec.get("hitCondition") or None
                self._extras[bp.number] = _Extras(
                    parse_hit_condition(hit) if hit else None,
                    spec.get("logMessage") or None,
                )
                results.append({"verified": True, "line": line})
            return results

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


# -- the front end -------------------------------------------------------------


def _dap_reason(stop_reason: str, post_mortem: bool) -> str:
    if post_mortem:
        return "exception"
    if stop_reason.startswith("breakpoint"):
        return "breakpoint"
    if stop_reason.startswith("entry"):
        return "entry"
    if stop_reason.startswith("interrupted"):
        return "pause"
    if stop_reason == "exception":
        return "exception"
    if stop_reason in ("step", "return"):
        return "step"
    return "breakpoint"  # set_trace / dapper_trio.breakpoint()


@dataclasses.dataclass
class _Stop:
    """One stop of the program, as the DAP requests see it."""

    debugger: DapDebugger
    frame: types.FrameType | None
    thread_id: int
    thread_name: str
    stack: list[tuple[types.FrameType, int]]  # outermost first
    exception: BaseException | None


class DapDebugger(TrioPdb):
    """The engine (through TrioPdb's stop bookkeeping) with a DAP front end.

    ``interaction()`` does not open a REPL: it hands the stop to the
    session, which serves the adapter's requests until one resumes.
    """

    session: DapSession

    def __init__(self, session: DapSession, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)
        self.session = session

    def message(self, msg: str) -> None:
        """pdb's messages ("--Return--"...) are a terminal's business: dropped."""

    def error(self, msg: str) -> None:
        """As ``message``."""

    def post_mortem_of(self, exc: BaseException) -> None:
        """Stop on an uncaught exception only if the client asked to."""
        if "uncaught" in self.session.exception_filters:
            self.session.exception = exc
            try:
                super().post_mortem_of(exc)
            finally:
                self.session.exception = None

    def interaction(self, frame: types.FrameType | None, tb_or_exc: Any) -> None:
        if (
            frame is not None
            and tb_or_exc is None
            and self.stop_reason.startswith("breakpoint")
            and not self.session.book.should_stop(
                getattr(self, "currentbp", None), frame, self.session.log
            )
        ):
            return  # a logpoint, or a hit condition not met: keep going
        self.session.serve_stop(self, frame, tb_or_exc)


class DapSession(DebugSession):
    """The process's debug session when a DAP adapter drives it."""

    def __init__(self, agent: DapAgent) -> None:
        super().__init__()
        self.agent = agent
        self.instrument = ThreadsInstrument(self)
        self.port = StopPort()
        self.threads = ThreadTable()
        self.book = BreakpointBook()
        self.exception_filters: frozenset[str] = frozenset()
        self.exception: BaseException | None = None
        self.variables = VariableTable()
        self._frame_ids: dict[int, tuple[types.FrameType, int, int]] = {}
        self._next_frame_id = 1
        self._stop_lock = threading.Lock()
        self.current: _Stop | None = None
        agent.session = self

    def debugger(self) -> DapDebugger:
        """This thread's debugger: a ``DapDebugger``, breakpoints shared."""
        existing: DapDebugger | None = getattr(self._local, "debugger", None)
        if existing is not None:
            return existing
        # (pdbpp's metaclass takes use_global_pdb out of the arguments.)
        created = DapDebugger(self, use_global_pdb=False)
        created.quit_without_raising = self._quit_by_interrupt
        if self._main_debugger is None:
            self._main_debugger = created
        else:
            created.breaks = self._main_debugger.breaks
        self._local.debugger = created
        return created

    def main_debugger(self) -> DapDebugger:
        """The debugger whose breakpoint index every thread shares."""
        main = self._main_debugger
        if isinstance(main, DapDebugger):
            return main
        return self.debugger()

    def log(self, text: str) -> None:
        """Show *text* in the client's debug console."""
        self.agent.post_event("output", {"category": "console", "output": text})

    # -- a stop --------------------------------------------------------------

    def serve_stop(
        self, debugger: DapDebugger, frame: types.FrameType | None, tb: Any
    ) -> None:
        """Tell the adapter the program stopped; serve it until it resumes."""
        with self._stop_lock:
            stop = self._make_stop(debugger, frame, tb)
            self.current = stop
            _session._flush_std_streams()
            self.port.open()
            self.agent.pause_served()
            body: dict[str, Any] = {
                "reason": _dap_reason(debugger.stop_reason, tb is not None),
                "description": debugger.stop_reason,
                "threadId": stop.thread_id,
                "allThreadsStopped": True,
            }
            if stop.exception is not None:
                body["text"] = _one_line(stop.exception)
            self.agent.post_event("stopped", body)
            debugger._in_repl = True
            try:
                while True:
                    command = self.port.take()
                    if command is None:  # the adapter is gone
                        debugger.set_quit()
                        break
                    if self._serve(stop, command):
                        break
            finally:
                debugger._in_repl = False
                self.port.close()
                self.variables.clear()
                self._frame_ids.clear()
                self.current = None
                self.agent.post_event(
                    "continued",
                    {"threadId": stop.thread_id, "allThreadsContinued": True},
                )

    def _make_stop(
        self, debugger: DapDebugger, frame: types.FrameType | None, tb: Any
    ) -> _Stop:
        exception = self.exception if tb is not None else None
        if isinstance(tb, BaseException):
            exception, tb = tb, tb.__traceback__
        if exception is not None:
            # A group's post-mortem shows one leaf: the one whose traceback
            # it is.
            for leaf, leaf_tb in leaf_exceptions(exception):
                if leaf_tb is tb:
                    exception = leaf
                    break
        if tb is not None:
            stack, _ = debugger.task_stack(None, tb)
        else:
            stack, index = debugger.task_stack(frame, None)
            del stack[index + 1 :]
        stack = [
            entry for entry in stack if not _frames.is_hidden_frame(entry[0])
        ] or stack
        task = debugger.stop_task if tb is None else None
        if task is not None:
            thread_id, name = _tasks.REGISTRY.id_of(task), task.name
        else:
            thread_id, name = MAIN_THREAD_ID, "MainThread"
            if threading.current_thread() is not threading.main_thread():
                thread = threading.current_thread()
                thread_id, name = (
                    MAIN_THREAD_ID + 1 + (thread.ident or 0) % 1_000_000,
                    thread.name,
                )
        top = stack[-1][0] if stack else frame
        return _Stop(debugger, top, thread_id, name, stack, exception)

    def _serve(self, stop: _Stop, command: Command) -> bool:
        """Run one command in the stopped thread; True if it resumes."""
        try:
            result = self._run(stop, command.name, command.arguments)
        except Exception as exc:
            command.deliver(outcome.Error(exc))
            return False
        command.deliver(outcome.Value(result))
        return command.name in RESUMING

    def _run(self, stop: _Stop, name: str, arguments: Mapping[str, Any]) -> Any:
        debugger = stop.debugger
        frame = stop.frame
        if name in RESUMING:
            if name == "quit":
                debugger.set_quit()
            elif name == "continue" or frame is None or stop.exception is not None:
                debugger.set_continue()
            elif name == "next":
                debugger.set_next(frame)
            elif name == "stepIn":
                debugger.set_step()
            else:
                debugger.set_return(frame)
            return {"allThreadsContinued": True} if name == "continue" else {}
        if name == "stackTrace":
            return self._stack_trace(stop, arguments)
        if name == "scopes":
            return self._scopes(arguments)
        if name == "variables":
            return self._variables(arguments)
        if name == "evaluate":
            return self._evaluate(stop, arguments)
        if name == "setBreakpoints":
            return self.set_breakpoints(arguments)
        if name == "setExceptionBreakpoints":
            return self.set_exception_filters(arguments)
        raise CommandError(f"the debuggee does not handle {name!r}")

    # -- inspection ----------------------------------------------------------

    def _stack_of(
        self, stop: _Stop, thread_id: int
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

    def _stack_trace(self, stop: _Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
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
            frames.append(_stack_frame(frame_id, frame, lineno))
        return {"stackFrames": frames, "totalFrames": len(innermost_first)}

    def _frame(self, frame_id: Any) -> tuple[types.FrameType, int, int]:
        try:
            return self._frame_ids[frame_id]
        except (KeyError, TypeError):
            raise CommandError(
                f"frameId {frame_id!r} is not valid now (ask stackTrace again)"
            ) from None

    def _scopes(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        frame, _, thread_id = self._frame(arguments["frameId"])
        scopes = [
            {
                "name": "Locals",
                "presentationHint": "locals",
                "variablesReference": self.variables.add_mapping(_locals(frame)),
                "expensive": False,
            },
            {
                "name": "Globals",
                "variablesReference": self.variables.add_mapping(
                    {
                        key: value
                        for key, value in frame.f_globals.items()
                        if key != "__builtins__"
                    }
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
                    "variablesReference": self.variables.add(
                        lambda start, count: plain_children(_trio_view(task))(
                            start, count
                        )
                    ),
                    "expensive": False,
                }
            )
        return {"scopes": scopes}

    def _variables(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        reference = arguments["variablesReference"]
        start = arguments.get("start") or 0
        count = arguments.get("count") or None
        try:
            found = self.variables.variables(reference, start, count)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        return {"variables": found}

    def _evaluate(self, stop: _Stop, arguments: Mapping[str, Any]) -> dict[str, Any]:
        expression = arguments["expression"]
        frame_id = arguments.get("frameId")
        if frame_id is not None:
            frame: types.FrameType | None = self._frame(frame_id)[0]
        else:
            frame = stop.frame
        if frame is not None:
            global_names, local_names = frame.f_globals, _locals(frame)
        else:
            global_names = local_names = vars(sys.modules["__main__"])
        try:
            code = compile(expression, "<evaluate>", "eval")
        except SyntaxError:
            if arguments.get("context") != "repl":
                raise
            code = None
        try:
            if code is None:
                exec(
                    compile(expression, "<evaluate>", "exec"), global_names, local_names
                )
                return {"result": "", "variablesReference": 0}
            value = eval(code, global_names, local_names)
        except Exception as exc:
            raise CommandError(_one_line(exc)) from None
        described = self.variables.describe("result", value, expression)
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

    # -- configuration -------------------------------------------------------

    def set_breakpoints(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a file's breakpoints (in whichever thread may touch them)."""
        results = self.book.set_file(
            self.main_debugger(), arguments["path"], list(arguments["breakpoints"])
        )
        return {"breakpoints": results}

    def set_exception_filters(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        self.exception_filters = frozenset(arguments.get("filters", ()))
        return {}

    def stopped_thread(self) -> tuple[int, str] | None:
        current = self.current
        return None if current is None else (current.thread_id, current.thread_name)


def _one_line(exc: BaseException) -> str:
    import traceback

    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _locals(frame: types.FrameType) -> dict[str, Any]:
    try:
        return dict(frame.f_locals)
    except Exception:  # pragma: no cover - exotic frames
        return {}


def _stack_frame(frame_id: int, frame: types.FrameType, lineno: int) -> dict[str, Any]:
    code = frame.f_code
    filename = code.co_filename
    source: dict[str, Any] = {"name": os.path.basename(filename)}
    if os.path.exists(filename):
        source["path"] = os.path.abspath(filename)
    else:
        source["presentationHint"] = "deemphasize"
    return {
        "id": frame_id,
        "name": getattr(code, "co_qualname", code.co_name),
        "source": source,
        "line": lineno,
        "column": 1,
    }


class TrioInfo:
    """A row of the Trio scope: shown by its summary, expanded to its fields."""

    def __init__(self, summary: str, **fields: Any) -> None:
        self.__dict__.update(fields)
        self._summary = summary

    def __repr__(self) -> str:
        return self._summary


def _trio_view(task: trio.lowlevel.Task) -> list[tuple[str, object]]:
    """The Trio scope of a frame of *task*: the task, its scopes, its children."""
    registry = _tasks.REGISTRY
    owners = _trio_internals.nursery_owners(task)
    scopes = []
    now = trio.current_time() if _trio_internals.in_trio_thread() else None
    for info in _trio_internals.cancel_scopes(task):
        nursery = owners.get(id(info.scope))
        if nursery is not None:
            owner = nursery.parent_task
            if _trio_internals.is_system_task(owner):
                break  # from here outwards the scopes are trio's own
            label = f"nursery of task {owner.name!r}"
        else:
            label = "cancel scope"
        left = info.seconds_left(now) if now is not None else None
        deadline = "no deadline" if left is None else f"{left:.3f}s left"
        state = "cancel called" if info.cancel_called else "not cancelled"
        shield = "on" if info.shield else "off"
        scopes.append(
            TrioInfo(
                f"{label}: {deadline}, shield {shield}, {state}",
                deadline=info.deadline,
                seconds_left=left,
                shield=info.shield,
                cancel_called=info.cancel_called,
                reason=info.reason,
            )
        )
    children = [
        TrioInfo(
            f"t{registry.id_of(child)} {child.name}",
            id=registry.id_of(child),
            name=child.name,
            location=_tasks.task_location(child),
        )
        for nursery in task.child_nurseries
        for child in sorted(nursery.child_tasks, key=registry.id_of)
    ]
    return [
        (
            "task",
            TrioInfo(
                f"t{registry.id_of(task)} {task.name}",
                id=registry.id_of(task),
                name=task.name,
            ),
        ),
        ("cancel scopes", scopes),
        ("nursery children", children),
    ]


# -- the agent -------------------------------------------------------------------


class DapAgent:
    """The debuggee's connection to the adapter, in a thread of its own."""

    session: DapSession

    def __init__(self, address: Address, token: str) -> None:
        self.address = address
        self.token = token
        self._config: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._events_in: trio.MemorySendChannel[tuple[str, Any]] | None = None
        self._done: trio.Event | None = None
        self._finishing = False
        self._pause_sent_at: float | None = None
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio dap agent", daemon=True
        )

    def start(self) -> dict[str, Any]:
        """Connect and return the configuration the adapter sends."""
        self._thread.start()
        try:
            result = self._config.get(timeout=CONFIG_TIMEOUT)
        except queue.Empty:
            raise LaunchError(
                "the adapter did not configure the program in time"
            ) from None
        if isinstance(result, BaseException):
            raise LaunchError(f"cannot reach the adapter: {result}") from result
        return result

    def finish(self) -> None:
        """Send what is queued and close the connection (the program ended)."""
        self._finishing = True
        token = self._trio_token
        if token is None:
            return
        try:
            trio.from_thread.run_sync(self._set_done, trio_token=token)
        except (trio.RunFinishedError, RuntimeError):
            return
        self._thread.join(timeout=5.0)

    def _set_done(self) -> None:
        if self._done is not None:
            self._done.set()

    def post_event(self, event: str, body: Any) -> None:
        """Queue an event for the adapter; from any thread, never blocks."""
        token = self._trio_token
        if token is None:
            return
        try:
            token.run_sync_soon(self._queue_event, event, body)
        except trio.RunFinishedError:
            pass

    def _queue_event(self, event: str, body: Any) -> None:
        channel = self._events_in
        if channel is not None:
            try:
                channel.send_nowait((event, body))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    def pause_served(self) -> None:
        self._pause_sent_at = None

    # -- the agent's trio run --------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._config.put(exc)
            if not self._finishing:
                self._adapter_lost(exc)

    async def _main(self) -> None:
        self._done = trio.Event()
        send, receive = trio.open_memory_channel[tuple[str, Any]](float("inf"))
        self._events_in = send
        self._trio_token = trio.lowlevel.current_trio_token()
        async with connect(
            self.address,
            token=self.token,
            name=f"dap debuggee pid {os.getpid()}",
            request_handler=self._handle_request,
        ) as channel:
            config = await channel.request("configure")
            self._config.put(config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_events, channel, receive)
                nursery.start_soon(
                    self._watch_connection, channel, nursery.cancel_scope
                )
                await self._done.wait()
                # Flush what is queued, then end.
                send.close()

    async def _send_events(
        self, channel: Any, receive: trio.MemoryReceiveChannel[tuple[str, Any]]
    ) -> None:
        async with receive:
            async for event, body in receive:
                await channel.send_event(event, body)
        await channel.aclose()

    async def _watch_connection(self, channel: Any, scope: trio.CancelScope) -> None:
        await channel.wait_closed()
        if not self._finishing:
            self._adapter_lost(channel.close_reason)
        scope.cancel()

    def _adapter_lost(self, why: object) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.port.connection_lost()
            if session.port.stopped:
                return  # the stopped thread quits the program
        print(
            f"[dapper-trio] lost the connection to the adapter ({why}); "
            "the program is stopped.",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method != "dap" or not isinstance(params, dict):
            raise UnknownMethod(f"unknown method {method!r}")
        name = params.get("command")
        arguments = params.get("arguments") or {}
        if name == "threads":
            return {
                "threads": self.session.threads.listing(self.session.stopped_thread())
            }
        if name == "pause":
            self._pause()
            return {}
        if (
            name in ("setBreakpoints", "setExceptionBreakpoints")
            and not self.session.port.stopped
        ):
            return await self._configure_running(name, arguments)
        return await self._in_stopped_thread(str(name), arguments)

    def _pause(self) -> None:
        session = self.session
        if session.port.stopped or not session.supervise_sigint:
            return
        now = time.monotonic()
        sent = self._pause_sent_at
        if sent is not None and now - sent < PAUSE_RETRY_SECONDS:
            return  # one is on its way (a second would be a KeyboardInterrupt)
        self._pause_sent_at = now
        os.kill(os.getpid(), signal.SIGINT)

    async def _in_stopped_thread(self, name: str, arguments: Mapping[str, Any]) -> Any:
        result, deliver, done = self._slot()
        if not self.session.port.submit(Command(name, arguments, deliver)):
            raise NotStopped(f"{name}: the program is running (pause it first)")
        await done.wait()
        return result[0].unwrap()

    async def _configure_running(self, name: str, arguments: Mapping[str, Any]) -> Any:
        session = self.session

        def apply() -> Any:
            if name == "setBreakpoints":
                return session.set_breakpoints(arguments)
            return session.set_exception_filters(arguments)

        token = session.threads.trio_token
        if token is not None:
            result, deliver, done = self._slot()
            try:
                token.run_sync_soon(lambda: deliver(outcome.capture(apply)))
            except trio.RunFinishedError:
                pass
            else:
                await done.wait()
                return result[0].unwrap()
        return apply()

    def _slot(
        self,
    ) -> tuple[
        list[outcome.Outcome[Any]], Callable[[outcome.Outcome[Any]], None], trio.Event
    ]:
        result: list[outcome.Outcome[Any]] = []
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def set_result(value: outcome.Outcome[Any]) -> None:
            result.append(value)
            done.set()

        def deliver(value: outcome.Outcome[Any]) -> None:
            try:
                token.run_sync_soon(set_result, value)
            except trio.RunFinishedError:
                pass

        return result, deliver, done


def main() -> None:
    """Entry point of the debuggee process started by ``dapper-trio dap``."""
    raw = os.environ.pop(ADAPTER_ENV, None)
    if raw is None:
        sys.exit("dapper-trio: this process must be started by 'dapper-trio dap'")
    info = json.loads(raw)
    agent = DapAgent(Address.parse(info["address"]), info["token"])
    session = DapSession(agent)
    _session._SESSION = session  # dapper_trio.breakpoint() & co find this one
    session.install_excepthook()
    try:
        config = agent.start()
        target = Target.from_dict(config["target"])
        stop_on_entry = bool(config.get("stop_on_entry", False))
        session.set_exception_filters({"filters": config.get("exception_filters", [])})
        for path, specs in config.get("breakpoints", {}).items():
            session.set_breakpoints({"path": path, "breakpoints": specs})
    except (LaunchError, KeyError, ValueError, TypeError) as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        agent.finish()
        sys.exit(2)
    try:
        status = run_program(
            target,
            RunOptions(stop_on_entry=stop_on_entry),
            session=session,
            sigint_ignored=False,
        )
    except LaunchError as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        status = 2
    _session._flush_std_streams()
    agent.finish()
    sys.exit(status)


__all__ = ["DapDebugger", "DapSession", "main"]
