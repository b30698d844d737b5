"""The engine's stop decisions, driven by a scripted front end on real trio runs.

Each test runs a small trio program under ``scripted.ScriptedDebugger`` and
asserts the exact transcript of stops: (event, task, function, source line).
trio runs the tasks of one batch in random order, so where two tasks race
the assertions are on one task's sequence or on sets, never on interleaving.
"""

from __future__ import annotations

import bdb
import collections
import contextlib
import os
import signal
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from scripted import AFTER_RUN, ScriptedDebugger, in_trio, line_of

from dapper_trio._engine import ANY_TASK, DebuggerQuit
from dapper_trio._trio_internals import current_task_or_none

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

HERE = __file__

MakeDebugger = Callable[..., ScriptedDebugger]


@pytest.fixture(name="make_debugger")
def _make_debugger() -> Iterator[MakeDebugger]:
    """ScriptedDebuggers whose breakpoints are gone after the test.

    bdb keeps breakpoints in class attributes; they are saved and restored so
    numbering starts at 1 here and nothing leaks into other tests.  Every
    debugger made is also checked for the one rule no test may break: no stop
    in trio's own code.
    """
    saved = (bdb.Breakpoint.next, bdb.Breakpoint.bplist, bdb.Breakpoint.bpbynumber)
    bdb.Breakpoint.clearBreakpoints()
    made: list[ScriptedDebugger] = []

    def make(*args: Any, **kwargs: Any) -> ScriptedDebugger:
        debugger = ScriptedDebugger(*args, **kwargs)
        made.append(debugger)
        return debugger

    try:
        yield make
    finally:
        for debugger in made:
            debugger.clear_all_breaks()
        bdb.Breakpoint.next, bdb.Breakpoint.bplist, bdb.Breakpoint.bpbynumber = saved
    for debugger in made:
        assert not [stop for stop in debugger.stops if in_trio(stop)]


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for child in exc.exceptions for leaf in leaves(child)]
    return [exc]


# -- programs ----------------------------------------------------------------
#
# Each takes the debugger first; `dbg.set_trace()` is where the first stop is.


async def chatter(log: list[str], name: str) -> None:
    """Runs user lines forever, so other tasks' user code is always ready."""
    while True:
        log.append(name)
        await trio.lowlevel.checkpoint()


async def leaf(n: int) -> int:
    x = n + 1
    await trio.sleep(0)  # noqa: ASYNC115 - trio.sleep(0) is the await under test
    await trio.sleep(0)  # noqa: ASYNC115 - trio.sleep(0) is the await under test
    return x * 2


async def next_over_await(dbg: ScriptedDebugger) -> int:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter, log, "B", name="B")
        nursery.start_soon(chatter, log, "C", name="C")
        await trio.sleep(0)  # noqa: ASYNC115 - trio.sleep(0) is the await under test
        dbg.set_trace()
        before = len(log)
        await trio.sleep(0)  # noqa: ASYNC115 - trio.sleep(0) is the await under test
        await trio.sleep(0)  # noqa: ASYNC115 - trio.sleep(0) is the await under test
        ran_meanwhile = len(log) - before
        nursery.cancel_scope.cancel()
    return ran_meanwhile


async def step_into_leaf(dbg: ScriptedDebugger) -> int:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter, log, "B", name="B")
        dbg.set_trace()
        value = await leaf(1)
        value += len(log) > 0
        nursery.cancel_scope.cancel()
    return value


async def child(dbg: ScriptedDebugger, log: list[str]) -> None:
    dbg.set_trace()
    log.append("A")
    await trio.lowlevel.checkpoint()
    log.append("A done")


async def sibling(log: list[str]) -> None:
    for _ in range(30):
        log.append("B")
        await trio.lowlevel.checkpoint()


async def parent(dbg: ScriptedDebugger) -> int:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child, dbg, log, name="A")
        nursery.start_soon(sibling, log, name="B")
    log.append("parent resumes")
    return len(log)


async def loop_with_awaits(dbg: ScriptedDebugger) -> int:
    total = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sibling, [], name="B")
        dbg.set_trace()
        for i in range(3):
            total += i
            await trio.lowlevel.checkpoint()
        total += 100  # mark: after-loop
    return total


async def worker(log: list[str], name: str) -> None:
    for i in range(2):
        log.append(f"{name}{i}")  # mark: worker-body
        await trio.lowlevel.checkpoint()


async def two_workers(dbg: ScriptedDebugger) -> list[str]:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, log, "A", name="A")
        nursery.start_soon(worker, log, "B", name="B")
    return sorted(log)


async def stepped(dbg: ScriptedDebugger, go: trio.Event) -> None:
    go.set()
    dbg.set_trace()
    for _ in range(20):
        await trio.lowlevel.checkpoint()


async def breaker(go: trio.Event) -> str:
    await go.wait()
    hit = "B"  # mark: breaker-hit
    await trio.lowlevel.checkpoint()
    return hit


async def stepping_meets_breakpoint(dbg: ScriptedDebugger) -> None:
    go = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stepped, dbg, go, name="A")
        nursery.start_soon(breaker, go, name="B")


async def spinner(log: list[str], name: str) -> None:
    for _ in range(50):
        log.append(name)
        await trio.lowlevel.checkpoint()


async def two_spinners(dbg: ScriptedDebugger) -> int:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spinner, log, "A", name="A")
        nursery.start_soon(spinner, log, "B", name="B")
    return len(log)


class PauseFromScheduler(trio.abc.Instrument):
    """Requests a Ctrl-C pause from trio's scheduler, between task steps.

    That is what dapper-trio's SIGINT handler does when the signal interrupts
    trio's own code: ``request_pause(frame, task=ANY_TASK)``.
    """

    def __init__(self, debugger: ScriptedDebugger, after_waits: int) -> None:
        self.debugger = debugger
        self.countdown = after_waits
        self.task_at_request: object = "not requested"

    def before_io_wait(self, timeout: float) -> None:
        self.countdown -= 1
        if self.countdown == 0:
            self.task_at_request = current_task_or_none()
            self.debugger.request_pause(sys._getframe(1), task=ANY_TASK)


# A stand-in for trio code that calls the standard library: its module name
# makes it hidden, like trio's, and it calls posixpath.join (which calls
# posixpath._get_sep) right after a pause is requested.
_TRIO_LIKE_SOURCE = """
import posixpath
import sys

def trio_like_helper(request_pause, path):
    request_pause(sys._getframe())
    return posixpath.join(path, "child")
"""
_trio_like: dict[str, Any] = {"__name__": "trio._dapper_trio_test_helper"}
exec(
    compile(
        _TRIO_LIKE_SOURCE,
        os.path.join(os.path.dirname(trio.__file__), "_dapper_trio_test_helper.py"),
        "exec",
    ),
    _trio_like,
)
TrioLikeHelper = Callable[[Callable[[types.FrameType], None], str], str]
trio_like_helper: TrioLikeHelper = _trio_like["trio_like_helper"]


async def pause_inside_trio_code(dbg: ScriptedDebugger) -> str:
    def request(frame: types.FrameType) -> None:
        dbg.request_pause(frame, task=ANY_TASK)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter, [], "B", name="B")
        await trio.lowlevel.checkpoint()
        path = trio_like_helper(request, "/tmp")
        path += "/"
        nursery.cancel_scope.cancel()
    return path


async def interrupted_by_signal(dbg: ScriptedDebugger) -> int:
    counter = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter, [], "B", name="B")
        await trio.lowlevel.checkpoint()
        signal.raise_signal(signal.SIGUSR1)
        counter += 1
        await trio.lowlevel.checkpoint()
        counter += 1
        nursery.cancel_scope.cancel()
    return counter


async def waiter(event: trio.Event, log: list[str]) -> None:
    await event.wait()
    log.append("woke")
    await trio.lowlevel.checkpoint()
    log.append("done")


async def paused_while_idle(dbg: ScriptedDebugger) -> list[str]:
    log: list[str] = []
    wake = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, wake, log, name="W")
        nursery.start_soon(waiter, trio.Event(), log, name="X")
        await trio.testing.wait_all_tasks_blocked()
        (paused,) = [task for task in nursery.child_tasks if task.name == "W"]
        # As dapper-trio's Ctrl-C handler does when the loop is idle.
        trio.lowlevel.current_trio_token().run_sync_soon(dbg.pause_suspended, paused)
        await trio.testing.wait_all_tasks_blocked()
        log.append("main runs")
        wake.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return log


async def quitter(dbg: ScriptedDebugger, ran: list[str]) -> None:
    try:
        dbg.set_trace()
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
    finally:
        ran.append("A")


async def blocked(ran: list[str]) -> None:
    try:
        await trio.sleep_forever()
    finally:
        ran.append("B")


async def quit_in_child(dbg: ScriptedDebugger, ran: list[str]) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked, ran, name="B")
            nursery.start_soon(quitter, dbg, ran, name="A")
    finally:
        ran.append("main")


async def quit_in_main(dbg: ScriptedDebugger, ran: list[str]) -> None:
    try:
        dbg.set_trace()
        await trio.lowlevel.checkpoint()
    finally:
        ran.append("main")


def on_run_sync_soon(ran: list[str]) -> None:
    ran.append("callback")  # mark: soon-callback


async def quit_in_system_task(dbg: ScriptedDebugger, ran: list[str]) -> None:
    trio.lowlevel.current_trio_token().run_sync_soon(on_run_sync_soon, ran)
    await trio.lowlevel.checkpoint()
    await trio.lowlevel.checkpoint()
    ran.append("main")


async def fails_after_await() -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError("boom")


def fail(exc: BaseException) -> None:
    raise exc


async def raises_and_catches(log: list[str]) -> None:
    while True:
        try:
            fail(KeyError("sibling's own"))
        except KeyError:
            log.append("caught")
        await trio.lowlevel.checkpoint()


async def value_error_at_await(dbg: ScriptedDebugger) -> bool:
    caught = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raises_and_catches, [], name="B")
        dbg.set_trace()
        try:
            await fails_after_await()
        except ValueError:
            caught = True
        nursery.cancel_scope.cancel()
    return caught


async def cancelled_at_await(dbg: ScriptedDebugger) -> bool:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raises_and_catches, [], name="B")
        with trio.CancelScope() as scope:
            dbg.set_trace()
            scope.cancel()
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    return scope.cancelled_caught


async def inner_chain() -> int:
    await trio.lowlevel.checkpoint()
    return 1


async def outer_chain() -> int:
    first = await inner_chain()
    second = await inner_chain()
    return first + second


async def completing_awaits(dbg: ScriptedDebugger) -> int:
    dbg.set_trace()
    total = await outer_chain()
    return total  # noqa: RET504 - a line of its own to step to


def numbers(n: int) -> Iterator[int]:
    for i in range(n):  # noqa: UP028 - each yield is a line to step through
        yield i
    return None


async def sync_generator(dbg: ScriptedDebugger) -> int:
    dbg.set_trace()
    total = 0
    for value in numbers(2):
        total += value
    await trio.lowlevel.checkpoint()
    return total


async def async_numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await trio.lowlevel.checkpoint()
        yield i


async def async_generator(dbg: ScriptedDebugger) -> int:
    dbg.set_trace()
    total = 0
    async for value in async_numbers(2):
        total += value
    return total


@contextlib.contextmanager
def guarded(dbg: ScriptedDebugger) -> Iterator[None]:
    dbg.set_trace()
    yield


async def body_raises_in_context_manager(dbg: ScriptedDebugger) -> bool:
    caught = False
    try:
        with guarded(dbg):
            fail(ValueError("in the body"))
    except ValueError:
        caught = True
    await trio.lowlevel.checkpoint()
    return caught


@contextlib.asynccontextmanager
async def resource(dbg: ScriptedDebugger) -> AsyncIterator[None]:
    dbg.set_trace()
    yield


async def cancelled_in_async_context_manager(dbg: ScriptedDebugger) -> bool:
    with trio.CancelScope() as scope:
        async with resource(dbg):
            scope.cancel()
            await trio.lowlevel.checkpoint()
    return scope.cancelled_caught


def two_values() -> Iterator[int]:
    yield 1
    yield 2


async def closes_generator(dbg: ScriptedDebugger) -> int:
    values = two_values()
    first = next(values)
    dbg.set_trace()
    values.close()
    first += 1
    return first


# -- next, step, return, until ------------------------------------------------


def test_next_over_await_stops_at_next_line_of_same_coroutine(
    make_debugger: MakeDebugger,
) -> None:
    """next over `await trio.sleep(0)` stops at the next line, never in other tasks."""
    dbg = make_debugger(["next"] * 5)
    ran_meanwhile = dbg.run(next_over_await, dbg)
    main = "next_over_await"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "before = len(log)"),
        ("line", main, main, "await trio.sleep(0)"),
        ("line", main, main, "await trio.sleep(0)"),
        ("line", main, main, "ran_meanwhile = len(log) - before"),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
    ]
    assert [stop.reason for stop in dbg.stops[1:]] == ["step"] * 5
    # The other tasks did run user lines while we were stepping over awaits.
    assert ran_meanwhile > 0


def test_step_enters_awaited_coroutine_and_never_trio(
    make_debugger: MakeDebugger,
) -> None:
    """step enters an awaited async def, steps over trio, then leaves trio.run."""
    dbg = make_debugger(["step"] * 13)
    assert dbg.run(step_into_leaf, dbg) == 5
    main = "step_into_leaf"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "value = await leaf(1)"),
        ("call", main, "leaf", "async def leaf(n: int) -> int:"),
        ("line", main, "leaf", "x = n + 1"),
        ("line", main, "leaf", "await trio.sleep(0)"),
        ("line", main, "leaf", "await trio.sleep(0)"),
        ("line", main, "leaf", "return x * 2"),
        ("return", main, "leaf", "return x * 2"),
        ("line", main, main, "value += len(log) > 0"),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
        ("line", main, main, "async with trio.open_nursery() as nursery:"),
        ("line", main, main, "return value"),
        ("return", main, main, "return value"),
        AFTER_RUN,
    ]
    assert dbg.stops[7].value == 4
    assert dbg.stops[-2].value == 5


def test_resumed_coroutine_is_never_a_call(make_debugger: MakeDebugger) -> None:
    """A coroutine resumed after an await gives no call stop; fresh calls give one."""
    dbg = make_debugger(["step"] * 17)
    dbg.run(completing_awaits, dbg)
    calls = [stop.function for stop in dbg.stops if stop.event == "call"]
    assert calls == ["outer_chain", "inner_chain", "inner_chain"]
    returns = [
        (stop.function, stop.value) for stop in dbg.stops if stop.event == "return"
    ]
    assert returns == [
        ("inner_chain", 1),
        ("inner_chain", 1),
        ("outer_chain", 2),
        ("completing_awaits", 2),
    ]


def test_completing_await_never_stops_on_stopiteration(
    make_debugger: MakeDebugger,
) -> None:
    """The StopIteration an await raises internally as it completes never stops."""
    dbg = make_debugger(["step"] * 17)
    dbg.run(completing_awaits, dbg)
    main = "completing_awaits"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "total = await outer_chain()"),
        ("call", main, "outer_chain", "async def outer_chain() -> int:"),
        ("line", main, "outer_chain", "first = await inner_chain()"),
        ("call", main, "inner_chain", "async def inner_chain() -> int:"),
        ("line", main, "inner_chain", "await trio.lowlevel.checkpoint()"),
        ("line", main, "inner_chain", "return 1"),
        ("return", main, "inner_chain", "return 1"),
        ("line", main, "outer_chain", "second = await inner_chain()"),
        ("call", main, "inner_chain", "async def inner_chain() -> int:"),
        ("line", main, "inner_chain", "await trio.lowlevel.checkpoint()"),
        ("line", main, "inner_chain", "return 1"),
        ("return", main, "inner_chain", "return 1"),
        ("line", main, "outer_chain", "return first + second"),
        ("return", main, "outer_chain", "return first + second"),
        ("line", main, main, "return total"),
        ("return", main, main, "return total"),
        AFTER_RUN,
    ]


def test_return_stops_at_real_return_then_next_continues_in_caller(
    make_debugger: MakeDebugger,
) -> None:
    """return skips a coroutine's suspensions to its real return; next: caller."""
    dbg = make_debugger(["step", "step", "step", "return", "next", "next"])
    dbg.run(step_into_leaf, dbg)
    main = "step_into_leaf"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "value = await leaf(1)"),
        ("call", main, "leaf", "async def leaf(n: int) -> int:"),
        ("line", main, "leaf", "x = n + 1"),
        ("return", main, "leaf", "return x * 2"),
        ("line", main, main, "value += len(log) > 0"),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
    ]
    assert dbg.stops[4].reason == "return"
    assert dbg.stops[4].value == 4


@pytest.mark.parametrize("command", ["next", "step"])
def test_leaving_a_child_task_follows_its_parent(
    make_debugger: MakeDebugger, command: str
) -> None:
    """After a child task's --Return--, stepping follows the nursery's owner task."""
    dbg = make_debugger([command] * 8)
    assert dbg.run(parent, dbg) == 33
    assert dbg.transcript() == [
        ("enter", "A", "child", "dbg.set_trace()"),
        ("line", "A", "child", 'log.append("A")'),
        ("line", "A", "child", "await trio.lowlevel.checkpoint()"),
        ("line", "A", "child", 'log.append("A done")'),
        ("return", "A", "child", 'log.append("A done")'),
        ("line", "parent", "parent", 'log.append("parent resumes")'),
        ("line", "parent", "parent", "return len(log)"),
        ("return", "parent", "parent", "return len(log)"),
        AFTER_RUN,
    ]


def test_until_past_a_loop_with_awaits_stays_in_task(
    make_debugger: MakeDebugger,
) -> None:
    """until at a loop's last line runs the loop and its awaits out, in the task."""
    dbg = make_debugger(["next", "next", "next", "until", "next"])
    assert dbg.run(loop_with_awaits, dbg) == 103
    main = "loop_with_awaits"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "for i in range(3):"),
        ("line", main, main, "total += i"),
        ("line", main, main, "await trio.lowlevel.checkpoint()"),
        ("line", main, main, "total += 100"),
        ("line", main, main, "async with trio.open_nursery() as nursery:"),
    ]


def test_until_line_in_a_loop_with_awaits_stays_in_task(
    make_debugger: MakeDebugger,
) -> None:
    """until LINE from the loop's head stops at LINE after the loop, in the task."""
    after_loop = line_of(HERE, "after-loop")
    dbg = make_debugger(["next", f"until {after_loop}", "continue"])
    assert dbg.run(loop_with_awaits, dbg) == 103
    main = "loop_with_awaits"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "for i in range(3):"),
        ("line", main, main, "total += 100"),
    ]
    assert dbg.stops[-1].lineno == after_loop


# -- breakpoints -----------------------------------------------------------------


def test_breakpoint_stops_in_every_task_and_names_it(
    make_debugger: MakeDebugger,
) -> None:
    """A breakpoint in code two tasks run stops in both, each stop naming its task."""
    dbg = make_debugger()
    assert dbg.set_break(HERE, line_of(HERE, "worker-body")) is None
    assert dbg.run(two_workers, dbg, start="continue") == ["A0", "A1", "B0", "B1"]
    assert collections.Counter(dbg.transcript()) == {
        ("line", "A", "worker", 'log.append(f"{name}{i}")'): 2,
        ("line", "B", "worker", 'log.append(f"{name}{i}")'): 2,
    }
    assert {stop.reason for stop in dbg.stops} == {"breakpoint 1"}
    # The stop task is the one whose code hit the breakpoint.
    for stop in dbg.stops:
        assert stop.task_object is not None
        assert stop.task_object.name == stop.task


def test_breakpoint_in_another_task_stops_while_stepping(
    make_debugger: MakeDebugger,
) -> None:
    """While next-ing in task A, task B's breakpoint still stops, as B."""
    dbg = make_debugger(policy=lambda stop: "continue" if stop.task == "B" else "next")
    assert dbg.set_break(HERE, line_of(HERE, "breaker-hit")) is None
    dbg.run(stepping_meets_breakpoint, dbg)
    in_b = [stop for stop in dbg.stops if stop.task == "B"]
    assert [(stop.entry(), stop.reason) for stop in in_b] == [
        (("line", "B", "breaker", 'hit = "B"'), "breakpoint 1")
    ]
    # Everything else is A's own stepping, line after line.
    steps_in_a = [stop.entry() for stop in dbg.stops if stop.task != "B"]
    expected_a = [("enter", "A", "stepped", "dbg.set_trace()")] + [
        ("line", "A", "stepped", "for _ in range(20):"),
        ("line", "A", "stepped", "await trio.lowlevel.checkpoint()"),
    ] * 20
    assert steps_in_a == expected_a[: len(steps_in_a)]
    assert {stop.reason for stop in dbg.stops if stop.task == "A"} <= {
        "set_trace",
        "step",
    }
    # B's breakpoint ended A's stepping: continue there.
    assert dbg.stops[-1].task == "B"


# -- Ctrl-C ------------------------------------------------------------------


def test_pause_from_trios_scheduler_stops_at_next_user_line_of_a_task(
    make_debugger: MakeDebugger,
) -> None:
    """A pause requested from trio's scheduler stops at some task's next user line."""
    dbg = make_debugger(["next", "next", "next"])
    pauser = PauseFromScheduler(dbg, after_waits=10)
    assert dbg.run(two_spinners, dbg, instruments=[pauser]) == 100
    assert pauser.task_at_request is None  # really requested from the scheduler
    first = dbg.stops[0]
    assert first.reason == "interrupted (Ctrl-C)"
    assert first.task in {"A", "B"}
    assert first.function == "spinner"
    assert first.filename == HERE
    task = first.task
    assert dbg.transcript() == [
        ("line", task, "spinner", "for _ in range(50):"),
        ("line", task, "spinner", "log.append(name)"),
        ("line", task, "spinner", "await trio.lowlevel.checkpoint()"),
        ("line", task, "spinner", "for _ in range(50):"),
    ]


def test_pause_inside_trio_code_skips_library_frames_trio_calls(
    make_debugger: MakeDebugger,
) -> None:
    """After a pause inside trio code, stdlib code trio calls is not stopped in."""
    dbg = make_debugger(["next"])
    assert dbg.run(pause_inside_trio_code, dbg) == "/tmp/child/"
    main = "pause_inside_trio_code"
    assert dbg.transcript() == [
        ("line", main, main, 'path += "/"'),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
    ]
    assert dbg.stops[0].reason == "interrupted (Ctrl-C)"
    assert dbg.stops[1].reason == "step"


def test_pause_by_signal_in_user_code_stops_in_that_task(
    make_debugger: MakeDebugger,
) -> None:
    """A pause by a signal in user code stops at the interrupted task's next line."""
    dbg = make_debugger(["next", "next"])

    def handler(signum: int, frame: types.FrameType | None) -> None:
        dbg.request_pause(frame, task=current_task_or_none())

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        assert dbg.run(interrupted_by_signal, dbg) == 2
    finally:
        signal.signal(signal.SIGUSR1, previous)
    main = "interrupted_by_signal"
    assert dbg.transcript() == [
        ("line", main, main, "counter += 1"),
        ("line", main, main, "await trio.lowlevel.checkpoint()"),
        ("line", main, main, "counter += 1"),
    ]
    assert dbg.stops[0].reason == "interrupted (Ctrl-C)"


@pytest.mark.parametrize("command", ["next", "step"])
def test_pause_on_a_suspended_task_follows_it_when_it_resumes(
    make_debugger: MakeDebugger, command: str
) -> None:
    """After an idle pause on a suspended task, stepping stops in it as it wakes."""
    dbg = make_debugger([command] * 3)
    assert dbg.run(paused_while_idle, dbg) == ["main runs", "woke", "done"]
    assert dbg.transcript() == [
        ("enter", "W", "waiter", "await event.wait()"),
        ("line", "W", "waiter", 'log.append("woke")'),
        ("line", "W", "waiter", "await trio.lowlevel.checkpoint()"),
        ("line", "W", "waiter", 'log.append("done")'),
    ]
    assert dbg.stops[0].reason.startswith("interrupted (Ctrl-C)")


# -- quitting ----------------------------------------------------------------


@pytest.mark.parametrize(
    "script", [["quit"], ["next", "quit"], ["next", "next", "quit"]]
)
def test_quit_in_a_child_task_unwinds_every_task(
    make_debugger: MakeDebugger, script: list[str]
) -> None:
    """quit in a child task: DebuggerQuit leaves trio.run, every finally block ran."""
    dbg = make_debugger(script)
    ran: list[str] = []
    with pytest.raises(BaseExceptionGroup) as info:
        dbg.run(quit_in_child, dbg, ran)
    assert [type(leaf) for leaf in leaves(info.value)] == [DebuggerQuit]
    assert sorted(ran) == ["A", "B", "main"]
    assert len(dbg.stops) == len(script)
    assert {stop.task for stop in dbg.stops} == {"A"}


def test_quit_in_the_main_task_raises_debugger_quit(
    make_debugger: MakeDebugger,
) -> None:
    """quit in the main task raises DebuggerQuit itself out of trio.run."""
    dbg = make_debugger(["next", "quit"])
    ran: list[str] = []
    with pytest.raises(DebuggerQuit):
        dbg.run(quit_in_main, dbg, ran)
    assert ran == ["main"]


def test_quit_in_a_trio_system_task_does_not_raise_there(
    make_debugger: MakeDebugger,
) -> None:
    """quit in a trio system task calls quit_without_raising instead of raising."""
    dbg = make_debugger(["quit"])
    quit_calls: list[str] = []
    dbg.quit_without_raising = lambda: quit_calls.append("quit")
    assert dbg.set_break(HERE, line_of(HERE, "soon-callback")) is None
    ran: list[str] = []
    dbg.run(quit_in_system_task, dbg, ran, start="continue")
    assert dbg.transcript() == [
        (
            "line",
            "<TrioToken.run_sync_soon task>",
            "on_run_sync_soon",
            'ran.append("callback")',
        )
    ]
    assert quit_calls == ["quit"]
    assert ran == ["callback", "main"]


# -- exceptions ----------------------------------------------------------------


def test_value_error_at_an_await_stops_in_the_stepped_task(
    make_debugger: MakeDebugger,
) -> None:
    """A ValueError out of an await stops in the stepped task; a sibling's doesn't."""
    dbg = make_debugger(["next"] * 6)
    assert dbg.run(value_error_at_await, dbg) is True
    main = "value_error_at_await"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "try:"),
        ("line", main, main, "await fails_after_await()"),
        ("exception", main, main, "await fails_after_await()"),
        ("line", main, main, "except ValueError:"),
        ("line", main, main, "caught = True"),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
    ]
    assert isinstance(dbg.stops[3].value, ValueError)
    assert dbg.stops[3].reason == "exception"


def test_cancelled_at_an_await_stops_in_the_stepped_task(
    make_debugger: MakeDebugger,
) -> None:
    """Cancelled delivered at an await gives an exception stop in that task."""
    dbg = make_debugger(["next"] * 5)
    assert dbg.run(cancelled_at_await, dbg) is True
    main = "cancelled_at_await"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "scope.cancel()"),
        ("line", main, main, "await trio.lowlevel.checkpoint()"),
        ("exception", main, main, "await trio.lowlevel.checkpoint()"),
        ("line", main, main, "with trio.CancelScope() as scope:"),
        ("line", main, main, "nursery.cancel_scope.cancel()"),
    ]
    assert isinstance(dbg.stops[3].value, trio.Cancelled)


# -- generators ------------------------------------------------------------------


def test_sync_generator_yield_is_never_a_return(make_debugger: MakeDebugger) -> None:
    """A generator's yield is never a --Return-- stop; only its real end is."""
    dbg = make_debugger(["step"] * 18)
    assert dbg.run(sync_generator, dbg) == 1
    main = "sync_generator"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "total = 0"),
        ("line", main, main, "for value in numbers(2):"),
        ("call", main, "numbers", "def numbers(n: int) -> Iterator[int]:"),
        ("line", main, "numbers", "for i in range(n):"),
        ("line", main, "numbers", "yield i"),
        ("line", main, main, "total += value"),
        ("line", main, main, "for value in numbers(2):"),
        ("line", main, "numbers", "for i in range(n):"),
        ("line", main, "numbers", "yield i"),
        ("line", main, main, "total += value"),
        ("line", main, main, "for value in numbers(2):"),
        ("line", main, "numbers", "for i in range(n):"),
        ("line", main, "numbers", "return None"),
        ("return", main, "numbers", "return None"),
        ("line", main, main, "await trio.lowlevel.checkpoint()"),
        ("line", main, main, "return total"),
        ("return", main, main, "return total"),
        AFTER_RUN,
    ]


def test_return_in_a_sync_generator_runs_to_its_real_end(
    make_debugger: MakeDebugger,
) -> None:
    """return in a generator runs over its yields to its real end; next goes on."""
    dbg = make_debugger(["step", "step", "step", "return", "next"])
    assert dbg.run(sync_generator, dbg) == 1
    main = "sync_generator"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "total = 0"),
        ("line", main, main, "for value in numbers(2):"),
        ("call", main, "numbers", "def numbers(n: int) -> Iterator[int]:"),
        ("return", main, "numbers", "return None"),
        ("line", main, main, "await trio.lowlevel.checkpoint()"),
    ]


def test_step_through_async_for_stays_in_user_code(
    make_debugger: MakeDebugger,
) -> None:
    """Stepping through async for stops only in user code, not trio's WeakSet."""
    dbg = make_debugger(["step"] * 19)
    assert dbg.run(async_generator, dbg) == 1
    main = "async_generator"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "total = 0"),
        ("line", main, main, "async for value in async_numbers(2):"),
        (
            "call",
            main,
            "async_numbers",
            "async def async_numbers(n: int) -> AsyncIterator[int]:",
        ),
        ("line", main, "async_numbers", "for i in range(n):"),
        ("line", main, "async_numbers", "await trio.lowlevel.checkpoint()"),
        ("line", main, "async_numbers", "yield i"),
        ("line", main, main, "total += value"),
        ("line", main, main, "async for value in async_numbers(2):"),
        ("line", main, "async_numbers", "for i in range(n):"),
        ("line", main, "async_numbers", "await trio.lowlevel.checkpoint()"),
        ("line", main, "async_numbers", "yield i"),
        ("line", main, main, "total += value"),
        ("line", main, main, "async for value in async_numbers(2):"),
        ("line", main, "async_numbers", "for i in range(n):"),
        ("return", main, "async_numbers", "for i in range(n):"),
        # The async for ends on a real StopAsyncIteration, as in pdb.
        ("exception", main, main, "async for value in async_numbers(2):"),
        ("line", main, main, "return total"),
        ("return", main, main, "return total"),
        AFTER_RUN,
    ]


def test_next_after_exception_in_context_manager_generator_reaches_caller(
    make_debugger: MakeDebugger,
) -> None:
    """A @contextmanager ended by its body's exception returns; next: caller."""
    dbg = make_debugger(["next"] * 5)
    assert dbg.run(body_raises_in_context_manager, dbg) is True
    main = "body_raises_in_context_manager"
    assert dbg.transcript() == [
        ("enter", main, "guarded", "dbg.set_trace()"),
        ("line", main, "guarded", "yield"),
        ("exception", main, "guarded", "yield"),
        ("return", main, "guarded", "yield"),
        ("line", main, main, "except ValueError:"),
        ("line", main, main, "caught = True"),
    ]


def test_step_after_cancelled_in_async_context_manager_reaches_caller(
    make_debugger: MakeDebugger,
) -> None:
    """An @asynccontextmanager ended by Cancelled returns; step: caller."""
    dbg = make_debugger(["next", "next", "step", "step"])
    assert dbg.run(cancelled_in_async_context_manager, dbg) is True
    main = "cancelled_in_async_context_manager"
    assert dbg.transcript() == [
        ("enter", main, "resource", "dbg.set_trace()"),
        ("line", main, "resource", "yield"),
        ("exception", main, "resource", "yield"),
        ("return", main, "resource", "yield"),
        ("line", main, main, "with trio.CancelScope() as scope:"),
    ]
    assert isinstance(dbg.stops[2].value, trio.Cancelled)


def test_next_after_generator_exit_reaches_caller(
    make_debugger: MakeDebugger,
) -> None:
    """A generator closed at its yield really returns; next goes on after close()."""
    dbg = make_debugger(["step", "step", "next", "next"])
    assert dbg.run(closes_generator, dbg) == 2
    main = "closes_generator"
    assert dbg.transcript() == [
        ("enter", main, main, "dbg.set_trace()"),
        ("line", main, main, "values.close()"),
        ("exception", main, "two_values", "yield 1"),
        ("return", main, "two_values", "yield 1"),
        ("line", main, main, "first += 1"),
    ]
    assert isinstance(dbg.stops[2].value, GeneratorExit)


# -- starting ------------------------------------------------------------------


def test_stop_on_entry_stops_first_in_the_main_task(
    make_debugger: MakeDebugger,
) -> None:
    """Stepping from before trio.run first stops at the main coroutine's call."""
    dbg = make_debugger(["step", "step", "continue"])
    assert dbg.run(two_workers, dbg, start="step") == ["A0", "A1", "B0", "B1"]
    assert dbg.transcript() == [
        (
            "call",
            "two_workers",
            "two_workers",
            "async def two_workers(dbg: ScriptedDebugger) -> list[str]:",
        ),
        ("line", "two_workers", "two_workers", "log: list[str] = []"),
        (
            "line",
            "two_workers",
            "two_workers",
            "async with trio.open_nursery() as nursery:",
        ),
    ]


@pytest.mark.parametrize("last", ["step", "next", "continue"])
def test_no_trace_function_is_left_after_a_run(
    make_debugger: MakeDebugger, last: str
) -> None:
    """A scripted run leaves no trace function, in sys.settrace or in any frame."""
    dbg = make_debugger(["step", last])
    dbg.run(step_into_leaf, dbg)
    assert sys.gettrace() is None
    frame: types.FrameType | None = sys._getframe()
    while frame is not None:
        assert getattr(frame.f_trace, "__self__", None) is not dbg
        frame = frame.f_back
