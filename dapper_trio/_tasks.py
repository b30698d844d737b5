"""Trio task trees: short ids, snapshots taken in the trio thread, and rendering.

A snapshot is plain data (``TaskNode``/``NurseryNode``) so it can be printed at
the terminal or shipped over IPC; it is always computed in the thread that runs
the trio loop, because trio's task objects are only coherent there.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import inspect
import itertools
import textwrap
import threading
import types
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _frames, _trio_internals

if TYPE_CHECKING:
    import trio


class TaskRegistry:
    """Gives each trio task a short, stable id (``t1``, ``t2``, ...).

    Ids are assigned at spawn time when dapper-trio's instrument is installed,
    otherwise the first time a task is seen.  The registry also remembers the
    root coroutine frame of recently exited tasks, so that an exception that
    escaped a task can be attributed to it in a post-mortem.
    """

    def __init__(self, *, remember_exited: int = 10_000) -> None:
        self._ids: weakref.WeakKeyDictionary[trio.lowlevel.Task, int] = (
            weakref.WeakKeyDictionary()
        )
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        # id(root frame) -> (task id, task name, code object).  The code object
        # guards against id() reuse after the frame is freed.
        self._roots: dict[int, tuple[int, str, types.CodeType]] = {}
        self._exited: collections.OrderedDict[int, tuple[int, str, types.CodeType]] = (
            collections.OrderedDict()
        )
        self._remember_exited = remember_exited

    def id_of(self, task: trio.lowlevel.Task) -> int:
        """Return *task*'s short id, assigning the next one if it has none."""
        try:
            return self._ids[task]
        except KeyError:
            with self._lock:
                if task not in self._ids:
                    self._ids[task] = next(self._counter)
                return self._ids[task]

    def find(self, key: str) -> trio.lowlevel.Task | None:
        """Find a live task by ``tN``/``N`` id or by exact (or unique partial) name."""
        wanted = key[1:] if key[:1] == "t" and key[1:].isdigit() else key
        tasks = list(self._ids.items())
        if wanted.isdigit():
            for task, number in tasks:
                if number == int(wanted):
                    return task
            return None
        exact = [task for task, _ in tasks if task.name == key]
        if len(exact) == 1:
            return exact[0]
        partial = [
            task
            for task, _ in tasks
            if task.name.endswith("." + key) or key in task.name
        ]
        return partial[0] if len(partial) == 1 else None

    def spawned(self, task: trio.lowlevel.Task) -> None:
        """Record a new task (called from the instrument).

        trio's own tasks (``<init>``, ``<TrioToken.run_sync_soon task>``) get
        an id only when someone asks, so the program's main task is ``t1``.
        """
        if task.name.startswith("<"):
            return
        number = self.id_of(task)
        frame = task.coro.cr_frame
        if frame is not None:
            self._roots[id(frame)] = (number, task.name, frame.f_code)

    def exited(self, task: trio.lowlevel.Task) -> None:
        """Move an exited task's root frame record to the bounded exited list."""
        number = self._ids.get(task)
        if number is None:
            return
        for key, record in list(self._roots.items()):
            if record[0] == number:
                del self._roots[key]
                self._exited[key] = record
        while len(self._exited) > self._remember_exited:
            self._exited.popitem(last=False)

    def task_for_traceback(
        self, tb: types.TracebackType | None
    ) -> tuple[int, str] | None:
        """(id, name) of the task whose root frame appears in *tb*, if known."""
        for frame, _ in _frames.iter_traceback(tb):
            for table in (self._roots, self._exited):
                record = table.get(id(frame))
                if record is not None and record[2] is frame.f_code:
                    return record[0], record[1]
        return None


REGISTRY = TaskRegistry()


if TYPE_CHECKING:
    _Instrument = trio.abc.Instrument
else:
    _Instrument = object


class TaskInstrument(_Instrument):
    """Keeps the registry's ids in spawn order and remembers exited tasks.

    A trio instrument (trio looks its hooks up by name: no base class, so
    that this module does not import trio).
    """

    def __init__(self, registry: TaskRegistry = REGISTRY) -> None:
        self.registry = registry

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.registry.spawned(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.registry.exited(task)


@dataclasses.dataclass(frozen=True)
class NurseryNode:
    """A nursery in a snapshot: where it was opened (if found) and its tasks."""

    location: str | None
    tasks: tuple[TaskNode, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "tasks": [t.to_dict() for t in self.tasks]}


@dataclasses.dataclass(frozen=True)
class TaskNode:
    """A task in a snapshot: id, name, where it is suspended, its nurseries."""

    task_id: int
    name: str
    location: str | None
    current: bool
    system: bool
    nurseries: tuple[NurseryNode, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "name": self.name,
            "location": self.location,
            "current": self.current,
            "system": self.system,
            "nurseries": [n.to_dict() for n in self.nurseries],
        }


def task_location(
    task: trio.lowlevel.Task,
    *,
    running_frame: types.FrameType | None = None,
) -> str | None:
    """Where *task* is: its innermost user frame (``file:line in function``)."""
    if running_frame is not None:
        stack = _frames.running_task_stack(running_frame, task)
    else:
        stack = _frames.suspended_task_stack(task)
    found = _frames.innermost_user_frame(stack)
    if found is None:
        return None
    frame, lineno = found
    return _frames.describe_frame(frame, lineno)


def nursery_location(
    nursery: trio.Nursery, stack: Iterable[tuple[types.FrameType, int]]
) -> str | None:
    """Where *nursery* was opened, found through the frame that holds it.

    A nursery does not record where it was opened; the user frame of the
    parent task that binds it to a local (``as nursery``) is the best answer.
    """
    for frame, lineno in stack:
        if _frames.is_hidden_frame(frame):
            continue
        for name, value in _locals(frame).items():
            if value is nursery:
                opened = _with_statement_line(frame.f_code, name, lineno)
                return _frames.describe_frame(frame, opened or lineno)
    return None


def _with_statement_line(code: types.CodeType, name: str, lineno: int) -> int | None:
    """The line of the innermost ``[async] with ... as <name>:`` around *lineno*.

    The frame only says where it is now; the ``with`` that bound *name* is
    where the nursery was opened.  None if the source can't tell.
    """
    starts = [
        start for start, end in _with_statements(code, name) if start <= lineno <= end
    ]
    return max(starts) if starts else None


def _with_statements(code: types.CodeType, name: str) -> tuple[tuple[int, int], ...]:
    try:
        lines, first = inspect.getsourcelines(code)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return ()
    offset = max(first, 1) - 1
    return tuple(
        (node.lineno + offset, (node.end_lineno or node.lineno) + offset)
        for node in ast.walk(tree)
        if isinstance(node, (ast.With, ast.AsyncWith))
        and any(
            isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == name
            for item in node.items
        )
    )


def local_holding(
    obj: object, stack: Iterable[tuple[types.FrameType, int]]
) -> str | None:
    """``'name' in function at file:line`` for the user frame binding *obj*."""
    for frame, lineno in reversed(list(stack)):
        if _frames.is_hidden_frame(frame):
            continue
        for name, value in _locals(frame).items():
            if value is obj:
                return f"{name!r} at {_frames.describe_frame(frame, lineno)}"
    return None


def _locals(frame: types.FrameType) -> dict[str, Any]:
    try:
        return dict(frame.f_locals)
    except Exception:  # pragma: no cover - exotic frames
        return {}


def snapshot(
    *,
    current: trio.lowlevel.Task | None = None,
    current_frame: types.FrameType | None = None,
    include_system: bool = False,
    registry: TaskRegistry = REGISTRY,
) -> TaskNode | None:
    """Snapshot the live task tree of the trio run on this thread.

    Must be called in the trio thread.  *current* is marked; *current_frame*
    is where it is running (a running task has no await chain to read).  The
    tree starts at the main task unless *include_system* asks for trio's init
    task and its system tasks too.
    """
    if include_system:
        import trio

        try:
            root = trio.lowlevel.current_root_task()
        except RuntimeError:
            return None
    else:
        root = _trio_internals.main_task()
    if root is None:
        return None

    def build(task: trio.lowlevel.Task) -> TaskNode:
        running = current_frame if task is current else None
        if running is not None:
            stack = _frames.running_task_stack(running, task)
        else:
            stack = _frames.suspended_task_stack(task)
        nurseries = tuple(
            NurseryNode(
                location=nursery_location(nursery, stack),
                tasks=tuple(
                    build(child) for child in _ordered(nursery.child_tasks, registry)
                ),
            )
            for nursery in task.child_nurseries
        )
        found = _frames.innermost_user_frame(stack)
        location = _frames.describe_frame(*found) if found else None
        if location is not None and not_started(task):
            location = f"not started yet, {location}"
        return TaskNode(
            task_id=registry.id_of(task),
            name=task.name,
            location=location,
            current=task is current,
            system=include_system and _trio_internals.is_system_task(task),
            nurseries=nurseries,
        )

    return build(root)


def not_started(task: trio.lowlevel.Task) -> bool:
    """True if *task*'s coroutine has not run its first step yet."""
    return inspect.getcoroutinestate(task.coro) == inspect.CORO_CREATED


def _ordered(
    tasks: Iterable[trio.lowlevel.Task], registry: TaskRegistry
) -> list[trio.lowlevel.Task]:
    return sorted(tasks, key=registry.id_of)


def render_tree(root: TaskNode) -> list[str]:
    """Render a snapshot as indented lines, the current task marked with ``*``."""
    lines: list[str] = []

    def task_line(node: TaskNode, prefix: str, connector: str) -> None:
        mark = "*" if node.current else " "
        where = node.location or "(no user frame)"
        lines.append(
            f"{prefix}{connector}{mark}t{node.task_id:<3} {node.name}  {where}"
        )
        child_prefix = prefix + ("   " if connector in ("", "└─ ") else "│  ")
        for index, nursery in enumerate(node.nurseries):
            last_nursery = index == len(node.nurseries) - 1
            label = f"nursery at {nursery.location}" if nursery.location else "nursery"
            if not nursery.tasks:
                label += " (no tasks)"
            lines.append(f"{child_prefix}{'└─ ' if last_nursery else '├─ '}{label}")
            grand_prefix = child_prefix + ("   " if last_nursery else "│  ")
            for position, child in enumerate(nursery.tasks):
                last = position == len(nursery.tasks) - 1
                task_line(child, grand_prefix, "└─ " if last else "├─ ")

    task_line(root, "", "")
    return lines
