"""Which trio instrument hooks the program's loop calls, as tasks come and go.

Prints ``starting: HOOKS`` right after starting three tasks (their ``thread``
events wait to be sent) and ``idle: HOOKS`` after the loop has slept with
nothing waiting.  A hook listed there is called at every turn of the loop.
"""

import trio
from trio._core._run import GLOBAL_RUN_CONTEXT


def hooks() -> str:
    names = GLOBAL_RUN_CONTEXT.runner.instruments
    return " ".join(sorted(name for name in names if name != "_all"))


async def main() -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(trio.sleep, 0.01)
        print(f"starting: {hooks()}", flush=True)
    await trio.sleep(0.2)
    print(f"idle: {hooks()}", flush=True)


trio.run(main)
