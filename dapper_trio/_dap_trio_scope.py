"""The Trio scope of a DAP stack frame: its task, cancel scopes and children.

A frame that belongs to a trio task gets a third scope beside Locals and
Globals: the task itself (id and name), the cancel scopes around it,
innermost first and up to trio's own (deadline, seconds left, shield,
cancel called, reason), and the children of its nurseries.  Each row shows a
one-line summary and expands to its fields.
"""

from __future__ import annotations

from typing import Any

import trio

from . import _tasks, _trio_internals


class TrioInfo:
    """A row of the Trio scope: shown by its summary, expanded to its fields."""

    def __init__(self, summary: str, **fields: Any) -> None:
        self.__dict__.update(fields)
        self._summary = summary

    def __repr__(self) -> str:
        return self._summary


def trio_view(task: trio.lowlevel.Task) -> list[tuple[str, object]]:
    """The Trio scope of a frame of *task*: the task, its scopes, its children."""
    registry = _tasks.REGISTRY
    owners = _trio_internals.nursery_owners(task)
    scopes = []
    now = trio.current_time() if _trio_internals.in_trio_thread() else None
    for info in _trio_internals.cancel_scopes(task):
        nursery = owners.get(id(info.scope))
        if nursery is not None:
            owner = nursery.parent_task
            if _trio_internals.is_system_task(owner):
                break  # from here outwards the scopes are trio's own
            label = f"nursery of task {owner.name!r}"
        else:
            label = "cancel scope"
        left = info.seconds_left(now) if now is not None else None
        deadline = "no deadline" if left is None else f"{left:.3f}s left"
        state = "cancel called" if info.cancel_called else "not cancelled"
        shield = "on" if info.shield else "off"
        scopes.append(
            TrioInfo(
                f"{label}: {deadline}, shield {shield}, {state}",
                deadline=info.deadline,
                seconds_left=left,
                shield=info.shield,
                cancel_called=info.cancel_called,
                reason=info.reason,
            )
        )
    children = [
        TrioInfo(
            f"t{registry.id_of(child)} {child.name}",
            id=registry.id_of(child),
            name=child.name,
            location=_tasks.task_location(child),
        )
        for nursery in task.child_nurseries
        for child in sorted(nursery.child_tasks, key=registry.id_of)
    ]
    return [
        (
            "task",
            TrioInfo(
                f"t{registry.id_of(task)} {task.name}",
                id=registry.id_of(task),
                name=task.name,
            ),
        ),
        ("cancel scopes", scopes),
        ("nursery children", children),
    ]


__all__ = ["TrioInfo", "trio_view"]
