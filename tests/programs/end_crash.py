"""A trio program that crashes with an uncaught exception in its main task."""

import trio
import trio.lowlevel


def check(value):
    if value > 2:
        raise RuntimeError(f"value {value} is too big")  # mark: raise
    return value


async def main():
    total = 0
    for value in range(5):
        total += check(value)
        await trio.lowlevel.checkpoint()


trio.run(main)
