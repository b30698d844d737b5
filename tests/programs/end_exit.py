"""A trio program that ends with sys.exit(5) from its main task."""

import sys

import trio


async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0.01)
    print("exiting with 5", flush=True)
    sys.exit(5)


trio.run(main)
