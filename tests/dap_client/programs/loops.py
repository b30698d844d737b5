"""A trio program for conditions, hit counts, logpoints and stepping."""

import trio


async def count(n: int) -> int:
    total = 0
    for i in range(n):
        total += i  # mark: loop
    return total


async def helper(x: int) -> int:
    y = x * 2  # mark: helper
    return y


async def main() -> None:
    await trio.sleep(0)
    value = await helper(3)  # mark: call
    total = await count(5)  # mark: after
    print("loops:", value, total)


trio.run(main)
