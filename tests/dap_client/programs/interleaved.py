"""A program without trio: many lines on both streams, interleaved."""

import sys

for i in range(100):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
print("done", flush=True)
