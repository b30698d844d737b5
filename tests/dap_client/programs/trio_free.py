"""A program that never imports trio: says whether its debugger did; then,
given an argument, waits (a minute at most) to be paused or ended."""

import sys
import time

print(f"trio at start: {'trio' in sys.modules}", flush=True)
value = 6 * 7  # mark: stop
deadline = time.monotonic() + 60
while len(sys.argv) > 1 and time.monotonic() < deadline:
    time.sleep(0.01)  # mark: loop
print("done", value, flush=True)
