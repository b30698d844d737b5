"""A trio program that an editor can attach to: it calls dapper_trio.listen().

``listener.py [TOKEN|-] [tcp|unix] [wait]``: with ``wait`` it returns from
listen() only once a client has attached (the attach arguments are then only
in the announcement on stderr), else it prints them as one JSON line on
stdout at once.  Either way it prints "listener: attached" when listen()
returns, and its ticker runs for a minute.
"""

import json
import sys

import trio

import dapper_trio


async def ticker(limit: float) -> None:
    count = 0
    while trio.current_time() < limit:
        count += 1  # mark: tick
        await trio.sleep(0.02)


async def main() -> None:
    token = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None
    transport = sys.argv[2] if len(sys.argv) > 2 else "tcp"
    wait = sys.argv[3:4] == ["wait"]
    info = await dapper_trio.listen(
        token=token, transport=transport, wait_for_client=wait, announce=wait
    )
    if not wait:
        print(json.dumps(info.attach_arguments()), flush=True)
    print("listener: attached" if wait else "listener: listening", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker, trio.current_time() + 60, name="ticker")
    print("listener: done")


trio.run(main)
