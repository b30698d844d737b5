"""A program without trio: output on both streams, in order."""

import sys

print("first: stdout")  # mark: first
print("second: stderr", file=sys.stderr)
print("third: stdout")
sys.exit(3)
