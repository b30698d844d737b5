"""Stepping workload: a long loop of simple lines inside a trio task.

The benchmark stops at the marked line (a breakpoint, since the debuggers
stop at the program's first line otherwise) and steps from there; nothing
awaits inside the loop, so ``next`` stays in the task for every step.
"""

import trio


async def main() -> int:
    total = 0  # mark: step here
    for number in range(10_000_000):
        total += number
    return total


print(trio.run(main))
