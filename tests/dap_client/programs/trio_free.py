"""A program that never imports trio: says whether its debugger did, then
counts until it is told to stop (a file) or for a minute."""

import sys
import time

print(f"trio at start: {'trio' in sys.modules}", flush=True)
value = 6 * 7  # mark: stop
deadline = time.monotonic() + 60
while len(sys.argv) > 1 and time.monotonic() < deadline:
    time.sleep(0.01)  # mark: loop
print("done", value, flush=True)
