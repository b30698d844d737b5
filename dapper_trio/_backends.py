"""Backends: where the debugged program runs, and who supervises it.

``ExternalProcessBackend`` runs the program in a child process.  Its one
nursery holds the IPC listener's accept-and-serve task (with the channel's
reader task under it) and the child process itself; the backend's
``LifecycleManager`` records the connection's life (INITIALIZING until the
debuggee connects and takes its configuration, READY while connected, ERROR if
the connection or the process fails, TERMINATED when it is over).

The child shares the terminal with the supervisor (same process group, same
stdin/stdout/stderr): its REPL reads the terminal directly and its Ctrl-C
handling pauses it; the supervisor ignores SIGINT while the child lives.
SIGTERM or SIGHUP to the supervisor terminates the child (SIGTERM, then
SIGKILL after a grace period) and reaps it.  Whatever way the session ends,
the child is reaped, the socket file and its directory are removed, and the
terminal's settings are restored (a child killed mid-REPL leaves the terminal
in raw mode otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import termios
from collections.abc import Iterator
from typing import Any, Literal

import trio

from ._debuggee import SESSION_ENV
from ._ipc import new_token, open_listener
from ._launcher import RunOptions, Target, resolve
from ._lifecycle import LifecycleManager
from ._states import BackendLifecycleState

#: Seconds a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0


@dataclasses.dataclass(frozen=True)
class ProgramExit:
    """How the debugged program ended."""

    returncode: int  # as subprocess reports it: negative for a signal
    quit: bool  # the user quit the debugger
    connected: bool  # the debuggee reached its supervisor

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


def debuggee_command() -> list[str]:
    """The command line of a debuggee process (same interpreter and flags)."""
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return [
        sys.executable,
        *flags,
        "-c",
        "from dapper_trio._debuggee import main; main()",
    ]


class ExternalProcessBackend:
    """Runs a program in a supervised child process connected over IPC.

    Create it inside ``trio.run`` (its lifecycle keeps time on trio's clock).
    """

    def __init__(
        self,
        target: Target,
        options: RunOptions,
        *,
        transport: Literal["unix", "tcp"] = "unix",
    ) -> None:
        self.target = target
        self.options = options
        self.transport = transport
        self.lifecycle = LifecycleManager("debuggee")
        self.process: trio.Process | None = None
        #: SIGINT was ignored when we started (a background job): the program
        #: must keep ignoring it, as it would under plain python.
        self.sigint_ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        self._exit_report: dict[str, Any] | None = None
        self._connected = False

    async def run(self) -> ProgramExit:
        """Run the program to its end and report how it ended.

        On cancellation the child is terminated (SIGTERM, then SIGKILL after
        ``TERMINATE_GRACE`` seconds) and reaped before Cancelled propagates.
        """
        self.lifecycle.initialize()
        token = new_token()
        try:
            async with open_listener(
                token=token, transport=self.transport, name="dapper-trio supervisor"
            ) as listener:
                env = dict(os.environ)
                env[SESSION_ENV] = json.dumps(
                    {
                        "address": str(listener.address),
                        "token": token,
                        "sigint_ignored": self.sigint_ignored,
                    }
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve, listener)
                    completed = await trio.run_process(
                        debuggee_command(),
                        stdin=None,
                        check=False,
                        env=env,
                        deliver_cancel=_terminate_then_kill,
                        preexec_fn=_ignore_sigint,
                    )
                    nursery.cancel_scope.cancel(reason="the debuggee exited")
        finally:
            with trio.CancelScope(shield=True):
                await self.lifecycle.terminate("the debuggee exited")
        report = self._exit_report or {}
        return ProgramExit(
            returncode=completed.returncode,
            quit=bool(report.get("quit", False)),
            connected=self._connected,
        )

    async def _serve(self, listener: Any) -> None:
        async with listener.accept(
            request_handler=self._handle_request, event_handler=self._handle_event
        ) as channel:
            self._connected = True
            await channel.wait_closed()
            if self._exit_report is None:
                self.lifecycle.mark_error(
                    "the connection to the debuggee was lost",
                    _ConnectionDropped(channel.close_reason or "closed"),
                )

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method == "configure":
            if self.lifecycle.lifecycle_state is BackendLifecycleState.INITIALIZING:
                self.lifecycle.mark_ready()
            return {
                "target": self.target.to_dict(),
                "options": self.options.to_dict(),
            }
        raise LookupError(f"unknown method {method!r}")

    async def _handle_event(self, event: str, body: Any) -> None:
        if event == "exited" and isinstance(body, dict):
            self._exit_report = body


class _ConnectionDropped(Exception):
    pass


def _ignore_sigint() -> None:
    # In the child between fork and exec.  An ignored signal stays ignored
    # across exec, so a Ctrl-C during the debuggee's interpreter start-up
    # does not kill it; the debuggee installs its own handler once ready.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def _terminate_then_kill(process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(TERMINATE_GRACE):
        await process.wait()
        return
    process.kill()


@contextlib.contextmanager
def _terminal_restored() -> Iterator[None]:
    """Put the terminal's settings back however the child left them."""
    # termios.error is not an OSError: it is what a terminal that has gone
    # away (the window was closed: EIO) raises.
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    except (OSError, ValueError, termios.error):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _supervise(
    target: Target, options: RunOptions, transport: Literal["unix", "tcp"]
) -> ProgramExit | int:
    backend = ExternalProcessBackend(target, options, transport=transport)
    # SIGINT reaches the child too (same process group): it pauses or
    # interrupts the program there, so here it is ignored.  SIGTERM/SIGHUP
    # end the session.
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP
    ) as signals:
        outcome: list[ProgramExit | int] = []
        async with trio.open_nursery() as nursery:

            async def run_backend() -> None:
                outcome.append(await backend.run())
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_backend)
            async for signum in signals:
                if signum == signal.SIGINT:
                    continue
                outcome.append(128 + signum)
                nursery.cancel_scope.cancel(reason=f"supervisor got signal {signum}")
                break
        return outcome[0]


def supervise_program(
    target: Target, options: RunOptions, *, transport: Literal["unix", "tcp"] = "unix"
) -> int:
    """``dapper-trio run`` in subprocess mode: supervise the program's process.

    Returns the program's exit status; if the program was killed by a signal,
    this process kills itself with the same signal (after cleaning up) so the
    shell sees exactly what it would have seen.
    """
    resolve(target)
    with _terminal_restored():
        result = trio.run(_supervise, target, options, transport)
    if isinstance(result, int):
        return result
    if not result.connected and result.returncode != 0:
        print(
            "dapper-trio: the debuggee exited before it could connect "
            f"(exit status {result.returncode})",
            file=sys.stderr,
        )
    if result.signal is not None:
        if result.signal != signal.SIGINT:
            # (After SIGINT the program has printed its KeyboardInterrupt.)
            print(
                f"[dapper-trio] the program was killed by signal {result.signal} "
                f"({signal.Signals(result.signal).name})",
                file=sys.stderr,
                flush=True,
            )
        _die_by(result.signal)
    return result.returncode


def _die_by(signum: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            stream.flush()
    if signum != signal.SIGKILL:  # SIGKILL's action cannot be set (EINVAL)
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
