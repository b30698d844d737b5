"""The terminal front end: pdbpp's REPL with trio-aware commands.

``TrioPdb`` is pdbpp's ``Pdb`` with the task-aware engine underneath
(``_engine.TaskAwareBdb`` comes first in the bases, so its stop logic wins)
and these additions:

* a header line on every stop naming why, the process and the task;
* ``tasks``, ``task``, ``scopes``, ``exceptions`` and ``procs`` commands;
* Ctrl-C at the prompt clears the line and redraws the prompt;
* trio's, outcome's and dapper-trio's frames are hidden and never stepped into.

It is always built with ``nosigint=True`` (pdb must not install its own SIGINT
handler: that is what breaks Ctrl-C in trio programs after ``continue``) and
never shares pdbpp's global instance (``use_global_pdb=False``).
"""

from __future__ import annotations

import sys
import threading
import traceback
import types
from typing import TYPE_CHECKING, Any

from . import _frames, _tasks, _trio_import, _trio_internals
from ._engine import TaskAwareBdb


def _import_pdbpp() -> Any:
    """Import pdbpp, without compiling the standard library's pdb.py again.

    pdbpp builds a private copy of the stdlib ``pdb`` module by reading
    pdb.py and calling ``compile()`` on it at import -- 10-25 ms of every
    debuggee's start-up, since nothing caches the result.  The interpreter's
    own bytecode cache of pdb.py holds the same code object (same source,
    file name and flags), so while pdbpp is imported, ``compile()`` of that
    one file is answered from the cache through importlib's loader, which
    checks the cache against the source and compiles when it is stale.
    """
    existing = sys.modules.get("pdbpp")
    if existing is not None:
        return existing
    import builtins
    import code
    import importlib.machinery
    import os

    pdb_path = os.path.join(os.path.dirname(code.__file__), "pdb.py")
    real_compile = builtins.compile

    def compile_from_cache(
        source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any
    ) -> Any:
        if filename == pdb_path and mode == "exec" and type(source) is str:
            try:
                loader = importlib.machinery.SourceFileLoader("pdb", pdb_path)
                cached = loader.get_code("pdb")
            except Exception:  # fall back to pdbpp's own way
                cached = None
            if cached is not None:
                return cached
        return real_compile(source, filename, mode, *args, **kwargs)

    builtins.compile = compile_from_cache
    try:
        import pdbpp
    finally:
        builtins.compile = real_compile
    return pdbpp


pdbpp = _import_pdbpp()

if TYPE_CHECKING:
    import trio

    from ._session import DebugSession

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup


def leaf_exceptions(
    exc: BaseException,
) -> list[tuple[BaseException, types.TracebackType | None]]:
    """Every leaf of an exception (group), each with its full traceback.

    A leaf's own traceback starts where it entered its innermost group (for
    exceptions from nursery children: at the task's root frame), so that is
    the traceback a post-mortem of the leaf shows.
    """
    leaves: list[tuple[BaseException, types.TracebackType | None]] = []

    def walk(node: BaseException) -> None:
        if isinstance(node, BaseExceptionGroup):
            for child in node.exceptions:
                walk(child)
        else:
            leaves.append((node, node.__traceback__))

    walk(exc)
    return leaves


NO_TRIO_RUN = (
    "no trio run is active in this thread (trio.run has not started yet, or has ended)"
)


def _one_line(exc: BaseException) -> str:
    summary = getattr(exc, "summary", None)  # an actor's error: its own line
    if isinstance(summary, str):
        return f"{type(exc).__name__}: {summary}"
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class TrioPdb(TaskAwareBdb, pdbpp.Pdb):  # type: ignore[misc,name-defined]
    """pdbpp's REPL, following trio tasks."""

    _wait_for_mainpyfile: bool
    mainpyfile: str

    def __init__(self, session: DebugSession, **kwargs: Any) -> None:
        kwargs.setdefault("nosigint", True)
        super().__init__(**kwargs)
        self.session = session
        self._announced = False
        self._executing_command = False
        # Task view: ``task ID`` switches the stack to another task's await
        # chain; the stop's own stack is kept to come back to.
        self._view_task: trio.lowlevel.Task | None = None
        self._home: tuple[list[Any], int] | None = None
        # Post-mortem of an exception group: the leaves and the one shown.
        self._pm_leaves: list[tuple[BaseException, types.TracebackType | None]] = []
        self._pm_index: int | None = None
        self._post_mortem = False
        self.reset()

    # -- stops ---------------------------------------------------------------

    def header(self) -> str:
        """One line: why we stopped, which task, which process."""
        task = self.stop_task
        if self._post_mortem:
            where = ""
        elif task is not None:
            where = f" in task {task.name!r} (t{_tasks.REGISTRY.id_of(task)})"
        elif _trio_internals.in_trio_thread():
            where = " in trio's scheduler (no task running)"
        else:
            thread = threading.current_thread()
            where = (
                " outside trio"
                if thread is threading.main_thread()
                else f" in thread {thread.name!r}"
            )
        return (
            f"[dapper-trio] {self.stop_reason or 'stopped'}{where}, "
            f"process {self.session.describe_process()}"
        )

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            self.message(self.header())

    def user_call(self, frame: types.FrameType, argument_list: Any) -> None:
        if self._wait_for_mainpyfile:
            return
        self._note_stop_task()
        self._announce()
        super().user_call(frame, argument_list)

    def user_line(self, frame: types.FrameType) -> None:
        if self._wait_for_mainpyfile:
            if (
                self.mainpyfile != self.canonic(frame.f_code.co_filename)
                or frame.f_lineno <= 0
            ):
                return
            self._wait_for_mainpyfile = False
            self.stop_reason = "entry: first line of the program"
        self._note_stop_task()
        # Breakpoint commands may decide not to stop; announce inside.
        super().user_line(frame)

    def user_return(self, frame: types.FrameType, return_value: Any) -> None:
        if self._wait_for_mainpyfile:
            return
        self._note_stop_task()
        self._announce()
        super().user_return(frame, return_value)

    def user_exception(self, frame: types.FrameType, exc_info: Any) -> None:
        if self._wait_for_mainpyfile:
            return
        self._note_stop_task()
        self._announce()
        super().user_exception(frame, exc_info)

    def _note_stop_task(self) -> None:
        self.stop_task = _trio_internals.current_task_or_none()

    def interaction(self, frame: types.FrameType | None, tb_or_exc: Any) -> None:
        """Run the REPL for one stop (serialised with every other REPL)."""
        with self.session.repl_turn(self, frame, tb_or_exc) as allowed:
            if not allowed:
                if not self.quitting:  # (turned away: the program is quitting)
                    self.set_continue()
                return
            self._announce()
            self._view_task = None
            self._home = None
            try:
                super().interaction(frame, tb_or_exc)
            finally:
                self._announced = False
                self._view_task = None
                self._home = None
                self.session.clear_pending_pause()

    def _cmdloop(self) -> None:
        while True:
            try:
                self.allow_kbdint = True
                self.cmdloop()
                self.allow_kbdint = False
                break
            except KeyboardInterrupt:
                if self._executing_command:
                    self.message("--KeyboardInterrupt--")
                else:
                    # Ctrl-C at the prompt: drop the line, draw a fresh prompt.
                    self.stdout.write("\n")
                    self.stdout.flush()
            finally:
                self._executing_command = False

    def precmd(self, line: str) -> str:
        self._executing_command = True
        result: str = super().precmd(line)
        return result

    def postcmd(self, stop: Any, line: str) -> Any:
        self._executing_command = False
        return super().postcmd(stop, line)

    # -- stacks -----------------------------------------------------------

    def get_stack(
        self, f: types.FrameType | None, t: types.TracebackType | None
    ) -> tuple[list[tuple[types.FrameType, int]], int]:
        fullstack, index = self.task_stack(f, t)
        self.fullstack = fullstack
        result: tuple[list[tuple[types.FrameType, int]], int] = self.compute_stack(
            fullstack, index
        )
        return result

    def _is_hidden(self, frame: types.FrameType) -> bool:
        if frame is getattr(self, "_via_set_trace_frame", None):
            return False
        return _frames.is_hidden_frame(frame) or bool(super()._is_hidden(frame))

    def _show_stack(self, stack: list[tuple[types.FrameType, int]], index: int) -> None:
        self.fullstack = stack
        self.stack, self.curindex = self.compute_stack(stack, index)
        if not self.stack:
            self.error("no frames to show")
            return
        self.curindex = max(0, min(self.curindex, len(self.stack) - 1))
        self.curframe = self.stack[self.curindex][0]
        self.curframe_locals = self.curframe.f_locals
        self.lineno = None
        self.print_stack_entry(self.stack[self.curindex])

    def selected_task(self) -> trio.lowlevel.Task | None:
        return self._view_task if self._view_task is not None else self.stop_task

    # -- trio commands -------------------------------------------------------

    def do_tasks(self, arg: str) -> None:
        """tasks [-a]
        Show the live trio task tree: each task's short id, name and where it
        is suspended, nurseries under the task that opened them.  ``*`` marks
        the task this stop happened in.  With -a, include trio's own tasks.
        """
        include_system = arg.strip() == "-a"
        if not _trio_internals.in_trio_thread():
            # A worker thread of a trio run: take the snapshot in the trio
            # thread -- unless it is blocked waiting for this very REPL.
            trio_thread = self.session.trio_thread
            if trio_thread is not None and self.session.is_waiting_for_repl(
                trio_thread
            ):
                self.error(
                    "the trio thread is waiting for this REPL to end; "
                    "continue to see its tasks"
                )
                return
            trio = _trio_import.loaded()
            if trio is None:
                self.error(NO_TRIO_RUN)
                return
            try:
                tree = trio.from_thread.run_sync(
                    lambda: _tasks.snapshot(include_system=include_system)
                )
            except RuntimeError:
                self.error(NO_TRIO_RUN)
                return
            if tree is None:
                self.error("the trio run has no tasks")
                return
            for line in _tasks.render_tree(tree):
                self.message(line)
            return
        current = self.stop_task
        running_frame = None
        if current is not None and self._home is None:
            running_frame = self.stack[-1][0] if self.stack else None
        elif current is not None and self._home is not None:
            running_frame = self._home[0][-1][0] if self._home[0] else None
        tree = _tasks.snapshot(
            current=current,
            current_frame=running_frame,
            include_system=include_system,
        )
        if tree is None:
            self.error(NO_TRIO_RUN)
            return
        for line in _tasks.render_tree(tree):
            self.message(line)

    def do_task(self, arg: str) -> None:
        """task [ID|NAME]
        Switch where, up, down, p, pp, l and ll to another task's suspended
        await chain (IDs are shown by ``tasks``, e.g. t3).  Stepping commands
        then apply to that task.  ``task`` alone returns to the stopped task.
        """
        key = arg.strip()
        if not key:
            if self._home is None:
                self.message("already at the stopped task")
                return
            stack, index = self._home
            self._home = None
            self._view_task = None
            self._show_stack(stack, index)
            return
        if not _trio_internals.in_trio_thread():
            self.error(NO_TRIO_RUN)
            return
        _tasks.snapshot()  # make sure every live task has an id
        task = _tasks.REGISTRY.find(key)
        if task is None:
            self.error(f"no live task matches {key!r} (see 'tasks')")
            return
        if task is self.stop_task:
            self.do_task("")
            return
        stack = _frames.suspended_task_stack(task)
        if not stack:
            self.error(f"task {task.name!r} has no frames (it has finished)")
            return
        if self._home is None:
            self._home = (self.fullstack, self._full_index())
        self._view_task = task
        self.message(f"task {task.name!r} (t{_tasks.REGISTRY.id_of(task)})")
        self._show_stack(stack, len(stack) - 1)

    def complete_task(
        self, text: str, line: str, begidx: int, endidx: int
    ) -> list[str]:
        if not _trio_internals.in_trio_thread():
            return []
        _tasks.snapshot()
        names = []
        for task in list(_tasks.REGISTRY._ids):
            names.append(f"t{_tasks.REGISTRY.id_of(task)}")
            names.append(task.name)
        return [name for name in names if name.startswith(text)]

    def _full_index(self) -> int:
        frame = self.curframe
        for position, (candidate, _) in enumerate(self.fullstack):
            if candidate is frame:
                return position
        return len(self.fullstack) - 1

    def do_scopes(self, arg: str) -> None:
        """scopes [-a]
        Show the cancel scopes around the current task, innermost first:
        where each was opened, its deadline and the seconds left, whether it
        shields, whether cancel was called and the reason.  trio's own scopes
        (around the main task) are left out unless -a is given.
        """
        task = self.selected_task()
        if task is None or not _trio_internals.in_trio_thread():
            self.error("not stopped in a trio task")
            return
        show_all = arg.strip() == "-a"
        owners = _trio_internals.nursery_owners(task)
        stack = list(self.fullstack)
        lines = []
        import trio

        now = trio.current_time()
        for info in _trio_internals.cancel_scopes(task):
            nursery = owners.get(id(info.scope))
            owner_task = nursery.parent_task if nursery is not None else None
            if (
                owner_task is not None
                and _trio_internals.is_system_task(owner_task)
                and not show_all
            ):
                break  # everything from here outwards is trio's own
            lines.append(self._describe_scope(info, nursery, stack, now))
        if not lines:
            self.message(f"task {task.name!r}: no cancel scopes")
            return
        self.message(f"cancel scopes around task {task.name!r}, innermost first:")
        for number, line in enumerate(lines):
            self.message(f"[{number}] {line}")

    def _describe_scope(
        self,
        info: _trio_internals.ScopeInfo,
        nursery: trio.Nursery | None,
        stack: list[tuple[types.FrameType, int]],
        now: float,
    ) -> str:
        if nursery is not None:
            owner = nursery.parent_task
            owner_stack = (
                stack
                if owner is self.selected_task()
                else _frames.suspended_task_stack(owner)
            )
            where = _tasks.nursery_location(nursery, owner_stack)
            label = f"nursery of task {owner.name!r}" + (
                f" at {where}" if where else ""
            )
        else:
            where = _tasks.local_holding(info.scope, stack)
            label = f"cancel scope {where}" if where else "cancel scope"
        left = info.seconds_left(now)
        if left is None:
            parts = [label, "no deadline"]
        elif left >= 0:
            parts = [label, f"deadline {info.deadline:.3f} ({left:.3f}s left)"]
        else:
            parts = [label, f"deadline {info.deadline:.3f} (passed {-left:.3f}s ago)"]
        parts.append("shield on" if info.shield else "no shield")
        if info.cancel_called:
            parts.append("cancel called" + (f" ({info.reason})" if info.reason else ""))
        else:
            parts.append("not cancelled")
        return ", ".join(parts)

    def do_procs(self, arg: str) -> None:
        """procs
        Show the processes of the actor tree (debug mode): each one's name,
        pid and state -- running, in the REPL, waiting for the REPL, or how
        it exited -- indented under its parent.
        """
        tree = self.session.tree
        if tree is None:
            self.error("not in a debug-mode actor tree")
            return
        for line in tree.procs():
            self.message(line)

    def do_exceptions(self, arg: str) -> None:
        """exceptions [N]
        In a post-mortem of an ExceptionGroup: list every leaf exception with
        the task that raised it; ``exceptions N`` shows leaf N's traceback.
        """
        if not self._pm_leaves:
            self.error("no exception group in this post-mortem")
            return
        key = arg.strip()
        if not key:
            for number, (exc, tb) in enumerate(self._pm_leaves):
                mark = ">" if number == self._pm_index else " "
                origin = _tasks.REGISTRY.task_for_traceback(tb)
                task = (
                    f"task {origin[1]!r} (t{origin[0]})" if origin else "task unknown"
                )
                self.message(f"{mark}{number:>3} {_one_line(exc)}  [{task}]")
            return
        try:
            number = int(key)
            exc, tb = self._pm_leaves[number]
        except (ValueError, IndexError):
            self.error(f"no leaf exception {key!r}; there are {len(self._pm_leaves)}")
            return
        self._pm_index = number
        stack = list(_frames.iter_traceback(tb))
        if not stack:
            self.error("that exception has no traceback")
            return
        self._home = None
        self._view_task = None
        self.tb_lineno.clear()
        for frame, lineno in stack:
            self.tb_lineno[frame] = lineno
        self.message(_one_line(exc))
        self._show_stack(stack, len(stack) - 1)

    def post_mortem_of(self, exc: BaseException) -> None:
        """Open a post-mortem REPL on *exc* (an exception group's leaves too)."""
        self.reset()
        self.stop_task = None
        self._post_mortem = True
        leaves = leaf_exceptions(exc)
        self._pm_leaves = leaves if isinstance(exc, BaseExceptionGroup) else []
        target = exc
        if self._pm_leaves:
            self._pm_index = 0
            target = leaves[0][0]
            count = len(leaves)
            self.stop_reason = (
                f"post-mortem of {type(exc).__name__} with {count} "
                f"exception{'s' if count != 1 else ''} (see 'exceptions')"
            )
        else:
            self._pm_index = None
            self.stop_reason = f"post-mortem of {_one_line(exc)}"
        origin = _tasks.REGISTRY.task_for_traceback(target.__traceback__)
        if origin is not None:
            self.stop_reason += f", raised in task {origin[1]!r} (t{origin[0]})"
        tb = target.__traceback__
        if tb is None:
            self.message(f"[dapper-trio] {self.stop_reason}: no traceback to inspect")
            return
        try:
            self.interaction(None, tb)
        finally:
            self._pm_leaves = []
            self._pm_index = None
            self._post_mortem = False
