"""Async functions that tests/test_actors.py runs in child actor processes.

A child imports them by module and qualified name; it finds this module
because a child starts with its parent's ``sys.path`` (pytest puts tests/ on
it).  Files written here are how a test sees what happened in a child, in
particular that its ``finally`` blocks ran.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import trio

from dapper_trio._actors import current_actor, open_actor_nursery

_calls = 0


async def double(x: int) -> int:
    """Return twice *x*."""
    await trio.lowlevel.checkpoint()
    return 2 * x


async def echo(value: object) -> object:
    """Return *value* unchanged (after a round trip through pickle)."""
    return value


async def whoami() -> dict[str, Any]:
    """This actor's identity, as plain data."""
    actor = current_actor()
    return {
        "name": actor.name,
        "pid": actor.pid,
        "path": list(actor.path),
        "parent_path": list(actor.parent_path),
        "debug_mode": actor.debug_mode,
        "crash_repl": actor.crash_repl,
        "os_pid": os.getpid(),
    }


async def count_calls() -> tuple[int, int]:
    """How many times this was called in this process, and the pid."""
    global _calls
    _calls += 1
    mine = _calls
    await trio.sleep(0.001)  # calls overlap
    return mine, os.getpid()


async def nest(depth: int) -> list[str]:
    """At depth 0 return this actor's path; else ask a child to nest deeper."""
    if depth == 0:
        return list(current_actor().path)
    async with open_actor_nursery() as an:
        return await an.run_in_actor(nest, depth - 1, name=f"level{depth - 1}")


async def fail(message: str) -> None:
    """Raise ValueError(message)."""
    await trio.lowlevel.checkpoint()
    raise ValueError(message)  # mark: raise


async def fail_after(delay: float, message: str) -> None:
    """Sleep *delay* seconds, then raise ValueError(message)."""
    await trio.sleep(delay)
    raise ValueError(message)


async def middle_fails(message: str) -> None:
    """Run fail(message) in a child named "leaf" (the error is relayed)."""
    async with open_actor_nursery() as an:
        await an.run_in_actor(fail, message, name="leaf")


async def exit_now(code: int) -> None:
    """End this process at once with *code*, no cleanup."""
    os._exit(code)


async def sleep_with_finally(directory: str) -> None:
    """Write ``started`` (with the pid), sleep forever; write ``finally`` on exit."""
    folder = Path(directory)
    try:
        (folder / "started").write_text(str(os.getpid()))
        await trio.sleep_forever()
    finally:
        (folder / "finally").write_text(str(os.getpid()))


async def fail_while_unwinding(directory: str) -> None:
    """Sleep forever; when cancelled, raise RuntimeError from ``finally``."""
    try:
        (Path(directory) / "started").write_text(str(os.getpid()))
        await trio.sleep_forever()
    finally:
        raise RuntimeError("cleanup failed")


async def stubborn(directory: str, ignore_sigterm: bool) -> None:
    """Ignore cancellation (and SIGTERM if asked) forever."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (Path(directory) / "started").write_text(str(os.getpid()))
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()


async def middle_with_sleeping_child(directory: str) -> None:
    """Run sleep_with_finally(directory) in a child named "grandchild"."""
    async with open_actor_nursery(grace_period=0.5) as an:
        await an.run_in_actor(sleep_with_finally, directory, name="grandchild")


async def lock() -> threading.Lock:
    """Return something that cannot be pickled."""
    return threading.Lock()


async def settings_two_levels_down() -> dict[str, Any]:
    """Open a default nursery here; report its settings and a child's identity."""
    async with open_actor_nursery() as an:
        return {
            "nursery": [an.debug_mode, an.crash_repl],
            "grandchild": await an.run_in_actor(whoami, name="grandchild"),
        }
