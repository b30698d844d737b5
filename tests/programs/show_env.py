"""Prints what a program sees of its environment, then exits with a status.

On the way out, a non-daemon thread and an atexit handler print: the
interpreter must end as it does under plain python.
"""

import atexit
import os
import signal
import sys
import threading
import time

main = sys.modules["__main__"]
print("argv", sys.argv)
print("name", __name__)
print("file", __file__)
print("code", sys._getframe().f_code.co_filename)
print("package", main.__package__)
print("loader", type(main.__loader__).__name__)
print("path0", sys.path[0])
print("cwd", os.getcwd())
print("sigterm", signal.getsignal(signal.SIGTERM))
print("sighup", signal.getsignal(signal.SIGHUP))


def late() -> None:
    time.sleep(0.2)
    print("thread: joined before exit", flush=True)


# The interpreter's own end: non-daemon threads joined, then atexit handlers.
threading.Thread(target=late).start()
atexit.register(print, "atexit: ran at exit")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
