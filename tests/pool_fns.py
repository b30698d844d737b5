"""Async functions that tests/test_pool.py (and programs/pool_app.py) run in workers.

A worker imports them by module and qualified name; it finds this module
because a worker starts with its parent's ``sys.path``.  Files are how a test
sees what happened in a worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

import dapper_trio


async def double(x: int) -> int:
    """Return twice *x*."""
    await trio.lowlevel.checkpoint()
    return 2 * x


async def getpid() -> int:
    """The worker's pid."""
    return os.getpid()


async def fail(message: str) -> None:
    """Raise ValueError(message)."""
    await trio.lowlevel.checkpoint()
    raise ValueError(message)


async def sleep_for(seconds: float) -> int:
    """Sleep, then return the worker's pid."""
    await trio.sleep(seconds)
    return os.getpid()


async def spin(seconds: float) -> int:
    """Burn CPU (blocking the worker's loop) for *seconds*; return the pid."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


async def sleep_with_finally(directory: str, name: str) -> None:
    """Write ``<name>.started``, sleep forever; write ``<name>.finally`` on exit."""
    folder = Path(directory)
    try:
        (folder / f"{name}.started").write_text(str(os.getpid()))
        await trio.sleep_forever()
    finally:
        (folder / f"{name}.finally").write_text(str(os.getpid()))


async def block_loop_soon(seconds: float) -> int:
    """Return at once; a moment later, block this worker's loop for *seconds*.

    The worker is then idle as far as its pool knows, and stops answering.
    """

    async def block() -> None:
        await trio.sleep(0.05)
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point

    trio.lowlevel.spawn_system_task(block)
    return os.getpid()


async def init_fails_while(flag: str) -> None:
    """An initializer: raise while the file *flag* exists."""
    if await trio.Path(flag).exists():
        raise RuntimeError(f"no database today ({os.path.basename(flag)} exists)")


async def init_counted(directory: str, failures: int) -> None:
    """An initializer: count runs in *directory*; fail the first *failures*."""
    counter = Path(directory) / "init-count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= failures:
        raise RuntimeError(f"start {count} fails")


async def pause_soon(delay: float) -> int:
    """Return at once; *delay* seconds later, stop at a breakpoint (idle worker)."""

    async def later() -> None:
        await trio.sleep(delay)
        idle = "paused while idle"
        await dapper_trio.breakpoint()  # mark: idle-pause
        del idle

    trio.lowlevel.spawn_system_task(later)
    return os.getpid()


async def pause_in_call(label: str, then_sleep: float) -> str:
    """Stop at a breakpoint inside the call, sleep *then_sleep*, return *label*."""
    await dapper_trio.breakpoint()  # mark: call-pause
    await trio.sleep(then_sleep)
    return label
