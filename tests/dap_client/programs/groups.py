"""A trio program whose two tasks fail: an ExceptionGroup nobody catches.

On the way, each task raises and catches a ValueError of its own.  The tasks
wait for each other in a shielded scope, so both fail whichever fails first.
"""

import trio


def parse(text: str) -> int:
    return int(text)  # mark: parse


async def fail(name: str, ready: trio.Event, arrived: list[str]) -> None:
    arrived.append(name)
    if len(arrived) == 2:
        ready.set()
    with trio.CancelScope(shield=True):
        await ready.wait()
    try:
        parse(name)
    except ValueError:
        pass  # mark: caught
    raise KeyError(name)  # mark: escape


async def main() -> None:
    ready = trio.Event()
    arrived: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail, "first", ready, arrived, name="first")
        nursery.start_soon(fail, "second", ready, arrived, name="second")


trio.run(main)
