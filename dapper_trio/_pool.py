"""A supervised pool of worker processes that can be debugged.

Theory of operation
===================

The problem.  A trio program hands calls to a fixed number of worker
processes, and wants what a production pool gives -- a worker lifecycle,
health checks, recycling of workers that grow old, have served many calls or
keep failing, restarts that back off when workers cannot start, a graceful
drain at shutdown -- without what makes such pools hard to debug: a worker
stopped at a breakpoint must never be taken for a hung one, recycled, timed
out or killed.

Things that don't work.
* ``multiprocessing.Pool`` and ``ProcessPoolExecutor``: a call cannot be
  cancelled from trio, a worker cannot open a REPL on the terminal, and
  their timeouts know nothing of a debugger.
* Retiring a worker, then starting its replacement (``maxtasksperchild``,
  gunicorn's ``max_requests``): the pool is one worker short for a process
  start-up (about 0.2 s) each time a worker is recycled.
* A dispatcher task taking calls from a queue: every call pays extra trips
  through the scheduler, and cancelling the caller no longer cancels the call.
* Pinging busy workers too: a worker in a long CPU-bound call is healthy but
  cannot answer; it would be killed.
* Cancelling a ping that timed out: cancelling a call waits for the worker to
  unwind it, which a worker whose loop is blocked never does.  The worker is
  stopped instead (its ping call then ends with it).
* The actor nursery inside the pool's block: cancelling the block would
  cancel the nursery, which stops every worker at once, and nothing in
  flight could finish within ``shutdown_timeout``.
* Starting a replacement only when a worker reaches its limit: a busy pool
  then stalls for a process start-up each time a worker is recycled (a
  worker that reached ``max_worker_requests`` must not take more calls).
* A restart loop per missing worker, each with its own backoff: when no
  worker can start, ``size`` loops fail at once and the backoff runs
  ``size`` times too fast.

The design.  ``open_worker_pool()`` is a trio nursery holding one *service
task* (``_serve``), which runs an actor nursery (``_actors``) in a shielded
cancel scope: the block's cancellation reaches the callers in the block,
never the workers.  Leaving the block (or the block's cancellation) asks the
service to close and waits for it.  Workers start in the background; the
block does not wait for them (``wait_ready()`` does), so observers added
first see every move.

* A worker is a ``_Child`` of that actor nursery: the actor machinery
  starts, connects, stops (the ladder: ``cancel``, SIGTERM, SIGKILL) and
  reaps it.  Its supervisor task runs in a wrapper (``_supervise``) that
  turns the process's end into the worker's move to TERMINATED -- not into
  an error that would cancel the nursery.  A *life* task per worker runs the
  initializer, holds the debugger watch (below) and the age timer.
* Every state change goes through the worker's ``WorkerRecord`` (the worker
  table of ``_states``); observers and ``watch()`` streams see each move.
* Calls run in the caller's task.  ``run()`` takes an idle worker (FIFO), or
  queues (FIFO) until ``_make_available`` hands it one: a worker that
  finishes a call goes straight to the first waiter, staying BUSY.  The call
  itself is ``_Child.call``, so cancelling the caller cancels the call in the
  worker, as for an actor.  Nothing is spawned per call; function references
  are cached.
* ``_reconcile()`` is synchronous and runs after every change.  It starts a
  worker for each one missing from ``size`` -- a worker being recycled does
  not count, so its replacement starts at once, while it still serves its
  last call -- and moves recycled workers to DRAINING only as long as
  READY+BUSY stays at ``size`` or more without them.  A worker being
  recycled takes no new call.  A worker that *will* be recycled soon -- at
  the pace of its calls so far, or by its age, within twice a worker's
  start-up time (``_lead_time``) -- gets its successor early: the successor
  waits READY on *standby* and goes into service the moment the old worker
  stops taking calls, so recycling does not stall a busy pool.
* Starts: once a start has failed, starts are made one at a time (a lock),
  each after the backoff's delay; the first success ends that.  When the
  backoff gives up, the pool fails with ``WorkerStartError`` and shuts down
  as if its block had been left.
* Health: every ``health_check_interval``, each idle worker is taken out of
  service and pinged (``_pool_worker.ping``, an ordinary call over the actor
  IPC).  No answer within ``health_check_timeout``: DRAINING, stopped with
  the ladder, replaced at once.  A worker whose call was cancelled is pinged
  before it takes another call (its loop may be stuck in that call).
* The debugger (debug mode): each worker has a ``watch_subtree`` connection
  to the tree's terminal lock, which says whether a process of its subtree
  holds or waits for the terminal.  While one does, no ping is sent and no
  ping timeout runs, age does not recycle it, it is not drained, and the
  shutdown timeout's clock is stopped (restarting from zero afterwards, like
  the actor ladder's, which already never signals a process in the REPL).
* Shutdown: stop accepting calls (waiting callers get
  ``trio.ClosedResourceError``), cancel starts and health checks, move each
  worker to DRAINING; a busy one gets ``shutdown_timeout`` to finish its
  call; then each is stopped with the ladder -- which cancels what remains
  (its caller gets ``trio.ClosedResourceError``) -- and reaped.

Known holes.  A call that blocks its worker's loop is not detected while it
runs (only idle workers are pinged); cancelling its caller gives up on it
after the grace period and the ping that follows replaces the worker.  A
call that ignores cancellation runs on in its worker until the worker
stops.  A call whose worker dies just before the call reaches it raises
``ProcessDied`` like one that was running; it is not retried elsewhere.  A
caller cancelled just after it was handed a worker still counts against
that worker's ``max_worker_requests``.  Every worker is a fresh ``python
-c`` process (there is no fork server): a recycle costs a process start-up,
0.2 to 0.3 s of CPU.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import trio

from ._actor_codec import dumps_args, function_ref
from ._actor_errors import ProcessDied, RemoteError, format_path
from ._actors import ActorNursery, Portal, _Child, open_actor_nursery
from ._errors import DapperTrioError
from ._grace import wait_within
from ._lifecycle import WatchOverflowError
from ._pool_policy import (
    RECYCLE_REASONS,
    Backoff,
    CallOutcome,
    PoolConfig,
    RecycleReason,
    WorkerRecord,
    requests_run_out_within,
)
from ._pool_worker import ping
from ._states import Transition, WorkerState
from ._tree_lock import SubtreeWatch, watch_subtree

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    PosArgT = TypeVarTuple("PosArgT")

__all__ = [
    "PoolStatistics",
    "WorkerInfo",
    "WorkerPool",
    "WorkerStartError",
    "WorkerTransition",
    "WorkerTransitionStream",
    "open_worker_pool",
]

RetT = TypeVar("RetT")

logger = logging.getLogger("dapper_trio.pool")

_READY: Final = WorkerState.READY
_BUSY: Final = WorkerState.BUSY
_DRAINING: Final = WorkerState.DRAINING
_TERMINATED: Final = WorkerState.TERMINATED
_INITIALIZING: Final = WorkerState.INITIALIZING
_SERVING: Final = (_READY, _BUSY)

#: How long a worker asked to stop gets to exit, and again after SIGTERM, is
#: ``shutdown_timeout`` clamped to this range.
_GRACE_MAX = 2.0
_GRACE_MIN = 0.25

#: Default buffer of a ``watch()`` stream.
_WATCH_BUFFER = 64

_worker_numbers = itertools.count(1)


class WorkerStartError(DapperTrioError):
    """The pool could not start a worker, and its restart backoff gave up.

    ``attempts`` is how many starts failed in a row; ``last_error`` is why
    the last one failed (a ``ProcessDied``, or the ``RemoteError`` of the
    initializer), also its ``__cause__``.
    """

    def __init__(
        self, message: str, *, attempts: int, last_error: BaseException | None
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_start_error, (str(self), self.attempts, self.last_error))

    def copy(self) -> WorkerStartError:
        """A new instance with the same message (to raise in another task)."""
        error = WorkerStartError(
            str(self), attempts=self.attempts, last_error=self.last_error
        )
        error.__cause__ = self.last_error
        return error


def _rebuild_start_error(
    message: str, attempts: int, last_error: BaseException | None
) -> WorkerStartError:
    return WorkerStartError(message, attempts=attempts, last_error=last_error)


@dataclasses.dataclass(frozen=True)
class WorkerTransition(Transition[WorkerState]):
    """One move of one pool worker: a ``Transition`` naming the worker.

    ``worker`` is its name (``"worker-3"``), ``pid`` its process id (0 until
    its process has been started).
    """

    worker: str
    pid: int


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker (``WorkerPool.workers()``).

    ``calls`` is how many calls it was given; ``consecutive_failures`` how
    many of its calls raised since one last succeeded; ``age`` the seconds
    since it became READY; ``recycle`` why it is being recycled, if it is;
    ``standby`` whether it is a READY successor waiting to be put into
    service; ``in_debugger`` whether a process of its subtree holds or waits for the
    terminal (debug mode).
    """

    name: str
    pid: int
    path: tuple[str, ...]
    state: WorkerState
    calls: int
    consecutive_failures: int
    age: float
    recycle: RecycleReason | None
    standby: bool
    in_debugger: bool


@dataclasses.dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool's bookkeeping (``WorkerPool.statistics()``).

    Attributes:
        size: the number of workers the pool keeps.
        workers: every state -> how many workers are in it now (TERMINATED:
            how many have ended so far).
        calls_waiting: callers waiting for a worker.
        calls_in_flight: calls running in workers.
        calls_served: calls a worker finished, with a value or an error.
        calls_failed: of those, the ones that raised (``RemoteError``).
        calls_cancelled: calls cancelled by their caller or by the shutdown.
        calls_lost: calls whose worker died while running them.
        recycles: ``"max_requests"``, ``"max_age"``, ``"error_threshold"`` ->
            how many workers were recycled for that reason.
        restarts: workers replaced because they died or failed a health check.
        worker_deaths: worker processes that ended without being asked to.
        health_checks: pings sent.
        health_check_failures: pings not answered in time (or failed).
        workers_started: workers that reached READY.
        start_failures: worker starts that failed.
    """

    size: int
    workers: Mapping[WorkerState, int]
    calls_waiting: int
    calls_in_flight: int
    calls_served: int
    calls_failed: int
    calls_cancelled: int
    calls_lost: int
    recycles: Mapping[RecycleReason, int]
    restarts: int
    worker_deaths: int
    health_checks: int
    health_check_failures: int
    workers_started: int
    start_failures: int


class WorkerTransitionStream:
    """The receiving end of ``WorkerPool.watch()``: ``async for t in stream``.

    The stream ends once the pool has shut down (every worker TERMINATED);
    it raises ``WatchOverflowError``, after delivering what it buffered, if
    its reader fell behind.
    """

    def __init__(self, receive_channel: trio.MemoryReceiveChannel[WorkerTransition]):
        self._receive_channel = receive_channel
        self.overflowed = False

    async def receive(self) -> WorkerTransition:
        """Return the next transition, waiting for one if needed.

        Cancellation: a cancelled ``receive`` loses nothing.
        """
        try:
            return await self._receive_channel.receive()
        except trio.EndOfChannel:
            if self.overflowed:
                raise WatchOverflowError(
                    "worker transition stream overflowed: the reader fell behind"
                    " and later transitions were dropped"
                ) from None
            raise

    def __aiter__(self) -> WorkerTransitionStream:
        return self

    async def __anext__(self) -> WorkerTransition:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class _StartFailed(Exception):
    """A worker did not become READY; ``error`` says why (internal)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _PendingStart:
    """One worker the pool is starting (or backing off to start), counted once."""

    __slots__ = ("open", "pool")

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.open = True

    def settle(self) -> None:
        if self.open:
            self.open = False
            self.pool._pending_starts -= 1


class _Waiter:
    """A caller of ``run()`` waiting for a worker."""

    __slots__ = ("error", "event", "worker")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.worker: _Worker | None = None
        self.error: BaseException | None = None


class _StatusProxy(trio.TaskStatus[Portal]):
    """Forwards ``started()`` and remembers that it was called."""

    def __init__(self, inner: trio.TaskStatus[Portal]) -> None:
        self._inner = inner
        self.called = False

    @overload
    def started(self: trio.TaskStatus[None]) -> None: ...

    @overload
    def started(self, value: Portal) -> None: ...

    def started(self, value: Portal | None = None) -> None:
        self.called = True
        assert value is not None
        self._inner.started(value)


class _Worker:
    """The pool's side of one worker: its actor, record, and bookkeeping."""

    __slots__ = (
        "call_done",
        "child",
        "exit_error",
        "expiring",
        "gone",
        "in_call",
        "name",
        "path",
        "pinging",
        "record",
        "standby",
        "supervised",
        "watch",
    )

    def __init__(self, child: _Child, record: WorkerRecord) -> None:
        self.child = child
        self.record = record
        self.name = child.name
        self.path = child.path
        self.watch = SubtreeWatch()  # never busy unless debug mode replaces it
        self.gone = trio.Event()
        self.in_call = False
        self.pinging = False
        self.call_done: trio.Event | None = None
        self.exit_error: BaseException | None = None
        self.supervised = False  # its actor's supervisor task has started
        self.standby = False  # READY, waiting to be put into service
        self.expiring = False  # to be recycled soon: its successor is wanted

    def __repr__(self) -> str:
        return f"<pool worker {self.name} pid {self.child.pid} {self.state.name}>"

    @property
    def state(self) -> WorkerState:
        return self.record.machine.state

    async def wait_call_done(self) -> None:
        if self.in_call:
            if self.call_done is None:
                self.call_done = trio.Event()
            await self.call_done.wait()


def open_worker_pool(
    size: int = 4,
    *,
    max_worker_age: float = 3600.0,
    max_worker_requests: int | None = 1000,
    error_threshold: int | None = 5,
    health_check_interval: float = 30.0,
    health_check_timeout: float = 5.0,
    shutdown_timeout: float = 30.0,
    enable_health_monitoring: bool = True,
    restart_backoff: tuple[float, float, float] = (0.1, 2.0, 30.0),
    debug_mode: bool = False,
    initializer: Callable[..., Awaitable[Any]] | None = None,
    initargs: tuple[Any, ...] = (),
) -> AbstractAsyncContextManager[WorkerPool]:
    """Open a pool of *size* worker processes: ``async with ... as pool:``.

    The block starts at once, while the workers start (``await
    pool.wait_ready()`` waits for them); ``await pool.run(fn, *args)`` runs
    a call on a READY worker, waiting for one if need be.  Workers are
    recycled (drained and replaced, the replacement started first) after
    *max_worker_requests*
    calls, *max_worker_age* seconds, or *error_threshold* consecutive calls
    that raised (``None``/``math.inf`` for no limit); idle workers answer a
    ping every *health_check_interval* seconds within *health_check_timeout*
    or are replaced (unless *enable_health_monitoring* is False).  Failed
    starts are retried after ``restart_backoff = (initial, factor, maximum)``
    delays; when the backoff gives up, the pool fails with
    ``WorkerStartError``.  *initializer* (an importable async function) runs
    with *initargs* in each worker before it is READY; if it raises, that
    start failed.  With *debug_mode*, a breakpoint or crash in a worker opens
    a REPL on this terminal (as for ``open_actor_nursery``), and a worker in
    the debugger is exempt from health checks, recycling and the shutdown
    timeout until it leaves the REPL.

    Leaving the block (or its cancellation) stops accepting calls, lets calls
    in flight finish within *shutdown_timeout* seconds, then cancels what
    remains, stops every worker (SIGTERM, then SIGKILL, if it does not exit)
    and reaps it.  Errors leave the block as trio's nurseries raise them (an
    ``ExceptionGroup``).

    Raises ``ValueError`` (``TypeError`` for a value of the wrong type)
    naming the option, at once, for a bad option.

    Cancellation: cancelling the block cancels the callers in it (and so
    their calls, in the workers); the shutdown above then runs, shielded
    (bounded by *shutdown_timeout* plus the stop ladder, except while a
    worker is in the debugger).
    """
    config = PoolConfig.check(
        size=size,
        max_worker_age=max_worker_age,
        max_worker_requests=max_worker_requests,
        error_threshold=error_threshold,
        health_check_interval=health_check_interval,
        health_check_timeout=health_check_timeout,
        shutdown_timeout=shutdown_timeout,
        enable_health_monitoring=enable_health_monitoring,
        restart_backoff=restart_backoff,
        debug_mode=debug_mode,
        initializer=initializer,
        initargs=initargs,
    )
    init: tuple[dict[str, str], str, str] | None = None
    if config.initializer is not None:
        init = (
            function_ref(config.initializer),
            dumps_args(config.initializer, config.initargs),
            config.initializer.__qualname__,
        )
    return _open_worker_pool(config, init)


@asynccontextmanager
async def _open_worker_pool(
    config: PoolConfig, init: tuple[dict[str, str], str, str] | None
) -> AsyncIterator[WorkerPool]:
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(config, init)
        await nursery.start(pool._serve, name="dapper_trio worker pool")
        try:
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool._close()


class WorkerPool:
    """A pool of worker processes (made by ``open_worker_pool()``)."""

    def __init__(
        self, config: PoolConfig, init: tuple[dict[str, str], str, str] | None
    ) -> None:
        self._config = config
        self._init = init
        self._grace = min(_GRACE_MAX, max(_GRACE_MIN, config.shutdown_timeout))
        self._backoff: Backoff = config.restart_backoff
        self._max_age = config.max_worker_age
        # Live workers (not TERMINATED), in the order they were created.
        self._workers: dict[str, _Worker] = {}
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._refs: dict[Callable[..., Any], dict[str, str]] = {}
        self._ping_ref = function_ref(ping)
        self._ping_args = dumps_args(ping, ())
        self._pending_starts = 0
        self._startup_estimate: float | None = None  # seconds, averaged
        self._failed_starts = 0  # consecutive
        self._last_start_error: BaseException | None = None
        self._probe = trio.Lock()
        self._closing = False
        self._failure: WorkerStartError | None = None
        self._full = trio.Event()  # set while `size` workers serve
        self._close_requested = trio.Event()
        self._served = trio.Event()
        self._an: ActorNursery | None = None
        self._lives: trio.Nursery | None = None
        self._maintenance: trio.Nursery | None = None
        self._observers: dict[int, Callable[[WorkerTransition], object]] = {}
        self._observer_ids = itertools.count()
        self._stream_closers: set[Callable[[], None]] = set()
        # Statistics.
        self._terminated = 0
        self._calls_in_flight = 0
        self._calls_served = 0
        self._calls_failed = 0
        self._calls_cancelled = 0
        self._calls_lost = 0
        self._recycles: dict[RecycleReason, int] = dict.fromkeys(RECYCLE_REASONS, 0)
        self._restarts = 0
        self._deaths = 0
        self._health_checks = 0
        self._health_check_failures = 0
        self._workers_started = 0
        self._start_failures = 0

    def __repr__(self) -> str:
        busy = sum(1 for worker in self._workers.values() if worker.state is _BUSY)
        return (
            f"<WorkerPool size={self._config.size}: {len(self._workers)} workers,"
            f" {busy} busy{', closed' if self._closing else ''}>"
        )

    # -- public ------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of workers the pool keeps."""
        return self._config.size

    @property
    def closed(self) -> bool:
        """True once the pool stopped accepting calls."""
        return self._closing

    async def run(
        self,
        async_fn: Callable[[Unpack[PosArgT]], Awaitable[RetT]],
        *args: Unpack[PosArgT],
    ) -> RetT:
        """Run ``await async_fn(*args)`` on a worker; return its result.

        Waits for a READY worker when every worker is busy (callers are
        served first come, first served).  *async_fn* must be an importable
        ``async def`` function and *args* picklable (``TypeError`` otherwise,
        before anything is sent).  Raises ``RemoteError`` for an exception in
        the call, ``ProcessDied`` if the worker dies while running it (the
        pool replaces the worker; the call is not retried),
        ``trio.ClosedResourceError`` if the pool is closed (or shut down
        before the call ended), and ``WorkerStartError`` if the pool gave up
        starting workers while this call waited.

        Cancellation: a call still waiting for a worker is dropped; a running
        one is cancelled in the worker, and this waits (shielded, up to the
        stop grace period, min(2 s, shutdown_timeout)) for it to unwind, so
        its ``finally`` blocks have run when ``Cancelled`` propagates.
        """
        ref = self._refs.get(async_fn)
        if ref is None:
            ref = self._refs[async_fn] = function_ref(async_fn)
        payload = dumps_args(async_fn, args)
        label = async_fn.__qualname__
        if self._closing:
            await trio.lowlevel.checkpoint()
            raise self._closed_error(f"cannot run {label}()")
        worker = self._take(label)
        if worker is None:
            worker = await self._wait_for_worker(label)
        outcome: CallOutcome = "cancelled"
        try:
            result: RetT = await worker.child.call(ref, payload, label)
            outcome = "ok"
            return result
        except RemoteError:
            outcome = "error"
            raise
        except ProcessDied:
            outcome = "lost"
            raise
        except trio.ClosedResourceError as exc:
            raise trio.ClosedResourceError(
                f"the worker pool shut down before {label}() ended"
            ) from exc
        finally:
            self._finished(worker, outcome)

    async def wait_ready(self) -> None:
        """Wait until ``size`` workers are READY or BUSY (none being recycled).

        Returns at once if they are.  Raises ``WorkerStartError`` if the pool
        gave up starting workers, ``trio.ClosedResourceError`` if it is closed.

        Cancellation: safe; nothing changes.
        """
        while True:
            if self._closing:
                await trio.lowlevel.checkpoint()
                raise self._closed_error("it will not be ready")
            if self._full.is_set():
                await trio.lowlevel.checkpoint()
                return
            await self._full.wait()

    def statistics(self) -> PoolStatistics:
        """Workers by state, calls served, recycles by reason, restarts, failures."""
        counts = dict.fromkeys(WorkerState, 0)
        for worker in self._workers.values():
            counts[worker.state] += 1
        counts[_TERMINATED] = self._terminated
        return PoolStatistics(
            size=self._config.size,
            workers=MappingProxyType(counts),
            calls_waiting=len(self._waiters),
            calls_in_flight=self._calls_in_flight,
            calls_served=self._calls_served,
            calls_failed=self._calls_failed,
            calls_cancelled=self._calls_cancelled,
            calls_lost=self._calls_lost,
            recycles=MappingProxyType(dict(self._recycles)),
            restarts=self._restarts,
            worker_deaths=self._deaths,
            health_checks=self._health_checks,
            health_check_failures=self._health_check_failures,
            workers_started=self._workers_started,
            start_failures=self._start_failures,
        )

    def workers(self) -> list[WorkerInfo]:
        """A snapshot of every live worker (not TERMINATED), oldest first."""
        now = trio.current_time()
        return [
            WorkerInfo(
                name=worker.name,
                pid=worker.child.pid,
                path=worker.path,
                state=worker.state,
                calls=worker.record.calls,
                consecutive_failures=worker.record.consecutive_failures,
                age=worker.record.age(now),
                recycle=worker.record.recycle,
                standby=worker.standby,
                in_debugger=worker.watch.busy,
            )
            for worker in self._workers.values()
        ]

    def add_observer(
        self, callback: Callable[[WorkerTransition], object]
    ) -> Callable[[], None]:
        """Call ``callback(transition)`` after every move of every worker.

        Returns a callable that unsubscribes.  Callbacks run synchronously,
        in the order the moves happened, and must not block; one that raises
        is logged (logger ``dapper_trio.pool``) and changes nothing.  To
        react with async code, use ``watch()``.
        """
        key = next(self._observer_ids)
        self._observers[key] = callback

        def unsubscribe() -> None:
            self._observers.pop(key, None)

        return unsubscribe

    def watch(
        self, *, max_buffer_size: int = _WATCH_BUFFER
    ) -> AbstractAsyncContextManager[WorkerTransitionStream]:
        """Stream every worker's moves: ``async with pool.watch() as stream:``.

        ``async for transition in stream`` yields each ``WorkerTransition``
        from entering the block on, in order; the loop ends once the pool
        has shut down.  The pool never waits for the reader: if more than
        *max_buffer_size* moves are waiting, the stream stops recording and,
        after the reader has drained it, raises ``WatchOverflowError``.

        Cancellation: entering and leaving do not block; a cancelled
        ``receive`` loses nothing.
        """
        if max_buffer_size < 1:
            raise ValueError("max_buffer_size must be at least 1")
        return self._watch(max_buffer_size)

    @asynccontextmanager
    async def _watch(
        self, max_buffer_size: int
    ) -> AsyncIterator[WorkerTransitionStream]:
        send_channel, receive_channel = trio.open_memory_channel[WorkerTransition](
            max_buffer_size
        )
        stream = WorkerTransitionStream(receive_channel)

        def on_transition(transition: WorkerTransition) -> None:
            try:
                send_channel.send_nowait(transition)
            except trio.WouldBlock:
                stream.overflowed = True
                send_channel.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        unsubscribe = self.add_observer(on_transition)
        self._stream_closers.add(send_channel.close)
        if self._served.is_set():
            send_channel.close()
        try:
            yield stream
        finally:
            unsubscribe()
            self._stream_closers.discard(send_channel.close)
            send_channel.close()
            receive_channel.close()

    # -- calls -------------------------------------------------------------

    @trio.lowlevel.enable_ki_protection
    def _take(self, label: str) -> _Worker | None:
        """An idle worker, given the call at once; None if the caller must wait."""
        idle = self._idle
        if idle:
            worker = idle.popleft()
            if worker.state is _READY:
                worker.record.fire(_BUSY, f"running {label}()")
            self._dispatched(worker)
            return worker
        return None

    async def _wait_for_worker(self, label: str) -> _Worker:
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.worker is not None
        return waiter.worker

    @trio.lowlevel.enable_ki_protection
    def _abandon(self, waiter: _Waiter) -> None:
        worker = waiter.worker
        if worker is None:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass  # woken with an error at the same time
            return
        # Handed a worker just as it was cancelled: give the worker back.
        worker.in_call = False
        self._calls_in_flight -= 1
        self._make_available(worker)

    @trio.lowlevel.enable_ki_protection
    def _dispatched(self, worker: _Worker) -> None:
        worker.in_call = True
        self._calls_in_flight += 1
        record = worker.record
        reason = record.call_started()
        if reason is not None:
            self._recycling(worker, reason)
        elif (
            not worker.expiring
            and record.ready_at is not None
            and requests_run_out_within(
                record.calls,
                self._config.max_worker_requests,
                trio.current_time() - record.ready_at,
                self._lead_time(),
            )
        ):
            self._expiring(worker)

    @trio.lowlevel.enable_ki_protection
    def _finished(self, worker: _Worker, outcome: CallOutcome) -> None:
        """A call given to *worker* ended (however it ended)."""
        worker.in_call = False
        self._calls_in_flight -= 1
        if outcome == "ok":
            self._calls_served += 1
        elif outcome == "error":
            self._calls_served += 1
            self._calls_failed += 1
        elif outcome == "lost":
            self._calls_lost += 1
        else:
            self._calls_cancelled += 1
        reason = worker.record.call_finished(outcome)
        if reason is not None:
            self._recycling(worker, reason)
        if worker.call_done is not None:
            worker.call_done.set()
            worker.call_done = None
        state = worker.state
        if state is _BUSY and outcome != "lost":
            if (
                outcome == "cancelled"
                and self._config.enable_health_monitoring
                and not self._closing
                and worker.record.recycle is None
            ):
                # Its loop may be stuck in the abandoned call: check first.
                worker.record.fire(_READY, "call cancelled; checking it answers")
                self._start_ping(worker)
                return
            self._make_available(worker)
        elif state is _DRAINING:
            self._stop_if_drained(worker)

    @trio.lowlevel.enable_ki_protection
    def _make_available(self, worker: _Worker) -> None:
        """*worker* (READY, or BUSY with no call) may take the next call."""
        if (
            worker.state not in _SERVING
            or worker.pinging
            or worker.in_call
            or worker.standby
        ):
            return
        if self._closing or worker.record.recycle is not None:
            self._reconcile()  # may drain it
            if worker.state is _BUSY:
                worker.record.fire(_READY, "call finished; not taking more")
            return
        waiters = self._waiters
        if waiters:
            waiter = waiters.popleft()
            if worker.state is _READY:
                worker.record.fire(_BUSY, "handed to a waiting caller")
            waiter.worker = worker
            self._dispatched(worker)
            waiter.event.set()
            return
        if worker.state is _BUSY:
            worker.record.fire(_READY, "call finished")
        self._idle.append(worker)

    def _closed_error(self, what: str) -> BaseException:
        if self._failure is not None:
            return self._failure.copy()
        return trio.ClosedResourceError(f"the worker pool is closed; {what}")

    # -- keeping the pool at size -------------------------------------------

    @trio.lowlevel.enable_ki_protection
    def _reconcile(self) -> None:
        """Keep ``size`` workers in service (see the module's docstring).

        Starts the workers the pool is short of -- counting one more for each
        worker in service that will soon be recycled (its successor) -- puts
        standby workers into service where one is missing, and drains recycled
        workers while the pool can spare them.
        """
        if self._closing:
            return
        size = self._config.size
        active = expiring = 0
        standby: list[_Worker] = []
        recycled: list[_Worker] = []
        for worker in self._workers.values():
            if worker.state not in _SERVING:
                continue
            if worker.record.recycle is not None:
                recycled.append(worker)
            elif worker.standby:
                standby.append(worker)
            else:
                active += 1
                expiring += worker.expiring
        promoted = standby[: max(0, size - active)]
        active += len(promoted)
        waiting = len(standby) - len(promoted)
        if active >= size:
            self._full.set()
        elif self._full.is_set():
            self._full = trio.Event()
        missing = size + expiring - active - waiting - self._pending_starts
        if missing > 0:
            assert self._maintenance is not None
            for _ in range(missing):
                self._pending_starts += 1  # settled by _PendingStart
                self._maintenance.start_soon(
                    self._start_worker, name="dapper_trio pool: start a worker"
                )
        spare = active + waiting + len(recycled) - size
        for worker in recycled:  # oldest first
            if spare <= 0:
                break
            if worker.watch.busy:
                continue  # in the debugger: not now
            self._drain(worker, f"recycled ({worker.record.recycle})")
            spare -= 1
        for worker in promoted:
            if worker.standby:  # (a nested _reconcile may have done it)
                worker.standby = False
                self._make_available(worker)

    def _expiring(self, worker: _Worker) -> None:
        """*worker* will be recycled soon: start its successor now."""
        worker.expiring = True
        logger.debug("worker %s is due for recycling soon", worker.name)
        self._reconcile()

    def _lead_time(self) -> float:
        """How early to start a successor: twice a worker's start-up, and some."""
        estimate = self._startup_estimate
        return 2 * (estimate if estimate is not None else 1.0) + 0.1

    def _recycling(self, worker: _Worker, reason: RecycleReason) -> None:
        self._recycles[reason] += 1
        logger.info(
            "worker %s (pid %d) is recycled: %s",
            worker.name,
            worker.child.pid,
            _RECYCLE_WORDS[reason],
        )
        try:
            self._idle.remove(worker)
        except ValueError:
            pass
        self._reconcile()

    def _drain(self, worker: _Worker, reason: str) -> None:
        """READY/BUSY -> DRAINING: no new calls; stopped once its call ends."""
        try:
            self._idle.remove(worker)
        except ValueError:
            pass
        if worker.state in _SERVING:
            worker.record.fire(_DRAINING, reason)
        self._stop_if_drained(worker)

    def _stop_if_drained(self, worker: _Worker) -> None:
        if worker.state is _DRAINING and not worker.in_call:
            worker.child.request_stop()

    async def _start_worker(self) -> None:
        """Start one worker (a pending start), backing off while starts fail."""
        pending = _PendingStart(self)
        try:
            while pending.open and not self._closing:
                if self._failed_starts == 0:
                    await self._try_start(pending)
                    continue
                async with self._probe:  # one attempt at a time while failing
                    if self._failed_starts == 0:
                        continue
                    delay = self._backoff.delay(self._failed_starts)
                    if delay is None:
                        self._give_up()
                        return
                    await trio.sleep(delay)
                    await self._try_start(pending)
        finally:
            pending.settle()

    async def _try_start(self, pending: _PendingStart) -> None:
        """One attempt; on success *pending* is settled (by ``_life``)."""
        assert self._an is not None
        assert self._lives is not None
        if self._closing:
            return
        streak = self._failed_starts
        name = f"worker-{next(_worker_numbers)}"
        child = _Child(self._an, name)
        record = WorkerRecord(
            name,
            max_requests=self._config.max_worker_requests,
            error_threshold=self._config.error_threshold,
            clock=trio.current_time,
        )
        worker = _Worker(child, record)
        record.machine.add_observer(lambda transition: self._notify(worker, transition))
        self._workers[name] = worker
        begun = trio.current_time()
        try:
            await self._lives.start(
                self._life, worker, pending, name=f"dapper_trio pool {name}"
            )
        except BaseException as exc:
            if not worker.supervised:  # no supervisor will report its end
                worker.exit_error = exc
                self._gone(worker)
            if not isinstance(exc, _StartFailed):
                raise
            failed = exc
        else:
            self._failed_starts = 0
            took = trio.current_time() - begun
            estimate = self._startup_estimate
            self._startup_estimate = (
                took if estimate is None else 0.7 * estimate + 0.3 * took
            )
            return
        if not self._closing:
            self._start_failures += 1
            self._failed_starts = max(self._failed_starts, streak + 1)
            self._last_start_error = failed.error
            delay = self._backoff.delay(self._failed_starts)
            logger.warning(
                "worker %s failed to start (%d in a row): %s; %s",
                name,
                self._failed_starts,
                _describe(failed.error),
                "giving up" if delay is None else f"next attempt in {delay:g} s",
            )

    def _give_up(self) -> None:
        attempts = self._failed_starts
        error = WorkerStartError(
            f"the worker pool could not start a worker: {attempts} starts failed"
            f" in a row and restart_backoff={_format_backoff(self._backoff)} gave"
            f" up; the last one: {_describe(self._last_start_error)}",
            attempts=attempts,
            last_error=self._last_start_error,
        )
        error.__cause__ = self._last_start_error
        logger.error("%s", error)
        self._failure = error
        self._begin_close()

    async def _life(
        self,
        worker: _Worker,
        pending: _PendingStart,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Start *worker*, make it READY, and keep its timers until it is gone."""
        async with self._debugger_watch(worker) as watch:
            worker.watch = watch
            await self._start_process(worker)
            if worker.state is not _INITIALIZING:  # it died right away
                raise _StartFailed(
                    worker.exit_error or RuntimeError("the worker ended at once")
                )
            worker.standby = True  # until _reconcile puts it into service
            worker.record.mark_ready(f"started (pid {worker.child.pid})")
            pending.settle()
            self._workers_started += 1
            task_status.started()
            self._reconcile()
            async with trio.open_nursery() as timers:
                if math.isfinite(self._max_age):
                    timers.start_soon(self._age_timer, worker)
                if self._config.debug_mode:
                    timers.start_soon(self._follow_debugger, worker)
                await worker.gone.wait()
                timers.cancel_scope.cancel()

    async def _start_process(self, worker: _Worker) -> None:
        """Start the actor and run the initializer; ``_StartFailed`` if it fails."""
        assert self._an is not None
        try:
            await self._an._nursery.start(
                self._supervise, worker, name=f"actor {format_path(worker.path)}"
            )
        except (ProcessDied, OSError) as exc:
            raise _StartFailed(exc) from exc
        if self._init is None:
            return
        ref, payload, label = self._init
        try:
            await worker.child.call(ref, payload, label)
        except BaseException as exc:
            worker.exit_error = exc
            with trio.CancelScope(shield=True):
                worker.child.request_stop()
                await worker.gone.wait()
            if isinstance(exc, (RemoteError, ProcessDied, trio.ClosedResourceError)):
                raise _StartFailed(exc) from exc
            raise

    async def _supervise(
        self, worker: _Worker, *, task_status: trio.TaskStatus[Portal]
    ) -> None:
        """The actor's supervisor; its end is the worker's end, not an error."""
        worker.supervised = True
        status = _StatusProxy(task_status)
        try:
            await worker.child.supervise(task_status=status)
        except Exception as exc:
            worker.exit_error = exc
            if not status.called:
                raise  # a failed start: Nursery.start() raises it
            if worker.child._died is None:
                # Errors of calls whose callers had left (see _actors).
                logger.warning(
                    "worker %s (pid %d): %s", worker.name, worker.child.pid, exc
                )
        except BaseException as exc:
            worker.exit_error = exc
            raise
        finally:
            self._gone(worker)

    @trio.lowlevel.enable_ki_protection
    def _gone(self, worker: _Worker) -> None:
        """The worker's process has ended and was reaped (or never started)."""
        child = worker.child
        state = worker.state
        self._workers.pop(worker.name, None)
        try:
            self._idle.remove(worker)
        except ValueError:
            pass
        if state is _INITIALIZING:
            error = worker.exit_error
            if isinstance(error, trio.Cancelled):
                reason = "stopped while starting"
            else:
                reason = f"failed to start: {_describe(error)}"
        elif child._stop_requested:
            reason = "stopped" + (
                f" with {child._escalated}" if child._escalated else ""
            )
        else:
            died = child._died
            reason = f"died: {died}" if died is not None else "died"
            self._deaths += 1
            if not self._closing and state in _SERVING:
                self._restarts += 1
            logger.warning("worker %s (pid %d) %s", worker.name, child.pid, reason)
        if state is not _TERMINATED:
            worker.record.fire(_TERMINATED, reason)
        self._terminated += 1
        worker.gone.set()
        if worker.call_done is not None:
            worker.call_done.set()
            worker.call_done = None
        self._reconcile()

    async def _age_timer(self, worker: _Worker) -> None:
        ready_at = worker.record.ready_at
        assert ready_at is not None
        await trio.sleep_until(ready_at + self._max_age - self._lead_time())
        await worker.watch.wait_quiet()  # not while it is in the debugger
        if worker.state in _SERVING and not self._closing and not worker.expiring:
            self._expiring(worker)
        await trio.sleep_until(ready_at + self._max_age)
        await worker.watch.wait_quiet()  # not while it is in the debugger
        if worker.state in _SERVING and not self._closing:
            reason = worker.record.age_expired(trio.current_time(), self._max_age)
            if reason is not None:
                self._recycling(worker, reason)

    async def _follow_debugger(self, worker: _Worker) -> None:
        # Drains put off while the worker was in the debugger happen after.
        while True:
            await worker.watch.wait_busy()
            await worker.watch.wait_quiet()
            self._reconcile()

    def _debugger_watch(
        self, worker: _Worker
    ) -> AbstractAsyncContextManager[SubtreeWatch]:
        return _debugger_watch(self._an, worker.path)

    # -- health ------------------------------------------------------------

    async def _health_monitor(self) -> None:
        interval = self._config.health_check_interval
        while True:
            await trio.sleep(interval)
            standby = [
                worker
                for worker in self._workers.values()
                if worker.standby and worker.state is _READY and not worker.pinging
            ]
            for worker in [*self._idle, *standby]:
                if not worker.watch.busy:
                    if not worker.standby:
                        self._idle.remove(worker)
                    self._start_ping(worker)

    def _start_ping(self, worker: _Worker) -> None:
        assert self._lives is not None
        worker.pinging = True
        self._lives.start_soon(
            self._ping, worker, name=f"dapper_trio pool: ping {worker.name}"
        )

    async def _ping(self, worker: _Worker) -> None:
        assert self._lives is not None
        self._health_checks += 1
        answered = False
        done = trio.Event()

        async def call() -> None:
            nonlocal answered
            try:
                await worker.child.call(self._ping_ref, self._ping_args, "ping")
                answered = True
            except (RemoteError, ProcessDied, trio.ClosedResourceError):
                pass
            finally:
                done.set()

        # Not cancelled on a timeout (see the module's docstring): the call
        # ends when the worker does.
        self._lives.start_soon(call, name=f"dapper_trio pool: ping {worker.name}")
        timeout = self._config.health_check_timeout
        in_time = await wait_within(worker.watch, timeout, done.wait)
        worker.pinging = False
        if answered:
            self._make_available(worker)
            return
        if worker.state is not _READY:
            return  # it died, or the pool is closing: not a health failure
        self._health_check_failures += 1
        why = (
            f"no answer to a ping within {timeout:g} s"
            if not in_time
            else "its ping failed"
        )
        logger.warning(
            "worker %s (pid %d) failed a health check (%s); replacing it",
            worker.name,
            worker.child.pid,
            why,
        )
        self._restarts += 1
        self._drain(worker, f"failed a health check: {why}")
        self._reconcile()

    # -- the service: start-up and shutdown ---------------------------------

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        config = self._config
        try:
            # Shielded: only _close() (or a failure) ends the service.
            with trio.CancelScope(shield=True):
                async with open_actor_nursery(
                    debug_mode=config.debug_mode, grace_period=self._grace
                ) as an:
                    self._an = an
                    async with trio.open_nursery() as lives:
                        self._lives = lives
                        async with trio.open_nursery() as maintenance:
                            self._maintenance = maintenance
                            self._reconcile()
                            if config.enable_health_monitoring:
                                maintenance.start_soon(
                                    self._health_monitor,
                                    name="dapper_trio pool: health checks",
                                )
                            task_status.started()
                            await self._close_requested.wait()
                            maintenance.cancel_scope.cancel()
                        while self._workers:
                            async with trio.open_nursery() as drains:
                                for worker in list(self._workers.values()):
                                    drains.start_soon(self._shut_down_worker, worker)
        finally:
            self._served.set()
            for close in list(self._stream_closers):
                close()
        if self._failure is not None:
            raise self._failure

    @trio.lowlevel.enable_ki_protection
    def _begin_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            waiter.error = self._closed_error("the call was not run")
            waiter.event.set()
        self._idle.clear()
        self._full.set()  # wakes wait_ready(), which raises
        if self._maintenance is not None:
            self._maintenance.cancel_scope.cancel()
        self._close_requested.set()

    async def _close(self) -> None:
        """Shut down (see the module's docstring) and wait until it is over."""
        self._begin_close()
        await self._served.wait()

    async def _shut_down_worker(self, worker: _Worker) -> None:
        if worker.state in _SERVING:
            self._drain(worker, "the pool is shutting down")
        if worker.state is _DRAINING and worker.in_call:
            timeout = self._config.shutdown_timeout
            if not await wait_within(worker.watch, timeout, worker.wait_call_done):
                logger.info(
                    "worker %s (pid %d): its call did not end within"
                    " shutdown_timeout (%g s); cancelling it",
                    worker.name,
                    worker.child.pid,
                    timeout,
                )
        worker.child.request_stop()
        await worker.gone.wait()

    # -- observation -------------------------------------------------------

    def _notify(self, worker: _Worker, transition: Transition[WorkerState]) -> None:
        if not self._observers:
            return
        move = WorkerTransition(
            transition.source,
            transition.target,
            transition.reason,
            transition.timestamp,
            worker=worker.name,
            pid=worker.child.pid,
        )
        for callback in list(self._observers.values()):
            try:
                callback(move)
            except Exception:
                logger.exception("pool observer %r raised on %s", callback, move)


_RECYCLE_WORDS: Final[dict[RecycleReason, str]] = {
    "max_requests": "it was given max_worker_requests calls",
    "max_age": "it reached max_worker_age",
    "error_threshold": "error_threshold calls in a row raised",
}


@asynccontextmanager
async def _debugger_watch(
    an: ActorNursery | None, path: tuple[str, ...]
) -> AsyncIterator[SubtreeWatch]:
    """In debug mode: whether *path*'s subtree holds or waits for the terminal."""
    tree = an._tree if an is not None else None
    if tree is None:
        yield SubtreeWatch()
        return
    async with watch_subtree(tree.address, tree.token, path) as watch:
        yield watch


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown"
    if isinstance(error, RemoteError):
        return f"the initializer failed: {error.summary}"
    return str(error) or type(error).__name__


def _format_backoff(backoff: Backoff) -> str:
    return f"({backoff.initial:g}, {backoff.factor:g}, {backoff.maximum:g})"
