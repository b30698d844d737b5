"""The worker pool: lifecycle, health checks, recycling, backoff, shutdown, debugging.

The option checks, the backoff schedule and the worker record are pure and
tested synchronously.  Everything else runs real worker processes (their
functions live in tests/pool_fns.py); conftest's harness fails a test that
leaves a process, a zombie or a socket file behind.  Tests whose point is a
long timer (a worker's age, the default health-check timings) run on trio's
MockClock: the clock only moves when the test jumps it, so the processes'
real start-up time never fires a timer by accident; their waits are bounded
by conftest's real-time limit.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pool_fns
import pytest
import trio
import trio.testing
from terminal import PROGRAMS, Terminal, terminal_env

import dapper_trio
from dapper_trio import _actors
from dapper_trio._pool import (
    PoolStatistics,
    WorkerPool,
    WorkerStartError,
    WorkerTransition,
    open_worker_pool,
)
from dapper_trio._pool_policy import Backoff, PoolConfig, WorkerRecord
from dapper_trio._states import (
    WORKER_INITIAL_STATE,
    WORKER_TRANSITIONS,
    LifecycleError,
    WorkerState,
)

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

TIMEOUT = 20.0
W = WorkerState
QUICK = {"enable_health_monitoring": False}


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The non-group exceptions inside *exc* (itself if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def only_leaf(exc: BaseException) -> BaseException:
    """The one exception inside a (nest of) group(s); fails if there are more."""
    found = list(leaves(exc))
    assert len(found) == 1, found
    return found[0]


def process_gone(pid: int) -> bool:
    """True once *pid* no longer exists (a zombie still does)."""
    return not os.path.exists(f"/proc/{pid}")


async def wait_for_file(path: Path) -> str:
    """Wait (bounded by the caller's fail_after) until *path* exists; its text."""
    async_path = trio.Path(path)
    while not await async_path.exists():
        await trio.sleep(0.01)
    await trio.sleep(0.01)  # let the writer finish
    return await async_path.read_text()


class Recorder:
    """Every worker move of a pool, in order, with a way to wait for some."""

    def __init__(self, pool: WorkerPool) -> None:
        self.moves: list[WorkerTransition] = []
        self._changed = trio.Event()
        pool.add_observer(self._on_move)

    def _on_move(self, move: WorkerTransition) -> None:
        self.moves.append(move)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[WorkerTransition], bool], count: int = 1
    ) -> list[WorkerTransition]:
        """Wait (no clock involved) until *count* moves match; return them."""
        while True:
            found = [move for move in self.moves if predicate(move)]
            if len(found) >= count:
                return found
            await self._changed.wait()

    def paths(self) -> dict[str, list[WorkerState]]:
        """Each worker's states in order, from INITIALIZING."""
        paths: dict[str, list[WorkerState]] = {}
        for move in self.moves:
            path = paths.setdefault(move.worker, [move.source])
            assert path[-1] is move.source, (move, path)
            path.append(move.target)
        return paths

    def assert_legal(self) -> None:
        """Every worker's path starts at INITIALIZING and uses the table only."""
        for name, path in self.paths().items():
            assert path[0] is W.INITIALIZING, (name, path)
            for source, target in itertools.pairwise(path):
                assert target in WORKER_TRANSITIONS[source], (name, path)


def to(state: WorkerState, worker: str | None = None) -> Callable[[Any], bool]:
    """A predicate: a move into *state* (of *worker*, if given)."""
    return lambda move: move.target is state and worker in (None, move.worker)


def serving(stats: PoolStatistics) -> int:
    return stats.workers[W.READY] + stats.workers[W.BUSY]


# ---------------------------------------------------------------------------
# Options, backoff and the worker record (pure)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"size": 0}, ValueError, "size must be >= 1"),
        ({"size": 2.5}, TypeError, "size must be an integer"),
        ({"size": True}, TypeError, "size must be an integer"),
        ({"max_worker_age": 0}, ValueError, "max_worker_age must be > 0"),
        ({"max_worker_age": -1.0}, ValueError, "max_worker_age must be > 0"),
        ({"max_worker_age": float("nan")}, ValueError, "max_worker_age"),
        ({"max_worker_requests": 0}, ValueError, "max_worker_requests must be >= 1"),
        ({"max_worker_requests": 1.5}, TypeError, "max_worker_requests"),
        ({"error_threshold": -2}, ValueError, "error_threshold must be >= 1"),
        ({"health_check_interval": 0}, ValueError, "health_check_interval must be"),
        ({"health_check_interval": float("inf")}, ValueError, "health_check_inter"),
        ({"health_check_timeout": -1}, ValueError, "health_check_timeout must be"),
        ({"health_check_timeout": "5"}, TypeError, "health_check_timeout must be"),
        ({"shutdown_timeout": -0.5}, ValueError, "shutdown_timeout must be >= 0"),
        ({"enable_health_monitoring": 1}, TypeError, "enable_health_monitoring"),
        ({"debug_mode": "yes"}, TypeError, "debug_mode must be True or False"),
        ({"restart_backoff": (0.1, 2.0)}, TypeError, "restart_backoff must be three"),
        ({"restart_backoff": (0, 2.0, 1.0)}, ValueError, "initial delay must be > 0"),
        ({"restart_backoff": (0.1, 0.5, 1.0)}, ValueError, "factor must be >= 1"),
        ({"restart_backoff": (1.0, 2.0, 0.5)}, ValueError, "maximum delay"),
        ({"restart_backoff": (0.1, 1.0, 1.0)}, ValueError, "would retry forever"),
        ({"initializer": "setup"}, TypeError, "initializer must be an async function"),
        ({"initializer": lambda: None}, TypeError, "not one"),
        ({"initargs": [1]}, TypeError, "initargs must be a tuple"),
    ],
)
def test_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A bad option raises ValueError (TypeError for a wrong type) naming it."""
    with pytest.raises(error, match=message):
        open_worker_pool(**options)


def test_good_options_are_kept() -> None:
    """Limits may be turned off (None, math.inf); shutdown_timeout may be 0."""
    config = PoolConfig.check(
        size=1,
        max_worker_age=float("inf"),
        max_worker_requests=None,
        error_threshold=None,
        health_check_interval=0.5,
        health_check_timeout=1,
        shutdown_timeout=0,
        enable_health_monitoring=False,
        restart_backoff=[1, 1, 1],
        debug_mode=True,
    )
    assert config.max_worker_requests is None
    assert config.restart_backoff == Backoff(1.0, 1.0, 1.0)
    assert config.shutdown_timeout == 0.0
    assert isinstance(config.health_check_timeout, float)


def test_backoff_schedule() -> None:
    """Delays grow by the factor up to the maximum; one attempt after it, then stop."""
    default = Backoff(0.1, 2.0, 30.0)
    assert default.schedule() == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
    )
    assert default.attempts == 11
    assert default.delay(0) == 0.0
    assert default.delay(10) == 30.0
    assert default.delay(11) is None
    assert Backoff(0.05, 2.0, 0.2).schedule() == pytest.approx([0.05, 0.1, 0.2])
    assert Backoff(1.0, 1.0, 1.0).schedule() == [1.0]
    # A huge factor does not overflow.
    assert Backoff(1.0, 1e300, 5.0).schedule() == [1.0, 5.0]


def test_worker_record_walks_the_table() -> None:
    """Every legal move works; every illegal one raises and leaves the state alone."""
    legal = {(s, t) for s, targets in WORKER_TRANSITIONS.items() for t in targets}
    routes = {
        W.INITIALIZING: [],
        W.READY: [W.READY],
        W.BUSY: [W.READY, W.BUSY],
        W.DRAINING: [W.READY, W.DRAINING],
        W.TERMINATED: [W.TERMINATED],
    }
    for source in WorkerState:
        for target in WorkerState:
            record = WorkerRecord("w", max_requests=None, error_threshold=None)
            for step in routes[source]:
                record.fire(step, "setting up")
            assert record.state is source
            if (source, target) in legal:
                move = record.fire(target, "testing")
                assert (move.source, move.target, move.reason) == (
                    source,
                    target,
                    "testing",
                )
                assert record.state is target
            else:
                with pytest.raises(LifecycleError) as excinfo:
                    record.fire(target, "testing")
                assert excinfo.value.state is source
                assert excinfo.value.target is target
                assert "worker w" in str(excinfo.value)
                assert record.state is source
    record = WorkerRecord("w", max_requests=None, error_threshold=None)
    record.fire(W.READY, "up")
    with pytest.raises(LifecycleError, match="from READY to READY"):
        record.mark_ready("again")
    assert record.state is W.READY


def test_worker_record_recycle_rules() -> None:
    """Requests, failures in a row and age each pick a reason; the first one stays."""
    now = [0.0]
    record = WorkerRecord("w", max_requests=3, error_threshold=2, clock=lambda: now[0])
    record.mark_ready("up")
    assert [record.call_started() for _ in range(3)] == [None, None, "max_requests"]
    assert record.recycle == "max_requests"
    assert record.call_finished("error") is None
    assert record.call_finished("error") is None  # threshold reached, reason kept
    assert record.recycle == "max_requests"

    record = WorkerRecord("w", max_requests=None, error_threshold=2)
    for outcome in ("error", "ok", "error", "cancelled", "lost"):
        assert record.call_finished(outcome) is None  # type: ignore[arg-type]
    assert record.consecutive_failures == 1
    assert record.call_finished("error") == "error_threshold"

    now = [10.0]
    record = WorkerRecord(
        "w", max_requests=None, error_threshold=None, clock=lambda: now[0]
    )
    assert record.age_expired(now[0], 5.0) is None  # not READY yet
    record.mark_ready("up")
    now[0] = 14.0
    assert record.age(now[0]) == 4.0
    assert record.age_expired(now[0], 5.0) is None
    now[0] = 15.0
    assert record.age_expired(now[0], 5.0) == "max_age"
    assert record.age_expired(now[0], 5.0) is None  # said once


def test_the_guide_shows_the_worker_table() -> None:
    """docs/pool.md holds the worker table and diagram as the docs tool renders them."""
    root = Path(__file__).resolve().parents[1]
    path = root / "docs" / "_tools" / "lifecycle_diagram.py"
    spec = importlib.util.spec_from_file_location("lifecycle_diagram", path)
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rendered = tool._render_table(
        "Pool worker", "WorkerState", WORKER_TRANSITIONS, WORKER_INITIAL_STATE
    )
    assert rendered in (root / "docs" / "pool.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# Calls


async def test_run_returns_results_errors_and_statistics() -> None:
    """Calls return values, raise RemoteError, spread over workers, and are counted."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(2, **QUICK) as pool:
            await pool.wait_ready()
            assert await pool.run(pool_fns.double, 21) == 42
            pids = set()

            async def one() -> None:
                pids.add(await pool.run(pool_fns.sleep_for, 0.05))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)
            infos = pool.workers()
            assert pids == {info.pid for info in infos}
            assert len(pids) == 2
            with pytest.raises(dapper_trio.RemoteError) as excinfo:
                await pool.run(pool_fns.fail, "boom")
            assert excinfo.value.error_type == "ValueError"
            assert excinfo.value.message == "boom"
            stats = pool.statistics()
            assert stats.size == 2
            assert stats.calls_served == 6
            assert stats.calls_failed == 1
            assert (stats.calls_in_flight, stats.calls_waiting) == (0, 0)
            assert stats.workers[W.READY] == 2
            assert stats.workers_started == 2
            assert dict(stats.recycles) == {
                "max_requests": 0,
                "max_age": 0,
                "error_threshold": 0,
            }
            assert sum(info.calls for info in pool.workers()) == 6
            with pytest.raises(TypeError, match="lambda"):
                await pool.run(lambda: None)  # type: ignore[arg-type, return-value]
            with pytest.raises(TypeError, match="argument 0 of double"):
                await pool.run(pool_fns.double, threading_lock())  # type: ignore[arg-type]
        assert pool.closed
        with pytest.raises(trio.ClosedResourceError, match="pool is closed"):
            await pool.run(pool_fns.double, 1)
        with pytest.raises(trio.ClosedResourceError):
            await pool.wait_ready()
    for pid in pids:
        assert process_gone(pid)
    final = pool.statistics()
    assert final.workers[W.TERMINATED] == 2
    assert serving(final) == 0


def threading_lock() -> object:
    """Something that cannot be pickled."""
    import threading

    return threading.Lock()


async def test_every_transition_is_observed(tmp_path: Path) -> None:
    """Each move of the worker table happens and is seen by observers and streams."""
    flag = tmp_path / "no-db"
    streamed: list[WorkerTransition] = []

    async def follow(pool: WorkerPool, *, task_status: trio.TaskStatus[None]) -> None:
        async with pool.watch() as stream:
            task_status.started()
            streamed.extend([move async for move in stream])

    pool_options: dict[str, Any] = {
        "error_threshold": None,
        "restart_backoff": (0.05, 2.0, 0.4),
        "initializer": pool_fns.init_fails_while,
        "initargs": (str(flag),),
        **QUICK,
    }
    with trio.fail_after(TIMEOUT):
        async with (
            trio.open_nursery() as outer,
            open_worker_pool(2, **pool_options) as pool,
        ):
            await outer.start(follow, pool)
            record = Recorder(pool)
            await pool.wait_ready()
            await pool.run(pool_fns.double, 1)  # READY -> BUSY -> READY
            # An idle worker killed: READY -> TERMINATED; its replacement
            # fails to start once: INITIALIZING -> TERMINATED.
            flag.write_text("")
            idle = pool.workers()[0]
            os.kill(idle.pid, signal.SIGKILL)
            await record.wait_for(to(W.TERMINATED, idle.name))
            await record.wait_for(
                lambda m: m.target is W.TERMINATED and m.source is W.INITIALIZING
            )
            flag.unlink()
            await pool.wait_ready()
            # A busy worker killed: BUSY -> TERMINATED, the caller gets ProcessDied.
            with pytest.raises(BaseExceptionGroup) as excinfo:
                await kill_a_busy_worker(pool)
            died = only_leaf(excinfo.value)
            assert isinstance(died, dapper_trio.ProcessDied)
            assert died.signal == signal.SIGKILL
            await pool.wait_ready()
            # Shutdown with a call in flight: BUSY -> DRAINING -> TERMINATED,
            # and an idle one READY -> DRAINING -> TERMINATED.
            started = trio.Event()

            async def last_call() -> None:
                started.set()
                assert await pool.run(pool_fns.sleep_for, 0.3) > 0

            outer.start_soon(last_call)
            await started.wait()
            while pool.statistics().calls_in_flight == 0:
                await trio.sleep(0.01)
    edges = {(m.source, m.target) for m in record.moves}
    legal = {(s, t) for s, targets in WORKER_TRANSITIONS.items() for t in targets}
    assert edges == legal
    record.assert_legal()
    for path in record.paths().values():
        assert path[-1] is W.TERMINATED
    # The stream saw the same moves, and ended when the pool shut down.
    assert [(m.worker, m.source, m.target) for m in streamed] == [
        (m.worker, m.source, m.target) for m in record.moves
    ]
    reasons = [m.reason or "" for m in record.moves if m.target is W.TERMINATED]
    assert any("killed by SIGKILL" in reason for reason in reasons)
    assert any("no database today" in reason for reason in reasons)


async def kill_a_busy_worker(pool: WorkerPool) -> None:
    """Start a long call, and kill its worker with SIGKILL."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run, pool_fns.sleep_for, 30)
        while pool.statistics().calls_in_flight == 0:
            await trio.sleep(0.01)
        (victim,) = [info for info in pool.workers() if info.state is W.BUSY]
        os.kill(victim.pid, signal.SIGKILL)


async def test_concurrent_callers_cancellations_and_handovers() -> None:
    """Callers race for two workers, some cancelled at every stage: nothing is lost."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(2, **QUICK) as pool:
            record = Recorder(pool)
            await pool.wait_ready()
            done: list[int] = []

            async def caller(i: int, cancel_after: float | None) -> None:
                with trio.CancelScope() as scope:
                    if cancel_after is not None:
                        scope.deadline = trio.current_time() + cancel_after
                    await pool.run(pool_fns.sleep_for, 0.02 * (i % 3))
                    done.append(i)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(caller, i, None if i % 4 else 0.01 * i)
            # A caller cancelled just after it was handed a worker.
            async with trio.open_nursery() as nursery:
                scopes: list[trio.CancelScope] = []

                async def handed(*, task_status: trio.TaskStatus[None]) -> None:
                    with trio.CancelScope() as scope:
                        scopes.append(scope)
                        task_status.started()
                        await pool.run(pool_fns.double, 2)
                        pytest.fail("should have been cancelled")

                async def first() -> None:
                    await pool.run(pool_fns.sleep_for, 0.1)
                    # The next waiter has just been handed this worker.
                    scopes[0].cancel()

                nursery.start_soon(first)
                nursery.start_soon(pool.run, pool_fns.sleep_for, 0.5)
                await trio.testing.wait_all_tasks_blocked()
                await nursery.start(handed)
            stats = pool.statistics()
            assert (stats.calls_in_flight, stats.calls_waiting) == (0, 0)
            assert stats.workers[W.READY] == 2
            assert stats.calls_served == len(done) + 2
            assert stats.calls_cancelled >= 1
            assert stats.worker_deaths == stats.restarts == 0
            # Cancelled calls were followed by no health check (disabled), and
            # the workers still serve.
            assert await pool.run(pool_fns.double, 5) == 10
        record.assert_legal()


async def test_cancelling_a_caller_cancels_the_call_in_the_worker(
    tmp_path: Path,
) -> None:
    """A cancelled caller cancels its call in the worker; then the worker is checked."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(1) as pool:
            with trio.move_on_after(5) as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_when_started() -> None:
                        await wait_for_file(tmp_path / "c.started")
                        scope.cancel()

                    nursery.start_soon(cancel_when_started)
                    await pool.run(pool_fns.sleep_with_finally, str(tmp_path), "c")
            assert scope.cancelled_caught
            # The call's finally block ran before Cancelled reached us.
            pid = int((tmp_path / "c.finally").read_text())
            assert await pool.run(pool_fns.getpid) == pid
            stats = pool.statistics()
            assert stats.calls_cancelled == 1
            assert stats.health_checks == 1  # the worker answered before reuse
            assert stats.health_check_failures == 0


# ---------------------------------------------------------------------------
# Recycling


async def test_recycle_after_max_worker_requests() -> None:
    """A worker serves max_worker_requests calls; its replacement starts first."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(1, max_worker_requests=3, **QUICK) as pool:
            record = Recorder(pool)
            pids = [await pool.run(pool_fns.getpid) for _ in range(7)]
            stats = pool.statistics()
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert pids[3] == pids[4] == pids[5] != pids[6]
    assert stats.recycles["max_requests"] == 2
    record.assert_legal()
    served = [name for name, path in record.paths().items() if W.BUSY in path]
    assert len(served) == 3
    for old, new in itertools.pairwise(served):
        ready = record.moves.index(
            next(m for m in record.moves if m.worker == new and m.target is W.READY)
        )
        drained = record.moves.index(
            next(m for m in record.moves if m.worker == old and m.target is W.DRAINING)
        )
        assert ready < drained, "the replacement was READY before the old one drained"
    assert "recycled (max_requests)" in [m.reason for m in record.moves]


async def test_recycle_after_error_threshold() -> None:
    """error_threshold calls that raise in a row recycle a worker; a success resets."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(1, error_threshold=3, **QUICK) as pool:
            first = await pool.run(pool_fns.getpid)
            for outcome in ["fail", "fail", "ok", "fail", "fail"]:
                if outcome == "ok":
                    assert await pool.run(pool_fns.getpid) == first
                else:
                    with pytest.raises(dapper_trio.RemoteError):
                        await pool.run(pool_fns.fail, "again")
            assert pool.workers()[0].consecutive_failures == 2
            with pytest.raises(dapper_trio.RemoteError):
                await pool.run(pool_fns.fail, "third in a row")
            assert await pool.run(pool_fns.getpid) != first
            stats = pool.statistics()
    assert stats.recycles["error_threshold"] == 1
    assert stats.calls_failed == 5


async def test_recycle_after_max_worker_age(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hour-old worker is recycled (on a MockClock: no real hour passes)."""
    # The clock only moves when we jump it; keep the actor start-up deadline
    # out of the way all the same.
    monkeypatch.setattr(_actors, "STARTUP_TIMEOUT", 1e9)
    async with open_worker_pool(2, **QUICK) as pool:
        record = Recorder(pool)
        await pool.wait_ready()
        old = {info.name: info.pid for info in pool.workers()}
        mock_clock.jump(1800)
        assert await pool.run(pool_fns.getpid) in old.values()
        mock_clock.jump(1800)  # an hour since they started
        await record.wait_for(to(W.TERMINATED), count=2)
        await pool.wait_ready()
        new = {info.name: info.pid for info in pool.workers()}
        assert not set(new) & set(old)
        assert await pool.run(pool_fns.getpid) in new.values()
        stats = pool.statistics()
    assert stats.recycles["max_age"] == 2
    assert serving(pool.statistics()) == 0
    drained = [m for m in record.moves if m.target is W.DRAINING and m.worker in old]
    assert {m.worker for m in drained} == set(old)
    assert all(m.reason == "recycled (max_age)" for m in drained)
    assert all(process_gone(pid) for pid in old.values())


async def test_pool_size_is_kept_while_recycling_under_load() -> None:
    """Under load, READY+BUSY never drops below size while workers are recycled."""
    lowest = [100]

    with trio.fail_after(40):
        async with open_worker_pool(3, max_worker_requests=4, **QUICK) as pool:
            record = Recorder(pool)
            await pool.wait_ready()

            def check(move: WorkerTransition) -> None:
                if not pool.closed:
                    lowest[0] = min(lowest[0], serving(pool.statistics()))

            pool.add_observer(check)
            results: list[int] = []

            async def client() -> None:
                for _ in range(6):
                    pid = await pool.run(pool_fns.sleep_for, 0.01)
                    results.append(pid)

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(client)
            stats = pool.statistics()
    assert len(results) == 36
    assert stats.recycles["max_requests"] >= 7
    assert lowest[0] >= 3
    record.assert_legal()


@pytest.mark.timeout(150)  # 200 process start-ups: CPU-bound, ~30 s on 2 idle cores
async def test_no_leaks_after_200_recycles() -> None:
    """200 calls with max_worker_requests=1: 200 workers come and go, nothing stays."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    fds_before = open_fds()
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    pids: list[int] = []
    remaining = [200]
    with trio.fail_after(140):
        async with open_worker_pool(4, max_worker_requests=1, **QUICK) as pool:

            async def client() -> None:
                while remaining[0] > 0:
                    remaining[0] -= 1
                    pids.append(await pool.run(pool_fns.getpid))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(client)
            stats = pool.statistics()
    assert len(pids) == 200
    assert len(set(pids)) == 200
    assert stats.recycles["max_requests"] == 200
    assert stats.calls_served == 200
    assert stats.start_failures == stats.worker_deaths == 0
    assert all(process_gone(pid) for pid in pids)
    assert open_fds() == fds_before
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before


# ---------------------------------------------------------------------------
# Health checks


async def test_health_check_replaces_a_worker_that_stops_answering(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose loop is blocked misses its ping (default timings): replaced."""
    monkeypatch.setattr(_actors, "STARTUP_TIMEOUT", 1e9)
    async with open_worker_pool(1) as pool:  # interval 30 s, timeout 5 s
        record = Recorder(pool)
        stuck = await pool.run(pool_fns.block_loop_soon, 60)
        await trio.to_thread.run_sync(time.sleep, 0.3)  # its loop is blocked now
        mock_clock.jump(30)  # the health check
        await trio.testing.wait_all_tasks_blocked()
        assert pool.statistics().health_checks == 1
        mock_clock.jump(5)  # the ping's timeout
        (drained,) = await record.wait_for(to(W.DRAINING))
        assert drained.reason == "failed a health check: no answer to a ping within 5 s"
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(2)  # it ignores the stop request: SIGTERM
        (ended,) = await record.wait_for(to(W.TERMINATED))
        assert (ended.pid, ended.reason) == (stuck, "stopped with SIGTERM")
        await pool.wait_ready()
        fresh = await pool.run(pool_fns.getpid)
        assert fresh != stuck
        stats = pool.statistics()
    assert process_gone(stuck)
    assert (stats.health_check_failures, stats.restarts) == (1, 1)
    assert stats.worker_deaths == 0


async def test_a_worker_killed_with_sigkill_is_replaced() -> None:
    """An idle worker killed with SIGKILL is noticed at once and replaced."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(2, health_check_interval=0.1) as pool:
            record = Recorder(pool)
            await pool.wait_ready()
            victim = pool.workers()[0]
            os.kill(victim.pid, signal.SIGKILL)
            (ended,) = await record.wait_for(to(W.TERMINATED, victim.name))
            assert ended.source is W.READY
            assert ended.reason is not None
            assert ended.reason.endswith("was killed by SIGKILL")
            await pool.wait_ready()
            assert victim.pid not in {info.pid for info in pool.workers()}
            await trio.sleep(0.3)  # a few health checks pass
            stats = pool.statistics()
    assert (stats.worker_deaths, stats.restarts) == (1, 1)
    assert stats.health_checks >= 2
    assert stats.health_check_failures == 0


async def test_health_monitoring_can_be_disabled() -> None:
    """With enable_health_monitoring=False no ping is sent; a stuck worker stays."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(
            1,
            enable_health_monitoring=False,
            health_check_interval=0.05,
            health_check_timeout=0.05,
            shutdown_timeout=0.3,
        ) as pool:
            stuck = await pool.run(pool_fns.block_loop_soon, 30)
            await trio.sleep(0.5)
            (info,) = pool.workers()
            assert (info.pid, info.state) == (stuck, W.READY)
            stats = pool.statistics()
    assert stats.health_checks == 0
    assert process_gone(stuck)  # stopped at shutdown (SIGTERM after the grace)


# ---------------------------------------------------------------------------
# Restarts and backoff


async def test_backoff_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    """A worker that can never start: waits grow, then WorkerStartError, not a loop."""
    flag = tmp_path / "no-db"
    flag.write_text("")
    seen: list[tuple[Recorder, WorkerPool]] = []

    async def use_pool() -> None:
        async with open_worker_pool(
            2,
            restart_backoff=(0.05, 2.0, 0.2),
            initializer=pool_fns.init_fails_while,
            initargs=(str(flag),),
        ) as pool:
            seen.append((Recorder(pool), pool))
            with pytest.raises(WorkerStartError):
                await pool.run(pool_fns.double, 1)  # waits, then fails
            await trio.sleep_forever()  # cancelled: the pool has failed

    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        await use_pool()
    ((record, pool),) = seen
    error = only_leaf(excinfo.value)
    assert isinstance(error, WorkerStartError)
    assert error.attempts == 4
    assert isinstance(error.last_error, dapper_trio.RemoteError)
    assert error.__cause__ is error.last_error
    message = str(error)
    assert "could not start a worker: 4 starts failed in a row" in message
    assert "restart_backoff=(0.05, 2, 0.2) gave up" in message
    assert "RuntimeError: no database today" in message
    failures = [
        m.timestamp
        for m in record.moves
        if m.source is W.INITIALIZING and m.target is W.TERMINATED
    ]
    # Two concurrent first attempts, then one at a time after each wait.
    assert len(failures) == 5
    gaps = [b - a for a, b in itertools.pairwise(failures[1:])]
    for gap, wait in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert gap >= wait
    stats = pool.statistics()
    assert stats.start_failures == 5
    assert stats.workers_started == 0


async def test_a_worker_that_dies_before_connecting_counts_as_failed_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken environment (the interpreter cannot start): the error says so."""
    monkeypatch.setenv("PYTHONHOME", "/nonexistent/python/home")
    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        async with open_worker_pool(1, restart_backoff=(0.01, 2.0, 0.02)) as pool:
            await pool.wait_ready()
    # Raised where the body waited, and by the pool itself.
    errors = list(leaves(excinfo.value))
    assert len(errors) == 2
    assert all(isinstance(error, WorkerStartError) for error in errors)
    error = errors[0]
    assert isinstance(error, WorkerStartError)
    assert error.attempts == 3
    assert isinstance(error.last_error, dapper_trio.ProcessDied)
    assert "before it connected to its parent" in str(error)


async def test_backoff_recovers_when_a_start_succeeds(tmp_path: Path) -> None:
    """Two failed starts, then success: the pool comes up and the count resets."""
    with trio.fail_after(TIMEOUT):
        async with open_worker_pool(
            1,
            restart_backoff=(0.05, 2.0, 1.0),
            initializer=pool_fns.init_counted,
            initargs=(str(tmp_path), 2),
            **QUICK,
        ) as pool:
            assert await pool.run(pool_fns.double, 4) == 8
            stats = pool.statistics()
    assert (stats.start_failures, stats.workers_started) == (2, 1)


async def test_failing_restarts_fail_a_running_pool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool that loses a worker and cannot start another fails, clearly."""
    flag = tmp_path / "no-db"

    async def use_pool() -> None:
        async with open_worker_pool(
            1,
            restart_backoff=(0.02, 2.0, 0.04),
            initializer=pool_fns.init_fails_while,
            initargs=(str(flag),),
            **QUICK,
        ) as pool:
            pid = await pool.run(pool_fns.getpid)
            await trio.Path(flag).write_text("")
            os.kill(pid, signal.SIGKILL)
            await trio.sleep_forever()

    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        await use_pool()
    error = only_leaf(excinfo.value)
    assert isinstance(error, WorkerStartError)
    assert error.attempts == 3
    assert any(
        record.levelno == logging.ERROR and "could not start a worker" in record.message
        for record in caplog.records
    )


# ---------------------------------------------------------------------------
# Shutdown


@pytest.mark.parametrize("how", ["leave", "cancel"])
async def test_shutdown_drains_then_cancels(tmp_path: Path, how: str) -> None:
    """Shutdown: calls in flight get shutdown_timeout to finish, then are cancelled."""
    outcomes: dict[str, object] = {}

    async def call(name: str, fn: Any, *args: Any) -> None:
        try:
            outcomes[name] = await pool.run(fn, *args)
        except Exception as exc:
            outcomes[name] = exc

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as callers:
            with trio.CancelScope() as block:
                async with open_worker_pool(2, shutdown_timeout=0.5, **QUICK) as pool:
                    await pool.wait_ready()
                    callers.start_soon(call, "quick", pool_fns.sleep_for, 0.2)
                    callers.start_soon(
                        call, "slow", pool_fns.sleep_with_finally, str(tmp_path), "s"
                    )
                    await wait_for_file(tmp_path / "s.started")
                    callers.start_soon(call, "queued", pool_fns.double, 1)
                    await trio.testing.wait_all_tasks_blocked()
                    assert pool.statistics().calls_waiting == 1
                    started = trio.current_time()
                    if how == "cancel":
                        block.cancel()
                        await trio.sleep_forever()
            ended = trio.current_time()
    assert isinstance(outcomes["quick"], int)  # finished in time
    slow = outcomes["slow"]
    assert isinstance(slow, trio.ClosedResourceError)
    assert "shut down before sleep_with_finally() ended" in str(slow)
    assert (tmp_path / "s.finally").exists()  # cancelled, and it unwound
    queued = outcomes["queued"]
    assert isinstance(queued, trio.ClosedResourceError)
    assert "not run" in str(queued)
    assert 0.5 <= ended - started < 5
    stats = pool.statistics()
    assert stats.workers[W.TERMINATED] == 2
    assert stats.calls_cancelled == 1


# ---------------------------------------------------------------------------
# The debugger


def test_a_worker_in_the_debugger_is_left_alone() -> None:
    """In the REPL past the health-check, age and shutdown limits: left alone."""
    env = terminal_env(POOL_APP_TESTS=str(Path(__file__).parent))
    with Terminal(
        [sys.executable, str(PROGRAMS / "pool_app.py")], env=env, timeout=30
    ) as term:
        # Idle, in a REPL opened by a background task of the worker.
        out = term.expect_prompt()
        pid = int(out.split("worker pid ")[1].split()[0])
        assert f"process actor root/worker-1 (pid {pid})" in out
        assert "# mark: idle-pause" in out
        time.sleep(1.5)  # > health_check_timeout (0.3 s) and max_worker_age (1.2 s)
        states = {
            row[0]: " ".join(row[3:])
            for row in (line.split() for line in term.cmd("procs").splitlines())
            if len(row) > 3 and row[1] == "pid"
        }
        # Nothing stopped it.  (Its successor may have been started ahead of
        # its age limit, before the REPL opened, and be "running" on standby,
        # or have been recycled for its own age already: it is not in the REPL.)
        assert states.pop("root") == "running"
        assert states.pop("worker-1") == "in the REPL"
        assert not [state for state in states.values() if "killed" in state]
        term.sendline("c")
        # Out of the REPL: now it is recycled for its age.  Then a call pauses
        # while the pool shuts down.
        out = term.expect_prompt()
        assert (
            "while in the REPL: touched False, health-check failures 0, restarts 0"
            in out
        )
        # (Its successors, started before the REPL ended, may be as old.)
        assert re.search(r"after the REPL: recycled for its age [1-9]\n", out)
        assert "process actor root/worker-" in out
        assert "process actor root/worker-1 " not in out
        assert "# mark: call-pause" in out
        time.sleep(1.0)  # > shutdown_timeout (0.3 s)
        term.sendline("c")
        rest = term.expect_exit()
    assert "last call returned busy" in rest
    assert "pool closed" in rest
    assert term.exitstatus == 0
