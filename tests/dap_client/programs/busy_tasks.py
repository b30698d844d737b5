"""A busy trio program: 30 tasks that never sleep, then how often the DAP
agent thread woke up meanwhile.

The tasks starting post 30 ``thread`` events; sending them must wait for the
program to pause, idle or end: an agent thread woken while the program runs
fights it for the GIL (thousands of context switches, tenths of a second).
It prints ``agent woke N times`` (voluntary context switches of the agent
thread while the tasks ran), or ``no agent``.

With a path argument it first idles until that file exists: the test makes
it once the agent's start-up exchange with the adapter is over (its answer
to ``configure`` also wakes the agent, once; on a busy program that one
wake-up can cost tens of context switches, which is not what is counted).
"""

import os
import sys
import threading

import trio

AGENT = "dapper-trio dap agent"


def agent_switches() -> int | None:
    for thread in threading.enumerate():
        if thread.name == AGENT:
            with open(f"/proc/self/task/{thread.native_id}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches:"):
                        return int(line.split()[1])
    return None


async def spin(steps: int) -> None:
    for _ in range(steps):
        await trio.lowlevel.checkpoint()


async def main() -> None:
    if len(sys.argv) > 1:
        while not os.path.exists(sys.argv[1]):  # noqa: ASYNC240 (a stat, idling)
            await trio.sleep(0.01)
    before = agent_switches()
    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(spin, 3000)
    after = agent_switches()
    if before is None or after is None:
        print("no agent", flush=True)
    else:
        print(f"agent woke {after - before} times", flush=True)


trio.run(main)
