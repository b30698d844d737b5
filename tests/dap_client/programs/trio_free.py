"""A program that never imports trio: says whether its debugger did; then,
given an argument, waits (a minute at most) to be paused or ended."""

import sys
import time


def tick() -> None:
    time.sleep(0.01)  # mark: tick


print(f"trio at start: {'trio' in sys.modules}", flush=True)
value = 6 * 7  # mark: stop
deadline = time.monotonic() + 60
while len(sys.argv) > 1 and time.monotonic() < deadline:  # mark: loop
    tick()
print("done", value, flush=True)
