"""The private trio access, pinned down against the installed trio.

``_trio_internals`` degrades to "unknown" if trio's internals change shape;
these tests are how such a change is noticed at once.
"""

from __future__ import annotations

import math
import threading
import types
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from dapper_trio import _trio_internals
from dapper_trio._trio_internals import (
    ScopeInfo,
    cancel_scopes,
    current_task_or_none,
    in_trio_thread,
    is_system_task,
    main_task,
    nursery_owners,
)


class SchedulerProbe(trio.abc.Instrument):
    """Looks at the run context from trio's scheduler, between task steps."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, bool]] = []

    def before_io_wait(self, timeout: float) -> None:
        if not self.seen:
            self.seen.append((current_task_or_none(), in_trio_thread()))


# -- which task, which thread ------------------------------------------------------


def test_outside_trio_there_is_no_task_and_no_run() -> None:
    """Outside trio.run: no current task, not a trio thread, no main task."""
    assert current_task_or_none() is None
    assert not in_trio_thread()
    assert main_task() is None


async def test_inside_a_task_the_current_task_is_trios() -> None:
    """Inside a task: the task trio itself reports, in a trio thread."""
    assert current_task_or_none() is trio.lowlevel.current_task()
    assert in_trio_thread()

    async def child(results: list[object]) -> None:
        results.append(current_task_or_none() is trio.lowlevel.current_task())

    results: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child, results)
    assert results == [True]


async def test_a_worker_thread_has_no_task_and_no_run() -> None:
    """In a trio worker thread: no current task, and not a trio thread."""

    def in_worker() -> tuple[object, bool, object]:
        return current_task_or_none(), in_trio_thread(), main_task()

    task, trio_thread, main = await trio.to_thread.run_sync(in_worker)
    assert task is None
    assert not trio_thread
    assert main is None


def test_trios_scheduler_is_a_trio_thread_without_a_task() -> None:
    """Between task steps (instrument hooks): a trio thread, but no task."""
    probe = SchedulerProbe()

    async def main() -> None:
        await trio.lowlevel.checkpoint()

    trio.run(main, instruments=[probe])
    assert probe.seen == [(None, True)]


def test_a_plain_thread_during_a_run_is_not_a_trio_thread() -> None:
    """Another thread (not trio's) while a run is active: no run, no task."""
    seen: list[tuple[object, bool]] = []

    def look() -> None:
        seen.append((current_task_or_none(), in_trio_thread()))

    async def main() -> None:
        thread = threading.Thread(target=look)
        thread.start()
        await trio.to_thread.run_sync(thread.join)

    trio.run(main)
    assert seen == [(None, False)]


# -- main task and system tasks ------------------------------------------------------


async def _spawn_and_report(results: dict[str, Any]) -> None:
    results["main from child"] = main_task()


def test_main_task_is_the_task_running_the_function_given_to_trio_run() -> None:
    """main_task() is the task running trio.run's function, seen from any task."""
    results: dict[str, Any] = {}

    async def main() -> None:
        results["me"] = trio.lowlevel.current_task()
        results["main"] = main_task()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_spawn_and_report, results)

    trio.run(main)
    assert results["main"] is results["me"]
    assert results["main from child"] is results["me"]


def test_main_task_fallback_through_public_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without trio's private runner, main_task() finds it via the root task."""
    results: dict[str, Any] = {}

    async def main() -> None:
        results["me"] = trio.lowlevel.current_task()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever, name="<looks like trio's>")
            nursery.start_soon(trio.sleep_forever, name="child")
            await trio.testing.wait_all_tasks_blocked()
            with monkeypatch.context() as patch:
                patch.setattr(_trio_internals, "_RUN_CONTEXT", types.SimpleNamespace())
                results["fallback"] = main_task()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert results["fallback"] is results["me"]


def test_system_tasks_are_trios_own() -> None:
    """trio's tasks (and their children) are system tasks; the program's are not."""
    results: dict[str, bool] = {}

    async def system_child() -> None:
        results["child of a system task"] = is_system_task(trio.lowlevel.current_task())

    async def system() -> None:
        results["system task"] = is_system_task(trio.lowlevel.current_task())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(system_child)

    async def child() -> None:
        results["child"] = is_system_task(trio.lowlevel.current_task())

    async def main() -> None:
        root = trio.lowlevel.current_root_task()
        assert root is not None
        results["init"] = is_system_task(root)
        trio_tasks = [
            task
            for nursery in root.child_nurseries
            for task in nursery.child_tasks
            if task.name.startswith("<")
        ]
        results["trio's named tasks"] = bool(trio_tasks) and all(
            is_system_task(task) for task in trio_tasks
        )
        results["main"] = is_system_task(trio.lowlevel.current_task())
        trio.lowlevel.spawn_system_task(system)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert results == {
        "init": True,
        "trio's named tasks": True,
        "main": False,
        "child": False,
        "system task": True,
        "child of a system task": True,
    }


# -- cancel scopes -----------------------------------------------------------------


def test_cancel_scopes_innermost_first_with_their_state() -> None:
    """cancel_scopes(): innermost first, deadline, shield, cancel and its reason."""
    infos: list[ScopeInfo] = []
    scopes: list[trio.CancelScope] = []

    async def main() -> None:
        task = trio.lowlevel.current_task()
        with (
            trio.CancelScope(deadline=trio.current_time() + 30) as outer,
            trio.CancelScope(shield=True) as inner,
        ):
            inner.cancel(reason="the user asked")
            infos.extend(cancel_scopes(task))
            scopes.extend([inner, outer])
            await trio.lowlevel.checkpoint()  # Cancelled, caught by inner
        assert inner.cancelled_caught

    trio.run(main, clock=trio.testing.MockClock())
    inner, outer = scopes
    first, second, *rest = infos
    assert first.scope is inner
    assert (first.deadline, first.shield, first.cancel_called) == (math.inf, True, True)
    assert first.reason is not None
    assert "the user asked" in first.reason
    assert "explicit" in first.reason
    assert "main" in first.reason  # the task that called cancel()
    assert not first.cancelled_caught
    assert second.scope is outer
    assert (second.deadline, second.shield, second.cancel_called) == (
        30.0,
        False,
        False,
    )
    assert second.reason is None
    assert second.seconds_left(10.0) == 20.0
    assert first.seconds_left(10.0) is None
    # Further out: trio's own scopes (the main task's nursery and the run's).
    assert rest
    assert not any(info.cancel_called for info in rest)


def test_cancel_scope_reason_for_a_deadline() -> None:
    """A scope whose deadline passed reports cancel_called and a deadline reason."""
    reasons: list[str | None] = []

    async def main() -> None:
        task = trio.lowlevel.current_task()
        with trio.CancelScope(deadline=trio.current_time() + 1) as scope:
            with pytest.raises(trio.Cancelled):
                await trio.sleep(5)
            info = next(cancel_scopes(task))
            assert info.scope is scope
            assert info.cancel_called
            assert info.seconds_left(trio.current_time()) == pytest.approx(0, abs=1)
            reasons.append(info.reason)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    (reason,) = reasons
    assert reason is not None
    assert "deadline" in reason


def test_cancel_scopes_of_a_child_include_its_nursery() -> None:
    """A child's scopes run through its nurseries, which nursery_owners() maps."""
    found: dict[str, Any] = {}

    async def grandchild() -> None:
        await trio.sleep_forever()

    async def child(task_status: trio.TaskStatus[trio.Nursery]) -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(grandchild, name="grandchild")
            task_status.started(inner)
            await trio.sleep_forever()

    async def main() -> None:
        async with trio.open_nursery() as outer:
            inner = await outer.start(child, name="child")
            await trio.testing.wait_all_tasks_blocked()
            (grandchild_task,) = inner.child_tasks
            owners = nursery_owners(grandchild_task)
            found["scopes"] = [
                owners.get(id(info.scope)) for info in cancel_scopes(grandchild_task)
            ]
            found["outer"], found["inner"] = outer, inner
            found["child owners"] = nursery_owners(inner.parent_task)
            outer.cancel_scope.cancel()

    trio.run(main)
    scopes = found["scopes"]
    # Innermost first: the grandchild's nursery, then the child's parent's.
    assert scopes[:2] == [found["inner"], found["outer"]]
    # Everything further out is a nursery of trio's own tasks.
    assert all(nursery is not None for nursery in scopes)
    assert all(is_system_task(nursery.parent_task) for nursery in scopes[2:])
    # The child's own nursery is around the child's code too.
    child_owners = found["child owners"]
    assert child_owners[id(found["inner"].cancel_scope)] is found["inner"]
    assert child_owners[id(found["outer"].cancel_scope)] is found["outer"]


def test_nursery_owners_of_a_task_without_nurseries() -> None:
    """A task that opened no nursery still sees its parent's nurseries."""
    found: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever, name="child")
            await trio.testing.wait_all_tasks_blocked()
            (child_task,) = nursery.child_tasks
            found["owners"] = nursery_owners(child_task)
            found["nursery"] = nursery
            nursery.cancel_scope.cancel()

    trio.run(main)
    owners = found["owners"]
    assert owners[id(found["nursery"].cancel_scope)] is found["nursery"]
    assert all(isinstance(nursery, trio.Nursery) for nursery in owners.values())
