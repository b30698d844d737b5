"""Three tasks fail at once: an ExceptionGroup with three leaves."""

import trio


async def fail(n):
    # No checkpoint before raising: all three fail in their first step, before
    # the nursery can cancel the others.
    raise ValueError(f"failure {n}")  # mark: raise


async def main():
    try:
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(fail, n, name=f"failer-{n}")
    finally:
        print("main finally ran")


trio.run(main)
