"""A trio program that mostly waits: idle loop, a spinning task on request."""

import sys
import time

import trio
import trio.lowlevel


async def spinner():
    n = 0
    while True:
        n += 1  # mark: spin
        if n % 10000 == 0:
            await trio.lowlevel.checkpoint()


async def sleeper():
    try:
        await trio.sleep(1000)  # mark: sleep
    finally:
        print("sleeper finally ran")


async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, name="sleeper")
        print("running", flush=True)
        if "spin" in sys.argv[1:]:
            nursery.start_soon(spinner, name="spinner")
        if "block" in sys.argv[1:]:
            print("blocking", flush=True)
            time.sleep(1000)  # mark: block


if __name__ == "__main__":
    trio.run(main)
