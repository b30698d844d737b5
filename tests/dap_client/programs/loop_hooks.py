"""A busy trio program, then which instrument hooks its loop calls.

Starts three tasks and keeps the loop busy for ``argv[1]`` seconds (default
1): the tasks and the main task checkpoint and never sleep.  Then prints
``busy: HOOKS``, the hooks trio called halfway through (one listed there is
called at every turn of the loop).
"""

import sys
import time

import trio
from trio._core._run import GLOBAL_RUN_CONTEXT

BUSY = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


def hooks() -> str:
    names = GLOBAL_RUN_CONTEXT.runner.instruments
    return " ".join(sorted(name for name in names if name != "_all"))


async def spin(until: float) -> None:
    while time.monotonic() < until:
        await trio.lowlevel.checkpoint()


async def main() -> None:
    until = time.monotonic() + BUSY
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(spin, until)
        await spin(until - BUSY / 2)
        halfway = hooks()
        await spin(until)
    print(f"busy: {halfway}", flush=True)


trio.run(main)
