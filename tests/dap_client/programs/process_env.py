"""Prints what a launched program sees of its process, as one JSON line.

``dapper-trio dap`` runs a launch either in the spare debuggee it forked at
start-up or in a fresh interpreter; the program must not be able to tell,
apart from ``sys.orig_argv`` and a few modules already imported.  The line
is ``process: {...}``; file descriptors are listed with what they point at.
"""

import json
import os
import signal
import stat
import sys


def fd_targets() -> dict[str, str]:
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return targets


def unbuffered(stream: object) -> bool:
    return bool(getattr(stream, "write_through", False)) and not hasattr(
        getattr(stream, "buffer", None), "raw"
    )


stdin = os.fstat(0)
seen = {
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "session leader": os.getsid(0) == os.getpid(),
    "stdin is /dev/null": stat.S_ISCHR(stdin.st_mode)
    and stdin.st_rdev == os.stat(os.devnull).st_rdev,
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "path0": sys.path[0],
    "env": {
        name: os.environ.get(name)
        for name in ("PROCESS_ENV_MARK", "PYTHONUNBUFFERED", "DAPPER_TRIO_DAP_ADAPTER")
    },
    "sigint": getattr(signal.getsignal(signal.SIGINT), "__name__", "?"),
    "sigterm": str(signal.getsignal(signal.SIGTERM)),
    "stdout unbuffered": unbuffered(sys.__stdout__),
    "stderr unbuffered": unbuffered(sys.__stderr__),
    "fds": fd_targets(),
    "orig_argv": sys.orig_argv,
    # The spare is forked before the adapter parses its command line.
    "argparse loaded": "argparse" in sys.modules,
}
# One write: sys.stdout's output events and fd 1's pipe are two channels, and
# an unbuffered print() writes each argument and the end of line apart, so
# the next line could land between them.
sys.stdout.write("process: " + json.dumps(seen) + "\n")
sys.stdout.flush()
os.write(1, b"straight to fd 1\n")
