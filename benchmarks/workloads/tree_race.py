"""``tree_race.py N``: N child actors (debug mode) each hit one breakpoint."""

import functools
import sys

import trio

import dapper_trio


async def racer(i: int) -> int:
    await dapper_trio.breakpoint()
    return i


async def main() -> None:
    count = int(sys.argv[1])
    async with (
        dapper_trio.open_actor_nursery(debug_mode=True) as an,
        trio.open_nursery() as nursery,
    ):
        for i in range(count):
            start = functools.partial(an.run_in_actor, name=f"racer{i}")
            nursery.start_soon(start, racer, i)
    print(f"served {count}", flush=True)


if __name__ == "__main__":
    trio.run(main)
