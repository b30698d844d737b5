"""Two workers in a nursery; used by the terminal tests."""

import trio
import trio.lowlevel


async def worker(name, delay):
    total = 0
    for i in range(3):
        total += i  # mark: worker-body
        await trio.sleep(delay)  # mark: worker-sleep
    return total  # mark: worker-return


async def inner(x):
    y = x * 2  # mark: inner-first
    await trio.lowlevel.checkpoint()
    return y + 1  # mark: inner-return


async def chatter():
    for _ in range(200):
        await trio.lowlevel.checkpoint()


async def stepper():
    a = await inner(1)  # mark: stepper-first
    b = await inner(a)  # mark: stepper-second
    return b  # mark: stepper-return


async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, "a", 0.01, name="worker-a")
        nursery.start_soon(worker, "b", 0.02, name="worker-b")
        nursery.start_soon(chatter, name="chatter")
        result = await stepper()  # mark: main-stepper
    print("result", result)


if __name__ == "__main__":
    trio.run(main)
