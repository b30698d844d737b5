"""Prints what a program sees of its environment, then exits with a status."""

import os
import sys

print("argv", sys.argv)
print("name", __name__)
print("path0", sys.path[0])
print("cwd", os.getcwd())
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
