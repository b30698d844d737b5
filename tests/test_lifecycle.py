"""LifecycleManager: overlapping operations, failure classification, termination."""

from __future__ import annotations

import logging
import re
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing

import dapper_trio
from dapper_trio import _lifecycle
from dapper_trio._errors import DapperTrioError, TransportError
from dapper_trio._lifecycle import (
    ErrorInfo,
    LifecycleManager,
    OperationAborted,
    WatchOverflowError,
    find_transport_failure,
)
from dapper_trio._states import BackendLifecycleState, LifecycleError, Transition

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

B = BackendLifecycleState
ROOT = Path(__file__).resolve().parents[1]
LOGGER = "dapper_trio.lifecycle"


class LostConnection(TransportError):
    """A TransportError subclass, as a transport would raise."""


class CommandFailed(DapperTrioError):
    """An error the debuggee reported about a command (not a transport failure)."""


def ready_manager(**kwargs: float) -> LifecycleManager:
    manager = LifecycleManager("backend", **kwargs)
    manager.initialize()
    manager.mark_ready()
    return manager


def record(manager: LifecycleManager) -> list[tuple[B, B]]:
    moves: list[tuple[B, B]] = []
    manager.add_observer(lambda t: moves.append((t.source, t.target)))
    return moves


# -- sync moves -------------------------------------------------------------


async def test_initialize_then_ready() -> None:
    """initialize() and mark_ready() walk UNINITIALIZED -> INITIALIZING -> READY."""
    manager = LifecycleManager()
    assert manager.lifecycle_state is B.UNINITIALIZED
    assert not manager.is_available()
    transition = manager.initialize()
    assert (transition.source, transition.target) == (B.UNINITIALIZED, B.INITIALIZING)
    assert not manager.is_available()
    manager.mark_ready()
    assert manager.lifecycle_state is B.READY
    assert manager.is_available()
    assert manager.is_ready()
    assert manager.error_info is None


async def test_mark_ready_only_from_initializing() -> None:
    """mark_ready() from ERROR is refused (that is recover()) and changes nothing."""
    manager = ready_manager()
    manager.mark_error("process died")
    with pytest.raises(LifecycleError, match="only allowed from INITIALIZING") as info:
        manager.mark_ready()
    assert (info.value.state, info.value.target) == (B.ERROR, B.READY)
    assert manager.lifecycle_state is B.ERROR
    assert manager.error_info is not None


async def test_initialize_twice_is_illegal() -> None:
    """A second initialize() raises LifecycleError naming the move."""
    manager = LifecycleManager()
    manager.initialize()
    with pytest.raises(LifecycleError, match="from INITIALIZING to INITIALIZING"):
        manager.initialize()
    assert manager.lifecycle_state is B.INITIALIZING


def test_manager_needs_trio() -> None:
    """Creating a manager outside trio.run raises a clear RuntimeError."""
    with pytest.raises(RuntimeError, match=r"inside trio\.run"):
        LifecycleManager()


async def test_bad_cleanup_timeout() -> None:
    """A negative or NaN cleanup_timeout is rejected."""
    with pytest.raises(ValueError, match="cleanup_timeout"):
        LifecycleManager(cleanup_timeout=-1)
    with pytest.raises(ValueError, match="cleanup_timeout"):
        LifecycleManager(cleanup_timeout=float("nan"))


async def test_mark_error_records_error_info() -> None:
    """mark_error() fills every ErrorInfo field, including the source state."""
    manager = LifecycleManager()
    manager.initialize()
    exc = ConnectionRefusedError("no debuggee")
    before = time.time(), trio.current_time()
    manager.mark_error("connect to debuggee", exc)
    info = manager.error_info
    assert info is not None
    assert info.what == "connect to debuggee"
    assert info.exception is exc
    assert info.exception_type == "ConnectionRefusedError"
    assert info.exception_message == "no debuggee"
    assert before[0] <= info.wall_time <= time.time()
    assert before[1] <= info.monotonic_time <= trio.current_time()
    assert info.operation is None
    assert info.previous_state is B.INITIALIZING
    assert str(info) == "connect to debuggee: ConnectionRefusedError: no debuggee"


async def test_mark_error_illegal_records_nothing() -> None:
    """mark_error() where ERROR is illegal raises and leaves error_info alone."""
    manager = LifecycleManager()
    with pytest.raises(LifecycleError, match="from UNINITIALIZED to ERROR"):
        manager.mark_error("too early")
    assert manager.error_info is None
    manager.initialize()
    manager.mark_error("first")
    with pytest.raises(LifecycleError, match="from ERROR to ERROR"):
        manager.mark_error("second")
    assert manager.error_info is not None
    assert manager.error_info.what == "first"


async def test_recover() -> None:
    """recover() moves ERROR -> READY, clears error_info, admits operations again."""
    manager = ready_manager()
    with pytest.raises(LifecycleError, match="from READY to READY"):
        manager.recover()
    manager.mark_error("process hiccup")
    seen_info: list[ErrorInfo | None] = []
    manager.add_observer(lambda t: seen_info.append(manager.error_info))
    manager.recover()
    assert manager.lifecycle_state is B.READY
    assert manager.error_info is None
    assert seen_info == [None]  # cleared before observers hear of READY
    async with manager.operation("evaluate"):
        assert manager.lifecycle_state is B.BUSY
    assert manager.is_ready()


# -- operations -------------------------------------------------------------


@pytest.mark.parametrize("state", [B.UNINITIALIZED, B.INITIALIZING, B.ERROR])
async def test_operation_refused_when_unavailable(state: B) -> None:
    """Starting an operation outside READY/BUSY names the state and the operation."""
    manager = LifecycleManager()
    if state is not B.UNINITIALIZED:
        manager.initialize()
    if state is B.ERROR:
        manager.mark_error("broken")
    moves = record(manager)
    with pytest.raises(LifecycleError) as info:
        async with manager.operation("evaluate x"):
            pytest.fail("the block must not run")  # pragma: no cover
    message = str(info.value)
    assert "'evaluate x'" in message
    assert state.name in message
    assert info.value.state is state
    assert manager.lifecycle_state is state
    assert manager.statistics().operations_in_flight == 0
    assert moves == []


async def test_operation_refused_after_termination() -> None:
    """Operations are refused once the manager is TERMINATED."""
    manager = ready_manager()
    await manager.terminate()
    with pytest.raises(LifecycleError, match="in state TERMINATED"):
        async with manager.operation("late"):
            pytest.fail("the block must not run")  # pragma: no cover


async def test_single_operation_busy_then_ready() -> None:
    """One operation moves READY -> BUSY on entry and BUSY -> READY on exit."""
    manager = ready_manager()
    moves = record(manager)
    async with manager.operation("evaluate"):
        assert manager.lifecycle_state is B.BUSY
        assert manager.is_available()
        assert not manager.is_ready()
        assert manager.statistics().operations_in_flight == 1
    assert moves == [(B.READY, B.BUSY), (B.BUSY, B.READY)]
    assert manager.statistics().operations_in_flight == 0


@pytest.mark.parametrize("first_out", ["a", "b"])
async def test_overlapping_operations(first_out: str) -> None:
    """Overlapping operations: BUSY from first entry to last exit, in either order."""
    manager = ready_manager()
    moves = record(manager)
    seq = trio.testing.Sequencer()
    log: list[tuple[str, B, int]] = []

    def note(event: str) -> None:
        log.append((event, manager.lifecycle_state, len(moves)))

    async def run(name: str, enter_step: int, exit_step: int) -> None:
        async with AsyncExitStack() as stack:
            async with seq(enter_step):
                await stack.enter_async_context(manager.operation(name))
                note(f"{name} in")
            async with seq(exit_step):
                await stack.aclose()
                note(f"{name} out")

    exits = {"a": 2, "b": 3} if first_out == "a" else {"a": 3, "b": 2}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "a", 0, exits["a"])
        nursery.start_soon(run, "b", 1, exits["b"])
    second_out = "b" if first_out == "a" else "a"
    assert log == [
        ("a in", B.BUSY, 1),
        ("b in", B.BUSY, 1),  # no BUSY -> BUSY
        (f"{first_out} out", B.BUSY, 1),  # one still in flight
        (f"{second_out} out", B.READY, 2),
    ]
    assert moves == [(B.READY, B.BUSY), (B.BUSY, B.READY)]


async def test_many_concurrent_operations() -> None:
    """Ten concurrent operations make one READY -> BUSY and one BUSY -> READY."""
    manager = ready_manager()
    release = trio.Event()

    async def work(i: int) -> None:
        async with manager.operation(f"op {i}"):
            await release.wait()

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(work, i)
        await trio.testing.wait_all_tasks_blocked()
        stats = manager.statistics()
        assert stats.state is B.BUSY
        assert stats.operations_in_flight == 10
        release.set()
    stats = manager.statistics()
    assert stats.state is B.READY
    assert stats.operations_in_flight == 0
    assert stats.transition_counts == {
        (B.UNINITIALIZED, B.INITIALIZING): 1,
        (B.INITIALIZING, B.READY): 1,
        (B.READY, B.BUSY): 1,
        (B.BUSY, B.READY): 1,
    }


async def test_operation_context_is_single_use() -> None:
    """Entering the same operation object twice is a RuntimeError."""
    manager = ready_manager()
    op = manager.operation("once")
    async with op:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        async with op:
            pytest.fail("the block must not run")  # pragma: no cover


async def test_operation_entered_while_cancelled_records_nothing() -> None:
    """A caller that is already cancelled gets Cancelled and no state change."""
    manager = ready_manager()
    moves = record(manager)
    with trio.CancelScope() as scope:
        scope.cancel()
        async with manager.operation("never"):
            pytest.fail("the block must not run")  # pragma: no cover
    assert scope.cancelled_caught
    assert moves == []
    assert manager.statistics().operations_in_flight == 0


TRANSPORT_ERRORS = [
    TransportError("channel gone"),
    LostConnection("peer hung up"),
    OSError("socket error"),
    ConnectionResetError("reset by peer"),
    BrokenPipeError("broken pipe"),
    EOFError("eof"),
    trio.BrokenResourceError("broken"),
    trio.ClosedResourceError("closed"),
    trio.TooSlowError(),
]


@pytest.mark.parametrize("exc", TRANSPORT_ERRORS, ids=lambda e: type(e).__name__)
async def test_transport_failure_moves_to_error(exc: BaseException) -> None:
    """A transport failure leaving an operation re-raises and moves to ERROR."""
    manager = ready_manager()
    before = time.time(), trio.current_time()
    with pytest.raises(type(exc)) as raised:
        async with manager.operation("step over"):
            raise exc
    assert raised.value is exc
    assert manager.lifecycle_state is B.ERROR
    assert not manager.is_available()
    info = manager.error_info
    assert info is not None
    assert info.operation == "step over"
    assert "'step over'" in info.what
    assert info.exception is exc
    assert info.exception_type is not None
    assert info.exception_type.endswith(type(exc).__name__)
    assert info.exception_message == str(exc)
    assert info.previous_state is B.BUSY
    assert before[0] <= info.wall_time <= time.time()
    assert before[1] <= info.monotonic_time <= trio.current_time()
    assert manager.statistics().error_count == 1


async def test_error_info_type_names_are_public() -> None:
    """ErrorInfo spells exception types by their public names."""
    manager = ready_manager()
    with pytest.raises(TransportError):
        async with manager.operation("x"):
            raise TransportError("gone")
    assert manager.error_info is not None
    assert manager.error_info.exception_type == "dapper_trio.TransportError"
    manager.recover()
    with pytest.raises(trio.BrokenResourceError):
        async with manager.operation("x"):
            raise trio.BrokenResourceError
    assert manager.error_info is not None
    assert manager.error_info.exception_type == "trio.BrokenResourceError"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad expression"),
        CommandFailed("debuggee: NameError: name 'x' is not defined"),
        LifecycleError("nested", machine="other", state=B.READY, target=B.BUSY),
        KeyError("frame 9"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_command_error_leaves_state(exc: Exception) -> None:
    """An error reported by the command propagates and leaves the state unchanged."""
    manager = ready_manager()
    with pytest.raises(type(exc)):
        async with manager.operation("evaluate"):
            raise exc
    assert manager.lifecycle_state is B.READY
    assert manager.error_info is None


async def test_exception_group_with_transport_failure() -> None:
    """A group holding a transport failure counts as one; error_info holds the leaf."""
    manager = ready_manager()
    broken = trio.BrokenResourceError("reader died")

    async def fail(exc: Exception) -> None:
        raise exc

    async def operation() -> None:
        async with manager.operation("stack trace"), trio.open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("command error"))
            nursery.start_soon(fail, broken)

    with pytest.raises(ExceptionGroup) as raised:
        await operation()
    assert find_transport_failure(raised.value) is broken
    assert manager.lifecycle_state is B.ERROR
    assert manager.error_info is not None
    assert manager.error_info.exception is broken
    assert manager.error_info.operation == "stack trace"


async def test_exception_group_of_command_errors() -> None:
    """A group with no transport failure leaves the state unchanged."""
    manager = ready_manager()
    with pytest.raises(ExceptionGroup):
        async with manager.operation("evaluate"):
            raise ExceptionGroup("several", [ValueError("a"), CommandFailed("b")])
    assert manager.lifecycle_state is B.READY


def test_find_transport_failure_nested() -> None:
    """find_transport_failure looks inside nested groups and ignores the rest."""
    eof = EOFError()
    nested = BaseExceptionGroup(
        "outer",
        [ValueError("x"), BaseExceptionGroup("inner", [KeyboardInterrupt(), eof])],
    )
    assert find_transport_failure(nested) is eof
    assert find_transport_failure(ValueError("x")) is None
    assert find_transport_failure(ExceptionGroup("g", [ValueError("x")])) is None


async def test_failure_during_overlap_keeps_error() -> None:
    """One failing operation moves to ERROR; others finish without leaving ERROR."""
    manager = ready_manager()
    moves = record(manager)
    release = trio.Event()
    second_failure = trio.Event()

    async def survivor() -> None:
        async with manager.operation("survivor"):
            await release.wait()

    async def second_operation() -> None:
        async with manager.operation("also fails"):
            await second_failure.wait()
            raise EOFError("second")

    async def also_fails() -> None:
        with pytest.raises(EOFError):
            await second_operation()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(survivor)
        nursery.start_soon(also_fails)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError, match="first"):
            async with manager.operation("fails"):
                raise OSError("first")
        assert manager.lifecycle_state is B.ERROR
        second_failure.set()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert manager.lifecycle_state is B.ERROR
    assert manager.error_info is not None
    assert manager.error_info.operation == "fails"  # the first failure wins
    assert moves == [(B.READY, B.BUSY), (B.BUSY, B.ERROR)]


async def test_recover_with_operations_in_flight() -> None:
    """recover() with operations in flight goes READY then BUSY, READY at the end."""
    manager = ready_manager()
    moves = record(manager)
    release = trio.Event()

    async def slow() -> None:
        async with manager.operation("slow"):
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        await trio.testing.wait_all_tasks_blocked()
        manager.mark_error("hiccup")
        manager.recover()
        assert manager.lifecycle_state is B.BUSY
        release.set()
    assert moves == [
        (B.READY, B.BUSY),
        (B.BUSY, B.ERROR),
        (B.ERROR, B.READY),
        (B.READY, B.BUSY),
        (B.BUSY, B.READY),
    ]


# -- termination ------------------------------------------------------------


async def test_terminate_cancels_in_flight_operations() -> None:
    """terminate() cancels every operation; each raises OperationAborted naming it."""
    manager = ready_manager()
    moves = record(manager)
    aborted: dict[str, OperationAborted] = {}

    async def op(name: str, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with manager.operation(name):
                task_status.started()
                await trio.sleep_forever()
        except OperationAborted as exc:
            assert manager.lifecycle_state is B.TERMINATING  # cleanups come after
            aborted[name] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(op, "evaluate")
        await nursery.start(op, "pause")
        await manager.terminate(reason="client disconnected")
    assert set(aborted) == {"evaluate", "pause"}
    for name, exc in aborted.items():
        assert exc.operation == name
        assert exc.reason == "client disconnected"
        assert isinstance(exc, DapperTrioError)
        assert f"operation {name!r} aborted: backend terminating" in str(exc)
        assert isinstance(exc.__context__, trio.Cancelled)
        assert exc.__context__.reason == "backend terminating: client disconnected"
    assert manager.lifecycle_state is B.TERMINATED
    assert moves == [
        (B.READY, B.BUSY),
        (B.BUSY, B.TERMINATING),
        (B.TERMINATING, B.TERMINATED),
    ]
    assert manager.statistics().operations_in_flight == 0


async def test_callers_own_cancellation_wins() -> None:
    """A caller cancelled as terminate() runs gets Cancelled, not OperationAborted."""
    manager = ready_manager()
    outcome: dict[str, object] = {}
    scopes: list[trio.CancelScope] = []

    async def op(task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as outer:
            scopes.append(outer)
            try:
                async with manager.operation("evaluate"):
                    task_status.started()
                    await trio.sleep_forever()
            except OperationAborted as exc:  # pragma: no cover - the bug
                outcome["aborted"] = exc
        outcome["caught"] = outer.cancelled_caught

    async with trio.open_nursery() as nursery:
        await nursery.start(op)
        scopes[0].cancel()
        await manager.terminate()
    assert outcome == {"caught": True}
    assert manager.lifecycle_state is B.TERMINATED


async def test_transport_failure_while_terminating() -> None:
    """A transport error while unwinding from terminate() propagates; no ERROR."""
    manager = ready_manager()
    raised: list[BaseException] = []

    async def op(task_status: trio.TaskStatus[None]) -> None:
        try:
            async with manager.operation("evaluate"):
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    raise trio.ClosedResourceError("closed under us")
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(op)
        await manager.terminate()
    assert len(raised) == 1
    assert manager.lifecycle_state is B.TERMINATED
    assert manager.error_info is None
    assert manager.statistics().error_count == 0


async def test_cleanups_run_lifo() -> None:
    """Cleanups (sync and async, with args) run once, in reverse registration order."""
    manager = ready_manager()
    order: list[str] = []

    async def async_cleanup(tag: str) -> None:
        await trio.lowlevel.checkpoint()
        order.append(tag)

    manager.add_cleanup_callback(order.append, "first (sync)")
    manager.add_cleanup_callback(async_cleanup, "second (async)")
    manager.add_cleanup_callback(lambda: order.append("third (lambda)"))
    remove = manager.add_cleanup_callback(order.append, "removed")
    remove()
    remove()
    await manager.terminate()
    assert order == ["third (lambda)", "second (async)", "first (sync)"]
    await manager.terminate()
    assert len(order) == 3


async def test_cleanups_run_after_operations_exit() -> None:
    """Cleanups start only after every cancelled operation has left its block."""
    manager = ready_manager()
    order: list[str] = []
    manager.add_cleanup_callback(order.append, "cleanup")

    async def op(task_status: trio.TaskStatus[None]) -> None:
        try:
            async with manager.operation("evaluate"):
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.lowlevel.checkpoint()
                    order.append("operation unwound")
        except OperationAborted:
            order.append("aborted")

    async with trio.open_nursery() as nursery:
        await nursery.start(op)
        await manager.terminate()
    assert order == ["operation unwound", "aborted", "cleanup"]


async def test_failing_cleanup_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising cleanup is logged and the remaining cleanups still run."""
    manager = ready_manager()
    order: list[str] = []

    def broken() -> None:
        raise RuntimeError("cleanup exploded")

    async def broken_async() -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("async cleanup exploded")

    manager.add_cleanup_callback(order.append, "last")
    manager.add_cleanup_callback(broken)
    manager.add_cleanup_callback(broken_async)
    manager.add_cleanup_callback(order.append, "first")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await manager.terminate()
    assert order == ["first", "last"]
    assert manager.lifecycle_state is B.TERMINATED
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("broken_async" in m and "failed" in m for m in messages)
    assert any("broken" in m and "failed" in m for m in messages)
    assert "cleanup exploded" in caplog.text
    assert "async cleanup exploded" in caplog.text


async def test_hanging_cleanup_is_bounded(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An async cleanup that hangs is abandoned after cleanup_timeout; others run."""
    manager = ready_manager(cleanup_timeout=3.0)
    order: list[str] = []

    async def hangs() -> None:
        order.append("hang start")
        await trio.sleep_forever()

    manager.add_cleanup_callback(order.append, "after")
    manager.add_cleanup_callback(hangs)
    start = trio.current_time()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await manager.terminate()
    assert trio.current_time() - start == pytest.approx(3.0)
    assert order == ["hang start", "after"]
    assert manager.lifecycle_state is B.TERMINATED
    assert "hangs" in caplog.text
    assert "abandoned" in caplog.text


async def test_operation_ignoring_cancellation_is_abandoned(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A self-shielding operation is waited for cleanup_timeout at most, then left."""
    manager = ready_manager(cleanup_timeout=2.0)

    async def stubborn(task_status: trio.TaskStatus[None]) -> None:
        async with manager.operation("stubborn"):
            task_status.started()
            with trio.CancelScope(shield=True):
                await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        await nursery.start(stubborn)
        start = trio.current_time()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            await manager.terminate()
        assert trio.current_time() - start == pytest.approx(2.0)
        assert manager.lifecycle_state is B.TERMINATED
        assert manager.statistics().operations_in_flight == 1
        assert "'stubborn'" in caplog.text
    # It finished on its own later; nothing moved.
    assert manager.statistics().operations_in_flight == 0
    assert manager.lifecycle_state is B.TERMINATED


async def test_terminate_twice_and_concurrently() -> None:
    """Concurrent terminate() calls all return once termination is complete."""
    manager = ready_manager()
    release = trio.Event()
    order: list[str] = []

    async def slow_cleanup() -> None:
        order.append("cleanup start")
        await release.wait()
        order.append("cleanup end")

    manager.add_cleanup_callback(slow_cleanup)

    async def terminate(tag: str) -> None:
        await manager.terminate()
        assert manager.lifecycle_state is B.TERMINATED
        order.append(f"{tag} returned")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(terminate, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(terminate, "second")
        nursery.start_soon(manager.wait_terminated)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["cleanup start"]
        assert manager.lifecycle_state is B.TERMINATING
        release.set()
    assert order[:2] == ["cleanup start", "cleanup end"]
    assert sorted(order[2:]) == ["first returned", "second returned"]
    await manager.terminate()  # a third call, after the fact
    assert order.count("cleanup start") == 1


async def test_terminate_while_cancelled() -> None:
    """A cancelled terminate() still completes termination, then raises Cancelled."""
    manager = ready_manager()
    order: list[str] = []

    async def cleanup() -> None:
        await trio.lowlevel.checkpoint()
        order.append("cleanup ran")

    manager.add_cleanup_callback(cleanup)
    with trio.CancelScope() as scope:
        scope.cancel()
        await manager.terminate()
        pytest.fail("terminate() must raise Cancelled")  # pragma: no cover
    assert scope.cancelled_caught
    assert order == ["cleanup ran"]
    assert manager.lifecycle_state is B.TERMINATED


async def test_waiting_terminate_while_cancelled() -> None:
    """A second terminate() whose caller is cancelled still waits for completion."""
    manager = ready_manager()
    release = trio.Event()

    async def cleanup() -> None:
        await release.wait()

    manager.add_cleanup_callback(cleanup)
    states: list[B] = []

    async def cancelled_waiter() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await manager.terminate()
        states.append(manager.lifecycle_state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.terminate)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(cancelled_waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert states == []
        release.set()
    assert states == [B.TERMINATED]


async def test_terminate_from_uninitialized() -> None:
    """From UNINITIALIZED, terminate() goes straight to TERMINATED, runs cleanups."""
    manager = LifecycleManager()
    moves = record(manager)
    ran: list[str] = []
    manager.add_cleanup_callback(ran.append, "cleanup")
    await manager.terminate()
    assert moves == [(B.UNINITIALIZED, B.TERMINATED)]
    assert ran == ["cleanup"]
    with pytest.raises(LifecycleError, match="from TERMINATED to INITIALIZING"):
        manager.initialize()


@pytest.mark.parametrize("state", [B.INITIALIZING, B.ERROR])
async def test_terminate_from_initializing_or_error(state: B) -> None:
    """terminate() works from INITIALIZING and from ERROR, via TERMINATING."""
    manager = LifecycleManager()
    manager.initialize()
    if state is B.ERROR:
        manager.mark_error("process died")
    moves = record(manager)
    await manager.terminate()
    assert moves == [(state, B.TERMINATING), (B.TERMINATING, B.TERMINATED)]
    if state is B.ERROR:
        assert manager.error_info is not None  # kept for post-mortem


async def test_terminate_inside_an_operation() -> None:
    """terminate() inside an operation neither waits for nor aborts that operation."""
    manager = ready_manager()
    async with manager.operation("disconnect"):
        await manager.terminate()
        assert manager.lifecycle_state is B.TERMINATED
        assert manager.statistics().operations_in_flight == 1
    assert manager.statistics().operations_in_flight == 0
    assert manager.lifecycle_state is B.TERMINATED


async def test_terminate_from_a_cleanup_returns() -> None:
    """A cleanup that calls terminate() returns at once instead of deadlocking."""
    manager = ready_manager()
    order: list[str] = []

    async def cleanup() -> None:
        await manager.terminate()
        order.append("inner terminate returned")

    manager.add_cleanup_callback(cleanup)
    await manager.terminate()
    assert order == ["inner terminate returned"]
    assert manager.lifecycle_state is B.TERMINATED


async def test_mark_error_during_termination() -> None:
    """mark_error() from a cleanup goes TERMINATING -> ERROR, yet ends TERMINATED."""
    manager = ready_manager()
    moves = record(manager)

    def cleanup() -> None:
        manager.mark_error("process exited with status 1")
        with pytest.raises(LifecycleError, match="termination has started"):
            manager.recover()

    manager.add_cleanup_callback(cleanup)
    await manager.terminate()
    assert moves == [
        (B.READY, B.TERMINATING),
        (B.TERMINATING, B.ERROR),
        (B.ERROR, B.TERMINATING),
        (B.TERMINATING, B.TERMINATED),
    ]
    assert manager.error_info is not None
    assert manager.error_info.previous_state is B.TERMINATING


async def test_add_cleanup_after_terminated() -> None:
    """Registering a cleanup on a TERMINATED manager raises LifecycleError."""
    manager = LifecycleManager()
    await manager.terminate()
    with pytest.raises(LifecycleError, match="TERMINATED"):
        manager.add_cleanup_callback(print)


async def test_bookkeeping_is_ki_protected_user_code_is_not() -> None:
    """Lifecycle bookkeeping is KI-protected; operation bodies and cleanups are not."""
    manager = ready_manager()
    protected: dict[str, bool] = {}

    def observer(transition: Transition[B]) -> None:
        # Observers run inside the bookkeeping that fired the move.
        key = f"{transition.source.name}->{transition.target.name}"
        protected[key] = trio.lowlevel.currently_ki_protected()

    async def cleanup() -> None:
        protected["cleanup"] = trio.lowlevel.currently_ki_protected()
        await trio.lowlevel.checkpoint()

    manager.add_observer(observer)
    manager.add_cleanup_callback(cleanup)
    async with manager.operation("evaluate"):
        protected["operation body"] = trio.lowlevel.currently_ki_protected()
    await manager.terminate()
    assert protected == {
        "READY->BUSY": True,
        "BUSY->READY": True,
        "READY->TERMINATING": True,
        "TERMINATING->TERMINATED": True,
        "operation body": False,
        "cleanup": False,
    }


# -- observers and statistics -----------------------------------------------

FULL_LIFE = [
    (B.UNINITIALIZED, B.INITIALIZING),
    (B.INITIALIZING, B.READY),
    (B.READY, B.BUSY),
    (B.BUSY, B.READY),
    (B.READY, B.BUSY),
    (B.BUSY, B.ERROR),
    (B.ERROR, B.READY),
    (B.READY, B.TERMINATING),
    (B.TERMINATING, B.TERMINATED),
]


async def live_a_full_life(manager: LifecycleManager) -> None:
    manager.initialize()
    manager.mark_ready()
    async with manager.operation("evaluate"):
        pass
    with pytest.raises(EOFError):
        async with manager.operation("step"):
            raise EOFError
    manager.recover()
    await manager.terminate()


async def test_observer_callbacks_see_every_transition() -> None:
    """Observer callbacks get every Transition in order, with reasons and times."""
    manager = LifecycleManager()
    seen: list[Transition[B]] = []
    unsubscribe = manager.add_observer(seen.append)
    await live_a_full_life(manager)
    assert [(t.source, t.target) for t in seen] == FULL_LIFE
    assert all(t.reason for t in seen)
    assert [t.timestamp for t in seen] == sorted(t.timestamp for t in seen)
    unsubscribe()


async def test_raising_observer_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An observer that raises is logged and the manager carries on."""
    manager = LifecycleManager()
    seen: list[tuple[B, B]] = []

    def bad(transition: Transition[B]) -> None:
        raise ZeroDivisionError("observer bug")

    manager.add_observer(bad)
    manager.add_observer(lambda t: seen.append((t.source, t.target)))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await live_a_full_life(manager)
    assert seen == FULL_LIFE
    assert "observer bug" in caplog.text


async def test_watch_iterator_sees_every_transition() -> None:
    """watch() yields every transition in order and ends after TERMINATED."""
    manager = LifecycleManager()
    seen: list[tuple[B, B]] = []

    async def consumer(task_status: trio.TaskStatus[None]) -> None:
        async with manager.watch() as transitions:
            task_status.started()
            seen.extend([(t.source, t.target) async for t in transitions])

    async with trio.open_nursery() as nursery:
        await nursery.start(consumer)
        await live_a_full_life(manager)
    assert seen == FULL_LIFE


async def test_watch_overflow() -> None:
    """A reader that falls behind gets what was buffered, then WatchOverflowError."""
    manager = LifecycleManager()
    async with manager.watch(max_buffer_size=2) as transitions:
        manager.initialize()
        manager.mark_ready()
        async with manager.operation("x"):
            pass
        first = await transitions.receive()
        second = await transitions.receive()
        assert (first.target, second.target) == (B.INITIALIZING, B.READY)
        with pytest.raises(WatchOverflowError):
            await transitions.receive()


async def test_watch_after_termination_ends_at_once() -> None:
    """A stream opened on a TERMINATED manager ends immediately."""
    manager = LifecycleManager()
    await manager.terminate()
    async with manager.watch() as transitions:
        assert [t async for t in transitions] == []


async def test_watch_rejects_empty_buffer() -> None:
    """watch(max_buffer_size=0) is a ValueError (the manager must never block)."""
    manager = LifecycleManager()
    with pytest.raises(ValueError, match="max_buffer_size"):
        async with manager.watch(max_buffer_size=0):
            pytest.fail("the block must not run")  # pragma: no cover


async def test_statistics(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() counts moves and errors and times each state, current included."""
    manager = LifecycleManager()
    await trio.sleep(1)
    manager.initialize()
    await trio.sleep(2)
    manager.mark_ready()
    await trio.sleep(3)
    async with manager.operation("slow"):
        await trio.sleep(4)

    async def times_out() -> None:
        async with manager.operation("timed out"):
            with trio.fail_after(0.5):
                await trio.sleep_forever()

    with pytest.raises(trio.TooSlowError):
        await times_out()
    await trio.sleep(5)
    manager.recover()
    await trio.sleep(6)
    stats = manager.statistics()
    assert stats.state is B.READY
    assert stats.operations_in_flight == 0
    assert stats.error_count == 1
    assert stats.transition_counts == {
        (B.UNINITIALIZED, B.INITIALIZING): 1,
        (B.INITIALIZING, B.READY): 1,
        (B.READY, B.BUSY): 2,
        (B.BUSY, B.READY): 1,
        (B.BUSY, B.ERROR): 1,
        (B.ERROR, B.READY): 1,
    }
    assert stats.time_in_state == pytest.approx(
        {
            B.UNINITIALIZED: 1.0,
            B.INITIALIZING: 2.0,
            B.READY: 3.0 + 6.0,
            B.BUSY: 4.0 + 0.5,
            B.ERROR: 5.0,
            B.TERMINATING: 0.0,
            B.TERMINATED: 0.0,
        }
    )
    await trio.sleep(1)
    assert manager.statistics().time_in_state[B.READY] == pytest.approx(10.0)


# -- the documentation's example --------------------------------------------


def _doc_blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_doc_example_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runnable example in docs/lifecycle.md prints the output the doc shows."""
    # Until dapper_trio/__init__.py re-exports the lifecycle names, provide them.
    for name in ("LifecycleManager", "OperationAborted"):
        if not hasattr(dapper_trio, name):
            monkeypatch.setattr(
                dapper_trio, name, getattr(_lifecycle, name), raising=False
            )
    examples = [block for block in _doc_blocks("python") if "trio.run(main)" in block]
    assert len(examples) == 1
    exec(
        compile(examples[0], "docs/lifecycle.md", "exec"),
        {"__name__": "__doc_example__"},
    )
    (expected,) = _doc_blocks("text")
    assert capsys.readouterr().out == expected
