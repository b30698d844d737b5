"""A trio task spinning in a hot loop; used by tests/test_tracing.py."""

import trio
import trio.lowlevel


async def spin(n):
    total = 0
    for i in range(n):
        total += i  # mark: hot-body
        if i % 1000 == 0:
            await trio.lowlevel.checkpoint()
    print("spun", total)


async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spin, 200_000, name="spinner")
    print("done")


if __name__ == "__main__":
    trio.run(main)
