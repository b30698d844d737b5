"""Prints what a program sees of its environment, then exits with a status."""

import os
import sys

main = sys.modules["__main__"]
print("argv", sys.argv)
print("name", __name__)
print("file", __file__)
print("code", sys._getframe().f_code.co_filename)
print("package", main.__package__)
print("loader", type(main.__loader__).__name__)
print("path0", sys.path[0])
print("cwd", os.getcwd())
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
