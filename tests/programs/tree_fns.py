"""Async functions the tree_*.py programs run in child actors (debug mode)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

import dapper_trio


async def pause(label: str) -> str:
    """Print, stop at ``await dapper_trio.breakpoint()``, print again."""
    print(f"{label} before", flush=True)
    await dapper_trio.breakpoint()  # mark: pause
    print(f"{label} after", flush=True)
    return label


async def pause_sync(label: str) -> str:
    """Stop at the builtin ``breakpoint()`` (PYTHONBREAKPOINT=dapper_trio.set_trace)."""
    here = f"{label} sync"
    breakpoint()  # mark: pause-sync
    return here


async def nest_pause(depth: int, label: str) -> str:
    """At depth 0 pause; else run nest_pause one level down in a child."""
    if depth == 0:
        return await pause(label)
    async with dapper_trio.open_actor_nursery() as an:
        return await an.run_in_actor(nest_pause, depth - 1, label, name=f"level{depth}")


async def fail(message: str) -> None:
    """Raise ValueError(message)."""
    secret = f"the secret is {message}"
    await trio.lowlevel.checkpoint()
    raise ValueError(secret)  # mark: fail


async def nest_fail(depth: int, message: str) -> None:
    """At depth 0 fail; else run nest_fail one level down in a child."""
    if depth == 0:
        await fail(message)
        return
    async with dapper_trio.open_actor_nursery() as an:
        await an.run_in_actor(nest_fail, depth - 1, message, name=f"level{depth}")


async def chatter(label: str, count: int) -> None:
    """Print *count* numbered lines, a few ms apart."""
    for i in range(count):
        print(f"{label} says {i}", flush=True)
        await trio.sleep(0.02)


async def pause_with_finally(label: str, flag: str = "") -> None:
    """Pause, then sleep forever; print when the finally block runs.

    With *flag*, create that file just before pausing.
    """
    try:
        if flag:
            await trio.Path(flag).write_text(str(os.getpid()))
        await pause(label)
        await trio.sleep_forever()
    finally:
        print(f"{label} finally ran", file=sys.stderr, flush=True)


HERE = Path(__file__).resolve().parent


async def run_script(script: str) -> int:
    """Run ``python SCRIPT`` (a file next to this one) with trio.run_process."""
    process = await trio.run_process([sys.executable, str(HERE / script)], check=False)
    return process.returncode
