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

And it forks earlier still: first thing, before it has imported argparse or
parsed its command line (``fork_terminal_spare``).  The child makes the
debuggee's imports (pdbpp, the tracer, the lock service) while the parent
parses, resolves the target and binds the socket; ``start_debuggee`` then
hands it, over a pipe, what a child forked there would have found.  Those
imports, not the parent's, are the way to the program's first line, so
the parent's start-up no longer adds to them (~10 ms sooner here).  A
command that runs no debuggee (``--help``, an error, ``--in-process``,
``--listen``) kills the spare: it has run nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios

from ._records import record
from ._targets import SESSION_ENV as SESSION_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Literal, NoReturn, Protocol

    from ._sockets import BoundSocket

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
    spare: TerminalSpare | None = None,
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

    With a *spare* (``fork_terminal_spare``, forked before this process
    parsed its command line), the spare is the debuggee: it is handed what
    a forked child would have found, and has made its imports meanwhile.
    If it has gone, the child is started as without it.
    """
    # (Imported here: ``fork_spare`` needs none of it, and ``dapper-trio dap``
    # forks its spare before anything it can do without is imported.)
    from ._sockets import bind_listening_socket, new_token

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
    if spare is not None:
        try:
            started = spare.start(info)
        except OSError:
            spare.discard()
        else:
            return StartedDebuggee(started, bound, token, restore_terminal)
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


# -- a spare debuggee for ``dapper-trio dap`` ----------------------------------------


#: Variables a launch's ``env`` may not set (or unset) for the spare to serve
#: it: the interpreter, ``site`` or the C library read them at start-up, so
#: only a fresh interpreter honours them.
def fork_terminal_spare(preload: Callable[[], object]) -> TerminalSpare | None:
    """Fork the debuggee of ``dapper-trio run`` before anything else is done.

    ``dapper-trio run`` calls this first thing, before it imports argparse
    and parses its command line: the child makes the debuggee's imports
    (*preload*) while this process parses, resolves the target and binds
    the socket, then ``start_debuggee`` hands it what a child forked there
    would have found.  It stays in this process's session and process group
    with its standard streams (the program's terminal), and ignores SIGINT
    until it is running the program, as a forked debuggee does.

    Returns None where a fork is not safe (another thread runs) or possible.
    In the child this call does not return: it runs the program and raises
    SystemExit with its status, or, let go (``TerminalSpare.discard``, or
    this process ended), exits at once.
    """
    if not hasattr(os, "fork") or not _one_thread():
        return None
    control_read, control_write = os.pipe()
    try:
        pid = _fork()
    except OSError:
        os.close(control_read)
        os.close(control_write)
        return None
    if pid == 0:
        _be_terminal_spare(control_read, control_write, preload)
    os.close(control_read)
    return TerminalSpare(ForkedProcess(pid), control_write)


class TerminalSpare:
    """This process's handle on the spare of ``fork_terminal_spare``."""

    def __init__(self, process: ForkedProcess, control: int) -> None:
        self.process = process
        self._control: int | None = control
        self._started = False

    def start(self, info: Mapping[str, Any]) -> ForkedProcess:
        """Make the spare the debuggee of *info* (``start_debuggee``'s).

        OSError if the spare is gone.
        """
        control = self._control
        if control is None:
            raise OSError("the spare debuggee was already used or discarded")
        self._control = None
        import json

        with open(control, "wb", closefd=True) as pipe:
            pipe.write(json.dumps(dict(info)).encode())
        self._started = True
        return self.process

    def discard(self) -> None:
        """End and reap the spare unless it was started (then it is not ours)."""
        if self._control is not None:
            os.close(self._control)
            self._control = None
        if not self._started:
            self._started = True  # once
            # It has run nothing of the user's: nothing is lost.
            self.process.kill()
            self.process.wait()


def _be_terminal_spare(
    control: int, other_end: int, preload: Callable[[], object]
) -> NoReturn:
    # In the forked child.  Until the program runs, any failure ends the
    # child at once: it must never go on as a second supervisor.
    try:
        _ignore_sigint()
        os.close(other_end)
        preload()
        info = _wait_for_hand_over(control)  # (none: not to run a debuggee)
        from ._debuggee import run_debuggee
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
        os._exit(70)
    run_debuggee(info)


STARTUP_ENV_PREFIXES = ("PYTHON", "LC_", "LD_")
STARTUP_ENV_NAMES = frozenset({"LANG", "LANGUAGE", "TZ", "HOME"})


def startup_variables(env: Mapping[str, object]) -> list[str]:
    """The names in *env* that only a fresh interpreter would honour."""
    return sorted(
        name
        for name in env
        if name.startswith(STARTUP_ENV_PREFIXES) or name in STARTUP_ENV_NAMES
    )


def fork_spare(preload: Callable[[], object]) -> SpareDebuggee | None:
    """Fork a spare debuggee: a process that waits for a launch to run.

    ``dapper-trio dap`` calls this first thing (no trio imported, no thread,
    nothing read from stdin), so that the program a client launches later
    skips the interpreter's start-up and the imports: the spare makes them
    (*preload*: the debugger, without trio) while the adapter answers the
    client (``_dap_early``) and imports trio beside it.
    Returns None where that is not safe (another thread runs) or possible.

    In the child this call does not return: once handed a launch (see
    ``SpareDebuggee.hand_over``) it runs the program and raises SystemExit
    with its status; if the adapter lets it go, it exits at once.  It is the
    leader of a session of its own, with stdin from /dev/null and its file
    descriptors 1 and 2 on pipes the adapter reads, as the child the adapter
    would otherwise start.
    """
    if not hasattr(os, "fork") or not _one_thread():
        return None
    control_read, control_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        pid = _fork()
    except OSError:
        for fd in (control_read, control_write, out_read, out_write, err_read):
            os.close(fd)
        os.close(err_write)
        return None
    if pid == 0:
        _be_spare(control_read, out_write, err_write, preload)
    for fd in (control_read, out_write, err_write):
        os.close(fd)
    return SpareDebuggee(ForkedProcess(pid), control_write, out_read, err_read)


class SpareDebuggee:
    """The adapter's handle on a spare debuggee (see ``fork_spare``).

    Either ``hand_over`` (once) or ``discard``; the file descriptors of its
    output pipes are the caller's from ``hand_over`` on.
    """

    def __init__(
        self, process: ForkedProcess, control: int, stdout: int, stderr: int
    ) -> None:
        self.process = process
        self._control: int | None = control
        self._outputs: tuple[int, int] | None = (stdout, stderr)
        self._handed_over = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def hand_over(
        self, *, cwd: str, env: Mapping[str, str], info: Mapping[str, Any]
    ) -> tuple[ForkedProcess, int, int]:
        """Start the launched program in the spare: it runs in *cwd* with *env*.

        *info* is what a debuggee started by the adapter finds in its
        environment (``_dap_agent.main``).  Returns the process and the read
        ends of its stdout and stderr pipes.  OSError if the spare is gone
        (then ``discard`` it and start a fresh process).
        """
        control, outputs = self._control, self._outputs
        if control is None or outputs is None:
            raise OSError("the spare debuggee was already used or discarded")
        self._control = None
        import json

        data = json.dumps({"cwd": cwd, "env": dict(env), "info": dict(info)})
        with open(control, "wb", closefd=True) as pipe:
            pipe.write(data.encode())
        self._outputs = None
        self._handed_over = True
        return self.process, outputs[0], outputs[1]

    def discard(self) -> None:
        """End the spare unless it runs a launched program; reap it.

        Does nothing to a spare that was handed a launch: that process is
        the caller's now.
        """
        if self._control is not None:
            os.close(self._control)
            self._control = None
        if not self._handed_over:
            # Idle (or still importing): nothing of anyone's is lost.
            self.process.kill()
            self.process.wait()
        if self._outputs is not None:
            for fd in self._outputs:
                os.close(fd)
            self._outputs = None


def _be_spare(
    control: int, stdout: int, stderr: int, preload: Callable[[], object]
) -> NoReturn:
    # In the forked child.  Until the program runs, any failure ends the
    # child at once: it must never go on as a second adapter.
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        import fcntl

        # Out of the way of 0-2 (an adapter started with one of them closed).
        control, stdout, stderr = (
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            for fd in (control, stdout, stderr)
        )
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        # Nothing else of the adapter's (its client's pipes, the other ends
        # of these) stays open here: the client would not see them close.
        os.closerange(3, control)
        os.closerange(control + 1, _max_fd())
        preload()
        launch = _wait_for_hand_over(control)  # (none: no launch came)
        os.chdir(launch["cwd"])
        os.environ.clear()
        os.environ.update(launch["env"])
        if os.environ.get("PYTHONUNBUFFERED"):
            _unbuffer_std_streams()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ._dap_agent import run_agent
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
        os._exit(70)
    run_agent(launch["info"])


def _wait_for_hand_over(control: int) -> Any:
    """In a spare: what its parent writes to *control* before closing it.

    A parent that closes it having written nothing (or that died) lets the
    spare go: it exits at once, having run nothing.
    """
    chunks = []
    while chunk := os.read(control, 65536):
        chunks.append(chunk)
    os.close(control)
    if not chunks:
        os._exit(0)
    import json

    return json.loads(b"".join(chunks))


def _max_fd() -> int:
    try:
        return max(int(os.sysconf("SC_OPEN_MAX")), 256)
    except (ValueError, OSError):
        return 65536


def _unbuffer_std_streams() -> None:
    """Make sys.stdout and sys.stderr what ``python -u`` would have made."""
    import io

    for name in ("stdout", "stderr"):
        old = getattr(sys, name)
        if old is None:
            continue
        fd = 1 if name == "stdout" else 2
        new = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding=old.encoding,
            errors=old.errors,
            write_through=True,
        )
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)
