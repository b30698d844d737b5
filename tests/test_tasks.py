"""Task ids, traceback attribution, task-tree snapshots and their rendering."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from scripted import line_of

from dapper_trio import _frames, _tasks
from dapper_trio._session import DebugSession
from dapper_trio._tasks import NurseryNode, TaskInstrument, TaskNode, TaskRegistry

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

HERE = __file__
SHORT = _frames.short_path(HERE)


def run_with_registry(async_fn: Any, *args: Any) -> TaskRegistry:
    """trio.run(async_fn, registry, *args) with a fresh registry's instrument."""
    registry = TaskRegistry()
    trio.run(async_fn, registry, *args, instruments=[TaskInstrument(registry)])
    return registry


# -- ids -------------------------------------------------------------------------


async def three_children(registry: TaskRegistry, ids: dict[str, int]) -> None:
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(trio.sleep, 0, name=name)
        # Asked for in reverse order: ids were given at spawn time.
        for task in sorted(nursery.child_tasks, key=lambda t: t.name, reverse=True):
            ids[task.name] = registry.id_of(task)
    ids["main"] = registry.id_of(trio.lowlevel.current_task())
    root = trio.lowlevel.current_root_task()
    assert root is not None
    ids["found <init> before asking"] = registry.find("<init>") is not None
    ids["<init>"] = registry.id_of(root)


def test_ids_follow_spawn_order_and_main_is_t1() -> None:
    """Ids follow spawn order, main is t1; trio's tasks get ids only when asked."""
    ids: dict[str, int] = {}
    run_with_registry(three_children, ids)
    assert ids == {
        "main": 1,
        "a": 2,
        "b": 3,
        "c": 4,
        "found <init> before asking": False,
        "<init>": 5,
    }


def test_session_instrument_gives_ids_in_spawn_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session's instrument keeps the process registry in spawn order."""
    registry = TaskRegistry()
    monkeypatch.setattr(_tasks, "REGISTRY", registry)
    session = DebugSession(process_name="test")
    ids: dict[str, int] = {}

    async def main() -> None:
        await three_children(registry, ids)

    trio.run(main, instruments=[session.instrument])
    assert {name: ids[name] for name in ("main", "a", "b", "c")} == {
        "main": 1,
        "a": 2,
        "b": 3,
        "c": 4,
    }


def test_ids_without_the_instrument_are_given_when_first_seen() -> None:
    """Without the instrument, a task gets the next id when first asked for."""
    registry = TaskRegistry()
    ids: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0, name="a")
            nursery.start_soon(trio.sleep, 0, name="b")
            a, b = sorted(nursery.child_tasks, key=lambda t: t.name)
            ids.extend([registry.id_of(b), registry.id_of(a), registry.id_of(b)])

    trio.run(main)
    assert ids == [1, 2, 1]


async def named_tasks(registry: TaskRegistry, found: dict[str, Any]) -> None:
    async with trio.open_nursery() as nursery:
        for name in ("fetch-alpha", "fetch-beta", "store", "store-backup"):
            nursery.start_soon(trio.sleep_forever, name=name)
        await trio.testing.wait_all_tasks_blocked()
        for key in (
            "t1",
            "1",
            "t3",
            "3",
            "t99",
            "99",
            "store",
            "beta",
            "fetch",
            "backup",
            "nothing",
            "named_tasks",
        ):
            task = registry.find(key)
            found[key] = task.name if task is not None else None
        nursery.cancel_scope.cancel()


def test_find_by_id_number_exact_and_unique_partial_name() -> None:
    """find() takes tN, N, an exact or a unique partial name; else finds nothing."""
    found: dict[str, Any] = {}
    run_with_registry(named_tasks, found)
    main_name = f"{named_tasks.__module__}.{named_tasks.__qualname__}"
    assert found == {
        "t1": main_name,
        "1": main_name,
        "t3": "fetch-beta",
        "3": "fetch-beta",
        "t99": None,
        "99": None,
        "store": "store",  # exact, though "store-backup" contains it
        "beta": "fetch-beta",
        "fetch": None,  # two tasks match
        "backup": "store-backup",
        "nothing": None,
        "named_tasks": main_name,  # the last part of a dotted name
    }


# -- attributing tracebacks -----------------------------------------------------------


async def crasher() -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError("crashed")


def fail(exc: BaseException) -> None:
    raise exc


async def catches_own(found: dict[str, Any], registry: TaskRegistry) -> None:
    try:
        fail(KeyError("inside"))
    except KeyError as exc:
        found["while running"] = registry.task_for_traceback(exc.__traceback__)


async def attribute(registry: TaskRegistry, found: dict[str, Any]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(catches_own, found, registry, name="catcher")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crasher, name="crasher")
    except BaseExceptionGroup as group:
        (leaf,) = group.exceptions
        found["after exit"] = registry.task_for_traceback(leaf.__traceback__)
        found["group"] = registry.task_for_traceback(group.__traceback__)
    try:
        fail(RuntimeError("no task root in here"))
    except RuntimeError as exc:
        found["main's own"] = registry.task_for_traceback(exc.__traceback__)


def test_task_for_traceback_names_the_task_also_after_it_exited() -> None:
    """An exception is attributed to its task, while it runs and after it exited."""
    found: dict[str, Any] = {}
    run_with_registry(attribute, found)
    main_name = f"{attribute.__module__}.{attribute.__qualname__}"
    assert found == {
        "while running": (2, "catcher"),
        "after exit": (3, "crasher"),
        # The group's traceback starts in the main task's own root frame.
        "group": (1, main_name),
        "main's own": (1, main_name),
    }


def test_task_for_traceback_of_code_outside_any_task() -> None:
    """A traceback through no task's root frame is attributed to no task."""
    registry = TaskRegistry()
    with pytest.raises(ValueError, match="outside trio") as info:
        fail(ValueError("outside trio"))
    assert registry.task_for_traceback(info.value.__traceback__) is None
    assert registry.task_for_traceback(None) is None


async def crash_one_after_another(registry: TaskRegistry, leaves: list[Any]) -> None:
    for name in ("first", "second"):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(crasher, name=name)
        except BaseExceptionGroup as group:
            leaves.append(group.exceptions[0].__traceback__)


def test_exited_tasks_are_remembered_up_to_a_bound() -> None:
    """Only the remember_exited most recently exited tasks are remembered."""
    registry = TaskRegistry(remember_exited=2)
    leaves: list[Any] = []
    trio.run(
        crash_one_after_another,
        registry,
        leaves,
        instruments=[TaskInstrument(registry)],
    )
    first, second = leaves
    assert registry.task_for_traceback(first) is None
    assert registry.task_for_traceback(second) == (3, "second")


# -- snapshots ---------------------------------------------------------------------


async def sleeper() -> None:
    await trio.sleep_forever()  # mark: sleeper-waits


async def grandchild() -> None:
    await trio.sleep_forever()  # mark: grandchild-waits


async def starter(task_status: trio.TaskStatus[None]) -> None:
    async with trio.open_nursery() as inner:  # mark: starter-opens
        inner.start_soon(grandchild, name="grandchild")
        task_status.started()
        await trio.sleep_forever()  # mark: starter-waits


async def tree_main(registry: TaskRegistry, out: dict[str, Any]) -> None:
    me = trio.lowlevel.current_task()
    async with trio.open_nursery() as outer:  # mark: main-opens
        outer.start_soon(sleeper, name="sleeper")
        await outer.start(starter, name="starter")
        await trio.testing.wait_all_tasks_blocked()
        outer.start_soon(sleeper, name="late")
        here = sys._getframe()
        out["tree"] = _tasks.snapshot(  # mark: main-snapshots
            current=me, current_frame=here, registry=registry
        )
        out["with system"] = _tasks.snapshot(
            current=me, current_frame=here, registry=registry, include_system=True
        )
        out["late not started"] = [
            _tasks.not_started(task)
            for task in outer.child_tasks
            if task.name in ("late", "sleeper")
        ]
        outer.cancel_scope.cancel()


def at(mark: str, function: str) -> str:
    return f"{SHORT}:{line_of(HERE, mark)} in {function}"


def test_snapshot_of_a_live_tree() -> None:
    """snapshot(): nested nurseries, started and unstarted tasks, the current one."""
    out: dict[str, Any] = {}
    run_with_registry(tree_main, out)
    tree: TaskNode = out["tree"]
    main_name = f"{tree_main.__module__}.{tree_main.__qualname__}"
    assert (tree.task_id, tree.name, tree.current, tree.system) == (
        1,
        main_name,
        True,
        False,
    )
    assert tree.location == at("main-snapshots", "tree_main")
    (outer,) = tree.nurseries
    assert outer.location is not None
    assert outer.location.startswith(f"{SHORT}:")
    assert outer.location.endswith(" in tree_main")
    assert [(t.task_id, t.name, t.current) for t in outer.tasks] == [
        (2, "sleeper", False),
        (3, "starter", False),
        (5, "late", False),
    ]
    sleeping, starting, late = outer.tasks
    assert sleeping.location == at("sleeper-waits", "sleeper")
    assert sleeping.nurseries == ()
    assert starting.location == at("starter-waits", "starter")
    (inner,) = starting.nurseries
    assert inner.location is not None
    assert inner.location.endswith(" in starter")
    assert [(t.task_id, t.name, t.location) for t in inner.tasks] == [
        (4, "grandchild", at("grandchild-waits", "grandchild"))
    ]
    first_line = sleeper.__code__.co_firstlineno
    assert late.location == f"not started yet, {SHORT}:{first_line} in sleeper"
    assert sorted(out["late not started"]) == [False, True]


def test_render_tree_of_a_live_tree() -> None:
    """render_tree draws the snapshot with connectors, ids and locations."""
    out: dict[str, Any] = {}
    run_with_registry(tree_main, out)
    tree: TaskNode = out["tree"]
    main_name = tree.name
    outer_at = tree.nurseries[0].location
    inner_at = tree.nurseries[0].tasks[1].nurseries[0].location
    first_line = sleeper.__code__.co_firstlineno
    assert _tasks.render_tree(tree) == [
        f"*t1   {main_name}  {at('main-snapshots', 'tree_main')}",
        f"   └─ nursery at {outer_at}",
        f"      ├─  t2   sleeper  {at('sleeper-waits', 'sleeper')}",
        f"      ├─  t3   starter  {at('starter-waits', 'starter')}",
        f"      │  └─ nursery at {inner_at}",
        f"      │     └─  t4   grandchild  {at('grandchild-waits', 'grandchild')}",
        f"      └─  t5   late  not started yet, {SHORT}:{first_line} in sleeper",
    ]


def test_nursery_location_is_where_it_was_opened() -> None:
    """A nursery's location is the `async with` that opened it, as documented."""
    out: dict[str, Any] = {}
    run_with_registry(tree_main, out)
    tree: TaskNode = out["tree"]
    (outer,) = tree.nurseries
    (inner,) = outer.tasks[1].nurseries
    assert outer.location == at("main-opens", "tree_main")
    assert inner.location == at("starter-opens", "starter")


def test_snapshot_with_system_tasks_starts_at_trios_init_task() -> None:
    """include_system roots the tree at <init>; only trio's tasks are system."""
    out: dict[str, Any] = {}
    run_with_registry(tree_main, out)
    root: TaskNode = out["with system"]
    assert root.name == "<init>"
    assert root.system

    def walk(node: TaskNode) -> list[TaskNode]:
        return [node] + [
            task
            for nursery in node.nurseries
            for child in nursery.tasks
            for task in walk(child)
        ]

    nodes = walk(root)
    flags = {node.name: node.system for node in nodes}
    assert flags["<init>"]
    assert flags["<TrioToken.run_sync_soon task>"]
    assert not any(flags[name] for name in ("sleeper", "starter", "grandchild", "late"))
    (main_node,) = [node for node in nodes if node.task_id == 1]
    assert main_node.current
    assert not main_node.system
    lines = _tasks.render_tree(root)
    assert lines[0].startswith(f" t{root.task_id:<3} <init>  (no user frame)")
    assert sum("*t1 " in line for line in lines) == 1


def test_snapshot_outside_a_run_is_none() -> None:
    """Outside a trio run there is no tree to snapshot."""
    assert _tasks.snapshot() is None
    assert _tasks.snapshot(include_system=True) is None


# -- rendering ------------------------------------------------------------------


def node(
    task_id: int,
    name: str,
    location: str | None = "app.py:1 in f",
    *nurseries: NurseryNode,
    current: bool = False,
) -> TaskNode:
    return TaskNode(task_id, name, location, current, False, nurseries)


def test_render_tree_connectors() -> None:
    """render_tree's connectors, empty nurseries and tasks without a user frame."""
    tree = node(
        1,
        "main",
        "app.py:10 in main",
        NurseryNode(
            "app.py:11 in main",
            (
                node(
                    2,
                    "a",
                    "app.py:20 in a",
                    NurseryNode(None, (node(4, "a-child", None),)),
                    current=True,
                ),
                node(3, "b", "app.py:30 in b"),
            ),
        ),
        NurseryNode("app.py:12 in main", ()),
    )
    assert _tasks.render_tree(tree) == [
        " t1   main  app.py:10 in main",
        "   ├─ nursery at app.py:11 in main",
        "   │  ├─ *t2   a  app.py:20 in a",
        "   │  │  └─ nursery",
        "   │  │     └─  t4   a-child  (no user frame)",
        "   │  └─  t3   b  app.py:30 in b",
        "   └─ nursery at app.py:12 in main (no tasks)",
    ]


def test_render_tree_wide_ids_and_a_lone_task() -> None:
    """A task without nurseries is one line; ids are padded to three places."""
    assert _tasks.render_tree(node(1234, "solo", current=True)) == [
        "*t1234 solo  app.py:1 in f"
    ]
    assert _tasks.render_tree(node(7, "solo")) == [" t7   solo  app.py:1 in f"]


def test_snapshot_to_dict_is_plain_data() -> None:
    """to_dict() gives plain data for IPC, nurseries and tasks nested."""
    tree = node(
        1, "main", "m.py:1 in main", NurseryNode("m.py:2 in main", (node(2, "x"),))
    )
    assert tree.to_dict() == {
        "id": 1,
        "name": "main",
        "location": "m.py:1 in main",
        "current": False,
        "system": False,
        "nurseries": [
            {
                "location": "m.py:2 in main",
                "tasks": [
                    {
                        "id": 2,
                        "name": "x",
                        "location": "app.py:1 in f",
                        "current": False,
                        "system": False,
                        "nurseries": [],
                    }
                ],
            }
        ],
    }


def test_task_location_of_running_and_suspended_tasks() -> None:
    """task_location: innermost user frame of a running frame or an await chain."""
    found: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, name="sleeper")
            await trio.testing.wait_all_tasks_blocked()
            (task,) = nursery.child_tasks
            found["suspended"] = _tasks.task_location(task)
            here: types.FrameType = sys._getframe()
            found["running"] = _tasks.task_location(
                trio.lowlevel.current_task(), running_frame=here
            )
            found["line"] = here.f_lineno
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert found["suspended"] == at("sleeper-waits", "sleeper")
    assert found["running"].startswith(f"{SHORT}:")
    assert found["running"].endswith(" in main")


def holder(held: object) -> Iterator[None]:
    yield


def test_local_holding_names_the_variable() -> None:
    """local_holding names the innermost user frame's variable bound to obj."""
    marker, stranger = object(), object()
    outer_gen, inner_gen = holder(marker), holder(marker)
    next(outer_gen)
    next(inner_gen)
    assert outer_gen.gi_frame is not None
    assert inner_gen.gi_frame is not None
    stack = [(outer_gen.gi_frame, 5), (inner_gen.gi_frame, 6)]
    assert _tasks.local_holding(marker, stack) == f"'held' at {SHORT}:6 in holder"
    assert _tasks.local_holding(stranger, stack) is None
