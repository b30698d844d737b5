"""Start the debuggee process -- before trio is imported.

Subprocess mode pays for two Python start-ups: the supervisor's and the
debuggee's.  Run one after the other they cost twice the wait before the
first prompt; so ``dapper-trio run`` binds its listening socket and starts
the debuggee first, with nothing but the standard library, and only then
imports trio and the rest of the supervisor while the child starts up beside
it.  The child connects to the socket as soon as it is ready: the connection
waits in the listen backlog until the supervisor accepts it.

``dapper-trio run`` goes further and forks its debuggee (``fork=True``)
instead of executing a fresh interpreter: the child skips the interpreter's
start-up and the modules the supervisor has already imported, 40-50 ms of
every run here (benchmarks/overhead.py).  That is safe only because of where
it happens: no thread has started, trio is not imported, nothing has been
read from stdin nor left unflushed in stdout.  The child never returns to its
caller's code: it runs the program and raises SystemExit with its status, so
the interpreter ends the way it would after the program under plain python.
A supervisor that has started threads (a trio run: ``ExternalProcessBackend``
without a started debuggee, the DAP server) executes a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios

from ._records import record
from ._sockets import BoundSocket, bind_listening_socket, new_token
from ._targets import SESSION_ENV as SESSION_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal, NoReturn, Protocol

    class ChildProcess(Protocol):
        """What the supervisor uses of its child: ``subprocess.Popen``'s API."""

        @property
        def pid(self) -> int: ...
        @property
        def returncode(self) -> int | None: ...
        def poll(self) -> int | None: ...
        def wait(self, timeout: float | None = None) -> int: ...
        def terminate(self) -> None: ...
        def kill(self) -> None: ...


def debuggee_command() -> list[str]:
    """The command line of a debuggee process (same interpreter and flags)."""
    import subprocess

    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return [
        sys.executable,
        *flags,
        "-c",
        "from dapper_trio._debuggee import main; main()",
    ]


@record()
class StartedDebuggee:
    """A debuggee process and the listening socket it will connect to."""

    process: ChildProcess
    bound: BoundSocket
    token: str
    restore_terminal: Callable[[], None]

    def abort(self) -> None:
        """Kill and reap the child and remove the socket (supervision failed)."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        self.bound.close()
        self.restore_terminal()


def start_debuggee(
    *,
    transport: Literal["unix", "tcp"] = "unix",
    config: dict[str, Any] | None = None,
    fork: bool = False,
) -> StartedDebuggee:
    """Bind a listening socket and start a debuggee that will connect to it.

    The child starts with SIGINT ignored (an ignored signal stays ignored
    across exec), so a Ctrl-C during its start-up cannot kill it; it installs
    its own handler once ready -- unless SIGINT was already ignored here (a
    background job), in which case it keeps ignoring it, as python would.

    With *config* (what the supervisor answers to ``configure``) the child
    gets its configuration in its environment and starts the program at once,
    without waiting for this process to import trio and serve.

    With *fork*, the child is a fork of this process (see the module's
    docstring for when that is allowed); in the child this call does not
    return: it raises SystemExit once the program is over.  If this process
    has another thread by then (a sitecustomize started one), the child is
    executed as without *fork*: a fork would copy locks that thread holds.
    """
    restore_terminal = save_terminal()
    token = new_token()
    bound = bind_listening_socket(transport=transport)
    info: dict[str, Any] = {
        "address": str(bound.address),
        "token": token,
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
    }
    if config is not None:
        info["config"] = config
    try:
        child = _fork() if fork and _one_thread() else _exec_debuggee(info)
    except BaseException:
        bound.close()
        raise
    if isinstance(child, int):
        if child == 0:
            _become_debuggee(info, bound)
        child = ForkedProcess(child)
    return StartedDebuggee(child, bound, token, restore_terminal)


def _exec_debuggee(info: dict[str, Any]) -> ChildProcess:
    import json
    import subprocess

    env = dict(os.environ)
    env[SESSION_ENV] = json.dumps(info)
    return subprocess.Popen(debuggee_command(), env=env, preexec_fn=_ignore_sigint)


def _one_thread() -> bool:
    import threading

    return threading.active_count() == 1


def _fork() -> int:
    # Nothing buffered may be written twice, by both processes.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()
    return os.fork()


def _become_debuggee(info: dict[str, Any], bound: BoundSocket) -> NoReturn:
    # In the forked child.  Until the debuggee is running, any failure ends
    # the child at once: it must never go on as a second supervisor.
    try:
        _ignore_sigint()
        bound.release_in_child()
        from ._debuggee import run_debuggee
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
        os._exit(70)
    run_debuggee(info)


class ForkedProcess:
    """A forked child, with the part of ``subprocess.Popen``'s API we use.

    As with Popen, the child is reaped by ``wait`` or ``poll`` (waits are
    serialised by a lock), and a signal is only sent to a child that has
    not been reaped: its pid could belong to another process by then.
    """

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"

    def _reap(self, flags: int) -> int | None:
        # Called with the lock held.
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                # Reaped elsewhere (SIGCHLD ignored...): the status is lost.
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        """The returncode if the child has exited (reaping it), else None."""
        if not self._lock.acquire(blocking=False):
            return None  # another thread is in wait()
        try:
            return self._reap(os.WNOHANG)
        finally:
            self._lock.release()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit; return its returncode.

        With *timeout*, raises ``subprocess.TimeoutExpired`` if it has not.
        """
        if timeout is None:
            with self._lock:
                returncode = self._reap(0)
            assert returncode is not None
            return returncode
        import subprocess
        import time

        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            returncode = self.poll()
            if returncode is not None:
                return returncode
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout)
            delay = min(delay * 2, remaining, 0.05)
            time.sleep(delay)

    def send_signal(self, signum: int) -> None:
        """Send *signum* to the child, unless it has been reaped."""
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


def _ignore_sigint() -> None:
    # In the child, between fork and exec.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def save_terminal() -> Callable[[], None]:
    """Snapshot the terminal's settings; return a function putting them back.

    A child killed mid-REPL leaves the terminal in raw mode otherwise.
    termios.error is not an OSError: it is what a terminal that has gone away
    (the window was closed: EIO) raises.
    """
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    except (OSError, ValueError, termios.error):
        saved = None

    def restore() -> None:
        if saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore
