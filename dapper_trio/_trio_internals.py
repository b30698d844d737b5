"""The only module that touches trio's private internals.

A debugger needs a few facts trio does not (yet) expose publicly: which task is
running *right now* from inside a trace function (cheaply, without an exception
when there is none), which task is the run's main task, and the chain of cancel
scopes around a task together with the reason a scope was cancelled.  Each
accessor below degrades to "unknown" instead of raising if trio's internals
change shape; ``tests/test_trio_internals.py`` pins them down against the
installed trio so a change is noticed at once.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _trio_import

if TYPE_CHECKING:
    import trio

#: trio's per-thread run context once trio is imported; until then a
#: thread-local with nothing in it, which reads as "no run here" (this module
#: is imported by debuggees of programs that never import trio: see
#: _trio_import).
_RUN_CONTEXT: Any = threading.local()


def _bind(trio_module: Any) -> None:
    global _RUN_CONTEXT
    try:  # pragma: no branch - present in every supported trio
        from trio._core import _run as _trio_run

        _RUN_CONTEXT = _trio_run.GLOBAL_RUN_CONTEXT
    except (ImportError, AttributeError):  # pragma: no cover - a future trio moved it
        _RUN_CONTEXT = None


_trio_import.when_imported(_bind)


def current_task_or_none() -> trio.lowlevel.Task | None:
    """Return the task whose step is running on this thread, or None.

    This runs inside the trace function, so it must be cheap and must not
    raise: ``trio.lowlevel.current_task()`` raises RuntimeError outside a task.
    """
    if _RUN_CONTEXT is None:  # pragma: no cover
        import trio

        try:
            return trio.lowlevel.current_task()
        except RuntimeError:
            return None
    task: trio.lowlevel.Task | None = getattr(_RUN_CONTEXT, "task", None)
    return task


def current_runner() -> object | None:
    """An object identifying the trio run active on this thread, or None."""
    if _RUN_CONTEXT is None:  # pragma: no cover
        import trio

        try:
            return trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
    runner: object | None = getattr(_RUN_CONTEXT, "runner", None)
    return runner


def in_trio_thread() -> bool:
    """True if a trio run is active on this thread (inside or between task steps)."""
    if _RUN_CONTEXT is None:  # pragma: no cover
        import trio

        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return False
        return True
    return hasattr(_RUN_CONTEXT, "runner")


def main_task() -> trio.lowlevel.Task | None:
    """The task running the async function passed to ``trio.run``, if known."""
    runner = getattr(_RUN_CONTEXT, "runner", None)
    if _trio_import.loaded() is None:
        return None  # no run anywhere: trio is not even imported
    import trio

    task = getattr(runner, "main_task", None)
    if isinstance(task, trio.lowlevel.Task):
        return task
    # Fallback through public API: the init task's innermost nursery holds
    # only the main task.
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    if root is None:
        return None
    for nursery in reversed(root.child_nurseries):
        for child in nursery.child_tasks:
            if not child.name.startswith("<"):
                return child
    return None


def is_system_task(task: trio.lowlevel.Task) -> bool:
    """True for trio's own tasks (init, the run_sync_soon task, system tasks)."""
    main = main_task()
    node: trio.lowlevel.Task | None = task
    while node is not None:
        if node is main:
            return False
        nursery = node.parent_nursery
        node = nursery.parent_task if nursery is not None else None
    return True


@dataclasses.dataclass(frozen=True)
class ScopeInfo:
    """A snapshot of one cancel scope around a task."""

    scope: trio.CancelScope
    deadline: float
    shield: bool
    cancel_called: bool
    cancelled_caught: bool
    reason: str | None

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the deadline, or None if there is no deadline."""
        if math.isinf(self.deadline):
            return None
        return self.deadline - now


def _describe_reason(scope: trio.CancelScope) -> str | None:
    reason: Any = getattr(scope, "_cancel_reason", None)
    if reason is None:
        if scope.cancel_called and not math.isinf(scope.deadline):
            return "deadline exceeded"
        return None
    parts = []
    source = getattr(reason, "source", None)
    if source:
        parts.append(str(source))
    text = getattr(reason, "reason", None)
    if text:
        parts.append(repr(text))
    source_task = getattr(reason, "source_task", None)
    if source_task:
        parts.append(f"by {source_task}")
    return " ".join(parts) or None


def nursery_owners(task: trio.lowlevel.Task) -> dict[int, trio.Nursery]:
    """Map id(cancel scope) -> nursery for every nursery around *task*."""
    owners: dict[int, trio.Nursery] = {}
    node: trio.lowlevel.Task | None = task
    while node is not None:
        for nursery in node.child_nurseries:
            owners[id(nursery.cancel_scope)] = nursery
        parent = node.parent_nursery
        node = parent.parent_task if parent is not None else None
    return owners


def cancel_scopes(task: trio.lowlevel.Task) -> Iterator[ScopeInfo]:
    """Yield the cancel scopes around *task*, innermost first.

    Scopes are found through trio's private cancel-status chain; if it is not
    there, nothing is yielded (callers say "unknown").
    """
    status: Any = getattr(task, "_cancel_status", None)
    seen: set[int] = set()
    if status is None:
        return
    import trio

    while status is not None and id(status) not in seen:
        seen.add(id(status))
        scope = getattr(status, "_scope", None)
        if isinstance(scope, trio.CancelScope):
            yield ScopeInfo(
                scope=scope,
                deadline=scope.deadline,
                shield=scope.shield,
                cancel_called=scope.cancel_called,
                cancelled_caught=scope.cancelled_caught,
                reason=_describe_reason(scope),
            )
        status = getattr(status, "_parent", None)
