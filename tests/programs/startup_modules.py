"""Prints what a program finds loaded at its first line, and its parent."""

import os
import sys

print("argparse loaded", "argparse" in sys.modules)
print("tempfile loaded", "tempfile" in sys.modules)
print("parent", os.getppid())
