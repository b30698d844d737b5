"""Process trees: actor nurseries, portals, and the supervision of children.

Theory of operation
===================

The problem.  A program made of a tree of Python processes should be written
like a trio program: a child process is started in a nursery, the parent
waits for it, an error in it propagates and cancels its siblings,
cancelling the parent cancels it (its ``finally`` blocks run), and when the
nursery's block is left nothing is left behind -- no process, no zombie, no
socket file -- at any depth of the tree, even when a process dies or refuses
to stop.

Things that don't work.
* ``multiprocessing``: its pools and processes are not cancellable from
  trio, a dead worker is noticed late or never, and its fork start method
  copies a running trio loop into the child.
* Cancelling a child with SIGTERM: Python's default action ends the process
  without running one ``finally`` block.  Signals are the last resort, not
  the way to cancel.
* One shared listener per nursery, routing each connection to its child by
  the pid it announces: it works, but any child could speak for a sibling,
  and the routing table is one more thing to get right when a child dies
  before it connects.
* Supervising a child from a task that the nursery's cancellation reaches:
  that cancellation also tears down the connection to the child, at the very
  moment the child has to be told to stop and its last results (errors
  raised by its ``finally`` blocks) have to be read.
* Waiting for a cancelled remote call with ``Channel.request()``: a
  cancelled request is abandoned and its response discarded, so the
  parent could never learn how the call ended.

The design.  ``open_actor_nursery()`` is a trio nursery (its body is a task
of it, as in trio) holding one *supervisor task* per child and one watcher
task.  A supervisor task:

1. opens an IPC listener of its own (a fresh unix socket and a fresh token:
   so the connection that authenticates is that child, by construction),
   and starts ``python -c <prologue>`` with the token, its address, the
   child's name and path, the debug settings, the grace period, and this
   process's ``sys.path`` and ``__main__`` in ``DAPPER_TRIO_ACTOR`` (see
   ``_actor_context``, ``_actor_main``);
2. waits until the child connects (it is then *ready*: ``start_actor()``
   returns), until it exits, or for ``STARTUP_TIMEOUT``.  Once connected,
   the socket file is removed at once: it is not needed any more, and a
   parent killed with SIGKILL then leaves nothing behind;
3. then *shields itself* and waits until it is asked to stop (by
   ``Portal.cancel_actor()``, by the end of a ``run_in_actor()`` call, by
   the nursery's block ending, or by the nursery's cancellation, which the
   watcher task sees and turns into stop requests), or until the child
   exits or the connection ends on its own;
4. stops the child with the *ladder*: the ``cancel`` event (the child
   cancels its calls, lets them unwind and report, and exits), and if it
   has not exited after ``grace_period`` seconds, SIGTERM, and after another
   ``grace_period``, SIGKILL; then it reaps it and closes the connection;
5. reports: a child that ended without being asked to raises
   ``ProcessDied`` -- in the callers waiting for its results if there are
   any, else in the nursery, where it cancels the siblings like a task's
   error.

Calls (``Portal.run``, ``run_in_actor``) are made from the caller's task: the
function goes by reference and the arguments as a pickle in a ``run`` event,
and the caller waits for the ``result`` event with the same call id.  An
error comes back as ``RemoteError`` raised in the caller, and so takes part
in the error handling of whatever scope the caller is in (the nursery's
body: the nursery cancels its other children).  A cancelled caller sends
``cancel_call`` and waits, shielded, up to ``grace_period`` for the child to
report how the call ended, so a cancelled call's ``finally`` blocks have run
in the child when ``Cancelled`` propagates in the parent, and an error they
raise is raised instead (as trio does with an error raised while
unwinding).

Settings: ``debug_mode`` and ``crash_repl`` travel to every child in its
configuration.  In a process that is itself a child, a nursery's effective
``debug_mode`` is on if it was on for this process or is asked for (a
subtree may turn debug mode on, never off), and while it is on ``crash_repl``
is the inherited one: the root's choice holds for the whole tree.

Known holes.  Grace periods do not add up across levels: a middle process
stopping a slow grandchild may use up its own grace period and be killed by
its parent; its children then see their parent's connection end, cancel
themselves, and stop themselves with the same ladder, so nothing leaks, but
their ``finally`` blocks may be cut short.  Give inner nurseries shorter
grace periods than outer ones when that matters.  A call that ignores
cancellation for longer than ``grace_period`` is abandoned by its caller
(``Cancelled`` propagates) while the child goes on running it until the
actor is stopped.  The actor's stdout and stderr are the parent's.

Debug mode (``_actor_debug``, ``_tree_lock``): a debug-mode nursery makes
sure the tree's terminal lock exists (started here if this process is the
tree's root and no ``dapper-trio run`` session serves one already: see
``_tree_join``), passes its address, token and the terminal's descriptor to
each child, and reports each child started and reaped to the root.  Every
grace-period wait of the ladder (and of a cancelled call) runs on a clock
that stops while any process of the child's subtree holds or waits for the
terminal (``_grace.wait_within``, fed by a ``watch`` connection to the
root), so a process in a REPL is never signalled.  In the root, ``crash_repl``
``"every-hop"``/``"root"`` opens a post-mortem on a ``RemoteError`` before
it is raised to the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._actor_codec import dumps_args, function_ref, loads, main_info
from ._actor_context import ACTOR_ENV, CRASH_REPL_POLICIES, ChildConfig, CrashRepl
from ._actor_context import Actor as Actor
from ._actor_context import current_actor as current_actor
from ._actor_errors import ProcessDied as ProcessDied
from ._actor_errors import RemoteError as RemoteError
from ._actor_errors import error_from_dict, format_path
from ._grace import wait_within
from ._ipc import Channel, ConnectionLost, Listener, new_token, open_listener
from ._tree_lock import SubtreeWatch, watch_subtree
from ._wire import LocalProtocolError

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    from ._actor_debug import TreeDebug

    PosArgT = TypeVarTuple("PosArgT")

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import ExceptionGroup

__all__ = [
    "Actor",
    "ActorNursery",
    "Portal",
    "ProcessDied",
    "RemoteError",
    "current_actor",
    "open_actor_nursery",
]

RetT = TypeVar("RetT")

logger = logging.getLogger("dapper_trio.actors")

#: How long a child may take to start and connect before it is stopped.
STARTUP_TIMEOUT = 30.0
#: After a child has exited, how long we wait for the rest of what it sent.
_DRAIN_TIMEOUT = 1.0

# The child's command line: ignore SIGINT before anything else (see
# _actor_main), take the parent's sys.path, then import the runtime.
_PROLOGUE = (
    "import signal;signal.signal(signal.SIGINT,signal.SIG_IGN);"
    "import json,os,sys;"
    f"c=os.environ.pop({ACTOR_ENV!r});"
    "sys.path[:]=json.loads(c)['sys_path'];"
    "from dapper_trio._actor_main import main;main(c)"
)


def _child_command(path: tuple[str, ...]) -> list[str]:
    """The command line of a child actor (same interpreter and flags).

    It ends with a comment naming the actor, for ``ps`` and ``top``.
    """
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    label = "".join(c if c.isprintable() else "?" for c in format_path(path))
    return [sys.executable, *flags, "-c", f"{_PROLOGUE}  # dapper-trio actor {label}"]


def _check_settings(
    debug_mode: object, crash_repl: object, grace_period: object
) -> None:
    if not isinstance(debug_mode, bool):
        raise TypeError(f"debug_mode must be True or False, not {debug_mode!r}")
    if crash_repl not in CRASH_REPL_POLICIES:
        choices = ", ".join(repr(policy) for policy in CRASH_REPL_POLICIES)
        raise ValueError(f"crash_repl must be one of {choices}, not {crash_repl!r}")
    if (
        isinstance(grace_period, bool)
        or not isinstance(grace_period, (int, float))
        or not math.isfinite(grace_period)
        or grace_period < 0
    ):
        raise ValueError(
            "grace_period must be a finite number of seconds >= 0,"
            f" not {grace_period!r}"
        )


def open_actor_nursery(
    *,
    debug_mode: bool = False,
    crash_repl: CrashRepl = "origin",
    grace_period: float = 2.0,
) -> AbstractAsyncContextManager[ActorNursery]:
    """Open a nursery of child processes ("actors"): ``async with ... as an:``.

    Start children with ``an.run_in_actor()`` and ``an.start_actor()``.  The
    block works like a trio nursery's: an error raised in it (a
    ``RemoteError`` from a call, say) cancels the block and stops every
    child; a child that dies while no call waits for it raises
    ``ProcessDied`` in it (a call waiting gets it instead); leaving
    the block stops every child still running and waits until each one is
    reaped; errors leave as trio's nurseries raise them (an
    ``ExceptionGroup``).

    *debug_mode* and *crash_repl* (``"origin"``, ``"every-hop"`` or
    ``"root"``) are passed on to every descendant started under this
    nursery; see ``ActorNursery.debug_mode``.  *grace_period* is how long a
    child is given to exit after being asked to stop, and again after
    SIGTERM, before SIGKILL.

    Raises ``ValueError`` (``TypeError`` for *debug_mode*) at once for
    invalid settings.

    Cancellation: cancelling the block cancels every child's calls; leaving
    the block waits (shielded; children are stopped concurrently, so at most
    about twice *grace_period* in all) until every child is reaped.
    """
    _check_settings(debug_mode, crash_repl, grace_period)
    return _open_actor_nursery(debug_mode, crash_repl, float(grace_period))


@asynccontextmanager
async def _open_actor_nursery(
    debug_mode: bool, crash_repl: CrashRepl, grace_period: float
) -> AsyncIterator[ActorNursery]:
    me = current_actor()
    if not me.is_root and me.debug_mode:
        debug_mode, crash_repl = True, me.crash_repl
    with contextlib.ExitStack() as stack:
        tree: TreeDebug | None = None
        if debug_mode:
            from ._actor_debug import tree_debug

            tree = stack.enter_context(tree_debug())
        async with trio.open_nursery() as nursery:
            actor_nursery = ActorNursery(
                nursery,
                parent=me,
                debug_mode=debug_mode,
                crash_repl=crash_repl,
                grace_period=grace_period,
                tree=tree,
            )
            nursery.start_soon(
                actor_nursery._watch_for_cancel,
                name=f"actor nursery of {format_path(me.path)}",
            )
            try:
                yield actor_nursery
            finally:
                actor_nursery._close()


class ActorNursery:
    """Starts child processes and owns them (made by ``open_actor_nursery()``)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        parent: Actor,
        debug_mode: bool,
        crash_repl: CrashRepl,
        grace_period: float,
        tree: TreeDebug | None = None,
    ) -> None:
        self._nursery = nursery
        self._tree = tree
        self._parent = parent
        self._debug_mode = debug_mode
        self._crash_repl: CrashRepl = crash_repl
        self._grace_period = grace_period
        self._children: set[_Child] = set()
        self._closed = False
        self._stopping = False
        self._watch_scope = trio.CancelScope()

    def __repr__(self) -> str:
        return (
            f"<ActorNursery of {format_path(self._parent.path)}:"
            f" {len(self._children)} children>"
        )

    @property
    def debug_mode(self) -> bool:
        """Whether children run in debug mode (inherited ones included).

        In a child, debug mode is on if it was on for this process or this
        nursery asks for it.
        """
        return self._debug_mode

    @property
    def crash_repl(self) -> CrashRepl:
        """The crash REPL policy children get (an inherited one wins in debug mode)."""
        return self._crash_repl

    @property
    def grace_period(self) -> float:
        """Seconds a child gets to exit when asked, and again after SIGTERM."""
        return self._grace_period

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The cancel scope of the nursery: cancelling it stops every child."""
        return self._nursery.cancel_scope

    async def start_actor(self, name: str) -> Portal:
        """Start a long-lived child process called *name*; return its ``Portal``.

        Returns once the child has started and connected back, ready to run
        calls (``Portal.run``).  The child runs until ``Portal.cancel_actor()``
        or until the nursery's block ends.  Raises ``ProcessDied`` if it dies
        (or does not connect within ``STARTUP_TIMEOUT``) while starting, and
        ``RuntimeError`` if the nursery is closed or stopping.

        Cancellation: a child still starting is killed and reaped before
        ``Cancelled`` propagates.
        """
        if not isinstance(name, str):
            raise TypeError(f"an actor's name is a string, not {name!r}")
        if not name:
            raise ValueError("an actor's name must not be empty")
        if self._closed or self._stopping:
            await trio.lowlevel.checkpoint()
            state = "closed" if self._closed else "stopping"
            raise RuntimeError(f"this actor nursery is {state}; cannot start {name!r}")
        child = _Child(self, name)
        portal: Portal = await self._nursery.start(
            child.supervise, name=f"actor {format_path(child.path)}"
        )
        return portal

    async def run_in_actor(
        self,
        async_fn: Callable[[Unpack[PosArgT]], Awaitable[RetT]],
        *args: Unpack[PosArgT],
        name: str | None = None,
    ) -> RetT:
        """Run ``await async_fn(*args)`` in a new child process; return its result.

        *async_fn* must be an importable ``async def`` function and *args*
        picklable (``TypeError`` otherwise, before any process starts).  The
        child is named *name* (default: the function's name) and stopped and
        reaped before this returns.  An exception raised by the call is
        raised here as ``RemoteError``; a child that dies, as ``ProcessDied``.

        Cancellation: the call is cancelled in the child (its ``finally``
        blocks run; an error they raise is raised instead of ``Cancelled``),
        and the child is stopped and reaped -- at most about twice
        ``grace_period`` -- before ``Cancelled`` propagates.
        """
        ref = function_ref(async_fn)
        payload = dumps_args(async_fn, args)
        portal = await self.start_actor(name if name is not None else async_fn.__name__)
        try:
            result: RetT = await portal._child.call(ref, payload, async_fn.__qualname__)
            return result
        finally:
            with trio.CancelScope(shield=True):
                await portal._child.stop()

    # -- internals ----------------------------------------------------------

    async def _watch_for_cancel(self) -> None:
        # Supervisor tasks shield themselves once their child is ready, so the
        # nursery's cancellation reaches this task only; it turns it into
        # stop requests.  Also cancelled (by _close) when the block ends.
        try:
            with self._watch_scope:
                await trio.sleep_forever()
        finally:
            self._stop_all()

    def _close(self) -> None:
        self._closed = True
        self._watch_scope.cancel()
        self._stop_all()

    def _stop_all(self) -> None:
        self._stopping = True
        for child in list(self._children):
            child.request_stop()


class Portal:
    """A handle on a running child actor (from ``ActorNursery.start_actor()``)."""

    def __init__(self, child: _Child) -> None:
        self._child = child

    def __repr__(self) -> str:
        return f"<Portal to actor {format_path(self.path)} pid {self.pid}>"

    @property
    def name(self) -> str:
        """The child's name."""
        return self._child.name

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._child.pid

    @property
    def path(self) -> tuple[str, ...]:
        """The names from the root down to the child."""
        return self._child.path

    async def run(
        self,
        async_fn: Callable[[Unpack[PosArgT]], Awaitable[RetT]],
        *args: Unpack[PosArgT],
    ) -> RetT:
        """Run ``await async_fn(*args)`` in the child; return its result.

        Calls may overlap; each runs in a task of its own in the child.
        *async_fn* must be an importable ``async def`` function and *args*
        picklable (``TypeError`` otherwise, before anything is sent).  Raises
        ``RemoteError`` for an exception in the call, ``ProcessDied`` if the
        child dies first, and ``trio.ClosedResourceError`` if the actor is
        stopped (or stopping) before the call ends.

        Cancellation: the call is cancelled in the child, and this waits, for
        up to ``grace_period`` seconds, shielded, for it to unwind: an error
        raised while unwinding is raised instead of ``Cancelled``.  A call
        that takes longer is abandoned (it runs on until the actor stops).
        """
        ref = function_ref(async_fn)
        payload = dumps_args(async_fn, args)
        result: RetT = await self._child.call(ref, payload, async_fn.__qualname__)
        return result

    async def cancel_actor(self) -> None:
        """Stop the child and wait until it is reaped.

        Its calls are cancelled and unwind; after ``grace_period`` seconds it
        gets SIGTERM, after another SIGKILL.  Calls still waiting raise
        ``trio.ClosedResourceError``.  Idempotent.

        Cancellation: the child is stopped and reaped anyway (shielded, at
        most about twice ``grace_period``); ``Cancelled`` is raised after.
        """
        with trio.CancelScope(shield=True):
            await self._child.stop()
        await trio.lowlevel.checkpoint()


class _Slot:
    """One call waiting for its result."""

    __slots__ = ("error", "event", "label", "report")

    def __init__(self, label: str) -> None:
        self.label = label
        self.event = trio.Event()
        self.report: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def fill(
        self, report: dict[str, Any] | None = None, error: BaseException | None = None
    ) -> None:
        if not self.event.is_set():
            self.report, self.error = report, error
            self.event.set()


class _Child:
    """The parent's side of one child actor: its process, connection and calls."""

    def __init__(self, nursery: ActorNursery, name: str) -> None:
        self.name = name
        self.path = (*nursery._parent.path, name)
        self.pid = 0
        self._nursery = nursery
        self._grace = nursery.grace_period
        self._channel: Channel | None = None
        self._slots: dict[int, _Slot] = {}
        self._next_call = 1
        # Set when the supervisor should act: a stop request, the process's
        # exit, the connection's end.
        self._wake = trio.Event()
        self._stop_requested = False
        self._done = trio.Event()
        self._hold_scope = trio.CancelScope()
        self._connecting: trio.CancelScope | None = None
        # What happened, for _report.
        self._startup_failure = ""
        self._ended_by_itself = False
        self._connection_broke = False
        self._escalated = ""  # the last signal the ladder had to send
        self._died: ProcessDied | None = None
        self._orphan_errors: list[RemoteError | ProcessDied] = []

    # -- used by callers ----------------------------------------------------

    def request_stop(self) -> None:
        """Ask the supervisor task to stop the child (returns at once)."""
        self._stop_requested = True
        self._wake.set()

    async def stop(self) -> None:
        """Ask for the child to be stopped; wait until it is reaped."""
        self.request_stop()
        await self._done.wait()

    async def call(self, ref: dict[str, str], payload: str, label: str) -> Any:
        """Run a call in the child (see ``Portal.run``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        channel = self._channel
        if self._died is not None:
            raise self._death(f"before {label}() could run")
        if self._stop_requested or channel is None or self._done.is_set():
            raise trio.ClosedResourceError(
                f"actor {format_path(self.path)} is stopped; cannot run {label}()"
            )
        call_id = self._next_call
        self._next_call += 1
        slot = self._slots[call_id] = _Slot(label)
        try:
            try:
                await channel.send_event(
                    "run", {"call": call_id, "fn": ref, "args": payload}
                )
            except LocalProtocolError as exc:
                raise ValueError(
                    f"the arguments of {label}() are too large to send to a child"
                    f" process: {exc}"
                ) from exc
            except ConnectionLost:
                pass  # the supervisor will fill the slot with why
            try:
                await slot.event.wait()
            except trio.Cancelled:
                await self._cancel_call(call_id, slot)
                raise
            return self._unwrap(slot)
        finally:
            del self._slots[call_id]

    async def _cancel_call(self, call_id: int, slot: _Slot) -> None:
        # Tell the child, and give the call grace_period to unwind; an error
        # it raises while unwinding replaces Cancelled.
        with trio.CancelScope(shield=True):
            async with self._watch_debugger() as watch:
                channel = self._channel
                if channel is not None and not slot.event.is_set():
                    try:
                        await channel.send_event("cancel_call", {"call": call_id})
                    except ConnectionLost:
                        pass
                await wait_within(watch, self._grace, slot.event.wait)
        if isinstance(slot.error, ProcessDied):
            raise slot.error
        if slot.report is not None and "error" in slot.report:
            raise error_from_dict(slot.report["error"])

    def _unwrap(self, slot: _Slot) -> Any:
        if slot.error is not None:
            raise slot.error
        report = slot.report
        assert report is not None
        if "value" in report:
            return loads(report["value"])
        if "error" in report:
            error = error_from_dict(report["error"])
            if self._nursery._tree is not None and self._nursery._parent.is_root:
                self._crash_repl_in_root(error)
            raise error
        raise trio.ClosedResourceError(
            f"actor {format_path(self.path)} was stopped while running {slot.label}()"
        )

    def _crash_repl_in_root(self, error: RemoteError | ProcessDied) -> None:
        from ._actor_debug import open_crash_repl, wants_crash_repl
        from ._frames import is_hidden_frame

        settings = dataclasses.replace(
            self._nursery._parent, crash_repl=self._nursery.crash_repl
        )
        if wants_crash_repl(error, settings, in_root=True):
            # Inspect the frame that made the call: the first one up the
            # await chain that is not the runtime's (or trio's).
            frame = sys._getframe(1)
            while frame.f_back is not None and is_hidden_frame(frame):
                frame = frame.f_back
            error.__traceback__ = types.TracebackType(
                None, frame, frame.f_lasti, frame.f_lineno
            )
            try:
                open_crash_repl(error)
            finally:
                error.__traceback__ = None

    def _death(self, reason: str) -> ProcessDied:
        assert self._died is not None
        return ProcessDied(
            name=self.name,
            pid=self.pid,
            path=self.path,
            returncode=self._died.returncode,
            reason=reason,
        )

    # -- the supervisor task ------------------------------------------------

    async def supervise(
        self, *, task_status: trio.TaskStatus[Portal] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start, watch, stop and reap the child (see the module's docstring)."""
        nursery = self._nursery
        tree = nursery._tree
        nursery._children.add(self)
        try:
            token = new_token()
            async with open_listener(
                token=token, name=f"parent of {format_path(self.path)}"
            ) as listener:
                config = ChildConfig(
                    address=str(listener.address),
                    token=token,
                    name=self.name,
                    path=self.path,
                    debug_mode=nursery.debug_mode,
                    crash_repl=nursery.crash_repl,
                    grace_period=nursery.grace_period,
                    sys_path=tuple(os.fspath(entry) for entry in sys.path),
                    main=main_info(),
                    tree_address=tree.address if tree is not None else None,
                    tree_token=tree.token if tree is not None else None,
                    tty_fd=tree.tty_fd if tree is not None else None,
                )
                env = dict(os.environ)
                env[ACTOR_ENV] = config.to_env()
                pass_fds = (
                    (tree.tty_fd,)
                    if tree is not None and tree.tty_fd is not None
                    else ()
                )
                process = await trio.lowlevel.open_process(
                    _child_command(self.path), env=env, pass_fds=pass_fds
                )
                self.pid = process.pid
                if tree is not None:
                    tree.notify(
                        "started", name=self.name, pid=self.pid, path=list(self.path)
                    )
                try:
                    await self._live(process, listener, task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_process(process)
                    if tree is not None:
                        tree.notify(
                            "exited",
                            pid=self.pid,
                            path=list(self.path),
                            returncode=process.returncode,
                        )
                self._report(process)
        finally:
            nursery._children.discard(self)
            self._fail_pending()
            self._done.set()

    async def _live(
        self,
        process: trio.Process,
        listener: Listener,
        task_status: trio.TaskStatus[Portal],
    ) -> None:
        with trio.CancelScope() as guard:
            async with trio.open_nursery() as inner:
                inner.start_soon(self._wait_exit, process)
                # Starting: the caller of start_actor() can still cancel this.
                with trio.CancelScope() as connecting:
                    self._connecting = connecting
                    connecting.deadline = trio.current_time() + STARTUP_TIMEOUT
                    self._channel = await inner.start(self._hold_channel, listener)
                self._connecting = None
                channel = self._channel
                if channel is None:
                    self._startup_failure = (
                        "before it connected to its parent"
                        if process.returncode is not None
                        else "after it did not connect to its parent within"
                        f" {STARTUP_TIMEOUT:g} s"
                    )
                    inner.cancel_scope.cancel()  # supervise() stops the process
                    return
                # Ready.  From here on only a stop request or the child's end
                # makes us stop it: the nursery's cancellation reaches us as a
                # stop request (see _watch_for_cancel), so that the connection
                # stays up until the child has been told and has answered.
                guard.shield = True
                if self._nursery._stopping:
                    self.request_stop()
                task_status.started(Portal(self))
                await self._wake.wait()
                self._ended_by_itself = not self._stop_requested
                hung_up = channel.closed and process.returncode is None
                await self._stop_process(process)
                # A child that hung up and then had to be signalled broke its
                # connection; one that exited by itself just died first.
                self._connection_broke = hung_up and bool(self._escalated)
                # Read what the child sent before it exited, then hang up.
                with trio.move_on_after(_DRAIN_TIMEOUT):
                    await channel.wait_closed()
                self._hold_scope.cancel()
                inner.cancel_scope.cancel()

    async def _hold_channel(
        self, listener: Listener, *, task_status: trio.TaskStatus[Channel]
    ) -> None:
        # Only the child we started may connect, and it has: without the
        # socket file, a parent killed with SIGKILL leaves nothing behind.
        async with listener.accept(
            event_handler=self._on_event, remove_path=True
        ) as channel:
            task_status.started(channel)
            with self._hold_scope:
                await channel.wait_closed()
                self._wake.set()  # the connection ended by itself
                await trio.sleep_forever()

    async def _wait_exit(self, process: trio.Process) -> None:
        await process.wait()
        if self._connecting is not None:
            self._connecting.cancel()
        self._wake.set()

    async def _on_event(self, event: str, body: Any) -> None:
        # Called by the channel's reader: quick, never blocks.
        if event != "result":
            logger.warning(
                "actor %s sent an unknown event %r", format_path(self.path), event
            )
            return
        slot = self._slots.get(body["call"])
        if slot is not None:
            slot.fill(report=body)
        elif "error" in body:
            # Its caller stopped waiting: the nursery gets the error instead.
            self._orphan_errors.append(error_from_dict(body["error"]))

    async def _stop_process(self, process: trio.Process) -> None:
        """The ladder: ask, wait, SIGTERM, wait, SIGKILL; then reap."""
        channel = self._channel
        async with self._watch_debugger() as watch:
            if process.returncode is None and channel is not None:
                # Connected: ask.  (If it hung up already, it is probably
                # exiting: give it the same time.)
                if not channel.closed:
                    with trio.move_on_after(self._grace):
                        try:
                            await channel.send_event("cancel")
                        except ConnectionLost:
                            pass
                await wait_within(watch, self._grace, process.wait)
            if process.returncode is None:
                self._escalated = "SIGTERM"
                process.terminate()
                await wait_within(watch, self._grace, process.wait)
        if process.returncode is None:
            self._escalated = "SIGKILL"
            process.kill()
        await process.wait()

    @contextlib.asynccontextmanager
    async def _watch_debugger(self) -> AsyncIterator[SubtreeWatch]:
        """In debug mode: whether this child's subtree is in (or awaits) a REPL."""
        tree = self._nursery._tree
        if tree is None:
            yield SubtreeWatch()
            return
        async with watch_subtree(tree.address, tree.token, self.path) as watch:
            yield watch

    def _report(self, process: trio.Process) -> None:
        """After reaping: raise what the nursery should know about, if anything."""
        returncode = process.returncode
        assert returncode is not None
        if self._startup_failure:
            raise ProcessDied(
                name=self.name,
                pid=self.pid,
                path=self.path,
                returncode=returncode,
                reason=self._startup_failure,
            )
        if self._ended_by_itself:
            self._died = ProcessDied(
                name=self.name,
                pid=self.pid,
                path=self.path,
                returncode=returncode,
                reason=(
                    "after its connection to the parent broke"
                    if self._connection_broke
                    else ""
                ),
            )
            # Callers still waiting get it (_fail_pending); else the nursery.
            if not any(not slot.event.is_set() for slot in self._slots.values()):
                raise self._died
            return
        if self._escalated:
            logger.warning(
                "actor %s (pid %d) did not exit within %g s of being asked to;"
                " it was stopped with %s",
                format_path(self.path),
                self.pid,
                self._grace,
                self._escalated,
            )
        elif returncode != 0:
            self._orphan_errors.append(
                ProcessDied(
                    name=self.name,
                    pid=self.pid,
                    path=self.path,
                    returncode=returncode,
                    reason="while it was being stopped",
                )
            )
        if len(self._orphan_errors) == 1:
            raise self._orphan_errors[0]
        if self._orphan_errors:
            raise ExceptionGroup(
                f"errors from actor {format_path(self.path)} after its callers left",
                self._orphan_errors,
            )

    def _fail_pending(self) -> None:
        for slot in self._slots.values():
            if self._died is not None:
                slot.fill(error=self._death(f"while running {slot.label}()"))
            else:
                slot.fill(
                    error=trio.ClosedResourceError(
                        f"actor {format_path(self.path)} was stopped before"
                        f" {slot.label}() ended"
                    )
                )
