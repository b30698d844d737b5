"""A trio app run with plain python that pauses itself with dapper_trio.breakpoint().

argv[1] picks the scenario: ``task`` (a named task pauses), ``cancelled`` (the
pause is inside an already cancelled scope) or ``quit`` (the pause is inside
try/finally blocks of two tasks, for q).
"""

import sys

import trio
import trio.lowlevel

import dapper_trio


async def asker():
    answer = 42
    await dapper_trio.breakpoint()  # mark: task-breakpoint
    print("asker resumed with", answer, flush=True)


async def cancelled():
    with trio.CancelScope() as scope:
        scope.cancel()
        await dapper_trio.breakpoint()  # mark: cancelled-breakpoint
        print("not reached", flush=True)
    print("cancelled_caught", scope.cancelled_caught, flush=True)


async def sleeper():
    try:
        await trio.sleep(1000)
    finally:
        print("sleeper finally ran", flush=True)


async def quitter():
    try:
        await dapper_trio.breakpoint()  # mark: quit-breakpoint
        print("not reached", flush=True)
    finally:
        print("quitter finally ran", flush=True)


async def main():
    scenario = sys.argv[1]
    async with trio.open_nursery() as nursery:
        if scenario == "task":
            nursery.start_soon(asker, name="asker")
        elif scenario == "cancelled":
            nursery.start_soon(cancelled, name="canceller")
        elif scenario == "quit":
            nursery.start_soon(sleeper, name="sleeper")
            await trio.lowlevel.checkpoint()
            nursery.start_soon(quitter, name="quitter")
    print("main done", flush=True)


trio.run(main)
