"""Post-mortems from a trio app run with plain python.

``handled``: ``await dapper_trio.post_mortem()`` in an except block, then the
program goes on.  ``group``: ``dapper_trio.run(main)`` where main's nursery
fails with an ExceptionGroup of three leaves.
"""

import sys

import trio

import dapper_trio


def parse(text):
    return int(text)  # mark: parse


async def handled():
    try:
        parse("forty-two")
    except ValueError:
        await dapper_trio.post_mortem()
    print("handled, going on", flush=True)


async def fail(n):
    # No checkpoint before raising: all three fail in their first step.
    raise ValueError(f"failure {n}")  # mark: raise


async def group():
    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(fail, n, name=f"failer-{n}")


if sys.argv[1] == "handled":
    trio.run(handled)
else:
    dapper_trio.run(group)
