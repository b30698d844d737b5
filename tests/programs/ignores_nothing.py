"""Counts Ctrl-C presses it survives; used with SIGINT ignored at start."""

import time

print("started", flush=True)
time.sleep(1.5)
print("survived", flush=True)
