"""The backend lifecycle: cancel-scoped operations over the transition table.

Theory of operation
===================

The problem.  A debugger backend (a debuggee process and the channel to it)
serves many overlapping requests: a ``pause`` arrives while a slow
``evaluate`` is running.  Something has to know whether requests may start,
which failures break the backend and which do not, and how to stop everything
that is in flight when the backend shuts down -- without leaving a request
hanging or, worse, returning as if it had succeeded.

Things that don't work:

* BUSY as "one request in flight" (Dapper's design): READY -> BUSY on every
  request makes the second overlapping request an illegal BUSY -> BUSY move.
* ERROR on any exception: one command the debuggee rejects (a typo in an
  ``evaluate``) then leaves the backend broken for good.  Only the path to the
  debuggee breaking (transport closed, process dead, deadline passed) says
  anything about the backend.
* Shutdown by flag and polling (set ``closing``, sleep a grace period, check
  again): slow, racy, and a request blocked in I/O never sees the flag.
* Tracking requests as tasks the manager spawns: the caller then waits on a
  future, and cancelling the caller no longer cancels the request.

The design.  ``_states.StateMachine`` holds the table and is the only thing
that moves the state.  ``LifecycleManager`` wraps it for a backend:

* ``async with manager.operation(name)`` runs the body in the *caller's* task,
  inside a ``trio.CancelScope`` the manager owns.  The manager counts
  operations in flight: READY -> BUSY when the count leaves zero, BUSY ->
  READY when it returns to zero, nothing in between, so operations overlap.
* When an exception leaves an operation, it is classified: a transport
  failure (``TRANSPORT_FAILURES``, also inside an exception group) moves the
  manager to ERROR with an ``ErrorInfo``; anything else is the command's own
  error and leaves the state alone.  Either way the exception propagates.
* ``terminate()`` moves to TERMINATING, cancels every operation's scope with a
  reason, waits (bounded) for them to exit, runs cleanup callbacks LIFO, each
  under its own deadline, and moves to TERMINATED -- all inside a shielded
  scope, so a cancelled ``terminate()`` still finishes.  An operation whose
  scope absorbed that cancellation raises ``OperationAborted`` rather than
  returning normally; if the caller's own scope is cancelled too, the caller's
  ``Cancelled`` wins.
* Bookkeeping that must not be torn by Ctrl-C (operation enter/exit, the
  start and end of termination) is KI-protected; user code (operation bodies,
  cleanups, observers) is not.

Known holes.  A synchronous cleanup callback cannot be interrupted: the
deadline only bounds async ones.  An operation that shields itself from
cancellation is abandoned after ``cleanup_timeout`` (logged) and finishes on
its own after TERMINATED.  An operation running in the task that calls
``terminate()`` is not cancelled or waited for (that would deadlock); it
finishes normally after ``terminate()`` returns.  A manager reads trio's clock,
so it must be created and used inside one ``trio.run``.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic

import trio

from ._errors import DapperTrioError, TransportError
from ._states import (
    BACKEND_INITIAL_STATE,
    BACKEND_TRANSITIONS,
    BackendLifecycleState,
    LifecycleError,
    S,
    StateMachine,
    Transition,
)

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    # trio depends on the backport on 3.10.  The ignore is for a type-checking
    # environment (python_version = 3.10 on a newer interpreter) without it.
    from exceptiongroup import (  # type: ignore[import-not-found, unused-ignore]
        BaseExceptionGroup,
    )

__all__ = [
    "TRANSPORT_FAILURES",
    "ErrorInfo",
    "LifecycleManager",
    "LifecycleStatistics",
    "OperationAborted",
    "TransitionStream",
    "WatchOverflowError",
    "find_transport_failure",
    "open_transition_stream",
]

logger = logging.getLogger("dapper_trio.lifecycle")

_State = BackendLifecycleState

#: Exceptions that mean the path to the backend broke, not that a command
#: failed.  One of these escaping an operation moves the manager to ERROR.
TRANSPORT_FAILURES: Final[tuple[type[BaseException], ...]] = (
    TransportError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)

#: Default buffer of a transition stream (see ``open_transition_stream``).
DEFAULT_WATCH_BUFFER: Final = 64


def find_transport_failure(exc: BaseException) -> BaseException | None:
    """Return the first transport failure in *exc* (searching groups), or None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_transport_failure(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, TRANSPORT_FAILURES) else None


class OperationAborted(DapperTrioError):
    """An operation was cancelled because its manager is terminating.

    Raised from ``async with manager.operation(...)`` instead of letting the
    block look as if it had finished.  Attributes: ``operation`` (its name),
    ``manager`` (the manager's name), ``reason`` (why termination started).
    """

    def __init__(self, operation: str, manager: str, reason: str) -> None:
        super().__init__(
            f"operation {operation!r} aborted: {manager} terminating ({reason})"
        )
        self.operation = operation
        self.manager = manager
        self.reason = reason

    def __reduce__(self) -> tuple[type[OperationAborted], tuple[str, str, str]]:
        return (OperationAborted, (self.operation, self.manager, self.reason))


class WatchOverflowError(DapperTrioError):
    """A transition stream's reader fell behind and transitions were dropped.

    Raised by the stream after it has delivered every transition it buffered.
    The reader can resynchronise from ``lifecycle_state`` and open a new stream.
    """


@dataclass(frozen=True)
class ErrorInfo:
    """Why a manager is in ERROR.

    Attributes:
        what: what failed, in words.
        exception: the exception, or None if ``mark_error`` was given none.
            For a failed operation this is the transport failure itself, taken
            out of an exception group if it came in one.
        exception_type: the exception's qualified type name, or None.
        exception_message: ``str(exception)``, or None.
        wall_time: when, as ``time.time()``.
        monotonic_time: when, on the manager's clock (``trio.current_time()``,
            the clock of ``Transition.timestamp``).
        operation: the operation that failed, or None.
        previous_state: the state the manager was in before ERROR.
    """

    what: str
    exception: BaseException | None
    exception_type: str | None
    exception_message: str | None
    wall_time: float
    monotonic_time: float
    operation: str | None
    previous_state: BackendLifecycleState

    def __str__(self) -> str:
        text = self.what
        if self.exception_type is not None:
            text += f": {self.exception_type}: {self.exception_message}"
        return text


@dataclass(frozen=True)
class LifecycleStatistics:
    """A snapshot of a ``LifecycleManager``'s bookkeeping.

    Attributes:
        state: the current state.
        operations_in_flight: how many operations are running now.
        transition_counts: ``(source, target)`` -> how many times that move
            happened (moves that never happened are absent).
        time_in_state: every state -> seconds spent in it, the current state's
            time so far included (on trio's clock).
        error_count: how many times the manager entered ERROR.
    """

    state: BackendLifecycleState
    operations_in_flight: int
    transition_counts: Mapping[tuple[BackendLifecycleState, BackendLifecycleState], int]
    time_in_state: Mapping[BackendLifecycleState, float]
    error_count: int


class TransitionStream(Generic[S]):
    """The receiving end of ``open_transition_stream`` / ``watch()``.

    Iterate with ``async for`` or call ``receive()``.  The stream ends (the
    loop stops, ``receive`` raises ``trio.EndOfChannel``) after it delivers the
    move into a final state; it raises ``WatchOverflowError`` after delivering
    what it buffered if the reader fell behind.
    """

    def __init__(
        self, receive_channel: trio.MemoryReceiveChannel[Transition[S]]
    ) -> None:
        self._receive_channel = receive_channel
        self.overflowed = False

    async def receive(self) -> Transition[S]:
        """Return the next transition, waiting for one if needed.

        Cancellation: a cancelled ``receive`` loses nothing; the transition
        stays buffered for the next call.
        """
        try:
            return await self._receive_channel.receive()
        except trio.EndOfChannel:
            if self.overflowed:
                raise WatchOverflowError(
                    "transition stream overflowed: the reader fell behind "
                    "and later transitions were dropped"
                ) from None
            raise

    def __aiter__(self) -> TransitionStream[S]:
        return self

    async def __anext__(self) -> Transition[S]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@asynccontextmanager
async def open_transition_stream(
    machine: StateMachine[S], *, max_buffer_size: int = DEFAULT_WATCH_BUFFER
) -> AsyncIterator[TransitionStream[S]]:
    """Open a stream of *machine*'s transitions, from now until the block exits.

    Moves are pushed into a memory channel of ``max_buffer_size`` slots with
    ``send_nowait``: the machine never waits for a reader.  If the buffer is
    full when a move happens, the stream stops recording: the reader gets
    everything buffered before the overflow, then ``WatchOverflowError``.  The
    stream ends normally after the move into a final state (TERMINATED); a
    stream opened on a machine that is already final ends at once.

    Cancellation: entering and leaving do not block.
    """
    if max_buffer_size < 1:
        raise ValueError("max_buffer_size must be at least 1")
    send_channel, receive_channel = trio.open_memory_channel[Transition[S]](
        max_buffer_size
    )
    stream = TransitionStream(receive_channel)

    def on_transition(transition: Transition[S]) -> None:
        try:
            send_channel.send_nowait(transition)
        except trio.WouldBlock:
            stream.overflowed = True
            send_channel.close()
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if machine.is_final(transition.target):
            send_channel.close()

    unsubscribe = machine.add_observer(on_transition)
    if machine.is_final():
        send_channel.close()
    try:
        yield stream
    finally:
        unsubscribe()
        send_channel.close()
        receive_channel.close()


class _Operation:
    """The async context manager returned by ``LifecycleManager.operation``."""

    def __init__(self, manager: LifecycleManager, name: str) -> None:
        self.manager = manager
        self.name = name
        self.scope = trio.CancelScope()
        self.task: trio.lowlevel.Task | None = None
        self._used = False

    def __repr__(self) -> str:
        return f"<operation {self.name!r} of {self.manager.name}>"

    @trio.lowlevel.enable_ki_protection
    async def __aenter__(self) -> None:
        if self._used:
            raise RuntimeError(f"{self!r} was already entered; call operation() again")
        self._used = True
        await trio.lowlevel.checkpoint_if_cancelled()
        self.task = trio.lowlevel.current_task()
        self.manager._operation_entered(self)
        self.scope.__enter__()

    @trio.lowlevel.enable_ki_protection
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            absorbed = self.scope.__exit__(exc_type, exc, tb)
        except BaseException as remaining:
            # The scope took its own Cancelled out of a group and re-raised
            # the rest: classify what is left.
            self.manager._operation_exited(self, remaining)
            raise
        if exc is None or not absorbed:
            self.manager._operation_exited(self, exc)
            return False
        # Our scope absorbed a Cancelled: terminate() aborted this operation.
        self.manager._operation_exited(self, None)
        # If the caller's own scope is cancelled too, its Cancelled wins.
        await trio.lowlevel.checkpoint_if_cancelled()
        raise OperationAborted(
            self.name, self.manager.name, self.manager._termination_reason
        )


@dataclass(frozen=True, eq=False)
class _Cleanup:
    fn: Callable[..., object]
    args: tuple[Any, ...]

    def label(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class LifecycleManager:
    """The lifecycle of one debugger backend: states, operations, termination.

    Args:
        name: names the backend in errors, logs and ``OperationAborted``.
        cleanup_timeout: seconds allowed, during ``terminate()``, for the
            cancelled operations to exit, and then for each async cleanup
            callback; ``math.inf`` for no bound.

    Create and use a manager inside one ``trio.run``: it keeps time on trio's
    clock (so statistics follow a ``MockClock`` in tests).

    Typical use::

        manager = LifecycleManager("backend")
        manager.initialize()
        ...  # start the process, handshake
        manager.mark_ready()
        async with manager.operation("evaluate"):
            ...  # send the request, await the reply
        await manager.terminate()
    """

    def __init__(self, name: str = "backend", *, cleanup_timeout: float = 5.0) -> None:
        if math.isnan(cleanup_timeout) or cleanup_timeout < 0:
            raise ValueError(f"cleanup_timeout must be >= 0, not {cleanup_timeout!r}")
        try:
            trio.current_time()
        except RuntimeError:
            raise RuntimeError(
                "LifecycleManager must be created inside trio.run(): "
                "it keeps time on trio's clock"
            ) from None
        self._name = name
        self._cleanup_timeout = cleanup_timeout
        self._machine: StateMachine[BackendLifecycleState] = StateMachine(
            name, BACKEND_TRANSITIONS, BACKEND_INITIAL_STATE, clock=trio.current_time
        )
        self._error_info: ErrorInfo | None = None
        self._in_flight: dict[_Operation, None] = {}  # insertion-ordered set
        self._cleanups: list[_Cleanup] = []
        # Termination: begun by the first terminate(); _done is set when complete.
        self._termination_begun = False
        self._done = trio.Event()
        self._terminating_task: trio.lowlevel.Task | None = None
        self._termination_reason = ""
        self._awaited: dict[_Operation, None] = {}
        self._operations_exited = trio.Event()

    def __repr__(self) -> str:
        return (
            f"<LifecycleManager {self._name!r} {self._machine.state.name}, "
            f"{len(self._in_flight)} operation(s) in flight>"
        )

    # -- state ------------------------------------------------------------

    @property
    def name(self) -> str:
        """The backend's name."""
        return self._name

    @property
    def lifecycle_state(self) -> BackendLifecycleState:
        """The current state."""
        return self._machine.state

    @property
    def error_info(self) -> ErrorInfo | None:
        """Why the manager last entered ERROR; None until then and after ``recover``."""
        return self._error_info

    def is_available(self) -> bool:
        """Return whether operations may start (READY or BUSY)."""
        return self._machine.state in (_State.READY, _State.BUSY)

    def is_ready(self) -> bool:
        """Return whether the manager is READY (idle, no operation in flight)."""
        return self._machine.state is _State.READY

    # -- sync moves -------------------------------------------------------

    @trio.lowlevel.enable_ki_protection
    def initialize(self) -> Transition[BackendLifecycleState]:
        """Move UNINITIALIZED -> INITIALIZING.

        Synchronous on purpose: it only records that the caller has begun
        starting the backend.  The caller does the async work (spawn, connect,
        handshake) and then calls ``mark_ready()`` or ``mark_error()``.
        Raises ``LifecycleError`` from any other state.
        """
        return self._machine.fire(_State.INITIALIZING, reason="initialize() called")

    @trio.lowlevel.enable_ki_protection
    def mark_ready(self) -> Transition[BackendLifecycleState]:
        """Move INITIALIZING -> READY; raise ``LifecycleError`` from any other state.

        (ERROR -> READY is ``recover()``.)
        """
        return self._machine.fire(
            _State.READY, reason="initialized", expect=(_State.INITIALIZING,)
        )

    @trio.lowlevel.enable_ki_protection
    def mark_error(
        self,
        what: str,
        exc: BaseException | None = None,
        *,
        operation: str | None = None,
    ) -> Transition[BackendLifecycleState]:
        """Move to ERROR and record *what* failed (and *exc*, *operation*).

        Legal from INITIALIZING, READY, BUSY and TERMINATING; raises
        ``LifecycleError`` (and records nothing) from any other state.
        Operations in flight keep running; they are not cancelled.
        """
        self._machine.check(_State.ERROR)
        previous = self._error_info
        self._error_info = ErrorInfo(
            what=what,
            exception=exc,
            exception_type=None if exc is None else _type_name(exc),
            exception_message=None if exc is None else str(exc),
            wall_time=time.time(),
            monotonic_time=trio.current_time(),
            operation=operation,
            previous_state=self._machine.state,
        )
        try:
            return self._machine.fire(_State.ERROR, reason=str(self._error_info))
        except BaseException:  # pragma: no cover - check() said it is legal
            self._error_info = previous
            raise

    @trio.lowlevel.enable_ki_protection
    def recover(self) -> Transition[BackendLifecycleState]:
        """Move ERROR -> READY and clear ``error_info``.

        If operations that started before the failure are still in flight, the
        manager moves on to BUSY at once (observers see both moves).  Raises
        ``LifecycleError`` outside ERROR, and while ``terminate()`` is running
        (a terminating backend does not come back).  Returns the move to READY.
        """
        if self._termination_begun:
            raise LifecycleError(
                f"{self._name}: cannot recover from {self._machine.state.name} to "
                "READY: termination has started",
                machine=self._name,
                state=self._machine.state,
                target=_State.READY,
            )
        self._machine.check(_State.READY, expect=(_State.ERROR,))
        previous = self._error_info
        self._error_info = None
        try:
            transition = self._machine.fire(
                _State.READY, reason="recovered", expect=(_State.ERROR,)
            )
        except BaseException:  # pragma: no cover - check() said it is legal
            self._error_info = previous
            raise
        if self._in_flight and self._machine.state is _State.READY:
            self._machine.fire(
                _State.BUSY,
                reason=f"{len(self._in_flight)} operation(s) still in flight",
            )
        return transition

    # -- operations -------------------------------------------------------

    def operation(self, name: str) -> AbstractAsyncContextManager[None]:
        """Return an async context manager that runs its block as operation *name*.

        Entering needs READY or BUSY (else ``LifecycleError`` naming the state
        and the operation); the first operation in flight moves READY -> BUSY,
        the last one out moves BUSY -> READY, and any number may overlap.
        The block runs in a cancel scope owned by the manager.

        Leaving: a transport failure (``TRANSPORT_FAILURES``, also inside an
        exception group) moves the manager to ERROR with ``error_info`` naming
        this operation, then propagates; any other exception propagates and
        leaves the state alone.  If ``terminate()`` cancelled the block, it
        raises ``OperationAborted``.

        Cancellation: entering is a checkpoint only if the caller is already
        cancelled (then nothing is recorded).  If the caller's own scope is
        cancelled, its ``Cancelled`` propagates normally, even when the manager
        was terminating at the same time.
        """
        return _Operation(self, name)

    @trio.lowlevel.enable_ki_protection
    def _operation_entered(self, op: _Operation) -> None:
        state = self._machine.state
        if state is _State.READY:
            self._machine.fire(_State.BUSY, reason=f"operation {op.name!r} started")
        elif state is not _State.BUSY:
            raise LifecycleError(
                f"{self._name}: cannot start operation {op.name!r} in state "
                f"{state.name} (operations need READY or BUSY)",
                machine=self._name,
                state=state,
                target=_State.BUSY,
            )
        self._in_flight[op] = None

    @trio.lowlevel.enable_ki_protection
    def _operation_exited(self, op: _Operation, exc: BaseException | None) -> None:
        # Runs in __aexit__: must not raise.
        self._in_flight.pop(op, None)
        if op in self._awaited:
            del self._awaited[op]
            if not self._awaited:
                self._operations_exited.set()
        failure = None if exc is None else find_transport_failure(exc)
        if failure is not None:
            if self._machine.state in (_State.READY, _State.BUSY):
                self.mark_error(
                    f"transport failure in operation {op.name!r}",
                    failure,
                    operation=op.name,
                )
            else:
                # Already in ERROR (the first failure is kept), or terminating
                # (termination owns the outcome), or terminated.
                logger.info(
                    "%s: transport failure in operation %r while %s: %r",
                    self._name,
                    op.name,
                    self._machine.state.name,
                    failure,
                )
        if not self._in_flight and self._machine.state is _State.BUSY:
            self._machine.fire(
                _State.READY, reason=f"operation {op.name!r} finished, none in flight"
            )

    # -- termination ------------------------------------------------------

    def add_cleanup_callback(
        self, fn: Callable[..., object], *args: Any
    ) -> Callable[[], None]:
        """Have ``terminate()`` call ``fn(*args)``; return a callable to unregister it.

        *fn* may be sync or return an awaitable (an ``async def``).  Cleanups
        run in reverse registration order, after every operation has exited;
        one registered while cleanups run is run next.  Raises
        ``LifecycleError`` once the manager is TERMINATED.
        """
        if self._machine.state is _State.TERMINATED:
            raise LifecycleError(
                f"{self._name}: cannot add a cleanup callback in state TERMINATED",
                machine=self._name,
                state=self._machine.state,
                target=None,
            )
        entry = _Cleanup(fn, args)
        self._cleanups.append(entry)

        def remove() -> None:
            for index, candidate in enumerate(self._cleanups):
                if candidate is entry:
                    del self._cleanups[index]
                    return

        return remove

    @trio.lowlevel.enable_ki_protection
    async def terminate(self, reason: str = "terminate() called") -> None:
        """Shut the backend down and return once it is TERMINATED.

        In order: move to TERMINATING; cancel every operation in flight (with
        *reason*; they raise ``OperationAborted``) and wait up to
        ``cleanup_timeout`` for them to exit; run the cleanup callbacks in
        reverse registration order, each bounded by ``cleanup_timeout`` (a
        failing one is logged and the others still run; one that overruns is
        abandoned and logged); move to TERMINATED.  From UNINITIALIZED the
        manager moves straight to TERMINATED (nothing was started), then runs
        any cleanups.  From ERROR it terminates like from any other state.

        Calling it again, or from several tasks at once, is safe: every call
        returns once termination is complete.  A call made from a cleanup
        callback returns at once (it cannot wait for itself).

        Cancellation: the work is shielded, so a cancelled ``terminate()``
        still completes termination (bounded by ``cleanup_timeout``); it then
        raises ``Cancelled``.  Every call that returns or raises leaves the
        manager TERMINATED.
        """
        if not self._termination_begun:
            self._begin_termination(reason)
            try:
                with trio.CancelScope(shield=True):
                    await self._terminate_unprotected()
            finally:
                self._finish_termination()
        elif trio.lowlevel.current_task() is not self._terminating_task:
            with trio.CancelScope(shield=True):
                await self._done.wait()
        await trio.lowlevel.checkpoint()

    async def wait_terminated(self) -> None:
        """Wait until termination is complete (returns at once if it is).

        Cancellation: safe; termination is not affected.
        """
        await self._done.wait()

    @trio.lowlevel.enable_ki_protection
    def _begin_termination(self, reason: str) -> None:
        if self._machine.state is _State.UNINITIALIZED:
            self._machine.fire(_State.TERMINATED, reason=reason)
        else:
            self._machine.fire(_State.TERMINATING, reason=reason)
        self._termination_begun = True
        me = self._terminating_task = trio.lowlevel.current_task()
        self._termination_reason = reason
        for op in self._in_flight:
            if op.task is not me:  # our own operation would wait for us: skip it
                self._awaited[op] = None
                op.scope.cancel(reason=f"{self._name} terminating: {reason}")
        if not self._awaited:
            self._operations_exited.set()

    @trio.lowlevel.disable_ki_protection
    async def _terminate_unprotected(self) -> None:
        with trio.move_on_after(self._cleanup_timeout) as waiting:
            await self._operations_exited.wait()
        if waiting.cancelled_caught:
            logger.warning(
                "%s: %d operation(s) did not exit within %g s of being cancelled; "
                "abandoning them: %s",
                self._name,
                len(self._awaited),
                self._cleanup_timeout,
                ", ".join(repr(op.name) for op in self._awaited),
            )
        while self._cleanups:
            await self._run_cleanup(self._cleanups.pop())

    async def _run_cleanup(self, entry: _Cleanup) -> None:
        try:
            with trio.move_on_after(self._cleanup_timeout) as deadline:
                result = entry.fn(*entry.args)
                if inspect.isawaitable(result):
                    await _await(result)
        except Exception:
            logger.exception(
                "%s: cleanup callback %s failed", self._name, entry.label()
            )
            return
        if deadline.cancelled_caught:
            logger.warning(
                "%s: cleanup callback %s did not finish within %g s; abandoned",
                self._name,
                entry.label(),
                self._cleanup_timeout,
            )

    @trio.lowlevel.enable_ki_protection
    def _finish_termination(self) -> None:
        machine = self._machine
        if machine.state is not _State.TERMINATED:
            if machine.state is not _State.TERMINATING:
                # mark_error() was called while terminating: TERMINATING -> ERROR.
                machine.fire(
                    _State.TERMINATING, reason="termination resumed after error"
                )
            machine.fire(_State.TERMINATED, reason="cleanup complete")
        self._done.set()

    # -- observation ------------------------------------------------------

    def add_observer(
        self, callback: Callable[[Transition[BackendLifecycleState]], object]
    ) -> Callable[[], None]:
        """Call ``callback(transition)`` synchronously after every move.

        Returns a callable that unsubscribes.  Observers are called in
        registration order, one transition at a time, in the order the moves
        happened.  An observer that raises is logged (logger
        ``dapper_trio.lifecycle``) and changes nothing.  Observers must not
        block; to react with async code, use ``watch()``.
        """
        return self._machine.add_observer(callback)

    def watch(
        self, *, max_buffer_size: int = DEFAULT_WATCH_BUFFER
    ) -> AbstractAsyncContextManager[TransitionStream[BackendLifecycleState]]:
        """Stream the manager's transitions: ``async with manager.watch() as s:``.

        ``async for transition in s`` yields every move from entering the block
        on, in order.  The manager never waits for the reader: moves go into a
        buffer of ``max_buffer_size``; if the buffer is full, the stream stops
        recording and, after the reader has drained it, raises
        ``WatchOverflowError``.  The loop ends after the move to TERMINATED.

        Cancellation: entering and leaving do not block; a cancelled
        ``receive`` loses nothing.
        """
        return open_transition_stream(self._machine, max_buffer_size=max_buffer_size)

    def statistics(self) -> LifecycleStatistics:
        """Return the current state, operations in flight, counts and times."""
        stats = self._machine.statistics()
        errors = sum(
            count
            for (_, target), count in stats.transition_counts.items()
            if target is _State.ERROR
        )
        return LifecycleStatistics(
            state=stats.state,
            operations_in_flight=len(self._in_flight),
            transition_counts=stats.transition_counts,
            time_in_state=stats.time_in_state,
            error_count=errors,
        )


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable


def _type_name(exc: BaseException) -> str:
    # The public spelling: "OSError", "trio.BrokenResourceError",
    # "dapper_trio.TransportError" (private submodules dropped).
    cls = type(exc)
    public = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        public.append(part)
    if public in ([], ["builtins"]):
        return cls.__qualname__
    return ".".join([*public, cls.__qualname__])
