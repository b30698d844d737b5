"""A trio program with a pause of its own, run with no terminal; exits with 3."""

import sys

import trio
import trio.lowlevel

import dapper_trio


async def main():
    total = 0
    for n in range(3):
        total += n  # mark: loop-body
        await trio.lowlevel.checkpoint()
    await dapper_trio.breakpoint()  # mark: breakpoint
    print("total", total, flush=True)
    sys.exit(3)


trio.run(main)
