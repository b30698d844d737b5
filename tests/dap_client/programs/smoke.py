"""A tiny trio program for the DAP client smoke test: one task, one breakpoint."""

import trio


async def worker(numbers: list[int]) -> int:
    await trio.sleep(0)
    total = sum(numbers)  # mark: breakpoint
    return total


async def main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, [1, 2, 3], name="worker")
    print("smoke: done")


trio.run(main)
