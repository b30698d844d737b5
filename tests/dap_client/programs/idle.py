"""A trio program that waits in trio.sleep until it is paused and continued."""

import trio


async def main() -> None:
    print("idle: ready", flush=True)
    await trio.sleep(3600)  # mark: sleep


trio.run(main)
