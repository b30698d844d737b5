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

from dapper_trio._spawn import ForkedProcess, startup_variables

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


def run_script(code: str, *args: str) -> list[str]:
    """Run *code* in a fresh python (it may fork); the lines it printed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


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
    assert run_script(START_SCRIPT, threads) == [expected]


#: The cases both kinds of spare share (a script's ``spare`` and ``case``).
COMMON_CASES = """\
if spare is None:
    print("no spare")
elif case == "discard":
    spare.discard()
    print("reaped", spare.process.returncode == -signal.SIGKILL)
    spare.discard()  # again: nothing more to do
    print("twice", spare.process.returncode == -signal.SIGKILL)
"""


def with_common_cases(script: str) -> str:
    return script.replace("{COMMON_CASES}", COMMON_CASES)


# -- the spare debuggee of ``dapper-trio dap`` ----------------------------------------

SPARE_SCRIPT = """
import os, signal, sys, threading
from dapper_trio._spawn import fork_spare

case = sys.argv[1]
stop = threading.Event()
if case == "thread":
    threading.Thread(target=stop.wait).start()


def preload():
    # One write of a whole line: the spare may be killed at any moment.
    os.write(1, f"preloaded in {os.getpid() != parent}\\n".encode())


spare = fork_spare(preload)
parent = os.getpid()
{COMMON_CASES}elif case == "dead":
    os.kill(spare.pid, signal.SIGKILL)
    spare.process.wait()
    try:
        spare.hand_over(cwd="/", env={}, info={})
    except OSError as exc:
        print("hand_over:", type(exc).__name__)
    spare.discard()
    print("reaped", spare.process.returncode == -signal.SIGKILL)
stop.set()
"""


def run_spare_script(case: str) -> list[str]:
    return run_script(with_common_cases(SPARE_SCRIPT), case)


def test_an_unused_spare_is_ended_and_reaped() -> None:
    """discard() kills the idle spare and reaps it; twice is harmless."""
    lines = run_spare_script("discard")
    assert lines[-2:] == ["reaped True", "twice True"]


def test_handing_over_to_a_dead_spare_fails_cleanly() -> None:
    """A spare that died: hand_over raises OSError (a fresh process will do)."""
    lines = run_spare_script("dead")
    assert lines[-2:] == ["hand_over: BrokenPipeError", "reaped True"]


def test_no_spare_while_another_thread_runs() -> None:
    """fork_spare forks only a single-threaded process."""
    assert run_spare_script("thread") == ["no spare"]


# -- the spare debuggee of ``dapper-trio run`` -----------------------------------------

TERMINAL_SPARE_SCRIPT = """
import os, signal, sys, threading
from dapper_trio._spawn import fork_terminal_spare, start_debuggee

case = sys.argv[1]
stop = threading.Event()
if case == "thread":
    threading.Thread(target=stop.wait).start()
parent = os.getpid()


def preload():
    # One write of whole lines: the "dead" case kills the spare at any
    # moment, and half a line would run into the parent's next one.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    os.write(
        1,
        f"preloaded in the child {os.getpid() != parent}\\n"
        f"SIGINT ignored {ignored}\\n"
        f"same process group {os.getpgid(0) == os.getpgid(parent)}\\n".encode(),
    )


spare = fork_terminal_spare(preload)
{COMMON_CASES}elif case == "parent gone":
    # The supervisor ended without a word (its end of the pipe closed, as
    # when it dies): the spare ends by itself, having run nothing.
    os.close(spare._control)
    spare._control = None
    print("status", spare.process.wait(timeout=20))
elif case == "dead":
    os.kill(spare.process.pid, signal.SIGKILL)
    spare.process.wait()
    try:
        spare.start({})
    except OSError as exc:
        print("start:", type(exc).__name__)
    # start_debuggee does without it: a plain fork, as before spares.
    started = start_debuggee(fork=True, spare=spare)
    other = started.process is not spare.process
    print("started", type(started.process).__name__, other)
    started.abort()
stop.set()
"""


def run_terminal_spare_script(case: str) -> list[str]:
    return run_script(with_common_cases(TERMINAL_SPARE_SCRIPT), case)


def test_the_terminal_spare_preloads_in_the_terminal_s_process_group() -> None:
    """It imports in a child that ignores SIGINT and keeps the process group."""
    lines = run_terminal_spare_script("parent gone")
    assert sorted(lines[:3]) == [
        "SIGINT ignored True",
        "preloaded in the child True",
        "same process group True",
    ]


def test_an_unused_terminal_spare_is_ended_and_reaped() -> None:
    """discard() kills the spare (it ran nothing) and reaps it; twice is harmless."""
    lines = run_terminal_spare_script("discard")
    assert lines[-2:] == ["reaped True", "twice True"]


def test_a_terminal_spare_whose_supervisor_is_gone_ends_by_itself() -> None:
    """No hand-over ever comes: the spare exits 0 once it has preloaded."""
    assert run_terminal_spare_script("parent gone")[-1] == "status 0"


def test_a_dead_terminal_spare_is_replaced_by_a_fork() -> None:
    """start() on a dead spare raises OSError; start_debuggee forks instead."""
    lines = run_terminal_spare_script("dead")
    assert lines[-2:] == ["start: BrokenPipeError", "started ForkedProcess True"]


def test_no_terminal_spare_while_another_thread_runs() -> None:
    """fork_terminal_spare forks only a single-threaded process."""
    assert run_terminal_spare_script("thread") == ["no spare"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MY_SETTING": "1", "PATH": "/bin"}, []),
        (
            {"PYTHONPATH": "x", "LC_ALL": "C", "LANG": None},
            ["LANG", "LC_ALL", "PYTHONPATH"],
        ),
        (
            {"HOME": "/tmp", "TZ": "UTC", "LD_PRELOAD": "x"},
            ["HOME", "LD_PRELOAD", "TZ"],
        ),
    ],
)
def test_startup_variables_need_a_fresh_interpreter(
    env: dict[str, str | None], expected: list[str]
) -> None:
    """Variables read at the interpreter's start-up, set or unset, are named."""
    assert startup_variables(env) == expected
