"""A small trio pipeline with a bug, to try dapper-trio on.

A producer sends numbers through a memory channel to two workers, which add
them up.  The total should be 4950 (0 + 1 + ... + 99) but is not: run it
under the debugger to see why.

    dapper-trio run examples/pipeline.py
"""

import trio
import trio.lowlevel


async def producer(send_channel):
    async with send_channel:
        for number in range(100):
            await send_channel.send(number)


async def worker(name, receive_channel, totals):
    async with receive_channel:
        async for number in receive_channel:
            if number % 10 == 9:
                continue  # the bug: skips every number ending in 9
            totals[name] = totals.get(name, 0) + number
            await trio.lowlevel.checkpoint()


async def main():
    totals = {}
    send_channel, receive_channel = trio.open_memory_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer, send_channel, name="producer")
        for name in ("worker-1", "worker-2"):
            nursery.start_soon(worker, name, receive_channel.clone(), totals, name=name)
        await receive_channel.aclose()
    print("total:", sum(totals.values()), "(expected 4950)")


if __name__ == "__main__":
    trio.run(main)
