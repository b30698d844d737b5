"""A module run with -m."""

import sys

print("module argv", sys.argv[1:])  # mark: module-first
print("module name", __name__)
