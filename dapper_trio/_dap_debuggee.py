"""The program's side of ``dapper-trio dap``: its debug session, stops and requests.

Theory of operation
===================

The problem.  A DAP client inspects a stopped program -- threads, stacks,
variables, evaluate -- and every one of those must be computed where the
frames are: in the program's process, and for trio objects in the program's
trio thread.  But that thread is the one that is stopped: it sits in the
engine's ``interaction()`` hook, inside a trace callback, and nothing else
may run the program's trio loop meanwhile.

Things that don't work.
* Answering from another thread: frames and trio tasks are only coherent in
  the thread that runs them, and ``f_locals`` of a running frame read from
  elsewhere is a race.
* Returning from ``interaction()`` to serve a request and coming back: the
  engine arms the tracer on return; the program would run.
* Talking to the adapter from the stopped thread with sockets of its own: a
  trio loop cannot run in a thread that is inside another trio run's task.

The design.  Requests come in through the *endpoint* (``_dap_agent``), which
runs in a trio loop that is not the program's: an agent thread's for a
program connected to the adapter over IPC, the adapter's own for an
in-process program.  A stop opens the ``StopPort``: the stopped thread
blocks on the port's queue and serves the commands the endpoint puts there
(stackTrace, scopes, variables, evaluate, setVariable, exceptionInfo,
completions: ``_dap_inspect``), one at a time, handing each result back
through the command's ``deliver``; a resuming command (continue, next, stepIn, stepOut,
quit) sets the engine's stop info the way pdb's commands do and closes the
port, which fails whatever is still queued with "not stopped".  Requests
that need no stopped thread are answered by the endpoint itself: ``threads``
from a table the session's trio instrument keeps (spawned and exited tasks,
which also become DAP ``thread`` events), ``source`` and ``loadedSources``.
Breakpoints (``_dap_breakpoints``) and exception filters
(``_dap_exceptions``) set while the program runs go through a queue that the
program's trio thread drains (``run_sync_soon`` on its token) -- or the
stopped thread, if the program stops first; a program outside trio gets
them from the endpoint's thread.

Events for the adapter (stopped, continued, thread, output of logpoints)
may be posted from any thread: ``DapEndpoint.post_event`` queues them on
the endpoint's loop without blocking, in order.

Known holes.  Only one thread is stopped at a time: a second thread reaching
a breakpoint waits until the first resumes.  Stepping commands step the
stopped task, whichever thread the client names.  An ``evaluate`` cannot be
interrupted (a ``cancel`` from the client abandons the wait, not the code).
Configuration sent while the trio thread runs without reaching a
checkpoint waits until it does.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union

from . import (
    _dap_completions,
    _dap_exceptions,
    _dap_sources,
    _frames,
    _session,
    _tasks,
    _tracing,
    _trio_internals,
)
from ._dap_breakpoints import BreakpointBook
from ._dap_functions import SearchPath, resolve
from ._dap_inspect import MAIN_THREAD_ID, CommandError, Inspector, Stop, one_line
from ._engine import ANY_TASK
from ._repl import TrioPdb, leaf_exceptions
from ._session import DebugSession, SessionInstrument, _Instrument

if TYPE_CHECKING:
    import trio

    from ._dap_agent import DapEndpoint
    from ._tracing import Tracer

#: Commands that the stopped thread serves and that resume the program.
RESUMING = frozenset({"continue", "next", "stepIn", "stepOut", "quit"})
#: Configuration requests, applied whether the program runs or is stopped.
CONFIGURATION = frozenset(
    {
        "setBreakpoints",
        "setFunctionBreakpoints",
        "setExceptionBreakpoints",
        "configure",
        "detach",
    }
)


class NotStopped(Exception):
    """A request that needs a stopped program came while it runs."""


# -- results handed between threads --------------------------------------------
#
# What ``outcome`` would do, without its import: a launched debuggee imports
# neither it nor trio unless the program does (see ``_trio_import``).

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Value(Generic[_T]):
    """A command's result."""

    value: _T

    def unwrap(self) -> _T:
        return self.value


@dataclasses.dataclass(frozen=True)
class Error:
    """A command's failure."""

    error: BaseException

    def unwrap(self) -> Any:
        raise self.error


Outcome = Union[Value[Any], Error]  # noqa: UP007 - a runtime alias on 3.10


def capture(function: Callable[..., Any], *args: Any) -> Outcome:
    """``function(*args)``'s value, or the exception it raised."""
    try:
        return Value(function(*args))
    except BaseException as exc:
        return Error(exc)


# -- the stopped thread's mailbox ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
    """One request for the program, and how to hand its result back."""

    name: str
    arguments: Mapping[str, Any]
    deliver: Callable[[Outcome], None]


def _ignore(result: Outcome) -> None:
    return None


class StopPort:
    """Where the endpoint leaves commands for the stopped thread (thread-safe).

    Losing the adapter ends the current stop (``take`` returns None at once)
    but not later ones: each stop belongs to the connection it opened on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self.stopped = False
        self._generation = 0
        self._opened_in = 0

    def open(self) -> None:
        with self._lock:
            self.stopped = True
            self._opened_in = self._generation

    @property
    def ending(self) -> bool:
        """Stopped for an adapter that is gone: the stop is about to end."""
        with self._lock:
            return self.stopped and self._generation != self._opened_in

    def submit(self, command: Command) -> bool:
        """Queue *command* if the program is stopped; False if it runs."""
        with self._lock:
            if not self.stopped:
                return False
            self._queue.put(command)
            return True

    def take(self) -> Command | None:
        """Wait for the next command; None once the adapter of this stop is gone."""
        while True:
            if self._generation != self._opened_in:
                return None
            try:
                command = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if command is not None:
                return command

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
            if command is not None:
                command.deliver(Error(NotStopped("the program is running")))

    def connection_lost(self) -> None:
        """The adapter is gone: the current stop (if any) ends now."""
        with self._lock:
            self._generation += 1
            self._queue.put(None)


# -- threads -------------------------------------------------------------------


class ThreadTable:
    """The program's DAP threads: its live trio tasks, or its main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[int, str] = {}
        self.in_trio = False
        self.trio_token: trio.lowlevel.TrioToken | None = None
        #: The OS thread that runs the program, and its DAP name.
        self.program_thread = threading.main_thread().ident
        self.program_thread_name = "MainThread"

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
                entries[MAIN_THREAD_ID] = self.program_thread_name
        if extra is not None:
            entries.setdefault(*extra)
        return [{"id": key, "name": entries[key]} for key in sorted(entries)]


class ThreadsInstrument(SessionInstrument):
    """The session's instrument, also reporting trio tasks as DAP threads."""

    session: DapSession

    def __init__(self, session: DapSession) -> None:
        super().__init__(session)
        self.session = session
        self._idle_flush = _IdleFlush(session)

    def before_run(self) -> None:
        import trio

        super().before_run()
        self.session.threads.trio_started(trio.lowlevel.current_trio_token())

    def after_run(self) -> None:
        super().after_run()
        self._idle_flush.run_over()
        self.session.threads.trio_finished()
        self.session.endpoint.flush()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        super().task_spawned(task)
        self.session.task_started(task)
        self._idle_flush.arm()

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        super().task_exited(task)
        number = _tasks.REGISTRY.id_of(task)
        if self.session.threads.remove(number):
            self.session.endpoint.post_event(
                "thread", {"reason": "exited", "threadId": number}, urgent=False
            )
            self._idle_flush.arm()


class _IdleFlush(_Instrument):
    """Sends the waiting ``thread`` events when the program's loop goes idle.

    A trio instrument with the one hook ``before_io_wait``, which trio calls
    at every turn of its loop: as a hook of the session's instrument, always
    there, it cost a busy trio program 2-3 % of its run (docs/internals.md).
    So it is in a run's instruments only while non-urgent events wait, and
    takes itself out once it has flushed them -- or once the loop has turned
    ``BUSY_TURNS`` times without going idle: a busy program's events then
    wait for its next task to start or end (which arms this again), the next
    urgent post or its end.  Waking the agent thread while the program is
    busy would cost more (see ``_dap_agent``).  Armed from the run's own
    thread (the task hooks), one run per thread.  Duck-typed, like the
    session's instrument: trio takes the hooks it defines.
    """

    #: Turns of a busy loop (no idle wait) after which the hook goes.
    BUSY_TURNS = 1000

    def __init__(self, session: DapSession) -> None:
        self._session = session
        self._local = threading.local()

    def arm(self) -> None:
        """Flush when this thread's trio loop next goes idle, if anything waits."""
        local = self._local
        if getattr(local, "armed", False) or not self._session.endpoint.waiting:
            return
        import trio

        try:
            trio.lowlevel.add_instrument(self)
        except RuntimeError:  # pragma: no cover - task hooks run inside trio
            self._session.endpoint.flush()
            return
        local.armed = True
        local.busy_turns = 0

    def run_over(self) -> None:
        """This thread's run has ended, and its instruments with it."""
        self._local.armed = False

    def before_io_wait(self, timeout: float) -> None:
        local = self._local
        if timeout <= 0:
            local.busy_turns += 1
            if local.busy_turns < self.BUSY_TURNS:
                return
        local.armed = False
        import trio

        trio.lowlevel.remove_instrument(self)
        if timeout > 0:
            # The loop is about to sleep: the agent thread can send the
            # thread events now without taking the GIL from a busy program.
            self._session.endpoint.flush()


# -- the front end -------------------------------------------------------------


#: The ``description`` of a stop on an exception, by its ``breakMode``.
_EXCEPTION_STOPS = {
    "always": "exception raised",
    "unhandled": "uncaught exception",
    "userUnhandled": "exception escaping into trio",
}


def _at_breakpoint(stop_reason: str) -> bool:
    """True if the engine stopped for a breakpoint ("breakpoint N"), not for
    ``breakpoint()``/``set_trace()``."""
    return stop_reason == "breakpoint" or stop_reason.startswith("breakpoint ")


def _dap_reason(stop_reason: str, exception: bool) -> str:
    if exception:
        return "exception"
    if _at_breakpoint(stop_reason):
        return "breakpoint"
    if stop_reason.startswith("entry"):
        return "entry"
    if stop_reason.startswith("interrupted"):
        return "pause"
    if stop_reason in ("step", "return"):
        return "step"
    return "breakpoint"  # set_trace / dapper_trio.breakpoint()


class DapDebugger(TrioPdb):
    """The engine (through TrioPdb's stop bookkeeping) with a DAP front end.

    ``interaction()`` does not open a REPL: it hands the stop to the
    session, which serves the adapter's requests until one resumes.
    """

    session: DapSession

    def __init__(self, session: DapSession, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)
        self.session = session

    @property
    def tracer(self) -> Tracer:
        """The process's tracer, with the exception watch where it needs one."""
        return self.session.tracer()

    def message(self, msg: str) -> None:
        """pdb's messages ("--Return--"...) are a terminal's business: dropped."""

    def error(self, msg: str) -> None:
        """As ``message``."""

    def post_mortem_of(self, exc: BaseException) -> None:
        """Stop on an uncaught exception only if the client asked to."""
        if "uncaught" in self.session.exception_filters and self.session.attached:
            self.session.note_exception(exc, "unhandled")
            try:
                super().post_mortem_of(exc)
            finally:
                self.session.note_exception(None, "")

    def user_exception(self, frame: types.FrameType, exc_info: Any) -> None:
        """A step reached an exception: stop at its frame, with the exception."""
        if self._wait_for_mainpyfile:
            return
        self._note_stop_task()
        self.session.note_exception(exc_info[1], "always", exc_info[2])
        try:
            self.interaction(frame, None)
        finally:
            self.session.note_exception(None, "")

    def interaction(self, frame: types.FrameType | None, tb_or_exc: Any) -> None:
        if (
            frame is not None
            and tb_or_exc is None
            and _at_breakpoint(self.stop_reason)
            and not self.session.book.should_stop(
                getattr(self, "currentbp", None), frame, self.session.log
            )
        ):
            return  # a logpoint, or a hit condition not met: keep going
        self.session.serve_stop(self, frame, tb_or_exc)


#: What the session does with a stop when its adapter goes away.
LostPolicy = Literal["quit", "continue"]


class DapSession(DebugSession):
    """The process's debug session when a DAP adapter drives it.

    *search* is where function breakpoint names are looked up (None: the
    live ``sys.path`` and ``__main__``).  *lost* says what a stop does when
    the adapter goes away: the launched program quits, an attached one goes
    on.  *attached* says whether a client is there at all (an attachable
    program without one does not stop).
    """

    def __init__(
        self,
        endpoint: DapEndpoint,
        *,
        search: SearchPath | None = None,
        lost: LostPolicy = "quit",
        attached: bool = True,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.instrument = ThreadsInstrument(self)
        self.port = StopPort()
        self.threads = ThreadTable()
        self.book = BreakpointBook()
        self.sources = _dap_sources.SourceTable()
        #: Threads that are not the program's (the agent's, the adapter's).
        self.own_threads: set[int] = set()
        self.watch = _dap_exceptions.ExceptionWatch(
            self.stop_on_exception, _dap_exceptions.on_this_thread(self.own_threads)
        )
        self.exception_filters: frozenset[str] = frozenset()
        self.inspector = Inspector(self.sources)
        self.search = search
        self.lost_policy: LostPolicy = lost
        self.attached = attached
        #: Quit at the next stop instead of serving it (terminate while running).
        self.quit_at_next_stop = False
        #: The endpoint sent SIGINT to pause for a client.
        self.pause_signal_sent = False
        #: Functions for the main thread, run by the SIGINT handler.
        self._main_calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._exception: (
            tuple[BaseException, str, types.TracebackType | None] | None
        ) = None
        self._stop_lock = threading.Lock()
        self._configuration: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._tracer: Tracer | None = None
        self.current: Stop | None = None
        endpoint.session = self

    def debugger(self) -> DapDebugger:
        """This thread's debugger: a ``DapDebugger``, breakpoints shared."""
        found = super().debugger()
        assert isinstance(found, DapDebugger)
        return found

    def new_debugger(self) -> DapDebugger:
        # (pdbpp's metaclass takes use_global_pdb out of the arguments.)
        return DapDebugger(self, use_global_pdb=False)

    def main_debugger(self) -> DapDebugger:
        """The debugger whose breakpoint index every thread shares."""
        main = self._main_debugger
        if isinstance(main, DapDebugger):
            return main
        return self.debugger()

    def tracer(self) -> Tracer:
        """The tracer every debugger of this session arms."""
        if self._tracer is None:
            self._tracer = self.watch.wrap_tracer(_tracing.current_tracer())
        return self._tracer

    def log(self, text: str) -> None:
        """Show *text* in the client's debug console."""
        self.endpoint.post_event("output", {"category": "console", "output": text})

    def task_started(self, task: trio.lowlevel.Task) -> None:
        """List *task* as a DAP thread (and say so) unless it is trio's own."""
        if task.name.startswith("<") or _trio_internals.is_system_task(task):
            return
        number = _tasks.REGISTRY.id_of(task)
        self.threads.add(number, task.name)
        self.endpoint.post_event(
            "thread", {"reason": "started", "threadId": number}, urgent=False
        )

    # -- exceptions ------------------------------------------------------------

    def note_exception(
        self,
        exc: BaseException | None,
        mode: str,
        tb: types.TracebackType | None = None,
    ) -> None:
        """The next stop is about *exc* (None: no longer), with ``breakMode``
        *mode* and its traceback so far *tb*."""
        self._exception = None if exc is None else (exc, mode, tb)

    def stop_on_exception(
        self,
        frame: types.FrameType,
        exc: BaseException,
        tb: types.TracebackType | None,
        mode: str,
    ) -> None:
        """Stop at *frame* for *exc*, reported by the exception watch."""
        debugger = self.debugger()
        if debugger._in_repl or debugger.quitting or self.disabled or not self.attached:
            return
        self.note_exception(exc, _dap_exceptions.BREAK_MODES[mode], tb)
        try:
            self.pause_here(frame, reason=f"exception ({mode})")
        finally:
            self.note_exception(None, "")

    def supervise(self, *, sigint: bool = True) -> None:
        super().supervise(sigint=sigint)
        if (
            self.supervise_sigint
            and threading.current_thread() is threading.main_thread()
        ):
            # Outside trio, the program's main thread is reached through
            # SIGINT: a breakpoint an editor sets while a frame of that
            # thread already runs the function is traced there (before
            # 3.12 only that thread can switch its tracing on).
            self.outside_trio = (threading.get_ident(), self._in_main_thread)
            if _tracing.program_thread is None:
                _tracing.program_thread = self.outside_trio

    def _in_main_thread(self, function: Callable[[], None]) -> None:
        """Run *function* in the main thread soon (from the SIGINT handler,
        once the running bytecode or system call lets it)."""
        self._main_calls.put(function)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        ran = False
        while True:
            try:
                call = self._main_calls.get_nowait()
            except queue.Empty:
                break
            call()
            ran = True
        if ran and not self.pause_signal_sent:
            return  # the signal was ours (a Ctrl-C at the same time is lost)
        # With no client attached, nobody could serve a pause: Ctrl-C is
        # the program's (``dapper-trio run --listen`` at a terminal) -- unless
        # the signal is a client's pause on its way (``pause_signal_sent``).
        sent, self.pause_signal_sent = self.pause_signal_sent, False
        if not self.attached and not sent and self._repl_thread is None:
            self._ki_fallback(signum, frame)
            return
        super()._on_sigint(signum, frame)

    def _quit_by_interrupt(self) -> None:
        # The debugger quit where raising would hurt trio (its scheduler, an
        # idle pause).  With trio's KeyboardInterrupt handler (a run in the
        # main thread) the session delivers one.  Without it (an in-process
        # program, a run in another thread), cancel the program's own cancel
        # scopes: every task wakes up, and the first line one of them runs
        # stops -- and quits, raising DebuggerQuit in that task.
        if self._ki_fallback is not signal.default_int_handler:
            super()._quit_by_interrupt()
            return
        self.quit_requested = True
        self.quit_at_next_stop = True
        task = _trio_internals.main_task()
        if task is None:
            return
        owners = _trio_internals.nursery_owners(task)
        for info in _trio_internals.cancel_scopes(task):
            nursery = owners.get(id(info.scope))
            if nursery is not None and _trio_internals.is_system_task(
                nursery.parent_task
            ):
                break  # from here outwards the scopes are trio's own
            info.scope.cancel()
        self.debugger().request_pause(None, task=ANY_TASK)

    def pause_soon(self) -> None:
        """Pause at the next line any task runs, or on the main task's await
        chain if the loop stays idle.  Call it in the program's trio thread
        (``run_sync_soon``): the way to pause without SIGINT."""
        self._pending_pause_at = time.monotonic()
        self._request_pause(None)

    # -- a stop --------------------------------------------------------------

    def serve_stop(
        self, debugger: DapDebugger, frame: types.FrameType | None, tb: Any
    ) -> None:
        """Tell the adapter the program stopped; serve it until it resumes."""
        with self._stop_lock:
            self.clear_pending_pause()
            if self.quit_at_next_stop:
                debugger.set_quit()
                return
            if not self.attached:
                debugger.set_continue()  # nobody to stop for
                return
            stop = self._make_stop(debugger, frame, tb)
            self.current = stop
            _session._flush_std_streams()
            self.port.open()
            self.endpoint.pause_served()
            self.apply_configuration()
            reason = _dap_reason(debugger.stop_reason, stop.exception is not None)
            if reason == "exception":
                description = _EXCEPTION_STOPS[stop.break_mode]
            else:
                description = "paused" if reason == "pause" else debugger.stop_reason
            body: dict[str, Any] = {
                "reason": reason,
                "description": description,
                "threadId": stop.thread_id,
                "allThreadsStopped": True,
            }
            if reason == "breakpoint" and _at_breakpoint(debugger.stop_reason):
                function, dap_id = self.book.describe(
                    getattr(debugger, "currentbp", None)
                )
                if function:
                    body["reason"] = "function breakpoint"
                if dap_id is not None:
                    body["hitBreakpointIds"] = [dap_id]
            if stop.exception is not None:
                body["text"] = one_line(stop.exception)
            self.endpoint.post_event("stopped", body)
            debugger._in_repl = True
            try:
                while True:
                    command = self.port.take()
                    if command is None:  # the adapter is gone
                        if self.lost_policy == "quit":
                            debugger.set_quit()
                        else:
                            debugger.set_continue()
                        break
                    if self._serve(stop, command):
                        break
            finally:
                debugger._in_repl = False
                self.port.close()
                self.inspector.forget()
                self.current = None
                self.endpoint.post_event(
                    "continued",
                    {"threadId": stop.thread_id, "allThreadsContinued": True},
                )

    def _make_stop(
        self, debugger: DapDebugger, frame: types.FrameType | None, tb: Any
    ) -> Stop:
        noted = self._exception
        root, mode, so_far = noted if noted is not None else (None, "unhandled", None)
        if isinstance(tb, BaseException):
            root, tb = tb, tb.__traceback__
        exception = root
        if root is not None and tb is not None:
            # A group's post-mortem shows one leaf: the one whose traceback
            # it is.
            for leaf, leaf_tb in leaf_exceptions(root):
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
        elif threading.get_ident() == self.threads.program_thread:
            thread_id, name = MAIN_THREAD_ID, self.threads.program_thread_name
        else:
            thread = threading.current_thread()
            thread_id = MAIN_THREAD_ID + 1 + (thread.ident or 0) % 1_000_000
            name = thread.name
        top = stack[-1][0] if stack else frame
        return Stop(
            debugger, top, thread_id, name, stack, exception, root, mode, so_far
        )

    def _serve(self, stop: Stop, command: Command) -> bool:
        """Run one command in the stopped thread; True if it resumes."""
        try:
            result = self._run(stop, command.name, command.arguments)
        except Exception as exc:
            command.deliver(Error(exc))
            return False
        command.deliver(Value(result))
        return command.name in RESUMING

    def _run(self, stop: Stop, name: str, arguments: Mapping[str, Any]) -> Any:
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
        inspector = self.inspector
        handlers: dict[str, Callable[[Stop, Mapping[str, Any]], Any]] = {
            "stackTrace": inspector.stack_trace,
            "scopes": inspector.scopes,
            "variables": inspector.variables,
            "evaluate": inspector.evaluate,
            "setVariable": inspector.set_variable,
            "exceptionInfo": inspector.exception_info,
            "completions": inspector.completions,
            "applyConfiguration": lambda stop, arguments: self.apply_configuration(),
        }
        handler = handlers.get(name)
        if handler is None:
            raise CommandError(f"the debuggee does not handle {name!r}")
        return handler(stop, arguments)

    # -- answered while the program runs --------------------------------------

    def completions_running(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``completions`` with the program running: names of ``__main__``."""
        main = sys.modules.get("__main__")
        namespace = dict(vars(main)) if main is not None else {}
        return {
            "targets": _dap_completions.complete(
                arguments["text"], arguments["column"], namespace
            )
        }

    def source(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The text of a ``sourceReference`` (or of a path)."""
        reference = arguments.get("sourceReference") or 0
        if reference:
            try:
                content = self.sources.content(reference)
            except LookupError as exc:
                raise CommandError(str(exc)) from None
            return {"content": content, "mimeType": "text/x-python"}
        path = arguments.get("path")
        if not isinstance(path, str) or not path:
            raise CommandError("source: give a 'sourceReference' or a source 'path'")
        try:
            return {
                "content": _dap_sources.read_file(path),
                "mimeType": "text/x-python",
            }
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None

    def search_path(self) -> SearchPath:
        """Where function breakpoint names are looked up now."""
        if self.search is not None:
            return self.search
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        return SearchPath(
            os.path.abspath(main_file) if isinstance(main_file, str) else None,
            tuple(entry or os.getcwd() for entry in sys.path),
            os.getcwd(),
        )

    def resolve_functions(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Where each function breakpoint would go (nothing is set)."""
        search = self.search_path()
        results = []
        for spec in arguments.get("breakpoints", []):
            try:
                first = resolve(str(spec.get("name", "")), search)[0]
            except LookupError as exc:
                results.append({"verified": False, "message": str(exc)})
                continue
            results.append(
                {
                    "verified": True,
                    "line": first.line,
                    "source": {
                        "name": os.path.basename(first.filename),
                        "path": first.filename,
                    },
                }
            )
        return {"breakpoints": results}

    # -- configuration -------------------------------------------------------

    def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a client's whole configuration (launch, or a new attach)."""
        self.set_exception_filters({"filters": config.get("exception_filters", [])})
        for path, specs in config.get("breakpoints", {}).items():
            self.set_breakpoints({"path": path, "breakpoints": specs})
        functions = self.set_function_breakpoints(
            {"breakpoints": config.get("function_breakpoints", [])}
        )
        return {"functionBreakpoints": functions["breakpoints"]}

    def detach(self) -> dict[str, Any]:
        """Forget the client's breakpoints and filters (it detached)."""
        self.book.clear(self.main_debugger())
        self.set_exception_filters({"filters": []})
        return {}

    def set_breakpoints(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a file's breakpoints (in whichever thread may touch them)."""
        results = self.book.set_file(
            self.main_debugger(), arguments["path"], list(arguments["breakpoints"])
        )
        return {"breakpoints": results}

    def set_function_breakpoints(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the function breakpoints."""
        results = self.book.set_functions(
            self.main_debugger(), list(arguments["breakpoints"]), self.search_path()
        )
        return {"breakpoints": results}

    def set_exception_filters(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        self.exception_filters = frozenset(arguments.get("filters", ()))
        self.watch.set_filters(self.exception_filters)
        return {}

    def queue_configuration(self, command: Command) -> None:
        """Have *command* applied by the program (see the module docstring)."""
        self._configuration.put(command)
        if self.port.submit(Command("applyConfiguration", {}, _ignore)):
            return  # the stopped thread applies it
        token = self.threads.trio_token
        if token is not None:
            try:
                token.run_sync_soon(self._apply_configuration_in_loop)
                return
            except RuntimeError:  # trio.RunFinishedError: the run has ended
                pass
        self.apply_configuration()

    def _apply_configuration_in_loop(self) -> None:
        # In the program's trio thread, while it runs: after the breakpoints
        # change, the tracer is armed again here, where it can trace the
        # coroutines that were suspended in code older than the breakpoints.
        self.apply_configuration()
        if not self.port.stopped:
            self.debugger()._arm(None)

    def apply_configuration(self) -> None:
        """Apply every queued configuration command, each exactly once."""
        while True:
            try:
                command = self._configuration.get_nowait()
            except queue.Empty:
                return
            command.deliver(capture(self._configure_now, command))

    def _configure_now(self, command: Command) -> Any:
        name, arguments = command.name, command.arguments
        if name == "setBreakpoints":
            return self.set_breakpoints(arguments)
        if name == "setFunctionBreakpoints":
            return self.set_function_breakpoints(arguments)
        if name == "setExceptionBreakpoints":
            return self.set_exception_filters(arguments)
        if name == "configure":
            return self.configure(arguments)
        if name == "detach":
            return self.detach()
        raise CommandError(f"the debuggee does not handle {name!r}")

    def stopped_thread(self) -> tuple[int, str] | None:
        current = self.current
        return None if current is None else (current.thread_id, current.thread_name)


__all__ = ["MAIN_THREAD_ID", "DapDebugger", "DapSession"]
