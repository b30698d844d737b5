"""Trio workload: many tasks passing items through memory channels.

``python channels.py N`` sends N items from 10 producers through two stages
of 10 workers each to one consumer, every hop a memory channel; the run is
dominated by trio's scheduler switching tasks.  Prints a checksum at the end.
"""

import sys

import _never  # noqa: F401  (holds the benchmark's breakpoint; never called)
import trio

PRODUCERS = WORKERS = 10


async def produce(send: trio.MemorySendChannel[int], start: int, count: int) -> None:
    async with send:
        for item in range(start, start + count):
            await send.send(item)


async def work(
    receive: trio.MemoryReceiveChannel[int], send: trio.MemorySendChannel[int]
) -> None:
    async with receive, send:
        async for item in receive:
            await send.send(item * 2 + 1)


async def consume(receive: trio.MemoryReceiveChannel[int], totals: list[int]) -> None:
    async with receive:
        async for item in receive:
            totals[0] += item
            totals[1] += 1


async def main(items: int) -> list[int]:
    totals = [0, 0]
    per_producer = items // PRODUCERS
    async with trio.open_nursery() as nursery:
        send0, receive0 = trio.open_memory_channel[int](0)
        send1, receive1 = trio.open_memory_channel[int](0)
        send2, receive2 = trio.open_memory_channel[int](0)
        async with send0, receive0, send1, receive1, send2, receive2:
            for index in range(PRODUCERS):
                nursery.start_soon(
                    produce, send0.clone(), index * per_producer, per_producer
                )
            for _ in range(WORKERS):
                nursery.start_soon(work, receive0.clone(), send1.clone())
                nursery.start_soon(work, receive1.clone(), send2.clone())
            nursery.start_soon(consume, receive2.clone(), totals)
    return totals


if __name__ == "__main__":
    total, count = trio.run(main, int(sys.argv[1]))
    print(f"workload done: {count} items, checksum {total}")
