"""Ctrl-C arrives while trio.run is still setting up (from a before_run hook).

Under the debugger that is a pause, like any other Ctrl-C; it used to reach
trio's own handler, which raised KeyboardInterrupt into the run.
"""

import os
import signal

import trio


class CtrlCAtStart:
    def before_run(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


async def main() -> None:
    await trio.sleep(0.1)
    print("survived the Ctrl-C", flush=True)


trio.run(main, instruments=[CtrlCAtStart()])
