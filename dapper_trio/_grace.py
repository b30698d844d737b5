"""Time limits whose clock stops while a process is in the debugger.

A supervisor gives a child a limited time to do something -- exit after
being asked to (the actor ladder's grace periods), end a call at shutdown,
answer a ping (the pool) -- and acts when the time is up.  A child stopped at
a breakpoint, or waiting for the terminal, must never be taken for a hung
one: so the clock runs only while no process of the child's subtree holds or
waits for the terminal (a ``SubtreeWatch``; outside debug mode it is never
busy), and starts again from zero once the REPLs are over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._tree_lock import SubtreeWatch


async def wait_within(
    watch: SubtreeWatch, seconds: float, done: Callable[[], Awaitable[object]]
) -> bool:
    """Wait for ``await done()`` up to *seconds*; True if it finished in time.

    The clock stops while *watch* is busy and starts again from zero when it
    is quiet.  Cancellation: cancels ``done()`` and propagates.
    """
    finished = False
    while True:
        await watch.wait_quiet()
        async with trio.open_nursery() as race:
            race.cancel_scope.deadline = trio.current_time() + seconds

            async def finish() -> None:
                nonlocal finished
                await done()
                finished = True
                race.cancel_scope.cancel()

            async def interrupt() -> None:
                await watch.wait_busy()
                race.cancel_scope.cancel()

            race.start_soon(finish)
            race.start_soon(interrupt)
        if finished or not watch.busy:
            return finished
