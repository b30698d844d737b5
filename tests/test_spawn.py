"""``_spawn``: the forked debuggee's process handle, and what a fork inherits.

``dapper-trio run`` forks its debuggee (see ``dapper_trio._spawn``); the
supervisor then handles the child through ``ForkedProcess``, which must
behave as the ``subprocess.Popen`` it replaces.  The children here are
started with ``os.posix_spawn`` (no fork of the test process, which has
threads), or forked inside a fresh interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dapper_trio._spawn import ForkedProcess

pytestmark = pytest.mark.timeout(30)


def spawn_python(code: str) -> ForkedProcess:
    """A child python running *code*, handled by a ForkedProcess."""
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)
    return ForkedProcess(pid)


def test_wait_returns_the_exit_status() -> None:
    child = spawn_python("raise SystemExit(3)")
    assert child.wait() == 3
    assert child.returncode == 3
    assert child.poll() == 3  # reaped once; asked again, the same answer


def test_poll_is_none_while_running_and_signals_read_as_popen_does() -> None:
    child = spawn_python("import time; time.sleep(30)")
    try:
        assert child.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.2)
        assert child.returncode is None
        child.terminate()
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()


def test_kill_then_wait_and_no_signal_after_reaping() -> None:
    child = spawn_python("import time; time.sleep(30)")
    child.kill()
    assert child.wait() == -signal.SIGKILL
    # The pid may belong to another process by now: nothing is sent.
    child.kill()
    child.terminate()
    assert child.returncode == -signal.SIGKILL


def test_a_child_reaped_elsewhere_reads_as_exited() -> None:
    child = spawn_python("raise SystemExit(5)")
    os.waitpid(child.pid, 0)
    # The status went to the other waiter; as subprocess.Popen does, this
    # reports 0 rather than waiting forever or raising.
    assert child.wait() == 0


FORK_SCRIPT = """
import os, signal, sys
from dapper_trio import _sockets

bound = _sockets.bind_listening_socket(transport="unix")
path = bound.address.path
handler = signal.getsignal(signal.SIGTERM)
assert handler is _sockets._on_signal, handler
pid = os.fork()
if pid == 0:
    bound.release_in_child()
    ok = (
        bound.sock.fileno() == -1
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
        and os.path.exists(path)
    )
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
print("after the child: socket file exists", os.path.exists(path))
print("parent keeps its handler", signal.getsignal(signal.SIGTERM) is handler)
bound.close()
print("after close: socket file exists", os.path.exists(path))
"""


def test_forked_child_releases_the_socket_and_leaves_its_file() -> None:
    """The child closes its copy of the listening socket, does not remove the
    parent's socket file, and gets the default SIGTERM/SIGHUP actions back."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "child 0",
        "after the child: socket file exists True",
        "parent keeps its handler True",
        "after close: socket file exists False",
    ]


START_SCRIPT = """
import sys, threading
from dapper_trio._spawn import start_debuggee

stop = threading.Event()
if sys.argv[1] == "thread":
    threading.Thread(target=stop.wait).start()
started = start_debuggee(fork=True)
print(type(started.process).__name__, flush=True)
started.abort()
stop.set()
"""


@pytest.mark.parametrize(
    ("threads", "expected"), [("none", "ForkedProcess"), ("thread", "Popen")]
)
def test_fork_only_while_the_process_has_one_thread(
    threads: str, expected: str
) -> None:
    """start_debuggee(fork=True) forks only a single-threaded process; with
    another thread running, it executes a fresh interpreter instead."""
    done = subprocess.run(
        [sys.executable, "-c", START_SCRIPT, threads],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]
