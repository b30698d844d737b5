"""Process-wide debugger state: one REPL at a time, Ctrl-C, and trio runs.

Theory of operation (Ctrl-C)
============================

The problem.  Three parties want SIGINT: trio (KeyboardInterrupt into the
run, delivered at a checkpoint when the interrupted code is KI-protected), pdb
(which installs its own handler in ``continue`` and keeps the previous one on
a class attribute, so after ``c`` a Ctrl-C breaks into pdb instead of reaching
trio: trio issue 1155), and the person at the terminal, who expects Ctrl-C at
a prompt to clear the line and, under ``dapper-trio run``, Ctrl-C while the
program runs to pause it.

Things that don't work.  Letting pdb install its handler (``nosigint=False``)
loses trio's handler for good.  Installing ours before ``trio.run`` starts
makes trio skip installing its own (it only installs over the default), so
KI protection is lost.  Pausing from inside the signal handler when the trio
loop is idle in epoll never happens: no user code runs, so no trace event
fires (debugpy issue 1376).

The design.  The REPL is always built with ``nosigint=True``.  While a REPL is
open, our handler is installed (main thread only) and turns Ctrl-C into a
KeyboardInterrupt *only while the REPL reads input or runs a command*, which
the REPL catches to redraw its prompt; on leaving the REPL the previous
handler is put back, but only if ours is still the installed one.  Under
``dapper-trio run`` (``supervise_sigint``) our handler stays installed for the
whole program: ``trio.run`` is wrapped so that trio installs its handler
first, and dapper-trio's instrument then wraps it in ``before_run``.  A Ctrl-C
while the program runs asks for a pause: if user code was interrupted, the
debugger stops at its next line in the same task; otherwise (trio internals,
or an idle loop) the next user line of any task stops, and a callback sent
through ``TrioToken.run_sync_soon`` wakes the loop and opens the REPL on the
main task's await chain if nothing ran first.  A second Ctrl-C within one
second, before the pause was served, calls trio's own handler: a normal
KeyboardInterrupt.

Known holes.  A REPL in a worker thread cannot be interrupted at its prompt
(Python runs signal handlers only in the main thread), so Ctrl-C there is
ignored rather than clearing the line.  A program stuck in a long C call
pauses only when the call returns (a second Ctrl-C interrupts it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from . import _frames, _tasks, _tracing, _trio_import, _trio_internals
from ._engine import ANY_TASK, DebuggerQuit

if TYPE_CHECKING:
    import trio

    from ._repl import TrioPdb

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

SigintHandler = Callable[[int, types.FrameType | None], Any]

#: A second Ctrl-C within this many seconds of an unserved pause request
#: delivers a normal KeyboardInterrupt.
DOUBLE_PRESS_SECONDS = 1.0


def breakpoints_disabled() -> bool:
    """True when ``PYTHONBREAKPOINT=0`` turns debugging off (read on each call)."""
    return os.environ.get("PYTHONBREAKPOINT") == "0"


def is_quit(exc: BaseException, *, quit_requested: bool) -> bool:
    """True if *exc* is only the debugger quitting (possibly inside groups)."""
    if isinstance(exc, DebuggerQuit):
        return True
    origin = getattr(exc, "origin", None)  # an actor's error: where it started
    if getattr(origin, "error_type", None) == DebuggerQuit.__name__:
        return True  # the debugger quit in a child actor
    if isinstance(exc, KeyboardInterrupt):
        return quit_requested
    if isinstance(exc, BaseExceptionGroup):
        leaves = [leaf for leaf in _iter_leaves(exc) if not _is_cancelled(leaf)]
        return bool(leaves) and all(
            is_quit(leaf, quit_requested=quit_requested) for leaf in leaves
        )
    return False


def _is_cancelled(exc: BaseException) -> bool:
    trio = _trio_import.loaded()
    return trio is not None and isinstance(exc, trio.Cancelled)


def _iter_leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for child in exc.exceptions:
            yield from _iter_leaves(child)
    else:
        yield exc


QUIT_MESSAGE = "[dapper-trio] debugger quit: the program was stopped."


class TreeTerminal(Protocol):
    """A terminal shared by a process tree (set by ``_actor_debug`` in debug mode)."""

    def hold(self, debugger: TrioPdb) -> contextlib.AbstractContextManager[bool]:
        """Wait for the tree's terminal and hold it around one REPL.

        Yields False, holding nothing, if the program is quitting.
        """

    def busy(self) -> bool:
        """True while another process of the tree holds or waits for it."""

    def procs(self) -> list[str]:
        """The tree's processes, one line each (the ``procs`` command)."""


if TYPE_CHECKING:
    _Instrument = trio.abc.Instrument
else:
    _Instrument = object


class SessionInstrument(_Instrument):
    """Task ids and exits for the registry; Ctrl-C wrapping around each run.

    A trio instrument, duck-typed (see _tasks.TaskInstrument).
    """

    def __init__(self, session: DebugSession) -> None:
        self.session = session

    def before_run(self) -> None:
        self.session._run_started()

    def after_run(self) -> None:
        self.session._run_finished()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        _tasks.REGISTRY.spawned(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        _tasks.REGISTRY.exited(task)


class DebugSession:
    """Everything the debugger keeps per process.

    There is one session per process (``get_session()``).  It owns the
    debugger instance of each thread, serialises REPLs, and handles SIGINT.
    """

    def __init__(self, *, process_name: str | None = None) -> None:
        self.process_name = process_name or _default_process_name()
        self.supervise_sigint = False
        #: The program's thread, and how to run a function there, while no
        #: trio run is on (``_tracing.program_thread``); None: no way.
        self.outside_trio: _tracing.ProgramThread | None = None
        self.disabled = False
        self.quit_requested = False
        self.instrument = SessionInstrument(self)
        self._local = threading.local()
        self._main_debugger: TrioPdb | None = None
        self._repl_lock = threading.RLock()
        self._waiting_threads: set[int] = set()
        self._repl_thread: int | None = None
        self._repl_debugger: TrioPdb | None = None
        self._pending_pause_at: float | None = None
        self._ki_fallback: SigintHandler = signal.default_int_handler
        self._token: trio.lowlevel.TrioToken | None = None
        self._instrumented_runner: object = None
        #: The thread running the program's trio loop, once known.
        self.trio_thread: int | None = None
        self._real_trio_run: Callable[..., Any] | None = None
        self._wrap_pending = False
        #: In a debug-mode actor tree: the tree's terminal, which every REPL
        #: of this process holds (after this process's own REPL lock).
        self.tree: TreeTerminal | None = None
        #: Called (once) before the first REPL opens: a debuggee waits there
        #: until its supervisor is serving (see _debuggee).
        self.repl_gate: Callable[[], object] | None = None
        # A breakpoint reached in a thread without a debugger gets this
        # session's (breakpoints are shared by the session's debuggers).
        _tracing.debugger_factory = self.debugger

    # -- identity ---------------------------------------------------------

    def describe_process(self) -> str:
        return f"{self.process_name} (pid {os.getpid()})"

    # -- debuggers ----------------------------------------------------------

    def debugger(self) -> TrioPdb:
        """This thread's debugger (created on first use; breakpoints shared)."""
        existing: TrioPdb | None = getattr(self._local, "debugger", None)
        if existing is not None:
            return existing
        created = self.new_debugger()
        created.quit_without_raising = self._quit_by_interrupt
        if self._main_debugger is None:
            self._main_debugger = created
        else:
            # bdb keeps Breakpoint objects globally but the file->lines index
            # per instance: share it so every thread sees every breakpoint.
            created.breaks = self._main_debugger.breaks
        self._local.debugger = created
        return created

    def new_debugger(self) -> TrioPdb:
        """Build a debugger for the calling thread (``debugger()`` calls it once).

        A front end's session overrides this to use its own debugger class
        (the DAP server's does); the rest of ``debugger()`` -- one per
        thread, the breakpoint index shared -- stays the same.
        """
        from ._repl import TrioPdb

        # (pdbpp's metaclass takes use_global_pdb out of the arguments.)
        return TrioPdb(self, use_global_pdb=False)

    # -- one REPL at a time -------------------------------------------------

    @contextlib.contextmanager
    def repl_turn(
        self, debugger: TrioPdb, frame: types.FrameType | None, tb: Any
    ) -> Iterator[bool]:
        """Hold the terminal for one REPL; yields False if no REPL can open."""
        if self.disabled:
            yield False
            return
        me = threading.get_ident()
        self._waiting_threads.add(me)
        try:
            self._repl_lock.acquire()
        finally:
            self._waiting_threads.discard(me)
        try:
            gate, self.repl_gate = self.repl_gate, None
            if gate is not None:
                gate()
            self._pending_pause_at = None
            tree = self.tree
            hold = contextlib.nullcontext(True) if tree is None else tree.hold(debugger)
            with hold as granted:
                if not granted:
                    # A user quit in another process: the program is stopping.
                    debugger.set_quit()
                    self.quit_requested = True
                    self.disabled = True
                    yield False
                    return
                if not _stdin_is_terminal():
                    _say_no_terminal(debugger, frame, tb)
                    yield False
                    return
                outer = (self._repl_thread, self._repl_debugger)
                self._repl_thread = threading.get_ident()
                self._repl_debugger = debugger
                restore = self._install_sigint_for_repl()
                _flush_std_streams()
                self._ensure_instrument()
                try:
                    yield True
                finally:
                    restore()
                    self._repl_thread, self._repl_debugger = outer
                    if debugger.quitting:
                        self.quit_requested = True
                        self.disabled = True
        finally:
            self._repl_lock.release()

    def is_waiting_for_repl(self, thread_ident: int) -> bool:
        """True if *thread_ident* is blocked waiting for another REPL to end."""
        return thread_ident in self._waiting_threads

    def pause_pending(self) -> bool:
        """True if a Ctrl-C asked for a pause that no stop has served yet."""
        return self._pending_pause_at is not None

    def clear_pending_pause(self) -> None:
        self._pending_pause_at = None

    def _ensure_instrument(self) -> None:
        runner = _trio_internals.current_runner()
        if runner is None or runner is self._instrumented_runner:
            return  # not in a trio thread, or done already for this run
        self._instrumented_runner = runner
        import trio

        try:
            trio.lowlevel.add_instrument(self.instrument)
            self._token = trio.lowlevel.current_trio_token()
            self.trio_thread = threading.get_ident()
        except RuntimeError:  # pragma: no cover - between runs
            pass

    # -- pausing from program code -------------------------------------------

    def pause_here(
        self,
        frame: types.FrameType,
        *,
        reason: str,
        task: trio.lowlevel.Task | None = None,
    ) -> None:
        """Open the REPL at *frame* now, then trace as the user's command asks.

        Raises DebuggerQuit if the user quit.
        """
        if self.disabled:
            return
        debugger = self.debugger()
        debugger.stop_task = (
            task if task is not None else _trio_internals.current_task_or_none()
        )
        debugger.stop_reason = reason
        debugger._via_set_trace_frame = frame
        debugger.enter_live(frame)
        if debugger.quitting:
            raise DebuggerQuit

    # -- SIGINT -----------------------------------------------------------

    def _install_sigint_for_repl(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return _nothing
        previous = _getsignal(signal.SIGINT)
        if previous == self._on_sigint:
            return _nothing
        _setsignal(signal.SIGINT, self._on_sigint)

        def restore() -> None:
            # Put the previous handler back only if ours is still installed:
            # the program may have installed its own meanwhile.
            if _getsignal(signal.SIGINT) == self._on_sigint:
                _setsignal(signal.SIGINT, previous)

        return restore

    def supervise(self, *, sigint: bool = True) -> None:
        """Watch the whole program (``dapper-trio run``).

        ``trio.run`` gets dapper-trio's instrument; with *sigint*, SIGINT is
        owned for the whole program and Ctrl-C pauses it.  (Without it -- the
        program was started with SIGINT ignored -- it stays ignored.)
        """
        if sigint:
            self.supervise_sigint = True
            self._ki_fallback = signal.default_int_handler
            signal.signal(signal.SIGINT, self._on_sigint)
        self._wrap_trio_run()

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        repl_thread = self._repl_thread
        if repl_thread is not None:
            debugger = self._repl_debugger
            if (
                repl_thread == threading.get_ident()
                and debugger is not None
                and debugger.allow_kbdint
            ):
                raise KeyboardInterrupt
            # A REPL is open (in another thread, or still drawing): Ctrl-C
            # never kills or cancels anything then.
            return
        tree = self.tree
        if tree is not None and tree.busy():
            return  # nor while one is open or awaited in another process
        if not self.supervise_sigint or self.disabled:
            self._ki_fallback(signum, frame)
            return
        now = time.monotonic()
        pending = self._pending_pause_at
        if pending is not None and now - pending < DOUBLE_PRESS_SECONDS:
            self._pending_pause_at = None
            debugger = self._main_debugger
            if debugger is not None:
                debugger.cancel_pause()
            self._ki_fallback(signum, frame)
            return
        self._pending_pause_at = now
        self._request_pause(frame)

    def _request_pause(self, frame: types.FrameType | None) -> None:
        debugger = self.debugger()
        task = _trio_internals.current_task_or_none()
        if (
            frame is not None
            and not _frames.is_hidden_frame(frame)
            and task is not None
        ):
            debugger.request_pause(frame, task=task)
        else:
            debugger.request_pause(frame, task=ANY_TASK)
            token = self._token
            if token is not None:
                import trio

                try:
                    token.run_sync_soon(self._pause_idle_loop)
                except trio.RunFinishedError:  # pragma: no cover - racing exit
                    pass

    def _pause_idle_loop(self, second_look: bool = False) -> None:
        # Runs in trio's run_sync_soon task: the loop woke up for us.  If no
        # user code has run since Ctrl-C, the program is waiting on I/O or a
        # timer: pause on the main task's await chain.
        #
        # "No user code has run" needs two looks: tasks in the same scheduling
        # batch as this callback may still be about to run (trio takes a batch
        # out of its run queue before running it, so they are not counted as
        # runnable), and the first user line one of them runs is where the
        # pause belongs.  So the first look only comes back after the batch;
        # the second also waits while any task is runnable.
        if self._pending_pause_at is None:
            return
        import trio

        busy = trio.lowlevel.current_statistics().tasks_runnable > 0
        if not second_look or busy:
            if self._token is not None:
                self._token.run_sync_soon(self._pause_idle_loop, True)
            return
        task = _trio_internals.main_task()
        debugger = self.debugger()
        if task is None or not _frames.suspended_task_stack(task):
            return
        found = _frames.innermost_user_frame(_frames.suspended_task_stack(task))
        if found is None:
            return
        debugger.stop_task = task
        debugger.stop_reason = "interrupted (Ctrl-C) while the trio loop was idle"
        debugger.enter_suspended(found[0])
        if debugger.quitting:
            self._quit_by_interrupt()

    def _quit_by_interrupt(self) -> None:
        # We are in trio's scheduler or one of its system tasks, where an
        # exception would be a TrioInternalError: quit by delivering a normal
        # KeyboardInterrupt to the run (trio's own handler), which unwinds
        # every task; the launcher reports it as the debugger quitting.
        self.quit_requested = True
        self.disabled = True
        self._ki_fallback(signal.SIGINT, sys._getframe())

    # -- trio.run integration -------------------------------------------------

    def _wrap_trio_run(self) -> None:
        # When the program imports trio (at once if it has).
        if self._real_trio_run is None and not self._wrap_pending:
            self._wrap_pending = True
            _trio_import.when_imported(self._wrap_run_of)

    def _wrap_run_of(self, trio: Any) -> None:
        self._wrap_pending = False
        if self._real_trio_run is not None:
            return
        real = trio.run
        self._real_trio_run = real
        session = self
        seamless = _share_sigint_with_trio()

        def run(async_fn: Any, *args: Any, **kwargs: Any) -> Any:
            instruments = list(kwargs.pop("instruments", ()))
            if session.instrument not in instruments:
                instruments.append(session.instrument)
            # Let trio install its own KI handler; the instrument wraps it.
            # (Where trio's KIManager could not be wrapped: the old way, with
            # its gap.)
            if not seamless and signal.getsignal(signal.SIGINT) == session._on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                return real(async_fn, *args, instruments=instruments, **kwargs)
            finally:
                session._ki_fallback = signal.default_int_handler
                if (
                    session.supervise_sigint
                    and threading.current_thread() is threading.main_thread()
                ):
                    signal.signal(signal.SIGINT, session._on_sigint)

        run.__doc__ = real.__doc__
        run.__wrapped__ = real  # type: ignore[attr-defined]
        trio.run = run

    def _run_started(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self.trio_thread = threading.get_ident()
        _tracing.program_thread = (self.trio_thread, self._token.run_sync_soon)
        if (
            self.supervise_sigint
            and threading.current_thread() is threading.main_thread()
        ):
            installed = signal.getsignal(signal.SIGINT)
            if installed != self._on_sigint and callable(installed):
                self._ki_fallback = installed
            signal.signal(signal.SIGINT, self._on_sigint)

    def _run_finished(self) -> None:
        self._token = None
        _tracing.program_thread = self.outside_trio
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) == self._on_sigint:
            fallback = self._ki_fallback
            signal.signal(signal.SIGINT, fallback)
        self._ki_fallback = signal.default_int_handler

    # -- quitting ---------------------------------------------------------

    def install_excepthook(self) -> None:
        """Make an uncaught DebuggerQuit print one line instead of a traceback."""
        previous = sys.excepthook
        if getattr(previous, "__dapper_trio__", False):
            return
        session = self

        def hook(
            exc_type: type[BaseException],
            exc: BaseException,
            tb: types.TracebackType | None,
        ) -> None:
            if is_quit(exc, quit_requested=session.quit_requested):
                print(QUIT_MESSAGE, file=sys.stderr, flush=True)
                return
            previous(exc_type, exc, tb)

        hook.__dapper_trio__ = True  # type: ignore[attr-defined]
        sys.excepthook = hook


def _share_sigint_with_trio() -> bool:
    """Let ``trio.run`` make its KeyboardInterrupt handler without a gap in ours.

    trio installs its handler only over ``signal.default_int_handler``.  The
    session used to put that back for the whole of trio's set-up, up to its
    ``before_run`` instrument call: a Ctrl-C in those milliseconds (or an
    editor's pause, which is a SIGINT too) reached trio's handler, and the
    program died of a KeyboardInterrupt.  Now the swap happens inside
    ``KIManager.install`` only: the session's handler is back as soon as
    trio's exists (and becomes its fallback, for a second Ctrl-C).  A SIGINT
    in the few bytecodes in between is caught there and served as a pause.

    Returns False if this trio has no ``KIManager.install`` to wrap.
    """
    try:
        from trio._core import _ki
    except ImportError:  # pragma: no cover - a trio without it
        return False
    manager = getattr(_ki, "KIManager", None)
    real_install = getattr(manager, "install", None)
    if manager is None or real_install is None:  # pragma: no cover
        return False
    if getattr(real_install, "__dapper_trio__", False):
        return True

    def install(
        ki_manager: Any,
        deliver_cb: Callable[[], object],
        restrict_keyboard_interrupt_to_checkpoints: bool,
    ) -> None:
        installed = signal.getsignal(signal.SIGINT)
        session = getattr(installed, "__self__", None)
        if (
            threading.current_thread() is not threading.main_thread()
            or not isinstance(session, DebugSession)
            or installed != session._on_sigint
        ):
            real_install(
                ki_manager, deliver_cb, restrict_keyboard_interrupt_to_checkpoints
            )
            return
        missed = False
        gap = True

        def deliver() -> None:
            # trio's handler, with KeyboardInterrupt deferred to checkpoints.
            nonlocal missed
            if gap:
                missed = True
            else:
                deliver_cb()

        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            real_install(
                ki_manager, deliver, restrict_keyboard_interrupt_to_checkpoints
            )
        except KeyboardInterrupt:
            missed = True
        finally:
            if ki_manager.handler is not None:
                session._ki_fallback = ki_manager.handler
            signal.signal(signal.SIGINT, session._on_sigint)
            gap = False
        if missed:
            session._on_sigint(signal.SIGINT, sys._getframe())

    install.__dapper_trio__ = True  # type: ignore[attr-defined]
    install.__wrapped__ = real_install  # type: ignore[attr-defined]
    manager.install = install
    return True


def _nothing() -> None:
    return None


# signal.getsignal/signal.signal convert handlers to and from an enum on
# every call, which costs more than the rest of a step's bookkeeping; the C
# module's functions do the same job without it.
_getsignal: Callable[[int], Any]
_setsignal: Callable[[int, Any], Any]
try:
    _c_signal = importlib.import_module("_signal")
    _getsignal, _setsignal = _c_signal.getsignal, _c_signal.signal
except ImportError:  # pragma: no cover - not CPython
    _getsignal, _setsignal = signal.getsignal, signal.signal


def _default_process_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return os.path.basename(argv0) or "python"


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (ValueError, OSError):
            pass


def _say_no_terminal(debugger: TrioPdb, frame: types.FrameType | None, tb: Any) -> None:
    tb = getattr(tb, "__traceback__", tb)
    if frame is None and isinstance(tb, types.TracebackType):
        while tb.tb_next is not None:
            tb = tb.tb_next
        frame = tb.tb_frame
    at = f" at {_frames.describe_frame(frame)}" if frame is not None else ""
    print(
        f"{debugger.header()}{at}: no REPL can open because standard input is "
        "not a terminal; the program continues.",
        file=sys.stderr,
        flush=True,
    )


_SESSION: DebugSession | None = None
_SESSION_LOCK = threading.Lock()


def get_session() -> DebugSession:
    """The process's debug session, created on first use."""
    global _SESSION
    if _SESSION is None:
        with _SESSION_LOCK:
            if _SESSION is None:
                _SESSION = DebugSession()
                _SESSION.install_excepthook()
                from ._tree_join import join_from_environment

                join_from_environment()  # a process of a debugged program
    return _SESSION
