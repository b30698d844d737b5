"""Ctrl-C arriving in trio's scheduler while a task is about to run.

SIGINT is raised from an instrument hook just before trio waits for I/O, while
the 'busy' task is runnable: the pause's idle-loop callback and the busy task
then run in the same batch, in trio's random order.  Every pause
must be served in the busy task's code, never on main as if the loop were idle.
"""

import signal

import trio

PAUSES = 20


class Poke(trio.abc.Instrument):
    def __init__(self):
        self.sent = 0
        self.armed = False

    def before_io_wait(self, timeout):
        if self.armed and self.sent < PAUSES:
            self.armed = False
            self.sent += 1
            signal.raise_signal(signal.SIGINT)


POKE = Poke()


async def busy():
    for step in range(PAUSES * 4):
        POKE.armed = step % 4 == 0
        value = step  # mark: busy-line
        await trio.lowlevel.checkpoint()
    return value


async def main():
    trio.lowlevel.add_instrument(POKE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy, name="busy")
    print("pauses sent", POKE.sent)


trio.run(main)
