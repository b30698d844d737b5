"""The calls a program makes: breakpoint(), set_trace(), post_mortem(), run(),
listen()."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ._engine import DebuggerQuit
from ._session import breakpoints_disabled, get_session, is_quit

T = TypeVar("T")

__tracebackhide__ = True


async def breakpoint() -> None:
    """Pause the program in the debugger REPL at the caller's line.

    The REPL opens at once, on the line that awaited this call, in the task
    that awaited it; the rest of the process waits while you are in it.  With
    ``PYTHONBREAKPOINT=0`` in the environment this is only a checkpoint.

    On cancellation: a pause you asked for is never swallowed.  Inside an
    already cancelled scope the REPL still opens; after you leave it, this call
    acts as a checkpoint and raises ``trio.Cancelled`` as any checkpoint would.
    If you quit the debugger (``q``), :exc:`DebuggerQuit` is raised from here
    and unwinds the whole run.
    """
    if not breakpoints_disabled():
        get_session().pause_here(sys._getframe(1), reason="breakpoint()")
    await trio.lowlevel.checkpoint()


def set_trace() -> None:
    """Pause in the debugger REPL at the caller's line (for sync code).

    Works in trio tasks, in sync functions they call, and in worker threads
    (``trio.to_thread.run_sync``); REPLs never interleave, one waits for the
    other.  ``PYTHONBREAKPOINT=dapper_trio.set_trace`` makes the builtin
    ``breakpoint()`` call this.  Raises :exc:`DebuggerQuit` if you quit.
    """
    if breakpoints_disabled():
        return
    get_session().pause_here(sys._getframe(1), reason="breakpoint()")


async def post_mortem(exc: BaseException | None = None) -> None:
    """Open a post-mortem REPL on *exc* (default: the exception being handled).

    For an ExceptionGroup, the REPL's ``exceptions`` command lists every leaf
    with the task that raised it.  Does nothing if there is no exception.

    On cancellation: the REPL opens regardless; afterwards this call is a
    checkpoint, so a cancelled scope raises ``trio.Cancelled`` from here.
    """
    if exc is None:
        exc = sys.exc_info()[1]
    if exc is not None and not breakpoints_disabled():
        post_mortem_sync(exc)
    await trio.lowlevel.checkpoint()


def post_mortem_sync(exc: BaseException) -> None:
    """Open a post-mortem REPL on *exc* from synchronous code."""
    session = get_session()
    if session.disabled:
        return
    session.debugger().post_mortem_of(exc)


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: Any,
    **trio_run_kwargs: Any,
) -> T:
    """``trio.run(async_fn, *args)`` with a post-mortem REPL if it crashes.

    If the run raises (anything but KeyboardInterrupt, SystemExit or the
    debugger quitting), a post-mortem REPL opens on the exception; when you
    leave it the exception propagates as it would have, so the program ends
    with its normal traceback and exit status.  Keyword arguments are passed
    to ``trio.run``; dapper-trio adds its instrument so tasks get short ids.
    """
    session = get_session()
    instruments = list(trio_run_kwargs.pop("instruments", ()))
    instruments.append(session.instrument)
    try:
        return trio.run(async_fn, *args, instruments=instruments, **trio_run_kwargs)
    except (KeyboardInterrupt, SystemExit, DebuggerQuit):
        raise
    except BaseException as exc:
        if not is_quit(exc, quit_requested=session.quit_requested) and not (
            breakpoints_disabled()
        ):
            post_mortem_sync(exc)
        raise
