"""Start the debuggee process -- before trio is imported.

Subprocess mode pays for two Python start-ups: the supervisor's and the
debuggee's.  Run one after the other they cost twice the wait before the
first prompt; so ``dapper-trio run`` binds its listening socket and starts
the debuggee first, with nothing but the standard library, and only then
imports trio and the rest of the supervisor while the child starts up beside
it.  The child connects to the socket as soon as it is ready: the connection
waits in the listen backlog until the supervisor accepts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import termios
from collections.abc import Callable

from ._records import record
from ._sockets import BoundSocket, bind_listening_socket, new_token
from ._targets import SESSION_ENV as SESSION_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal


def debuggee_command() -> list[str]:
    """The command line of a debuggee process (same interpreter and flags)."""
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

    process: subprocess.Popen[bytes]
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
) -> StartedDebuggee:
    """Bind a listening socket and start a debuggee that will connect to it.

    The child starts with SIGINT ignored (an ignored signal stays ignored
    across exec), so a Ctrl-C during its start-up cannot kill it; it installs
    its own handler once ready -- unless SIGINT was already ignored here (a
    background job), in which case it keeps ignoring it, as python would.

    With *config* (what the supervisor answers to ``configure``) the child
    gets its configuration in its environment and starts the program at once,
    without waiting for this process to import trio and serve.
    """
    restore_terminal = save_terminal()
    token = new_token()
    bound = bind_listening_socket(transport=transport)
    sigint_ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    env = dict(os.environ)
    info: dict[str, Any] = {
        "address": str(bound.address),
        "token": token,
        "sigint_ignored": sigint_ignored,
    }
    if config is not None:
        info["config"] = config
    env[SESSION_ENV] = json.dumps(info)
    try:
        process = subprocess.Popen(
            debuggee_command(), env=env, preexec_fn=_ignore_sigint
        )
    except BaseException:
        bound.close()
        raise
    return StartedDebuggee(process, bound, token, restore_terminal)


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
