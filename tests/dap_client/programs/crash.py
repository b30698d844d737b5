"""A trio program whose task raises an exception nobody catches."""

import trio


async def doomed() -> None:
    await trio.sleep(0)
    raise ValueError("boom")  # mark: raise


async def main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(doomed)


trio.run(main)
