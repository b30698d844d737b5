"""Which frames belong to the user, and how to show a frame in one line.

The debugger never stops in, steps into, or shows by default the frames of
trio, outcome, dapper-trio itself and the machinery that runs a script (runpy,
importlib's bootstrap, pdb/pdbpp/bdb, the line editor).  One predicate decides
that for stepping and for display, cached per code object because the tracer
asks on every traced call.
"""

from __future__ import annotations

import dis
import os
import sys
import types
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

#: Modules (and their submodules) whose frames are hidden and never stepped into.
HIDDEN_MODULES: frozenset[str] = frozenset(
    {
        "trio",
        "outcome",
        "dapper_trio",
        "sniffio",
        "exceptiongroup",
        "attr",
        "attrs",
        "runpy",
        "importlib",
        "contextlib",
        "threading",
        "bdb",
        "pdb",
        "pdbpp",
        "_pdbpp_path_hack",
        "cmd",
        "pyrepl",
        "fancycompleter",
        "codecs",
        # Called by the interpreter, not by the program, with whatever user
        # frame is running as their f_back: weakref callbacks (trio's WeakSet
        # of async generators, the task registry's WeakKeyDictionary) when an
        # object dies, and ABCMeta's hooks (trio.Cancelled's metaclass is an
        # ABCMeta) when an exception is normalised or matched.
        "_weakrefset",
        "weakref",
        "abc",
    }
)

# Both caches are keyed by id(code) and keep the code object to check it:
# code objects compare and hash by value, without their file or module, so
# keying by the code itself would give a user function the verdict of an
# equal function in trio or the standard library.
_hidden_cache: dict[int, tuple[types.CodeType, bool]] = {}


def _module_is_hidden(module: str) -> bool:
    head = module.partition(".")[0]
    return head in HIDDEN_MODULES


def is_hidden_frame(frame: types.FrameType) -> bool:
    """True if *frame* belongs to trio, dapper-trio or script-running machinery."""
    code = frame.f_code
    cached = _hidden_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    filename = code.co_filename
    if filename.startswith(("<frozen ", "<attrs generated")):
        hidden = True
    else:
        module = frame.f_globals.get("__name__")
        hidden = isinstance(module, str) and _module_is_hidden(module)
    _hidden_cache[id(code)] = (code, hidden)
    return hidden


def _library_roots(search_path: Iterable[str]) -> tuple[str, ...]:
    import sysconfig  # here: ~2 ms of a debuggee's start-up otherwise

    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(os.path.realpath(sysconfig.get_paths()[key]))
        except KeyError:  # pragma: no cover
            pass
    for path in search_path:
        if path.endswith(("site-packages", "dist-packages")):
            roots.add(os.path.realpath(path))
    return tuple(sorted(roots))


#: sys.path as the debugger started: where installed packages are.
_STARTUP_PATH = tuple(sys.path)
_library_roots_found: tuple[str, ...] | None = None
_library_cache: dict[int, tuple[types.CodeType, bool]] = {}


def is_library_code(code: types.CodeType) -> bool:
    """True for code in the standard library or an installed package."""
    cached = _library_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    global _library_roots_found
    if _library_roots_found is None:
        _library_roots_found = _library_roots(_STARTUP_PATH)
    filename = code.co_filename
    result = filename.startswith("<") or os.path.realpath(filename).startswith(
        _library_roots_found
    )
    _library_cache[id(code)] = (code, result)
    return result


def is_step_target(frame: types.FrameType) -> bool:
    """True if stepping may stop in *frame*.

    Hidden frames never.  A library frame (stdlib, site-packages) is a target
    only if the program's own code called it, directly or through other
    library frames; if trio (hidden code) called it, it is trio's helper.
    """
    if is_hidden_frame(frame):
        return False
    node: types.FrameType | None = frame
    while node is not None and is_library_code(node.f_code):
        node = node.f_back
        if node is not None and is_hidden_frame(node):
            return False
    return True


def short_path(filename: str) -> str:
    """*filename* relative to the working directory when it is inside it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # pragma: no cover - different drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def describe_frame(frame: types.FrameType, lineno: int | None = None) -> str:
    """``file:line in function`` for *frame* (at *lineno* if given)."""
    line = frame.f_lineno if lineno is None else lineno
    return f"{short_path(frame.f_code.co_filename)}:{line} in {frame.f_code.co_name}"


def running_task_stack(
    frame: types.FrameType, task: trio.lowlevel.Task | None
) -> list[tuple[types.FrameType, int]]:
    """The frames of the task that is executing *frame*, outermost first.

    Walks ``f_back`` from *frame* and stops at the task's root coroutine frame,
    so frames of trio's scheduler and of whatever called ``trio.run`` are not
    part of a task's stack.  Outside a task, walks to the outermost frame.
    """
    root = task.coro.cr_frame if task is not None else None
    stack = []
    node: types.FrameType | None = frame
    while node is not None:
        stack.append((node, node.f_lineno))
        if node is root:
            break
        node = node.f_back
    stack.reverse()
    return stack


def suspended_task_stack(
    task: trio.lowlevel.Task,
) -> list[tuple[types.FrameType, int]]:
    """The await chain of a suspended task, outermost first."""
    return list(task.iter_await_frames())


def innermost_user_frame(
    stack: Iterable[tuple[types.FrameType, int]],
) -> tuple[types.FrameType, int] | None:
    """The last entry of *stack* whose frame is not hidden."""
    found = None
    for frame, lineno in stack:
        if not is_hidden_frame(frame):
            found = (frame, lineno)
    return found


def iter_traceback(
    tb: types.TracebackType | None,
) -> Iterator[tuple[types.FrameType, int]]:
    """(frame, lineno) for each entry of a traceback, outermost first."""
    while tb is not None:
        yield tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next


def is_coroutine_code(code: types.CodeType) -> bool:
    """True for coroutines, generators and async generators."""
    return bool(code.co_flags & _GENERATOR_FLAGS)


_GENERATOR_FLAGS = (
    0x20 | 0x80 | 0x100 | 0x200
)  # GENERATOR|COROUTINE|ITERABLE_COROUTINE|ASYNC_GENERATOR

# -- telling a suspension from a return, and a resumption from a call --------
#
# With sys.settrace, a coroutine that suspends at an ``await`` reports a
# 'return' event and reports a 'call' event when it resumes.  A debugger that
# follows one task must not mistake either for the real thing.  The opcode at
# f_lasti tells them apart (measured on 3.10-3.12, see docs/internals.md):
#   suspension: the frame stopped on YIELD_VALUE, or (3.10) just before a
#               YIELD_FROM, which 3.10 re-executes on resumption
#   resumption: 3.11+ stop on a RESUME whose oparg is not 0 (0 = function
#               start); on 3.10 a fresh frame has f_lasti == -1.

_YIELD_VALUE = dis.opmap["YIELD_VALUE"]
_YIELD_FROM = dis.opmap.get("YIELD_FROM")  # 3.10 only
_RESUME = dis.opmap.get("RESUME")  # 3.11+


def is_suspension(frame: types.FrameType) -> bool:
    """True if a 'return' event of *frame* is a yield/await suspension."""
    if not frame.f_code.co_flags & _GENERATOR_FLAGS:
        return False
    lasti = frame.f_lasti
    code = frame.f_code.co_code
    if not 0 <= lasti < len(code):
        return False
    if code[lasti] == _YIELD_VALUE:
        return True
    # 3.10's YIELD_FROM backs f_lasti up one instruction so that it re-runs
    # on resumption: the frame reports the instruction before it.
    return (
        _YIELD_FROM is not None
        and lasti + 2 < len(code)
        and code[lasti + 2] == _YIELD_FROM
    )


def is_resumption(frame: types.FrameType) -> bool:
    """True if a 'call' event of *frame* is a generator/coroutine resuming."""
    if not frame.f_code.co_flags & _GENERATOR_FLAGS:
        return False
    lasti = frame.f_lasti
    if _RESUME is None:  # 3.10
        return lasti >= 0
    code = frame.f_code.co_code
    if 0 <= lasti < len(code) - 1 and code[lasti] == _RESUME:
        return code[lasti + 1] != 0
    return lasti > 0


def is_own_frame(frame: types.FrameType) -> bool:
    """True for dapper-trio's own frames (not trio's)."""
    module = frame.f_globals.get("__name__")
    return isinstance(module, str) and module.partition(".")[0] == "dapper_trio"


def strip_own_frames(exc: BaseException) -> None:
    """Remove dapper-trio's frames from *exc*'s tracebacks, in place.

    The traceback a program ends with must be the program's own; the wrapper
    dapper-trio puts around ``trio.run`` is not part of it.  Causes, contexts
    and the leaves of exception groups are cleaned too.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.__traceback__ = _filtered(node.__traceback__)
        pending.extend(
            linked
            for linked in (node.__cause__, node.__context__)
            if linked is not None
        )
        pending.extend(getattr(node, "exceptions", ()))


def _filtered(tb: types.TracebackType | None) -> types.TracebackType | None:
    entries = []
    node = tb
    while node is not None:
        entries.append(node)
        node = node.tb_next
    kept = [entry for entry in entries if not is_own_frame(entry.tb_frame)]
    if len(kept) == len(entries):
        return tb
    if not kept:
        return None
    for current, following in zip(kept, [*kept[1:], None], strict=True):
        current.tb_next = following
    return kept[0]
